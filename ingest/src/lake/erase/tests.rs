use std::path::{Path, PathBuf};

use adlake_engine::schema::{AD_PERFORMANCE, FX_RATES, INGEST_RUNS};
use arrow::array::{Array, AsArray};
use chrono::NaiveDate;
use datafusion::prelude::SessionContext;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::*;
use crate::demo::{DemoOptions, Progress, run_demo};
use crate::lake::upkeep::MaintainBuilder;
use crate::synthetic::{Synthetic, SyntheticConfig};

fn config() -> SyntheticConfig {
    SyntheticConfig {
        clients: 3,
        days: 3,
        rows: 600,
        seed: 11,
        end_date: NaiveDate::from_ymd_opt(2025, 5, 31).unwrap(),
        incidents: false,
    }
}

async fn demo_warehouse(dir: &Path) -> (Warehouse, Vec<String>) {
    let c = config();
    let opts = DemoOptions::new(dir.to_str().unwrap(), &c);
    run_demo(&opts, Progress::Hidden).await.unwrap();
    let clients = Synthetic::new(c)
        .clients()
        .iter()
        .map(|p| p.id.clone())
        .collect();
    (Warehouse::open(dir.to_str().unwrap()).unwrap(), clients)
}

/// Every parquet file anywhere under `dir`, log and checkpoints included.
fn all_parquet(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    out
}

/// Data files (not checkpoints) holding a row of `client`: either in a
/// `client_id=<client>` partition folder or with the value in their
/// `client_id` column.
fn files_with_client(dir: &Path, client: &str) -> Vec<PathBuf> {
    all_parquet(dir)
        .into_iter()
        .filter(|p| !p.components().any(|c| c.as_os_str() == "_delta_log"))
        .filter(|p| {
            if p.components()
                .any(|c| c.as_os_str() == format!("client_id={client}").as_str())
            {
                return true;
            }
            let file = std::fs::File::open(p).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
            let has_column = reader.schema().field_with_name(CLIENT_ID).is_ok();
            if !has_column {
                return false;
            }
            reader.build().unwrap().any(|batch| {
                let batch = batch.unwrap();
                let column = batch.column_by_name(CLIENT_ID).unwrap();
                let column =
                    arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8).unwrap();
                let strings = column.as_string::<i32>();
                (0..strings.len()).any(|i| strings.is_valid(i) && strings.value(i) == client)
            })
        })
        .collect()
}

#[tokio::test]
async fn erasing_a_client_leaves_no_row_and_no_file_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (warehouse, clients) = demo_warehouse(dir.path()).await;
    let (gone, kept) = (&clients[0], &clients[1]);
    // Compaction first, so older files holding the client's rows exist
    // (removed from the table but still on storage).
    MaintainBuilder::new(&warehouse).execute().await.unwrap();
    assert!(!files_with_client(dir.path(), gone).is_empty());

    let mut kept_before = Vec::new();
    let mut gone_before = Vec::new();
    for def in client_tables() {
        kept_before.push(count_client_rows(&warehouse, def, kept).await.unwrap());
        gone_before.push(count_client_rows(&warehouse, def, gone).await.unwrap());
    }
    let fx_before = count_all(&warehouse, &FX_RATES).await;

    let audit = EraseBuilder::new(&warehouse, gone.clone(), "dpo@agency.example")
        .with_reason("ticket GDPR-42")
        .execute()
        .await
        .unwrap();

    // No row of the erased client in any table; every other row stays.
    for (i, def) in client_tables().into_iter().enumerate() {
        assert_eq!(
            count_client_rows(&warehouse, def, gone).await.unwrap(),
            0,
            "{}",
            def.name
        );
        assert_eq!(
            count_client_rows(&warehouse, def, kept).await.unwrap(),
            kept_before[i],
            "{}",
            def.name
        );
    }
    assert_eq!(count_all(&warehouse, &FX_RATES).await, fx_before);
    // No data file with a row of it remains on storage.
    assert_eq!(files_with_client(dir.path(), gone), Vec::<PathBuf>::new());
    assert!(!files_with_client(dir.path(), kept).is_empty());

    // The audit entry names who, when, which tables and versions.
    assert_eq!(audit.client_id, *gone);
    assert_eq!(audit.requested_by, "dpo@agency.example");
    let names: Vec<_> = audit.tables.iter().map(|t| t.table).collect();
    assert_eq!(
        names,
        [
            "ad_performance",
            "web_sessions",
            "orders",
            "ingest_runs",
            "quarantine"
        ]
    );
    for (t, before) in audit.tables.iter().zip(&gone_before) {
        assert_eq!(t.rows_deleted, *before, "{}", t.table);
        if t.rows_deleted > 0 {
            assert_eq!(
                t.version_deleted,
                t.version_before.map(|v| v + 1),
                "{}",
                t.table
            );
        } else {
            assert_eq!(t.version_deleted, None, "{}", t.table);
        }
    }
    assert!(audit.tables[0].rows_deleted > 0);
    let written = std::fs::read_to_string(dir.path().join(&audit.audit_path)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&written).unwrap();
    assert_eq!(json["client_sha256"], client_sha256(gone).as_str());
    assert!(json.get("client_id").is_none(), "{json}");
    assert_eq!(json["requested_by"], "dpo@agency.example");
    assert_eq!(json["reason"], "ticket GDPR-42");
    assert_eq!(json["tables"].as_array().unwrap().len(), 5);
    assert!(json["started_at"].as_str().unwrap().ends_with('Z'));

    // A second erasure of the same client: it no longer exists.
    let again = EraseBuilder::new(&warehouse, gone.clone(), "dpo")
        .execute()
        .await;
    assert!(matches!(again, Err(Error::UnknownClient(_))), "{again:?}");
}

