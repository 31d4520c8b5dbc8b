//! Runs that were recorded `started` and never finished: a process killed
//! between its `started` row and its finish row.
//!
//! Whether such a run's data is in is told by its Delta application
//! transaction (`txn`, app id = run id) in the target table: the data
//! commit and the `txn` are one commit. [`reconcile_slice`], called by every
//! job before it runs, finishes the runs of its (client, source): a run
//! whose data is in gets its staged quarantine rows (when their commit is
//! not in yet) and a `succeeded` row; one whose data is not in gets a
//! `failed` row (its slice never changed), or `held` again when it was the
//! confirmation of a held run. Readers that do not write (`freshness`, the
//! server) use [`latest_runs`]: a run is what its latest row says, and a
//! `started` run counts as finished only once its finish is recorded.

use std::collections::HashMap;

use adlake_engine::schema::{INGEST_RUNS, QUARANTINE};
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Date32Type, Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, NaiveDate, Utc};
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{col, lit};
use datafusion::prelude::SessionContext;
use tracing::{info, warn};

use crate::dates::epoch_day_to_date;
use crate::error::Result;
use crate::lake::warehouse::Warehouse;
use crate::lake::writer::{RunRecord, RunStatus, Trigger, append_run, run_committed};

/// One row of `ingest_runs`, as far as reconciling cares.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// The run id.
    pub run_id: String,
    /// The client.
    pub client_id: String,
    /// The source.
    pub source: String,
    /// The trigger (`schedule`, `backfill`, ...).
    pub trigger: String,
    /// Requested range.
    pub date_from: NaiveDate,
    /// Requested range (inclusive).
    pub date_to: NaiveDate,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When the row was recorded (its start for a `started` row).
    pub finished_at: DateTime<Utc>,
    /// The row's status.
    pub status: RunStatus,
    /// The table written.
    pub target_table: String,
    /// Rows written.
    pub rows_written: u64,
    /// Rows quarantined.
    pub rows_quarantined: u64,
    /// The error, or the reason a run was held.
    pub error: Option<String>,
}

/// Every row of `ingest_runs` (none when the table does not exist).
pub async fn run_rows(warehouse: &Warehouse) -> Result<Vec<RunRow>> {
    let Ok(table) = warehouse.open_table(&INGEST_RUNS).await else {
        return Ok(Vec::new());
    };
    if table.version().is_none() {
        return Ok(Vec::new());
    }
    let ctx = SessionContext::new();
    let batches = ctx
        .read_table(table.table_provider().await?)?
        .select_columns(&[
            "run_id",
            "client_id",
            "source",
            "trigger",
            "date_from",
            "date_to",
            "started_at",
            "finished_at",
            "status",
            "target_table",
            "rows_written",
            "rows_quarantined",
            "error",
        ])?
        .collect()
        .await?;
    let mut out = Vec::new();
    for batch in batches {
        let text = |i: usize| arrow::compute::cast(batch.column(i), &DataType::Utf8);
        let (run_id, client, source, trigger, status, target, error) = (
            text(0)?,
            text(1)?,
            text(2)?,
            text(3)?,
            text(8)?,
            text(9)?,
            text(12)?,
        );
        let s = |a: &arrow::array::ArrayRef, i: usize| a.as_string::<i32>().value(i).to_owned();
        let from = batch.column(4).as_primitive::<Date32Type>();
        let to = batch.column(5).as_primitive::<Date32Type>();
        let started = batch.column(6).as_primitive::<TimestampMicrosecondType>();
        let finished = batch.column(7).as_primitive::<TimestampMicrosecondType>();
        let written = batch.column(10).as_primitive::<Int64Type>();
        let quarantined = batch.column(11).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let (Some(date_from), Some(date_to), Some(started_at), Some(finished_at), Ok(st)) = (
                epoch_day_to_date(from.value(i)),
                epoch_day_to_date(to.value(i)),
                DateTime::from_timestamp_micros(started.value(i)),
                DateTime::from_timestamp_micros(finished.value(i)),
                s(&status, i).parse::<RunStatus>(),
            ) else {
                continue;
            };
            out.push(RunRow {
                run_id: s(&run_id, i),
                client_id: s(&client, i),
                source: s(&source, i),
                trigger: s(&trigger, i),
                date_from,
                date_to,
                started_at,
                finished_at,
                status: st,
                target_table: s(&target, i),
                rows_written: u64::try_from(written.value(i)).unwrap_or(0),
                rows_quarantined: u64::try_from(quarantined.value(i)).unwrap_or(0),
                error: error.is_valid(i).then(|| s(&error, i)),
            });
        }
    }
    Ok(out)
}

/// The latest row of each run: the one recorded last, a finish before a
/// `started` row of the same instant.
pub fn latest_runs(rows: Vec<RunRow>) -> HashMap<String, RunRow> {
    let mut latest: HashMap<String, RunRow> = HashMap::new();
    for row in rows {
        let key = |r: &RunRow| (r.finished_at, r.status.is_finish());
        match latest.get(&row.run_id) {
            Some(seen) if key(seen) >= key(&row) => {}
            _ => {
                latest.insert(row.run_id.clone(), row);
            }
        }
    }
    latest
}

/// What reconciling did to one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconciled {
    /// The run id.
    pub run_id: String,
    /// The status recorded for it.
    pub status: RunStatus,
}

