//! Idempotent slice writes to Delta tables, and the `ingest_runs` audit.
//!
//! A *slice* is the set of rows of one table that one run owns: one client,
//! one value of the table's source column (the `platform` of
//! `ad_performance`) when it has one, and a date range. A write replaces
//! exactly that slice in one Delta transaction (an overwrite with the
//! slice's predicate), so a re-run gives the same table, a failure
//! part-way commits nothing, and writers of other slices are untouched.
//! Every write, successful or not, then appends one row to `ingest_runs`.
//!
//! Several sources of one client and date range can be written in one
//! transaction ([`WriteSliceBuilder::execute_sources`]): each is still its
//! own run with its own row in `ingest_runs`, and the table gets one file
//! per partition instead of one per source and partition.
//!
//! The tables partitioned by client and date find the files a slice
//! replaces from their partition values and statistics (see `replace`),
//! so a write costs the same whether the table holds a week or years;
//! the others go through delta-rs's `replaceWhere`.
//!
//! `quarantine` has no report date: its rows are keyed by the date range
//! the run asked for (`date_from`, `date_to`), and its slice is every row of
//! the (client, source) whose requested range lies inside the range written
//! (see [`range_keyed`]). The same replace mechanism makes its rows
//! idempotent per run.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use adlake_engine::schema::{CLIENT_ID, DATE, INGEST_RUNS, QUARANTINE, TableDef};
use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Float64Array, Int64Array, ListBuilder, RecordBatch,
    StringArray, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{Date32Type, SchemaRef};
use chrono::{DateTime, NaiveDate, Utc};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::ScalarValue;
use datafusion::datasource::provider_as_source;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, ident, lit};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use futures::{Stream, StreamExt};
use serde_json::json;
use tracing::{error, info};

use crate::dates::{date_to_epoch_day, epoch_day_to_date};
use crate::error::{Error, Result};
use crate::lake::commit::{DEFAULT_ATTEMPTS, commit_with_retry};
use crate::lake::warehouse::Warehouse;
use crate::sources::http::CallCounts;

pub use crate::lake::layout::{CALL_COLUMNS, DATE_FROM, DATE_TO};

/// Whether `table`'s slices are keyed by the requested date range
/// (`date_from`, `date_to`) rather than by a report date: `quarantine`,
/// whose rejected records may have no readable date at all. The audit table
/// `ingest_runs` has the same columns but stays append-only.
pub fn range_keyed(table: &TableDef) -> bool {
    table.name == QUARANTINE.name
}

/// Commit-metadata key holding the run id of every commit this crate makes.
pub const RUN_ID_METADATA_KEY: &str = "adlake.run_id";

/// `ingest_runs.client_id` of runs that are not about one client (FX
/// rates): the engine's, which reads those runs.
pub use adlake_engine::freshness::GLOBAL_CLIENT;

/// Batches buffered between a generating thread and the Delta writer.
const INPUT_BUFFER_BATCHES: usize = 2;

/// Why a run happened (`ingest_runs.trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// The daily scheduler.
    Schedule,
    /// A backfill asked for by an operator.
    Backfill,
    /// A dropped file.
    File,
    /// A push from a platform webhook.
    Push,
    /// The demo command.
    Demo,
    /// Anything else started by hand (and tests).
    Manual,
}

impl Trigger {
    /// The `ingest_runs.trigger` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Backfill => "backfill",
            Self::File => "file",
            Self::Push => "push",
            Self::Demo => "demo",
            Self::Manual => "manual",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// State of a run (`ingest_runs.status`).
///
/// A run of `adlake-ingest run`, `backfill`, `file` or `worker` has two
/// rows: `started`, appended before its data commit, and its finish
/// (`succeeded`, `failed` or `held`), appended after. A `held` run that is
/// confirmed later gets a third row, `succeeded`. The run's state is its
/// finish row with the latest `finished_at`; a run with only its `started`
/// row is running or was interrupted, until the next run of its slice
/// reconciles it (see [`crate::lake::reconcile`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Recorded before the data commit; not finished (yet).
    Started,
    /// The slice was committed.
    Succeeded,
    /// Nothing was committed.
    Failed,
    /// The shrink guard held the replace: the old rows stay, the new ones
    /// wait under `_adlake_staged/` for `--confirm-shrink` or a run that
    /// agrees.
    Held,
}

impl RunStatus {
    /// The `ingest_runs.status` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Held => "held",
        }
    }

    /// Whether the row records a run's end (every status but `started`).
    pub fn is_finish(self) -> bool {
        !matches!(self, Self::Started)
    }
}

impl std::str::FromStr for RunStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        [Self::Started, Self::Succeeded, Self::Failed, Self::Held]
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| Error::InvalidConfig(format!("unknown run status '{s}'")))
    }
}

/// The Delta application transaction (`txn`) of a run's commits: its app
/// id is the run id, so a reader can tell from a table's snapshot whether a
/// run's commit is in (see [`run_committed`]).
pub fn run_transaction(run_id: &str) -> Transaction {
    Transaction::new_with_last_update(run_id, 1, Some(Utc::now().timestamp_millis()))
}

/// Whether `table` holds a commit of run `run_id` (its `txn`).
pub async fn run_committed(table: &deltalake::DeltaTable, run_id: &str) -> Result<bool> {
    let Ok(state) = table.snapshot() else {
        return Ok(false);
    };
    let version = state
        .transaction_version(table.log_store().as_ref(), run_id)
        .await
        .map_err(|e| Error::delta("txn", e))?;
    Ok(version.is_some())
}

