//! The live `/metrics` of a long-running `adlake-ingest worker`
//! (`--metrics-addr HOST:PORT`), in Prometheus text.
//!
//! Per source (labels `client` and `source`, the platform):
//! `adlake_ingest_breaker_state` (0 closed, 1 half-open, 2 open) and the
//! counters of the HTTP layer since the process started:
//! `adlake_ingest_worker_api_calls_total`, `adlake_ingest_worker_retries_total`,
//! `adlake_ingest_worker_rate_limit_waits_total`,
//! `adlake_ingest_worker_rate_limit_wait_seconds_total`,
//! `adlake_ingest_worker_breaker_opens_total`, and
//! `adlake_ingest_worker_held_runs_total`: runs the shrink guard held
//! (see [`crate::pipeline::guard`]). The server's
//! `adlake_ingest_*_total{source}` carry the same counts summed from
//! `ingest_runs`, whichever process ran the jobs; these names differ so
//! that the two never add up twice.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::error::{Error, Result};
use crate::sources::http::HttpClient;

/// Every family the worker's `/metrics` exports (full names).
pub const EXPORTED: &[&str] = &[
    "adlake_ingest_breaker_state",
    "adlake_ingest_worker_api_calls_total",
    "adlake_ingest_worker_retries_total",
    "adlake_ingest_worker_rate_limit_waits_total",
    "adlake_ingest_worker_rate_limit_wait_seconds_total",
    "adlake_ingest_worker_breaker_opens_total",
    "adlake_ingest_worker_held_runs_total",
];

/// Runs held by the shrink guard in this process, per (client, source).
static HELD_RUNS: std::sync::Mutex<std::collections::BTreeMap<(String, String), u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Counts one run the shrink guard held.
pub fn count_held_run(client: &str, source: &str) {
    let mut held = HELD_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    *held
        .entry((client.to_owned(), source.to_owned()))
        .or_default() += 1;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    client: String,
    source: String,
}

impl SourceLabels {
    /// `client/platform` into its two labels (a key without `/` is all
    /// source).
    fn of(source_key: &str) -> Self {
        let (client, source) = source_key.rsplit_once('/').unwrap_or(("", source_key));
        Self {
            client: client.to_owned(),
            source: source.to_owned(),
        }
    }
}

/// The worker's metrics now, in Prometheus text format.
pub fn render(http: &HttpClient) -> String {
    let mut registry = Registry::with_prefix("adlake_ingest");
    let state = Family::<SourceLabels, Gauge>::default();
    let calls = Family::<SourceLabels, Counter>::default();
    let retries = Family::<SourceLabels, Counter>::default();
    let waits = Family::<SourceLabels, Counter>::default();
    let wait_seconds = Family::<SourceLabels, Counter<f64, AtomicU64>>::default();
    let opens = Family::<SourceLabels, Counter>::default();
    registry.register(
        "breaker_state",
        "Circuit breaker of each source: 0 closed, 1 half-open, 2 open",
        state.clone(),
    );
    registry.register(
        "worker_api_calls",
        "HTTP requests this worker sent to each source (retries and token refreshes included)",
        calls.clone(),
    );
    registry.register(
        "worker_retries",
        "Attempts after the first of a call, per source",
        retries.clone(),
    );
    registry.register(
        "worker_rate_limit_waits",
        "Waits for a platform's rate limit (backoff after a rate-limited reply, or pacing to usage headers)",
        waits.clone(),
    );
    registry.register(
        "worker_rate_limit_wait_seconds",
        "Seconds spent waiting for platforms' rate limits",
        wait_seconds.clone(),
    );
    registry.register(
        "worker_breaker_opens",
        "Times each source's circuit breaker opened",
        opens.clone(),
    );
    let held = Family::<SourceLabels, Counter>::default();
    registry.register(
        "worker_held_runs",
        "Runs the shrink guard held (old rows kept; confirm with `adlake-ingest run --confirm-shrink RUN_ID`)",
        held.clone(),
    );
    for ((client, source), n) in HELD_RUNS.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        held.get_or_create(&SourceLabels {
            client: client.clone(),
            source: source.clone(),
        })
        .inc_by(*n);
    }
    for s in http.sources() {
        let labels = SourceLabels::of(&s.source_key);
        state.get_or_create(&labels).set(s.breaker.gauge());
        calls.get_or_create(&labels).inc_by(s.counts.api_calls);
        retries.get_or_create(&labels).inc_by(s.counts.retries);
        waits
            .get_or_create(&labels)
            .inc_by(s.counts.rate_limit_waits);
        wait_seconds
            .get_or_create(&labels)
            .inc_by(s.counts.rate_limit_wait_seconds);
        opens.get_or_create(&labels).inc_by(s.counts.breaker_opens);
        // Zero until the guard holds one of the source's runs.
        held.get_or_create(&labels).inc_by(0);
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

/// Parses `--metrics-addr`: `HOST:PORT`, a host name resolved now.
pub fn parse_addr(s: &str) -> std::result::Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = |why: String| format!("expected HOST:PORT for --metrics-addr, got '{s}': {why}");
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => s
            .to_socket_addrs()
            .map_err(|e| bad(e.to_string()))?
            .next()
            .ok_or_else(|| bad("the host name has no address".to_owned())),
        _ => Err(bad("no port".to_owned())),
    }
}

/// Binds `addr` and serves `GET /metrics` from `http` until the process
/// ends; returns the bound address. A port that cannot be bound is an
/// [`Error::Usage`].
pub async fn serve(addr: SocketAddr, http: Arc<HttpClient>) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Usage(format!("cannot listen on --metrics-addr {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Usage(format!("cannot listen on --metrics-addr {addr}: {e}")))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let http = Arc::clone(&http);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    render(&http),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "serving /metrics");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_addr("127.0.0.1:9100").unwrap(),
            "127.0.0.1:9100".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(parse_addr("[::1]:0").unwrap().port(), 0);
        assert!(parse_addr("localhost:9100").unwrap().ip().is_loopback());
        for bad in [
            "",
            "9100",
            "127.0.0.1",
            "127.0.0.1:http",
            "127.0.0.1:70000",
            ":9100",
        ] {
            let err = parse_addr(bad).unwrap_err();
            assert!(err.contains("expected HOST:PORT"), "{bad}: {err}");
        }
    }

    #[test]
    fn labels_split_the_source_key() {
        assert_eq!(
            SourceLabels::of("acme/google_ads"),
            SourceLabels {
                client: "acme".to_owned(),
                source: "google_ads".to_owned()
            }
        );
    }
}
