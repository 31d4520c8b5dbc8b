//! Erasure of one client (`adlake-ingest erase --client C`), for GDPR
//! requests and off-boarding.
//!
//! Every row of the client is deleted from every client-scoped table (one
//! Delta transaction per table), then each table is vacuumed with a zero
//! retention so that no data file holding the client's rows, current or
//! from an older version, stays on storage. The price is that time travel
//! to versions before the erasure stops working for the whole table: that
//! is the point.
//!
//! **No trace in the log either.** The data files are not the only place
//! that names a client: every commit of `_delta_log` names the files it
//! added or removed (`client_id=acme/…`), their partition values and
//! min/max statistics (campaign names, account ids), and the delete's own
//! commit holds its predicate. So once a table is vacuumed, its log is
//! rewritten: a checkpoint is written at the current version with no
//! tombstones (the table's `delta.deletedFileRetentionDuration` is set to
//! zero for that commit and put back to a week after), every log entry
//! before it is deleted, and on a local warehouse the empty partition
//! folders go too. After an erasure no byte under the warehouse names the
//! client: the audit entry (who, when, which tables, which versions),
//! written as JSON under `<warehouse>/_adlake_audit/erasures/`, names it
//! by the SHA-256 of its id, which whoever asked for the erasure can
//! recompute; the command prints the id itself.
//!
//! A client with no row in any table is refused before anything changes.

use adlake_engine::schema::{CLIENT_ID, TableDef, all_tables};
use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::logical_expr::{col, lit};
use datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::vacuum::VacuumMode;
use futures::TryStreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt as _, PutPayload};
use serde::Serialize;
use serde_json::json;
use tracing::info;

pub mod shopper;

use crate::error::{Error, Result};
use crate::lake::commit::{DEFAULT_ATTEMPTS, commit_with_retry};
use crate::lake::warehouse::Warehouse;

/// Folder (under the warehouse root) of the erasure audit entries.
pub const AUDIT_PREFIX: &str = "_adlake_audit";

/// What happened to one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableErasure {
    /// The table.
    pub table: &'static str,
    /// Rows of the client before the erasure.
    pub rows_deleted: u64,
    /// The version before the delete.
    pub version_before: Option<u64>,
    /// The version the delete committed (`None`: no row, nothing committed).
    pub version_deleted: Option<u64>,
    /// Files vacuum removed from storage.
    pub files_vacuumed: usize,
    /// Log entries (commits, checkpoints) before the rewritten checkpoint
    /// that were deleted.
    pub log_entries_removed: usize,
}

/// The audit entry of one erasure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErasureAudit {
    /// The erased client (printed, never written under the warehouse).
    pub client_id: String,
    /// The SHA-256 of its id: how the written entry names it.
    pub client_sha256: String,
    /// Who asked for it.
    pub requested_by: String,
    /// Why (ticket, request reference), if given.
    pub reason: Option<String>,
    /// When it started (UTC, RFC 3339).
    pub started_at: String,
    /// When it finished (UTC, RFC 3339).
    pub finished_at: String,
    /// Every client-scoped table, erased or not.
    pub tables: Vec<TableErasure>,
    /// Where the entry was written, relative to the warehouse root.
    pub audit_path: String,
}

/// Erases one client from every table.
#[derive(Debug, Clone)]
#[must_use]
pub struct EraseBuilder<'a> {
    warehouse: &'a Warehouse,
    client_id: String,
    requested_by: String,
    reason: Option<String>,
}

impl<'a> EraseBuilder<'a> {
    /// Erasure of `client_id`, asked for by `requested_by`.
    pub fn new(
        warehouse: &'a Warehouse,
        client_id: impl Into<String>,
        requested_by: impl Into<String>,
    ) -> Self {
        Self {
            warehouse,
            client_id: client_id.into(),
            requested_by: requested_by.into(),
            reason: None,
        }
    }

