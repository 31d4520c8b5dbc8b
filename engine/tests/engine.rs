//! Engine behaviour over real Delta tables written to a temporary warehouse.

use std::sync::Arc;

use adlake_engine::schema::{AD_PERFORMANCE, TableDef};
use adlake_engine::{Engine, Error, Scope};
use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Decimal128Array, Float64Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray, new_null_array,
};
use arrow::datatypes::{DataType, Decimal128Type, Int64Type};
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use futures::TryStreamExt;
use url::Url;

/// One ad row: (client, day offset from 2026-01-01, platform, spend in
/// micros, impressions, clicks).
type Row = (&'static str, i32, &'static str, i128, i64, i64);

/// Rows with sums worked out by hand:
/// acme:   spend 10.50 + 4.25 + 0.25 = 15.00, impressions 1000 + 500 + 100 = 1600, clicks 20 + 5 + 1 = 26
/// globex: spend 99.00, impressions 9000, clicks 90
const ROWS: &[Row] = &[
    ("acme", 0, "google_ads", 10_500_000, 1000, 20),
    ("acme", 1, "google_ads", 4_250_000, 500, 5),
    ("acme", 1, "meta_ads", 250_000, 100, 1),
    ("globex", 0, "meta_ads", 99_000_000, 9000, 90),
];

const DAY0: i32 = 20454; // 2026-01-01 in days since the epoch

fn ad_batch(rows: &[Row]) -> RecordBatch {
    let def: &TableDef = &AD_PERFORMANCE;
    let schema = def.schema();
    let n = rows.len();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| -> ArrayRef {
            let text = |f: &dyn Fn(&Row) -> String| -> ArrayRef {
                Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
            };
            match field.name().as_str() {
                "client_id" => text(&|r| r.0.to_string()),
                "date" => Arc::new(Date32Array::from_iter_values(
                    rows.iter().map(|r| DAY0 + r.1),
                )),
                "platform" => text(&|r| r.2.to_string()),
                "account_id" => text(&|r| format!("{}-acct", r.0)),
                "campaign_id" => text(&|r| format!("{}-camp", r.2)),
                "currency" => text(&|_| "USD".to_string()),
                "_source" => text(&|_| "test/1".to_string()),
                "_run_id" => text(&|_| "run-1".to_string()),
                "spend" | "conversion_value" => Arc::new(
                    Decimal128Array::from_iter_values(rows.iter().map(|r| r.3))
                        .with_precision_and_scale(18, 6)
                        .unwrap(),
                ),
                "impressions" => Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.4))),
                "clicks" => Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.5))),
                "conversions" => Arc::new(Float64Array::from_iter_values(rows.iter().map(|_| 1.0))),
                "_ingested_at" => Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        rows.iter().map(|_| 1_767_225_600_000_000),
                    )
                    .with_timezone("UTC"),
                ),
                _ => {
                    assert!(field.is_nullable(), "fill {}", field.name());
                    new_null_array(field.data_type(), n)
                }
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

async fn write_ads(warehouse: &std::path::Path, rows: &[Row]) {
    let url = Url::from_directory_path(warehouse.join("ad_performance")).unwrap();
    std::fs::create_dir_all(warehouse.join("ad_performance")).unwrap();
    let table = DeltaTable::try_from_url(url).await.unwrap();
    table
        .write(vec![ad_batch(rows)])
        .with_save_mode(SaveMode::Append)
        .with_partition_columns(
            AD_PERFORMANCE
                .partition_columns
                .iter()
                .map(|c| c.to_string()),
        )
        .await
        .unwrap();
}

async fn warehouse() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    write_ads(dir.path(), ROWS).await;
    let engine = Engine::open(dir.path().to_str().unwrap()).await.unwrap();
    (dir, engine)
}

