//! `adlake-ingest`: the ingest command line.
//!
//! `adlake-ingest demo --warehouse DIR` fills a warehouse with a synthetic
//! agency. Bad input ends with one `error: ...` line on stderr and a
//! non-zero exit code.

use std::process::ExitCode;

use adlake_ingest::synthetic::MAX_DAYS;
use adlake_ingest::{DemoOptions, Progress, run_demo};
use chrono::NaiveDate;
use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Writing allocates many short-lived Arrow and Parquet buffers from every
/// worker thread; mimalloc's per-thread heaps serve them without the
/// system allocator's shared-arena contention.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code of invalid command-line input (as clap uses).
const USAGE_ERROR: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "adlake-ingest",
    version,
    about = "adlake ingest: sources, normalization and idempotent Delta writes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a synthetic agency (clients, ad platforms, GA4, Shopify, FX)
    /// and write it to the warehouse.
    Demo(DemoArgs),
    /// Table upkeep: compact small files per partition (optionally
    /// Z-ordered by campaign), checkpoint, vacuum old files.
    Maintain(adlake_ingest::admin::MaintainArgs),
    /// Erase every row of one client from every table (GDPR), vacuum its
    /// files away, and write an audit entry.
    Erase(adlake_ingest::admin::EraseArgs),
    /// Freshness SLA report: when yesterday's slice landed per client and
    /// source, versus 08:00 client-local.
    Freshness(adlake_ingest::admin::FreshnessArgs),
    /// Run every configured (client, source) job once: yesterday in the
    /// client's time zone plus the source's lookback window.
    Run(adlake_ingest::jobs::cli::RunArgs),
    /// Re-pull one client's source over a date range, in chunks the
    /// platform accepts.
    Backfill(adlake_ingest::jobs::cli::BackfillArgs),
    /// Ingest saved API payloads through the same parsers.
    File(adlake_ingest::jobs::cli::FileArgs),
    /// Run the daily schedule so yesterday lands before 08:00 client-local.
    Worker(adlake_ingest::jobs::cli::WorkerArgs),
    /// Pull the ECB's daily reference rates into fx_rates over a date
    /// range (weekends and holidays filled, cross rates through EUR).
    Fx(adlake_ingest::jobs::cli::FxArgs),
    /// Trace a client's rows of a day to the ingest runs, Delta versions,
    /// connector versions and API request ids they came from.
    Lineage(adlake_ingest::admin::LineageArgs),
    /// A shopper's data-subject request: export (GDPR Art. 15) or erase
    /// (Art. 17) one customer's orders of a client, found by e-mail through
    /// the keyed customer hash.
    Shopper(adlake_ingest::admin::ShopperArgs),
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Warehouse directory or file:// URL.
    #[arg(
        long,
        value_name = "DIR",
        env = "ADLAKE_WAREHOUSE",
        default_value = "./data/warehouse"
    )]
    warehouse: String,
    /// Number of clients.
    #[arg(long, value_name = "N", default_value = "5", value_parser = parse_clients)]
    clients: usize,
    /// Days of history, ending at --end-date.
    #[arg(long, value_name = "D", default_value = "90", value_parser = parse_days)]
    days: u32,
    /// Target number of ad_performance rows.
    #[arg(long, value_name = "N", default_value = "200000", value_parser = parse_rows)]
    rows: u64,
    /// Seed of the synthetic data (same seed, same data).
    #[arg(long, value_name = "S", default_value = "42", value_parser = parse_seed)]
    seed: u64,
    /// Last report date, YYYY-MM-DD (default: yesterday, UTC).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    end_date: Option<NaiveDate>,
    /// Write each ad platform of a client in its own commit, as the daily
    /// runs do (one file per platform and partition, what `maintain`
    /// compacts), instead of a client's platforms in one commit.
    #[arg(long)]
    commit_per_source: bool,
    /// Leave out the incidents the demo injects (one per client: a
    /// two-day conversion tracking outage or a day of tripled spend).
    #[arg(long)]
    no_incidents: bool,
}

fn parse_positive(s: &str, what: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err(format!("{what} must be at least 1")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{what} must be a whole number, got '{s}'")),
    }
}

fn parse_clients(s: &str) -> Result<usize, String> {
    let n = parse_positive(s, "clients")?;
    usize::try_from(n).map_err(|_| format!("clients is too large: {n}"))
}