/// One row of `ingest_runs`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// The run id, also in the commit metadata and the rows' `_run_id`.
    pub run_id: String,
    /// The client, or [`GLOBAL_CLIENT`].
    pub client_id: String,
    /// The source, e.g. `google_ads`, `ga4`, `shopify`, `fx`.
    pub source: String,
    /// Why the run happened.
    pub trigger: Trigger,
    /// Requested first date.
    pub date_from: NaiveDate,
    /// Requested last date (inclusive).
    pub date_to: NaiveDate,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Whether it committed.
    pub status: RunStatus,
    /// Rows received from the source.
    pub rows_read: u64,
    /// Rows committed to the target table.
    pub rows_written: u64,
    /// Rows sent to quarantine.
    pub rows_quarantined: u64,
    /// The table written.
    pub target_table: String,
    /// The Delta version the write produced; `None` when it failed.
    pub table_version: Option<u64>,
    /// Request ids of the source API calls (empty for synthetic data).
    pub source_request_ids: Vec<String>,
    /// The error of a failed run.
    pub error: Option<String>,
    /// What the platform calls of the run took; `None` for runs that made
    /// none (synthetic data, files).
    pub calls: Option<CallCounts>,
}

impl RunRecord {
    fn to_batch(&self) -> Result<RecordBatch> {
        let mut request_ids = ListBuilder::new(StringBuilder::new());
        request_ids.append_value(self.source_request_ids.iter().map(Some));
        let ts = |t: DateTime<Utc>| -> ArrayRef {
            Arc::new(
                TimestampMicrosecondArray::from(vec![t.timestamp_micros()]).with_timezone("UTC"),
            )
        };
        let text = |s: &str| -> ArrayRef { Arc::new(StringArray::from(vec![s])) };
        let count = |n: u64| -> ArrayRef { Arc::new(Int64Array::from(vec![to_i64(n)])) };
        let calls = self.calls.as_ref();
        let call_count = |f: fn(&CallCounts) -> u64| -> ArrayRef {
            Arc::new(Int64Array::from(vec![calls.map(|c| to_i64(f(c)))]))
        };
        let columns: Vec<ArrayRef> = vec![
            text(&self.run_id),
            text(&self.client_id),
            text(&self.source),
            text(self.trigger.as_str()),
            Arc::new(Date32Array::from(vec![date_to_epoch_day(self.date_from)])),
            Arc::new(Date32Array::from(vec![date_to_epoch_day(self.date_to)])),
            ts(self.started_at),
            ts(self.finished_at),
            text(self.status.as_str()),
            count(self.rows_read),
            count(self.rows_written),
            count(self.rows_quarantined),
            text(&self.target_table),
            Arc::new(Int64Array::from(vec![self.table_version.map(to_i64)])),
            Arc::new(request_ids.finish()),
            Arc::new(StringArray::from(vec![self.error.as_deref()])),
            call_count(|c| c.api_calls),
            call_count(|c| c.retries),
            call_count(|c| c.rate_limit_waits),
            Arc::new(Float64Array::from(vec![
                calls.map(|c| c.rate_limit_wait_seconds),
            ])),
            call_count(|c| c.breaker_opens),
        ];
        Ok(RecordBatch::try_new(INGEST_RUNS.schema(), columns)?)
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Appends one row to `ingest_runs` and returns the version it produced.
pub async fn append_run(warehouse: &Warehouse, record: &RunRecord) -> Result<u64> {
    append_runs(warehouse, std::slice::from_ref(record)).await
}

/// Appends rows to `ingest_runs` in one commit (the runs of one write)
/// and returns the version it produced.
pub async fn append_runs(warehouse: &Warehouse, records: &[RunRecord]) -> Result<u64> {
    let batches = records
        .iter()
        .map(RunRecord::to_batch)
        .collect::<Result<Vec<_>>>()?;
    let run_ids: Vec<&str> = records.iter().map(|r| r.run_id.as_str()).collect();
    let run_ids = &run_ids;
    commit_with_retry(INGEST_RUNS.name, DEFAULT_ATTEMPTS, |_| {
        let batches = batches.clone();
        async move {
            let table = warehouse.open_or_create(&INGEST_RUNS).await?;
            let table = table
                .write(batches)
                .with_save_mode(SaveMode::Append)
                .with_commit_properties(
                    CommitProperties::default()
                        .with_metadata([(RUN_ID_METADATA_KEY.to_owned(), one_or_many(run_ids))]),
                )
                .await
                .map_err(|e| Error::delta(INGEST_RUNS.name, e))?;
            warehouse.remember(&INGEST_RUNS, &table);
            Ok(table.version().unwrap_or_default())
        }
    })
    .await
}

/// A commit-metadata value: the one value as is, several as an array.
fn one_or_many<T: serde::Serialize>(values: &[T]) -> serde_json::Value {
    match values {
        [one] => json!(one),
        many => json!(many),
    }
}

/// What a successful slice write did.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceWrite {
    /// The run id (in the commit metadata, the rows and `ingest_runs`).
    pub run_id: String,
    /// The table written.
    pub table: &'static str,
    /// The Delta version the write produced.
    pub version: u64,
    /// Rows now in the slice.
    pub rows_written: u64,
    /// The `ingest_runs` version holding the run's row.
    pub runs_version: u64,
    /// When the run started and finished.
    pub started_at: DateTime<Utc>,
    /// When the commit was done.
    pub finished_at: DateTime<Utc>,
}

/// The batches of several sources, each in date order, merged in date
/// order (tagged with their source's index): the next batch is always the
/// one of the source that is furthest behind. A write then has every
/// source's rows of a day at about the same time, and a flush of its
/// buffer closes files that hold all of the day's sources.
struct DateMerge<I: Iterator<Item = RecordBatch>> {
    parts: Vec<std::iter::Peekable<I>>,
}

impl<I: Iterator<Item = RecordBatch>> Iterator for DateMerge<I> {
    type Item = (usize, RecordBatch);

