use std::path::Path;
use std::sync::Arc;

use adlake_engine::schema::{AD_PERFORMANCE, ORDERS};
use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use chrono::NaiveDate;
use datafusion::prelude::SessionContext;

use super::*;
use crate::demo::{DemoOptions, Progress, run_demo};
use crate::lake::commit::{is_lost_race, lost_race};

/// A clock `offset_days` after the real one.
#[derive(Debug)]
struct Ahead(i64);

impl Clock for Ahead {
    fn current_timestamp_millis(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.0 * 24 * 3600 * 1000
    }
}

/// The synthetic data of [`demo_warehouse`], to write its slices again.
fn demo_config() -> crate::synthetic::SyntheticConfig {
    crate::synthetic::SyntheticConfig {
        clients: 2,
        days: 4,
        rows: 800,
        seed: 7,
        end_date: NaiveDate::from_ymd_opt(2025, 3, 31).unwrap(),
        incidents: false,
    }
}

/// The demo warehouse with one commit per ad platform, as the daily runs
/// write it: one file per platform in each partition, the small files
/// compaction merges.
async fn demo_warehouse(dir: &Path) -> Warehouse {
    let opts = DemoOptions {
        commit_per_source: true,
        ..DemoOptions::new(dir.to_str().unwrap(), &demo_config())
    };
    run_demo(&opts, Progress::Hidden).await.unwrap();
    Warehouse::open(dir.to_str().unwrap()).unwrap()
}

/// Parquet files on disk under a table's folder (the log excluded).
fn parquet_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("_delta_log") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    out
}

/// (row count, exact decimal sum of a money column) of a table, read back
/// through DataFusion.
async fn totals(warehouse: &Warehouse, def: &TableDef, measure: &str) -> (i64, String) {
    let table = warehouse.open_table(def).await.unwrap();
    let ctx = SessionContext::new();
    ctx.register_table("t", table.table_provider().await.unwrap())
        .unwrap();
    // The money columns are Decimal128: their sum is exact whatever order
    // the files are read in (a float sum is not, in its last digit).
    let sql = format!("SELECT count(*), CAST(sum({measure}) AS VARCHAR) FROM t");
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    let b = &batches[0];
    (
        b.column(0).as_primitive::<Int64Type>().value(0),
        arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8)
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .to_owned(),
    )
}

/// Distinct (client, date) partitions of ad_performance, from the files on disk.
fn partitions(files: &[std::path::PathBuf]) -> std::collections::BTreeSet<std::path::PathBuf> {
    files
        .iter()
        .map(|f| f.parent().unwrap().to_path_buf())
        .collect()
}

