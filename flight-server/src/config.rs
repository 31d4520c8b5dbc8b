//! The service's configuration: command-line flags, each also settable
//! from the environment (`ADLAKE_*`) for containers.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Default warehouse location, relative to the working directory.
pub const DEFAULT_WAREHOUSE: &str = "./data/warehouse";
/// Default Flight SQL listen address.
pub const DEFAULT_FLIGHT_ADDR: &str = "127.0.0.1:50051";
/// Default HTTP (health) listen address.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";

/// adlake: Arrow Flight SQL over the agency's Delta Lake warehouse.
///
/// Without --auth-file the service runs in demo mode: it seeds a demo
/// warehouse if there is none, and writes demo tokens next to it.
#[derive(Debug, Clone, Parser)]
#[command(name = "adlake", version, about, long_about)]
pub struct Config {
    /// Warehouse location: a directory or a file:// URL.
    #[arg(long, env = "ADLAKE_WAREHOUSE", default_value = DEFAULT_WAREHOUSE)]
    pub warehouse: String,

    /// Flight SQL listen address (HOST:PORT; port 0 picks a free port).
    #[arg(long, env = "ADLAKE_FLIGHT_ADDR", default_value = DEFAULT_FLIGHT_ADDR)]
    pub flight_addr: String,

    /// HTTP listen address for /healthz and /readyz (HOST:PORT; port 0 picks
    /// a free port).
    #[arg(long, env = "ADLAKE_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: String,

    /// Auth file (TOML, one [[principal]] per caller). Without it the
    /// service runs in demo mode.
    #[arg(long, env = "ADLAKE_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,

    /// How often to look for new Delta table versions, in seconds.
    #[arg(long, env = "ADLAKE_REFRESH_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub refresh_secs: u64,

    /// Requests per second each caller may make, sustained (no limit when
    /// unset). Excess requests get RESOURCE_EXHAUSTED with a retry-after
    /// header.
    #[arg(long, env = "ADLAKE_RATE_LIMIT", value_parser = positive_f64)]
    pub rate_limit: Option<f64>,

    /// Requests a caller may make at once above the sustained rate (default:
    /// twice the rate, at least 1).
    #[arg(long, env = "ADLAKE_RATE_BURST", requires = "rate_limit", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_burst: Option<u32>,

    /// Queries that may run at once over all callers; more get
    /// RESOURCE_EXHAUSTED with a retry-after header.
    #[arg(long, env = "ADLAKE_MAX_CONCURRENT_QUERIES", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_concurrent_queries: u64,

    /// Queries one caller may run at once (0: only the global cap), so one
    /// caller cannot occupy every slot; more get RESOURCE_EXHAUSTED with a
    /// retry-after header.
    #[arg(long, env = "ADLAKE_MAX_CONCURRENT_QUERIES_PER_CALLER", default_value_t = 8, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub max_concurrent_queries_per_caller: u64,

    /// Longest a query may run, in seconds, fractions allowed (0: no
    /// limit).
    #[arg(long, env = "ADLAKE_QUERY_TIMEOUT_SECS", default_value_t = 300.0, value_parser = parse_timeout_secs)]
    pub query_timeout_secs: f64,

    /// Most bytes one query result may stream (Arrow in-memory size; 0: no
    /// limit).
    #[arg(long, env = "ADLAKE_MAX_RESULT_BYTES", default_value_t = 4 * 1024 * 1024 * 1024)]
    pub max_result_bytes: u64,

    /// Most bytes of working memory one query may hold (sorts, joins and
    /// aggregations spill to disk past it, or the query fails with
    /// ResourceExhausted; 0: no limit).
    #[arg(long, env = "ADLAKE_QUERY_MEMORY_BYTES", default_value_t = 2 * 1024 * 1024 * 1024)]
    pub query_memory_bytes: u64,

    /// Bytes of working memory all queries together may hold: each query's
    /// share (--query-memory-bytes) is drawn from it, so many queries at
    /// once cannot take more (default: half the memory limit of the
    /// container, or of the machine; 0: no bound over all queries).
    #[arg(long, env = "ADLAKE_MEMORY_POOL_BYTES")]
    pub memory_pool_bytes: Option<u64>,

    /// Execution lanes: queries run in their caller's lane, a set of worker
    /// threads of its own, so a caller keeps its share of the CPU however
    /// many queries another caller runs (callers share lanes past this
    /// many).
    #[arg(long, env = "ADLAKE_EXECUTION_LANES", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub execution_lanes: u16,