    fn next(&mut self) -> Option<Self::Item> {
        let mut next: Option<(i32, usize)> = None;
        for (n, part) in self.parts.iter_mut().enumerate() {
            if let Some(batch) = part.peek() {
                let day = first_day(batch);
                if next.is_none_or(|(earliest, _)| day < earliest) {
                    next = Some((day, n));
                }
            }
        }
        let (_, n) = next?;
        self.parts[n].next().map(|batch| (n, batch))
    }
}

/// The date of a batch's first row (as days since the epoch); the earliest
/// possible when it has none.
fn first_day(batch: &RecordBatch) -> i32 {
    batch
        .column_by_name(DATE)
        .and_then(|c| c.as_primitive_opt::<Date32Type>())
        .filter(|dates| !dates.is_empty() && dates.is_valid(0))
        .map_or(i32::MIN, |dates| dates.value(0))
}

/// Replaces one (client, source, date range) slice of a table in one Delta
/// transaction and records the run in `ingest_runs`.
///
/// ```no_run
/// # async fn example(batches: Vec<arrow::array::RecordBatch>) -> adlake_ingest::Result<()> {
/// use adlake_engine::schema::AD_PERFORMANCE;
/// use adlake_ingest::{Trigger, Warehouse, WriteSliceBuilder};
/// use chrono::NaiveDate;
///
/// let warehouse = Warehouse::open("./data/warehouse")?;
/// let day = |d| NaiveDate::from_ymd_opt(2025, 6, d).unwrap();
/// let written = WriteSliceBuilder::new(&warehouse, &AD_PERFORMANCE)
///     .with_client("northwind-outfitters")
///     .with_source(Some("google_ads"))
///     .with_date_range(day(1), day(30))
///     .with_trigger(Trigger::Backfill)
///     .execute(batches)
///     .await?;
/// println!("version {} with {} rows", written.version, written.rows_written);
/// # Ok(())
/// # }
/// ```
#[must_use = "a slice write does nothing until executed"]
#[derive(Debug, Clone)]
pub struct WriteSliceBuilder {
    warehouse: Warehouse,
    table: &'static TableDef,
    client: Option<String>,
    source: Option<String>,
    run_source: Option<String>,
    date_range: Option<(NaiveDate, NaiveDate)>,
    run_id: Option<String>,
    trigger: Trigger,
    rows_quarantined: u64,
    source_request_ids: Vec<String>,
    calls: Option<CallCounts>,
    buffer: usize,
    record_start: bool,
    quarantine: Option<RecordBatch>,
}

/// Arrow bytes a slice write holds in its open files before it closes the
/// earliest days' (default of [`WriteSliceBuilder::with_write_buffer`]):
/// the demo's tables, written side by side, then stay near 1.2 GiB of
/// memory whether a client has 200,000 or 2,000,000 rows a year.
pub const DEFAULT_WRITE_BUFFER: usize = 128 << 20;

impl WriteSliceBuilder {
    /// A write to `table` in `warehouse`.
    pub fn new(warehouse: &Warehouse, table: &'static TableDef) -> Self {
        Self {
            warehouse: warehouse.clone(),
            table,
            client: None,
            source: None,
            run_source: None,
            date_range: None,
            run_id: None,
            trigger: Trigger::Manual,
            rows_quarantined: 0,
            source_request_ids: Vec::new(),
            calls: None,
            buffer: DEFAULT_WRITE_BUFFER,
            record_start: false,
            quarantine: None,
        }
    }

    /// Records the run as `started` in `ingest_runs` before its data
    /// commit, and its finish after (what every job does): a process
    /// killed at any point leaves either the old slice or the new one, and
    /// every `_run_id` it wrote has a row. Without it (the demo, which
    /// fills a new warehouse) the run has one row, appended after the data.
    pub fn with_started_record(mut self) -> Self {
        self.record_start = true;
        self
    }

    /// The run's `quarantine` rows (see
    /// [`crate::lake::quarantine::quarantine_batch`]): they replace the
    /// quarantine slice of the (client, source, range) right after the
    /// data commit, both tagged with the run's `txn`. They
    /// are staged under `_adlake_staged/` first, so a run interrupted
    /// between the two commits is completed by [`crate::lake::reconcile`].
    /// Needs [`Self::with_started_record`].
    pub(crate) fn with_quarantine(mut self, batch: RecordBatch) -> Self {
        self.quarantine = Some(batch);
        self
    }

    /// The client whose slice is replaced (required for client-scoped tables).
    pub fn with_client(mut self, client_id: impl Into<String>) -> Self {
        self.client = Some(client_id.into());
        self
    }

