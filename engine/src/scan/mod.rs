//! adlake's own scan of its Delta tables.
//!
//! delta-rs's table provider plans every query by replaying the snapshot's
//! file list through the kernel and opening each selected file's footer;
//! on a year of 50 clients (tens of thousands of small files) that per-query
//! work costs more than reading the rows a dashboard needs. The engine
//! therefore keeps, per table version, a [`FileIndex`](index::FileIndex) of
//! the active files by (client, day), moved forward from each new commit's
//! adds and removes, and answers a scan with a DataFusion Parquet
//! `DataSourceExec` over exactly the files the query's client and date
//! predicates select ([`IndexedTable`](table::IndexedTable)). Footers are
//! parsed once and kept in the runtime's byte-bounded
//! [`FooterCache`](footers::FooterCache).
//!
//! Tables using Delta features this scan does not read (deletion vectors,
//! column mapping) are refused when opened, never read wrongly; adlake's
//! writers use neither.

pub(crate) mod footers;
pub(crate) mod index;
mod prune;
pub(crate) mod table;

use std::sync::Arc;

use datafusion::catalog::Session;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use deltalake::DeltaTable;
use deltalake::kernel::Version;
use deltalake::kernel::engine::arrow_conversion::TryIntoArrow as _;

pub use footers::{DEFAULT_FOOTER_CACHE_BYTES, FooterCache, FooterCacheStats};
use index::FileIndex;
use table::IndexedTable;

use crate::error::{Error, Result};
use crate::schema::TableDef;

/// The index and provider of a loaded table's current version; `previous`
/// is the index of an earlier version to move forward from.
pub(crate) async fn open(
    def: &'static TableDef,
    table: &DeltaTable,
    previous: Option<(&FileIndex, Version)>,
    session: &dyn Session,
) -> Result<(Arc<FileIndex>, Arc<IndexedTable>)> {
    let unsupported = |message: String| Error::Warehouse {
        location: table.table_url().to_string(),
        message,
    };
    let state = table.snapshot().map_err(|source| Error::Delta {
        table: def.name.to_string(),
        source,
    })?;
    let log_store = table.log_store();
    let index = match previous {
        Some((index, version)) => {
            let (next, moved) = index
                .advance(def, log_store.as_ref(), version, state)
                .await
                .map_err(|e| unsupported(e.0))?;
            tracing::debug!(
                table = def.name,
                ?moved,
                files = next.len(),
                "file index moved"
            );
            next
        }
        None => FileIndex::from_snapshot(def, state).map_err(|e| unsupported(e.0))?,
    };
    let index = Arc::new(index);

    // The table's files are read through its own store, rooted at the
    // table, under the URL delta-rs gives it.
    let store_url = log_store.object_store_url();
    let runtime = session.runtime_env();
    let store = match runtime.object_store(&store_url) {
        Ok(store) => store,
        Err(_) => {
            let store = log_store.object_store(None);
            runtime.register_object_store(store_url.as_ref(), Arc::clone(&store));
            store
        }
    };
    let readers = Arc::new(CachedParquetFileReaderFactory::new(
        Arc::clone(&store),
        runtime.cache_manager.get_file_metadata_cache(),
    ));
    let schema = state.schema().as_ref().try_into_arrow().map_err(|e| {
        unsupported(format!(
            "table {} has a schema Arrow cannot hold: {e}",
            def.name
        ))
    })?;
    let provider = IndexedTable::try_new(
        def,
        Arc::new(schema),
        Arc::clone(&index),
        (store_url, store),
        readers,
    )
    .map_err(|e| unsupported(e.0))?;
    Ok((index, Arc::new(provider)))
}
