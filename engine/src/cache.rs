//! The result cache, shared by metric queries and SQL statements.
//!
//! An entry is keyed by the caller's [`Scope`], the normalized question and
//! the Delta version of every table the answer read. So a new version of a
//! table is a miss by construction (no invalidation to forget), and one
//! client's entry can never answer another: a different scope is a
//! different key. Entries are weighed by the memory they hold (Arrow
//! buffers as counted by `get_array_memory_size`, batches sliced from larger
//! buffers compacted first by [`compact`]), the cache is bounded in
//! bytes, and it counts hits, misses and evictions. A caller can bypass it.
//!
//! Delta snapshots need no cache of their own here: the
//! [`Catalog`](crate::Catalog) keeps every table's snapshot in memory and
//! follows new versions incrementally, so no query replays the log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{MutableArrayData, RecordBatch, RecordBatchOptions, make_array};
use arrow::datatypes::SchemaRef;
use moka::future::Cache;
use moka::notification::RemovalCause;

use crate::Scope;
use crate::semantic::MetricResult;

/// Default byte bound of the cache.
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// What the cache did for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from the cache.
    Hit,
    /// Computed, and stored when small enough.
    Miss,
    /// The caller asked not to use the cache: neither read nor written.
    Bypass,
}

impl CacheStatus {
    /// `hit`, `miss` or `bypass`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

/// The identity of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Whose answer it is.
    pub scope: Scope,
    /// `metrics` or `sql`.
    pub kind: &'static str,
    /// The normalized question.
    pub question: String,
    /// The Delta version of every table read.
    pub versions: BTreeMap<String, Option<u64>>,
}

/// A cached answer.
#[derive(Debug, Clone)]
pub enum Cached {
    /// A metric query's result.
    Metrics(Arc<MetricResult>),
    /// A SQL statement's batches and schema.
    Batches(SchemaRef, Arc<Vec<RecordBatch>>),
}

impl Cached {
    fn bytes(&self) -> usize {
        match self {
            Self::Metrics(r) => r.approximate_bytes(),
            Self::Batches(_, batches) => batches_bytes(batches),
        }
    }
}

/// Memory held by `batches`.
pub fn batches_bytes(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::get_array_memory_size).sum()
}

/// `batch` in buffers of its own when it is a small slice of larger ones,
/// so that a cached answer holds (and is weighed by) only its own rows,
/// not the whole buffers it was sliced from.
pub fn compact(batch: &RecordBatch) -> RecordBatch {
    let held = batch.get_array_memory_size();
    let own: usize = batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(held))
        .sum();
    if held <= 2 * own + 1024 {
        return batch.clone();
    }
    let columns = batch
        .columns()
        .iter()
        .map(|c| {
            let data = c.to_data();
            let mut copy = MutableArrayData::new(vec![&data], false, c.len());
            copy.try_extend(0, 0, c.len())?;
            Ok(make_array(copy.freeze()))
        })
        .collect::<Result<Vec<_>, arrow::error::ArrowError>>();
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    columns
        .and_then(|columns| RecordBatch::try_new_with_options(batch.schema(), columns, &options))
        .unwrap_or_else(|_| batch.clone())
}

/// Counters of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Answers served from the cache.
    pub hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Entries evicted to stay within the byte bound.
    pub evictions: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now.
    pub bytes: u64,
}

/// A byte-bounded, memory-weighed cache of answers.
#[derive(Clone)]
pub struct ResultCache {
    cache: Cache<CacheKey, Cached>,
    max_bytes: u64,
    lookups: Arc<Lookups>,
    evictions: Arc<AtomicU64>,
}

impl std::fmt::Debug for ResultCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultCache")
            .field("max_bytes", &self.max_bytes)
            .field("stats", &self.stats())
            .finish()
    }
}

impl ResultCache {
    /// A cache holding at most `max_bytes` of answers.
    pub fn new(max_bytes: u64) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&evictions);
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &CacheKey, value: &Cached| -> u32 {
                u32::try_from(value.bytes() + 256).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Self {
            cache,
            max_bytes,
            lookups: Arc::default(),
            evictions,
        }
    }

    /// The byte bound.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The entry under `key`, counting a hit or a miss.
    pub async fn get(&self, key: &CacheKey) -> Option<Cached> {
        self.lookups.count(self.cache.get(key).await)
    }

    /// Stores an answer; one larger than the whole bound is not kept.
    pub async fn insert(&self, key: CacheKey, value: Cached) {
        if value.bytes() as u64 > self.max_bytes {
            return;
        }
        self.cache.insert(key, value).await;
    }

    /// Applies pending evictions now (they otherwise happen in the
    /// background of later calls).
    pub async fn settle(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// Drops every entry that read a table at another version than
    /// `current` (table name to version): such an entry can never be hit
    /// again, and after an erasure it is the only copy of the erased
    /// client's rows left in memory. Returns how many entries went.
    pub async fn drop_stale(&self, current: &BTreeMap<String, Option<u64>>) -> u64 {
        let stale: Vec<Arc<CacheKey>> = self
            .cache
            .iter()
            .filter(|(key, _)| {
                key.versions
                    .iter()
                    .any(|(table, version)| current.get(table).is_some_and(|now| now != version))
            })
            .map(|(key, _)| key)
            .collect();
        for key in &stale {
            self.cache.invalidate(key.as_ref()).await;
        }
        self.cache.run_pending_tasks().await;
        stale.len() as u64
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.lookups.hits(),
            misses: self.lookups.misses(),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
        }
    }
}

/// Hit and miss counters of a cache's look-ups.
#[derive(Debug, Default)]
pub(crate) struct Lookups {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Lookups {
    /// Counts a look-up by whether it found something, and hands it back.
    pub(crate) fn count<T>(&self, found: Option<T>) -> Option<T> {
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Look-ups that found something.
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Look-ups that did not.
    pub(crate) fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}
