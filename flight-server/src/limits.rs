//! Limits that keep one caller from exhausting the server: a request rate
//! per caller, a cap on queries running at once, a time limit per query and
//! a limit on the bytes one result may stream.
//!
//! Refusals are `ResourceExhausted` (or `DeadlineExceeded` for the time
//! limit) with a `retry-after` header in seconds where waiting helps, so a
//! well-behaved client can back off instead of hammering.

// Every check answers with `tonic::Status` (see the note in `flight_sql`).
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::metadata::MetadataValue;

/// Name of the header telling a refused caller how long to wait, in whole
/// seconds (as HTTP's `Retry-After`).
pub const RETRY_AFTER_HEADER: &str = "retry-after";

/// The limits, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSettings {
    /// Requests per second each caller may make (sustained); `None`: no limit.
    pub rate_per_second: Option<f64>,
    /// Requests a caller may make in a burst above the sustained rate.
    pub burst: u32,
    /// Queries that may run at once, over all callers.
    pub max_concurrent_queries: usize,
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
    pub fn check_rate(&self, caller: &str) -> Result<(), Status> {
        self.check_rate_at(caller, Instant::now())
    }

    fn check_rate_at(&self, caller: &str, now: Instant) -> Result<(), Status> {
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

    /// A slot for one running query, held until the returned permit drops
    /// (when the result stream ends or the caller goes away).
    pub fn start_query(&self) -> Result<OwnedSemaphorePermit, Status> {
        Arc::clone(&self.queries).try_acquire_owned().map_err(|_| {
            exhausted(
                format!(
                    "the server is running its limit of {} queries: retry shortly",
                    self.settings.max_concurrent_queries
                ),
                Duration::from_secs(1),
            )
        })
    }
}

/// `ResourceExhausted` with a retry hint in the message and the
/// `retry-after` header (whole seconds, at least 1).
pub fn exhausted(message: String, wait: Duration) -> Status {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut status = Status::resource_exhausted(format!("{message}; retry after {secs} s"));
    if let Ok(value) = MetadataValue::try_from(secs.to_string()) {
        status.metadata_mut().insert(RETRY_AFTER_HEADER, value);
    }
    status
}

/// The status of a query that ran past its time limit.
pub fn timed_out(limit: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the query ran longer than the server's limit of {} s: narrow it (date range, filters, LIMIT)",
        limit.as_secs_f64()
    ))
}

/// The status of a result past the size limit.
pub fn result_too_large(limit: u64) -> Status {
    Status::resource_exhausted(format!(
        "the result is larger than the server's limit of {limit} bytes: aggregate, filter or add LIMIT"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

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
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status
                .metadata()
                .get(RETRY_AFTER_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        assert!(
            status.message().contains("retry after 1 s"),
            "{}",
            status.message()
        );
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
        let first = l.start_query().expect("1");
        let _second = l.start_query().expect("2");
        let refused = l.start_query().expect_err("3");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(refused.metadata().get(RETRY_AFTER_HEADER).is_some());
        drop(first);
        let _again = l.start_query().expect("a slot came free");
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
