//! The warehouse's Delta tables, their current snapshots and versions.
//!
//! Each table is held as an immutable [`TableSnapshot`] (its Delta version and
//! a DataFusion provider over that version's files) behind a lock that is
//! only taken to swap or clone an `Arc`. A query takes the snapshots once at
//! planning time, so it reads one consistent version of every table no
//! matter what lands meanwhile; [`Catalog::refresh`] follows new versions by
//! replaying only the log entries written since the last look.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use datafusion::catalog::Session;
use datafusion::catalog::TableProvider;
use datafusion::datasource::empty::EmptyTable;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use url::Url;

use crate::error::{Error, Result};
use crate::scan::index::FileIndex;
use crate::schema::{TableDef, all_tables};

/// One version of one table, ready to scan.
#[derive(Clone)]
pub struct TableSnapshot {
    /// The table's definition.
    pub def: &'static TableDef,
    /// The Delta version, or `None` while the table does not exist yet.
    pub version: Option<u64>,
    /// A provider reading exactly this version.
    pub provider: Arc<dyn TableProvider>,
    /// The loaded Delta table (absent while the table does not exist).
    table: Option<DeltaTable>,
    /// This version's active files (absent while the table does not exist).
    index: Option<Arc<FileIndex>>,
}

impl TableSnapshot {
    /// Active data files of this version and their total size in bytes
    /// (`(0, 0)` while the table does not exist).
    pub fn file_stats(&self) -> (usize, u64) {
        self.index
            .as_ref()
            .map_or((0, 0), |index| (index.len(), index.bytes()))
    }
}

impl std::fmt::Debug for TableSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableSnapshot")
            .field("table", &self.def.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The tables of one warehouse.
#[derive(Debug)]
pub struct Catalog {
    location: Url,
    tables: BTreeMap<&'static str, RwLock<Arc<TableSnapshot>>>,
}

/// Resolves a warehouse given as a local path or a URL.
///
/// Local warehouses must exist and be readable directories: a typo in a
/// path must not silently serve an empty warehouse.
pub fn warehouse_url(location: &str) -> Result<Url> {
    let err = |message: String| Error::Warehouse {
        location: location.to_string(),
        message,
    };
    let url = match Url::parse(location) {
        Ok(url) if url.scheme().len() > 1 => url,
        // A bare path (or a Windows drive letter parsed as a scheme).
        _ => {
            let path = Path::new(location);
            let absolute =
                std::path::absolute(path).map_err(|e| err(format!("cannot resolve path: {e}")))?;
            Url::from_directory_path(&absolute)
                .map_err(|()| err("not an absolute directory path".into()))?
        }
    };
    match url.scheme() {
        "file" => {
            let path = url
                .to_file_path()
                .map_err(|()| err("not a local file URL".into()))?;
            let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => err("does not exist".into()),
                std::io::ErrorKind::PermissionDenied => err("permission denied".into()),
                // The path is looked up as a directory, so a file ends here.
                std::io::ErrorKind::NotADirectory => err("is not a directory".into()),
                _ => err(format!("cannot be read: {e}")),
            })?;
            if !meta.is_dir() {
                return Err(err("is not a directory".into()));
            }
            std::fs::read_dir(&path).map_err(|e| err(format!("cannot be listed: {e}")))?;
            let mut url = Url::from_directory_path(&path)
                .map_err(|()| err("not an absolute directory path".into()))?;
            url.set_query(None);
            Ok(url)
        }
        scheme if ObjectStoreKind::of(scheme).is_some() => remote_warehouse_url(location),
        other => Err(err(format!(
            "unsupported warehouse scheme '{other}' (supported: a local directory, file://, s3://, gs://, az://)"
        ))),
    }
}

/// The object stores a warehouse may live on besides local disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectStoreKind {
    /// Amazon S3 and S3-compatible stores (`s3://`, `s3a://`).
    S3,
    /// Google Cloud Storage (`gs://`).
    Gcs,
    /// Azure Blob Storage / ADLS Gen2 (`az://`, `abfs://`, `abfss://`, `azure://`).
    Azure,
}

impl ObjectStoreKind {
    /// The kind of object store a URL scheme names, if any.
    pub fn of(scheme: &str) -> Option<Self> {
        match scheme.to_ascii_lowercase().as_str() {
            "s3" | "s3a" => Some(Self::S3),
            "gs" => Some(Self::Gcs),
            "az" | "abfs" | "abfss" | "azure" => Some(Self::Azure),
            _ => None,
        }
    }

    /// Environment variables any one of which supplies credentials (or a
    /// way to get them); the stores' own clients read them.
    pub fn credential_vars(self) -> &'static [&'static str] {
        match self {
            Self::S3 => &[
                "AWS_ACCESS_KEY_ID",
                "AWS_PROFILE",
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            ],
            Self::Gcs => &[
                "GOOGLE_APPLICATION_CREDENTIALS",
                "GOOGLE_SERVICE_ACCOUNT",
                "GOOGLE_SERVICE_ACCOUNT_PATH",
                "GOOGLE_SERVICE_ACCOUNT_KEY",
            ],
            Self::Azure => &[
                "AZURE_STORAGE_ACCOUNT_KEY",
                "AZURE_STORAGE_ACCESS_KEY",
                "AZURE_STORAGE_SAS_KEY",
                "AZURE_STORAGE_TOKEN",
                "AZURE_CLIENT_SECRET",
                "AZURE_FEDERATED_TOKEN_FILE",
                "AZURE_STORAGE_USE_EMULATOR",
            ],
        }
    }
}

