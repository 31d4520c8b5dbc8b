//! Table upkeep (`adlake-ingest maintain`): compaction of small files per
//! partition (optionally Z-ordered by campaign) in bounded commits (see
//! [`compact`]), a checkpoint, and a vacuum of files that left the table
//! longer ago than a retention period.
//!
//! Upkeep is safe while the server reads and ingest writes: compaction
//! commits a new version whose rows are the same, and Delta's optimistic
//! concurrency rejects it when a concurrent write removed a file it
//! rewrote. Such a lost race is retried from a fresh snapshot, a bounded
//! number of times. Vacuum never deletes a file removed less than the
//! retention period ago, and the retention may not go below
//! [`MIN_RETENTION`], so readers still on an older snapshot and writers
//! that have not committed yet keep their files.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use adlake_engine::schema::{AD_PERFORMANCE, TableDef, all_tables};
use deltalake::DeltaTable;
use deltalake::operations::vacuum::{Clock, VacuumMode};
use serde_json::json;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::lake::commit::{DEFAULT_ATTEMPTS, commit_with_retry};
use crate::lake::warehouse::Warehouse;

mod compact;
use compact::{CompactOptions, Compacted};

/// The shortest retention vacuum accepts: a query or an ingest write in
/// flight never lasts this long, so no file it still needs is deleted.
pub const MIN_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The retention used when none is given (Delta's own default).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Files at least this large are not compacted, and compacted files are
/// at most this large (Delta's own default, 100 MiB).
pub const DEFAULT_TARGET_SIZE: u64 = 100 * 1024 * 1024;

/// Most files one compaction commit replaces: a year of 50 clients (about
/// 70,000 files) is compacted in a few dozen commits, each visible to
/// readers as it lands, and a crash or a lost race costs one of them.
pub const DEFAULT_FILES_PER_COMMIT: usize = 2_000;

/// A table's upkeep lock older than this was left by a maintainer that
/// died, and is taken over.
pub const LOCK_TTL: Duration = Duration::from_secs(6 * 3600);

/// Folder (under the warehouse root) of the upkeep locks.
pub const LOCK_PREFIX: &str = "_adlake_locks/upkeep";

/// The column `ad_performance` is Z-ordered by when asked.
pub const ZORDER_COLUMN: &str = "campaign_id";

/// What upkeep did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableUpkeep {
    /// The table.
    pub table: &'static str,
    /// Its version before upkeep (`None`: it does not exist, nothing done).
    pub version_before: Option<u64>,
    /// Its version after upkeep.
    pub version_after: Option<u64>,
    /// Active data files before compaction.
    pub files_before: usize,
    /// Active data files after compaction.
    pub files_after: usize,
    /// Files compaction replaced.
    pub files_removed: u64,
    /// Files compaction wrote.
    pub files_added: u64,
    /// Compaction attempts (more than 1 when a race was lost).
    pub attempts: u32,
    /// Commits compaction made (each replaces at most the builder's
    /// files-per-commit).
    pub commits: u32,
    /// Whether a checkpoint was written.
    pub checkpointed: bool,
    /// Files vacuum deleted from storage.
    pub files_vacuumed: usize,
    /// Another maintainer held the table's upkeep lock: nothing was done.
    pub skipped_locked: bool,
}

/// Runs upkeep over the tables of one warehouse.
#[derive(Debug, Clone)]
#[must_use]
pub struct MaintainBuilder<'a> {
    warehouse: &'a Warehouse,
    tables: Vec<&'static TableDef>,
    zorder: bool,
    target_size: Option<NonZeroU64>,
    files_per_commit: usize,
    retention: Duration,
    vacuum: bool,
    attempts: u32,
    clock: Option<std::sync::Arc<dyn Clock>>,
    actor: String,
}

impl<'a> MaintainBuilder<'a> {
    /// Upkeep of every table, default retention, no Z-order.
    pub fn new(warehouse: &'a Warehouse) -> Self {
        Self {
            warehouse,
            tables: all_tables().to_vec(),
            zorder: false,
            target_size: None,
            files_per_commit: DEFAULT_FILES_PER_COMMIT,
            retention: DEFAULT_RETENTION,
            vacuum: true,
            attempts: DEFAULT_ATTEMPTS,
            clock: None,
            actor: "adlake-ingest maintain".to_owned(),
        }
    }