    /// Why (a ticket or request reference), kept in the audit entry.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Deletes, vacuums and writes the audit entry.
    pub async fn execute(self) -> Result<ErasureAudit> {
        let client = self.client_id.trim().to_owned();
        if client.is_empty() {
            return Err(Error::InvalidConfig("client id must not be empty".into()));
        }
        if self.requested_by.trim().is_empty() {
            return Err(Error::InvalidConfig(
                "who requested the erasure must be given (--by)".into(),
            ));
        }
        let started = Utc::now();
        let tables = client_tables();

        let mut counts = Vec::with_capacity(tables.len());
        for def in &tables {
            counts.push(count_client_rows(self.warehouse, def, &client).await?);
        }
        if counts.iter().all(|c| *c == 0) {
            return Err(Error::UnknownClient(client));
        }

        let mut erased = Vec::with_capacity(tables.len());
        for (def, rows) in tables.iter().zip(counts) {
            erased.push(self.erase_table(def, &client, rows).await?);
        }
        // Rows of held or unfinished runs staged for the client.
        crate::lake::staged::remove_client(self.warehouse, &client).await?;
        let finished = Utc::now();
        let client_sha256 = client_sha256(&client);
        let audit_path = format!(
            "{AUDIT_PREFIX}/erasures/{}-{}.json",
            started.format("%Y%m%dT%H%M%S%.6fZ"),
            &client_sha256[..16]
        );
        let audit = ErasureAudit {
            client_id: client,
            client_sha256,
            requested_by: self.requested_by.trim().to_owned(),
            reason: self.reason,
            started_at: rfc3339(started),
            finished_at: rfc3339(finished),
            tables: erased,
            audit_path,
        };
        write_audit(self.warehouse, &audit).await?;
        info!(client = %audit.client_id, by = %audit.requested_by, path = %audit.audit_path, "client erased");
        Ok(audit)
    }

    async fn erase_table(
        &self,
        def: &'static TableDef,
        client: &str,
        rows: u64,
    ) -> Result<TableErasure> {
        purge(
            self.warehouse,
            def,
            col(CLIENT_ID).eq(lit(client)),
            rows,
            [
                ("adlake.operation".to_owned(), json!("erase")),
                (
                    "adlake.erased_client_sha256".to_owned(),
                    json!(client_sha256(client)),
                ),
                ("adlake.requested_by".to_owned(), json!(self.requested_by)),
            ],
        )
        .await
    }
}

/// Deletes the `rows` rows of `def` that match `predicate` (nothing when
/// 0) in one commit carrying `metadata`, vacuums with zero retention so no
/// file holding them stays, and rewrites the log so no entry names them
/// (whether or not a row matched now).
pub(crate) async fn purge(
    warehouse: &Warehouse,
    def: &'static TableDef,
    predicate: datafusion::logical_expr::Expr,
    rows: u64,
    metadata: impl IntoIterator<Item = (String, serde_json::Value)> + Clone,
) -> Result<TableErasure> {
    let mut table = warehouse.open_table(def).await?;
    let version_before = table.version();
    let mut version_deleted = None;
    if rows > 0 {
        let (opened, predicate, metadata) = (&table, &predicate, &metadata);
        table = commit_with_retry("erasure delete", DEFAULT_ATTEMPTS, |attempt| async move {
            let mut table = opened.clone();
            if attempt > 1 {
                table
                    .update_state()
                    .await
                    .map_err(|e| Error::delta(def.name, e))?;
            }
            let delete = table
                .delete()
                .with_predicate(predicate.clone())
                .with_commit_properties(
                    CommitProperties::default().with_metadata(metadata.clone()),
                );
            let (next, _) = delete.await.map_err(|e| Error::delta(def.name, e))?;
            Ok(next)
        })
        .await?;
        version_deleted = table.version();
    }
    let mut files_vacuumed = 0;
    if version_before.is_some() {
        // Zero retention: every file no longer in the current version
        // goes, including older files that still hold the rows.
        let (_, metrics) = table
            .vacuum()
            .with_retention_period(chrono::Duration::zero())
            .with_enforce_retention_duration(false)
            .with_mode(VacuumMode::Full)
            .await
            .map_err(|e| Error::delta(def.name, e))?;
        files_vacuumed = metrics.files_deleted.len();
    }
    // The log is rewritten even when no row matches now: a slice replaced
    // earlier (a quarantine emptied by a later run, say) leaves commits that
    // name the rows it removed.
    let mut log_entries_removed = 0;
    if version_before.is_some() {
        log_entries_removed = forget_log(warehouse, def).await?;
    }
    Ok(TableErasure {
        table: def.name,
        rows_deleted: rows,
        version_before,
        version_deleted,
        files_vacuumed,
        log_entries_removed,
    })
}

/// The audit entry's name for a client: the hex SHA-256 of its id.
pub fn client_sha256(client: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(client.as_bytes()))
}

