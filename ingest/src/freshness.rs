//! The freshness report of a warehouse (`adlake-ingest freshness`): the
//! engine's SLA rule ([`adlake_engine::freshness`]) over the runs recorded
//! in `ingest_runs`, counting also a run left `started` whose data commit
//! is in the table (its `txn`), as the next run will record it.

use chrono::{DateTime, Utc};

pub use adlake_engine::freshness::{
    Freshness, Landing, SLA_HOUR, SlaStatus, TimeZones, compute, load_landings, parse_zone,
};
use adlake_engine::schema::INGEST_RUNS;

use crate::error::Result;
use crate::warehouse::Warehouse;

/// The freshness report of a warehouse as of `now`.
pub async fn report(
    warehouse: &Warehouse,
    zones: &TimeZones,
    now: DateTime<Utc>,
) -> Result<Vec<Freshness>> {
    let table = warehouse.open_table(&INGEST_RUNS).await?;
    if table.version().is_none() {
        return Ok(Vec::new());
    }
    let provider = table.table_provider().await?;
    let mut landings = load_landings(provider, None).await?;
    // A run killed after its data commit and before its finish row has
    // landed: its `txn` is in the table (the next run records its finish).
    for run in crate::reconcile::landed_unfinished(warehouse).await? {
        landings.push(Landing {
            client_id: run.client_id,
            source: run.source,
            table: run.target_table,
            rows_written: run.rows_written,
            date_from: run.date_from,
            date_to: run.date_to,
            finished_at: run.started_at,
        });
    }
    Ok(compute(&landings, zones, now))
}

#[cfg(test)]
mod tests;
