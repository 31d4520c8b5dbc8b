//! Counters of platform calls, per source and per run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::BreakerState;

/// Counters of platform calls, cheap to bump from concurrent calls: one set
/// per source in the client, and one per run when the caller passes it.
#[derive(Debug, Default)]
pub struct CallStats {
    api_calls: AtomicU64,
    retries: AtomicU64,
    rate_limit_waits: AtomicU64,
    rate_limit_wait_micros: AtomicU64,
    breaker_opens: AtomicU64,
}

/// A reading of [`CallStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallCounts {
    /// HTTP requests sent (every attempt, token refreshes included).
    pub api_calls: u64,
    /// Attempts after the first of a call.
    pub retries: u64,
    /// Waits for a platform's rate limit: the backoff before retrying a
    /// rate-limited reply, or a pause the platform's usage headers asked for.
    pub rate_limit_waits: u64,
    /// Seconds spent in those waits.
    pub rate_limit_wait_seconds: f64,
    /// Times the source's circuit breaker opened.
    pub breaker_opens: u64,
}

impl CallStats {
    /// The counts now.
    pub fn counts(&self) -> CallCounts {
        CallCounts {
            api_calls: self.api_calls.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            rate_limit_waits: self.rate_limit_waits.load(Ordering::Relaxed),
            rate_limit_wait_seconds: Duration::from_micros(
                self.rate_limit_wait_micros.load(Ordering::Relaxed),
            )
            .as_secs_f64(),
            breaker_opens: self.breaker_opens.load(Ordering::Relaxed),
        }
    }

    pub(super) fn add_call(&self) {
        self.api_calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn add_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn add_wait(&self, wait: Duration) {
        self.rate_limit_waits.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        self.rate_limit_wait_micros
            .fetch_add(micros, Ordering::Relaxed);
    }

    pub(super) fn add_breaker_open(&self) {
        self.breaker_opens.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where one call's counts go: its source's totals and, when given, its
/// run's.
pub(super) struct Tally<'a> {
    pub(super) source: Arc<CallStats>,
    pub(super) run: Option<&'a CallStats>,
}

impl Tally<'_> {
    pub(super) fn each(&self, f: impl Fn(&CallStats)) {
        f(&self.source);
        if let Some(run) = self.run {
            f(run);
        }
    }
}

/// A source's totals and breaker state, for a live `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceStatus {
    /// The source key (`client/platform`).
    pub source_key: String,
    /// Totals since the client started.
    pub counts: CallCounts,
    /// The circuit breaker now.
    pub breaker: BreakerState,
}
