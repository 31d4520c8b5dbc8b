//! The resilient HTTP layer every connector goes through.
//!
//! [`HttpClient::send`] makes one logical call: it takes an access token
//! (refreshing an OAuth2 token when it is missing, about to expire, or
//! refused with 401), waits for a slot of the platform's concurrency limit,
//! puts a timeout on the attempt, lets the connector classify the reply
//! ([`Verdict`]: the platform's own rate-limit signals are the connector's
//! to read), and retries transient failures with exponential backoff and
//! full jitter, honouring a server-given delay. A circuit breaker per source
//! fails fast after repeated failed calls until a cool-down has passed.
//! Credentials never appear in `Debug` output, logs or errors.
//!
//! Every source has [`CallStats`] (requests sent, retries, rate-limit
//! waits, circuit openings), and a call made for a run also counts into
//! that run's own [`CallStats`], which the job runner writes to
//! `ingest_runs`. [`HttpClient::sources`] reads the totals and the
//! breaker state of every source for a live `/metrics`.
//!
//! The parts live apart: `retry` judges replies and times the next
//! attempt, `breaker` keeps each source's circuit, `oauth` holds the
//! credentials and refreshes tokens, `stats` counts the calls.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use tokio::sync::Semaphore;
use tracing::debug;

mod breaker;
mod oauth;
mod retry;
mod stats;

use self::breaker::Breaker;
pub use self::breaker::BreakerState;
pub use self::oauth::Credentials;
use self::oauth::Token;
pub use self::retry::{Verdict, classify_status, retry_after};
use self::stats::Tally;
pub use self::stats::{CallCounts, CallStats, SourceStatus};

/// What kind of failure a source call ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Network error, timeout or 5xx: a later retry can help.
    Transient,
    /// The platform's rate limit: a later retry can help.
    RateLimited,
    /// Credentials refused or missing: fix the credentials.
    Auth,
    /// The request itself is wrong (bad query, unknown account): a retry
    /// cannot help.
    Permanent,
    /// The reply could not be read: a retry is unlikely to help.
    Malformed,
    /// The source's circuit breaker is open after repeated failures.
    CircuitOpen,
}

/// A failed source call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{source_key}: {message} ({})", if self.retryable() { "a retry later can help" } else { "a retry cannot help" })]
pub struct SourceError {
    /// The source (`client/platform`).
    pub source_key: String,
    /// What kind of failure.
    pub kind: FailureKind,
    /// What happened, for people.
    pub message: String,
    /// Attempts made.
    pub attempts: u32,
}

impl SourceError {
    /// Whether retrying the call later can help.
    pub fn retryable(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::Transient | FailureKind::RateLimited | FailureKind::CircuitOpen
        )
    }
}

/// One HTTP reply, read in full.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Vec<u8>,
    /// The platform's request id (from the first header of
    /// [`REQUEST_ID_HEADERS`] present).
    pub request_id: Option<String>,
}

/// Headers platforms put their request id in.
pub const REQUEST_ID_HEADERS: [&str; 6] = [
    "request-id",
    "x-request-id",
    "x-fb-trace-id",
    "x-li-uuid",
    "x-tt-logid",
    "x-goog-request-id",
];

impl Reply {
    /// The first 300 characters of the body, for error messages.
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let mut s: String = text.chars().take(300).collect();
        if text.chars().count() > 300 {
            s.push('…');
        }
        s.replace('\n', " ")
    }
}

/// Tunables of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Timeout of each attempt.
    pub timeout: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// First backoff delay.
    pub base_delay: Duration,
    /// Longest backoff delay, and the longest server-given delay waited for.
    pub max_delay: Duration,
    /// Failed calls in a row that open a source's circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit fails fast.
    pub breaker_cooldown: Duration,
    /// Calls in flight per platform.
    pub platform_concurrency: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(300),
            platform_concurrency: 4,
        }
    }
}

/// One logical request: how to build it again for each attempt.
#[derive(Debug, Clone)]
pub struct Call {
    /// HTTP method.
    pub method: Method,
    /// Full URL.
    pub url: String,
    /// Extra headers (names and values).
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub json: Option<serde_json::Value>,
    /// Header carrying the token: `None` for `Authorization: Bearer`.
    pub token_header: Option<&'static str>,
}

