//! Prometheus metrics, served as text on `GET /metrics` of the HTTP port.
//!
//! One process-wide registry ([`global`]) holds every family; code that
//! wants to count something calls a hook here rather than holding metric
//! handles: [`observe_query`] once per finished query, [`cache_event`] from
//! the result cache, [`observe_table`] and [`set_freshness_lag`] from the
//! refresher ([`refresh_from_engine`], run before each scrape).
//!
//! Names (all prefixed `adlake_`): `queries_total{kind,status}`,
//! `query_duration_seconds{kind}` (histogram), `query_errors_total{status}`,
//! `query_rows_total`, `cache_events_total{event}` (hit, miss, eviction),
//! `cache_bytes`, `cache_entries`, `footer_cache_events_total{event}` (hit,
//! miss), `footer_cache_bytes`, `footer_cache_entries`, `table_version{table}`,
//! `table_files{table}`, `table_bytes{table}`,
//! `freshness_lag_seconds{client,source}`, `ingest_runs{source,status}`,
//! `ingest_rows_read{source}`, `ingest_rows_written{source}`,
//! `ingest_rows_quarantined{source}` (totals over `ingest_runs`, so every
//! replica reports the same whichever process ran the ingest), the
//! platform-call counters of those runs `ingest_api_calls_total{source}`,
//! `ingest_retries_total{source}`, `ingest_rate_limit_waits_total{source}`,
//! `ingest_rate_limit_wait_seconds_total{source}`,
//! `ingest_breaker_opens_total{source}` (they only grow, even when runs are
//! erased), `connections_held_total` and `requests_delayed_total` (the
//! Flight port's guards against garbage, [`crate::peer`]), `up`. The live circuit-breaker state is the ingest worker's
//! (`adlake-ingest worker --metrics-addr`, `adlake_ingest::live`).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use adlake_engine::ingest_runs::{RunTotals, run_totals};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Every metric family the server exports, by name without the prefix and
/// suffix; the deploy rules' check reads this list.
pub const EXPORTED: &[&str] = &[
    "adlake_up",
    "adlake_queries_total",
    "adlake_query_duration_seconds",
    "adlake_query_errors_total",
    "adlake_query_rows_total",
    "adlake_scan_rows_total",
    "adlake_scan_bytes_total",
    "adlake_cache_events_total",
    "adlake_table_version",
    "adlake_table_files",
    "adlake_table_bytes",
    "adlake_freshness_lag_seconds",
    "adlake_data_quality_findings",
    "adlake_cache_bytes",
    "adlake_cache_entries",
    "adlake_footer_cache_events_total",
    "adlake_footer_cache_bytes",
    "adlake_footer_cache_entries",
    "adlake_ingest_runs",
    "adlake_ingest_rows_read",
    "adlake_ingest_rows_written",
    "adlake_ingest_rows_quarantined",
    "adlake_ingest_api_calls_total",
    "adlake_ingest_retries_total",
    "adlake_ingest_rate_limit_waits_total",
    "adlake_ingest_rate_limit_wait_seconds_total",
    "adlake_ingest_breaker_opens_total",
    "adlake_connections_held_total",
    "adlake_requests_delayed_total",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    kind: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    source: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FreshnessLabels {
    client: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QualityLabels {
    client: String,
    source: String,
    check: String,
    severity: String,
}

/// The metric families of the process.
pub struct Metrics {
    registry: Registry,
    queries: Family<QueryLabels, Counter>,
    latency: Family<KindLabel, Histogram>,
    errors: Family<StatusLabel, Counter>,
    rows: Counter,
    scan_rows: Counter,
    scan_bytes: Counter,
    cache: Family<EventLabel, Counter>,
    table_version: Family<TableLabel, Gauge>,
    table_files: Family<TableLabel, Gauge>,
    table_bytes: Family<TableLabel, Gauge>,
    freshness: Family<FreshnessLabels, Gauge<f64, AtomicU64>>,
    quality: Family<QualityLabels, Gauge>,
    cache_bytes: Gauge,
    cache_entries: Gauge,
    footer_events: Family<EventLabel, Counter>,
    footer_bytes: Gauge,
    footer_entries: Gauge,
    ingest_runs: Family<RunLabels, Gauge>,
    ingest_rows_read: Family<SourceLabel, Gauge>,
    ingest_rows_written: Family<SourceLabel, Gauge>,
    ingest_rows_quarantined: Family<SourceLabel, Gauge>,
    ingest_api_calls: Family<SourceLabel, Counter>,
    ingest_retries: Family<SourceLabel, Counter>,
    ingest_rate_limit_waits: Family<SourceLabel, Counter>,
    ingest_rate_limit_wait_seconds: Family<SourceLabel, Counter<f64, AtomicU64>>,
    ingest_breaker_opens: Family<SourceLabel, Counter>,
    connections_held: Counter,
    requests_delayed: Counter,
    up: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("adlake");
        let queries = Family::<QueryLabels, Counter>::default();
        let latency = Family::<KindLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let errors = Family::<StatusLabel, Counter>::default();
        let rows = Counter::default();
        let scan_rows = Counter::default();
        let scan_bytes = Counter::default();
        let cache = Family::<EventLabel, Counter>::default();
        let table_version = Family::<TableLabel, Gauge>::default();
        let table_files = Family::<TableLabel, Gauge>::default();
        let table_bytes = Family::<TableLabel, Gauge>::default();
        let freshness = Family::<FreshnessLabels, Gauge<f64, AtomicU64>>::default();
        let quality = Family::<QualityLabels, Gauge>::default();
        let cache_bytes = Gauge::default();
        let cache_entries = Gauge::default();
        let footer_events = Family::<EventLabel, Counter>::default();
        let footer_bytes = Gauge::default();
        let footer_entries = Gauge::default();
        let ingest_runs = Family::<RunLabels, Gauge>::default();
        let ingest_rows_read = Family::<SourceLabel, Gauge>::default();
        let ingest_rows_written = Family::<SourceLabel, Gauge>::default();
        let ingest_rows_quarantined = Family::<SourceLabel, Gauge>::default();
        let ingest_api_calls = Family::<SourceLabel, Counter>::default();
        let ingest_retries = Family::<SourceLabel, Counter>::default();
        let ingest_rate_limit_waits = Family::<SourceLabel, Counter>::default();
        let ingest_rate_limit_wait_seconds =
            Family::<SourceLabel, Counter<f64, AtomicU64>>::default();
        let ingest_breaker_opens = Family::<SourceLabel, Counter>::default();
        let up = Gauge::default();
        up.set(1);
        registry.register("up", "1 while the server process runs", up.clone());
        let connections_held = Counter::default();
        registry.register(
            "connections_held",
            "Connections to the Flight port that did not start as HTTP/2 (or TLS), held then closed",
            connections_held.clone(),
        );
        let requests_delayed = Counter::default();
        registry.register(
            "requests_delayed",
            "Requests delayed because their connection kept sending requests refused as undecodable or unauthenticated",
            requests_delayed.clone(),
        );
        registry.register(
            "queries",
            "Queries finished, by kind and gRPC status",
            queries.clone(),
        );
        registry.register(
            "query_duration_seconds",
            "Query latency by kind",
            latency.clone(),
        );
        registry.register(
            "query_errors",
            "Failed queries by gRPC status",
            errors.clone(),
        );
        registry.register("query_rows", "Rows returned by queries", rows.clone());
        registry.register(
            "scan_rows",
            "Rows read by the table scans of queries (cache hits read none)",
            scan_rows.clone(),
        );
        registry.register(
            "scan_bytes",
            "Bytes of Parquet data read from storage by the scans of queries",
            scan_bytes.clone(),
        );
        registry.register(
            "cache_events",
            "Result cache hits, misses and evictions",
            cache.clone(),
        );
        registry.register(
            "table_version",
            "Current Delta version per table",
            table_version.clone(),
        );
        registry.register(
            "table_files",
            "Active data files per table",
            table_files.clone(),
        );
        registry.register(
            "table_bytes",
            "Bytes of active data files per table",
            table_bytes.clone(),
        );
        registry.register(
            "freshness_lag_seconds",
            "Seconds from the end (client-local) of the newest landed day to now, per client and source",
            freshness.clone(),
        );
        registry.register(
            "data_quality_findings",
            "Findings of data_quality() for yesterday, per client, source, check and severity",
            quality.clone(),
        );
        registry.register(
            "cache_bytes",
            "Bytes held by the result cache",
            cache_bytes.clone(),
        );
        registry.register(
            "cache_entries",
            "Answers held by the result cache",
            cache_entries.clone(),
        );
        registry.register(
            "footer_cache_events",
            "Look-ups of parsed Parquet footers by the scans: hit or miss (the footer was read and parsed)",
            footer_events.clone(),
        );
        registry.register(
            "footer_cache_bytes",
            "Bytes held by the cache of parsed Parquet footers",
            footer_bytes.clone(),
        );
        registry.register(
            "footer_cache_entries",
            "Parquet footers held by the footer cache",
            footer_entries.clone(),
        );
        registry.register(
            "ingest_runs",
            "Ingest runs recorded in ingest_runs, by source and status",
            ingest_runs.clone(),
        );
        registry.register(
            "ingest_rows_read",
            "Rows read from sources by recorded ingest runs",
            ingest_rows_read.clone(),
        );
        registry.register(
            "ingest_rows_written",
            "Rows written by recorded ingest runs",
            ingest_rows_written.clone(),
        );
        registry.register(
            "ingest_rows_quarantined",
            "Rows quarantined by recorded ingest runs",
            ingest_rows_quarantined.clone(),
        );
        registry.register(
            "ingest_api_calls",
            "HTTP requests to source platforms by recorded ingest runs (retries and token refreshes included)",
            ingest_api_calls.clone(),
        );
        registry.register(
            "ingest_retries",
            "Retried platform calls (attempts after the first) by recorded ingest runs",
            ingest_retries.clone(),
        );
        registry.register(
            "ingest_rate_limit_waits",
            "Waits for platform rate limits by recorded ingest runs",
            ingest_rate_limit_waits.clone(),
        );
        registry.register(
            "ingest_rate_limit_wait_seconds",
            "Seconds recorded ingest runs waited for platform rate limits",
            ingest_rate_limit_wait_seconds.clone(),
        );
        registry.register(
            "ingest_breaker_opens",
            "Circuit-breaker openings by recorded ingest runs",
            ingest_breaker_opens.clone(),
        );
        Self {
            registry,
            queries,
            latency,
            errors,
            rows,
            scan_rows,
            scan_bytes,
            cache,
            table_version,
            table_files,
            table_bytes,
            freshness,
            quality,
            cache_bytes,
            cache_entries,
            footer_events,
            footer_bytes,
            footer_entries,
            ingest_runs,
            ingest_rows_read,
            ingest_rows_written,
            ingest_rows_quarantined,
            ingest_api_calls,
            ingest_retries,
            ingest_rate_limit_waits,
            ingest_rate_limit_wait_seconds,
            ingest_breaker_opens,
            connections_held,
            requests_delayed,
            up,
        }
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        let _ = &self.up;
        out
    }
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Records one finished query: `kind` is what was asked (`sql`,
/// `prepared`, `metric`, `catalog`, ...), `status` the gRPC code name
/// (`ok`, `invalid_argument`, ...).
pub fn observe_query(kind: &str, status: &str, elapsed: Duration, rows: u64) {
    let m = global();
    m.queries
        .get_or_create(&QueryLabels {
            kind: kind.to_owned(),
            status: status.to_owned(),
        })
        .inc();
    m.latency
        .get_or_create(&KindLabel {
            kind: kind.to_owned(),
        })
        .observe(elapsed.as_secs_f64());
    if status != "ok" {
        m.errors
            .get_or_create(&StatusLabel {
                status: status.to_owned(),
            })
            .inc();
    }
    m.rows.inc_by(rows);
}

/// Records a failed call of a Flight SQL or gRPC method, `elapsed` after
/// it came in.
pub fn observe_failure(method: &str, code: tonic::Code, elapsed: Duration) {
    observe_query(method, &status_name(code), elapsed, 0);
}

/// The observer of the engine's door ([`adlake_engine::executor`]): every
/// query, once its answer is over (streamed to the end: `ok`; failed: its
/// status; dropped before the end: `cancelled`), counted with the rows it
/// streamed and its time from the first byte of the call to the last of the
/// answer, and written to the access log when the surface left its entry
/// as the request's note.
pub fn query_observer() -> Arc<dyn adlake_engine::executor::QueryObserver> {
    Arc::new(QueryObserver)
}

struct QueryObserver;

impl adlake_engine::executor::QueryObserver for QueryObserver {
    fn completed(&self, query: adlake_engine::executor::Completed<'_>) {
        use adlake_engine::executor::Outcome;
        let status = match &query.outcome {
            Outcome::Ok => "ok".to_owned(),
            Outcome::Cancelled => "cancelled".to_owned(),
            Outcome::Failed(err) => status_name(crate::error::status_code(err)),
        };
        observe_query(query.kind, &status, query.elapsed, query.rows);
        let entry = query
            .note
            .and_then(|note| note.downcast::<crate::access::Entry>().ok());
        if let Some(mut entry) = entry {
            entry.rows = query.rows;
            entry.tables = query.tables.clone();
            entry.cache = query.cache.map(adlake_engine::CacheStatus::as_str);
            entry.write(&status, None, query.elapsed);
        }
    }
}

/// `InvalidArgument` -> `invalid_argument`.
pub fn status_name(code: tonic::Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Counts one connection held for not speaking HTTP/2 ([`crate::peer`]).
pub fn connection_held() {
    global().connections_held.inc();
}

/// Counts one request delayed for its connection's refusals
/// ([`crate::peer`]).
pub fn request_delayed() {
    global().requests_delayed.inc();
}

/// Counts one result-cache event (`hit`, `miss`, `eviction`, ...).
pub fn cache_event(event: &str) {
    global()
        .cache
        .get_or_create(&EventLabel {
            event: event.to_owned(),
        })
        .inc();
}

/// Sets one table's version, file count and bytes.
pub fn observe_table(table: &str, version: Option<u64>, files: usize, bytes: u64) {
    let m = global();
    let label = TableLabel {
        table: table.to_owned(),
    };
    m.table_version
        .get_or_create(&label)
        .set(version.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX)));
    m.table_files
        .get_or_create(&label)
        .set(i64::try_from(files).unwrap_or(i64::MAX));
    m.table_bytes
        .get_or_create(&label)
        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

/// Mirrors the result cache's counters: hits, misses and evictions into
/// `cache_events_total`, bytes and entries into their gauges.
pub fn observe_cache(stats: &adlake_engine::cache::CacheStats) {
    let m = global();
    mirror_cache(
        (&m.cache, &m.cache_bytes, &m.cache_entries),
        &[
            ("hit", stats.hits),
            ("miss", stats.misses),
            ("eviction", stats.evictions),
        ],
        (stats.bytes, stats.entries),
    );
}

/// Mirrors the engine's footer cache into `footer_cache_events_total`,
/// `footer_cache_bytes` and `footer_cache_entries`.
pub fn observe_footers(stats: adlake_engine::scan::FooterCacheStats) {
    let m = global();
    mirror_cache(
        (&m.footer_events, &m.footer_bytes, &m.footer_entries),
        &[("hit", stats.hits), ("miss", stats.misses)],
        (stats.bytes, stats.entries),
    );
}

/// Moves a cache's event counters up to the totals it reports and sets its
/// size gauges.
fn mirror_cache(
    (events, bytes, entries): (&Family<EventLabel, Counter>, &Gauge, &Gauge),
    totals: &[(&str, u64)],
    (held_bytes, held_entries): (u64, u64),
) {
    for (event, total) in totals {
        let counter = events.get_or_create(&EventLabel {
            event: (*event).to_owned(),
        });
        let seen = counter.get();
        if *total > seen {
            counter.inc_by(total - seen);
        }
    }
    bytes.set(i64::try_from(held_bytes).unwrap_or(i64::MAX));
    entries.set(i64::try_from(held_entries).unwrap_or(i64::MAX));
}

/// Mirrors the engine's scan totals into `scan_rows_total` and
/// `scan_bytes_total`.
pub fn observe_scans(totals: adlake_engine::ScanTotals) {
    let m = global();
    for (counter, total) in [(&m.scan_rows, totals.rows), (&m.scan_bytes, totals.bytes)] {
        let seen = counter.get();
        if total > seen {
            counter.inc_by(total - seen);
        }
    }
}

/// Sums of one source's platform-call columns.
#[derive(Default)]
struct CallSums {
    api_calls: u64,
    retries: u64,
    rate_limit_waits: u64,
    rate_limit_wait_seconds: f64,
    breaker_opens: u64,
}

/// Raises `counter` to `total` (a counter never goes down).
fn raise_to(counter: &Counter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// Sets the ingest families from `ingest_runs` totals.
pub fn observe_ingest(totals: &[RunTotals]) {
    let m = global();
    let mut by_source: std::collections::BTreeMap<&str, (u64, u64, u64)> =
        std::collections::BTreeMap::new();
    let mut calls: std::collections::BTreeMap<&str, CallSums> = std::collections::BTreeMap::new();
    for t in totals {
        m.ingest_runs
            .get_or_create(&RunLabels {
                source: t.source.clone(),
                status: t.status.clone(),
            })
            .set(i64::try_from(t.runs).unwrap_or(i64::MAX));
        let sums = by_source.entry(&t.source).or_default();
        sums.0 += t.rows_read;
        sums.1 += t.rows_written;
        sums.2 += t.rows_quarantined;
        let c = calls.entry(&t.source).or_default();
        c.api_calls += t.api_calls;
        c.retries += t.retries;
        c.rate_limit_waits += t.rate_limit_waits;
        c.rate_limit_wait_seconds += t.rate_limit_wait_seconds;
        c.breaker_opens += t.breaker_opens;
    }
    for (source, c) in calls {
        let label = SourceLabel {
            source: source.to_owned(),
        };
        for (family, total) in [
            (&m.ingest_api_calls, c.api_calls),
            (&m.ingest_retries, c.retries),
            (&m.ingest_rate_limit_waits, c.rate_limit_waits),
            (&m.ingest_breaker_opens, c.breaker_opens),
        ] {
            raise_to(&family.get_or_create(&label), total);
        }
        let seconds = m.ingest_rate_limit_wait_seconds.get_or_create(&label);
        let seen = seconds.get();
        if c.rate_limit_wait_seconds > seen {
            seconds.inc_by(c.rate_limit_wait_seconds - seen);
        }
    }
    for (source, (read, written, quarantined)) in by_source {
        let label = SourceLabel {
            source: source.to_owned(),
        };
        for (family, value) in [
            (&m.ingest_rows_read, read),
            (&m.ingest_rows_written, written),
            (&m.ingest_rows_quarantined, quarantined),
        ] {
            family
                .get_or_create(&label)
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }
}

/// Sets the freshness lag of one client and source.
pub fn set_freshness_lag(client: &str, source: &str, seconds: f64) {
    global()
        .freshness
        .get_or_create(&FreshnessLabels {
            client: client.to_owned(),
            source: source.to_owned(),
        })
        .set(seconds);
}

/// Replaces the data-quality findings: one count per client, source, check
/// and severity; a finding that went away leaves no series.
pub fn set_quality_findings<'a>(findings: impl IntoIterator<Item = [&'a str; 4]>) {
    let family = &global().quality;
    family.clear();
    for [client, source, check, severity] in findings {
        family
            .get_or_create(&QualityLabels {
                client: client.to_owned(),
                source: source.to_owned(),
                check: check.to_owned(),
                severity: severity.to_owned(),
            })
            .inc();
    }
}

/// Recomputes the data-quality findings when a fact table moved, the day
/// changed, or five minutes passed.
async fn refresh_quality(engine: &adlake_engine::Engine) {
    use arrow::array::AsArray;
    type Stamp = (Vec<Option<u64>>, chrono::NaiveDate, std::time::Instant);
    static LAST: Mutex<Option<Stamp>> = Mutex::new(None);
    let versions: Vec<Option<u64>> = ["ad_performance", "web_sessions", "orders"]
        .iter()
        .map(|t| engine.catalog().snapshot(t).and_then(|s| s.version))
        .collect();
    if versions[0].is_none() {
        return;
    }
    let today = engine.now().date_naive();
    if let Some((v, day, at)) = &*LAST.lock().expect("quality lock poisoned")
        && *v == versions
        && *day == today
        && at.elapsed() < Duration::from_secs(300)
    {
        return;
    }
    let sql = "SELECT client_id, source, \"check\", severity FROM data_quality()";
    let batches = match engine
        .execute_sql(&adlake_engine::Scope::AllClients, sql, true)
        .await
    {
        Ok(answer) => futures::TryStreamExt::try_collect::<Vec<_>>(answer.batches).await,
        Err(err) => {
            tracing::warn!(error = %err, "cannot compute data quality for /metrics");
            return;
        }
    };
    let batches = match batches {
        Ok(batches) => batches,
        Err(err) => {
            tracing::warn!(error = %err, "cannot compute data quality for /metrics");
            return;
        }
    };
    let mut findings = Vec::new();
    for batch in &batches {
        let text: Vec<arrow::array::ArrayRef> = (0..4)
            .filter_map(|i| {
                arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8).ok()
            })
            .collect();
        if text.len() < 4 {
            continue;
        }
        for row in 0..batch.num_rows() {
            findings.push([0, 1, 2, 3].map(|i| text[i].as_string::<i32>().value(row).to_string()));
        }
    }
    set_quality_findings(
        findings
            .iter()
            .map(|f| [f[0].as_str(), f[1].as_str(), f[2].as_str(), f[3].as_str()]),
    );
    *LAST.lock().expect("quality lock poisoned") =
        Some((versions, today, std::time::Instant::now()));
}

static ENGINE: Mutex<Option<std::sync::Weak<adlake_engine::Engine>>> = Mutex::new(None);

/// Lets `/metrics` refresh the table and freshness gauges from this engine
/// before each scrape.
pub fn register_engine(engine: &Arc<adlake_engine::Engine>) {
    *ENGINE.lock().expect("metrics lock poisoned") = Some(Arc::downgrade(engine));
}

/// The text `/metrics` answers: gauges refreshed from the registered
/// engine, then every family.
pub async fn scrape() -> String {
    let engine = ENGINE
        .lock()
        .expect("metrics lock poisoned")
        .as_ref()
        .and_then(std::sync::Weak::upgrade);
    if let Some(engine) = engine {
        refresh_from_engine(&engine).await;
    }
    global().render()
}

/// Refreshes the table and freshness gauges from the engine's current
/// snapshots. Freshness is recomputed at most once per `every`.
pub async fn refresh_from_engine(engine: &adlake_engine::Engine) {
    observe_cache(&engine.cache().stats());
    observe_scans(engine.scan_totals());
    observe_footers(engine.footer_cache());
    for snapshot in engine.catalog().snapshots() {
        let (files, bytes) = snapshot.file_stats();
        observe_table(snapshot.def.name, snapshot.version, files, bytes);
    }
    refresh_quality(engine).await;
    static LAST: Mutex<Option<(Option<u64>, std::time::Instant)>> = Mutex::new(None);
    let Some(runs) = engine.catalog().snapshot("ingest_runs") else {
        return;
    };
    {
        let last = LAST.lock().expect("freshness lock poisoned");
        if let Some((version, at)) = *last
            && version == runs.version
            && at.elapsed() < Duration::from_secs(30)
        {
            return;
        }
    }
    if runs.version.is_none() {
        return;
    }
    match run_totals(Arc::clone(&runs.provider)).await {
        Ok(totals) => observe_ingest(&totals),
        Err(err) => tracing::warn!(error = %err, "cannot sum ingest_runs for /metrics"),
    }
    match adlake_engine::freshness::load_landings(Arc::clone(&runs.provider), None).await {
        Ok(landings) => {
            let zones = engine.time_zones();
            for f in adlake_engine::freshness::compute(&landings, &zones, chrono::Utc::now()) {
                set_freshness_lag(&f.client_id, &f.source, f.lag_seconds as f64);
            }
            *LAST.lock().expect("freshness lock poisoned") =
                Some((runs.version, std::time::Instant::now()));
        }
        Err(err) => tracing::warn!(error = %err, "cannot compute freshness for /metrics"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_quality_findings_replace_the_previous_ones() {
        set_quality_findings([
            ["acme", "meta_ads", "stopped", "critical"],
            ["acme", "ga4", "missing_day", "warning"],
            ["acme", "ga4", "missing_day", "warning"],
        ]);
        let text = global().render();
        assert!(text.contains(
            "adlake_data_quality_findings{client=\"acme\",source=\"meta_ads\",check=\"stopped\",severity=\"critical\"} 1"
        ), "{text}");
        assert!(text.contains(
            "adlake_data_quality_findings{client=\"acme\",source=\"ga4\",check=\"missing_day\",severity=\"warning\"} 2"
        ));
        set_quality_findings([["acme", "ga4", "missing_day", "warning"]]);
        let text = global().render();
        assert!(
            !text.contains("check=\"stopped\""),
            "a resolved finding leaves no series"
        );
    }

    #[test]
    fn renders_prometheus_text_with_every_family() {
        observe_query("sql", "ok", Duration::from_millis(12), 3);
        observe_query("sql", "invalid_argument", Duration::from_millis(1), 0);
        cache_event("hit");
        observe_table("ad_performance", Some(4), 10, 12_345);
        set_freshness_lag("acme", "google_ads", 3600.0);
        set_quality_findings([["acme", "meta_ads", "stopped", "critical"]]);
        observe_failure(
            "get_flight_info",
            tonic::Code::PermissionDenied,
            Duration::from_millis(2),
        );
        observe_cache(&adlake_engine::cache::CacheStats {
            hits: 5,
            misses: 2,
            evictions: 1,
            entries: 3,
            bytes: 4096,
        });
        observe_footers(adlake_engine::scan::FooterCacheStats {
            hits: 40,
            misses: 9,
            entries: 9,
            bytes: 90_000,
            limit: 1 << 20,
        });
        observe_ingest(&[
            RunTotals {
                source: "google_ads".into(),
                status: "succeeded".into(),
                runs: 4,
                rows_read: 100,
                rows_written: 90,
                rows_quarantined: 10,
                api_calls: 12,
                retries: 3,
                rate_limit_waits: 2,
                rate_limit_wait_seconds: 1.5,
                breaker_opens: 0,
            },
            RunTotals {
                source: "google_ads".into(),
                status: "failed".into(),
                runs: 1,
                rows_read: 7,
                rows_written: 0,
                rows_quarantined: 0,
                api_calls: 5,
                retries: 4,
                rate_limit_waits: 0,
                rate_limit_wait_seconds: 0.0,
                breaker_opens: 1,
            },
        ]);
        let text = global().render();
        for name in EXPORTED {
            let family = name.trim_end_matches("_total");
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{name} missing in:\n{text}"
            );
            assert!(
                text.contains(&format!("\n{name}")),
                "{name} has no sample in:\n{text}"
            );
        }
        assert!(
            text.contains("adlake_queries_total{kind=\"sql\",status=\"ok\"}"),
            "{text}"
        );
        assert!(
            text.contains("adlake_query_errors_total{status=\"invalid_argument\"}"),
            "{text}"
        );
        assert!(
            text.contains("adlake_query_errors_total{status=\"permission_denied\"}"),
            "{text}"
        );
        assert!(
            text.contains("adlake_table_bytes{table=\"ad_performance\"} 12345"),
            "{text}"
        );
        assert!(
            text.contains("adlake_footer_cache_events_total{event=\"hit\"} 40")
                && text.contains("adlake_footer_cache_events_total{event=\"miss\"} 9")
                && text.contains("adlake_footer_cache_bytes 90000"),
            "{text}"
        );
        assert!(
            text.contains(
                "adlake_freshness_lag_seconds{client=\"acme\",source=\"google_ads\"} 3600"
            ),
            "{text}"
        );
        for line in [
            "adlake_cache_events_total{event=\"hit\"} 5",
            "adlake_cache_events_total{event=\"eviction\"} 1",
            "adlake_cache_bytes 4096",
            "adlake_ingest_runs{source=\"google_ads\",status=\"failed\"} 1",
            "adlake_ingest_rows_read{source=\"google_ads\"} 107",
            "adlake_ingest_rows_quarantined{source=\"google_ads\"} 10",
            // Both statuses of google_ads: 12 + 5 calls, 3 + 4 retries,
            // 2 + 0 waits of 1.5 + 0 s, 0 + 1 openings.
            "adlake_ingest_api_calls_total{source=\"google_ads\"} 17",
            "adlake_ingest_retries_total{source=\"google_ads\"} 7",
            "adlake_ingest_rate_limit_waits_total{source=\"google_ads\"} 2",
            "adlake_ingest_rate_limit_wait_seconds_total{source=\"google_ads\"} 1.5",
            "adlake_ingest_breaker_opens_total{source=\"google_ads\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        assert!(
            text.lines()
                .any(|l| l.starts_with("adlake_query_duration_seconds_bucket{")
                    && l.contains("kind=\"sql\"")
                    && l.contains("le=\"0.025\"")),
            "{text}"
        );
    }

    /// (api_calls, retries, waits, wait seconds, opens) of one run.
    type Calls = (i64, i64, i64, f64, i64);

    /// `ingest_runs` rows as `run_totals` reads them: source, status and
    /// the run's calls, `None` for a run without platform calls.
    fn runs_table(
        rows: &[(&str, &str, Option<Calls>)],
        with_call_columns: bool,
    ) -> Arc<dyn datafusion::catalog::TableProvider> {
        use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
        use arrow::datatypes::{DataType, Field, Schema};
        let mut fields = vec![
            Field::new("source", DataType::Utf8, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("rows_read", DataType::Int64, false),
            Field::new("rows_written", DataType::Int64, false),
            Field::new("rows_quarantined", DataType::Int64, false),
        ];
        let ones: ArrayRef = Arc::new(Int64Array::from(vec![1; rows.len()]));
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::clone(&ones),
            Arc::clone(&ones),
            Arc::clone(&ones),
        ];
        if with_call_columns {
            let int = |f: fn(&Calls) -> i64| -> ArrayRef {
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.2.as_ref().map(f)).collect::<Vec<_>>(),
                ))
            };
            for name in ["api_calls", "retries", "rate_limit_waits"] {
                fields.push(Field::new(name, DataType::Int64, true));
            }
            fields.push(Field::new(
                "rate_limit_wait_seconds",
                DataType::Float64,
                true,
            ));
            fields.push(Field::new("breaker_opens", DataType::Int64, true));
            columns.extend([
                int(|c| c.0),
                int(|c| c.1),
                int(|c| c.2),
                Arc::new(Float64Array::from(
                    rows.iter().map(|r| r.2.map(|c| c.3)).collect::<Vec<_>>(),
                )) as ArrayRef,
                int(|c| c.4),
            ]);
        }
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns).unwrap();
        Arc::new(datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]]).unwrap())
    }

    /// `ingest_runs` rows of (run id, source, status, finished_at micros,
    /// rows written).
    fn run_rows_table(
        rows: &[(&str, &str, &str, i64, i64)],
    ) -> Arc<dyn datafusion::catalog::TableProvider> {
        use arrow::array::{
            ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
        };
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        let schema = Arc::new(Schema::new(vec![
            Field::new("run_id", DataType::Utf8, false),
            Field::new("source", DataType::Utf8, false),
            Field::new("status", DataType::Utf8, false),
            Field::new(
                "finished_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("rows_read", DataType::Int64, false),
            Field::new("rows_written", DataType::Int64, false),
            Field::new("rows_quarantined", DataType::Int64, false),
        ]));
        let text = |n: usize| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(
                |r| match n {
                    0 => r.0,
                    1 => r.1,
                    _ => r.2,
                },
            )))
        };
        let written: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.4)));
        let columns: Vec<ArrayRef> = vec![
            text(0),
            text(1),
            text(2),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.3))
                    .with_timezone("UTC"),
            ),
            Arc::clone(&written),
            Arc::clone(&written),
            Arc::new(Int64Array::from(vec![0; rows.len()])),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns).unwrap();
        Arc::new(datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]]).unwrap())
    }

    #[tokio::test]
    async fn a_run_is_counted_once_under_its_latest_row() {
        // r1 started then succeeded (5 rows); r2 held, then confirmed
        // (started, succeeded with 2 rows); r3 started only (killed); r4's
        // finish has the instant of its start.
        let runs = run_rows_table(&[
            ("r1", "meta_ads", "started", 10, 0),
            ("r1", "meta_ads", "succeeded", 20, 5),
            ("r2", "meta_ads", "held", 30, 0),
            ("r2", "meta_ads", "started", 40, 0),
            ("r2", "meta_ads", "succeeded", 50, 2),
            ("r3", "meta_ads", "started", 60, 0),
            ("r4", "ga4", "started", 70, 0),
            ("r4", "ga4", "failed", 70, 0),
        ]);
        let totals = run_totals(runs).await.unwrap();
        let got: Vec<(&str, &str, u64, u64)> = totals
            .iter()
            .map(|t| (t.source.as_str(), t.status.as_str(), t.runs, t.rows_written))
            .collect();
        assert_eq!(
            got,
            [
                ("ga4", "failed", 1, 0),
                ("ga4", "started", 0, 0),
                ("meta_ads", "held", 0, 0),
                ("meta_ads", "started", 1, 0),
                ("meta_ads", "succeeded", 2, 7),
            ]
        );
    }

    #[tokio::test]
    async fn ingest_call_counters_sum_ingest_runs_and_never_go_down() {
        // linkedin_ads: a run with 3 calls, 2 retries, 1 wait of 0.25 s; a
        // failed run with 3 calls, 2 retries, 1 opening; a file run (nulls).
        // tiktok_ads: one run, 1 call.
        let runs = runs_table(
            &[
                ("linkedin_ads", "succeeded", Some((3, 2, 1, 0.25, 0))),
                ("linkedin_ads", "failed", Some((3, 2, 0, 0.0, 1))),
                ("linkedin_ads", "succeeded", None),
                ("tiktok_ads", "succeeded", Some((1, 0, 0, 0.0, 0))),
            ],
            true,
        );
        let totals = run_totals(runs).await.unwrap();
        let linkedin_ok = totals
            .iter()
            .find(|t| t.source == "linkedin_ads" && t.status == "succeeded")
            .unwrap();
        assert_eq!(
            (
                linkedin_ok.runs,
                linkedin_ok.api_calls,
                linkedin_ok.retries,
                linkedin_ok.rate_limit_waits,
                linkedin_ok.rate_limit_wait_seconds,
                linkedin_ok.breaker_opens
            ),
            (2, 3, 2, 1, 0.25, 0)
        );
        observe_ingest(&totals);
        let text = global().render();
        for line in [
            // 3 + 3 + null calls, 2 + 2 retries, 1 wait, 1 opening.
            "adlake_ingest_api_calls_total{source=\"linkedin_ads\"} 6",
            "adlake_ingest_retries_total{source=\"linkedin_ads\"} 4",
            "adlake_ingest_rate_limit_waits_total{source=\"linkedin_ads\"} 1",
            "adlake_ingest_rate_limit_wait_seconds_total{source=\"linkedin_ads\"} 0.25",
            "adlake_ingest_breaker_opens_total{source=\"linkedin_ads\"} 1",
            "adlake_ingest_api_calls_total{source=\"tiktok_ads\"} 1",
            "adlake_ingest_breaker_opens_total{source=\"tiktok_ads\"} 0",
            "# TYPE adlake_ingest_api_calls counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }

        // The failed run is erased: the counters keep their totals.
        let fewer = run_totals(runs_table(
            &[("linkedin_ads", "succeeded", Some((3, 2, 1, 0.25, 0)))],
            true,
        ))
        .await
        .unwrap();
        observe_ingest(&fewer);
        let text = global().render();
        assert!(
            text.lines()
                .any(|l| l == "adlake_ingest_api_calls_total{source=\"linkedin_ads\"} 6"),
            "{text}"
        );

        // A table of the older layout has no call columns: zeros, no error.
        let old = run_totals(runs_table(&[("ga4", "succeeded", None)], false))
            .await
            .unwrap();
        assert_eq!(
            old,
            [RunTotals {
                source: "ga4".into(),
                status: "succeeded".into(),
                runs: 1,
                rows_read: 1,
                rows_written: 1,
                rows_quarantined: 1,
                ..RunTotals::default()
            }]
        );
    }
}
