//! Admission: the limits that keep one caller from exhausting the engine,
//! applied by the [door](crate::executor) to every surface alike: a request
//! rate per caller, caps on queries running at once (over all callers, and
//! per caller so one caller cannot take every slot), a time limit per query
//! and a limit on the bytes one result may stream.
//!
//! Refusals are [`Error::Refused`] (the server answers `ResourceExhausted`
//! with a `retry-after` header in seconds, so a well-behaved client can
//! back off instead of hammering) and [`Error::TimedOut`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// Default of [`LimitSettings::max_concurrent_queries_per_caller`]: an
/// eighth of the default global cap, so at least eight callers can run
/// queries at once whatever the others do.
pub const DEFAULT_MAX_CONCURRENT_QUERIES_PER_CALLER: usize = 8;

/// The limits, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSettings {
    /// Requests per second each caller may make (sustained); `None`: no limit.
    pub rate_per_second: Option<f64>,
    /// Requests a caller may make in a burst above the sustained rate.
    pub burst: u32,
    /// Queries that may run at once, over all callers.
    pub max_concurrent_queries: usize,
    /// Queries one caller may run at once; 0: no cap beyond the global one.
    pub max_concurrent_queries_per_caller: usize,
    /// Longest a query may run, from planning to its last batch.
    pub query_timeout: Option<Duration>,
    /// Most bytes (Arrow in-memory size) one result may stream.
    pub max_result_bytes: Option<u64>,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            rate_per_second: None,
            burst: 0,
            max_concurrent_queries: 64,
            max_concurrent_queries_per_caller: DEFAULT_MAX_CONCURRENT_QUERIES_PER_CALLER,
            query_timeout: None,
            max_result_bytes: None,
        }
    }
}

/// The limits in force, shared by every call.
#[derive(Debug)]
pub struct Limits {
    settings: LimitSettings,
    buckets: Mutex<HashMap<String, Bucket>>,
    queries: Arc<Semaphore>,
    /// Queries running per caller; a caller is absent while it runs none,
    /// so the map holds at most as many entries as queries running.
    per_caller: Arc<Mutex<HashMap<String, usize>>>,
}

/// The slots one running query holds, given back when it drops.
#[derive(Debug)]
pub struct QueryPermit {
    _global: OwnedSemaphorePermit,
    _caller: Option<CallerSlot>,
}

/// One of a caller's query slots.
#[derive(Debug)]
struct CallerSlot {
    per_caller: Arc<Mutex<HashMap<String, usize>>>,
    caller: String,
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        let mut counts = self
            .per_caller
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(running) = counts.get_mut(&self.caller) {
            *running = running.saturating_sub(1);
            if *running == 0 {
                counts.remove(&self.caller);
            }
        }
    }
}

/// A token bucket: `tokens` refill at the configured rate up to the burst.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Most callers whose buckets are kept; past it, full buckets are dropped
/// (a full bucket is what a new one would be, so nothing is lost).
const MAX_BUCKETS: usize = 10_000;

