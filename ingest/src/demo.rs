//! The demo: a whole synthetic agency written to a warehouse, slice by
//! slice, through the same writer as the real connectors.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adlake_engine::schema::{AD_PERFORMANCE, FX_RATES, ORDERS, TableDef, WEB_SESSIONS, all_tables};
use arrow::array::RecordBatch;
use chrono::{Days, NaiveDate, Utc};
use deltalake::checkpoints::create_checkpoint;
use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

use crate::error::{Error, Result};
use crate::lake::lineage::Lineage;
use crate::lake::warehouse::Warehouse;
use crate::lake::writer::{SliceWrite, SourceBatches, Trigger, WriteSliceBuilder};
use crate::sources::connectors::Platform;
use crate::synthetic::{SYNTHETIC_SOURCE, Synthetic, SyntheticConfig};

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
    /// Write each ad platform of a client in its own commit, as the daily
    /// runs do: one file per platform and partition, the small files
    /// compaction merges. By default a client's platforms are written
    /// together (one commit and one file per partition; one run each).
    pub commit_per_source: bool,
    /// Inject one incident per client (see
    /// [`Incident`](crate::synthetic::Incident)): what anomaly detection
    /// finds in the demo.
    pub incidents: bool,
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
            commit_per_source: false,
            incidents: true,
        }
    }
}

impl DemoOptions {
    /// Options writing the data `config` describes to `warehouse`.
    pub fn new(warehouse: impl Into<String>, config: &SyntheticConfig) -> Self {
        Self {
            warehouse: warehouse.into(),
            clients: config.clients,
            days: config.days,
            rows: config.rows,
            seed: config.seed,
            end_date: config.end_date,
            commit_per_source: false,
            incidents: config.incidents,
        }
    }

