//! What `ingest_runs` says about the ingest, for the server's `/metrics`:
//! runs, rows and platform calls per source and status.

use std::sync::Arc;

/// Totals of the `ingest_runs` rows of one (source, status).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunTotals {
    /// The source (`google_ads`, `ga4`, ...).
    pub source: String,
    /// `succeeded`, `failed`, ...
    pub status: String,
    /// Runs.
    pub runs: u64,
    /// Rows read from the source.
    pub rows_read: u64,
    /// Rows written.
    pub rows_written: u64,
    /// Rows quarantined.
    pub rows_quarantined: u64,
    /// HTTP requests to the platform.
    pub api_calls: u64,
    /// Attempts after the first of a call.
    pub retries: u64,
    /// Waits for the platform's rate limit.
    pub rate_limit_waits: u64,
    /// Seconds of those waits.
    pub rate_limit_wait_seconds: f64,
    /// Circuit-breaker openings.
    pub breaker_opens: u64,
}

/// Sums `ingest_runs` by source and status. The platform-call columns
/// count as zero where null (runs without platform calls, rows written
/// before the columns existed) or absent (a table of the older layout).
pub async fn run_totals(
    runs: Arc<dyn datafusion::catalog::TableProvider>,
) -> datafusion::error::Result<Vec<RunTotals>> {
    use arrow::array::AsArray as _;
    use arrow::datatypes::{DataType, Float64Type, Int64Type};
    let schema = runs.schema();
    let sum = |column: &str, sql_type: &str| {
        if schema.field_with_name(column).is_ok() {
            format!("CAST(coalesce(sum({column}), 0) AS {sql_type}) AS {column}")
        } else {
            format!("CAST(0 AS {sql_type}) AS {column}")
        }
    };
    // A run has a `started` row and a finish row (and a held run that was
    // confirmed a `held` one before them): it is counted once, under the
    // status of its latest row (a finish before a `started` row of the same
    // instant); `started` counts the runs with no finish recorded (running,
    // or interrupted until the next run of the slice reconciles them), and
    // falls back to 0 when they finish, as `held` does once confirmed.
    // The sums take every row: a `started` row counts nothing.
    let latest = if schema.field_with_name("run_id").is_ok()
        && schema.field_with_name("finished_at").is_ok()
    {
        "CASE WHEN row_number() OVER (PARTITION BY run_id ORDER BY finished_at DESC, \
         CASE WHEN status = 'started' THEN 1 ELSE 0 END) = 1 THEN 1 ELSE 0 END"
    } else {
        "1"
    };
    let sql = format!(
        "SELECT source, status, CAST(sum(latest) AS BIGINT), {}, {}, {}, {}, {}, {}, {}, {} \
         FROM (SELECT *, {latest} AS latest FROM runs) \
         GROUP BY source, status \
         ORDER BY source, status",
        sum("rows_read", "BIGINT"),
        sum("rows_written", "BIGINT"),
        sum("rows_quarantined", "BIGINT"),
        sum("api_calls", "BIGINT"),
        sum("retries", "BIGINT"),
        sum("rate_limit_waits", "BIGINT"),
        sum("rate_limit_wait_seconds", "DOUBLE"),
        sum("breaker_opens", "BIGINT"),
    );
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table("runs", runs)?;
    let batches = ctx.sql(&sql).await?.collect().await?;
    let mut out = Vec::new();
    for batch in batches {
        let source = arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
        let status = arrow::compute::cast(batch.column(1), &DataType::Utf8)?;
        let (source, status) = (source.as_string::<i32>(), status.as_string::<i32>());
        let n = |c: usize, i: usize| {
            u64::try_from(batch.column(c).as_primitive::<Int64Type>().value(i)).unwrap_or(0)
        };
        for i in 0..batch.num_rows() {
            out.push(RunTotals {
                source: source.value(i).to_owned(),
                status: status.value(i).to_owned(),
                runs: n(2, i),
                rows_read: n(3, i),
                rows_written: n(4, i),
                rows_quarantined: n(5, i),
                api_calls: n(6, i),
                retries: n(7, i),
                rate_limit_waits: n(8, i),
                rate_limit_wait_seconds: batch.column(9).as_primitive::<Float64Type>().value(i),
                breaker_opens: n(10, i),
            });
        }
    }
    Ok(out)
}