impl Call {
    /// A GET of `url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            url: url.into(),
            headers: Vec::new(),
            json: None,
            token_header: None,
        }
    }

    /// A POST of `body` as JSON to `url`.
    pub fn post_json(url: impl Into<String>, body: serde_json::Value) -> Self {
        Self {
            method: Method::POST,
            url: url.into(),
            headers: Vec::new(),
            json: Some(body),
            token_header: None,
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends the token in `name` instead of `Authorization: Bearer`.
    #[must_use]
    pub fn token_in(mut self, name: &'static str) -> Self {
        self.token_header = Some(name);
        self
    }
}

/// Whom a call is for: the source, its platform, its credentials and,
/// when the call belongs to a run, the run's counters.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The source key (`client/platform`): breaker and totals.
    pub source_key: &'a str,
    /// The platform (concurrency limit).
    pub platform: &'a str,
    /// The name of the credentials (token cache key).
    pub cred_key: &'a str,
    /// The credentials.
    pub creds: &'a Credentials,
    /// The run's counters.
    pub run: Option<&'a CallStats>,
}

/// The shared, resilient HTTP client.
pub struct HttpClient {
    inner: reqwest::Client,
    config: HttpConfig,
    breakers: Mutex<HashMap<String, Breaker>>,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    tokens: Mutex<HashMap<String, Token>>,
    stats: Mutex<HashMap<String, Arc<CallStats>>>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client with `config`.
    pub fn new(config: HttpConfig) -> crate::Result<Self> {
        let inner = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("adlake-ingest/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                crate::Error::InvalidConfig(format!("cannot build the HTTP client: {e}"))
            })?;
        Ok(Self {
            inner,
            config,
            breakers: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            stats: Mutex::new(HashMap::new()),
        })
    }

    /// The totals of `source_key` (created at zero on first use).
    pub fn stats(&self, source_key: &str) -> Arc<CallStats> {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(stats.entry(source_key.to_owned()).or_default())
    }

    fn tally<'a>(&self, source_key: &str, run: Option<&'a CallStats>) -> Tally<'a> {
        Tally {
            source: self.stats(source_key),
            run,
        }
    }

    /// Every source called so far: its totals and its breaker state now,
    /// sorted by source key.
    pub fn sources(&self) -> Vec<SourceStatus> {
        let stats: Vec<(String, Arc<CallStats>)> = self
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        let now = Instant::now();
        let breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<SourceStatus> = stats
            .into_iter()
            .map(|(source_key, stats)| SourceStatus {
                breaker: breakers
                    .get(&source_key)
                    .map_or(BreakerState::Closed, |b| b.state(now)),
                counts: stats.counts(),
                source_key,
            })
            .collect();
        out.sort_by(|a, b| a.source_key.cmp(&b.source_key));
        out
    }

    /// Counts a wait for a platform's rate limit that a connector made
    /// itself (pacing to usage headers).
    pub fn count_rate_limit_wait(&self, source_key: &str, run: Option<&CallStats>, wait: Duration) {
        self.tally(source_key, run).each(|s| s.add_wait(wait));
    }

    /// The configuration.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    fn slot(&self, platform: &str) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            slots.entry(platform.to_owned()).or_insert_with(|| {
                Arc::new(Semaphore::new(self.config.platform_concurrency.max(1)))
            }),
        )
    }

    /// Makes `call` for `source_key` (a source of `platform`) with the
    /// credentials named `cred_key`, judging each reply with `classify`.
    /// Counts go to the source's totals only; see [`HttpClient::send_for`].
    pub async fn send(
        &self,
        source_key: &str,
        platform: &str,
        cred_key: &str,
        creds: &Credentials,
        call: &Call,
        classify: impl Fn(&Reply) -> Verdict,
    ) -> Result<Reply, SourceError> {
        let target = Target {
            source_key,
            platform,
            cred_key,
            creds,
            run: None,
        };
        self.send_for(&target, call, classify).await
    }

    /// Makes `call` for `target`, judging each reply with `classify`;
    /// counts go to the source's totals and to the target's run.
    pub async fn send_for(
        &self,
        target: &Target<'_>,
        call: &Call,
        classify: impl Fn(&Reply) -> Verdict,
    ) -> Result<Reply, SourceError> {
        let Target {
            source_key,
            platform,
            cred_key,
            creds,
            run,
        } = *target;
        let tally = self.tally(source_key, run);
        let mut attempts = 0u32;
        let mut refreshed = false;
        let fail = |kind, message: String, attempts| SourceError {
            source_key: source_key.to_owned(),
            kind,
            message,
            attempts,
        };
        loop {
            if self.breaker_open(source_key) {
                return Err(fail(
                    FailureKind::CircuitOpen,
                    "circuit open after repeated failures; not calling the platform".to_owned(),
                    attempts,
                ));
            }
            attempts += 1;
            if attempts > 1 {
                tally.each(CallStats::add_retry);
            }
            let token = match self.token(cred_key, creds, source_key, &tally).await {
                Ok(t) => t,
                Err(mut e) => {
                    e.attempts = attempts;
                    if e.retryable() && attempts < self.config.max_attempts {
                        tokio::time::sleep(self.delay(attempts, None)).await;
                        continue;
                    }
                    self.record_counted(source_key, false, &tally);
                    return Err(e);
                }
            };
            let outcome = {
                let slot = self.slot(platform);
                let _permit = slot.acquire_owned().await;
                let mut req = self.inner.request(call.method.clone(), &call.url);
                for (k, v) in &call.headers {
                    req = req.header(k, v);
                }
                if let Some(token) = &token {
                    req = match call.token_header {
                        Some(name) => req.header(name, token),
                        None => req.bearer_auth(token),
                    };
                }
                if let Some(json) = &call.json {
                    req = req.json(json);
                }
                tally.each(CallStats::add_call);
                match req.send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        let headers = resp.headers().clone();
                        match resp.bytes().await {
                            Ok(body) => Ok(Reply {
                                request_id: REQUEST_ID_HEADERS.iter().find_map(|h| {
                                    headers
                                        .get(*h)
                                        .and_then(|v| v.to_str().ok())
                                        .map(str::to_owned)
                                }),
                                status,
                                headers,
                                body: body.to_vec(),
                            }),
                            Err(e) => Err(without_url(&e)),
                        }
                    }
                    Err(e) => Err(without_url(&e)),
                }
            };
            let verdict = match &outcome {
                Ok(reply) => classify(reply),
                Err(message) => Verdict::Retry {
                    rate_limited: false,
                    after: None,
                    reason: message.clone(),
                },
            };
            match verdict {
                Verdict::Ok => {
                    self.record_counted(source_key, true, &tally);
                    return outcome.map_err(|m| fail(FailureKind::Transient, m, attempts));
                }
                Verdict::Unauthorized(reason) if creds.can_refresh() && !refreshed => {
                    debug!(source = source_key, "token refused; refreshing once");
                    refreshed = true;
                    self.forget_token(cred_key);
                    let _ = reason;
                }
                Verdict::Unauthorized(reason) => {
                    self.record_counted(source_key, false, &tally);
                    return Err(fail(
                        FailureKind::Auth,
                        format!("credentials refused: {reason}"),
                        attempts,
                    ));
                }
                Verdict::Fail(reason) => {
                    // The request is wrong, not the platform: no breaker count.
                    return Err(fail(FailureKind::Permanent, reason, attempts));
                }
                Verdict::Retry {
                    rate_limited,
                    after,
                    reason,
                } => {
                    let kind = if rate_limited {
                        FailureKind::RateLimited
                    } else {
                        FailureKind::Transient
                    };
                    let too_long = after.is_some_and(|a| a > self.config.max_delay);
                    if attempts >= self.config.max_attempts || too_long {
                        self.record_counted(source_key, false, &tally);
                        let why = if too_long {
                            "the platform asks to wait longer than allowed"
                        } else {
                            "gave up"
                        };
                        return Err(fail(
                            kind,
                            format!("{why} after {attempts} attempts: {reason}"),
                            attempts,
                        ));
                    }
                    let wait = self.delay(attempts, after);
                    debug!(source = source_key, attempt = attempts, ?wait, %reason, "retrying");
                    if rate_limited {
                        tally.each(|s| s.add_wait(wait));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// A reqwest error without its URL (which can carry tokens in a query).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the reply failed"
    } else {
        "request failed"
    };
    let inner = std::error::Error::source(e)
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    format!("{kind}{inner}")
}

/// Percent-encodes a query or form value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Parses a protobuf-JSON duration such as `"3s"` or `"1.5s"`.
pub fn proto_duration(s: &str) -> Option<Duration> {
    let secs = s.trim().strip_suffix('s')?.parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(threshold: u32, cooldown: Duration) -> HttpClient {
        HttpClient::new(HttpConfig {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1_000),
            breaker_threshold: threshold,
            breaker_cooldown: cooldown,
            ..HttpConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn backoff_doubles_with_jitter_is_capped_and_honours_the_platform() {
        let c = client(5, Duration::from_secs(60));
        for _ in 0..200 {
            // Attempt n waits within [base * 2^(n-1) / 2, base * 2^(n-1)].
            for (attempt, full) in [
                (1, 100),
                (2, 200),
                (3, 400),
                (4, 800),
                (5, 1_000),
                (9, 1_000),
            ] {
                let d = c.delay(attempt, None);
                let full = Duration::from_millis(full);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
            }
            // A server-given delay is a floor, and the cap still holds.
            assert!(c.delay(1, Some(Duration::from_millis(700))) >= Duration::from_millis(700));
            assert_eq!(
                c.delay(1, Some(Duration::from_secs(30))),
                Duration::from_millis(1_000)
            );
        }
    }

    #[test]
    fn the_breaker_opens_after_the_threshold_and_half_opens_after_the_cooldown() {
        let c = client(2, Duration::from_secs(600));
        c.record("a/google_ads", false);
        assert!(!c.breaker_open("a/google_ads"));
        c.record("a/google_ads", false);
        assert!(c.breaker_open("a/google_ads") && c.is_open("a/google_ads"));
        // Another source is not affected.
        assert!(!c.breaker_open("b/google_ads"));

        // A zero cool-down: the next call goes through (half-open); one
        // more failure opens the circuit again, a success closes it.
        let c = client(3, Duration::ZERO);
        for _ in 0..3 {
            c.record("s", false);
        }
        assert!(!c.breaker_open("s"));
        c.record("s", true);
        c.record("s", false);
        assert!(!c.breaker_open("s"), "a success resets the count");
        for _ in 0..3 {
            c.record("s", false);
        }
        assert!(!c.breaker_open("s"));
        {
            let breakers = c.breakers.lock().unwrap();
            assert_eq!(
                breakers["s"].failures, 2,
                "half-open: one failure from open"
            );
        }
    }

    #[test]
    fn statuses_say_whether_a_retry_can_help() {
        let reply = |status: u16, headers: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in headers {
                h.insert(*k, v.parse().unwrap());
            }
            Reply {
                status: StatusCode::from_u16(status).unwrap(),
                headers: h,
                body: b"{}".to_vec(),
                request_id: None,
            }
        };
        assert_eq!(classify_status(&reply(200, &[])), Verdict::Ok);
        assert!(matches!(
            classify_status(&reply(401, &[])),
            Verdict::Unauthorized(_)
        ));
        assert!(matches!(
            classify_status(&reply(429, &[("retry-after", "2.5")])),
            Verdict::Retry { rate_limited: true, after: Some(d), .. } if d == Duration::from_millis(2_500)
        ));
        assert!(matches!(
            classify_status(&reply(503, &[])),
            Verdict::Retry {
                rate_limited: false,
                after: None,
                ..
            }
        ));
        assert!(matches!(
            classify_status(&reply(404, &[])),
            Verdict::Fail(_)
        ));
        let e = SourceError {
            source_key: "c/meta_ads".to_owned(),
            kind: FailureKind::Permanent,
            message: "bad field".to_owned(),
            attempts: 1,
        };
        assert_eq!(e.to_string(), "c/meta_ads: bad field (a retry cannot help)");
        assert_eq!(proto_duration("1.5s"), Some(Duration::from_millis(1_500)));
        assert_eq!(proto_duration("soon"), None);
        assert_eq!(url_encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