    /// The generator configuration these options describe.
    pub fn synthetic_config(&self) -> SyntheticConfig {
        SyntheticConfig {
            clients: self.clients,
            days: self.days,
            rows: self.rows,
            seed: self.seed,
            end_date: self.end_date,
            incidents: self.incidents,
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
    /// Slices written (each one run and one `ingest_runs` row).
    pub slices: usize,
    /// Writes made: each one commit to its table and one to `ingest_runs`
    /// (a client's ad platforms are written together).
    pub writes: usize,
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

/// One planned write: a client's ad platforms together (one slice and
/// run each, one commit), or one slice of another table.
#[derive(Debug, Clone)]
struct Job {
    table: &'static TableDef,
    client: Option<usize>,
    platforms: Vec<Platform>,
    run_source: &'static str,
}

/// Reports progress as a bar or as periodic log lines.
struct Reporter {
    bar: Option<ProgressBar>,
    log: bool,
    last_log: Instant,
    total: usize,
    finished: usize,
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
            finished: 0,
        }
    }

    /// `slices` more slices written, the last of them `what`.
    fn done(&mut self, slices: usize, what: &str, rows: u64) {
        self.finished += slices;
        let finished = self.finished;
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

/// Rows produced by the generator and time spent producing them, over
/// all writes.
#[derive(Debug, Clone, Default)]
struct GeneratorCounters {
    nanos: Arc<AtomicU64>,
    rows: Arc<AtomicU64>,
}

impl GeneratorCounters {
    fn timed(&self, inner: BoxedBatches) -> Timed<BoxedBatches> {
        Timed {
            inner,
            nanos: Arc::clone(&self.nanos),
            rows: Arc::clone(&self.rows),
        }
    }
}

type BoxedBatches = Box<dyn Iterator<Item = RecordBatch> + Send>;

/// Generates and writes one job; returns what it wrote, for progress.
async fn write_job(
    warehouse: &Warehouse,
    synthetic: &Synthetic,
    job: &Job,
    (from, to): (NaiveDate, NaiveDate),
    counters: &GeneratorCounters,
) -> Result<(String, Vec<SliceWrite>)> {
    let mut write = WriteSliceBuilder::new(warehouse, job.table)
        .with_date_range(from, to)
        .with_trigger(Trigger::Demo);
    let what = match job.client {
        Some(c) => {
            let id = &synthetic.clients()[c].id;
            write = write.with_client(id.clone());
            format!("{} {id} {}", job.table.name, job.run_source)
        }
        None => job.table.name.to_owned(),
    };
    let written = match (job.client, job.platforms.is_empty()) {
        (Some(c), false) => {
            let parts = job
                .platforms
                .iter()
                .map(|&platform| {
                    let run_id = uuid::Uuid::now_v7().to_string();
                    let lineage = Lineage::new(SYNTHETIC_SOURCE, run_id.clone());
                    SourceBatches {
                        source: platform.as_str().to_owned(),
                        run_id,
                        batches: counters.timed(Box::new(
                            synthetic.ad_performance_for(c, platform, &lineage),
                        )),
                    }
                })
                .collect();
            write.execute_sources(parts).await?
        }
        (client, _) => {
            let run_id = uuid::Uuid::now_v7().to_string();
            let lineage = Lineage::new(SYNTHETIC_SOURCE, run_id.clone());
            let batches: BoxedBatches = match client {
                Some(c) if job.table.name == WEB_SESSIONS.name => {
                    Box::new(synthetic.web_sessions(c, &lineage))
                }
                Some(c) => Box::new(synthetic.orders(c, &lineage)),
                None => Box::new(synthetic.fx_rates()),
            };
            let written = write
                .with_run_source(job.run_source)
                .with_run(run_id)
                .execute(counters.timed(batches))
                .await?;
            vec![written]
        }
    };
    Ok((what, written))
}

/// Generates a synthetic agency and writes it to the warehouse: every
/// client's ad platforms, GA4 sessions and Shopify orders, and FX rates,
/// each an idempotent slice (one run) recorded in `ingest_runs` with
/// trigger `demo`; then checkpoints every table. A client's ad platforms
/// are one commit unless [`DemoOptions::commit_per_source`]; the tables
/// are written side by side. Running it twice with the same options leaves
/// the same data (new lineage and run rows).
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
        if opts.commit_per_source {
            for &platform in &client.platforms {
                jobs.push(Job {
                    table: &AD_PERFORMANCE,
                    client: Some(idx),
                    platforms: vec![platform],
                    run_source: platform.as_str(),
                });
            }
        } else if !client.platforms.is_empty() {
            jobs.push(Job {
                table: &AD_PERFORMANCE,
                client: Some(idx),
                platforms: client.platforms.clone(),
                run_source: "ads",
            });
        }
        jobs.push(Job {
            table: &WEB_SESSIONS,
            client: Some(idx),
            platforms: Vec::new(),
            run_source: "ga4",
        });
        jobs.push(Job {
            table: &ORDERS,
            client: Some(idx),
            platforms: Vec::new(),
            run_source: "shopify",
        });
    }
    jobs.push(Job {
        table: &FX_RATES,
        client: None,
        platforms: Vec::new(),
        run_source: "fx",
    });
    let slices: usize = jobs.iter().map(|j| j.platforms.len().max(1)).sum();
    info!(
        warehouse = %warehouse.url(),
        clients = synthetic.clients().len(),
        slices,
        writes = jobs.len(),
        "writing the demo warehouse"
    );

    let reporter = Arc::new(Mutex::new(Reporter::new(progress, slices)));
    let counters = GeneratorCounters::default();
    // The tables are written side by side, each client after client: the
    // cores stay busy while one write closes its files and commits. Tables
    // are independent, so their writes never conflict; their run records
    // are appends to `ingest_runs`, which delta-rs lets pass each other.
    let mut queues: BTreeMap<&'static str, Vec<Job>> = BTreeMap::new();
    for job in &jobs {
        queues.entry(job.table.name).or_default().push(job.clone());
    }
    let mut writers = tokio::task::JoinSet::new();
    let mut tables = std::collections::HashMap::new();
    for (table, queue) in queues {
        let (warehouse, synthetic) = (warehouse.clone(), synthetic.clone());
        let (reporter, counters) = (Arc::clone(&reporter), counters.clone());
        let task = writers.spawn(async move {
            let mut rows = 0;
            for job in &queue {
                let (what, written) =
                    write_job(&warehouse, &synthetic, job, (from, to), &counters).await?;
                let job_rows: u64 = written.iter().map(|w| w.rows_written).sum();
                rows += job_rows;
                reporter.lock().unwrap_or_else(|p| p.into_inner()).done(
                    written.len(),
                    &what,
                    job_rows,
                );
            }
            Ok::<_, Error>(rows)
        });
        tables.insert(task.id(), table);
    }
    let mut rows: BTreeMap<&'static str, u64> = BTreeMap::new();
    while let Some(joined) = writers.join_next_with_id().await {
        // On an error the other tables' writes stop where they are (the
        // set aborts them when dropped): each commits whole or not at all.
        let (id, n) = joined.map_err(|e| Error::Input {
            table: tables.get(&e.id()).copied().unwrap_or("demo"),
            message: format!("its writer stopped: {e}"),
        })?;
        rows.insert(tables[&id], n?);
    }
    reporter.lock().unwrap_or_else(|p| p.into_inner()).finish();

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
        slices,
        writes: jobs.len(),
        generated_rows: counters.rows.load(Ordering::Relaxed),
        generator_time: Duration::from_nanos(counters.nanos.load(Ordering::Relaxed)),
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
            commit_per_source: false,
            incidents: false,
        };
        let first = run_demo(&opts, Progress::Hidden).await.unwrap();
        assert_eq!(first.clients.len(), 2);
        assert_eq!(first.rows["ad_performance"], 3_000);
        assert!(first.rows["web_sessions"] > 0);
        assert!(first.rows["orders"] > 0);
        assert!(first.rows["fx_rates"] > 0);
        assert!(first.generator_rows_per_sec() > 0.0);
        // Every write plus the table creation produced a version: one
        // write per client for its ad platforms, one per client for GA4
        // and for Shopify, one for FX rates.
        let platforms: usize = Synthetic::new(opts.synthetic_config())
            .clients()
            .iter()
            .map(|c| c.platforms.len())
            .sum();
        assert!(platforms > 2, "the clients have several platforms");
        assert_eq!(first.writes, 2 * 3 + 1);
        assert_eq!(first.slices, platforms + 2 * 2 + 1);
        assert_eq!(first.versions["ingest_runs"], first.writes as u64);
        assert_eq!(first.versions["ad_performance"], 2);

        let second = run_demo(&opts, Progress::Hidden).await.unwrap();
        assert_eq!(second.rows, first.rows);
        assert_eq!(second.clients, first.clients);

        // One commit per platform, as the daily runs write: same rows.
        let split = DemoOptions {
            commit_per_source: true,
            ..opts
        };
        let third = run_demo(&split, Progress::Hidden).await.unwrap();
        assert_eq!(third.rows, first.rows);
        assert_eq!(third.slices, first.slices);
        assert_eq!(third.writes, platforms + 2 * 2 + 1);
        assert_eq!(
            third.versions["ad_performance"],
            second.versions["ad_performance"] + platforms as u64
        );
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