/// Checks an object-store warehouse URL (`s3://bucket/prefix`, ...) and
/// that credentials are present in the environment, and registers the
/// store with delta-rs. Returns the URL ending with `/`.
///
/// Credentials come only from the environment (or the workload identity
/// the environment points to), never from the URL.
pub fn remote_warehouse_url(location: &str) -> Result<Url> {
    let err = |message: String| Error::Warehouse {
        location: location.to_string(),
        message,
    };
    let mut url = Url::parse(location).map_err(|e| err(format!("not a valid URL: {e}")))?;
    let kind = ObjectStoreKind::of(url.scheme())
        .ok_or_else(|| err(format!("unsupported warehouse scheme '{}'", url.scheme())))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(err("the URL names no bucket or container".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(
            "credentials in the URL are not accepted; set them in the environment".into(),
        ));
    }
    let vars = kind.credential_vars();
    let present = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if !vars.iter().any(|v| present(v)) {
        return Err(err(format!(
            "missing credentials: set one of {} in the environment",
            vars.join(", ")
        )));
    }
    if kind == ObjectStoreKind::S3
        && present("AWS_ACCESS_KEY_ID")
        && !present("AWS_SECRET_ACCESS_KEY")
    {
        return Err(err(
            "missing credentials: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
        ));
    }
    register_object_stores();
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.set_query(None);
    Ok(url)
}

/// Registers the object stores this build supports with delta-rs
/// (idempotent; delta-rs also does it at load time where the linker keeps
/// its constructors).
pub fn register_object_stores() {
    deltalake::aws::register_handlers(None);
    deltalake::gcp::register_handlers(None);
    deltalake::azure::register_handlers(None);
}

/// The URL of one table under the warehouse root.
pub fn table_url(warehouse: &Url, table: &str) -> Result<Url> {
    warehouse
        .join(&format!("{table}/"))
        .map_err(|e| Error::Warehouse {
            location: warehouse.to_string(),
            message: format!("bad table location for {table}: {e}"),
        })
}

impl Catalog {
    /// Opens every table of the warehouse at its latest version. Tables not
    /// created yet read as empty until they appear.
    pub async fn open(location: Url, session: &dyn Session) -> Result<Self> {
        let mut tables = BTreeMap::new();
        for def in all_tables() {
            let table = open_table(&location, def).await?;
            let snapshot = snapshot_of(def, table, None, session).await?;
            tables.insert(def.name, RwLock::new(Arc::new(snapshot)));
        }
        Ok(Self { location, tables })
    }

    /// The warehouse root.
    pub fn location(&self) -> &Url {
        &self.location
    }

    /// The current snapshot of every table, by name.
    pub fn snapshots(&self) -> Vec<Arc<TableSnapshot>> {
        self.tables
            .values()
            .map(|slot| Arc::clone(&slot.read().expect("catalog lock poisoned")))
            .collect()
    }

    /// The current snapshot of one table.
    pub fn snapshot(&self, name: &str) -> Option<Arc<TableSnapshot>> {
        self.tables
            .get(name)
            .map(|slot| Arc::clone(&slot.read().expect("catalog lock poisoned")))
    }

    /// Looks for new versions of every table and swaps in those that moved.
    /// Returns the names of the tables that changed.
    pub async fn refresh(&self, session: &dyn Session) -> Result<Vec<&'static str>> {
        let mut changed = Vec::new();
        for (name, slot) in &self.tables {
            let current = Arc::clone(&slot.read().expect("catalog lock poisoned"));
            let def = current.def;
            let table = match &current.table {
                Some(table) => {
                    let mut table = table.clone();
                    table
                        .update_incremental(None)
                        .await
                        .map_err(|source| delta_error(def, source))?;
                    table
                }
                None => match open_table(&self.location, def).await? {
                    Some(table) => table,
                    None => continue,
                },
            };
            if table.version() == current.version {
                continue;
            }
            tracing::info!(table = name, from = ?current.version, to = ?table.version(), "table version changed");
            let previous = current.index.as_deref().zip(current.version);
            let next = snapshot_of(def, Some(table), previous, session).await?;
            *slot.write().expect("catalog lock poisoned") = Arc::new(next);
            changed.push(*name);
        }
        Ok(changed)
    }
}

fn delta_error(def: &TableDef, source: DeltaTableError) -> Error {
    Error::Delta {
        table: def.name.to_string(),
        source,
    }
}

/// Opens a table at its latest version, or `None` if it does not exist yet.
async fn open_table(warehouse: &Url, def: &'static TableDef) -> Result<Option<DeltaTable>> {
    let url = table_url(warehouse, def.name)?;
    let mut table = DeltaTableBuilder::from_url(url)
        .and_then(|b| b.build())
        .map_err(|source| delta_error(def, source))?;
    // A table that was never written has no log yet: it reads as empty
    // until an ingest creates it.
    let exists = table
        .verify_deltatable_existence()
        .await
        .map_err(|source| delta_error(def, source))?;
    if !exists {
        return Ok(None);
    }
    match table.load().await {
        Ok(()) => Ok(Some(table)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(source) => Err(delta_error(def, source)),
    }
}

/// A scannable snapshot of a loaded table, or of an empty one; `previous`
/// is the file index of the version before, moved forward when given.
async fn snapshot_of(
    def: &'static TableDef,
    table: Option<DeltaTable>,
    previous: Option<(&FileIndex, u64)>,
    session: &dyn Session,
) -> Result<TableSnapshot> {
    let Some(table) = table else {
        return Ok(TableSnapshot {
            def,
            version: None,
            provider: Arc::new(EmptyTable::new(def.schema())),
            table: None,
            index: None,
        });
    };
    let (index, provider) = crate::scan::open(def, &table, previous, session).await?;
    Ok(TableSnapshot {
        def,
        version: table.version(),
        provider,
        table: Some(table),
        index: Some(index),
    })
}