async fn collect(engine: &Engine, scope: &Scope, sql: &str) -> Vec<RecordBatch> {
    let query = engine
        .plan(scope, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let schema = query.schema();
    let batches: Vec<RecordBatch> = query.execute().await.unwrap().try_collect().await.unwrap();
    for b in &batches {
        assert_eq!(
            b.schema(),
            schema,
            "streamed schema differs from the advertised one"
        );
    }
    batches
}

/// (client, spend micros, impressions, clicks) per client, sorted.
async fn totals(engine: &Engine, scope: &Scope) -> Vec<(String, i128, i64, i64)> {
    let batches = collect(
        engine,
        scope,
        "SELECT client_id, sum(spend), sum(impressions), sum(clicks) \
         FROM ad_performance GROUP BY client_id ORDER BY client_id",
    )
    .await;
    let mut out = Vec::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            out.push((
                b.column(0).as_string::<i32>().value(i).to_string(),
                b.column(1).as_primitive::<Decimal128Type>().value(i),
                b.column(2).as_primitive::<Int64Type>().value(i),
                b.column(3).as_primitive::<Int64Type>().value(i),
            ));
        }
    }
    out
}

#[tokio::test]
async fn agency_scope_sees_every_client_with_exact_sums() {
    let (_dir, engine) = warehouse().await;
    assert_eq!(
        totals(&engine, &Scope::AllClients).await,
        vec![
            ("acme".to_string(), 15_000_000, 1600, 26),
            ("globex".to_string(), 99_000_000, 9000, 90),
        ]
    );
}

#[tokio::test]
async fn client_scope_never_sees_another_client() {
    let (_dir, engine) = warehouse().await;
    let acme = Scope::clients(["acme"]);
    assert_eq!(
        totals(&engine, &acme).await,
        vec![("acme".to_string(), 15_000_000, 1600, 26)]
    );
    // Asking for the other client by name yields nothing.
    let rows: usize = collect(
        &engine,
        &acme,
        "SELECT * FROM ad_performance WHERE client_id = 'globex'",
    )
    .await
    .iter()
    .map(RecordBatch::num_rows)
    .sum();
    assert_eq!(rows, 0);
    // Nor does going through information_schema, a subquery or a CTE.
    let batches = collect(
        &engine,
        &acme,
        "WITH t AS (SELECT * FROM adlake.public.ad_performance) \
         SELECT count(*) FROM t WHERE client_id IN (SELECT client_id FROM ad_performance)",
    )
    .await;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 3);
}

#[tokio::test]
async fn callers_expressions_never_run_on_other_clients_rows() {
    let (_dir, engine) = warehouse().await;
    // Would divide by zero on any globex row: it must not see one.
    let sql = "SELECT sum(clicks / (CASE WHEN client_id = 'globex' THEN 0 ELSE 1 END)) \
               FROM ad_performance";
    let batches = collect(&engine, &Scope::clients(["acme"]), sql).await;
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        26
    );
    // The same query over the whole agency does reach globex and fails.
    let err = engine
        .plan(&Scope::AllClients, sql)
        .await
        .unwrap()
        .execute()
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .expect_err("globex row divides by zero");
    assert!(
        err.to_string().to_lowercase().contains("divide by zero"),
        "{err}"
    );
}