fn parse_days(s: &str) -> Result<u32, String> {
    let n = parse_positive(s, "days")?;
    u32::try_from(n)
        .ok()
        .filter(|d| *d <= MAX_DAYS)
        .ok_or_else(|| format!("days must be at most {MAX_DAYS}, got {n}"))
}

fn parse_rows(s: &str) -> Result<u64, String> {
    parse_positive(s, "rows")
}

fn parse_seed(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("seed must be a whole number, got '{s}'"))
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| format!("expected a date as YYYY-MM-DD, got '{s}'"))
}

/// Prints one error line; multi-line messages are joined so scripts and
/// humans see a single line.
fn print_error(message: &str) {
    let line = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    eprintln!("error: {line}");
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            err.exit()
        }
        Err(err) => {
            // clap's first line names the argument and the problem; the
            // usage block after it is noise for a one-line error.
            let rendered = err.render().to_string();
            print_error(rendered.lines().next().unwrap_or("invalid arguments"));
            return ExitCode::from(USAGE_ERROR);
        }
    };

    // Human-readable on a terminal, JSON lines otherwise (containers, CI);
    // ADLAKE_LOG_FORMAT=json|text forces one.
    let json = match std::env::var("ADLAKE_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("warn,adlake_ingest=info")),
        )
        .with_writer(std::io::stderr);
    if json {
        logs.json().with_current_span(true).init();
    } else {
        logs.init();
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            print_error(&format!("cannot start the runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Demo(args) => runtime.block_on(demo(args)),
        Command::Maintain(args) => report(runtime.block_on(adlake_ingest::admin::maintain(args))),
        Command::Erase(args) => report(runtime.block_on(adlake_ingest::admin::erase(args))),
        Command::Freshness(args) => report(runtime.block_on(adlake_ingest::admin::freshness(args))),
        Command::Run(args) => report(runtime.block_on(adlake_ingest::jobs::cli::run(args))),
        Command::Backfill(args) => {
            report(runtime.block_on(adlake_ingest::jobs::cli::backfill(args)))
        }
        Command::File(args) => report(runtime.block_on(adlake_ingest::jobs::cli::file(args))),
        Command::Worker(args) => report(runtime.block_on(adlake_ingest::jobs::cli::worker(args))),
        Command::Fx(args) => report(runtime.block_on(adlake_ingest::jobs::cli::fx(args))),
        Command::Lineage(args) => report(runtime.block_on(adlake_ingest::admin::lineage(args))),
        Command::Shopper(args) => report(runtime.block_on(adlake_ingest::admin::shopper(args))),
    }
}

/// Ends an upkeep command: its output is already printed; an error is one
/// line on stderr and exit code 1 (2 for an unusable command-line value).
fn report(result: adlake_ingest::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err @ adlake_ingest::Error::Usage(_)) => {
            print_error(&err.to_string());
            ExitCode::from(USAGE_ERROR)
        }
        Err(err) => {
            print_error(&err.to_string());
            ExitCode::FAILURE
        }
    }
}

async fn demo(args: DemoArgs) -> ExitCode {
    let opts = DemoOptions {
        warehouse: args.warehouse,
        clients: args.clients,
        days: args.days,
        rows: args.rows,
        seed: args.seed,
        end_date: args
            .end_date
            .unwrap_or_else(adlake_ingest::demo::yesterday_utc),
        commit_per_source: args.commit_per_source,
        incidents: !args.no_incidents,
    };
    match run_demo(&opts, Progress::Auto).await {
        Ok(summary) => {
            println!("warehouse: {}", summary.warehouse);
            println!(
                "clients:   {} ({})",
                summary.clients.len(),
                summary.clients.join(", ")
            );
            for (table, version) in &summary.versions {
                let rows = summary.rows.get(table).copied().unwrap_or_default();
                println!("{table:<15} {rows:>12} rows written   version {version}");
            }
            println!(
                "slices:    {} in {} commits, {:.1}s ({:.0} rows/s end to end)",
                summary.slices,
                summary.writes,
                summary.elapsed.as_secs_f64(),
                summary.rows_per_sec()
            );
            println!(
                "generator: {} rows in {:.1}s ({:.0} rows/s)",
                summary.generated_rows,
                summary.generator_time.as_secs_f64(),
                summary.generator_rows_per_sec()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            print_error(&err.to_string());
            ExitCode::FAILURE
        }
    }
}