/// Rewrites `def`'s log so that no entry before the current version stays:
/// a checkpoint without tombstones at a new version, then every log file
/// before it deleted, then the tombstone retention put back. Returns the
/// log files deleted.
async fn forget_log(warehouse: &Warehouse, def: &'static TableDef) -> Result<usize> {
    const RETENTION: &str = "delta.deletedFileRetentionDuration";
    let delta = |e| Error::delta(def.name, e);
    let set = |table: deltalake::DeltaTable, value: &str| {
        table
            .set_tbl_properties()
            .with_properties([(RETENTION.to_owned(), value.to_owned())].into())
            .with_commit_properties(
                CommitProperties::default()
                    .with_metadata([("adlake.operation".to_owned(), json!("erase-log"))]),
            )
    };
    let table = commit_with_retry("erasure log rewrite", DEFAULT_ATTEMPTS, |_| async {
        let table = warehouse.open_table(def).await?;
        set(table, "interval 0 seconds").await.map_err(delta)
    })
    .await?;
    let checkpoint = table.version().ok_or_else(|| Error::InvalidSlice {
        table: def.name,
        reason: "the table has no version after the erasure".to_owned(),
    })?;
    deltalake::checkpoints::create_checkpoint(&table, None)
        .await
        .map_err(delta)?;
    let store = table.log_store().object_store(None);
    let log = ObjectPath::from("_delta_log");
    let entries: Vec<object_store::ObjectMeta> = store
        .list(Some(&log))
        .try_collect()
        .await
        .map_err(|e| delta(e.into()))?;
    let mut removed = 0;
    for entry in entries {
        let name = entry.location.filename().unwrap_or_default();
        let version = name.split('.').next().and_then(|v| v.parse::<u64>().ok());
        // Commits, checkpoints (single and multi-part), CRCs and temporary
        // commit files of every version before the new checkpoint; the
        // `_last_checkpoint` hint already points at it.
        let old = match version {
            Some(v) => v < checkpoint,
            None => name.starts_with('_') && name != "_last_checkpoint",
        };
        if old {
            store
                .delete(&entry.location)
                .await
                .map_err(|e| delta(e.into()))?;
            removed += 1;
        }
    }
    // Put the tombstone retention back for the table's later checkpoints.
    let restored = commit_with_retry("erasure log rewrite", DEFAULT_ATTEMPTS, |_| async {
        let table = warehouse.open_table(def).await?;
        set(table, "interval 1 weeks").await.map_err(delta)
    })
    .await;
    if let Err(e) = restored {
        tracing::warn!(table = def.name, error = %e, "erasure: could not restore the tombstone retention");
    }
    if let Some(dir) = warehouse.table_dir(def) {
        remove_empty_dirs(&dir);
    }
    Ok(removed)
}

/// Removes the empty folders under `dir` (partition folders whose files
/// vacuum deleted), deepest first; `dir` itself stays.
fn remove_empty_dirs(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && !path.ends_with("_delta_log") {
            remove_empty_dirs(&path);
            let _ = std::fs::remove_dir(&path); // fails, harmlessly, when not empty
        }
    }
}

/// The tables that hold rows of a client: client-scoped and with a
/// `client_id` column in the engine's schema (`fx_rates`, shared by all
/// clients, is not one of them).
pub fn client_tables() -> Vec<&'static TableDef> {
    all_tables()
        .into_iter()
        .filter(|def| def.client_scoped && def.schema.field_with_name(CLIENT_ID).is_ok())
        .collect()
}

/// Rows of one client in the current version of a table (0 when the table
/// does not exist).
pub async fn count_client_rows(warehouse: &Warehouse, def: &TableDef, client: &str) -> Result<u64> {
    let table = warehouse.open_table(def).await?;
    if table.version().is_none() {
        return Ok(0);
    }
    let provider = table.table_provider().await?;
    let ctx = SessionContext::new();
    let df = ctx
        .read_table(provider)?
        .filter(col(CLIENT_ID).eq(lit(client)))?;
    let batches = df
        .aggregate(
            vec![],
            vec![datafusion::functions_aggregate::count::count_all()],
        )?
        .collect()
        .await?;
    let count = batches
        .first()
        .filter(|b| b.num_rows() > 0)
        .map(|b| b.column(0).as_primitive::<Int64Type>().value(0))
        .unwrap_or(0);
    Ok(u64::try_from(count).unwrap_or(0))
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

async fn write_audit(warehouse: &Warehouse, audit: &ErasureAudit) -> Result<()> {
    write_entry(warehouse, audit, &audit.audit_path, &["client_id"]).await
}

/// Writes `value` as pretty JSON at `path` under the warehouse root,
/// without the top-level fields `omit`.
pub(crate) async fn write_entry(
    warehouse: &Warehouse,
    value: &impl Serialize,
    path: &str,
    omit: &[&str],
) -> Result<()> {
    let store = warehouse.root_store(AUDIT_PREFIX)?;
    let mut entry = serde_json::to_value(value)
        .map_err(|e| Error::InvalidConfig(format!("cannot encode the audit entry: {e}")))?;
    if let Some(fields) = entry.as_object_mut() {
        for name in omit {
            fields.remove(*name);
        }
    }
    let body = serde_json::to_vec_pretty(&entry)
        .map_err(|e| Error::InvalidConfig(format!("cannot encode the audit entry: {e}")))?;
    store
        .put(&ObjectPath::from(path), PutPayload::from(body))
        .await
        .map_err(|e| Error::delta(AUDIT_PREFIX, e.into()))?;
    Ok(())
}

#[cfg(test)]
mod tests;
