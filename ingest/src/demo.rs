//! The demo: a whole synthetic agency written to a warehouse, slice by
//! slice, exactly as the real connectors will write it.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use adlake_engine::schema::{AD_PERFORMANCE, FX_RATES, ORDERS, TableDef, WEB_SESSIONS, all_tables};
use arrow::array::RecordBatch;
use chrono::{Days, NaiveDate, Utc};
use deltalake::checkpoints::create_checkpoint;
use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

use crate::error::{Error, Result};
use crate::synthetic::{Lineage, SYNTHETIC_SOURCE, Synthetic, SyntheticConfig};
use crate::warehouse::Warehouse;
use crate::writer::{Trigger, WriteSliceBuilder};

/// How often progress is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// What the demo generates and where it writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    /// Warehouse directory or `file://` URL.
    pub warehouse: String,
    /// Number of clients.
    pub clients: usize,
    /// Days of history, ending at `end_date`.
    pub days: u32,
    /// Target `ad_performance` rows.
    pub rows: u64,
    /// Seed of the synthetic data.
    pub seed: u64,
    /// Last report date.
    pub end_date: NaiveDate,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            warehouse: "./data/warehouse".to_owned(),
            clients: 5,
            days: 90,
            rows: 200_000,
            seed: 42,
            end_date: yesterday_utc(),
        }
    }
}

impl DemoOptions {
    /// The generator configuration these options describe.
    pub fn synthetic_config(&self) -> SyntheticConfig {
        SyntheticConfig {
            clients: self.clients,
            days: self.days,
            rows: self.rows,
            seed: self.seed,
            end_date: self.end_date,
        }
    }
}

/// Yesterday's date in UTC: the last complete report day.
pub fn yesterday_utc() -> NaiveDate {
    let today = Utc::now().date_naive();
    today.checked_sub_days(Days::new(1)).unwrap_or(today)
}

/// How the demo reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// A progress bar when stderr is a terminal, log lines otherwise.
    #[default]
    Auto,
    /// Log lines only.
    Log,
    /// Nothing.
    Hidden,
}

/// What the demo wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoSummary {
    /// The warehouse base URL.
    pub warehouse: String,
    /// Ids of the clients written.
    pub clients: Vec<String>,
    /// Rows written per table.
    pub rows: BTreeMap<&'static str, u64>,
    /// Delta version of every table at the end.
    pub versions: BTreeMap<&'static str, u64>,
    /// Slice writes made (each one Delta commit and one run row).
    pub slices: usize,
    /// Rows produced by the generator.
    pub generated_rows: u64,
    /// Time spent inside the generator.
    pub generator_time: Duration,
    /// Wall-clock time of the whole demo.
    pub elapsed: Duration,
}

impl DemoSummary {
    /// Generator throughput in rows per second.
    pub fn generator_rows_per_sec(&self) -> f64 {
        per_sec(self.generated_rows, self.generator_time)
    }

    /// End-to-end throughput (generate and write) in rows per second.
    pub fn rows_per_sec(&self) -> f64 {
        per_sec(self.rows.values().sum(), self.elapsed)
    }
}

fn per_sec(rows: u64, time: Duration) -> f64 {
    let secs = time.as_secs_f64();
    if secs > 0.0 { rows as f64 / secs } else { 0.0 }
}

/// Counts rows and time spent producing them, for the throughput figure.
struct Timed<I> {
    inner: I,
    nanos: Arc<AtomicU64>,
    rows: Arc<AtomicU64>,
}

impl<I: Iterator<Item = RecordBatch>> Iterator for Timed<I> {
    type Item = RecordBatch;

    fn next(&mut self) -> Option<RecordBatch> {
        let start = Instant::now();
        let batch = self.inner.next();
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        if let Some(b) = &batch {
            self.rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
        }
        batch
    }
}

/// One planned slice write.
struct Job {
    table: &'static TableDef,
    client: Option<usize>,
    platform: Option<crate::synthetic::Platform>,
    run_source: &'static str,
}

/// Reports progress as a bar or as periodic log lines.
struct Reporter {
    bar: Option<ProgressBar>,
    log: bool,
    last_log: Instant,
    total: usize,
}