    /// Only these tables.
    pub fn with_tables(mut self, tables: Vec<&'static TableDef>) -> Self {
        self.tables = tables;
        self
    }

    /// Z-order `ad_performance` by campaign within each partition instead
    /// of plain compaction.
    pub fn with_zorder(mut self, zorder: bool) -> Self {
        self.zorder = zorder;
        self
    }

    /// Target size of compacted files in bytes (default
    /// [`DEFAULT_TARGET_SIZE`]).
    pub fn with_target_size(mut self, bytes: NonZeroU64) -> Self {
        self.target_size = Some(bytes);
        self
    }

    /// Most files one compaction commit replaces (at least 1; default
    /// [`DEFAULT_FILES_PER_COMMIT`]).
    pub fn with_files_per_commit(mut self, files: usize) -> Self {
        self.files_per_commit = files.max(1);
        self
    }

    /// Files removed longer ago than this are vacuumed; at least
    /// [`MIN_RETENTION`].
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Whether to vacuum at all.
    pub fn with_vacuum(mut self, vacuum: bool) -> Self {
        self.vacuum = vacuum;
        self
    }

    /// Attempts per table when compaction loses a race (at least 1).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The clock vacuum measures file age against (tests move it forward).
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Runs upkeep table by table. A retention below [`MIN_RETENTION`] is
    /// refused before anything is touched.
    pub async fn execute(self) -> Result<Vec<TableUpkeep>> {
        if self.vacuum {
            check_retention(self.retention)?;
        }
        let mut done = Vec::with_capacity(self.tables.len());
        for def in &self.tables {
            done.push(self.maintain_table(def).await?);
        }
        Ok(done)
    }

    async fn maintain_table(&self, def: &'static TableDef) -> Result<TableUpkeep> {
        let table = self.warehouse.open_table(def).await?;
        let version_before = table.version();
        let mut report = TableUpkeep {
            table: def.name,
            version_before,
            version_after: version_before,
            files_before: 0,
            files_after: 0,
            files_removed: 0,
            files_added: 0,
            attempts: 0,
            commits: 0,
            checkpointed: false,
            files_vacuumed: 0,
            skipped_locked: false,
        };
        if version_before.is_none() {
            return Ok(report);
        }
        // Two compactions of the same files must not both commit: Delta's
        // conflict check does not see them as conflicting (neither changes
        // data), and the second would add a second copy of the rows. So one
        // maintainer per table at a time, through a lock object created with
        // a conditional put (create-if-absent), which every supported store
        // provides.
        let Some(lock) = UpkeepLock::acquire(self.warehouse, def).await? else {
            warn!(
                table = def.name,
                "another maintainer holds this table's upkeep lock; skipped"
            );
            report.skipped_locked = true;
            return Ok(report);
        };
        let done = self.maintain_locked(def, table, report).await;
        lock.release().await;
        done
    }

