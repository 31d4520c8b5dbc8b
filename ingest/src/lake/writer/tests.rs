use std::sync::Arc;

use adlake_engine::schema::{AD_PERFORMANCE, FX_RATES, INGEST_RUNS, TableDef, WEB_SESSIONS};
use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Decimal128Array, Float64Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{Decimal128Type, Int64Type};
use chrono::Datelike;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;

use super::*;
use crate::lake::lineage::Lineage;
use crate::sources::connectors::Platform;
use crate::synthetic::{SYNTHETIC_SOURCE, Synthetic, SyntheticConfig};

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 1, d).unwrap()
}

/// One `ad_performance` row: (client, platform, day of January, ad, spend in cents).
type AdRow<'a> = (&'a str, &'a str, u32, &'a str, i64);

fn ad_batch(rows: &[AdRow<'_>]) -> RecordBatch {
    let n = rows.len();
    let text = |f: &dyn Fn(&AdRow<'_>) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let constant = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v; n])) };
    let money = |v: Vec<i128>| -> ArrayRef {
        Arc::new(
            Decimal128Array::from(v)
                .with_precision_and_scale(18, 6)
                .unwrap(),
        )
    };
    let columns: Vec<ArrayRef> = vec![
        text(&|r| r.0.to_owned()),
        Arc::new(Date32Array::from_iter_values(
            rows.iter().map(|r| date_to_epoch_day(day(r.2))),
        )),
        text(&|r| r.1.to_owned()),
        constant("123-456-7890"),
        constant("Account"),
        constant("111"),
        constant("Brand | Search | US"),
        constant("222"),
        constant("Brand - Exact"),
        text(&|r| r.3.to_owned()),
        text(&|r| format!("Ad {}", r.3)),
        money(rows.iter().map(|r| i128::from(r.4) * 10_000).collect()),
        Arc::new(Int64Array::from(vec![1_000; n])),
        Arc::new(Int64Array::from(vec![20; n])),
        Arc::new(Float64Array::from(vec![1.5; n])),
        money(vec![5_000_000; n]),
        constant("USD"),
        constant("google"),
        constant("cpc"),
        constant("brand-search-us"),
        text(&|r| r.3.to_owned()),
        Arc::new(StringArray::from(vec![None::<&str>; n])),
        constant("test"),
        constant("run"),
        Arc::new(TimestampMicrosecondArray::from(vec![0; n]).with_timezone("UTC")),
    ];
    RecordBatch::try_new(AD_PERFORMANCE.schema(), columns).unwrap()
}

/// Rows for every day in `days`, two ads per day.
fn slice_rows<'a>(
    client: &'a str,
    platform: &'a str,
    days: std::ops::RangeInclusive<u32>,
    spend: i64,
) -> Vec<AdRow<'a>> {
    days.flat_map(|d| {
        [
            (client, platform, d, "ad-1", spend),
            (client, platform, d, "ad-2", spend + 1),
        ]
    })
    .collect()
}

fn warehouse() -> (tempfile::TempDir, Warehouse) {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
    (dir, warehouse)
}

async fn write_ads(
    warehouse: &Warehouse,
    client: &str,
    platform: &str,
    from: u32,
    to: u32,
    rows: Vec<AdRow<'_>>,
) -> Result<SliceWrite> {
    WriteSliceBuilder::new(warehouse, &AD_PERFORMANCE)
        .with_client(client)
        .with_source(Some(platform))
        .with_date_range(day(from), day(to))
        .execute(vec![ad_batch(&rows)])
        .await
}

/// Reads a table back through DataFusion, the way the engine will.
async fn query(warehouse: &Warehouse, def: &TableDef, sql: &str) -> Vec<RecordBatch> {
    let table = warehouse.open_table(def).await.unwrap();
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).unwrap();
    let provider = table.table_provider().await.unwrap();
    ctx.register_table("t", provider).unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    batches.iter().map(plain_strings).collect()
}

/// Partition columns come back dictionary-encoded and strings may be views;
/// casts both to plain `Utf8` so the assertions read one type.
fn plain_strings(batch: &RecordBatch) -> RecordBatch {
    use arrow::datatypes::{DataType, Field, Schema};
    let is_string = |t: &DataType| match t {
        DataType::Utf8View | DataType::LargeUtf8 => true,
        DataType::Dictionary(_, v) => matches!(**v, DataType::Utf8 | DataType::Utf8View),
        _ => false,
    };
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if is_string(field.data_type()) {
            fields.push(Field::new(
                field.name(),
                DataType::Utf8,
                field.is_nullable(),
            ));
            columns.push(arrow::compute::cast(column, &DataType::Utf8).unwrap());
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns).unwrap()
}

/// (client, platform, date, ad, spend cents) of every row, sorted.
async fn ad_rows(warehouse: &Warehouse) -> Vec<(String, String, NaiveDate, String, i64)> {
    let batches = query(
        warehouse,
        &AD_PERFORMANCE,
        "SELECT client_id, platform, date, ad_id, spend FROM t ORDER BY client_id, platform, date, ad_id",
    )
    .await;
    let mut out = Vec::new();
    for b in batches {
        let s = |i: usize| b.column(i).as_string::<i32>().clone();
        let (client, platform, ad) = (s(0), s(1), s(3));
        let dates = b.column(2).as_primitive::<arrow::datatypes::Date32Type>();
        let spend = b.column(4).as_primitive::<Decimal128Type>();
        for i in 0..b.num_rows() {
            out.push((
                client.value(i).to_owned(),
                platform.value(i).to_owned(),
                epoch_day_to_date(dates.value(i)).unwrap(),
                ad.value(i).to_owned(),
                (spend.value(i) / 10_000) as i64,
            ));
        }
    }
    out
}

async fn version(warehouse: &Warehouse, def: &TableDef) -> Option<u64> {
    warehouse.open_table(def).await.unwrap().version()
}

