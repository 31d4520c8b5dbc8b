//! The `run`, `backfill`, `file` and `worker` commands of `adlake-ingest`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime, Utc};

use super::{Ingestor, JobReport, backfill_jobs, due_jobs};
use crate::config::{Config, Secrets};
use crate::error::{Error, Result};
use crate::fx;
use crate::lake::warehouse::Warehouse;
use crate::sources::connectors::SourceKind;
use crate::sources::http::{HttpClient, HttpConfig};

/// What every job command needs.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// The client configuration file.
    #[arg(long, value_name = "FILE", env = "ADLAKE_INGEST_CONFIG")]
    pub config: PathBuf,
    /// The secrets file (credentials; `ADLAKE_SECRET_<NAME>_<FIELD>`
    /// variables complete or override it).
    #[arg(long, value_name = "FILE", env = "ADLAKE_SECRETS")]
    pub secrets: Option<PathBuf>,
    /// Warehouse directory or URL (default: the configuration's, else
    /// ./data/warehouse).
    #[arg(long, value_name = "URL", env = "ADLAKE_WAREHOUSE")]
    pub warehouse: Option<String>,
    /// Jobs in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub concurrency: usize,
    /// Timeout of each platform call, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub timeout_secs: f64,
    /// Attempts per platform call.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub max_attempts: u32,
    /// First retry delay in milliseconds (doubles per attempt, with jitter).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub base_delay_ms: u64,
}

/// `adlake-ingest run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    /// Shared options.
    pub common: CommonArgs,
    /// Apply the replace the shrink guard held for this run (from the rows
    /// staged when it was held; nothing is fetched), instead of running
    /// the due jobs.
    #[arg(long, value_name = "RUN_ID")]
    pub confirm_shrink: Option<String>,
}

/// `adlake-ingest backfill`.
#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    /// Shared options.
    pub common: CommonArgs,
    /// The client.
    #[arg(long)]
    pub client: String,
    /// The source (platform).
    #[arg(long)]
    pub source: String,
    /// First date, YYYY-MM-DD.
    #[arg(long, value_parser = parse_date)]
    pub since: NaiveDate,
    /// Last date, YYYY-MM-DD (default: yesterday in the client's time zone).
    #[arg(long, value_parser = parse_date)]
    pub until: Option<NaiveDate>,
}

/// `adlake-ingest file`.
#[derive(Debug, clap::Args)]
pub struct FileArgs {
    #[command(flatten)]
    /// Shared options.
    pub common: CommonArgs,
    /// The client.
    #[arg(long, required_unless_present = "table", conflicts_with = "table")]
    pub client: Option<String>,
    /// The platform of the payloads.
    #[arg(long, required_unless_present = "table", conflicts_with = "table")]
    pub platform: Option<String>,
    /// The account the payloads are of (default: the source's first).
    #[arg(long, conflicts_with = "table")]
    pub account: Option<String>,
    /// A table that is not a client's: `fx_rates` (the files are the ECB's
    /// SDMX or eurofxref CSV, or date,base,quote,rate).
    #[arg(long, value_name = "TABLE")]
    pub table: Option<String>,
    /// Saved API payloads (JSON) or platform CSV exports (`.csv`, header
    /// row of API field names); rate files with `--table fx_rates`.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// `adlake-ingest fx`.
#[derive(Debug, clap::Args)]
pub struct FxArgs {
    #[command(flatten)]
    /// Shared options.
    pub common: CommonArgs,
    /// First date, YYYY-MM-DD.
    #[arg(long, value_parser = parse_date)]
    pub from: NaiveDate,
    /// Last date, YYYY-MM-DD (default: the latest yesterday of the
    /// configured clients).
    #[arg(long, value_parser = parse_date)]
    pub to: Option<NaiveDate>,
}

/// `adlake-ingest worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    /// Shared options.
    pub common: CommonArgs,
    /// Client-local time after which yesterday is pulled, HH:MM.
    #[arg(long, value_name = "HH:MM", default_value = "03:00", value_parser = parse_time)]
    pub run_at: NaiveTime,
    /// Seconds between schedule checks.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub tick_secs: u64,
    /// Stop after this many checks (default: run forever).
    #[arg(long, value_name = "N")]
    pub max_ticks: Option<u64>,
    /// Serve live metrics (circuit breaker state and call counters per
    /// source) in Prometheus text on `http://HOST:PORT/metrics`.
    #[arg(long, value_name = "HOST:PORT", env = "ADLAKE_INGEST_METRICS_ADDR", value_parser = crate::live::parse_addr)]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

fn parse_date(s: &str) -> std::result::Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| format!("expected a date as YYYY-MM-DD, got '{s}'"))
}

