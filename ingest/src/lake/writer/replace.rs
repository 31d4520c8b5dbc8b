//! Slice writes that find the files they replace themselves.
//!
//! delta-rs's `replaceWhere` finds the files a predicate touches by running
//! a scan over the whole snapshot, which evaluates the predicate against
//! the statistics of every file of the table, parsed from JSON each time.
//! A year of 50 clients is 70,000 files, and a slice write became slower
//! the larger the table grew. For the tables partitioned by client and
//! date a slice's files are known from their partition values: only
//! those are looked at, and only their statistics are read, to tell the
//! slice's source (the platform of `ad_performance`) from the others.
//!
//! A file of the slice's partitions is
//! - removed when its statistics show only the slice's source,
//! - kept when they show that source is not in it,
//! - otherwise read (files compaction merged hold several platforms): the
//!   rows of other sources are written to a new file that replaces it.
//!
//! New rows are written per partition with delta-rs's `DeltaWriter`, and
//! the removes and adds are committed as the same `WRITE` (overwrite with
//! the slice's predicate) delta-rs commits, so conflict checking against
//! concurrent writers and compaction is unchanged.
//!
//! Only plain tables take this path (writer protocol 2 at most, so no
//! change data feed, constraints, generated columns, column mapping or
//! deletion vectors, not append-only, schema and partitioning as
//! defined); any other table is written by delta-rs's own operation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use adlake_engine::schema::{CLIENT_ID, DATE, TableDef};
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use chrono::NaiveDate;
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::delta_datafusion::expr::fmt_expr_to_sql;
use deltalake::kernel::Transaction;
use deltalake::kernel::scalars::ScalarExt;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Remove};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::table::config::TablePropertiesExt as _;
use deltalake::{DeltaResult, DeltaTable, DeltaTableError, ObjectStore};
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use indexmap::IndexMap;
use object_store::path::Path;
use serde_json::{Value, json};
use tracing::debug;

use super::Slice;
use crate::error::{Error, Result};
use crate::lake::commit::{DEFAULT_ATTEMPTS, commit_with_retry};
use crate::lake::files::{FileSettings, conform, delete_added, file_schema, read_data_file};

/// Delta truncates string statistics to this many characters; a value at
/// least this long cannot be told from its prefix.
const STATS_STRING_PREFIX: usize = 32;

/// Whether slices of `def` in `table` are written by [`replace`].
pub(super) fn applies(table: &DeltaTable, def: &TableDef) -> bool {
    if def.partition_columns != [CLIENT_ID, DATE] || !def.client_scoped {
        return false;
    }
    let Ok(snapshot) = table.snapshot() else {
        return false;
    };
    let writer_version = serde_json::to_value(snapshot.protocol())
        .ok()
        .and_then(|p| p.get("minWriterVersion").and_then(Value::as_i64));
    if writer_version.is_none_or(|v| v > 2) {
        return false;
    }
    let properties = snapshot.snapshot().table_properties();
    if properties.append_only() || properties.enable_change_data_feed() {
        return false;
    }
    let partitioned_by = snapshot.metadata().partition_columns();
    if !partitioned_by.iter().eq(def.partition_columns.iter()) {
        return false;
    }
    let actual = snapshot.snapshot().arrow_schema();
    let expected = def.schema();
    actual.fields().len() == expected.fields().len()
        && expected
            .fields()
            .iter()
            .zip(actual.fields())
            .all(|(want, got)| {
                want.name() == got.name()
                    && want.is_nullable() == got.is_nullable()
                    && same_type(want.data_type(), got.data_type())
                    && !got.metadata().contains_key("delta.invariants")
            })
}

/// Types equal up to the name Delta gives list items.
fn same_type(a: &arrow::datatypes::DataType, b: &arrow::datatypes::DataType) -> bool {
    use arrow::datatypes::DataType;
    match (a, b) {
        (DataType::List(a), DataType::List(b)) => same_type(a.data_type(), b.data_type()),
        _ => a == b,
    }
}

/// What a slice write does with one existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// None of its rows are in the slice.
    Keep,
    /// All of its rows are in the slice.
    Remove,
    /// Some may be: read it and keep the rows of other sources.
    Rewrite,
}

