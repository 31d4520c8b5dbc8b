//! From a number back to the API call: the lineage of one client's rows of
//! a day (`adlake-ingest lineage`).
//!
//! Every fact row carries `_run_id` (the ingest run that wrote it) and
//! `_source` (the connector and API version); the run's `ingest_runs` row
//! holds the Delta version it committed, its trigger and times, and the
//! request ids the platform gave each API call of the run. A trace groups
//! the selected rows by run and connector and joins each run's record, so a
//! served number (a day's spend of one client on one platform, a campaign's)
//! names the calls it came from. The same join as SQL, over Flight SQL, is
//! in `docs/runbook.md` ("Trace a number").

use std::collections::BTreeMap;

use adlake_engine::schema::{
    AD_PERFORMANCE, CLIENT_ID, DATE, INGEST_RUNS, LINEAGE_RUN_ID, LINEAGE_SOURCE, TableDef,
};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use chrono::NaiveDate;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::prelude::{SessionContext, cast, col, lit};
use datafusion::scalar::ScalarValue;
use serde::Serialize;

use crate::dates::date_to_epoch_day;
use crate::error::{Error, Result};
use crate::lake::warehouse::Warehouse;

/// Which rows to trace.
#[derive(Debug, Clone)]
pub struct LineageQuery {
    /// The fact table (`ad_performance`, `web_sessions`, `orders`).
    pub table: &'static TableDef,
    /// The client.
    pub client: String,
    /// The day.
    pub date: NaiveDate,
    /// The platform (`ad_performance` only).
    pub platform: Option<String>,
    /// The campaign (`ad_performance` only).
    pub campaign: Option<String>,
}

/// The rows of one run and connector, with the run's record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    /// The run that wrote the rows.
    pub run_id: String,
    /// The connector and API version (`_source`).
    pub connector: String,
    /// Rows selected.
    pub rows: u64,
    /// Their spend, as a decimal string (`ad_performance` only).
    pub spend: Option<String>,
    /// The run's record; `None` when `ingest_runs` has none (which I4
    /// forbids: reported, not hidden).
    pub run: Option<RunInfo>,
}

/// A run's record in `ingest_runs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    /// The source of the run (`tiktok_ads`, `ga4`, …).
    pub source: String,
    /// Why it ran.
    pub trigger: String,
    /// Its outcome.
    pub status: String,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// When it finished (RFC 3339, UTC).
    pub finished_at: String,
    /// The Delta version of the table it committed.
    pub table_version: Option<i64>,
    /// The platform's request id of each API call (`file:PATH` for files).
    pub request_ids: Vec<String>,
}

fn text_column(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let column = batch.column_by_name(name).ok_or_else(|| Error::Input {
        table: "ingest_runs",
        message: format!("no column {name}"),
    })?;
    let cast = arrow::compute::cast(column, &DataType::Utf8)?;
    let strings = cast.as_string::<i32>();
    Ok((0..strings.len())
        .map(|i| (!strings.is_null(i)).then(|| strings.value(i).to_owned()))
        .collect())
}

/// Traces the selected rows to their runs, newest run first.
pub async fn trace(warehouse: &Warehouse, q: &LineageQuery) -> Result<Vec<Trace>> {
    let ad = q.table.name == AD_PERFORMANCE.name;
    if !ad && (q.platform.is_some() || q.campaign.is_some()) {
        return Err(Error::Usage(format!(
            "--platform and --campaign select ad_performance rows; {} has neither",
            q.table.name
        )));
    }
    let table = warehouse.open_table(q.table).await?;
    if table.version().is_none() {
        return Ok(Vec::new());
    }
    let ctx = SessionContext::new();
    let day = lit(ScalarValue::Date32(Some(date_to_epoch_day(q.date))));
    let mut rows = ctx.read_table(table.table_provider().await?)?.filter(
        col(CLIENT_ID)
            .eq(lit(q.client.as_str()))
            .and(col(DATE).eq(day)),
    )?;
    if let Some(p) = &q.platform {
        rows = rows.filter(col("platform").eq(lit(p.as_str())))?;
    }
    if let Some(c) = &q.campaign {
        rows = rows.filter(col("campaign_id").eq(lit(c.as_str())))?;
    }
    let mut aggregates = vec![count(lit(1)).alias("rows")];
    if ad {
        aggregates.push(cast(sum(col("spend")), DataType::Utf8).alias("spend"));
    }
    let groups = rows
        .aggregate(vec![col(LINEAGE_RUN_ID), col(LINEAGE_SOURCE)], aggregates)?
        .collect()
        .await?;
    let mut traces = Vec::new();
    for b in &groups {
        let runs = text_column(b, LINEAGE_RUN_ID)?;
        let sources = text_column(b, LINEAGE_SOURCE)?;
        let spend = if ad {
            text_column(b, "spend")?
        } else {
            vec![None; b.num_rows()]
        };
        let counts = b
            .column_by_name("rows")
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .cloned();
        for i in 0..b.num_rows() {
            traces.push(Trace {
                run_id: runs[i].clone().unwrap_or_default(),
                connector: sources[i].clone().unwrap_or_default(),
                rows: counts
                    .as_ref()
                    .map_or(0, |c| u64::try_from(c.value(i)).unwrap_or(0)),
                spend: spend[i].clone(),
                run: None,
            });
        }
    }
    let records = runs_of(warehouse, &ctx, q, &traces).await?;
    for t in &mut traces {
        t.run = records.get(&t.run_id).cloned();
    }
    traces.sort_by(|a, b| {
        let at = |t: &Trace| t.run.as_ref().map(|r| r.finished_at.clone());
        at(b).cmp(&at(a)).then_with(|| a.run_id.cmp(&b.run_id))
    });
    Ok(traces)
}