    /// Also accept HS256 JWTs signed with the secret in this file (at least
    /// 32 bytes); the `clients` claim lists the caller's clients.
    #[arg(
        long,
        env = "ADLAKE_JWT_HS256_SECRET_FILE",
        conflicts_with = "jwt_rs256_public_key_file"
    )]
    pub jwt_hs256_secret_file: Option<PathBuf>,

    /// Also accept RS256 JWTs verified with the PEM RSA public key in this
    /// file; the `clients` claim lists the caller's clients.
    #[arg(long, env = "ADLAKE_JWT_RS256_PUBLIC_KEY_FILE")]
    pub jwt_rs256_public_key_file: Option<PathBuf>,

    /// Required `iss` claim of JWTs.
    #[arg(long, env = "ADLAKE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim of JWTs.
    #[arg(long, env = "ADLAKE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Serve the Flight/gRPC port over TLS with this PEM certificate chain
    /// (needs --tls-key).
    #[arg(long, env = "ADLAKE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "ADLAKE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// TOML file of per-client time zones and custom metrics, validated at
    /// start (see `adlake_engine::semantic::MetricsConfig`).
    #[arg(long, env = "ADLAKE_METRICS_CONFIG")]
    pub metrics_config: Option<PathBuf>,

    /// The ingest client configuration (the file of `adlake-ingest run
    /// --config`): each client's `time_zone` decides its dates in the
    /// metric layer and its 08:00 freshness SLA. One file for every
    /// component; a client without one is in UTC.
    #[arg(long, value_name = "FILE", env = "ADLAKE_CLIENTS_CONFIG")]
    pub clients_config: Option<PathBuf>,

    /// Longest SQL statement accepted, in bytes; longer ones are refused
    /// with INVALID_ARGUMENT before they are parsed.
    #[arg(long, env = "ADLAKE_MAX_STATEMENT_BYTES", default_value_t = adlake_engine::DEFAULT_MAX_STATEMENT_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(16..=(256 * 1024 * 1024)))]
    pub max_statement_bytes: usize,

    /// Deepest nesting of expressions and subqueries a statement may have
    /// (a chain of N `OR`/`AND`/`+` terms nests N deep); deeper ones are
    /// refused with INVALID_ARGUMENT before they are planned.
    #[arg(long, env = "ADLAKE_MAX_EXPRESSION_DEPTH", default_value_t = adlake_engine::DEFAULT_MAX_EXPRESSION_DEPTH, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(8..=4096))]
    pub max_expression_depth: usize,

    /// Byte bound of the result cache shared by gRPC metric queries and
    /// Flight SQL statements.
    #[arg(long, env = "ADLAKE_CACHE_BYTES", default_value_t = adlake_engine::cache::DEFAULT_CACHE_BYTES)]
    pub cache_bytes: u64,

    /// Byte bound of the cache of parsed Parquet footers the scans share
    /// (a footer is read and parsed once, then served from memory).
    #[arg(long, env = "ADLAKE_FOOTER_CACHE_BYTES", default_value_t = adlake_engine::scan::DEFAULT_FOOTER_CACHE_BYTES)]
    pub footer_cache_bytes: usize,

    /// Export the spans of every call (request id, method, caller) over
    /// OTLP/gRPC to the OpenTelemetry collector at this http:// or https://
    /// URL, such as http://otel-collector:4317 (no export when unset or
    /// empty). An unreachable collector only costs warnings in the log.
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Append one JSON line per query and per refused call (caller, scope,
    /// statement or request, tables and versions read, rows, outcome,
    /// request id, time) to this file, created if missing. No access log
    /// when unset.
    #[arg(long, value_name = "PATH", env = "ADLAKE_ACCESS_LOG")]
    pub access_log: Option<std::path::PathBuf>,
}

/// The memory this process may use: the cgroup's limit (v2, then v1) when
/// it has one, else the machine's.
fn available_memory() -> Option<usize> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|text| text.trim().parse::<u64>().ok())
        // v1 reports "no limit" as a number near u64::MAX.
        .filter(|&bytes| bytes < (1 << 60));
    let machine = read("/proc/meminfo").and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    });
    let bytes = match (cgroup, machine) {
        (Some(c), Some(m)) => c.min(m),
        (c, m) => c.or(m)?,
    };
    usize::try_from(bytes).ok()
}

fn positive_f64(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a positive number")),
    }
}