#[tokio::test]
async fn compaction_leaves_one_file_per_partition_and_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = demo_warehouse(dir.path()).await;
    let ad_dir = warehouse.table_dir(&AD_PERFORMANCE).unwrap();
    let files_before = parquet_files(&ad_dir);
    let parts = partitions(&files_before);
    // The daily runs write one file per platform and partition, so there
    // is something to compact.
    assert!(
        files_before.len() > parts.len(),
        "{} files in {} partitions",
        files_before.len(),
        parts.len()
    );
    let ad_totals = totals(&warehouse, &AD_PERFORMANCE, "spend").await;
    let order_totals = totals(&warehouse, &ORDERS, "total_price").await;

    let report = MaintainBuilder::new(&warehouse)
        .with_zorder(true)
        .execute()
        .await
        .unwrap();
    let ad = report.iter().find(|r| r.table == "ad_performance").unwrap();
    assert_eq!(ad.files_before, files_before.len());
    assert_eq!(
        ad.files_after,
        parts.len(),
        "one file per (client, date) partition"
    );
    assert_eq!(ad.files_removed as usize, files_before.len());
    assert_eq!(ad.files_added as usize, parts.len());
    assert_eq!(ad.version_after, ad.version_before.map(|v| v + 1));
    assert!(ad.checkpointed);
    // Default retention: the replaced files were removed just now, so
    // vacuum keeps every one of them for readers of older versions.
    assert_eq!(ad.files_vacuumed, 0);
    assert_eq!(
        parquet_files(&ad_dir).len(),
        files_before.len() + parts.len()
    );
    // Z-ordered by one column: every new file is sorted by campaign.
    let new_files: Vec<_> = parquet_files(&ad_dir)
        .into_iter()
        .filter(|f| !files_before.contains(f))
        .collect();
    assert_eq!(new_files.len(), parts.len());
    for file in &new_files {
        let reader =
            deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(file).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
        let mut campaigns = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            let column = arrow::compute::cast(
                batch.column_by_name(ZORDER_COLUMN).unwrap(),
                &arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            campaigns.extend(
                column
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.unwrap().to_owned()),
            );
        }
        assert!(campaigns.len() > 1, "{}", file.display());
        assert!(
            campaigns.windows(2).all(|w| w[0] <= w[1]),
            "{} is not sorted by {ZORDER_COLUMN}",
            file.display()
        );
    }
    let checkpoint = ad_dir.join("_delta_log").join(format!(
        "{:020}.checkpoint.parquet",
        ad.version_after.unwrap()
    ));
    assert!(checkpoint.exists(), "{}", checkpoint.display());

    // Same rows, same sums, in every table.
    assert_eq!(
        totals(&warehouse, &AD_PERFORMANCE, "spend").await,
        ad_totals
    );
    assert_eq!(
        totals(&warehouse, &ORDERS, "total_price").await,
        order_totals
    );

    // Eight days later the replaced files are past the retention and go.
    let later = MaintainBuilder::new(&warehouse)
        .with_tables(vec![&AD_PERFORMANCE])
        .with_clock(Arc::new(Ahead(8)))
        .execute()
        .await
        .unwrap();
    assert_eq!(later[0].files_removed, 0, "nothing left to compact");
    assert_eq!(later[0].files_vacuumed, files_before.len());
    assert_eq!(parquet_files(&ad_dir).len(), parts.len());
    assert_eq!(
        totals(&warehouse, &AD_PERFORMANCE, "spend").await,
        ad_totals
    );
}

#[tokio::test]
async fn retention_below_the_safety_minimum_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = demo_warehouse(dir.path()).await;
    let before = warehouse
        .open_table(&AD_PERFORMANCE)
        .await
        .unwrap()
        .version();
    let files = parquet_files(&warehouse.table_dir(&AD_PERFORMANCE).unwrap()).len();
    let err = MaintainBuilder::new(&warehouse)
        .with_retention(Duration::from_secs(3600))
        .execute()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: retention of 1h is shorter than the safety minimum of 24h: files a running query or write still needs could be deleted"
    );
    assert_eq!(
        warehouse
            .open_table(&AD_PERFORMANCE)
            .await
            .unwrap()
            .version(),
        before
    );
    assert_eq!(
        parquet_files(&warehouse.table_dir(&AD_PERFORMANCE).unwrap()).len(),
        files
    );
}

#[tokio::test]
async fn missing_tables_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
    let report = MaintainBuilder::new(&warehouse).execute().await.unwrap();
    assert_eq!(report.len(), all_tables().len());
    assert!(
        report
            .iter()
            .all(|r| r.version_before.is_none() && r.attempts == 0)
    );
}

