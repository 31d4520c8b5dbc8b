//! The operator commands of `adlake-ingest`: `maintain`, `erase` and
//! `freshness`. Arguments are parsed here (clap) so the binary only
//! dispatches; results go to stdout as text, or JSON with `--json`.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use crate::error::{Error, Result};
use crate::freshness::{self, TimeZones};
use crate::lake::erase::EraseBuilder;
use crate::lake::upkeep::{DEFAULT_FILES_PER_COMMIT, DEFAULT_RETENTION, MaintainBuilder};
use crate::lake::warehouse::Warehouse;

/// `adlake-ingest maintain`.
#[derive(Debug, clap::Args)]
pub struct MaintainArgs {
    /// Warehouse directory or URL (file://, s3://, gs://, az://).
    #[arg(
        long,
        value_name = "URL",
        env = "ADLAKE_WAREHOUSE",
        default_value = "./data/warehouse"
    )]
    pub warehouse: String,
    /// Only this table (repeatable); default every table.
    #[arg(long = "table", value_name = "NAME")]
    pub tables: Vec<String>,
    /// Z-order ad_performance by campaign_id within each partition.
    #[arg(long)]
    pub zorder: bool,
    /// Vacuum files removed longer ago than this many hours (at least 24).
    #[arg(long, value_name = "HOURS", default_value_t = DEFAULT_RETENTION.as_secs() / 3600)]
    pub retention_hours: u64,
    /// Skip the vacuum.
    #[arg(long)]
    pub no_vacuum: bool,
    /// Most files one compaction commit replaces; a larger table is
    /// compacted in several commits.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_FILES_PER_COMMIT,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub files_per_commit: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `adlake-ingest erase`.
#[derive(Debug, clap::Args)]
pub struct EraseArgs {
    /// Warehouse directory or URL (file://, s3://, gs://, az://).
    #[arg(
        long,
        value_name = "URL",
        env = "ADLAKE_WAREHOUSE",
        default_value = "./data/warehouse"
    )]
    pub warehouse: String,
    /// The client to erase.
    #[arg(long, value_name = "CLIENT_ID")]
    pub client: String,
    /// Who asked for the erasure (kept in the audit entry).
    #[arg(long, value_name = "WHO", env = "ADLAKE_OPERATOR")]
    pub by: String,
    /// Why: a ticket or request reference (kept in the audit entry).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Print the audit entry as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `adlake-ingest freshness`.
#[derive(Debug, clap::Args)]
pub struct FreshnessArgs {
    /// Warehouse directory or URL (file://, s3://, gs://, az://).
    #[arg(
        long,
        value_name = "URL",
        env = "ADLAKE_WAREHOUSE",
        default_value = "./data/warehouse"
    )]
    pub warehouse: String,
    /// The ingest client configuration (the file of `run --config`): every
    /// client's deadline is 08:00 in its `time_zone` there.
    #[arg(long, value_name = "FILE", env = "ADLAKE_CLIENTS_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// A client's time zone, CLIENT=Area/City (repeatable; over --config's).
    #[arg(long = "client-tz", value_name = "CLIENT=ZONE")]
    pub client_tz: Vec<String>,
    /// Time zone of clients not named by --client-tz.
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    pub default_tz: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn table_defs(names: &[String]) -> Result<Vec<&'static adlake_engine::schema::TableDef>> {
    if names.is_empty() {
        return Ok(adlake_engine::schema::all_tables().to_vec());
    }
    names
        .iter()
        .map(|n| {
            adlake_engine::schema::table(n).ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "unknown table '{n}' (tables: {})",
                    adlake_engine::schema::all_tables()
                        .map(|t| t.name)
                        .join(", ")
                ))
            })
        })
        .collect()
}