    /// The value of the table's source column (required when it has one,
    /// e.g. the platform of `ad_performance`; `None` otherwise).
    pub fn with_source(mut self, source: Option<impl Into<String>>) -> Self {
        self.source = source.map(Into::into);
        self
    }

    /// The source named in `ingest_runs` (defaults to the source value, or
    /// the table name), e.g. `ga4` or `shopify` for tables without a source
    /// column.
    pub fn with_run_source(mut self, name: impl Into<String>) -> Self {
        self.run_source = Some(name.into());
        self
    }

    /// First and last date (inclusive) of the slice.
    pub fn with_date_range(mut self, from: NaiveDate, to: NaiveDate) -> Self {
        self.date_range = Some((from, to));
        self
    }

    /// The run id (default: a new UUIDv7).
    pub fn with_run(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// Why the run happens (default [`Trigger::Manual`]).
    pub fn with_trigger(mut self, trigger: Trigger) -> Self {
        self.trigger = trigger;
        self
    }

    /// Rows of the run that went to quarantine instead, for the run record.
    pub fn with_rows_quarantined(mut self, rows: u64) -> Self {
        self.rows_quarantined = rows;
        self
    }

    /// Request ids of the source API calls, for the run record.
    pub fn with_source_request_ids(
        mut self,
        ids: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.source_request_ids = ids.into_iter().map(Into::into).collect();
        self
    }

    /// Bounds the memory of the write: a file is open per day being
    /// written, and once the open files have taken `bytes` of Arrow data
    /// (default [`DEFAULT_WRITE_BUFFER`]) the earliest days' are closed;
    /// later rows of a closed day go to a new file. A write holds about
    /// this much whatever the size of the slice, and rows in date order
    /// still make one file per partition. All files are committed
    /// together either way. (Tables that are not plain are written by
    /// delta-rs, which does not take it.)
    pub fn with_write_buffer(mut self, bytes: usize) -> Self {
        self.buffer = bytes.max(1);
        self
    }

    /// What the run's platform calls took, for the run record.
    pub fn with_calls(mut self, calls: CallCounts) -> Self {
        self.calls = Some(calls);
        self
    }

    /// Writes the slice from batches produced by an iterator. The iterator
    /// runs on a blocking thread, a couple of batches ahead of the writer,
    /// so generation and writing overlap and memory stays bounded.
    pub async fn execute<I>(self, batches: I) -> Result<SliceWrite>
    where
        I: IntoIterator<Item = RecordBatch>,
        I::IntoIter: Send + 'static,
    {
        let stream = iterator_stream(batches.into_iter());
        self.execute_stream(stream).await
    }

    /// Writes the slice from a stream of batches. An error from the stream
    /// fails the write: nothing is committed and a failed run is recorded.
    pub async fn execute_stream<S>(self, input: S) -> Result<SliceWrite>
    where
        S: Stream<Item = Result<RecordBatch, DataFusionError>> + Send + 'static,
    {
        let slice = self.slice()?;
        let run = self.single_run(&slice);
        let input = input.map(|item| (0, item));
        let mut written = self.run(slice, vec![run], input).await?;
        Ok(written.remove(0))
    }

    /// The one run of a write of `slice`, from the builder's settings.
    fn single_run(&self, slice: &Slice) -> SourceRun {
        SourceRun {
            slice: slice.clone(),
            run_id: self
                .run_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            run_source: self
                .run_source
                .clone()
                .or_else(|| slice.sources.first().cloned())
                .unwrap_or_else(|| self.table.name.to_owned()),
            rows_quarantined: self.rows_quarantined,
            source_request_ids: self.source_request_ids.clone(),
            calls: self.calls,
        }
    }

    /// Writes the slices of several sources of the builder's client and
    /// date range in one commit, e.g. every platform of a client's
    /// backfill: one file per partition instead of one per source and
    /// partition, and one commit instead of one per source. Each source is
    /// its own run, with its own run id (in its rows, given with its
    /// batches) and its own `ingest_runs` row; the rows of all of them are
    /// appended in one commit too. Each part's batches may only hold rows
    /// of its own source. Any failure commits nothing and records every run
    /// as failed.
    ///
    /// The builder's own source, run id, run source, quarantine count,
    /// request ids and call counts are per run, so they must not be set.
    pub async fn execute_sources<I>(self, parts: Vec<SourceBatches<I>>) -> Result<Vec<SliceWrite>>
    where
        I: IntoIterator<Item = RecordBatch>,
        I::IntoIter: Send + 'static,
    {
        let def = self.table;
        let invalid = |reason: String| Error::InvalidSlice {
            table: def.name,
            reason,
        };
        if self.source.is_some()
            || self.run_id.is_some()
            || self.run_source.is_some()
            || self.rows_quarantined > 0
            || !self.source_request_ids.is_empty()
            || self.calls.is_some()
        {
            return Err(invalid(
                "a write of several sources takes its source and run details per source".to_owned(),
            ));
        }
        if def.source_column.is_none() {
            return Err(invalid("the table has no source column".to_owned()));
        }
        if parts.is_empty() {
            return Err(invalid("no source given".to_owned()));
        }
        let mut sources: Vec<String> = Vec::with_capacity(parts.len());
        for part in &parts {
            if part.source.is_empty() {
                return Err(invalid("a source value is empty".to_owned()));
            }
            if part.run_id.is_empty() {
                return Err(invalid(format!(
                    "the run id of source '{}' is empty",
                    part.source
                )));
            }
            if sources.contains(&part.source) {
                return Err(invalid(format!("source '{}' is given twice", part.source)));
            }
            sources.push(part.source.clone());
        }
        // The slice's checks with one of the sources, then all of them.
        let mut slice = Self {
            source: Some(sources[0].clone()),
            ..self.clone()
        }
        .slice()?;
        let runs = parts
            .iter()
            .map(|part| SourceRun {
                slice: slice.only(&part.source),
                run_id: part.run_id.clone(),
                run_source: part.source.clone(),
                rows_quarantined: 0,
                source_request_ids: Vec::new(),
                calls: None,
            })
            .collect();
        slice.sources = sources;
        let batches = DateMerge {
            parts: parts
                .into_iter()
                .map(|p| p.batches.into_iter().peekable())
                .collect(),
        };
        let input = iterator_stream(batches).map(|item| match item {
            Ok((n, batch)) => (n, Ok(batch)),
            Err(err) => (0, Err(err)),
        });
        self.run(slice, runs, input).await
    }

    /// Writes `slice` from `input` (batches tagged with the index of the
    /// run in `runs` they belong to) and records every run.
    async fn run<S>(self, slice: Slice, runs: Vec<SourceRun>, input: S) -> Result<Vec<SliceWrite>>
    where
        S: Stream<Item = (usize, Result<RecordBatch, DataFusionError>)> + Send + 'static,
    {
        let started_at = Utc::now();
        let rows_read: Vec<Arc<AtomicU64>> =
            runs.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
        let run_ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
        let (from, to) = slice.dates;
        let mut records: Vec<RunRecord> = runs
            .iter()
            .map(|run| RunRecord {
                run_id: run.run_id.clone(),
                client_id: slice
                    .client
                    .clone()
                    .unwrap_or_else(|| GLOBAL_CLIENT.to_owned()),
                source: run.run_source.clone(),
                trigger: self.trigger,
                date_from: from,
                date_to: to,
                started_at,
                finished_at: started_at,
                status: RunStatus::Started,
                rows_read: 0,
                rows_written: 0,
                rows_quarantined: run.rows_quarantined,
                target_table: self.table.name.to_owned(),
                table_version: None,
                source_request_ids: run.source_request_ids.clone(),
                error: None,
                calls: None,
            })
            .collect();
        let staged_client = records[0].client_id.clone();
        if self.record_start {
            append_runs(&self.warehouse, &records).await?;
            crate::pause::point("started").await;
            if let Some(batch) = &self.quarantine {
                crate::lake::staged::put_quarantine(
                    &self.warehouse,
                    &staged_client,
                    run_ids[0],
                    batch,
                )
                .await?;
                crate::pause::point("staged").await;
            }
        }

        // Every log line of the write (ours and delta-rs') carries the run id.
        let written = tracing::Instrument::instrument(
            self.write_data(&slice, &runs, input, rows_read.clone()),
            tracing::info_span!("run", run_id = %run_ids.join(",")),
        )
        .await;
        let written = match written {
            Ok(version) => {
                crate::pause::point("data-committed").await;
                match self.write_quarantine(&staged_client, run_ids[0]).await {
                    Ok(()) => Ok(version),
                    Err(err) => {
                        // The data is in and the quarantine staged: the
                        // run stays `started` for the next run to finish.
                        error!(run_id = %run_ids.join(","), error = %err,
                            "the data is committed but the quarantine is not; the next run of the slice completes it");
                        return Err(err);
                    }
                }
            }
            Err(err) => Err(err),
        };
        let finished_at = Utc::now();
        for ((record, run), rows) in records.iter_mut().zip(&runs).zip(&rows_read) {
            record.finished_at = finished_at;
            record.status = RunStatus::Succeeded;
            record.rows_read = rows.load(Ordering::Relaxed);
            record.calls = run.calls;
        }
        match written {
            Ok(version) => {
                for record in &mut records {
                    record.rows_written = record.rows_read;
                    record.table_version = Some(version);
                }
                if self.record_start {
                    // Before the finish row: a finished run leaves nothing
                    // staged, and one killed here has its quarantine in.
                    crate::lake::staged::remove(&self.warehouse, &staged_client, run_ids[0]).await;
                    crate::pause::point("unstaged").await;
                }
                let runs_version = append_runs(&self.warehouse, &records).await?;
                if self.record_start {
                    crate::pause::point("finished").await;
                }
                let written = records
                    .into_iter()
                    .zip(&runs)
                    .map(|(record, run)| {
                        info!(
                            table = self.table.name,
                            slice = %run.slice,
                            run_id = %record.run_id,
                            version,
                            rows = record.rows_written,
                            "slice written"
                        );
                        SliceWrite {
                            run_id: record.run_id,
                            table: self.table.name,
                            version,
                            rows_written: record.rows_written,
                            runs_version,
                            started_at,
                            finished_at,
                        }
                    })
                    .collect();
                Ok(written)
            }
            Err(err) => {
                for record in &mut records {
                    record.status = RunStatus::Failed;
                    record.error = Some(err.to_string());
                }
                if let Err(record_err) = append_runs(&self.warehouse, &records).await {
                    error!(
                        run_id = %run_ids.join(","),
                        error = %record_err,
                        "could not record the failed run"
                    );
                }
                if self.record_start {
                    crate::lake::staged::remove(&self.warehouse, &staged_client, run_ids[0]).await;
                }
                Err(err)
            }
        }
    }

    /// Replaces the quarantine slice of the run with its staged rows, if
    /// the write has them.
    async fn write_quarantine(&self, client: &str, run_id: &str) -> Result<()> {
        let Some(batch) = &self.quarantine else {
            return Ok(());
        };
        let source = self.run_source.clone().or_else(|| self.source.clone());
        Self::quarantine_of(
            &self.warehouse,
            run_id,
            client,
            source.as_deref().unwrap_or(self.table.name),
            self.date_range.unwrap_or_default(),
        )
        .replace_only(vec![batch.clone()])
        .await?;
        crate::pause::point("quarantined").await;
        Ok(())
    }

    /// The write of run `run_id`'s `quarantine` rows: the slice of one
    /// client, source and requested range.
    pub(crate) fn quarantine_of(
        warehouse: &Warehouse,
        run_id: &str,
        client_id: &str,
        source: &str,
        (from, to): (NaiveDate, NaiveDate),
    ) -> Self {
        Self::new(warehouse, &QUARANTINE)
            .with_client(client_id)
            .with_source(Some(source))
            .with_date_range(from, to)
            .with_run(run_id)
    }

    /// Replaces the slice with `batches` in one Delta transaction without
    /// recording a run (for tables that belong to a run recorded by its
    /// main write, like `quarantine`); returns the version it produced. A
    /// commit that loses a race is planned again from the new version.
    pub(crate) async fn replace_only(self, batches: Vec<RecordBatch>) -> Result<u64> {
        let slice = self.slice()?;
        let run = self.single_run(&slice);
        let (this, slice, run) = (&self, &slice, &run);
        commit_with_retry(self.table.name, DEFAULT_ATTEMPTS, |_| {
            let input = futures::stream::iter(batches.clone().into_iter().map(|b| (0, Ok(b))));
            this.write_data(
                slice,
                std::slice::from_ref(run),
                input,
                vec![Arc::new(AtomicU64::new(0))],
            )
        })
        .await
    }

    /// Checks that the builder names exactly the slice the table needs.
    fn slice(&self) -> Result<Slice> {
        let table = self.table;
        let invalid = |reason: String| Error::InvalidSlice {
            table: table.name,
            reason,
        };
        let client = match (table.client_scoped, &self.client) {
            (true, None) => return Err(invalid("a client is required".to_owned())),
            (true, Some(c)) if c.is_empty() => {
                return Err(invalid("the client id is empty".to_owned()));
            }
            (false, Some(_)) => {
                return Err(invalid("the table is not per client".to_owned()));
            }
            (_, client) => client.clone(),
        };
        let source = match (table.source_column, &self.source) {
            (Some(column), None) => {
                return Err(invalid(format!(
                    "a value of its source column '{column}' is required"
                )));
            }
            (None, Some(_)) => return Err(invalid("the table has no source column".to_owned())),
            (_, source) => source.clone(),
        };
        if !table.has_date() && !range_keyed(table) {
            return Err(invalid(
                "the table has no date column; it is append-only".to_owned(),
            ));
        }
        let Some((from, to)) = self.date_range else {
            return Err(invalid("a date range is required".to_owned()));
        };
        if from > to {
            return Err(invalid(format!("the date range {from}..{to} is empty")));
        }
        Ok(Slice {
            table,
            client,
            sources: source.into_iter().collect(),
            dates: (from, to),
        })
    }

    /// Runs the Delta transaction; returns the version it produced. Each
    /// batch of `input` is checked against the slice of the run it is
    /// tagged with and counted in that run's `rows_read`.
    async fn write_data<S>(
        &self,
        slice: &Slice,
        runs: &[SourceRun],
        input: S,
        rows_read: Vec<Arc<AtomicU64>>,
    ) -> Result<u64>
    where
        S: Stream<Item = (usize, Result<RecordBatch, DataFusionError>)> + Send + 'static,
    {
        let def = self.table;
        let table = self.warehouse.open_or_create(def).await?;
        let (from, to) = slice.dates;
        let run_ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
        let metadata = vec![
            (RUN_ID_METADATA_KEY.to_owned(), one_or_many(&run_ids)),
            ("adlake.trigger".to_owned(), json!(self.trigger.as_str())),
            ("adlake.client_id".to_owned(), json!(slice.client)),
            (
                "adlake.source".to_owned(),
                if slice.sources.is_empty() {
                    serde_json::Value::Null
                } else {
                    one_or_many(&slice.sources)
                },
            ),
            ("adlake.date_from".to_owned(), json!(from.to_string())),
            ("adlake.date_to".to_owned(), json!(to.to_string())),
        ];
        let parts: Vec<Slice> = runs.iter().map(|r| r.slice.clone()).collect();
        let check = move |(n, item): (usize, Result<RecordBatch, DataFusionError>)| {
            let part = parts.get(n).ok_or_else(|| Error::Input {
                table: def.name,
                message: format!("batch of unknown run {n}"),
            })?;
            let batch = item.map_err(|e| Error::Input {
                table: def.name,
                message: e.to_string(),
            })?;
            rows_read[n].fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            part.check(batch)
        };

        if replace::applies(&table, def) {
            let checked = input.map(check);
            let txns = runs.iter().map(|r| run_transaction(&r.run_id)).collect();
            let table =
                replace::replace(&table, slice, checked, metadata, txns, self.buffer).await?;
            self.warehouse.remember(def, &table);
            return Ok(table.version().unwrap_or_default());
        }

        // Other tables are written by delta-rs's own operation, which
        // retries a commit that does not conflict. The input is read once,
        // so one that does conflict fails the write as a lost race
        // ([`crate::lake::commit::lost_race`]): `replace_only`, whose rows
        // are in memory, plans it again; a streamed write commits nothing
        // and its run is recorded failed, and running it again is safe.
        //
        // Errors found in the stream travel through DataFusion and delta-rs
        // as strings; the typed error waits here to be returned instead.
        let first_error: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
        let checked = {
            let first_error = Arc::clone(&first_error);
            input.map(move |item| {
                check(item).map_err(|err| {
                    let message = err.to_string();
                    let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                    slot.get_or_insert(err);
                    DataFusionError::Execution(message)
                })
            })
        };
        let plan = input_plan(
            def.schema(),
            Box::pin(RecordBatchStreamAdapter::new(def.schema(), checked)),
        )?;

        let result = table
            .write(Vec::<RecordBatch>::new())
            .with_input_plan(plan)
            .with_save_mode(SaveMode::Overwrite)
            .with_replace_where(slice.predicate())
            .with_partition_columns(def.partition_columns.iter().copied())
            .with_commit_properties(
                CommitProperties::default()
                    .with_metadata(metadata)
                    .with_application_transactions(
                        runs.iter().map(|r| run_transaction(&r.run_id)).collect(),
                    ),
            )
            .await;
        let stashed = first_error.lock().unwrap_or_else(|p| p.into_inner()).take();
        match (result, stashed) {
            (_, Some(err)) => Err(err),
            (Err(err), None) => Err(Error::delta(def.name, err)),
            (Ok(table), None) => {
                self.warehouse.remember(def, &table);
                Ok(table.version().unwrap_or_default())
            }
        }
    }
}

/// One source's batches in a write of several sources
/// ([`WriteSliceBuilder::execute_sources`]).
#[derive(Debug, Clone)]
pub struct SourceBatches<I> {
    /// The value of the table's source column, e.g. `google_ads`.
    pub source: String,
    /// The run id, as in the rows' `_run_id`.
    pub run_id: String,
    /// The source's rows.
    pub batches: I,
}

/// One run of a write: its part of the slice and its run record's fields.
#[derive(Debug, Clone)]
struct SourceRun {
    slice: Slice,
    run_id: String,
    run_source: String,
    rows_quarantined: u64,
    source_request_ids: Vec<String>,
    calls: Option<CallCounts>,
}

/// The rows one write owns.
#[derive(Debug, Clone)]
struct Slice {
    table: &'static TableDef,
    client: Option<String>,
    /// The values of the table's source column the slice covers: one for
    /// a run, several for a write of several sources, none when the table
    /// has no source column.
    sources: Vec<String>,
    dates: (NaiveDate, NaiveDate),
}

impl fmt::Display for Slice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(client) = &self.client {
            write!(f, "client '{client}', ")?;
        }
        if let Some(column) = self.table.source_column {
            match self.sources.as_slice() {
                [] => {}
                [source] => write!(f, "{column} '{source}', ")?,
                many => write!(f, "{column} in ('{}'), ", many.join("', '"))?,
            }
        }
        write!(f, "dates {} to {}", self.dates.0, self.dates.1)
    }
}