/// The finished record of each traced run.
async fn runs_of(
    warehouse: &Warehouse,
    ctx: &SessionContext,
    q: &LineageQuery,
    traces: &[Trace],
) -> Result<BTreeMap<String, RunInfo>> {
    let mut out = BTreeMap::new();
    if traces.is_empty() {
        return Ok(out);
    }
    let table = warehouse.open_table(&INGEST_RUNS).await?;
    if table.version().is_none() {
        return Ok(out);
    }
    let ids = traces
        .iter()
        .map(|t| lit(t.run_id.as_str()))
        .collect::<Vec<_>>();
    let batches = ctx
        .read_table(table.table_provider().await?)?
        .filter(
            col(CLIENT_ID)
                .eq(lit(q.client.as_str()))
                .and(col("run_id").in_list(ids, false)),
        )?
        .collect()
        .await?;
    for b in &batches {
        let run_ids = text_column(b, "run_id")?;
        let sources = text_column(b, "source")?;
        let triggers = text_column(b, "trigger")?;
        let statuses = text_column(b, "status")?;
        let started = text_column(b, "started_at")?;
        let finished = text_column(b, "finished_at")?;
        let versions = b
            .column_by_name("table_version")
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .cloned();
        let requests = b
            .column_by_name("source_request_ids")
            .and_then(|c| c.as_list_opt::<i32>())
            .cloned();
        for i in 0..b.num_rows() {
            let Some(run_id) = run_ids[i].clone() else {
                continue;
            };
            let request_ids = match &requests {
                Some(list) if !list.is_null(i) => {
                    let one = list.value(i);
                    let cast = arrow::compute::cast(&one, &DataType::Utf8)?;
                    let s = cast.as_string::<i32>();
                    (0..s.len())
                        .filter(|j| !s.is_null(*j))
                        .map(|j| s.value(j).to_owned())
                        .collect()
                }
                _ => Vec::new(),
            };
            let info = RunInfo {
                source: sources[i].clone().unwrap_or_default(),
                trigger: triggers[i].clone().unwrap_or_default(),
                status: statuses[i].clone().unwrap_or_default(),
                started_at: started[i].clone().unwrap_or_default(),
                finished_at: finished[i].clone().unwrap_or_default(),
                table_version: versions
                    .as_ref()
                    .and_then(|v| (!v.is_null(i)).then(|| v.value(i))),
                request_ids,
            };
            // A run recorded when it starts and again when it finishes:
            // the finished record is the one that explains the rows.
            let keep = match out.get(&run_id) {
                Some(RunInfo { status, .. }) => status == "started",
                None => true,
            };
            if keep {
                out.insert(run_id, info);
            }
        }
    }
    Ok(out)
}

/// Prints traces as text.
pub fn print(q: &LineageQuery, traces: &[Trace]) {
    let mut what = format!("{} of client {} on {}", q.table.name, q.client, q.date);
    if let Some(p) = &q.platform {
        what.push_str(&format!(", platform {p}"));
    }
    if let Some(c) = &q.campaign {
        what.push_str(&format!(", campaign {c}"));
    }
    if traces.is_empty() {
        println!("no rows: {what}");
        return;
    }
    println!("{what}");
    for t in traces {
        let spend = t
            .spend
            .as_ref()
            .map(|s| format!("  spend {s}"))
            .unwrap_or_default();
        println!(
            "run {}  connector {}  rows {}{spend}",
            t.run_id, t.connector, t.rows
        );
        match &t.run {
            Some(r) => {
                println!(
                    "  {} run of {}, {}, {} .. {}, Delta version {}",
                    r.trigger,
                    r.source,
                    r.status,
                    r.started_at,
                    r.finished_at,
                    r.table_version
                        .map_or_else(|| "-".to_owned(), |v| v.to_string())
                );
                if r.request_ids.is_empty() {
                    println!("  no API request ids (synthetic data)");
                }
                for id in &r.request_ids {
                    println!("  request {id}");
                }
            }
            None => println!("  NO RECORD in ingest_runs for this run"),
        }
    }
}