/// Runs `maintain`.
pub async fn maintain(args: MaintainArgs) -> Result<()> {
    let retention = Duration::from_secs(args.retention_hours.saturating_mul(3600));
    if !args.no_vacuum {
        crate::lake::upkeep::check_retention(retention)?;
    }
    let tables = table_defs(&args.tables)?;
    let warehouse = Warehouse::open(&args.warehouse)?;
    let report = MaintainBuilder::new(&warehouse)
        .with_tables(tables)
        .with_zorder(args.zorder)
        .with_retention(retention)
        .with_vacuum(!args.no_vacuum)
        .with_files_per_commit(args.files_per_commit)
        .execute()
        .await?;
    if args.json {
        let rows: Vec<_> = report
            .iter()
            .map(|r| {
                json!({
                    "table": r.table, "version_before": r.version_before,
                    "version_after": r.version_after, "files_before": r.files_before,
                    "files_after": r.files_after, "files_removed": r.files_removed,
                    "files_added": r.files_added, "attempts": r.attempts,
                    "commits": r.commits,
                    "checkpointed": r.checkpointed, "files_vacuumed": r.files_vacuumed,
                    "skipped_locked": r.skipped_locked,
                })
            })
            .collect();
        println!(
            "{}",
            json!({ "warehouse": warehouse.url().as_str(), "tables": rows })
        );
    } else {
        println!(
            "{:<15} {:>8} {:>8} {:>12} {:>9}",
            "table", "version", "files", "compacted", "vacuumed"
        );
        for r in &report {
            let version = r.version_after.map_or("-".to_owned(), |v| v.to_string());
            println!(
                "{:<15} {:>8} {:>8} {:>12} {:>9}",
                r.table,
                version,
                format!("{}->{}", r.files_before, r.files_after),
                r.files_removed,
                r.files_vacuumed
            );
        }
    }
    Ok(())
}

/// Runs `erase`.
pub async fn erase(args: EraseArgs) -> Result<()> {
    let warehouse = Warehouse::open(&args.warehouse)?;
    let mut builder = EraseBuilder::new(&warehouse, args.client, args.by);
    if let Some(reason) = args.reason {
        builder = builder.with_reason(reason);
    }
    let audit = builder.execute().await?;
    if args.json {
        let text = serde_json::to_string(&audit)
            .map_err(|e| Error::InvalidConfig(format!("cannot encode the audit entry: {e}")))?;
        println!("{text}");
    } else {
        println!(
            "erased client {} (requested by {})",
            audit.client_id, audit.requested_by
        );
        for t in &audit.tables {
            let version = t.version_deleted.map_or("-".to_owned(), |v| v.to_string());
            println!(
                "{:<15} {:>10} rows deleted   version {:>5}   {:>4} files vacuumed",
                t.table, t.rows_deleted, version, t.files_vacuumed
            );
        }
        println!("audit: {}", audit.audit_path);
    }
    Ok(())
}

/// Runs `freshness`.
pub async fn freshness(args: FreshnessArgs) -> Result<()> {
    let mut zones = TimeZones::new(freshness::parse_zone(&args.default_tz)?);
    if let Some(path) = &args.config {
        let config =
            crate::config::Config::load(path).map_err(|e| Error::InvalidConfig(e.to_string()))?;
        for client in config.clients {
            zones = zones.with_client(client.id, client.time_zone);
        }
    }
    for assignment in &args.client_tz {
        let (client, zone) = TimeZones::parse_assignment(assignment)?;
        zones = zones.with_client(client, zone);
    }
    let warehouse = Warehouse::open(&args.warehouse)?;
    let report = freshness::report(&warehouse, &zones, Utc::now()).await?;
    if args.json {
        let text = serde_json::to_string(&report)
            .map_err(|e| Error::InvalidConfig(format!("cannot encode the report: {e}")))?;
        println!("{text}");
    } else {
        println!(
            "{:<24} {:<14} {:<10} {:<17} {:<22} {:>9}",
            "client", "source", "yesterday", "deadline (UTC)", "landed (UTC)", "lag (h)"
        );
        for f in &report {
            println!(
                "{:<24} {:<14} {:<10} {:<17} {:<22} {:>9.1}  {}",
                f.client_id,
                f.source,
                f.expected_date,
                f.deadline.format("%Y-%m-%d %H:%M"),
                f.landed_at.map_or("-".to_owned(), |t| t
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()),
                f.lag_seconds as f64 / 3600.0,
                f.status.as_str()
            );
        }
    }
    Ok(())
}