fn parse_time(s: &str) -> std::result::Result<NaiveTime, String> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M")
        .map_err(|_| format!("expected a time as HH:MM, got '{s}'"))
}

fn setup(common: &CommonArgs) -> Result<(Config, Ingestor)> {
    let config = Config::load(&common.config).map_err(|e| Error::InvalidConfig(e.to_string()))?;
    let secrets = match &common.secrets {
        Some(path) => Secrets::load(path).map_err(|e| Error::InvalidConfig(e.to_string()))?,
        None => Secrets::default(),
    };
    let location = common
        .warehouse
        .clone()
        .or_else(|| config.warehouse.clone())
        .unwrap_or_else(|| "./data/warehouse".to_owned());
    let warehouse = Warehouse::open(&location)?;
    if !(common.timeout_secs.is_finite() && common.timeout_secs > 0.0) {
        return Err(Error::InvalidConfig(
            "--timeout-secs must be positive".to_owned(),
        ));
    }
    let http = HttpClient::new(HttpConfig {
        timeout: Duration::from_secs_f64(common.timeout_secs),
        max_attempts: common.max_attempts.max(1),
        base_delay: Duration::from_millis(common.base_delay_ms),
        ..HttpConfig::default()
    })?;
    let ingestor =
        Ingestor::new(warehouse, Arc::new(http), secrets).with_concurrency(common.concurrency);
    Ok((config, ingestor))
}

/// Prints one line per job; an error when any failed.
fn summarize(reports: &[JobReport]) -> Result<()> {
    for r in reports {
        if let Some(reason) = &r.held {
            println!(
                "HELD   {:<24} {:<13} {}..{}  run {}: {reason}; the slice is unchanged \
                 (apply it with `adlake-ingest run --confirm-shrink {}`)",
                r.client,
                r.source.as_str(),
                r.from,
                r.to,
                r.run_id,
                r.run_id
            );
            continue;
        }
        match &r.error {
            None => println!(
                "ok     {:<24} {:<13} {}..{}  {:>8} rows  {:>5} quarantined  version {}  run {}",
                r.client,
                r.source.as_str(),
                r.from,
                r.to,
                r.rows_written,
                r.rows_quarantined,
                r.version.unwrap_or_default(),
                r.run_id
            ),
            Some(e) => println!(
                "FAILED {:<24} {:<13} {}..{}  run {}: {e}",
                r.client,
                r.source.as_str(),
                r.from,
                r.to,
                r.run_id
            ),
        }
    }
    let failed = reports.iter().filter(|r| !r.succeeded()).count();
    if failed > 0 {
        return Err(Error::InvalidConfig(format!(
            "{failed} of {} jobs failed; their slices are unchanged",
            reports.len()
        )));
    }
    let held = reports.iter().filter(|r| r.held.is_some()).count();
    if held > 0 {
        return Err(Error::InvalidConfig(format!(
            "{held} of {} jobs were held by the shrink guard; their slices are unchanged",
            reports.len()
        )));
    }
    Ok(())
}