#[tokio::test]
async fn compaction_racing_with_slice_writes_loses_no_row() {
    use crate::lake::lineage::Lineage;
    use crate::lake::writer::{Trigger, WriteSliceBuilder};
    use crate::synthetic::Synthetic;

    let dir = tempfile::tempdir().unwrap();
    let warehouse = demo_warehouse(dir.path()).await;
    // Rewrite every slice of client 0 while compaction runs: whichever
    // commits second loses the race and runs again (compaction inside
    // upkeep, the slice here as the job runner would); rows never change.
    let config = demo_config();
    let synthetic = Synthetic::new(config.clone());
    let before = totals(&warehouse, &AD_PERFORMANCE, "spend").await;
    let client = synthetic.clients()[0].clone();
    let writer = {
        let warehouse = warehouse.clone();
        let synthetic = synthetic.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let mut lost = 0;
            for platform in client.platforms.clone() {
                loop {
                    let lineage = Lineage::new(crate::synthetic::SYNTHETIC_SOURCE, "rewrite");
                    let written = WriteSliceBuilder::new(&warehouse, &AD_PERFORMANCE)
                        .with_client(client.id.clone())
                        .with_source(Some(platform.as_str()))
                        .with_date_range(config.start_date().unwrap(), config.end_date)
                        .with_run("rewrite")
                        .with_trigger(Trigger::Manual)
                        .execute(synthetic.ad_performance_for(0, platform, &lineage))
                        .await;
                    match written {
                        Ok(_) => break,
                        Err(err) if lost_race(&err) && lost < 10 => lost += 1,
                        Err(err) => panic!("slice write failed: {err}"),
                    }
                }
            }
        })
    };
    let report = MaintainBuilder::new(&warehouse)
        .with_tables(vec![&AD_PERFORMANCE])
        .execute()
        .await
        .unwrap();
    writer.await.unwrap();
    assert!(report[0].attempts >= 1);
    // Same data regenerated from the same seed: totals are unchanged.
    assert_eq!(totals(&warehouse, &AD_PERFORMANCE, "spend").await, before);
}

#[tokio::test]
async fn two_maintainers_at_once_compact_a_table_once() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = demo_warehouse(dir.path()).await;
    let ad_dir = warehouse.table_dir(&AD_PERFORMANCE).unwrap();
    let files_before = parquet_files(&ad_dir);
    let parts = partitions(&files_before);
    let before = totals(&warehouse, &AD_PERFORMANCE, "spend").await;
    let run = || {
        MaintainBuilder::new(&warehouse)
            .with_tables(vec![&AD_PERFORMANCE])
            .with_vacuum(false)
            .execute()
    };
    let (a, b) = tokio::join!(run(), run());
    let (a, b) = (a.unwrap().remove(0), b.unwrap().remove(0));
    // Whichever came second either found the lock taken or nothing left
    // to compact; never a second copy of the rows.
    let compacted: Vec<_> = [&a, &b]
        .into_iter()
        .filter(|r| r.files_removed > 0)
        .collect();
    assert_eq!(compacted.len(), 1, "{a:?} {b:?}");
    assert_eq!(compacted[0].files_removed as usize, files_before.len());
    assert_eq!(compacted[0].files_after, parts.len());
    let table = warehouse.open_table(&AD_PERFORMANCE).await.unwrap();
    assert_eq!(file_count(&table, &AD_PERFORMANCE).unwrap(), parts.len());
    assert_eq!(totals(&warehouse, &AD_PERFORMANCE, "spend").await, before);
    // The lock is released: a later run takes it.
    assert!(
        !dir.path()
            .join(LOCK_PREFIX)
            .join("ad_performance.json")
            .exists()
    );
    let again = run().await.unwrap();
    assert!(!again[0].skipped_locked);
}

#[tokio::test]
async fn a_held_lock_skips_the_table_and_a_stale_one_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = demo_warehouse(dir.path()).await;
    let lock = dir.path().join(LOCK_PREFIX).join("ad_performance.json");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(&lock, "{}").unwrap();
    let version = warehouse
        .open_table(&AD_PERFORMANCE)
        .await
        .unwrap()
        .version();
    let report = MaintainBuilder::new(&warehouse)
        .with_tables(vec![&AD_PERFORMANCE])
        .execute()
        .await
        .unwrap();
    assert!(report[0].skipped_locked);
    assert_eq!(report[0].files_removed, 0);
    assert_eq!(
        warehouse
            .open_table(&AD_PERFORMANCE)
            .await
            .unwrap()
            .version(),
        version
    );
    // A lock older than the TTL was left by a maintainer that died.
    let old = std::time::SystemTime::now() - LOCK_TTL - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&lock)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let report = MaintainBuilder::new(&warehouse)
        .with_tables(vec![&AD_PERFORMANCE])
        .execute()
        .await
        .unwrap();
    assert!(!report[0].skipped_locked);
    assert!(report[0].files_removed > 0);
    assert!(!lock.exists());
}