impl Slice {
    /// The `replaceWhere` predicate: exactly the rows of this slice.
    fn predicate(&self) -> Expr {
        let date = |d: NaiveDate| lit(ScalarValue::Date32(Some(date_to_epoch_day(d))));
        let mut predicate = if range_keyed(self.table) {
            // Every run whose requested range the new one covers.
            ident(DATE_FROM)
                .gt_eq(date(self.dates.0))
                .and(ident(DATE_TO).lt_eq(date(self.dates.1)))
        } else {
            ident(DATE)
                .gt_eq(date(self.dates.0))
                .and(ident(DATE).lt_eq(date(self.dates.1)))
        };
        if let Some(client) = &self.client {
            predicate = ident(CLIENT_ID).eq(lit(client.as_str())).and(predicate);
        }
        if let Some(column) = self.table.source_column {
            match self.sources.as_slice() {
                [] => {}
                [source] => predicate = predicate.and(ident(column).eq(lit(source.as_str()))),
                many => {
                    let list = many.iter().map(|s| lit(s.as_str())).collect();
                    predicate = predicate.and(ident(column).in_list(list, false));
                }
            }
        }
        predicate
    }

    /// The part of this slice that is `source`'s.
    fn only(&self, source: &str) -> Self {
        Self {
            sources: vec![source.to_owned()],
            ..self.clone()
        }
    }