    async fn maintain_locked(
        &self,
        def: &'static TableDef,
        mut table: DeltaTable,
        mut report: TableUpkeep,
    ) -> Result<TableUpkeep> {
        // The snapshot may predate the lock: start from the newest version.
        table
            .update_state()
            .await
            .map_err(|e| Error::delta(def.name, e))?;
        report.files_before = file_count(&table, def)?;

        // Compaction in bounded commits; a group that loses a race with a
        // concurrent commit is planned again from a fresh snapshot.
        let options = CompactOptions {
            target_size: self
                .target_size
                .unwrap_or(NonZeroU64::new(DEFAULT_TARGET_SIZE).unwrap_or(NonZeroU64::MIN)),
            files_per_commit: self.files_per_commit,
            sort_column: (self.zorder && def.name == AD_PERFORMANCE.name).then_some(ZORDER_COLUMN),
            actor: self.actor.clone(),
        };
        // What the compaction commits of every attempt did, and the table
        // at its latest version, carried from one attempt to the next.
        let progress = tokio::sync::Mutex::new((table, Compacted::default()));
        let tried = AtomicU32::new(0);
        let (progress_ref, tried_ref, options) = (&progress, &tried, &options);
        commit_with_retry("compaction", self.attempts, |attempt| async move {
            tried_ref.store(attempt, Ordering::Relaxed);
            let mut guard = progress_ref.lock().await;
            let (table, compacted) = &mut *guard;
            if attempt > 1 {
                table
                    .update_state()
                    .await
                    .map_err(|e| Error::delta(def.name, e))?;
            }
            compact::compact(table, options, compacted)
                .await
                .map_err(|e| Error::delta(def.name, e))
        })
        .await?;
        report.attempts = tried.into_inner();
        let (mut table, compacted) = progress.into_inner();
        report.files_removed = compacted.files_removed;
        report.files_added = compacted.files_added;
        report.commits = compacted.commits;

        deltalake::checkpoints::create_checkpoint(&table, None)
            .await
            .map_err(|e| Error::delta(def.name, e))?;
        report.checkpointed = true;

        if self.vacuum {
            let retention = chrono::Duration::from_std(self.retention).map_err(|_| {
                Error::InvalidConfig(format!("retention {:?} is too long", self.retention))
            })?;
            let mut vacuum = table
                .clone()
                .vacuum()
                .with_retention_period(retention)
                .with_mode(VacuumMode::Lite);
            if let Some(clock) = &self.clock {
                vacuum = vacuum.with_clock(std::sync::Arc::clone(clock));
            }
            let (next, metrics) = vacuum.await.map_err(|e| Error::delta(def.name, e))?;
            report.files_vacuumed = metrics.files_deleted.len();
            table = next;
        }

        table
            .update_state()
            .await
            .map_err(|e| Error::delta(def.name, e))?;
        report.version_after = table.version();
        report.files_after = file_count(&table, def)?;
        info!(
            table = def.name,
            version = ?report.version_after,
            files_before = report.files_before,
            files_after = report.files_after,
            vacuumed = report.files_vacuumed,
            "table maintained"
        );
        Ok(report)
    }
}

/// The upkeep lock of one table: an object under [`LOCK_PREFIX`], created
/// only if absent.
struct UpkeepLock {
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    path: object_store::path::Path,
}

impl UpkeepLock {
    /// Takes the lock, or `None` when another maintainer holds it (a lock
    /// older than [`LOCK_TTL`] is taken over).
    async fn acquire(warehouse: &Warehouse, def: &TableDef) -> Result<Option<Self>> {
        use object_store::{ObjectStoreExt as _, PutMode, PutOptions};
        let store = warehouse.root_store(LOCK_PREFIX)?;
        let path = object_store::path::Path::from(format!("{LOCK_PREFIX}/{}.json", def.name));
        let body = json!({
            "holder": format!("adlake-ingest maintain, pid {}", std::process::id()),
            "since": chrono::Utc::now().to_rfc3339(),
        })
        .to_string();
        let lock_error = |e: object_store::Error| Error::delta(def.name, e.into());
        for _ in 0..2 {
            let put = store
                .put_opts(
                    &path,
                    body.clone().into(),
                    PutOptions::from(PutMode::Create),
                )
                .await;
            match put {
                Ok(_) => return Ok(Some(Self { store, path })),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => match store.head(&path).await {
                    Ok(meta) => {
                        let age = (chrono::Utc::now() - meta.last_modified)
                            .to_std()
                            .unwrap_or_default();
                        if age < LOCK_TTL {
                            return Ok(None);
                        }
                        warn!(table = def.name, ?age, "taking over a stale upkeep lock");
                        store.delete(&path).await.map_err(lock_error)?;
                    }
                    // Released in the meantime: try again.
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(lock_error(e)),
                },
                Err(e) => return Err(lock_error(e)),
            }
        }
        Ok(None)
    }

    async fn release(self) {
        use object_store::ObjectStoreExt as _;
        if let Err(e) = self.store.delete(&self.path).await {
            warn!(path = %self.path, error = %e, "could not release the upkeep lock; it expires by itself");
        }
    }
}

/// Refuses a retention shorter than [`MIN_RETENTION`].
pub fn check_retention(retention: Duration) -> Result<()> {
    if retention < MIN_RETENTION {
        return Err(Error::InvalidConfig(format!(
            "retention of {}h is shorter than the safety minimum of {}h: files a running query or write still needs could be deleted",
            retention.as_secs() / 3600,
            MIN_RETENTION.as_secs() / 3600
        )));
    }
    Ok(())
}

/// Active data files of the table's current snapshot.
pub(crate) fn file_count(table: &DeltaTable, def: &TableDef) -> Result<usize> {
    let snapshot = table.snapshot().map_err(|e| Error::delta(def.name, e))?;
    Ok(snapshot.log_data().num_files())
}

#[cfg(test)]
mod tests;
