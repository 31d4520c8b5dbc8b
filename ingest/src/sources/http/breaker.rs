//! The circuit breaker of each source: after repeated failed calls it
//! fails fast until a cool-down has passed, then lets one trial call
//! through.

use std::time::Instant;

use tracing::warn;

use super::{CallStats, HttpClient, Tally};

#[derive(Debug, Default)]
pub(super) struct Breaker {
    pub(super) failures: u32,
    open_until: Option<Instant>,
    /// The cool-down passed and the trial call has not succeeded yet.
    half_open: bool,
}

/// The state of a source's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// The cool-down has passed: the next call is a trial, and one more
    /// failure opens the circuit again.
    HalfOpen,
    /// Calls fail fast until the cool-down has passed.
    Open,
}

impl BreakerState {
    /// The value of the `adlake_ingest_breaker_state` gauge: 0 closed,
    /// 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }

    /// `closed`, `half_open` or `open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }
}

impl Breaker {
    pub(super) fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
            None if self.half_open => BreakerState::HalfOpen,
            None => BreakerState::Closed,
        }
    }
}

impl HttpClient {
    /// The state of `source_key`'s circuit breaker now.
    pub fn breaker_state(&self, source_key: &str) -> BreakerState {
        let breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        breakers
            .get(source_key)
            .map_or(BreakerState::Closed, |b| b.state(Instant::now()))
    }

    pub(super) fn breaker_open(&self, source_key: &str) -> bool {
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let b = breakers.entry(source_key.to_owned()).or_default();
        match b.open_until {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                // Half-open: let one call through; one more failure re-opens.
                b.open_until = None;
                b.half_open = true;
                b.failures = self.config.breaker_threshold.saturating_sub(1);
                false
            }
            None => false,
        }
    }

    /// Records the outcome of a call; returns whether it opened the circuit
    /// (a failure while it is open already does not open it again).
    pub(super) fn record(&self, source_key: &str, ok: bool) -> bool {
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let b = breakers.entry(source_key.to_owned()).or_default();
        if ok {
            *b = Breaker::default();
            return false;
        }
        b.failures += 1;
        if b.failures < self.config.breaker_threshold {
            return false;
        }
        let now = Instant::now();
        let was_open = b.open_until.is_some_and(|until| now < until);
        b.open_until = Some(now + self.config.breaker_cooldown);
        b.half_open = false;
        if !was_open {
            warn!(
                source = source_key,
                "circuit opened after repeated failures"
            );
        }
        !was_open
    }

    /// [`HttpClient::record`], counting an opening.
    pub(super) fn record_counted(&self, source_key: &str, ok: bool, tally: &Tally<'_>) {
        if self.record(source_key, ok) {
            tally.each(CallStats::add_breaker_open);
        }
    }

    /// Whether `source_key`'s circuit is open now.
    pub fn is_open(&self, source_key: &str) -> bool {
        let breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        breakers
            .get(source_key)
            .and_then(|b| b.open_until)
            .is_some_and(|until| Instant::now() < until)
    }
}