/// `adlake-ingest lineage`.
#[derive(Debug, clap::Args)]
pub struct LineageArgs {
    /// Warehouse directory or URL (file://, s3://, gs://, az://).
    #[arg(
        long,
        value_name = "URL",
        env = "ADLAKE_WAREHOUSE",
        default_value = "./data/warehouse"
    )]
    pub warehouse: String,
    /// The client.
    #[arg(long)]
    pub client: String,
    /// The day, YYYY-MM-DD.
    #[arg(long, value_parser = parse_day)]
    pub date: chrono::NaiveDate,
    /// The fact table.
    #[arg(long, value_name = "NAME", default_value = "ad_performance")]
    pub table: String,
    /// Only this platform's rows (ad_performance).
    #[arg(long)]
    pub platform: Option<String>,
    /// Only this campaign's rows (ad_performance).
    #[arg(long)]
    pub campaign: Option<String>,
    /// Print the traces as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_day(s: &str) -> std::result::Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| format!("expected a date as YYYY-MM-DD, got '{s}'"))
}

/// Runs `lineage`.
pub async fn lineage(args: LineageArgs) -> Result<()> {
    let table = adlake_engine::schema::table(&args.table)
        .filter(|t| {
            t.has_date()
                && t.client_scoped
                && t.schema
                    .field_with_name(adlake_engine::schema::LINEAGE_RUN_ID)
                    .is_ok()
        })
        .ok_or_else(|| {
            Error::Usage(format!(
                "--table {}: lineage traces the fact tables ad_performance, web_sessions, orders",
                args.table
            ))
        })?;
    let query = crate::lineage::LineageQuery {
        table,
        client: args.client,
        date: args.date,
        platform: args.platform,
        campaign: args.campaign,
    };
    let warehouse = Warehouse::open(&args.warehouse)?;
    let traces = crate::lineage::trace(&warehouse, &query).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&traces).unwrap_or_default()
        );
    } else {
        crate::lineage::print(&query, &traces);
    }
    Ok(())
}

/// `adlake-ingest shopper`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["export", "erase"])))]
pub struct ShopperArgs {
    /// Warehouse directory or URL (file://, s3://, gs://, az://).
    #[arg(
        long,
        value_name = "URL",
        env = "ADLAKE_WAREHOUSE",
        default_value = "./data/warehouse"
    )]
    pub warehouse: String,
    /// The secrets file holding `customer_hash_key`, the key the orders'
    /// customer keys were hashed with.
    #[arg(long, value_name = "FILE", env = "ADLAKE_SECRETS")]
    pub secrets: std::path::PathBuf,
    /// The client whose shop the shopper bought from.
    #[arg(long)]
    pub client: String,
    /// The shopper's e-mail address.
    #[arg(long)]
    pub email: String,
    /// Print every order and quarantined record of the shopper as JSON
    /// (GDPR Art. 15).
    #[arg(long)]
    pub export: bool,
    /// Delete every order and quarantined record of the shopper, leaving
    /// no file or log entry that holds them (GDPR Art. 17).
    #[arg(long, requires = "by")]
    pub erase: bool,
    /// Who asked for the erasure (kept in the audit entry).
    #[arg(long)]
    pub by: Option<String>,
    /// Why: a ticket or request reference (kept in the audit entry).
    #[arg(long)]
    pub reason: Option<String>,
}

/// Runs `shopper`.
pub async fn shopper(args: ShopperArgs) -> Result<()> {
    use crate::lake::erase::shopper::{ShopperRequest, erase, export};
    let secrets = crate::config::Secrets::load(&args.secrets)
        .map_err(|e| Error::InvalidConfig(e.to_string()))?;
    let req = ShopperRequest {
        client: args.client,
        email: args.email,
        hash_key: secrets
            .customer_hash_key
            .map(String::into_bytes)
            .unwrap_or_default(),
    };
    let warehouse = Warehouse::open(&args.warehouse)?;
    let encode = |e: serde_json::Error| Error::InvalidConfig(format!("cannot encode: {e}"));
    if args.export {
        let found = export(&warehouse, &req).await?;
        println!("{}", serde_json::to_string_pretty(&found).map_err(encode)?);
    } else {
        let by = args.by.unwrap_or_default();
        let audit = erase(&warehouse, &req, &by, args.reason).await?;
        println!("{}", serde_json::to_string_pretty(&audit).map_err(encode)?);
    }
    Ok(())
}