#[tokio::test]
async fn empty_scope_sees_nothing() {
    let (_dir, engine) = warehouse().await;
    assert!(
        totals(&engine, &Scope::clients(Vec::<String>::new()))
            .await
            .is_empty()
    );
    assert!(
        totals(&engine, &Scope::clients(["initech"]))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn refused_and_invalid_statements() {
    let (_dir, engine) = warehouse().await;
    for sql in [
        "DROP TABLE ad_performance",
        "INSERT INTO ad_performance SELECT * FROM ad_performance",
        "COPY ad_performance TO '/tmp/adlake-leak.parquet'",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc'",
        "CREATE VIEW v AS SELECT 1",
        "SET datafusion.execution.batch_size = 1",
    ] {
        match engine.plan(&Scope::AllClients, sql).await {
            Err(Error::ReadOnly(m)) => assert!(m.contains("not allowed"), "{sql}: {m}"),
            other => panic!("{sql}: expected ReadOnly, got {other:?}"),
        }
    }
    for (sql, needle) in [
        ("SELEC 1", "SQL error"),
        ("SELECT nope FROM ad_performance", "nope"),
        ("SELECT * FROM no_such_table", "no_such_table"),
        // File access through a path as a table name is not a table here.
        ("SELECT * FROM '/etc/passwd'", "/etc/passwd"),
    ] {
        match engine.plan(&Scope::AllClients, sql).await {
            Err(Error::InvalidSql(m)) => assert!(m.contains(needle), "{sql}: {m}"),
            other => panic!("{sql}: expected InvalidSql, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn results_use_client_readable_types() {
    let (_dir, engine) = warehouse().await;
    let query = engine
        .plan(&Scope::clients(["acme"]), "SELECT * FROM ad_performance")
        .await
        .unwrap();
    let schema = query.schema();
    for field in schema.fields() {
        assert!(
            !matches!(
                field.data_type(),
                DataType::Dictionary(..) | DataType::Utf8View | DataType::BinaryView
            ),
            "{field:?}"
        );
    }
    assert_eq!(
        schema.field_with_name("client_id").unwrap().data_type(),
        &DataType::Utf8
    );
    assert_eq!(
        schema.field_with_name("spend").unwrap().data_type(),
        &DataType::Decimal128(18, 6)
    );
    assert_eq!(
        schema.field_with_name("date").unwrap().data_type(),
        &DataType::Date32
    );
    for table in engine.tables() {
        for field in table.schema.fields() {
            assert!(
                adlake_engine::transport::is_transport_type(field.data_type()),
                "{}.{}",
                table.name,
                field.name()
            );
        }
    }
}

#[tokio::test]
async fn follows_new_versions_and_reports_them() {
    let (dir, engine) = warehouse().await;
    let before = engine
        .plan(&Scope::AllClients, "SELECT count(*) FROM ad_performance")
        .await
        .unwrap();
    let v0 = before.table_versions()["ad_performance"];
    assert!(v0.is_some());

    write_ads(dir.path(), &[("acme", 2, "tiktok_ads", 1_000_000, 10, 1)]).await;
    // Not yet refreshed: the engine still reads the version it has.
    assert_eq!(
        totals(&engine, &Scope::clients(["acme"])).await[0].1,
        15_000_000
    );
    engine.refresh().await.unwrap();
    assert_eq!(
        totals(&engine, &Scope::clients(["acme"])).await,
        vec![("acme".to_string(), 16_000_000, 1610, 27)]
    );
    let after = engine
        .plan(&Scope::AllClients, "SELECT count(*) FROM ad_performance")
        .await
        .unwrap();
    assert_eq!(after.table_versions()["ad_performance"], v0.map(|v| v + 1));
    assert!(engine.is_ready());
}

#[tokio::test]
async fn tables_not_created_yet_read_as_empty_then_appear() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path().to_str().unwrap()).await.unwrap();
    assert!(totals(&engine, &Scope::AllClients).await.is_empty());
    assert!(engine.clients().await.unwrap().is_empty());
    write_ads(dir.path(), ROWS).await;
    engine.refresh().await.unwrap();
    assert_eq!(totals(&engine, &Scope::AllClients).await.len(), 2);
    assert_eq!(
        engine
            .clients()
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec!["acme".to_string(), "globex".to_string()]
    );
}

#[tokio::test]
async fn missing_or_bad_warehouse_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    match Engine::open(missing.to_str().unwrap()).await {
        Err(Error::Warehouse { message, location }) => {
            assert_eq!(message, "does not exist");
            assert!(location.ends_with("nope"));
        }
        other => panic!("expected a warehouse error, got {other:?}"),
    }
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    match Engine::open(file.to_str().unwrap()).await {
        Err(Error::Warehouse { message, .. }) => assert_eq!(message, "is not a directory"),
        other => panic!("expected a warehouse error, got {other:?}"),
    }
    match Engine::open("ftp://example/warehouse").await {
        Err(Error::Warehouse { message, .. }) => {
            assert!(
                message.contains("unsupported warehouse scheme 'ftp'"),
                "{message}"
            )
        }
        other => panic!("expected a warehouse error, got {other:?}"),
    }
}

#[tokio::test]
async fn null_filled_columns_keep_their_declared_nullability() {
    let (_dir, engine) = warehouse().await;
    let batches = collect(
        &engine,
        &Scope::clients(["acme"]),
        "SELECT ad_id, utm_source FROM ad_performance",
    )
    .await;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 3);
    assert!(
        batches
            .iter()
            .all(|b| b.column(0).null_count() == b.num_rows())
    );
}

#[tokio::test]
async fn scans_count_the_rows_and_bytes_they_read() {
    let (_dir, engine) = warehouse().await;
    assert_eq!(engine.scan_totals(), adlake_engine::ScanTotals::default());

    // acme has 3 rows (see ROWS), all of them read by a full projection;
    // the scan is pruned to acme's partitions, so globex's row is not read.
    let acme = Scope::clients(["acme"]);
    let batches = collect(&engine, &acme, "SELECT spend FROM ad_performance").await;
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
    let after_one = engine.scan_totals();
    assert_eq!(after_one.queries, 1);
    assert_eq!(after_one.rows, 3);
    assert!(after_one.bytes > 0, "{after_one:?}");

    // The agency scope reads all 4 rows; the totals add up.
    collect(
        &engine,
        &Scope::AllClients,
        "SELECT clicks FROM ad_performance",
    )
    .await;
    let after_two = engine.scan_totals();
    assert_eq!(after_two.queries, 2);
    assert_eq!(after_two.rows, 3 + 4);
    assert!(after_two.bytes > after_one.bytes);
}

/// The single Int64 (or count) value of a one-cell answer.
async fn one_int(stream: datafusion::execution::SendableRecordBatchStream) -> i64 {
    let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    let column = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .expect("one row")
        .column(0)
        .clone();
    column.as_primitive::<Int64Type>().value(0)
}

#[tokio::test]
async fn statements_seen_before_are_answered_without_planning_again() {
    use adlake_engine::CacheStatus;
    let (dir, engine) = warehouse().await;
    let acme = Scope::clients(["acme"]);
    let sql = "SELECT sum(clicks) FROM ad_performance";

    // First time: planned, run, stored. acme's clicks: 20 + 5 + 1 = 26.
    let adlake_engine::SqlAnswer {
        batches: stream,
        cache: status,
        versions,
    } = engine.execute_sql(&acme, sql, false).await.unwrap();
    assert_eq!(status, CacheStatus::Miss);
    let read = versions["ad_performance"].expect("a version of ad_performance");
    assert_eq!(versions.keys().collect::<Vec<_>>(), ["ad_performance"]);
    assert_eq!(one_int(stream).await, 26);
    let planned = engine.statements_planned();
    assert_eq!(planned, 1);

    // Described and answered again, with other whitespace, without planning.
    let described = engine
        .describe(&acme, "SELECT  sum(clicks)\n FROM ad_performance ")
        .await
        .unwrap();
    assert_eq!(described.schema.fields().len(), 1);
    assert!(described.parameter_types.is_empty());
    let adlake_engine::SqlAnswer {
        batches: stream,
        cache: status,
        versions,
    } = engine
        .execute_sql(&acme, "SELECT sum(clicks)\tFROM ad_performance", false)
        .await
        .unwrap();
    assert_eq!(status, CacheStatus::Hit);
    assert_eq!(
        versions["ad_performance"],
        Some(read),
        "a hit reads the version it was stored for"
    );
    assert_eq!(one_int(stream).await, 26);
    assert_eq!(engine.statements_planned(), planned);
    assert_eq!(engine.cache().stats().hits, 1);

    // Another scope is another statement: globex's 90 clicks, planned anew.
    let adlake_engine::SqlAnswer {
        batches: stream,
        cache: status,
        ..
    } = engine
        .execute_sql(&Scope::clients(["globex"]), sql, false)
        .await
        .unwrap();
    assert_eq!(status, CacheStatus::Miss);
    assert_eq!(one_int(stream).await, 90);
    assert_eq!(engine.statements_planned(), planned + 1);

    // A new version of the table it reads: planned again, new answer
    // (26 + 4 = 30), never the stored one.
    write_ads(dir.path(), &[("acme", 2, "tiktok_ads", 1_000_000, 10, 4)]).await;
    engine.refresh().await.unwrap();
    let adlake_engine::SqlAnswer {
        batches: stream,
        cache: status,
        versions,
    } = engine.execute_sql(&acme, sql, false).await.unwrap();
    assert_eq!(status, CacheStatus::Miss);
    assert_eq!(versions["ad_performance"], Some(read + 1));
    assert_eq!(one_int(stream).await, 30);
    assert_eq!(engine.statements_planned(), planned + 2);
    // Bypass plans every time and stores nothing.
    let adlake_engine::SqlAnswer {
        batches: stream,
        cache: status,
        ..
    } = engine.execute_sql(&acme, sql, true).await.unwrap();
    assert_eq!(status, CacheStatus::Bypass);
    assert_eq!(one_int(stream).await, 30);
    assert_eq!(engine.statements_planned(), planned + 3);
}

#[tokio::test]
async fn whitespace_inside_a_literal_is_part_of_the_statement() {
    let (_dir, engine) = warehouse().await;
    let scope = Scope::AllClients;
    // 'a  b' has 4 characters, 'a b' has 3: the second must not be
    // answered with the first's cached result.
    for (sql, want) in [
        ("SELECT CAST(length('a  b') AS BIGINT)", 4),
        ("SELECT CAST(length('a b') AS BIGINT)", 3),
        ("SELECT CAST(length('a  b') AS BIGINT)", 4),
    ] {
        let stream = engine
            .execute_sql(&scope, sql, false)
            .await
            .unwrap()
            .batches;
        assert_eq!(one_int(stream).await, want, "{sql}");
    }
}

/// Active files and bytes of `ad_performance` as the engine indexes them.
fn ad_files(engine: &Engine) -> (usize, u64) {
    engine
        .catalog()
        .snapshot("ad_performance")
        .unwrap()
        .file_stats()
}

#[tokio::test]
async fn the_scan_follows_appends_deletes_rewrites_and_compaction_like_a_fresh_open() {
    let (dir, engine) = warehouse().await;
    let url = Url::from_directory_path(dir.path().join("ad_performance")).unwrap();
    let load = || async { DeltaTable::try_from_url(url.clone()).await.unwrap() };
    // After each change the refreshed engine (index moved forward from the
    // commits) must answer as an engine opened afresh (index built from the
    // snapshot), and both as the sums worked out by hand.
    let check = |expected: Vec<(&'static str, i128, i64, i64)>| {
        let engine = &engine;
        let dir = dir.path().to_path_buf();
        async move {
            engine.refresh().await.unwrap();
            let fresh = Engine::open(dir.to_str().unwrap()).await.unwrap();
            let expected: Vec<_> = expected
                .into_iter()
                .map(|(c, s, i, k)| (c.to_string(), s, i, k))
                .collect();
            assert_eq!(totals(engine, &Scope::AllClients).await, expected);
            assert_eq!(totals(&fresh, &Scope::AllClients).await, expected);
            assert_eq!(ad_files(engine), ad_files(&fresh));
        }
    };

    // An append of a new day.
    write_ads(dir.path(), &[("acme", 5, "tiktok_ads", 2_000_000, 30, 3)]).await;
    check(vec![
        ("acme", 17_000_000, 1630, 29),
        ("globex", 99_000_000, 9000, 90),
    ])
    .await;

    // A delete by partition (files removed) and one by a data column (a file
    // rewritten: a remove and an add in one commit).
    load()
        .await
        .delete()
        .with_predicate("client_id = 'globex'")
        .await
        .unwrap();
    load()
        .await
        .delete()
        .with_predicate("platform = 'meta_ads'")
        .await
        .unwrap();
    check(vec![("acme", 16_750_000, 1530, 28)]).await;

    // Two more appends to one day, then a compaction that replaces them.
    write_ads(dir.path(), &[("acme", 5, "google_ads", 1_000_000, 10, 1)]).await;
    write_ads(dir.path(), &[("acme", 5, "google_ads", 1_000_000, 10, 1)]).await;
    let (files_before, _) = ad_files(&engine);
    let _ = load().await.optimize().await.unwrap();
    check(vec![("acme", 18_750_000, 1550, 30)]).await;
    let (files_after, _) = ad_files(&engine);
    assert!(
        files_after < files_before + 2,
        "compaction should leave fewer files: {files_before} + 2 -> {files_after}"
    );

    // A query of one day reads that day's files only.
    let one_day = collect(
        &engine,
        &Scope::clients(["acme"]),
        "SELECT sum(clicks) FROM ad_performance WHERE date = DATE '2026-01-06'",
    )
    .await;
    let clicks = one_day[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(clicks, 5);
}

/// Opens a warehouse whose `ad_performance` was written with
/// `partitioned_by` and `configuration`, and returns the engine's error.
async fn open_refused(partitioned_by: &[&str], configuration: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ad_performance");
    std::fs::create_dir_all(&path).unwrap();
    let table = DeltaTable::try_from_url(Url::from_directory_path(&path).unwrap())
        .await
        .unwrap();
    table
        .write(vec![ad_batch(ROWS)])
        .with_partition_columns(partitioned_by.iter().map(|c| c.to_string()))
        .with_configuration(configuration.iter().map(|(k, v)| (*k, Some(*v))))
        .await
        .unwrap();
    Engine::open(dir.path().to_str().unwrap())
        .await
        .unwrap_err()
        .to_string()
}

#[tokio::test]
async fn tables_using_delta_features_the_scan_cannot_read_are_refused_at_open() {
    let message = open_refused(
        &["client_id", "date"],
        &[("delta.enableDeletionVectors", "true")],
    )
    .await;
    assert!(
        message.contains("ad_performance") && message.contains("deletion vectors"),
        "{message}"
    );
    // Partitioned otherwise than adlake's schema says: refused too.
    let message = open_refused(&["client_id"], &[]).await;
    assert!(
        message.contains("partitioned by [\"client_id\"]"),
        "{message}"
    );
}

#[tokio::test]
async fn footers_are_read_once_and_then_served_from_the_cache() {
    let (_dir, engine) = warehouse().await;
    let sql = "SELECT sum(clicks) FROM ad_performance";
    let before = engine.footer_cache();
    assert_eq!((before.hits, before.misses, before.entries), (0, 0, 0));
    collect(&engine, &Scope::AllClients, sql).await;
    let first = engine.footer_cache();
    // One footer per file read (three client-days), none cached before.
    let (files, _) = ad_files(&engine);
    assert_eq!(first.misses, files as u64);
    assert_eq!(first.entries, files as u64);
    assert!(first.bytes > 0 && first.bytes <= first.limit);
    collect(&engine, &Scope::AllClients, sql).await;
    let second = engine.footer_cache();
    assert_eq!(second.misses, first.misses, "no footer read again");
    assert_eq!(second.hits, first.hits + files as u64);
}

/// Rows of `batches` as (client, platform, clicks), sorted.
fn client_platform_clicks(batches: &[RecordBatch]) -> Vec<(String, String, i64)> {
    let mut rows = Vec::new();
    for batch in batches {
        let text = |i: usize| arrow::compute::cast(batch.column(i), &DataType::Utf8).unwrap();
        let (client, platform) = (text(0), text(1));
        let clicks = batch.column(2).as_primitive::<Int64Type>();
        for r in 0..batch.num_rows() {
            rows.push((
                client.as_string::<i32>().value(r).to_string(),
                platform.as_string::<i32>().value(r).to_string(),
                clicks.value(r),
            ));
        }
    }
    rows.sort();
    rows
}

#[tokio::test]
async fn a_scoped_plan_encoded_by_one_engine_runs_on_another_with_the_same_answer() {
    let (dir, planner) = warehouse().await;
    // Another engine over the same warehouse: what a worker process is.
    let worker = Engine::open(dir.path().to_str().unwrap()).await.unwrap();
    let sql = "SELECT client_id, platform, sum(clicks) AS clicks FROM ad_performance \
               WHERE date >= DATE '2026-01-01' GROUP BY client_id, platform";
    for (scope, expected) in [
        (
            Scope::clients(["acme"]),
            vec![("acme", "google_ads", 25), ("acme", "meta_ads", 1)],
        ),
        (
            Scope::AllClients,
            vec![
                ("acme", "google_ads", 25),
                ("acme", "meta_ads", 1),
                ("globex", "meta_ads", 90),
            ],
        ),
    ] {
        let expected: Vec<_> = expected
            .into_iter()
            .map(|(c, p, k)| (c.to_string(), p.to_string(), k))
            .collect();
        let here = collect(&planner, &scope, sql).await;
        assert_eq!(client_platform_clicks(&here), expected);

        let encoded = planner
            .plan(&scope, sql)
            .await
            .unwrap()
            .encode()
            .await
            .unwrap();
        let there: Vec<RecordBatch> = worker
            .execute_encoded(&encoded)
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        // The tenancy filter travelled with the plan: acme's plan never
        // yields globex's rows on the worker either.
        assert_eq!(client_platform_clicks(&there), expected, "{scope:?}");
    }

    // Bytes that are not a plan are refused with an error, not a panic.
    let Err(err) = worker.execute_encoded(b"not a plan") else {
        panic!("garbage decoded as a plan");
    };
    assert!(err.to_string().contains("could not be decoded"), "{err}");
}