impl Reporter {
    fn new(progress: Progress, total: usize) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (progress == Progress::Auto && terminal).then(|| {
            let bar = ProgressBar::new(total as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} slices  {msg}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Self {
            log: progress != Progress::Hidden && bar.is_none(),
            bar,
            last_log: Instant::now(),
            total,
        }
    }

    fn done(&mut self, finished: usize, what: &str, rows: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(finished as u64);
            bar.set_message(format!("{what}: {rows} rows"));
        } else if self.log && (self.last_log.elapsed() >= LOG_EVERY || finished == self.total) {
            self.last_log = Instant::now();
            info!(
                "demo progress: {finished}/{} slices written (last: {what}, {rows} rows)",
                self.total
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Generates a synthetic agency and writes it to the warehouse: every
/// client's ad platforms, GA4 sessions and Shopify orders, and FX rates,
/// each an idempotent slice write recorded in `ingest_runs` with trigger
/// `demo`; then checkpoints every table. Running it twice with the same
/// options leaves the same data (new lineage and run rows).
pub async fn run_demo(opts: &DemoOptions, progress: Progress) -> Result<DemoSummary> {
    let started = Instant::now();
    let config = opts.synthetic_config();
    config.validate()?;
    let (from, to) = (config.start_date()?, config.end_date);
    let warehouse = Warehouse::open(&opts.warehouse)?;
    warehouse.ensure_tables().await?;

    let synthetic = Synthetic::new(config);
    let mut jobs = Vec::new();
    for (idx, client) in synthetic.clients().iter().enumerate() {
        for &platform in &client.platforms {
            jobs.push(Job {
                table: &AD_PERFORMANCE,
                client: Some(idx),
                platform: Some(platform),
                run_source: platform.as_str(),
            });
        }
        jobs.push(Job {
            table: &WEB_SESSIONS,
            client: Some(idx),
            platform: None,
            run_source: "ga4",
        });
        jobs.push(Job {
            table: &ORDERS,
            client: Some(idx),
            platform: None,
            run_source: "shopify",
        });
    }
    jobs.push(Job {
        table: &FX_RATES,
        client: None,
        platform: None,
        run_source: "fx",
    });
    info!(
        warehouse = %warehouse.url(),
        clients = synthetic.clients().len(),
        slices = jobs.len(),
        "writing the demo warehouse"
    );

    let mut reporter = Reporter::new(progress, jobs.len());
    let nanos = Arc::new(AtomicU64::new(0));
    let generated = Arc::new(AtomicU64::new(0));
    let mut rows: BTreeMap<&'static str, u64> = BTreeMap::new();
    for (n, job) in jobs.iter().enumerate() {
        let run_id = uuid::Uuid::now_v7().to_string();
        let lineage = Lineage::new(SYNTHETIC_SOURCE, run_id.clone());
        let batches: Box<dyn Iterator<Item = RecordBatch> + Send> = match (job.client, job.platform)
        {
            (Some(c), Some(p)) => Box::new(synthetic.ad_performance_for(c, p, &lineage)),
            (Some(c), None) if job.table.name == WEB_SESSIONS.name => {
                Box::new(synthetic.web_sessions(c, &lineage))
            }
            (Some(c), None) => Box::new(synthetic.orders(c, &lineage)),
            (None, _) => Box::new(synthetic.fx_rates()),
        };
        let batches = Timed {
            inner: batches,
            nanos: Arc::clone(&nanos),
            rows: Arc::clone(&generated),
        };
        let mut write = WriteSliceBuilder::new(&warehouse, job.table)
            .with_source(job.platform.map(|p| p.as_str()))
            .with_run_source(job.run_source)
            .with_date_range(from, to)
            .with_run(run_id)
            .with_trigger(Trigger::Demo);
        let what = match job.client {
            Some(c) => {
                let id = &synthetic.clients()[c].id;
                write = write.with_client(id.clone());
                format!("{} {id} {}", job.table.name, job.run_source)
            }
            None => job.table.name.to_owned(),
        };
        let written = write.execute(batches).await?;
        *rows.entry(job.table.name).or_default() += written.rows_written;
        reporter.done(n + 1, &what, written.rows_written);
    }
    reporter.finish();

    // Readers replay the log from the last checkpoint; without one they
    // would replay every commit the demo made.
    let mut versions = BTreeMap::new();
    for def in all_tables() {
        let table = warehouse.open_or_create(def).await?;
        create_checkpoint(&table, None)
            .await
            .map_err(|e| Error::delta(def.name, e))?;
        versions.insert(def.name, table.version().unwrap_or_default());
    }

    Ok(DemoSummary {
        warehouse: warehouse.url().to_string(),
        clients: synthetic.clients().iter().map(|c| c.id.clone()).collect(),
        rows,
        versions,
        slices: jobs.len(),
        generated_rows: generated.load(Ordering::Relaxed),
        generator_time: Duration::from_nanos(nanos.load(Ordering::Relaxed)),
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn demo_writes_every_table_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let opts = DemoOptions {
            warehouse: dir.path().to_str().unwrap().to_owned(),
            clients: 2,
            days: 14,
            rows: 3_000,
            seed: 7,
            end_date: NaiveDate::from_ymd_opt(2025, 3, 31).unwrap(),
        };
        let first = run_demo(&opts, Progress::Hidden).await.unwrap();
        assert_eq!(first.clients.len(), 2);
        assert_eq!(first.rows["ad_performance"], 3_000);
        assert!(first.rows["web_sessions"] > 0);
        assert!(first.rows["orders"] > 0);
        assert!(first.rows["fx_rates"] > 0);
        assert!(first.generator_rows_per_sec() > 0.0);
        // Every slice plus the table creation produced a version.
        assert_eq!(first.versions["ingest_runs"], first.slices as u64);

        let second = run_demo(&opts, Progress::Hidden).await.unwrap();
        assert_eq!(second.rows, first.rows);
        assert_eq!(second.clients, first.clients);
    }

    #[tokio::test]
    async fn bad_options_are_rejected_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let opts = DemoOptions {
            warehouse: dir.path().to_str().unwrap().to_owned(),
            clients: 0,
            ..DemoOptions::default()
        };
        let err = run_demo(&opts, Progress::Hidden).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: clients must be at least 1"
        );
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}