#[tokio::test]
async fn rewriting_a_slice_replaces_only_that_slice() {
    let (_dir, wh) = warehouse();
    write_ads(
        &wh,
        "a",
        "google_ads",
        1,
        10,
        slice_rows("a", "google_ads", 1..=10, 100),
    )
    .await
    .unwrap();
    write_ads(
        &wh,
        "a",
        "meta_ads",
        1,
        10,
        slice_rows("a", "meta_ads", 1..=10, 200),
    )
    .await
    .unwrap();
    write_ads(
        &wh,
        "b",
        "google_ads",
        1,
        10,
        slice_rows("b", "google_ads", 1..=10, 300),
    )
    .await
    .unwrap();
    let before = ad_rows(&wh).await;
    assert_eq!(before.len(), 60);

    // Days 3–5 restated with different numbers, and one ad fewer on day 4.
    let mut restated = slice_rows("a", "google_ads", 3..=5, 900);
    restated.retain(|r| !(r.2 == 4 && r.3 == "ad-2"));
    write_ads(&wh, "a", "google_ads", 3, 5, restated)
        .await
        .unwrap();

    let after = ad_rows(&wh).await;
    assert_eq!(after.len(), 59);
    for row in &after {
        let (client, platform, date, ad, spend) = row;
        let d = date.day();
        let expected = match (client.as_str(), platform.as_str()) {
            ("a", "google_ads") if (3..=5).contains(&d) => 900,
            ("a", "google_ads") => 100,
            ("a", "meta_ads") => 200,
            ("b", "google_ads") => 300,
            other => panic!("unexpected row {other:?}"),
        } + i64::from(ad == "ad-2");
        assert_eq!(*spend, expected, "{row:?}");
    }
    let untouched = |rows: &[(String, String, NaiveDate, String, i64)]| -> Vec<_> {
        rows.iter()
            .filter(|r| !(r.0 == "a" && r.1 == "google_ads" && (3..=5).contains(&r.2.day())))
            .cloned()
            .collect()
    };
    assert_eq!(untouched(&before), untouched(&after));
}

#[tokio::test]
async fn a_rerun_gives_the_same_table() {
    let (_dir, wh) = warehouse();
    let rows = slice_rows("a", "google_ads", 1..=5, 100);
    let first = write_ads(&wh, "a", "google_ads", 1, 5, rows.clone())
        .await
        .unwrap();
    let content = ad_rows(&wh).await;
    let second = write_ads(&wh, "a", "google_ads", 1, 5, rows).await.unwrap();
    assert_eq!(ad_rows(&wh).await, content);
    assert_eq!(second.version, first.version + 1);
    assert_eq!(second.rows_written, 10);
}

#[tokio::test]
async fn a_failing_input_commits_nothing() {
    let (_dir, wh) = warehouse();
    let previous = write_ads(
        &wh,
        "a",
        "google_ads",
        1,
        5,
        slice_rows("a", "google_ads", 1..=5, 100),
    )
    .await
    .unwrap();
    let content = ad_rows(&wh).await;

    let input = futures::stream::iter(vec![
        Ok(ad_batch(&slice_rows("a", "google_ads", 1..=2, 999))),
        Err(DataFusionError::Execution(
            "platform API timed out".to_owned(),
        )),
        Ok(ad_batch(&slice_rows("a", "google_ads", 3..=5, 999))),
    ]);
    let err = WriteSliceBuilder::new(&wh, &AD_PERFORMANCE)
        .with_client("a")
        .with_source(Some("google_ads"))
        .with_date_range(day(1), day(5))
        .with_run("failing-run")
        .execute_stream(input)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Input { .. }), "{err}");
    assert!(err.to_string().contains("platform API timed out"), "{err}");

    assert_eq!(version(&wh, &AD_PERFORMANCE).await, Some(previous.version));
    assert_eq!(ad_rows(&wh).await, content);

    // The failure is on record, without a version.
    let runs = query(
        &wh,
        &INGEST_RUNS,
        "SELECT status, table_version, error, rows_written FROM t WHERE run_id = 'failing-run'",
    )
    .await;
    assert_eq!(runs.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
    let b = &runs[0];
    assert_eq!(b.column(0).as_string::<i32>().value(0), "failed");
    assert!(b.column(1).is_null(0));
    assert!(
        b.column(2)
            .as_string::<i32>()
            .value(0)
            .contains("timed out")
    );
    assert_eq!(b.column(3).as_primitive::<Int64Type>().value(0), 0);
}

#[tokio::test]
async fn a_panicking_generator_commits_nothing() {
    let (_dir, wh) = warehouse();
    let previous = write_ads(
        &wh,
        "a",
        "google_ads",
        1,
        5,
        slice_rows("a", "google_ads", 1..=5, 100),
    )
    .await
    .unwrap();
    let mut batches = vec![ad_batch(&slice_rows("a", "google_ads", 1..=2, 999))].into_iter();
    let generator = std::iter::from_fn(move || match batches.next() {
        Some(b) => Some(b),
        None => panic!("generator bug"),
    });
    let err = WriteSliceBuilder::new(&wh, &AD_PERFORMANCE)
        .with_client("a")
        .with_source(Some("google_ads"))
        .with_date_range(day(1), day(5))
        .execute(generator)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("generator failed"), "{err}");
    assert_eq!(version(&wh, &AD_PERFORMANCE).await, Some(previous.version));
}