    /// Checks a batch's schema and that each of its rows is in the slice;
    /// returns the batch with the table's exact schema.
    fn check(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let def = self.table;
        let expected = def.schema();
        let actual = batch.schema();
        if actual.fields().len() != expected.fields().len() {
            return Err(Error::SchemaMismatch {
                table: def.name,
                detail: format!(
                    "{} columns instead of {}",
                    actual.fields().len(),
                    expected.fields().len()
                ),
            });
        }
        for (want, got) in expected.fields().iter().zip(actual.fields()) {
            if want.name() != got.name()
                || want.data_type() != got.data_type()
                || want.is_nullable() != got.is_nullable()
            {
                return Err(Error::SchemaMismatch {
                    table: def.name,
                    detail: format!("expected column {want:?}, got {got:?}"),
                });
            }
        }

        let clients = self.client.as_ref().and(string_column(&batch, CLIENT_ID));
        let sources = self
            .table
            .source_column
            .filter(|_| !self.sources.is_empty())
            .and_then(|column| string_column(&batch, column));
        let dates = batch
            .column_by_name(DATE)
            .map(|c| c.as_primitive::<Date32Type>());
        let ranges = if range_keyed(def) {
            batch
                .column_by_name(DATE_FROM)
                .zip(batch.column_by_name(DATE_TO))
                .map(|(f, t)| {
                    (
                        f.as_primitive::<Date32Type>(),
                        t.as_primitive::<Date32Type>(),
                    )
                })
        } else {
            None
        };
        let (from, to) = (
            date_to_epoch_day(self.dates.0),
            date_to_epoch_day(self.dates.1),
        );

        for row in 0..batch.num_rows() {
            let client_ok = match (clients, &self.client) {
                (Some(col), Some(want)) => col.is_valid(row) && col.value(row) == want,
                _ => true,
            };
            let source_ok = sources.is_none_or(|col| {
                col.is_valid(row) && self.sources.iter().any(|s| s == col.value(row))
            });
            let date_ok =
                dates.is_none_or(|col| col.is_valid(row) && (from..=to).contains(&col.value(row)));
            let range_ok = ranges.is_none_or(|(f, t)| {
                f.is_valid(row) && t.is_valid(row) && f.value(row) >= from && t.value(row) <= to
            });
            if !(client_ok && source_ok && date_ok && range_ok) {
                return Err(Error::RowOutsideSlice {
                    table: def.name,
                    row: describe_row(
                        clients,
                        sources.map(|s| (self.table.source_column, s)),
                        dates,
                        row,
                    ),
                    slice: self.to_string(),
                });
            }
        }
        Ok(RecordBatch::try_new(expected, batch.columns().to_vec())?)
    }
}

