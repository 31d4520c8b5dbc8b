//! Rows of a run that are not applied yet, under the warehouse root:
//! `_adlake_staged/<client>/<run_id>/`.
//!
//! A job stages its quarantine rows before its data commit, so a process
//! killed between the data and the quarantine commit is completed by the
//! next run ([`crate::lake::reconcile`]); a run the shrink guard held stages its
//! data rows too, so `--confirm-shrink RUN_ID` applies them without
//! fetching again. A finished run's folder is removed; erasing a client
//! removes its folder.

use arrow::array::RecordBatch;
use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt as _, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tracing::warn;

use crate::error::{Error, Result};
use crate::lake::warehouse::Warehouse;

/// Folder of the staged rows under the warehouse root.
pub const STAGED_PREFIX: &str = "_adlake_staged";

/// The file of the staged quarantine rows.
const QUARANTINE_FILE: &str = "quarantine.parquet";
/// The file of a held run's data rows.
const DATA_FILE: &str = "data.parquet";

fn path(client: &str, run_id: &str, file: &str) -> ObjectPath {
    ObjectPath::from(format!(
        "{STAGED_PREFIX}/{}/{}/{file}",
        sanitize(client),
        sanitize(run_id)
    ))
}

/// Client and run ids are free text; a folder name keeps only safe
/// characters.
fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), None)
        .map_err(|e| Error::delta(STAGED_PREFIX, e.into()))?;
    writer
        .write(batch)
        .and_then(|()| writer.close().map(drop))
        .map_err(|e| Error::delta(STAGED_PREFIX, e.into()))?;
    Ok(out)
}

async fn put(warehouse: &Warehouse, at: ObjectPath, batch: &RecordBatch) -> Result<()> {
    let store = warehouse.root_store(STAGED_PREFIX)?;
    store
        .put(&at, PutPayload::from(encode(batch)?))
        .await
        .map_err(|e| Error::delta(STAGED_PREFIX, e.into()))?;
    Ok(())
}

async fn get(warehouse: &Warehouse, at: ObjectPath) -> Result<Option<RecordBatch>> {
    let store = warehouse.root_store(STAGED_PREFIX)?;
    let bytes: Bytes = match store.get(&at).await {
        Ok(found) => found
            .bytes()
            .await
            .map_err(|e| Error::delta(STAGED_PREFIX, e.into()))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Error::delta(STAGED_PREFIX, e.into())),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| Error::delta(STAGED_PREFIX, e.into()))?;
    let schema = std::sync::Arc::clone(builder.schema());
    let batches = builder
        .build()
        .map_err(|e| Error::delta(STAGED_PREFIX, e.into()))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::delta(STAGED_PREFIX, e.into()))?;
    // A run with no rows stages a file with none.
    Ok(Some(arrow::compute::concat_batches(&schema, &batches)?))
}

/// Stages a run's quarantine rows.
pub async fn put_quarantine(
    warehouse: &Warehouse,
    client: &str,
    run_id: &str,
    batch: &RecordBatch,
) -> Result<()> {
    put(warehouse, path(client, run_id, QUARANTINE_FILE), batch).await
}

/// Stages a held run's data rows.
pub async fn put_data(
    warehouse: &Warehouse,
    client: &str,
    run_id: &str,
    batch: &RecordBatch,
) -> Result<()> {
    put(warehouse, path(client, run_id, DATA_FILE), batch).await
}

/// A run's staged quarantine rows, if any.
pub async fn quarantine(
    warehouse: &Warehouse,
    client: &str,
    run_id: &str,
) -> Result<Option<RecordBatch>> {
    get(warehouse, path(client, run_id, QUARANTINE_FILE)).await
}

/// A held run's staged data rows, if any.
pub async fn data(
    warehouse: &Warehouse,
    client: &str,
    run_id: &str,
) -> Result<Option<RecordBatch>> {
    get(warehouse, path(client, run_id, DATA_FILE)).await
}

/// Removes a run's staged rows (a failure is logged: a left-over folder is
/// only disk).
pub async fn remove(warehouse: &Warehouse, client: &str, run_id: &str) {
    let store = match warehouse.root_store(STAGED_PREFIX) {
        Ok(store) => store,
        Err(e) => {
            warn!(run_id, error = %e, "cannot remove the staged rows");
            return;
        }
    };
    for file in [QUARANTINE_FILE, DATA_FILE] {
        match store.delete(&path(client, run_id, file)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => warn!(run_id, error = %e, "cannot remove the staged rows"),
        }
    }
    if let Ok(dir) = warehouse.url().to_file_path() {
        let folder = dir
            .join(STAGED_PREFIX)
            .join(sanitize(client))
            .join(sanitize(run_id));
        // All of it: a put killed half-way leaves its temporary file there.
        let _ = std::fs::remove_dir_all(folder);
    }
}

/// Removes every staged row of `client` (erasure).
pub async fn remove_client(warehouse: &Warehouse, client: &str) -> Result<()> {
    use futures::TryStreamExt as _;
    let store = warehouse.root_store(STAGED_PREFIX)?;
    let prefix = ObjectPath::from(format!("{STAGED_PREFIX}/{}", sanitize(client)));
    let files: Vec<_> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| Error::delta(STAGED_PREFIX, e.into()))?;
    for file in files {
        match store.delete(&file.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(Error::delta(STAGED_PREFIX, e.into())),
        }
    }
    if let Ok(dir) = warehouse.url().to_file_path() {
        let _ = std::fs::remove_dir_all(dir.join(STAGED_PREFIX).join(sanitize(client)));
    }
    Ok(())
}
