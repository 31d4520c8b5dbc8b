//! Parquet footers kept across queries.
//!
//! DataFusion's file-metadata cache (an LRU bounded in bytes) holds the
//! parsed footer and page index of every file a scan opened, so the next
//! query over the same files reads no footer. [`FooterCache`] is that cache
//! with hit and miss counters, for `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use datafusion::common::{HashMap, TableReference};
use datafusion::execution::cache::cache_manager::CachedFileMetadataEntry;
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::cache::{Cache, CacheEntryInfo};
use object_store::path::Path;

use crate::cache::Lookups;

/// Default bound of the footer cache: 256 MiB.
pub const DEFAULT_FOOTER_CACHE_BYTES: usize = 256 * 1024 * 1024;

/// The file-metadata cache of the engine's runtime, counting look-ups.
pub struct FooterCache {
    inner: DefaultCache<Path, CachedFileMetadataEntry>,
    lookups: Lookups,
}

impl std::fmt::Debug for FooterCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FooterCache")
            .field("limit", &self.inner.cache_limit())
            .finish_non_exhaustive()
    }
}

/// A reading of the footer cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FooterCacheStats {
    /// Look-ups that found a footer.
    pub hits: u64,
    /// Look-ups that did not (the footer was then read and parsed).
    pub misses: u64,
    /// Footers held.
    pub entries: u64,
    /// Bytes they take.
    pub bytes: u64,
    /// The bound in bytes.
    pub limit: u64,
}

impl FooterCache {
    /// An empty cache bounded to `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: DefaultCache::new(limit).with_name("adlake footer cache"),
            lookups: Lookups::default(),
        }
    }

    /// Counters and size now.
    pub fn stats(&self) -> FooterCacheStats {
        let entries = self.inner.list_entries();
        FooterCacheStats {
            hits: self.lookups.hits(),
            misses: self.lookups.misses(),
            entries: entries.len() as u64,
            bytes: entries.values().map(|e| e.size_bytes as u64).sum(),
            limit: self.inner.cache_limit() as u64,
        }
    }
}

impl Cache<Path, CachedFileMetadataEntry> for FooterCache {
    fn get(&self, key: &Path) -> Option<CachedFileMetadataEntry> {
        self.lookups.count(self.inner.get(key))
    }

    fn put(&self, key: &Path, value: CachedFileMetadataEntry) -> Option<CachedFileMetadataEntry> {
        self.inner.put(key, value)
    }

    fn remove(&self, k: &Path) -> Option<CachedFileMetadataEntry> {
        self.inner.remove(k)
    }

    fn contains_key(&self, k: &Path) -> bool {
        self.inner.contains_key(k)
    }

    fn len(&self) -> usize {
        self.inner.len()
    }

    fn clear(&self) {
        self.inner.clear();
    }

    fn name(&self) -> String {
        self.inner.name()
    }

    fn cache_limit(&self) -> usize {
        self.inner.cache_limit()
    }

    fn update_cache_limit(&self, limit: usize) {
        self.inner.update_cache_limit(limit);
    }

    fn cache_ttl(&self) -> Option<Duration> {
        self.inner.cache_ttl()
    }

    fn update_cache_ttl(&self, ttl: Option<Duration>) {
        self.inner.update_cache_ttl(ttl);
    }

    fn drop_table_entries(&self, table_ref: &TableReference) -> datafusion::common::Result<()> {
        self.inner.drop_table_entries(table_ref)
    }

    fn list_entries(&self) -> HashMap<Path, CacheEntryInfo<CachedFileMetadataEntry>> {
        self.inner.list_entries()
    }
}

/// Shares one cache as the runtime's and as the engine's to read.
pub(crate) fn shared(cache: &Arc<FooterCache>) -> Arc<dyn Cache<Path, CachedFileMetadataEntry>> {
    Arc::clone(cache) as _
}