/// A file of the slice's partitions that the write removes or rewrites.
pub(super) struct Touched {
    pub(super) path: Path,
    size: u64,
    remove: Remove,
    pub(super) fate: Fate,
}

/// The fate of a file of the slice's partitions, from its statistics on
/// the source column, for a slice of `sources`.
fn fate_from_stats(stats: Option<&str>, column: &str, sources: &[String]) -> Fate {
    let Some(stats) = stats.and_then(|s| serde_json::from_str::<Value>(s).ok()) else {
        return Fate::Rewrite;
    };
    let text = |group: &str| stats.get(group)?.get(column)?.as_str().map(str::to_owned);
    let nulls = stats
        .get("nullCount")
        .and_then(|n| n.get(column))
        .and_then(Value::as_i64);
    let (Some(min), Some(max)) = (text("minValues"), text("maxValues")) else {
        // No values: every row is null there (or there are no statistics).
        return if stats.get("numRecords").and_then(Value::as_i64) == nulls && nulls.is_some() {
            Fate::Keep
        } else {
            Fate::Rewrite
        };
    };
    let exact = |v: &str| v.chars().count() < STATS_STRING_PREFIX;
    // A truncated minimum is a prefix, never above the true one.
    let outside = |source: &str| source < min.as_str() || (exact(&max) && source > max.as_str());
    if sources.iter().all(|s| outside(s)) {
        return Fate::Keep;
    }
    if min == max && exact(&min) && nulls == Some(0) && sources.contains(&min) {
        return Fate::Remove;
    }
    Fate::Rewrite
}

/// The files of `slice`'s partitions and what becomes of each.
pub(super) fn touched_files(table: &DeltaTable, slice: &Slice) -> DeltaResult<Vec<Touched>> {
    let snapshot = table.snapshot()?;
    let (from, to) = slice.dates;
    let client = slice.client.as_deref();
    let source = slice
        .table
        .source_column
        .filter(|_| !slice.sources.is_empty());
    let mut touched = Vec::new();
    for file in snapshot.log_data().iter() {
        let partition = file.partition_values_map();
        let in_client = partition.get(CLIENT_ID).map(Option::as_deref) == Some(client);
        if !in_client {
            continue;
        }
        let in_dates = partition
            .get(DATE)
            .and_then(Option::as_deref)
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .is_some_and(|d| (from..=to).contains(&d));
        if !in_dates {
            continue;
        }
        let fate = match source {
            Some(column) => fate_from_stats(file.stats().as_deref(), column, &slice.sources),
            None => Fate::Remove,
        };
        if fate == Fate::Keep {
            continue;
        }
        touched.push(Touched {
            path: file.object_store_path(),
            size: u64::try_from(file.size()).unwrap_or_default(),
            remove: file.remove_action(true),
            fate,
        });
    }
    Ok(touched)
}