#[tokio::test]
async fn a_large_table_is_compacted_in_bounded_commits() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = demo_warehouse(dir.path()).await;
    let ad_dir = warehouse.table_dir(&AD_PERFORMANCE).unwrap();
    let files_before = parquet_files(&ad_dir);
    let parts = partitions(&files_before);
    // Partitions holding two files or more, counted from the disk: with
    // one file per commit allowed, each of them is a commit of its own.
    let with_several = parts
        .iter()
        .filter(|p| {
            files_before
                .iter()
                .filter(|f| f.parent() == Some(p))
                .count()
                >= 2
        })
        .count();
    assert!(with_several >= 2, "{with_several}");
    let before = totals(&warehouse, &AD_PERFORMANCE, "spend").await;

    let report = MaintainBuilder::new(&warehouse)
        .with_tables(vec![&AD_PERFORMANCE])
        .with_files_per_commit(1)
        .execute()
        .await
        .unwrap();
    let ad = &report[0];
    assert_eq!(ad.commits as usize, with_several);
    assert_eq!(
        ad.version_after,
        ad.version_before.map(|v| v + with_several as u64)
    );
    assert_eq!(ad.files_after, parts.len());
    assert_eq!(totals(&warehouse, &AD_PERFORMANCE, "spend").await, before);

    // Every commit of the run is an OPTIMIZE that replaced exactly one
    // partition's files.
    let table = warehouse.open_table(&AD_PERFORMANCE).await.unwrap();
    let history: Vec<_> = futures::TryStreamExt::try_collect(table.history(Some(with_several)))
        .await
        .unwrap();
    assert_eq!(history.len(), with_several);
    for commit in history {
        assert_eq!(commit.operation.as_deref(), Some("OPTIMIZE"));
    }
}

#[tokio::test]
async fn a_slice_write_that_read_files_compaction_replaced_loses_the_race() {
    use crate::lake::lineage::Lineage;
    use crate::synthetic::Synthetic;

    let dir = tempfile::tempdir().unwrap();
    let warehouse = demo_warehouse(dir.path()).await;
    let config = demo_config();
    let synthetic = Synthetic::new(config.clone());
    let client = synthetic.clients()[0].clone();
    let platform = client.platforms[0];
    let before = totals(&warehouse, &AD_PERFORMANCE, "spend").await;

    // A writer reads the table, then compaction replaces every file it read
    // before the writer commits its replacement of one slice.
    let stale = warehouse.open_table(&AD_PERFORMANCE).await.unwrap();
    let report = MaintainBuilder::new(&warehouse)
        .with_tables(vec![&AD_PERFORMANCE])
        .with_vacuum(false)
        .execute()
        .await
        .unwrap();
    assert!(report[0].files_removed > 0);
    let lineage = Lineage::new(crate::synthetic::SYNTHETIC_SOURCE, "late");
    let batches: Vec<_> = synthetic
        .ad_performance_for(0, platform, &lineage)
        .collect();
    let predicate = format!(
        "client_id = '{}' AND platform = '{}' AND date >= '{}' AND date <= '{}'",
        client.id,
        platform.as_str(),
        config.start_date().unwrap(),
        config.end_date
    );
    let written = stale
        .write(batches)
        .with_save_mode(deltalake::protocol::SaveMode::Overwrite)
        .with_replace_where(predicate)
        .await;
    // Committing it would leave the compacted copy of the slice's old rows
    // beside its new ones (the rows would count twice). It must fail as a
    // lost race, which the job runner retries from the new version.
    let err = written.expect_err("the stale write committed over compacted files");
    assert!(is_lost_race(&err), "{err}");
    assert_eq!(totals(&warehouse, &AD_PERFORMANCE, "spend").await, before);
}