#[tokio::test]
async fn the_run_is_recorded_with_its_version_and_in_the_commit() {
    let (_dir, wh) = warehouse();
    let written = WriteSliceBuilder::new(&wh, &AD_PERFORMANCE)
        .with_client("a")
        .with_source(Some("google_ads"))
        .with_date_range(day(1), day(3))
        .with_run("run-42")
        .with_trigger(Trigger::Backfill)
        .with_source_request_ids(["req-1", "req-2"])
        .execute(vec![ad_batch(&slice_rows("a", "google_ads", 1..=3, 100))])
        .await
        .unwrap();
    assert_eq!(written.run_id, "run-42");
    assert_eq!(written.rows_written, 6);

    let runs = query(
        &wh,
        &INGEST_RUNS,
        "SELECT client_id, source, trigger, date_from, date_to, status, rows_read, rows_written, \
         rows_quarantined, target_table, table_version, source_request_ids, error, started_at <= finished_at \
         FROM t WHERE run_id = 'run-42'",
    )
    .await;
    assert_eq!(runs.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
    let b = &runs[0];
    let s = |i: usize| b.column(i).as_string::<i32>().value(0).to_owned();
    let n = |i: usize| b.column(i).as_primitive::<Int64Type>().value(0);
    assert_eq!(
        (s(0), s(1), s(2), s(5), s(9)),
        (
            "a".to_owned(),
            "google_ads".to_owned(),
            "backfill".to_owned(),
            "succeeded".to_owned(),
            "ad_performance".to_owned()
        )
    );
    let date = |i: usize| {
        epoch_day_to_date(
            b.column(i)
                .as_primitive::<arrow::datatypes::Date32Type>()
                .value(0),
        )
        .unwrap()
    };
    assert_eq!((date(3), date(4)), (day(1), day(3)));
    assert_eq!((n(6), n(7), n(8)), (6, 6, 0));
    assert_eq!(n(10), written.version as i64);
    let ids = b.column(11).as_list::<i32>().value(0);
    let ids = arrow::compute::cast(&ids, &arrow::datatypes::DataType::Utf8).unwrap();
    let ids: Vec<_> = ids.as_string::<i32>().iter().flatten().collect();
    assert_eq!(ids, ["req-1", "req-2"]);
    assert!(b.column(12).is_null(0));
    assert!(b.column(13).as_boolean().value(0));

    // The commit itself names the run.
    let table = wh.open_table(&AD_PERFORMANCE).await.unwrap();
    let history: Vec<_> = table.history(Some(1)).try_collect().await.unwrap();
    assert_eq!(
        history[0].info.get(RUN_ID_METADATA_KEY),
        Some(&json!("run-42"))
    );
    assert_eq!(table.version(), Some(written.version));
    let runs_table = wh.open_table(&INGEST_RUNS).await.unwrap();
    assert_eq!(runs_table.version(), Some(written.runs_version));
}

#[tokio::test]
async fn rows_outside_the_slice_are_rejected_and_nothing_is_committed() {
    let (_dir, wh) = warehouse();
    let previous = write_ads(
        &wh,
        "a",
        "google_ads",
        1,
        5,
        slice_rows("a", "google_ads", 1..=5, 100),
    )
    .await
    .unwrap();

    let mut other_client = slice_rows("a", "google_ads", 1..=5, 999);
    other_client.push(("b", "google_ads", 2, "ad-9", 1));
    let err = write_ads(&wh, "a", "google_ads", 1, 5, other_client)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RowOutsideSlice { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("client 'b'") && message.contains("2025-01-02"),
        "{message}"
    );

    let late = slice_rows("a", "google_ads", 1..=6, 999);
    let err = write_ads(&wh, "a", "google_ads", 1, 5, late)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("date 2025-01-06"), "{err}");

    let wrong_platform = slice_rows("a", "meta_ads", 1..=5, 999);
    let err = write_ads(&wh, "a", "google_ads", 1, 5, wrong_platform)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("platform 'meta_ads'"), "{err}");

    assert_eq!(version(&wh, &AD_PERFORMANCE).await, Some(previous.version));
    assert!(ad_rows(&wh).await.iter().all(|r| r.4 == 100 || r.4 == 101));
}

/// The writer does what it is told: an empty replace empties the slice.
/// Whether a job may ask that is the shrink guard's call (`crate::pipeline::guard`,
/// held in `tests/platforms/shrink.rs`; issue 19 defect 1).
#[tokio::test]
async fn the_writer_empties_a_slice_when_told_to() {
    let (_dir, wh) = warehouse();
    write_ads(
        &wh,
        "a",
        "google_ads",
        1,
        5,
        slice_rows("a", "google_ads", 1..=5, 100),
    )
    .await
    .unwrap();
    let written = WriteSliceBuilder::new(&wh, &AD_PERFORMANCE)
        .with_client("a")
        .with_source(Some("google_ads"))
        .with_date_range(day(2), day(3))
        .execute(Vec::<RecordBatch>::new())
        .await
        .unwrap();
    assert_eq!(written.rows_written, 0);
    let days: Vec<u32> = ad_rows(&wh).await.iter().map(|r| r.2.day()).collect();
    assert_eq!(days, [1, 1, 4, 4, 5, 5]);
}

