//! Where the tables live: resolving a warehouse location to a base URL, and
//! opening or creating each table under it.

use std::path::{Path, PathBuf};

use adlake_engine::schema::{TableDef, all_tables};
use arrow::array::RecordBatch;
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use tracing::{debug, info};
use url::Url;

use crate::error::{Error, Result};

/// The root of all tables: each table is the folder `<base>/<table name>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warehouse {
    base: Url,
}

impl Warehouse {
    /// Resolves a warehouse location given as a local directory path or a
    /// `file://` URL, creating the directory if needed and checking that it
    /// is writable.
    ///
    /// Object stores (`s3://`, `gs://`, `az://`) are not wired up yet and are
    /// rejected with [`Error::UnsupportedScheme`].
    pub fn open(location: &str) -> Result<Self> {
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
        Ok(Self { base })
    }

    /// The warehouse's base URL, ending with `/`.
    pub fn url(&self) -> &Url {
        &self.base
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

    /// Opens a table, creating it (empty, with the definition's schema and
    /// partition columns) when it does not exist yet.
    pub async fn open_or_create(&self, def: &TableDef) -> Result<DeltaTable> {
        let table = self.open_table(def).await?;
        if table.version().is_some() {
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
            .await;
        match created {
            Ok(table) => Ok(table),
            Err(err) => {
                // Another process may have created it in the meantime.
                let table = self.open_table(def).await?;
                if table.version().is_some() {
                    debug!(table = def.name, "table was created concurrently");
                    Ok(table)
                } else {
                    Err(Error::delta(def.name, err))
                }
            }
        }
    }

    /// Opens a table, which may not exist yet (version `None`).
    pub async fn open_table(&self, def: &TableDef) -> Result<DeltaTable> {
        let url = self.table_url(def);
        if let Some(dir) = self.table_dir(def) {
            std::fs::create_dir_all(&dir)
                .map_err(|source| Error::WarehouseNotWritable { path: dir, source })?;
        }
        DeltaTable::try_from_url(url)
            .await
            .map_err(|e| Error::delta(def.name, e))
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
    fn rejects_object_store_schemes_for_now() {
        let err = Warehouse::open("s3://bucket/prefix").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported warehouse scheme 's3' (supported: file)"
        );
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
