//! Retrying a platform call: how a reply is judged, and how long to wait
//! before the next attempt (exponential backoff with full jitter, a
//! server-given delay as a floor).

use std::time::Duration;

use rand::Rng;
use reqwest::header::HeaderMap;

use super::{HttpClient, Reply};

/// How a connector judges one HTTP reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Usable.
    Ok,
    /// Transient failure; retry, after the given delay when the platform
    /// named one.
    Retry {
        /// Rate limit (true) or other transient failure.
        rate_limited: bool,
        /// The platform's own delay.
        after: Option<Duration>,
        /// What happened.
        reason: String,
    },
    /// The token was refused.
    Unauthorized(String),
    /// A failure no retry can fix.
    Fail(String),
}

/// The default judgement of a reply by its status alone: 2xx ok, 401
/// unauthorized, 408/429/5xx transient (with `Retry-After` honoured),
/// other 4xx permanent.
pub fn classify_status(reply: &Reply) -> Verdict {
    let status = reply.status;
    if status.is_success() {
        return Verdict::Ok;
    }
    let reason = format!("HTTP {status}: {}", reply.snippet());
    match status.as_u16() {
        401 => Verdict::Unauthorized(reason),
        429 => Verdict::Retry {
            rate_limited: true,
            after: retry_after(&reply.headers),
            reason,
        },
        408 | 500 | 502 | 503 | 504 => Verdict::Retry {
            rate_limited: false,
            after: retry_after(&reply.headers),
            reason,
        },
        _ => Verdict::Fail(reason),
    }
}

/// The `Retry-After` header in seconds (fractions accepted).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("retry-after")?.to_str().ok()?;
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

impl HttpClient {
    /// Backoff before attempt `attempt + 1`: exponential, capped, with full
    /// jitter; a server-given delay is a floor.
    pub(super) fn delay(&self, attempt: u32, after: Option<Duration>) -> Duration {
        let exp = self
            .config
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.config.max_delay);
        let jittered = exp.mul_f64(rand::rng().random_range(0.5..=1.0));
        match after {
            Some(after) => after.max(jittered).min(self.config.max_delay),
            None => jittered,
        }
    }
}