impl Limits {
    /// Limits with `settings`.
    pub fn new(settings: LimitSettings) -> Self {
        let permits = settings.max_concurrent_queries.max(1);
        Self {
            settings,
            buckets: Mutex::new(HashMap::new()),
            queries: Arc::new(Semaphore::new(permits)),
            per_caller: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// No rate limit, no timeout, no result limit; the default cap on
    /// concurrent queries.
    pub fn unlimited() -> Self {
        Self::new(LimitSettings::default())
    }

    /// The settings.
    pub fn settings(&self) -> &LimitSettings {
        &self.settings
    }

    /// Counts one request of `caller` against its rate.
    pub fn check_rate(&self, caller: &str) -> Result<()> {
        self.check_rate_at(caller, Instant::now())
    }

    fn check_rate_at(&self, caller: &str, now: Instant) -> Result<()> {
        let Some(rate) = self.settings.rate_per_second.filter(|r| *r > 0.0) else {
            return Ok(());
        };
        let capacity = f64::from(self.settings.burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(caller) {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < capacity
            });
        }
        let bucket = buckets.entry(caller.to_string()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / rate);
        Err(exhausted(
            format!("rate limit of {rate} requests per second exceeded"),
            wait,
        ))
    }

    /// The slots for one running query of `caller`, held until the returned
    /// permit drops (when the result stream ends or the caller goes away):
    /// one of the caller's own, then one of the server's.
    pub fn start_query(&self, caller: &str) -> Result<QueryPermit> {
        let caller_slot = self.take_caller_slot(caller)?;
        // On refusal here the caller's slot drops with `caller_slot`.
        let global = Arc::clone(&self.queries).try_acquire_owned().map_err(|_| {
            exhausted(
                format!(
                    "the server is running its limit of {} queries: retry shortly",
                    self.settings.max_concurrent_queries
                ),
                Duration::from_secs(1),
            )
        })?;
        Ok(QueryPermit {
            _global: global,
            _caller: caller_slot,
        })
    }

    fn take_caller_slot(&self, caller: &str) -> Result<Option<CallerSlot>> {
        let cap = self.settings.max_concurrent_queries_per_caller;
        if cap == 0 {
            return Ok(None);
        }
        let mut counts = self
            .per_caller
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let running = counts.entry(caller.to_string()).or_insert(0);
        if *running >= cap {
            return Err(exhausted(
                format!(
                    "this caller is running its limit of {cap} queries at once: finish or close one, or retry shortly"
                ),
                Duration::from_secs(1),
            ));
        }
        *running += 1;
        Ok(Some(CallerSlot {
            per_caller: Arc::clone(&self.per_caller),
            caller: caller.to_string(),
        }))
    }
}

/// A refusal that waiting `wait` may lift.
pub fn exhausted(reason: String, wait: Duration) -> Error {
    Error::Refused {
        reason,
        retry_after: wait,
    }
}

/// The error of a result past the size limit.
pub fn result_too_large(limit: u64) -> Error {
    Error::ResourcesExhausted(format!(
        "the result is larger than the server's limit of {limit} bytes: aggregate, filter or add LIMIT"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::retry_after_secs;

    fn limits(rate: f64, burst: u32) -> Limits {
        Limits::new(LimitSettings {
            rate_per_second: Some(rate),
            burst,
            ..LimitSettings::default()
        })
    }

    #[test]
    fn rate_allows_the_burst_then_refuses_with_a_retry_hint() {
        let l = limits(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.check_rate_at("a", t0).expect("within burst");
        }
        let status = l.check_rate_at("a", t0).expect_err("over the burst");
        assert!(
            matches!(status, Error::Refused { retry_after, .. } if retry_after_secs(retry_after) == 1),
            "{status:?}"
        );
        assert!(status.to_string().contains("retry after 1 s"), "{status}");
        // Another caller has its own bucket.
        l.check_rate_at("b", t0).expect("other caller");
        // Half a second at 2/s refills one token.
        l.check_rate_at("a", t0 + Duration::from_millis(500))
            .expect("refilled");
        assert!(
            l.check_rate_at("a", t0 + Duration::from_millis(500))
                .is_err()
        );
    }

    #[test]
    fn no_rate_means_no_limit() {
        let l = Limits::unlimited();
        let t0 = Instant::now();
        for _ in 0..10_000 {
            l.check_rate_at("a", t0).expect("unlimited");
        }
    }

    #[test]
    fn concurrent_queries_are_capped_and_released() {
        let l = Limits::new(LimitSettings {
            max_concurrent_queries: 2,
            ..LimitSettings::default()
        });
        let first = l.start_query("a").expect("1");
        let _second = l.start_query("b").expect("2");
        let refused = l.start_query("c").expect_err("3");
        assert!(matches!(refused, Error::Refused { .. }), "{refused:?}");
        assert!(refused.to_string().contains("limit of 2 queries"));
        drop(first);
        let _again = l.start_query("c").expect("a slot came free");
        // A refusal by the global cap gives the caller's slot back: only
        // "c" runs now, with one query.
        let counts = l.per_caller.lock().expect("lock").clone();
        assert_eq!(counts.get("c"), Some(&1), "{counts:?}");
        assert_eq!(counts.get("a"), None, "{counts:?}");
    }

    #[test]
    fn one_caller_cannot_take_every_slot() {
        let l = Limits::new(LimitSettings {
            max_concurrent_queries: 10,
            max_concurrent_queries_per_caller: 2,
            ..LimitSettings::default()
        });
        let a1 = l.start_query("a").expect("a 1");
        let _a2 = l.start_query("a").expect("a 2");
        let refused = l.start_query("a").expect_err("a 3");
        assert!(
            matches!(refused, Error::Refused { retry_after, .. } if retry_after_secs(retry_after) == 1),
            "{refused:?}"
        );
        assert!(
            refused.to_string().contains("limit of 2 queries at once"),
            "{refused}"
        );
        // Another caller still has its own two slots.
        let _b1 = l.start_query("b").expect("b 1");
        let _b2 = l.start_query("b").expect("b 2");
        drop(a1);
        let _a3 = l.start_query("a").expect("a's slot came back");
        // The refusals took no global slot: 4 of 10 are used, so 6 more
        // callers get one each.
        let others: Vec<_> = (0..6)
            .map(|i| l.start_query(&format!("c{i}")).expect("free slot"))
            .collect();
        assert!(l.start_query("d").is_err(), "the global cap holds");
        drop(others);
        assert!(l.per_caller.lock().expect("lock").len() <= 2);
    }

    #[test]
    fn a_per_caller_cap_of_zero_means_only_the_global_cap() {
        let l = Limits::new(LimitSettings {
            max_concurrent_queries: 3,
            max_concurrent_queries_per_caller: 0,
            ..LimitSettings::default()
        });
        let held: Vec<_> = (0..3)
            .map(|_| l.start_query("a").expect("within the global cap"))
            .collect();
        assert!(l.start_query("a").is_err());
        assert!(l.per_caller.lock().expect("lock").is_empty());
        drop(held);
    }

    #[test]
    fn buckets_are_bounded() {
        let l = limits(1000.0, 1);
        let t0 = Instant::now();
        for i in 0..(MAX_BUCKETS + 10) {
            l.check_rate_at(&i.to_string(), t0).expect("first request");
        }
        let later = t0 + Duration::from_secs(1);
        l.check_rate_at("late", later).expect("new caller");
        let kept = l.buckets.lock().expect("lock").len();
        assert!(kept <= MAX_BUCKETS, "{kept}");
    }
}