/// Every place under `dir` (folder names, file bytes, and every value of
/// every Parquet file, log checkpoints included, decoded) that holds one of
/// `needles`.
fn traces_of(dir: &Path, needles: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.to_string_lossy().to_string();
            let mut texts = vec![name.clone()];
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                texts.push(String::from_utf8_lossy(&bytes).into_owned());
                if path.extension().is_some_and(|e| e == "parquet") {
                    let reader = ParquetRecordBatchReaderBuilder::try_new(
                        std::fs::File::open(&path).unwrap(),
                    )
                    .unwrap()
                    .build()
                    .unwrap();
                    let batches: Vec<_> = reader.map(Result::unwrap).collect();
                    texts.push(
                        arrow::util::pretty::pretty_format_batches(&batches)
                            .unwrap()
                            .to_string(),
                    );
                }
            }
            for needle in needles {
                if texts.iter().any(|t| t.contains(needle.as_str())) {
                    found.push(format!("{name}: {needle}"));
                }
            }
        }
    }
    found
}

/// The campaign names and account ids only `client` has.
async fn names_only_of(warehouse: &Warehouse, client: &str) -> Vec<String> {
    let table = warehouse.open_table(&AD_PERFORMANCE).await.unwrap();
    let ctx = SessionContext::new();
    ctx.register_table("t", table.table_provider().await.unwrap())
        .unwrap();
    let mut out = Vec::new();
    for column in ["campaign_name", "account_id", "campaign_id"] {
        let sql = format!(
            "SELECT DISTINCT CAST({column} AS VARCHAR) FROM t WHERE client_id = '{client}' AND {column} IS NOT NULL \
             EXCEPT SELECT DISTINCT CAST({column} AS VARCHAR) FROM t WHERE client_id <> '{client}' AND {column} IS NOT NULL"
        );
        for b in ctx.sql(&sql).await.unwrap().collect().await.unwrap() {
            let c = b.column(0).as_string_view();
            out.extend((0..c.len()).map(|i| c.value(i).to_owned()));
        }
    }
    out
}

#[tokio::test]
async fn after_an_erasure_no_byte_under_the_warehouse_names_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let (warehouse, clients) = demo_warehouse(dir.path()).await;
    let (gone, kept) = (&clients[0], &clients[1]);
    // Compaction and a checkpoint first: the client is then in commits,
    // a checkpoint and removed files as well as in the current files.
    MaintainBuilder::new(&warehouse).execute().await.unwrap();
    // A quarantine slice of the client that a later run emptied: no row of
    // it is current, but the log's commits still name the raw record.
    let day = NaiveDate::from_ymd_opt(2025, 5, 30).unwrap();
    let raw = serde_json::json!({"campaign_name": "quarantined-only-campaign-7731"});
    let reject = crate::sources::connectors::Reject::new("spend: not a number", &raw);
    crate::lake::quarantine::replace_quarantine(
        &warehouse,
        "run-q1",
        gone,
        "meta_ads",
        (day, day),
        &[reject],
    )
    .await
    .unwrap();
    crate::lake::quarantine::replace_quarantine(
        &warehouse,
        "run-q2",
        gone,
        "meta_ads",
        (day, day),
        &[],
    )
    .await
    .unwrap();
    let mut needles = vec![gone.clone(), "quarantined-only-campaign-7731".to_owned()];
    needles.extend(names_only_of(&warehouse, gone).await);
    assert!(needles.len() > 3, "{needles:?}");
    assert!(!traces_of(dir.path(), &needles).is_empty());

    let audit = EraseBuilder::new(&warehouse, gone.clone(), "dpo@agency.example")
        .with_reason("ticket GDPR-42")
        .execute()
        .await
        .unwrap();
    assert!(audit.tables.iter().any(|t| t.log_entries_removed > 0));
    assert_eq!(traces_of(dir.path(), &needles), Vec::<String>::new());

    // The tables still open, read and take writes; the other client is
    // whole, and its names are still where they were.
    for def in client_tables() {
        let t = warehouse.open_table(def).await.unwrap();
        assert!(t.version().is_some(), "{}", def.name);
    }
    assert!(
        count_client_rows(&warehouse, &AD_PERFORMANCE, kept)
            .await
            .unwrap()
            > 0
    );
    assert!(!traces_of(dir.path(), std::slice::from_ref(kept)).is_empty());
    MaintainBuilder::new(&warehouse).execute().await.unwrap();
    assert_eq!(traces_of(dir.path(), &needles), Vec::<String>::new());
}