impl Config {
    /// A configuration with every default, for `warehouse`.
    pub fn new(warehouse: impl Into<String>) -> Self {
        Self {
            warehouse: warehouse.into(),
            flight_addr: DEFAULT_FLIGHT_ADDR.into(),
            http_addr: DEFAULT_HTTP_ADDR.into(),
            auth_file: None,
            refresh_secs: 10,
            rate_limit: None,
            rate_burst: None,
            max_concurrent_queries: 64,
            max_concurrent_queries_per_caller: 8,
            query_timeout_secs: 300.0,
            max_result_bytes: 4 * 1024 * 1024 * 1024,
            query_memory_bytes: 2 * 1024 * 1024 * 1024,
            memory_pool_bytes: None,
            execution_lanes: 8,
            jwt_hs256_secret_file: None,
            jwt_rs256_public_key_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            tls_cert: None,
            tls_key: None,
            metrics_config: None,
            clients_config: None,
            max_statement_bytes: adlake_engine::DEFAULT_MAX_STATEMENT_BYTES,
            max_expression_depth: adlake_engine::DEFAULT_MAX_EXPRESSION_DEPTH,
            cache_bytes: adlake_engine::cache::DEFAULT_CACHE_BYTES,
            footer_cache_bytes: adlake_engine::scan::DEFAULT_FOOTER_CACHE_BYTES,
            otlp_endpoint: None,
            access_log: None,
        }
    }

    /// The request and query limits these flags ask for.
    pub fn limit_settings(&self) -> adlake_engine::admission::LimitSettings {
        let burst = self.rate_burst.unwrap_or_else(|| {
            // Twice a second's worth, at least one request.
            self.rate_limit.map_or(1, |rate| {
                (rate * 2.0).ceil().clamp(1.0, f64::from(u32::MAX)) as u32
            })
        });
        adlake_engine::admission::LimitSettings {
            rate_per_second: self.rate_limit,
            burst,
            max_concurrent_queries: usize::try_from(self.max_concurrent_queries)
                .unwrap_or(usize::MAX),
            max_concurrent_queries_per_caller: usize::try_from(
                self.max_concurrent_queries_per_caller,
            )
            .unwrap_or(usize::MAX),
            query_timeout: (self.query_timeout_secs > 0.0)
                .then(|| Duration::from_secs_f64(self.query_timeout_secs)),
            max_result_bytes: (self.max_result_bytes > 0).then_some(self.max_result_bytes),
        }
    }

    /// The bound of the memory all queries share, `None` for none: the
    /// flag, or half of what the container (cgroup) or the machine has.
    pub fn memory_pool_limit(&self) -> Option<usize> {
        match self.memory_pool_bytes {
            Some(0) => None,
            Some(bytes) => Some(usize::try_from(bytes).unwrap_or(usize::MAX)),
            None => available_memory().map(|bytes| bytes / 2),
        }
    }

    /// The per-query memory limit, `None` for none.
    pub fn query_memory_limit(&self) -> Option<usize> {
        (self.query_memory_bytes > 0)
            .then(|| usize::try_from(self.query_memory_bytes).unwrap_or(usize::MAX))
    }

    /// The OTLP collector spans go to, if any: an empty value (a variable
    /// set to nothing, as containers often do) means none, as the
    /// OpenTelemetry conventions have it.
    pub fn trace_endpoint(&self) -> Option<&str> {
        self.otlp_endpoint
            .as_deref()
            .filter(|e| !e.trim().is_empty())
    }

    /// The refresh period.
    pub fn refresh_interval(&self) -> Duration {
        Duration::from_secs(self.refresh_secs)
    }
}