fn string_column<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a StringArray> {
    batch.column_by_name(name).map(|c| c.as_string::<i32>())
}

fn describe_row(
    clients: Option<&StringArray>,
    sources: Option<(Option<&str>, &StringArray)>,
    dates: Option<&Date32Array>,
    row: usize,
) -> String {
    let text = |col: &StringArray| {
        if col.is_valid(row) {
            format!("'{}'", col.value(row))
        } else {
            "null".to_owned()
        }
    };
    let mut parts = Vec::new();
    if let Some(col) = clients {
        parts.push(format!("client {}", text(col)));
    }
    if let Some((Some(name), col)) = sources {
        parts.push(format!("{name} {}", text(col)));
    }
    if let Some(col) = dates {
        let date = if col.is_valid(row) {
            epoch_day_to_date(col.value(row))
                .map_or_else(|| col.value(row).to_string(), |d| d.to_string())
        } else {
            "null".to_owned()
        };
        parts.push(format!("date {date}"));
    }
    format!("row {row} ({})", parts.join(", "))
}

/// A partition that hands out its stream once: the input of a write is
/// consumed as it is written, never collected.
struct OnceStream {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl fmt::Debug for OnceStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnceStream").finish_non_exhaustive()
    }
}

impl PartitionStream for OnceStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().unwrap_or_else(|p| p.into_inner()).take();
        taken.unwrap_or_else(|| {
            Box::pin(RecordBatchStreamAdapter::new(
                Arc::clone(&self.schema),
                futures::stream::once(async {
                    Err(DataFusionError::Execution(
                        "the input of a slice write can only be read once".to_owned(),
                    ))
                }),
            ))
        })
    }
}

