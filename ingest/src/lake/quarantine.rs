//! The `quarantine` table: the records runs rejected, with their reason
//! and raw record.
//!
//! The quarantine rows of a run replace those of earlier runs of the same
//! client, source and requested range: re-runs do not pile them up. A
//! table written before the requested-range columns existed is given them
//! once per process, when the warehouse first opens it for writing (see
//! [`crate::lake::layout`]).

use std::sync::Arc;

use adlake_engine::schema::QUARANTINE;
use arrow::array::{ArrayRef, Date32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::{NaiveDate, Utc};

use crate::dates::date_to_epoch_day;
use crate::error::Result;
use crate::lake::warehouse::Warehouse;
use crate::lake::writer::WriteSliceBuilder;
use crate::sources::connectors::Reject;

/// Replaces the quarantine rows of one (client, source, requested range)
/// with `rejects` of run `run_id`, in one Delta transaction: rows of
/// earlier runs of the same client and source whose requested range lies
/// inside `from..=to` are removed, so a re-run leaves each reject once and
/// a clean re-run leaves none. Other clients, sources and ranges are
/// untouched. Returns the version produced.
///
/// It goes through the slice writer (`replaceWhere` overwrite) of the data
/// tables; a commit that loses a race is tried again from the new version
/// (see [`crate::lake::commit`]).
pub async fn replace_quarantine(
    warehouse: &Warehouse,
    run_id: &str,
    client_id: &str,
    source: &str,
    range: (NaiveDate, NaiveDate),
    rejects: &[Reject],
) -> Result<u64> {
    let batch = quarantine_batch(run_id, client_id, source, range, rejects)?;
    replace_quarantine_batch(warehouse, run_id, client_id, source, range, batch).await
}

/// The `quarantine` rows of run `run_id`'s `rejects`.
pub fn quarantine_batch(
    run_id: &str,
    client_id: &str,
    source: &str,
    (from, to): (NaiveDate, NaiveDate),
    rejects: &[Reject],
) -> Result<RecordBatch> {
    let n = rejects.len();
    let now = Utc::now().timestamp_micros();
    let repeat = |s: &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(s, n)))
    };
    let day =
        |d: NaiveDate| -> ArrayRef { Arc::new(Date32Array::from(vec![date_to_epoch_day(d); n])) };
    let columns: Vec<ArrayRef> = vec![
        repeat(run_id),
        repeat(client_id),
        repeat(source),
        Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|r| r.reason.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|r| r.raw.as_str()),
        )),
        day(from),
        day(to),
    ];
    Ok(RecordBatch::try_new(QUARANTINE.schema(), columns)?)
}

/// Replaces the quarantine rows of one (client, source, requested range)
/// with `batch` (of [`quarantine_batch`]), in one commit tagged with the
/// run's `txn`.
pub async fn replace_quarantine_batch(
    warehouse: &Warehouse,
    run_id: &str,
    client_id: &str,
    source: &str,
    range: (NaiveDate, NaiveDate),
    batch: RecordBatch,
) -> Result<u64> {
    WriteSliceBuilder::quarantine_of(warehouse, run_id, client_id, source, range)
        .replace_only(vec![batch])
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, 6, d).unwrap()
    }

    #[tokio::test]
    async fn a_quarantine_table_of_the_old_layout_is_upgraded_and_keeps_its_rows() {
        use arrow::datatypes::Schema;
        use deltalake::protocol::SaveMode;

        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
        // The table as written before it had the requested range.
        let old_schema = Arc::new(Schema::new(QUARANTINE.schema().fields()[..6].to_vec()));
        let text = |s: &str| -> ArrayRef { Arc::new(StringArray::from(vec![s])) };
        let old = RecordBatch::try_new(
            old_schema,
            vec![
                text("old-run"),
                text("c"),
                text("google_ads"),
                Arc::new(TimestampMicrosecondArray::from(vec![0]).with_timezone("UTC")),
                text("old reason"),
                text("{}"),
            ],
        )
        .unwrap();
        wh.open_table(&QUARANTINE)
            .await
            .unwrap()
            .write([old])
            .with_save_mode(SaveMode::ErrorIfExists)
            .await
            .unwrap();
        let reject = |reason: &str| Reject {
            reason: reason.to_owned(),
            raw: "{}".to_owned(),
        };
        // Two runs of the same slice, then one of another source.
        for run in ["run-1", "run-2"] {
            replace_quarantine(
                &wh,
                run,
                "c",
                "google_ads",
                (day(1), day(2)),
                &[reject("r1"), reject("r2")],
            )
            .await
            .unwrap();
        }
        replace_quarantine(
            &wh,
            "run-3",
            "c",
            "meta_ads",
            (day(1), day(2)),
            &[reject("m")],
        )
        .await
        .unwrap();
        let table = wh.open_table(&QUARANTINE).await.unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        table.update_datafusion_session(&ctx.state()).unwrap();
        ctx.register_table("q", table.table_provider().await.unwrap())
            .unwrap();
        let batches = ctx
            .sql(
                "SELECT run_id, source, reason, CAST(date_from AS VARCHAR) AS f, CAST(date_to AS VARCHAR) AS t \
                 FROM q ORDER BY run_id, reason",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        // The old row stays (its range is null: no run replaces it); run-1's
        // rows were replaced by run-2's; meta's slice is apart.
        let expected = [
            "+---------+------------+------------+------------+------------+",
            "| run_id  | source     | reason     | f          | t          |",
            "+---------+------------+------------+------------+------------+",
            "| old-run | google_ads | old reason |            |            |",
            "| run-2   | google_ads | r1         | 2025-06-01 | 2025-06-02 |",
            "| run-2   | google_ads | r2         | 2025-06-01 | 2025-06-02 |",
            "| run-3   | meta_ads   | m          | 2025-06-01 | 2025-06-02 |",
            "+---------+------------+------------+------------+------------+",
        ];
        assert_eq!(text, expected.join("\n"));
    }
}