/// A query timeout in seconds: a finite number from 0 (no limit) to a
/// day, fractions allowed.
fn parse_timeout_secs(text: &str) -> std::result::Result<f64, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{secs} s is outside 0 (no limit) to 86400 (a day)"));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let config = Config::try_parse_from(["adlake"]).expect("no flags");
        assert_eq!(config.warehouse, DEFAULT_WAREHOUSE);
        assert_eq!(config.flight_addr, DEFAULT_FLIGHT_ADDR);
        assert_eq!(config.http_addr, DEFAULT_HTTP_ADDR);
        assert_eq!(config.auth_file, None);
        assert_eq!(config.otlp_endpoint, None);
    }

    #[test]
    fn flags() {
        let config = Config::try_parse_from([
            "adlake",
            "--warehouse",
            "/w",
            "--flight-addr",
            "0.0.0.0:0",
            "--http-addr",
            "127.0.0.1:0",
            "--auth-file",
            "auth.toml",
        ])
        .expect("flags");
        assert_eq!(config.warehouse, "/w");
        assert_eq!(config.flight_addr, "0.0.0.0:0");
        assert_eq!(config.http_addr, "127.0.0.1:0");
        assert_eq!(config.auth_file, Some(PathBuf::from("auth.toml")));
    }

    #[test]
    fn limit_flags() {
        let defaults = Config::try_parse_from(["adlake"]).expect("no flags");
        let settings = defaults.limit_settings();
        assert_eq!(settings.rate_per_second, None);
        assert_eq!(settings.max_concurrent_queries, 64);
        assert_eq!(settings.max_concurrent_queries_per_caller, 8);
        assert_eq!(settings.query_timeout, Some(Duration::from_secs(300)));
        assert_eq!(settings, Config::new(DEFAULT_WAREHOUSE).limit_settings());

        let config = Config::try_parse_from([
            "adlake",
            "--rate-limit",
            "2.5",
            "--max-concurrent-queries",
            "3",
            "--max-concurrent-queries-per-caller",
            "0",
            "--query-timeout-secs",
            "0",
            "--max-result-bytes",
            "1000",
        ])
        .expect("flags");
        let settings = config.limit_settings();
        assert_eq!(settings.rate_per_second, Some(2.5));
        assert_eq!(settings.burst, 5);
        assert_eq!(settings.max_concurrent_queries, 3);
        assert_eq!(settings.max_concurrent_queries_per_caller, 0);
        assert_eq!(settings.query_timeout, None);
        assert_eq!(settings.max_result_bytes, Some(1000));

        for bad in [
            &["adlake", "--rate-limit", "0"][..],
            &["adlake", "--rate-limit", "-1"],
            &["adlake", "--rate-limit", "NaN"],
            &["adlake", "--rate-burst", "5"],
            &["adlake", "--query-timeout-secs", "-1"],
            &["adlake", "--query-timeout-secs", "NaN"],
            &["adlake", "--query-timeout-secs", "1e9"],
            &["adlake", "--max-concurrent-queries", "0"],
            &["adlake", "--max-concurrent-queries-per-caller", "-1"],
            &["adlake", "--max-concurrent-queries-per-caller", "100001"],
        ] {
            assert!(Config::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tls_and_jwt_flags_come_in_valid_combinations() {
        let config = Config::try_parse_from([
            "adlake",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--jwt-hs256-secret-file",
            "s",
            "--query-memory-bytes",
            "0",
        ])
        .expect("flags");
        assert_eq!(config.tls_cert, Some(PathBuf::from("c.pem")));
        assert_eq!(config.query_memory_limit(), None);
        assert_eq!(
            Config::new(DEFAULT_WAREHOUSE).query_memory_limit(),
            Some(2 * 1024 * 1024 * 1024)
        );
        for bad in [
            &["adlake", "--tls-cert", "c.pem"][..],
            &["adlake", "--tls-key", "k.pem"],
            &[
                "adlake",
                "--jwt-hs256-secret-file",
                "s",
                "--jwt-rs256-public-key-file",
                "p",
            ],
        ] {
            assert!(Config::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn otlp_endpoint_flag() {
        let config =
            Config::try_parse_from(["adlake", "--otlp-endpoint", "http://otel-collector:4317"])
                .expect("flags");
        assert_eq!(config.trace_endpoint(), Some("http://otel-collector:4317"));
        assert_eq!(Config::new(DEFAULT_WAREHOUSE).trace_endpoint(), None);
        let empty = Config::try_parse_from(["adlake", "--otlp-endpoint", ""]).expect("flags");
        assert_eq!(empty.trace_endpoint(), None);
        // The value is checked when the exporter is built (main.rs), with
        // a message of ours; the parser only takes it.
        assert!(Config::try_parse_from(["adlake", "--otlp-endpoint"]).is_err());
    }

    #[test]
    fn refresh_must_be_positive() {
        assert!(Config::try_parse_from(["adlake", "--refresh-secs", "0"]).is_err());
    }

    #[test]
    fn the_memory_pool_defaults_to_half_of_what_the_process_has() {
        let default = Config::try_parse_from(["adlake"]).unwrap();
        let machine = available_memory().expect("this machine tells its memory");
        assert_eq!(default.memory_pool_limit(), Some(machine / 2));
        let none = Config::try_parse_from(["adlake", "--memory-pool-bytes", "0"]).unwrap();
        assert_eq!(none.memory_pool_limit(), None);
        let set = Config::try_parse_from(["adlake", "--memory-pool-bytes", "1000"]).unwrap();
        assert_eq!(set.memory_pool_limit(), Some(1000));
    }

    #[test]
    fn statement_limits_have_bounds() {
        let c = Config::try_parse_from(["adlake", "--max-statement-bytes", "4096"]).unwrap();
        assert_eq!(c.max_statement_bytes, 4096);
        for bad in [
            &["adlake", "--max-statement-bytes", "1"][..],
            &["adlake", "--max-expression-depth", "0"],
            &["adlake", "--max-expression-depth", "100000"],
        ] {
            assert!(Config::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