/// A logical plan that scans `stream` once.
fn input_plan(schema: SchemaRef, stream: SendableRecordBatchStream) -> Result<LogicalPlan> {
    let partition = OnceStream {
        schema: Arc::clone(&schema),
        stream: Mutex::new(Some(stream)),
    };
    let table = StreamingTable::try_new(schema, vec![Arc::new(partition)])?;
    Ok(
        LogicalPlanBuilder::scan("slice_input", provider_as_source(Arc::new(table)), None)?
            .build()?,
    )
}

/// Runs a batch iterator on a blocking thread and streams its batches; a
/// panic in the iterator becomes an error rather than a short input.
fn iterator_stream<T, I>(
    batches: I,
) -> impl Stream<Item = Result<T, DataFusionError>> + Send + 'static
where
    T: Send + 'static,
    I: Iterator<Item = T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<T>(INPUT_BUFFER_BATCHES);
    let producer = tokio::task::spawn_blocking(move || {
        for batch in batches {
            if tx.blocking_send(batch).is_err() {
                // The writer stopped (it failed); stop generating.
                break;
            }
        }
    });
    futures::stream::unfold((rx, Some(producer)), |(mut rx, producer)| async move {
        if let Some(batch) = rx.recv().await {
            return Some((Ok(batch), (rx, producer)));
        }
        let producer = producer?;
        match producer.await {
            Ok(()) => None,
            Err(join) => Some((
                Err(DataFusionError::Execution(format!(
                    "the batch generator failed: {join}"
                ))),
                (rx, None),
            )),
        }
    })
}

mod replace;

#[cfg(test)]
mod tests;