/// Runs `run`.
pub async fn run(args: RunArgs) -> Result<()> {
    let (config, ingestor) = setup(&args.common)?;
    if let Some(run_id) = &args.confirm_shrink {
        let report = ingestor.confirm_shrink(run_id.trim()).await?;
        return summarize(&[report]);
    }
    let reports = ingestor.run_jobs(due_jobs(&config, Utc::now())).await;
    let rates = scheduled_fx(&config, &ingestor).await;
    match &rates {
        Some(Ok(r)) => summarize_fx(r),
        Some(Err(e)) => println!("FAILED {:<24} {:<13} {e}", "_global", "fx_rates"),
        None => {}
    }
    summarize(&reports)?;
    match rates {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Runs `backfill`.
pub async fn backfill(args: BackfillArgs) -> Result<()> {
    let (config, ingestor) = setup(&args.common)?;
    let kind: SourceKind = args.source.parse()?;
    let client = config.client(&args.client).ok_or_else(|| {
        Error::InvalidConfig(format!("client '{}' is not configured", args.client))
    })?;
    let until = args
        .until
        .unwrap_or_else(|| super::client_yesterday(client, Utc::now()));
    let jobs = backfill_jobs(&config, &args.client, kind, args.since, until)?;
    let reports = ingestor.run_jobs(jobs).await;
    summarize(&reports)
}

/// Prints what a rates write did.
fn summarize_fx(r: &fx::FxReport) {
    println!(
        "ok     {:<24} {:<13} {}..{}  {:>8} rows  {:>5} observed  version {}  run {}",
        "_global", "fx_rates", r.from, r.to, r.rows_written, r.observed, r.version, r.run_id
    );
    if !r.days_without_rates.is_empty() {
        eprintln!(
            "warning: no rate within the allowed age for {} day(s) ({}{}); queries converting them fail",
            r.days_without_rates.len(),
            r.days_without_rates
                .iter()
                .take(5)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            if r.days_without_rates.len() > 5 {
                ", …"
            } else {
                ""
            }
        );
    }
}

/// The last day rates are needed for: the latest yesterday of the clients.
pub(crate) fn fx_until(config: &Config) -> NaiveDate {
    let now = Utc::now();
    config
        .clients
        .iter()
        .map(|c| super::client_yesterday(c, now))
        .max()
        .unwrap_or_else(|| now.date_naive())
}

/// Runs `fx`.
pub async fn fx(args: FxArgs) -> Result<()> {
    let (config, ingestor) = setup(&args.common)?;
    let fx_config = config.fx.clone().unwrap_or_default();
    let to = args.to.unwrap_or_else(|| fx_until(&config));
    if args.from > to {
        return Err(Error::Usage(format!(
            "--from {} is after --to {to}",
            args.from
        )));
    }
    // A year per pull and write: a long backfill (the ECB publishes since
    // 1999) stays one bounded request and slice at a time.
    let mut from = args.from;
    while from <= to {
        let until = from
            .checked_add_days(chrono::Days::new(fx::MAX_PULL_DAYS - 1))
            .map_or(to, |d| d.min(to));
        let report = fx::pull_ecb(
            ingestor.warehouse(),
            ingestor.http(),
            &fx_config,
            from,
            until,
            crate::lake::writer::Trigger::Backfill,
        )
        .await?;
        summarize_fx(&report);
        match until.succ_opt() {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok(())
}

/// The scheduled rates pull of `run` and the worker: the lookback window
/// up to the latest yesterday of the clients.
pub(crate) async fn scheduled_fx(
    config: &Config,
    ingestor: &Ingestor,
) -> Option<Result<fx::FxReport>> {
    let fx_config = config.fx.as_ref()?;
    let to = fx_until(config);
    let from = to
        .checked_sub_days(chrono::Days::new(u64::from(fx_config.lookback_days)))
        .unwrap_or(to);
    Some(
        fx::pull_ecb(
            ingestor.warehouse(),
            ingestor.http(),
            fx_config,
            from,
            to,
            crate::lake::writer::Trigger::Schedule,
        )
        .await,
    )
}

/// Runs `file`.
pub async fn file(args: FileArgs) -> Result<()> {
    let (config, ingestor) = setup(&args.common)?;
    if let Some(table) = &args.table {
        if table != "fx_rates" {
            return Err(Error::Usage(format!(
                "--table {table}: only fx_rates is loaded without a client (a client's files take --client and --platform)"
            )));
        }
        let max_age = config
            .fx
            .as_ref()
            .map_or(fx::DEFAULT_MAX_AGE_DAYS, |f| f.max_age_days);
        let report = fx::ingest_files(ingestor.warehouse(), &args.paths, max_age).await?;
        summarize_fx(&report);
        return Ok(());
    }
    let (Some(client_id), Some(platform)) = (&args.client, &args.platform) else {
        return Err(Error::Usage(
            "--client and --platform are required (or --table fx_rates)".to_owned(),
        ));
    };
    let kind: SourceKind = platform.parse()?;
    let client = config
        .client(client_id)
        .ok_or_else(|| Error::InvalidConfig(format!("client '{client_id}' is not configured")))?;
    let source = client
        .sources
        .iter()
        .find(|s| s.kind == kind)
        .ok_or_else(|| {
            Error::InvalidConfig(format!("client '{client_id}' has no source '{kind}'"))
        })?;
    let report = ingestor
        .ingest_files(client, source, args.account.as_deref(), &args.paths)
        .await?;
    summarize(&[report])
}

/// Runs `worker`.
pub async fn worker(args: WorkerArgs) -> Result<()> {
    let (config, ingestor) = setup(&args.common)?;
    if let Some(addr) = args.metrics_addr {
        let bound = crate::live::serve(addr, Arc::clone(ingestor.http())).await?;
        eprintln!("metrics: http://{bound}/metrics");
    }
    let reports = ingestor
        .worker(
            &config,
            args.run_at,
            Duration::from_secs(args.tick_secs.max(1)),
            args.max_ticks,
        )
        .await;
    summarize(&reports)
}