/// Replaces `slice` in `table` with the rows of `input` (already checked
/// to lie in the slice) in one commit; returns the table at the new
/// version. Nothing is committed when the input fails. The files being
/// written hold about `buffer` bytes of Arrow data at most before they are
/// closed (see [`write_lane`]).
pub(super) async fn replace<S>(
    table: &DeltaTable,
    slice: &Slice,
    input: S,
    metadata: Vec<(String, Value)>,
    txns: Vec<Transaction>,
    buffer: usize,
) -> Result<DeltaTable>
where
    S: Stream<Item = Result<RecordBatch>> + Send,
{
    let def = slice.table;
    let delta = |e| Error::delta(def.name, e);
    let started = Instant::now();
    let store = table.log_store().object_store(None);
    let settings = FileSettings::of(table).map_err(delta)?;
    let target = settings.target_size();

    // The new rows, one file per partition (more past the target size),
    // encoded by one writer per core: each date goes to one of them.
    let config = settings.delta_writer_config(
        def.schema(),
        def.partition_columns
            .iter()
            .map(|c| (*c).to_owned())
            .collect(),
        target,
    );
    let lanes = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
    // Each lane keeps the files of its days open until they hold more than
    // its share of the write's buffer, then closes the earliest days: what
    // a write holds does not grow with the slice.
    let lane_buffer = (buffer / lanes).max(1);
    let failed = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::with_capacity(lanes);
    let mut writers = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        let (tx, rx) = tokio::sync::mpsc::channel::<(i32, RecordBatch, usize)>(8);
        writers.push(tokio::spawn(write_lane(
            rx,
            Arc::clone(&store),
            config.clone(),
            def.partition_columns,
            lane_buffer,
            Arc::clone(&failed),
        )));
        senders.push(tx);
    }
    let mut input = std::pin::pin!(input);
    let mut rows_added = 0u64;
    let fed: Result<()> = async {
        while let Some(batch) = input.next().await {
            let batch = batch?;
            rows_added += batch.num_rows() as u64;
            // A day's rows may be a slice of the batch, sharing its buffers:
            // each is counted at its share of the batch's size.
            let row_bytes = batch.get_array_memory_size() / batch.num_rows().max(1);
            for (day, part) in split_by_day(&batch)? {
                let lane = usize::try_from(day.rem_euclid(lanes as i32)).unwrap_or_default();
                let bytes = row_bytes * part.num_rows();
                if senders[lane].send((day, part, bytes)).await.is_err() {
                    // The lane's writer failed: its error is returned below.
                    return Ok(());
                }
            }
        }
        Ok(())
    }
    .await;
    if fed.is_err() {
        failed.store(true, Ordering::Relaxed);
    }
    drop(senders);
    let mut actions: Vec<Action> = Vec::new();
    let mut write_error = None;
    for writer in writers {
        match writer.await {
            Ok((adds, written)) => {
                // Files a lane closed before a failure are deleted below.
                actions.extend(adds.into_iter().map(Action::Add));
                if let Err(err) = written {
                    write_error = write_error.or(Some(delta(err)));
                }
            }
            Err(join) => {
                write_error = write_error.or(Some(Error::Input {
                    table: def.name,
                    message: format!("a file writer stopped: {join}"),
                }));
            }
        }
    }
    if let Some(err) = fed.err().or(write_error) {
        delete_added(&store, &actions).await;
        return Err(err);
    }

    // The new rows' files are written once. The slice's existing files
    // and the commit are planned from the latest snapshot at each attempt:
    // a commit that lost a race (compaction replaced a file it removes)
    // finds the files that replaced them the next time.
    let added = &actions;
    let store = &store;
    let metadata = &metadata;
    let txns = &txns;
    let committed = commit_with_retry(def.name, DEFAULT_ATTEMPTS, |attempt| async move {
        let mut table = table.clone();
        if attempt > 1 {
            table.update_state().await.map_err(delta)?;
        }
        let mut actions = added.clone();
        let planned = plan_existing(&table, slice, store, &mut actions).await;
        let committed = match planned {
            Ok(()) => {
                commit(
                    &table,
                    slice,
                    &actions,
                    rows_added,
                    started,
                    metadata.clone(),
                    txns.clone(),
                )
                .await
            }
            Err(err) => Err(err),
        };
        if committed.is_err() {
            // The files rewritten for this attempt; the new rows' files
            // wait for the next one.
            delete_added(store, &actions[added.len()..]).await;
        }
        committed
    })
    .await;
    if committed.is_err() {
        delete_added(store, added).await;
    }
    committed
}

/// Adds to `actions` the removes of the files of `slice`'s partitions in
/// `table`'s snapshot and the adds of the rewritten mixed files.
async fn plan_existing(
    table: &DeltaTable,
    slice: &Slice,
    store: &Arc<dyn ObjectStore>,
    actions: &mut Vec<Action>,
) -> Result<()> {
    let def = slice.table;
    let delta = |e| Error::delta(def.name, e);
    let settings = FileSettings::of(table).map_err(delta)?;
    let target = settings.target_size();
    let touched = touched_files(table, slice).map_err(delta)?;
    let files = Rewriter {
        schema: file_schema(table).map_err(delta)?,
        settings,
        target,
    };
    let now = chrono::Utc::now().timestamp_millis();
    for file in touched {
        let mut remove = file.remove.clone();
        remove.deletion_timestamp = Some(now);
        match file.fate {
            Fate::Keep => {}
            Fate::Remove => actions.push(Action::Remove(remove)),
            Fate::Rewrite => {
                if let Some(kept) = rewrite(store, &files, slice, &file).await.map_err(delta)? {
                    actions.push(Action::Remove(remove));
                    actions.extend(kept.into_iter().map(Action::Add));
                }
            }
        }
    }
    Ok(())
}