/// Finishes every unfinished run of `client`'s `source` (see the module
/// documentation).
///
/// Runs in `running` (this process's, between their rows) are left alone.
/// Another process running the same (client, source) at the same time is
/// not told apart from a killed one: a run it is writing may get a `failed`
/// row, which its own finish row (recorded later) supersedes.
pub async fn reconcile_slice(
    warehouse: &Warehouse,
    client: &str,
    source: &str,
    running: &std::collections::HashSet<String>,
) -> Result<Vec<Reconciled>> {
    let rows = run_rows(warehouse).await?;
    let held_before: std::collections::HashSet<String> = rows
        .iter()
        .filter(|r| r.status == RunStatus::Held)
        .map(|r| r.run_id.clone())
        .collect();
    let mut done = Vec::new();
    let mut unfinished: Vec<RunRow> = latest_runs(rows)
        .into_values()
        .filter(|r| {
            r.status == RunStatus::Started
                && r.client_id == client
                && r.source == source
                && !running.contains(&r.run_id)
        })
        .collect();
    unfinished.sort_by_key(|r| r.started_at);
    for run in unfinished {
        let status = reconcile_run(warehouse, &run, held_before.contains(&run.run_id)).await?;
        done.push(Reconciled {
            run_id: run.run_id,
            status,
        });
    }
    Ok(done)
}

async fn reconcile_run(warehouse: &Warehouse, run: &RunRow, was_held: bool) -> Result<RunStatus> {
    let Some(def) = adlake_engine::schema::table(&run.target_table) else {
        warn!(run_id = %run.run_id, table = %run.target_table, "a started run of an unknown table");
        return Ok(RunStatus::Started);
    };
    let table = warehouse.open_table(def).await?;
    let landed = run_committed(&table, &run.run_id).await?;
    let mut record = RunRecord {
        run_id: run.run_id.clone(),
        client_id: run.client_id.clone(),
        source: run.source.clone(),
        trigger: parse_trigger(&run.trigger),
        date_from: run.date_from,
        date_to: run.date_to,
        started_at: run.started_at,
        finished_at: Utc::now(),
        status: RunStatus::Failed,
        rows_read: 0,
        rows_written: 0,
        rows_quarantined: run.rows_quarantined,
        target_table: run.target_table.clone(),
        table_version: None,
        source_request_ids: Vec::new(),
        error: None,
        calls: None,
    };
    if landed {
        let quarantine = warehouse.open_table(&QUARANTINE).await;
        let quarantined = match &quarantine {
            Ok(q) => run_committed(q, &run.run_id).await?,
            Err(_) => false,
        };
        if !quarantined
            && let Some(batch) =
                crate::lake::staged::quarantine(warehouse, &run.client_id, &run.run_id).await?
        {
            crate::lake::quarantine::replace_quarantine_batch(
                warehouse,
                &run.run_id,
                &run.client_id,
                &run.source,
                (run.date_from, run.date_to),
                batch,
            )
            .await?;
        }
        let rows = rows_of_run(warehouse, def, &run.client_id, &run.run_id).await?;
        record.status = RunStatus::Succeeded;
        record.rows_read = rows;
        record.rows_written = rows;
        record.table_version = table.version();
    } else if was_held {
        record.status = RunStatus::Held;
        record.error = Some(
            "the confirmation was interrupted before its data commit; the run is still held \
             (confirm it again)"
                .to_owned(),
        );
    } else {
        record.error = Some(
            "interrupted before its data commit (found by a later run); the slice is unchanged"
                .to_owned(),
        );
    }
    append_run(warehouse, &record).await?;
    if record.status != RunStatus::Held {
        crate::lake::staged::remove(warehouse, &run.client_id, &run.run_id).await;
    }
    info!(run_id = %run.run_id, status = record.status.as_str(), "reconciled an unfinished run");
    Ok(record.status)
}

/// Rows of `table` that run `run_id` wrote for `client`.
async fn rows_of_run(
    warehouse: &Warehouse,
    def: &'static adlake_engine::schema::TableDef,
    client: &str,
    run_id: &str,
) -> Result<u64> {
    let table = warehouse.open_table(def).await?;
    let ctx = SessionContext::new();
    let batches = ctx
        .read_table(table.table_provider().await?)?
        .filter(
            col(adlake_engine::schema::CLIENT_ID)
                .eq(lit(client))
                .and(col("_run_id").eq(lit(run_id))),
        )?
        .aggregate(vec![], vec![count(lit(1))])?
        .collect()
        .await?;
    Ok(batches.iter().find(|b| b.num_rows() > 0).map_or(0, |b| {
        u64::try_from(b.column(0).as_primitive::<Int64Type>().value(0)).unwrap_or(0)
    }))
}

/// Landings of runs that are `started` only but whose data commit is in
/// (read-only: what `freshness` adds to the finished runs).
pub async fn landed_unfinished(warehouse: &Warehouse) -> Result<Vec<RunRow>> {
    let mut out = Vec::new();
    for run in latest_runs(run_rows(warehouse).await?).into_values() {
        if run.status != RunStatus::Started {
            continue;
        }
        let Some(def) = adlake_engine::schema::table(&run.target_table) else {
            continue;
        };
        let Ok(table) = warehouse.open_table(def).await else {
            continue;
        };
        if run_committed(&table, &run.run_id).await? {
            out.push(run);
        }
    }
    Ok(out)
}

pub(crate) fn parse_trigger(s: &str) -> Trigger {
    [
        Trigger::Schedule,
        Trigger::Backfill,
        Trigger::File,
        Trigger::Push,
        Trigger::Demo,
    ]
    .into_iter()
    .find(|t| t.as_str() == s)
    .unwrap_or(Trigger::Manual)
}