#[tokio::test]
async fn slices_must_match_the_table() {
    let (_dir, wh) = warehouse();
    let err = WriteSliceBuilder::new(&wh, &AD_PERFORMANCE)
        .with_source(Some("google_ads"))
        .with_date_range(day(1), day(2))
        .execute(Vec::<RecordBatch>::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("a client is required"), "{err}");
    let err = WriteSliceBuilder::new(&wh, &WEB_SESSIONS)
        .with_client("a")
        .with_source(Some("ga4"))
        .with_date_range(day(1), day(2))
        .execute(Vec::<RecordBatch>::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no source column"), "{err}");
    let err = WriteSliceBuilder::new(&wh, &AD_PERFORMANCE)
        .with_client("a")
        .with_source(Some("google_ads"))
        .with_date_range(day(3), day(2))
        .execute(Vec::<RecordBatch>::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let err = WriteSliceBuilder::new(&wh, &INGEST_RUNS)
        .with_client("a")
        .with_date_range(day(1), day(2))
        .execute(Vec::<RecordBatch>::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}

#[tokio::test]
async fn fx_rates_replace_their_date_range() {
    let (_dir, wh) = warehouse();
    let s = Synthetic::new(SyntheticConfig {
        clients: 2,
        days: 10,
        rows: 500,
        seed: 3,
        end_date: day(10),
        incidents: false,
    });
    let all: Vec<RecordBatch> = s.fx_rates().collect();
    let per_day = all.iter().map(RecordBatch::num_rows).sum::<usize>() / 10;
    let written = WriteSliceBuilder::new(&wh, &FX_RATES)
        .with_date_range(day(1), day(10))
        .with_run_source("fx")
        .execute(all)
        .await
        .unwrap();
    assert_eq!(written.rows_written as usize, per_day * 10);

    // Rewrite days 4–5 with the rates of a shorter, different walk.
    let other = Synthetic::new(SyntheticConfig {
        clients: 2,
        days: 2,
        rows: 500,
        seed: 3,
        end_date: day(5),
        incidents: false,
    });
    WriteSliceBuilder::new(&wh, &FX_RATES)
        .with_date_range(day(4), day(5))
        .execute(other.fx_rates().collect::<Vec<_>>())
        .await
        .unwrap();
    let counts = query(
        &wh,
        &FX_RATES,
        "SELECT count(*) AS n, count(DISTINCT date) AS days FROM t",
    )
    .await;
    let b = &counts[0];
    assert_eq!(
        b.column(0).as_primitive::<Int64Type>().value(0) as usize,
        per_day * 10
    );
    assert_eq!(b.column(1).as_primitive::<Int64Type>().value(0), 10);
    let global = query(
        &wh,
        &INGEST_RUNS,
        "SELECT count(*) FROM t WHERE client_id = '_global' AND source = 'fx'",
    )
    .await;
    assert_eq!(global[0].column(0).as_primitive::<Int64Type>().value(0), 1);
}

#[tokio::test]
async fn synthetic_slices_round_trip_through_delta() {
    let (_dir, wh) = warehouse();
    let cfg = SyntheticConfig {
        clients: 2,
        days: 20,
        rows: 4_000,
        seed: 11,
        end_date: day(20),
        incidents: false,
    };
    let s = Synthetic::new(cfg.clone()).with_batch_rows(500);
    let client = &s.clients()[0];
    let platform: Platform = client.platforms[0];
    let lineage = Lineage::new(SYNTHETIC_SOURCE, "rt");
    let expected: i128 = s
        .ad_performance_for(0, platform, &lineage)
        .map(|b| {
            b.column_by_name("spend")
                .unwrap()
                .as_primitive::<Decimal128Type>()
                .iter()
                .flatten()
                .sum::<i128>()
        })
        .sum();
    let written = WriteSliceBuilder::new(&wh, &AD_PERFORMANCE)
        .with_client(client.id.clone())
        .with_source(Some(platform.as_str()))
        .with_date_range(cfg.start_date().unwrap(), cfg.end_date)
        .with_run("rt")
        .execute(s.ad_performance_for(0, platform, &lineage))
        .await
        .unwrap();
    assert_eq!(
        written.rows_written,
        s.ad_performance_rows(0, Some(platform))
    );
    let sums = query(
        &wh,
        &AD_PERFORMANCE,
        "SELECT sum(spend), count(*), count(DISTINCT _run_id) FROM t",
    )
    .await;
    let b = &sums[0];
    assert_eq!(
        b.column(0).as_primitive::<Decimal128Type>().value(0),
        expected
    );
    assert_eq!(
        b.column(1).as_primitive::<Int64Type>().value(0) as u64,
        written.rows_written
    );
    assert_eq!(b.column(2).as_primitive::<Int64Type>().value(0), 1);
}

/// The files a slice write of (client, platform, days of January) touches,
/// as (date folder, fate), sorted.
async fn touched(
    wh: &Warehouse,
    client: &str,
    platform: &str,
    from: u32,
    to: u32,
) -> Vec<(String, replace::Fate)> {
    let table = wh.open_table(&AD_PERFORMANCE).await.unwrap();
    let slice = WriteSliceBuilder::new(wh, &AD_PERFORMANCE)
        .with_client(client)
        .with_source(Some(platform))
        .with_date_range(day(from), day(to))
        .slice()
        .unwrap();
    let mut files: Vec<_> = replace::touched_files(&table, &slice)
        .unwrap()
        .into_iter()
        .map(|f| {
            let folders: Vec<_> = f.path.parts().map(|p| p.as_ref().to_owned()).collect();
            (folders[..folders.len() - 1].join("/"), f.fate)
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

/// Number of files per partition folder of `ad_performance`.
async fn files_per_partition(wh: &Warehouse) -> std::collections::BTreeMap<String, usize> {
    let table = wh.open_table(&AD_PERFORMANCE).await.unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for file in table.snapshot().unwrap().log_data().iter() {
        let path = file.path().to_string();
        let folder = path
            .rsplit_once('/')
            .map_or(String::new(), |(f, _)| f.to_owned());
        *counts.entry(folder).or_insert(0) += 1;
    }
    counts
}

/// Writes days 1–5 of each (client, platform, spend) slice.
async fn five_days(wh: &Warehouse, slices: [(&str, &str, i64); 3]) {
    for (client, platform, spend) in slices {
        write_ads(
            wh,
            client,
            platform,
            1,
            5,
            slice_rows(client, platform, 1..=5, spend),
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn a_slice_write_touches_only_its_partitions_and_platform() {
    let (_dir, wh) = warehouse();
    five_days(
        &wh,
        [
            ("a", "google_ads", 100),
            ("a", "meta_ads", 200),
            ("b", "meta_ads", 300),
        ],
    )
    .await;
    assert!(replace::applies(
        &wh.open_table(&AD_PERFORMANCE).await.unwrap(),
        &AD_PERFORMANCE
    ));
    // Client a's meta files of days 2 and 3, nothing of google_ads or of
    // client b, none of the other days: 2 of the 15 files.
    assert_eq!(
        touched(&wh, "a", "meta_ads", 2, 3).await,
        [
            (
                "client_id=a/date=2025-01-02".to_owned(),
                replace::Fate::Remove
            ),
            (
                "client_id=a/date=2025-01-03".to_owned(),
                replace::Fate::Remove
            ),
        ]
    );
    assert!(touched(&wh, "c", "meta_ads", 1, 5).await.is_empty());
    assert!(touched(&wh, "a", "tiktok_ads", 1, 5).await.is_empty());
}

#[tokio::test]
async fn a_slice_commit_that_loses_a_race_with_compaction_is_planned_again() {
    let (_dir, wh) = warehouse();
    five_days(
        &wh,
        [
            ("a", "google_ads", 100),
            ("a", "meta_ads", 200),
            ("b", "google_ads", 300),
        ],
    )
    .await;
    // A write plans from a snapshot, then compaction replaces every file
    // it would remove before it commits.
    let stale = wh.open_table(&AD_PERFORMANCE).await.unwrap();
    let before = ad_rows(&wh).await;
    crate::lake::upkeep::MaintainBuilder::new(&wh)
        .with_tables(vec![&AD_PERFORMANCE])
        .with_vacuum(false)
        .execute()
        .await
        .unwrap();
    let slice = WriteSliceBuilder::new(&wh, &AD_PERFORMANCE)
        .with_client("a")
        .with_source(Some("meta_ads"))
        .with_date_range(day(2), day(3))
        .slice()
        .unwrap();
    let input = futures::stream::iter([Ok(ad_batch(&slice_rows("a", "meta_ads", 2..=3, 900)))]);
    let table = replace::replace(
        &stale,
        &slice,
        input,
        Vec::new(),
        vec![run_transaction("late")],
        DEFAULT_WRITE_BUFFER,
    )
    .await
    .unwrap();
    assert!(run_committed(&table, "late").await.unwrap());
    // The second attempt replaced the compacted files: the slice's old rows
    // are gone, not counted beside the new ones, and the rest is unchanged.
    let expected: Vec<_> = before
        .into_iter()
        .map(|mut r| {
            if r.0 == "a" && r.1 == "meta_ads" && (2..=3).contains(&r.2.day()) {
                r.4 += 700;
            }
            r
        })
        .collect();
    assert_eq!(ad_rows(&wh).await, expected);
}

#[tokio::test]
async fn a_slice_of_compacted_partitions_keeps_the_other_platforms() {
    let (_dir, wh) = warehouse();
    five_days(
        &wh,
        [
            ("a", "google_ads", 100),
            ("a", "meta_ads", 200),
            ("b", "google_ads", 300),
        ],
    )
    .await;
    crate::lake::upkeep::MaintainBuilder::new(&wh)
        .with_tables(vec![&AD_PERFORMANCE])
        .execute()
        .await
        .unwrap();
    // One file per (client, day): client a's hold both platforms.
    let counts = files_per_partition(&wh).await;
    assert_eq!(counts.len(), 10);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let fates: Vec<_> = touched(&wh, "a", "meta_ads", 2, 3).await;
    assert_eq!(fates.len(), 2);
    assert!(
        fates.iter().all(|f| f.1 == replace::Fate::Rewrite),
        "{fates:?}"
    );

    // meta_ads restated on days 2–3, one ad fewer on day 3.
    let mut restated = slice_rows("a", "meta_ads", 2..=3, 900);
    restated.retain(|r| !(r.2 == 3 && r.3 == "ad-2"));
    write_ads(&wh, "a", "meta_ads", 2, 3, restated)
        .await
        .unwrap();
    let spend_of = |rows: &[(String, String, NaiveDate, String, i64)]| -> Vec<(String, String, u32, String, i64)> {
        rows.iter()
            .map(|r| (r.0.clone(), r.1.clone(), r.2.day(), r.3.clone(), r.4))
            .collect()
    };
    let expected = |meta_days: &dyn Fn(u32) -> i64, google: i64| {
        let mut rows = Vec::new();
        for d in 1..=5 {
            for (platform, base) in [("google_ads", google), ("meta_ads", meta_days(d))] {
                for (ad, extra) in [("ad-1", 0), ("ad-2", 1)] {
                    if platform == "meta_ads" && d == 3 && ad == "ad-2" {
                        continue;
                    }
                    rows.push((
                        "a".to_owned(),
                        platform.to_owned(),
                        d,
                        ad.to_owned(),
                        base + extra,
                    ));
                }
            }
        }
        for d in 1..=5 {
            for (ad, extra) in [("ad-1", 0), ("ad-2", 1)] {
                rows.push((
                    "b".to_owned(),
                    "google_ads".to_owned(),
                    d,
                    ad.to_owned(),
                    300 + extra,
                ));
            }
        }
        rows.sort();
        rows
    };
    let meta = |d: u32| if (2..=3).contains(&d) { 900 } else { 200 };
    let mut got = spend_of(&ad_rows(&wh).await);
    got.sort();
    assert_eq!(got, expected(&meta, 100));
    // Days 2 and 3 now hold the google_ads rows rewritten apart and the new
    // meta_ads file; the other partitions are untouched.
    let counts = files_per_partition(&wh).await;
    for (folder, n) in &counts {
        let want = if folder.starts_with("client_id=a/")
            && (folder.ends_with("-02") || folder.ends_with("-03"))
        {
            2
        } else {
            1
        };
        assert_eq!(*n, want, "{folder}");
    }

    // google_ads restated over all five days: mixed files on days 1, 4, 5
    // are rewritten, the google-only files of days 2 and 3 removed.
    write_ads(
        &wh,
        "a",
        "google_ads",
        1,
        5,
        slice_rows("a", "google_ads", 1..=5, 500),
    )
    .await
    .unwrap();
    let mut got = spend_of(&ad_rows(&wh).await);
    got.sort();
    assert_eq!(got, expected(&meta, 500));
}

#[tokio::test]
async fn tables_with_constraints_are_written_by_delta_rs() {
    let (_dir, wh) = warehouse();
    write_ads(
        &wh,
        "a",
        "google_ads",
        1,
        2,
        slice_rows("a", "google_ads", 1..=2, 100),
    )
    .await
    .unwrap();
    let table = wh.open_table(&AD_PERFORMANCE).await.unwrap();
    let table = table
        .add_constraint()
        .with_constraint("spend_not_negative", "spend >= 0")
        .await
        .unwrap();
    assert!(!replace::applies(&table, &AD_PERFORMANCE));
    let before = table.version();

    // The constraint holds: delta-rs checks it, which the direct path
    // would not.
    let err = write_ads(
        &wh,
        "a",
        "google_ads",
        1,
        2,
        slice_rows("a", "google_ads", 1..=2, -5),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("failed validation"), "{err}");
    assert_eq!(version(&wh, &AD_PERFORMANCE).await, before);

    write_ads(
        &wh,
        "a",
        "google_ads",
        2,
        2,
        slice_rows("a", "google_ads", 2..=2, 700),
    )
    .await
    .unwrap();
    let spends: Vec<_> = ad_rows(&wh)
        .await
        .iter()
        .map(|r| (r.2.day(), r.4))
        .collect();
    assert_eq!(spends, [(1, 100), (1, 101), (2, 700), (2, 701)]);

    // A write of several sources goes through delta-rs too, with a
    // predicate naming all of them.
    write_spends(
        &wh,
        "a",
        1..=1,
        &[("google_ads", "c-g", 400), ("meta_ads", "c-m", 600)],
    )
    .await
    .unwrap();
    assert_eq!(
        ad_days(&wh).await,
        expected_rows(&[
            ("a", "google_ads", 1..=1, 400),
            ("a", "google_ads", 2..=2, 700),
            ("a", "meta_ads", 1..=1, 600),
        ])
    );
}

/// One source's rows in a write of several sources: (platform, run id, rows).
type SourceRows<'a> = (&'a str, &'a str, Vec<AdRow<'a>>);

async fn write_sources(
    wh: &Warehouse,
    client: &str,
    from: u32,
    to: u32,
    parts: Vec<SourceRows<'_>>,
) -> Result<Vec<SliceWrite>> {
    let parts = parts
        .into_iter()
        .map(|(source, run_id, rows)| SourceBatches {
            source: source.to_owned(),
            run_id: run_id.to_owned(),
            batches: vec![ad_batch(&rows)],
        })
        .collect();
    WriteSliceBuilder::new(wh, &AD_PERFORMANCE)
        .with_client(client)
        .with_date_range(day(from), day(to))
        .execute_sources(parts)
        .await
}

/// Writes `client`'s sources on `days` in one commit: every day of each
/// (platform, run id, spend) part, as [`slice_rows`] gives it.
async fn write_spends(
    wh: &Warehouse,
    client: &str,
    days: std::ops::RangeInclusive<u32>,
    parts: &[(&str, &str, i64)],
) -> Result<Vec<SliceWrite>> {
    let rows = parts
        .iter()
        .map(|&(platform, run_id, spend)| {
            (
                platform,
                run_id,
                slice_rows(client, platform, days.clone(), spend),
            )
        })
        .collect();
    write_sources(wh, client, *days.start(), *days.end(), rows).await
}

/// (client, platform, day of January, ad, spend) of a row.
type AdDay = (String, String, u32, String, i64);

/// (client, platform, day, ad, spend) of every row, sorted.
async fn ad_days(wh: &Warehouse) -> Vec<AdDay> {
    let mut rows: Vec<_> = ad_rows(wh)
        .await
        .into_iter()
        .map(|r| (r.0, r.1, r.2.day(), r.3, r.4))
        .collect();
    rows.sort();
    rows
}

/// The rows `slice_rows` gives for each (client, platform, days, spend).
fn expected_rows(
    slices: &[(&str, &str, std::ops::RangeInclusive<u32>, i64)],
) -> Vec<(String, String, u32, String, i64)> {
    let mut rows = Vec::new();
    for (client, platform, days, spend) in slices {
        for d in days.clone() {
            for (ad, extra) in [("ad-1", 0), ("ad-2", 1)] {
                rows.push((
                    (*client).to_owned(),
                    (*platform).to_owned(),
                    d,
                    ad.to_owned(),
                    spend + extra,
                ));
            }
        }
    }
    rows.sort();
    rows
}

/// (run id, source, status, rows written, table version) of runs, by id.
async fn runs_of(wh: &Warehouse, ids: &[&str]) -> Vec<(String, String, String, i64, Option<i64>)> {
    let list = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let batches = query(
        wh,
        &INGEST_RUNS,
        &format!(
            "SELECT run_id, source, status, rows_written, table_version FROM t \
             WHERE run_id IN ({list}) ORDER BY run_id"
        ),
    )
    .await;
    let mut out = Vec::new();
    for b in &batches {
        let s = |i: usize| b.column(i).as_string::<i32>().clone();
        let n = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
        let (id, source, status, rows, version) = (s(0), s(1), s(2), n(3), n(4));
        for i in 0..b.num_rows() {
            out.push((
                id.value(i).to_owned(),
                source.value(i).to_owned(),
                status.value(i).to_owned(),
                rows.value(i),
                version.is_valid(i).then(|| version.value(i)),
            ));
        }
    }
    out
}

#[tokio::test]
async fn several_sources_are_written_in_one_commit_with_a_run_each() {
    let (_dir, wh) = warehouse();
    five_days(
        &wh,
        [
            ("a", "google_ads", 100),
            ("a", "meta_ads", 200),
            ("b", "google_ads", 300),
        ],
    )
    .await;
    let before = version(&wh, &AD_PERFORMANCE).await.unwrap();
    let runs_before = version(&wh, &INGEST_RUNS).await.unwrap();

    // Client a's google_ads (restated) and tiktok_ads (new) on days 2–4.
    let written = write_spends(
        &wh,
        "a",
        2..=4,
        &[("google_ads", "run-g", 500), ("tiktok_ads", "run-t", 700)],
    )
    .await
    .unwrap();
    let ids: Vec<_> = written.iter().map(|w| w.run_id.as_str()).collect();
    assert_eq!(ids, ["run-g", "run-t"]);
    assert!(written.iter().all(|w| w.rows_written == 6));
    // One commit to the table, one to ingest_runs.
    assert!(written.iter().all(|w| w.version == before + 1));
    assert!(written.iter().all(|w| w.runs_version == runs_before + 1));
    assert_eq!(version(&wh, &INGEST_RUNS).await, Some(runs_before + 1));
    let v = i64::try_from(before + 1).unwrap();
    assert_eq!(
        runs_of(&wh, &["run-g", "run-t"]).await,
        [
            (
                "run-g".into(),
                "google_ads".into(),
                "succeeded".into(),
                6,
                Some(v)
            ),
            (
                "run-t".into(),
                "tiktok_ads".into(),
                "succeeded".into(),
                6,
                Some(v)
            ),
        ]
    );
    let table = wh.open_table(&AD_PERFORMANCE).await.unwrap();
    let history: Vec<_> = table.history(Some(1)).try_collect().await.unwrap();
    assert_eq!(
        history[0].info.get(RUN_ID_METADATA_KEY),
        Some(&json!(["run-g", "run-t"]))
    );
    assert_eq!(
        history[0].info.get("adlake.source"),
        Some(&json!(["google_ads", "tiktok_ads"]))
    );

    assert_eq!(
        ad_days(&wh).await,
        expected_rows(&[
            ("a", "google_ads", 1..=1, 100),
            ("a", "google_ads", 2..=4, 500),
            ("a", "google_ads", 5..=5, 100),
            ("a", "meta_ads", 1..=5, 200),
            ("a", "tiktok_ads", 2..=4, 700),
            ("b", "google_ads", 1..=5, 300),
        ])
    );
    // Days 2–4 of client a: the kept meta_ads file and one new file with
    // both sources; days 1 and 5: google_ads and meta_ads as before.
    let counts = files_per_partition(&wh).await;
    assert_eq!(counts.len(), 10);
    for (folder, n) in &counts {
        let want = if folder.starts_with("client_id=a/") {
            2
        } else {
            1
        };
        assert_eq!(*n, want, "{folder}");
    }

    // After compaction every file of client a holds several platforms; a
    // write of google_ads and meta_ads over all days rewrites them and
    // keeps the tiktok_ads rows.
    crate::lake::upkeep::MaintainBuilder::new(&wh)
        .with_tables(vec![&AD_PERFORMANCE])
        .execute()
        .await
        .unwrap();
    write_spends(
        &wh,
        "a",
        1..=5,
        &[("meta_ads", "run-m2", 800), ("google_ads", "run-g2", 600)],
    )
    .await
    .unwrap();
    assert_eq!(
        ad_days(&wh).await,
        expected_rows(&[
            ("a", "google_ads", 1..=5, 600),
            ("a", "meta_ads", 1..=5, 800),
            ("a", "tiktok_ads", 2..=4, 700),
            ("b", "google_ads", 1..=5, 300),
        ])
    );
}

#[tokio::test]
async fn a_write_of_several_sources_checks_each_source_and_fails_whole() {
    let (_dir, wh) = warehouse();
    five_days(
        &wh,
        [
            ("a", "google_ads", 100),
            ("a", "meta_ads", 200),
            ("b", "google_ads", 300),
        ],
    )
    .await;
    let before = version(&wh, &AD_PERFORMANCE).await;
    let unchanged = expected_rows(&[
        ("a", "google_ads", 1..=5, 100),
        ("a", "meta_ads", 1..=5, 200),
        ("b", "google_ads", 1..=5, 300),
    ]);

    // A meta_ads row among the google_ads part: rejected even though
    // meta_ads is another part of the same write.
    let mut google = slice_rows("a", "google_ads", 1..=5, 900);
    google.push(("a", "meta_ads", 3, "ad-9", 1));
    let err = write_sources(
        &wh,
        "a",
        1,
        5,
        vec![
            ("google_ads", "bad-g", google),
            ("meta_ads", "bad-m", slice_rows("a", "meta_ads", 1..=5, 900)),
        ],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::RowOutsideSlice { .. }), "{err}");
    assert!(
        err.to_string().contains("platform 'meta_ads'") && err.to_string().contains("2025-01-03"),
        "{err}"
    );
    assert_eq!(version(&wh, &AD_PERFORMANCE).await, before);
    assert_eq!(ad_days(&wh).await, unchanged);
    // Both runs are recorded as failed, with no version.
    let runs = runs_of(&wh, &["bad-g", "bad-m"]).await;
    assert_eq!(runs.len(), 2);
    assert!(
        runs.iter().all(|r| r.2 == "failed" && r.4.is_none()),
        "{runs:?}"
    );

    // Bad requests are refused before anything is written.
    let refused = |err: Error, what: &str| {
        assert!(matches!(err, Error::InvalidSlice { .. }), "{err}");
        assert!(err.to_string().contains(what), "{err}");
    };
    let twice = write_spends(
        &wh,
        "a",
        1..=5,
        &[("google_ads", "r1", 1), ("google_ads", "r2", 2)],
    )
    .await
    .unwrap_err();
    refused(twice, "given twice");
    refused(
        write_sources(&wh, "a", 1, 5, Vec::new()).await.unwrap_err(),
        "no source given",
    );
    let no_run_id = write_spends(&wh, "a", 1..=5, &[("google_ads", "", 3)])
        .await
        .unwrap_err();
    refused(no_run_id, "run id of source 'google_ads' is empty");
    let with_source = WriteSliceBuilder::new(&wh, &AD_PERFORMANCE)
        .with_client("a")
        .with_source(Some("google_ads"))
        .with_date_range(day(1), day(5))
        .execute_sources(vec![SourceBatches {
            source: "meta_ads".to_owned(),
            run_id: "r3".to_owned(),
            batches: Vec::<RecordBatch>::new(),
        }])
        .await
        .unwrap_err();
    refused(with_source, "per source");
    let no_column = WriteSliceBuilder::new(&wh, &WEB_SESSIONS)
        .with_client("a")
        .with_date_range(day(1), day(5))
        .execute_sources(vec![SourceBatches {
            source: "ga4".to_owned(),
            run_id: "r4".to_owned(),
            batches: Vec::<RecordBatch>::new(),
        }])
        .await
        .unwrap_err();
    refused(no_column, "no source column");
    assert_eq!(version(&wh, &AD_PERFORMANCE).await, before);
    assert_eq!(ad_days(&wh).await, unchanged);
}

/// The data files under a table's folder, referenced by the log or not.
fn parquet_files_on_disk(dir: &std::path::Path, def: &TableDef) -> usize {
    fn walk(path: &std::path::Path, found: &mut usize) {
        for entry in std::fs::read_dir(path).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                *found += 1;
            }
        }
    }
    let mut found = 0;
    walk(&dir.join(def.name), &mut found);
    found
}

/// Days 1–2, 2–3 and 3–4 of client a's google_ads slice, one batch each,
/// with spends 10, 20 and 30.
fn overlapping_batches() -> (Vec<RecordBatch>, Vec<AdDay>) {
    let parts = [(1..=2, 10), (2..=3, 20), (3..=4, 30)];
    let batches = parts
        .iter()
        .map(|(days, spend)| ad_batch(&slice_rows("a", "google_ads", days.clone(), *spend)))
        .collect();
    let mut rows = Vec::new();
    for (days, spend) in parts {
        rows.extend(expected_rows(&[("a", "google_ads", days, spend)]));
    }
    rows.sort();
    (batches, rows)
}

#[tokio::test]
async fn a_write_closes_its_files_when_its_buffer_is_full() {
    let write = |wh: &Warehouse, buffer: Option<usize>| {
        let builder = WriteSliceBuilder::new(wh, &AD_PERFORMANCE)
            .with_client("a")
            .with_source(Some("google_ads"))
            .with_date_range(day(1), day(4));
        let builder = match buffer {
            Some(bytes) => builder.with_write_buffer(bytes),
            None => builder,
        };
        builder.execute(overlapping_batches().0)
    };
    let days = |counts: [usize; 4]| -> std::collections::BTreeMap<String, usize> {
        counts
            .iter()
            .zip(1..)
            .map(|(n, d)| (format!("client_id=a/date=2025-01-0{d}"), *n))
            .collect()
    };

    // The default buffer holds the whole write: one file per partition.
    let (_dir, wh) = warehouse();
    write(&wh, None).await.unwrap();
    assert_eq!(files_per_partition(&wh).await, days([1, 1, 1, 1]));

    // A buffer of one byte closes the files after every batch: days 2 and
    // 3, in two batches each, get two files; every row is there, in one
    // commit.
    let (dir, wh) = warehouse();
    let written = write(&wh, Some(1)).await.unwrap();
    assert_eq!(files_per_partition(&wh).await, days([1, 2, 2, 1]));
    assert_eq!(ad_days(&wh).await, overlapping_batches().1);
    assert_eq!(written.rows_written, 12);
    assert_eq!(version(&wh, &AD_PERFORMANCE).await, Some(written.version));
    assert_eq!(parquet_files_on_disk(dir.path(), &AD_PERFORMANCE), 6);
}

#[tokio::test]
async fn a_write_that_fails_after_closing_files_leaves_none_behind() {
    let (dir, wh) = warehouse();
    let previous = write_ads(
        &wh,
        "a",
        "google_ads",
        1,
        4,
        slice_rows("a", "google_ads", 1..=4, 100),
    )
    .await
    .unwrap();
    let content = ad_rows(&wh).await;
    let on_disk = parquet_files_on_disk(dir.path(), &AD_PERFORMANCE);

    let (batches, _) = overlapping_batches();
    let mut input: Vec<Result<RecordBatch, DataFusionError>> =
        batches.into_iter().map(Ok).collect();
    input.push(Err(DataFusionError::Execution(
        "platform API timed out".to_owned(),
    )));
    let err = WriteSliceBuilder::new(&wh, &AD_PERFORMANCE)
        .with_client("a")
        .with_source(Some("google_ads"))
        .with_date_range(day(1), day(4))
        .with_write_buffer(1)
        .execute_stream(futures::stream::iter(input))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("platform API timed out"), "{err}");

    // Nothing committed, and the files closed before the failure are gone.
    assert_eq!(version(&wh, &AD_PERFORMANCE).await, Some(previous.version));
    assert_eq!(ad_rows(&wh).await, content);
    assert_eq!(parquet_files_on_disk(dir.path(), &AD_PERFORMANCE), on_disk);
}

#[test]
fn the_batches_of_several_sources_are_merged_in_date_order() {
    let batch = |days: std::ops::RangeInclusive<u32>| ad_batch(&slice_rows("a", "x", days, 1));
    let merged: Vec<(usize, u32)> = DateMerge {
        parts: vec![
            vec![batch(1..=4), batch(5..=8)].into_iter().peekable(),
            (1..=6)
                .map(|d| batch(d..=d))
                .collect::<Vec<_>>()
                .into_iter()
                .peekable(),
        ],
    }
    .map(|(n, b)| (n, epoch_day_to_date(first_day(&b)).unwrap().day()))
    .collect();
    // Ties go to the first source.
    assert_eq!(
        merged,
        [
            (0, 1),
            (1, 1),
            (1, 2),
            (1, 3),
            (1, 4),
            (0, 5),
            (1, 5),
            (1, 6)
        ]
    );
}
