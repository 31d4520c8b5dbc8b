//! Where the tables live: resolving a warehouse location to a base URL, and
//! opening or creating each table under it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use adlake_engine::schema::{TableDef, all_tables};
use arrow::array::RecordBatch;
use deltalake::kernel::StructField;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use tracing::{debug, info};
use url::Url;

use crate::error::{Error, Result};
use crate::lake::commit::{DEFAULT_ATTEMPTS, commit_with_retry};
use crate::lake::layout::added_columns;

/// Commits between Delta checkpoints of every table this crate creates.
pub const CHECKPOINT_INTERVAL: &str = "10";

/// The root of all tables: each table is the folder `<base>/<table name>/`.
///
/// Clones share a cache of the tables they loaded: a write starts from the
/// last loaded version and reads only the log entries committed since,
/// instead of reading the last checkpoint and replaying the log per write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warehouse {
    base: Url,
    loaded: LoadedTables,
}

/// The latest loaded version of each table, shared by a warehouse's clones.
#[derive(Clone, Default)]
struct LoadedTables(Arc<Mutex<HashMap<&'static str, DeltaTable>>>);

impl LoadedTables {
    fn get(&self, name: &str) -> Option<DeltaTable> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Keeps `table` unless a later version is already kept.
    fn put(&self, name: &'static str, table: &DeltaTable) {
        let Some(version) = table.version() else {
            return;
        };
        let mut tables = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let newer_kept = tables
            .get(name)
            .and_then(DeltaTable::version)
            .is_some_and(|kept| kept > version);
        if !newer_kept {
            tables.insert(name, table.clone());
        }
    }

    fn forget(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

impl std::fmt::Debug for LoadedTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoadedTables")
    }
}

/// A cache does not make two warehouses different.
impl PartialEq for LoadedTables {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for LoadedTables {}

impl Warehouse {
    /// Resolves a warehouse location given as a local directory path or a
    /// `file://` URL, creating the directory if needed and checking that it
    /// is writable.
    ///
    /// Object stores (`s3://bucket/prefix`, `gs://`, `az://`) take their
    /// credentials from the environment; a missing credential is an
    /// [`Error::InvalidWarehouse`] naming the variables to set. Commits
    /// there use conditional puts (create-if-absent), so several writers
    /// are safe without a lock service.
    pub fn open(location: &str) -> Result<Self> {
        if let Some((scheme, _)) = location.trim().split_once("://")
            && adlake_engine::catalog::ObjectStoreKind::of(scheme).is_some()
        {
            let base =
                adlake_engine::catalog::remote_warehouse_url(location.trim()).map_err(|e| {
                    Error::InvalidWarehouse {
                        location: location.to_owned(),
                        reason: match e {
                            adlake_engine::Error::Warehouse { message, .. } => message,
                            other => other.to_string(),
                        },
                    }
                })?;
            return Ok(Self {
                base,
                loaded: LoadedTables::default(),
            });
        }
        let dir = local_dir(location)?;
        std::fs::create_dir_all(&dir).map_err(|source| Error::WarehouseNotWritable {
            path: dir.clone(),
            source,
        })?;
        let dir = dir
            .canonicalize()
            .map_err(|source| Error::WarehouseNotWritable {
                path: dir.clone(),
                source,
            })?;
        probe_writable(&dir)?;
        let base = Url::from_directory_path(&dir).map_err(|()| Error::InvalidWarehouse {
            location: location.to_owned(),
            reason: "not an absolute directory path".to_owned(),
        })?;
        Ok(Self {
            base,
            loaded: LoadedTables::default(),
        })
    }

    /// The warehouse's base URL, ending with `/`.
    pub fn url(&self) -> &Url {
        &self.base
    }

    /// Storage options passed to delta-rs besides what it reads from the
    /// environment (none today: credentials come from the environment).
    pub fn storage_options(&self) -> std::collections::HashMap<String, String> {
        std::collections::HashMap::new()
    }

    /// The object store of the warehouse root (local folder or bucket
    /// prefix), for the files that are not tables: audit entries, upkeep
    /// locks, staged rows. `what` names them in errors.
    pub(crate) fn root_store(&self, what: &str) -> Result<Arc<dyn object_store::ObjectStore>> {
        let root = self.base.clone();
        if let Ok(dir) = root.to_file_path() {
            std::fs::create_dir_all(&dir).map_err(|source| Error::WarehouseNotWritable {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(DeltaTableBuilder::from_url(root)
            .and_then(|b| {
                b.with_storage_options(self.storage_options())
                    .build_storage()
            })
            .map_err(|e| Error::delta(what, e))?
            .object_store(None))
    }

    /// Whether the warehouse is on an object store rather than local disk.
    pub fn is_remote(&self) -> bool {
        self.base.scheme() != "file"
    }

    /// The URL of one table: the base joined with `<table name>/`.
    pub fn table_url(&self, table: &TableDef) -> Url {
        // Table names are fixed identifiers ([a-z_]), so the join cannot fail.
        self.base
            .join(&format!("{}/", table.name))
            .expect("table names are valid URL path segments")
    }

    /// The local directory of one table, when the warehouse is on local disk.
    pub fn table_dir(&self, table: &TableDef) -> Option<PathBuf> {
        self.table_url(table).to_file_path().ok()
    }

    /// Opens a table at its latest version, creating it (empty, with the
    /// definition's schema and partition columns) when it does not exist
    /// yet. A table this warehouse loaded before is brought up to date
    /// from the log entries committed since, not read again; one it loads
    /// afresh is first given the columns of later releases it lacks (see
    /// [`crate::lake::layout`]).
    pub async fn open_or_create(&self, def: &'static TableDef) -> Result<DeltaTable> {
        if let Some(mut table) = self.loaded.get(def.name) {
            match table.update_incremental(None).await {
                Ok(()) => {
                    self.loaded.put(def.name, &table);
                    return Ok(table);
                }
                Err(err) => {
                    // Replaced or removed behind our back: read it afresh.
                    debug!(table = def.name, error = %err, "reloading the table");
                    self.loaded.forget(def.name);
                }
            }
        }
        let table = self.open_table(def).await?;
        if table.version().is_some() {
            // First opened by this process: bring an older layout up to date
            // once, not on every write.
            let table = self.upgrade_layout(def, table).await?;
            self.loaded.put(def.name, &table);
            return Ok(table);
        }
        info!(table = def.name, "creating table");
        // Creating the table by writing an empty batch (rather than
        // CreateBuilder) lets delta-rs derive the Delta schema from the exact
        // Arrow schema the writers will use.
        let created = table
            .write([RecordBatch::new_empty(def.schema())])
            .with_save_mode(SaveMode::ErrorIfExists)
            .with_partition_columns(def.partition_columns.iter().copied())
            .with_table_name(def.name)
            .with_description(def.description)
            // Every slice is one commit: without frequent checkpoints each
            // open replays an ever longer JSON log (quadratic for a demo or
            // a backfill). Struct stats let readers skip files without
            // parsing JSON statistics.
            .with_configuration([
                ("delta.checkpointInterval", Some(CHECKPOINT_INTERVAL)),
                ("delta.checkpoint.writeStatsAsStruct", Some("true")),
            ])
            .await;
        match created {
            Ok(table) => {
                self.loaded.put(def.name, &table);
                Ok(table)
            }
            Err(err) => {
                // Another process may have created it in the meantime.
                let table = self.open_table(def).await?;
                if table.version().is_some() {
                    debug!(table = def.name, "table was created concurrently");
                    let table = self.upgrade_layout(def, table).await?;
                    self.loaded.put(def.name, &table);
                    Ok(table)
                } else {
                    Err(Error::delta(def.name, err))
                }
            }
        }
    }

    /// Keeps a table this process just committed to as the starting point
    /// of the next [`Warehouse::open_or_create`] (unless a later version is
    /// kept already).
    pub fn remember(&self, def: &'static TableDef, table: &DeltaTable) {
        self.loaded.put(def.name, table);
    }

    /// Opens a table, which may not exist yet (version `None`), reading it
    /// afresh from storage.
    pub async fn open_table(&self, def: &TableDef) -> Result<DeltaTable> {
        let url = self.table_url(def);
        if let Some(dir) = self.table_dir(def) {
            std::fs::create_dir_all(&dir)
                .map_err(|source| Error::WarehouseNotWritable { path: dir, source })?;
        }
        let delta = |e| Error::delta(def.name, e);
        let mut table = DeltaTableBuilder::from_url(url)
            .and_then(DeltaTableBuilder::build)
            .map_err(delta)?;
        // A table not written yet has no log. Loading it would find that
        // out too, but the Delta kernel logs it as an error first.
        if !table
            .log_store()
            .is_delta_table_location()
            .await
            .map_err(delta)?
        {
            return Ok(table);
        }
        match table.load().await {
            Ok(()) | Err(DeltaTableError::NotATable(_)) => Ok(table),
            Err(err) => Err(delta(err)),
        }
    }

    /// Gives a table written by an older release the columns its
    /// definition gained since ([`added_columns`]), nullable: its rows
    /// keep their values and read null there. Losing the race to another
    /// writer adding them is fine. Returns the table at its latest
    /// version.
    async fn upgrade_layout(
        &self,
        def: &'static TableDef,
        table: DeltaTable,
    ) -> Result<DeltaTable> {
        let columns = added_columns(def);
        if columns.is_empty() {
            return Ok(table);
        }
        let opened = &table;
        commit_with_retry("adding columns", DEFAULT_ATTEMPTS, |attempt| async move {
            let table = if attempt > 1 {
                // Another writer committed first (maybe adding them).
                self.open_table(def).await?
            } else {
                opened.clone()
            };
            let schema = table
                .snapshot()
                .map_err(|e| Error::delta(def.name, e))?
                .schema();
            let missing: Vec<StructField> = columns
                .iter()
                .filter(|(name, _)| schema.field(name).is_none())
                .map(|(name, data_type)| StructField::new(*name, data_type.clone(), true))
                .collect();
            if missing.is_empty() {
                return Ok(table);
            }
            let names: Vec<&str> = missing.iter().map(|f| f.name().as_str()).collect();
            info!(table = def.name, columns = ?names, "adding columns to a table of an older layout");
            table
                .add_columns()
                .with_fields(missing)
                .await
                .map_err(|e| Error::delta(def.name, e))
        })
        .await
    }

    /// Creates every table of the warehouse that does not exist yet.
    /// Idempotent.
    pub async fn ensure_tables(&self) -> Result<()> {
        for def in all_tables() {
            self.open_or_create(def).await?;
        }
        Ok(())
    }
}

/// Turns a location into a local directory path, rejecting other schemes.
fn local_dir(location: &str) -> Result<PathBuf> {
    let invalid = |reason: &str| Error::InvalidWarehouse {
        location: location.to_owned(),
        reason: reason.to_owned(),
    };
    if location.trim().is_empty() {
        return Err(invalid("empty location"));
    }
    if let Some((scheme, _)) = location.split_once("://") {
        if !scheme.eq_ignore_ascii_case("file") {
            return Err(Error::UnsupportedScheme {
                scheme: scheme.to_ascii_lowercase(),
            });
        }
        let url = Url::parse(location).map_err(|e| invalid(&e.to_string()))?;
        return url
            .to_file_path()
            .map_err(|()| invalid("not a local file URL"));
    }
    std::path::absolute(Path::new(location)).map_err(|e| invalid(&e.to_string()))
}

/// Fails early, with the path in the message, when the directory cannot be
/// written; otherwise the first Delta commit would fail with a less useful
/// object-store error.
fn probe_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".adlake-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|source| Error::WarehouseNotWritable {
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use adlake_engine::schema::{AD_PERFORMANCE, INGEST_RUNS};
    use arrow::datatypes::DataType;

    #[test]
    fn rejects_unknown_schemes() {
        let err = Warehouse::open("ftp://host/warehouse").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported warehouse scheme 'ftp' (supported: file, s3, gs, az)"
        );
    }

    #[test]
    fn object_store_urls_need_a_bucket() {
        let err = Warehouse::open("s3:///prefix").unwrap_err();
        assert!(err.to_string().contains("no bucket"), "{err}");
    }

    #[test]
    fn resolves_paths_and_file_urls_to_the_same_base() {
        let dir = tempfile::tempdir().unwrap();
        let by_path = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap();
        let by_url = Warehouse::open(url.as_str().trim_end_matches('/')).unwrap();
        assert_eq!(by_path, by_url);
        assert!(by_path.url().as_str().ends_with('/'));
        let table = by_path.table_url(&AD_PERFORMANCE);
        assert!(table.as_str().ends_with("/ad_performance/"), "{table}");
    }

    #[test]
    fn unwritable_location_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let err = Warehouse::open(file.join("warehouse").to_str().unwrap()).unwrap_err();
        assert!(
            matches!(err, Error::WarehouseNotWritable { .. }),
            "unexpected error: {err}"
        );
    }

    #[tokio::test]
    async fn created_tables_keep_the_definition_schema() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
        warehouse.ensure_tables().await.unwrap();
        // Idempotent: a second call creates nothing new.
        warehouse.ensure_tables().await.unwrap();
        for def in all_tables() {
            let table = warehouse.open_table(def).await.unwrap();
            assert_eq!(table.version(), Some(0), "{}", def.name);
            let state = table.snapshot().unwrap();
            assert_eq!(
                state.metadata().partition_columns(),
                &def.partition_columns
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>(),
                "{}",
                def.name
            );
            let actual = state.snapshot().arrow_schema();
            assert_eq!(actual.fields().len(), def.schema.fields().len());
            for (want, got) in def.schema.fields().iter().zip(actual.fields()) {
                assert_eq!(want.name(), got.name(), "{}", def.name);
                assert_eq!(
                    want.is_nullable(),
                    got.is_nullable(),
                    "{}.{}",
                    def.name,
                    want.name()
                );
                assert!(
                    same_type(want.data_type(), got.data_type()),
                    "{}.{}: {} != {}",
                    def.name,
                    want.name(),
                    want.data_type(),
                    got.data_type()
                );
            }
        }
        let runs = warehouse.open_table(&INGEST_RUNS).await.unwrap();
        let schema = runs.snapshot().unwrap().snapshot().arrow_schema();
        assert!(matches!(
            schema.field_with_name("source_request_ids").unwrap().data_type(),
            DataType::List(item) if item.data_type() == &DataType::Utf8
        ));
    }

    /// Types equal up to the name Delta gives list items.
    fn same_type(a: &DataType, b: &DataType) -> bool {
        match (a, b) {
            (DataType::List(a), DataType::List(b)) => same_type(a.data_type(), b.data_type()),
            _ => a == b,
        }
    }
}