/// Commits `actions` to `table` as the `WRITE` (overwrite with the slice's
/// predicate) delta-rs commits; returns the table at the new version.
async fn commit(
    table: &DeltaTable,
    slice: &Slice,
    actions: &[Action],
    rows_added: u64,
    started: Instant,
    metadata: Vec<(String, Value)>,
    txns: Vec<Transaction>,
) -> Result<DeltaTable> {
    let def = slice.table;
    let delta = |e| Error::delta(def.name, e);
    let snapshot = table.snapshot().map_err(delta)?.clone();
    let count = |add: bool| {
        actions
            .iter()
            .filter(|a| {
                matches!(
                    (a, add),
                    (Action::Add(_), true) | (Action::Remove(_), false)
                )
            })
            .count()
    };
    let (files_added, files_removed) = (count(true), count(false));
    // `with_metadata` replaces what an earlier call set: one call for all.
    let mut metadata = metadata;
    metadata.push((
        "operationMetrics".to_owned(),
        json!({
            "num_added_files": files_added,
            "num_removed_files": files_removed,
            "num_added_rows": rows_added,
            "execution_time_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }),
    ));
    let properties = CommitProperties::default()
        .with_metadata(metadata)
        .with_application_transactions(txns);
    let operation = DeltaOperation::Write {
        mode: SaveMode::Overwrite,
        partition_by: Some(
            def.partition_columns
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
        ),
        predicate: Some(fmt_expr_to_sql(&slice.predicate()).map_err(delta)?),
    };
    let commit = CommitBuilder::from(properties)
        .with_actions(actions.to_vec())
        .build(Some(&snapshot), table.log_store(), operation)
        .await
        .map_err(delta)?;
    debug!(
        table = def.name,
        version = commit.version(),
        files_added,
        files_removed,
        "slice replaced"
    );
    let mut table = table.clone();
    table.state = Some(commit.snapshot());
    Ok(table)
}

/// Encodes the batches of one lane, each the rows of one day with its
/// size in bytes: a writer (one file) per day, kept open while the open
/// days hold at most `buffer` bytes of Arrow data; past that, the
/// earliest days are closed. Input in date order (generators and
/// backfills send it so, and a write of several sources merges them by
/// date) gives one file per partition; rows of a day that come after its
/// file was closed go to another file. Returns the files written, also
/// when it fails (the caller deletes them), and whether it succeeded.
async fn write_lane(
    mut rx: tokio::sync::mpsc::Receiver<(i32, RecordBatch, usize)>,
    store: Arc<dyn ObjectStore>,
    config: WriterConfig,
    partition_columns: &[&str],
    buffer: usize,
    failed: Arc<AtomicBool>,
) -> (Vec<deltalake::kernel::Add>, DeltaResult<()>) {
    let mut adds = Vec::new();
    // Day → its writer and the bytes it took.
    let mut open: BTreeMap<i32, (DeltaWriter, usize)> = BTreeMap::new();
    let mut held = 0usize;
    let result: DeltaResult<()> = async {
        while let Some((day, batch, bytes)) = rx.recv().await {
            let (writer, taken) = open
                .entry(day)
                .or_insert_with(|| (DeltaWriter::new(Arc::clone(&store), config.clone()), 0));
            // Every row is of the slice's client (checked) and of `day`:
            // the partition is the first row's, and the writer need not
            // group the rows by partition and copy them again.
            let values = partition_columns
                .iter()
                .map(|&name| {
                    batch
                        .column_by_name(name)
                        .and_then(|column| ScalarExt::from_array(column.as_ref(), 0))
                        .map(|value| (name.to_owned(), value))
                        .ok_or_else(|| {
                            DeltaTableError::generic(format!(
                                "no value of partition column '{name}' in a batch to write"
                            ))
                        })
                })
                .collect::<DeltaResult<IndexMap<_, _>>>()?;
            writer.write_partition(batch, &values).await?;
            *taken += bytes;
            held += bytes;
            while held > buffer {
                let Some((_, (writer, taken))) = open.pop_first() else {
                    break;
                };
                held -= taken;
                adds.extend(writer.close().await?);
            }
        }
        if failed.load(Ordering::Relaxed) {
            // The input failed: what is open is abandoned below, what was
            // closed is deleted by the caller.
            return Ok(());
        }
        while let Some((_, (writer, _))) = open.pop_first() {
            adds.extend(writer.close().await?);
        }
        Ok(())
    }
    .await;
    for (_, (writer, _)) in open {
        let _ = writer.abort().await;
    }
    (adds, result)
}

/// Splits a batch into the rows of each day (days since the epoch):
/// slices of it when each day's rows are together, as they are in input
/// in date order. Rows without a date (rejected by then) are one part
/// under the earliest day.
fn split_by_day(batch: &RecordBatch) -> Result<Vec<(i32, RecordBatch)>> {
    let Some(dates) = batch
        .column_by_name(DATE)
        .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Date32Type>())
    else {
        return Ok(vec![(i32::MIN, batch.clone())]);
    };
    let day = |row: usize| {
        if dates.is_null(row) {
            i32::MIN
        } else {
            dates.value(row)
        }
    };
    // Runs of equal days: (day, first row, rows).
    let mut runs: Vec<(i32, usize, usize)> = Vec::new();
    for row in 0..batch.num_rows() {
        let d = day(row);
        match runs.last_mut() {
            Some((last, _, len)) if *last == d => *len += 1,
            _ => runs.push((d, row, 1)),
        }
    }
    let mut days: Vec<i32> = runs.iter().map(|r| r.0).collect();
    days.sort_unstable();
    days.dedup();
    if days.len() == runs.len() {
        return Ok(runs
            .into_iter()
            .map(|(d, start, len)| (d, batch.slice(start, len)))
            .collect());
    }
    let mut parts = Vec::with_capacity(days.len());
    for d in days {
        let mask: BooleanArray = (0..batch.num_rows())
            .map(|row| Some(day(row) == d))
            .collect();
        parts.push((d, filter_record_batch(batch, &mask)?));
    }
    Ok(parts)
}

/// What rewriting a slice's mixed files needs, worked out once per write.
struct Rewriter {
    schema: arrow::datatypes::SchemaRef,
    settings: FileSettings,
    target: std::num::NonZeroU64,
}

/// Reads a file that may hold rows of the slice and of other sources;
/// writes the other sources' rows to a new file in the same partition.
/// `None` when none of its rows are in the slice (the file stays),
/// otherwise the adds that replace it (none when all of them are).
async fn rewrite(
    store: &Arc<dyn ObjectStore>,
    files: &Rewriter,
    slice: &Slice,
    file: &Touched,
) -> DeltaResult<Option<Vec<deltalake::kernel::Add>>> {
    let Some(column) = slice
        .table
        .source_column
        .filter(|_| !slice.sources.is_empty())
    else {
        return Ok(Some(Vec::new()));
    };
    let schema = &files.schema;
    let mut kept = Vec::new();
    let mut matched = 0usize;
    let mut stream = read_data_file(Arc::clone(store), &file.path, file.size).await?;
    while let Some(batch) = stream.try_next().await? {
        let batch = conform(&batch, schema)?;
        let values = batch.column_by_name(column).map(|c| c.as_string::<i32>());
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|row| {
                Some(values.is_none_or(|v| {
                    v.is_null(row) || !slice.sources.iter().any(|s| s == v.value(row))
                }))
            })
            .collect();
        matched += keep.false_count();
        if keep.true_count() > 0 {
            kept.push(filter_record_batch(&batch, &keep)?);
        }
    }
    if matched == 0 {
        return Ok(None);
    }
    if kept.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let parts: Vec<_> = file.path.parts().collect();
    let prefix = Path::from_iter(parts[..parts.len().saturating_sub(1)].iter().cloned());
    let mut writer = files.settings.partition_writer(
        Arc::clone(store),
        Arc::clone(schema),
        &prefix,
        files.target,
    )?;
    for batch in &kept {
        writer.write(batch).await?;
    }
    let mut adds = writer.close().await?;
    for add in &mut adds {
        add.partition_values = file.remove.partition_values.clone().unwrap_or_default();
    }
    Ok(Some(adds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(min: &str, max: &str, nulls: i64) -> String {
        json!({
            "numRecords": 10,
            "minValues": {"platform": min},
            "maxValues": {"platform": max},
            "nullCount": {"platform": nulls},
        })
        .to_string()
    }

    fn days_of(dates: &[Option<i32>]) -> Vec<(i32, Vec<i64>)> {
        use arrow::array::{Date32Array, Int64Array};
        use arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new(DATE, DataType::Date32, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let n = i64::try_from(dates.len()).unwrap();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Date32Array::from(dates.to_vec())),
                Arc::new(Int64Array::from_iter_values(0..n)),
            ],
        )
        .unwrap();
        split_by_day(&batch)
            .unwrap()
            .into_iter()
            .map(|(day, part)| {
                let rows = part.column(1).as_primitive::<arrow::datatypes::Int64Type>();
                (day, rows.values().to_vec())
            })
            .collect()
    }

    #[test]
    fn a_batch_is_split_into_its_days() {
        // In date order: one slice per day, in order.
        assert_eq!(
            days_of(&[Some(-3), Some(20_000), Some(20_000), Some(20_001)]),
            [(-3, vec![0]), (20_000, vec![1, 2]), (20_001, vec![3])]
        );
        // A day in two places: every row once, under its day, days sorted;
        // rows without a date under the earliest.
        assert_eq!(
            days_of(&[Some(20_001), Some(20_000), None, Some(20_001), Some(20_000)]),
            [
                (i32::MIN, vec![2]),
                (20_000, vec![1, 4]),
                (20_001, vec![0, 3])
            ]
        );
        assert_eq!(days_of(&[]), []);
    }

    #[test]
    fn a_file_fate_follows_its_statistics() {
        let meta = ["meta_ads".to_owned()];
        let fate = |s: Option<&str>| fate_from_stats(s, "platform", &meta);
        // Only the slice's platform: removed whole.
        assert_eq!(fate(Some(&stats("meta_ads", "meta_ads", 0))), Fate::Remove);
        // Another platform only, below or above: kept.
        assert_eq!(
            fate(Some(&stats("google_ads", "google_ads", 0))),
            Fate::Keep
        );
        assert_eq!(
            fate(Some(&stats("tiktok_ads", "tiktok_ads", 0))),
            Fate::Keep
        );
        // A compacted file spanning platforms: read.
        assert_eq!(
            fate(Some(&stats("google_ads", "tiktok_ads", 0))),
            Fate::Rewrite
        );
        // The platform's rows plus nulls: read, the nulls stay.
        assert_eq!(fate(Some(&stats("meta_ads", "meta_ads", 2))), Fate::Rewrite);
        // Nothing known: read.
        assert_eq!(fate(None), Fate::Rewrite);
        assert_eq!(fate(Some("not json")), Fate::Rewrite);
        // Every row null: kept.
        let all_null = json!({"numRecords": 4, "nullCount": {"platform": 4}}).to_string();
        assert_eq!(fate(Some(&all_null)), Fate::Keep);
        // A maximum cut at 32 characters may stand for a larger value.
        let long = "m".repeat(STATS_STRING_PREFIX);
        let longer = "m".repeat(STATS_STRING_PREFIX + 1);
        assert_eq!(
            fate_from_stats(Some(&stats("a", &long, 0)), "platform", &[longer]),
            Fate::Rewrite
        );
        // A slice of several sources: a file is kept when none of them can
        // be in it, removed when it holds only one of them.
        let two = ["google_ads".to_owned(), "tiktok_ads".to_owned()];
        let fate2 =
            |min: &str, max: &str| fate_from_stats(Some(&stats(min, max, 0)), "platform", &two);
        assert_eq!(fate2("google_ads", "google_ads"), Fate::Remove);
        assert_eq!(fate2("tiktok_ads", "tiktok_ads"), Fate::Remove);
        assert_eq!(fate2("meta_ads", "meta_ads"), Fate::Keep);
        assert_eq!(fate2("linkedin_ads", "meta_ads"), Fate::Keep);
        assert_eq!(fate2("google_ads", "tiktok_ads"), Fate::Rewrite);
        assert_eq!(fate2("meta_ads", "tiktok_ads"), Fate::Rewrite);
        let long_source = "x".repeat(40);
        assert_eq!(
            fate_from_stats(
                Some(&stats(&long_source[..32], &long_source[..32], 0)),
                "platform",
                std::slice::from_ref(&long_source)
            ),
            Fate::Rewrite
        );
    }
}