#[tokio::test]
async fn erasing_an_unknown_client_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (warehouse, _) = demo_warehouse(dir.path()).await;
    let versions: Vec<_> = {
        let mut v = Vec::new();
        for def in all_tables() {
            v.push(warehouse.open_table(def).await.unwrap().version());
        }
        v
    };
    let files = all_parquet(dir.path()).len();
    let err = EraseBuilder::new(&warehouse, "no-such-client", "dpo")
        .execute()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown client 'no-such-client': no table holds a row of it; nothing was changed"
    );
    for (def, version) in all_tables().into_iter().zip(versions) {
        assert_eq!(
            warehouse.open_table(def).await.unwrap().version(),
            version,
            "{}",
            def.name
        );
    }
    assert_eq!(all_parquet(dir.path()).len(), files);
    assert!(!dir.path().join(AUDIT_PREFIX).exists());
}

#[tokio::test]
async fn erasure_needs_who_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (warehouse, clients) = demo_warehouse(dir.path()).await;
    let err = EraseBuilder::new(&warehouse, clients[0].clone(), " ")
        .execute()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--by"), "{err}");
    assert!(
        count_client_rows(&warehouse, &AD_PERFORMANCE, &clients[0])
            .await
            .unwrap()
            > 0
    );
    assert!(
        count_client_rows(&warehouse, &INGEST_RUNS, &clients[0])
            .await
            .unwrap()
            > 0
    );
}

async fn count_all(warehouse: &Warehouse, def: &TableDef) -> usize {
    let table = warehouse.open_table(def).await.unwrap();
    let ctx = SessionContext::new();
    ctx.read_table(table.table_provider().await.unwrap())
        .unwrap()
        .count()
        .await
        .unwrap()
}

/// Runs `sql` for `scope` through the engine's result cache and drains it,
/// so the answer is stored.
async fn cached(engine: &adlake_engine::Engine, scope: &adlake_engine::Scope, sql: &str) {
    use futures::StreamExt as _;
    let query = engine.plan(scope, sql).await.unwrap();
    let (mut stream, _) = engine
        .execute_cached(scope, sql, query, false)
        .await
        .unwrap();
    while let Some(batch) = stream.next().await {
        batch.unwrap();
    }
    engine.cache().settle().await;
}

#[tokio::test]
async fn the_servers_cache_drops_the_erased_clients_answers() {
    use adlake_engine::{CacheStatus, Engine, Scope};

    let dir = tempfile::tempdir().unwrap();
    let (warehouse, clients) = demo_warehouse(dir.path()).await;
    let (gone, kept) = (&clients[0], &clients[1]);
    let engine = Engine::open(dir.path().to_str().unwrap()).await.unwrap();
    let ads = "SELECT client_id, sum(clicks) FROM ad_performance GROUP BY client_id";
    let fx = "SELECT count(*) FROM fx_rates";
    cached(&engine, &Scope::clients([gone.as_str()]), ads).await;
    cached(&engine, &Scope::AllClients, ads).await;
    cached(&engine, &Scope::clients([gone.as_str()]), fx).await;
    assert_eq!(engine.cache().stats().entries, 3);

    EraseBuilder::new(&warehouse, gone.clone(), "dpo")
        .execute()
        .await
        .unwrap();
    engine.refresh().await.unwrap();
    // Both answers that read ad_performance held the client's rows and are
    // gone; the fx_rates answer holds none (fx_rates did not change) and
    // stays.
    assert_eq!(engine.cache().stats().entries, 1);
    let scope = Scope::clients([gone.as_str()]);
    let query = engine.plan(&scope, fx).await.unwrap();
    let (_, status) = engine
        .execute_cached(&scope, fx, query, false)
        .await
        .unwrap();
    assert_eq!(status, CacheStatus::Hit);
    // The erased client's scope now sees nothing; another client still
    // sees its rows.
    let rows = |scope: Scope| {
        let engine = &engine;
        async move {
            let query = engine
                .plan(&scope, "SELECT count(*) FROM ad_performance")
                .await
                .unwrap();
            let (stream, status) = engine
                .execute_cached(&scope, "n", query, false)
                .await
                .unwrap();
            assert_eq!(status, CacheStatus::Miss);
            let batches: Vec<_> = futures::TryStreamExt::try_collect(stream).await.unwrap();
            batches[0].column(0).as_primitive::<Int64Type>().value(0)
        }
    };
    assert_eq!(rows(Scope::clients([gone.as_str()])).await, 0);
    let kept_rows = count_client_rows(&warehouse, &AD_PERFORMANCE, kept)
        .await
        .unwrap();
    assert_eq!(
        rows(Scope::clients([kept.as_str()])).await as u64,
        kept_rows
    );
}
