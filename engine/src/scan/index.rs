//! The active data files of one table version, by partition.
//!
//! A [`FileIndex`] is built once from a Delta snapshot when a table is
//! opened, and then moved forward version by version from the `add` and
//! `remove` actions of each new commit, so following a busy table costs the
//! size of what changed, not the size of the table. A query selects its
//! files from it by client and date range in a few B-tree look-ups, without
//! replaying the log.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::common::ScalarValue;
use deltalake::kernel::Version;
use deltalake::logstore::LogStore;
use deltalake::table::state::DeltaTableState;
use object_store::path::Path;

use crate::dates::date_to_epoch_day;
use crate::schema::{CLIENT_ID, DATE, TableDef};

/// Where one file sits: its client and day, for tables partitioned by both;
/// `(None, None)` for unpartitioned tables.
pub(crate) type PartitionKey = (Option<Arc<str>>, Option<i32>);

/// One active data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileEntry {
    /// Object-store path relative to the table root.
    pub path: Path,
    /// Size in bytes, as the log records it.
    pub size: u64,
    /// When the writer added it (validates cached footers).
    pub modified: DateTime<Utc>,
    /// Rows, from the file's log statistics, when recorded.
    pub rows: Option<u64>,
    /// Partition values in the order of [`TableDef::partition_columns`].
    pub partition_values: Vec<ScalarValue>,
}

/// How a table is partitioned, as far as the scan is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// No partition columns.
    Unpartitioned,
    /// `client_id` then `date`.
    ClientDate,
}

impl Layout {
    /// The layout of a table definition, if the scan knows it.
    pub(crate) fn of(def: &TableDef) -> Option<Self> {
        match def.partition_columns {
            [] => Some(Self::Unpartitioned),
            [client, date] if *client == CLIENT_ID && *date == DATE => Some(Self::ClientDate),
            _ => None,
        }
    }
}

/// The files to read for a set of clients and a range of days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selection {
    /// `None`: every client.
    pub clients: Option<BTreeSet<String>>,
    /// First day (epoch days), inclusive or exclusive.
    pub from: Bound<i32>,
    /// Last day (epoch days).
    pub to: Bound<i32>,
}

impl Selection {
    /// Every file.
    pub(crate) fn all() -> Self {
        Self {
            clients: None,
            from: Bound::Unbounded,
            to: Bound::Unbounded,
        }
    }

    /// Whether no file can match (an empty client set or day range).
    pub(crate) fn is_empty(&self) -> bool {
        if self.clients.as_ref().is_some_and(BTreeSet::is_empty) {
            return true;
        }
        let lo = match self.from {
            Bound::Included(d) => i64::from(d),
            Bound::Excluded(d) => i64::from(d) + 1,
            Bound::Unbounded => i64::from(i32::MIN),
        };
        let hi = match self.to {
            Bound::Included(d) => i64::from(d),
            Bound::Excluded(d) => i64::from(d) - 1,
            Bound::Unbounded => i64::from(i32::MAX),
        };
        lo > hi
    }
}

/// Active files of one table version.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileIndex {
    files: BTreeMap<PartitionKey, Vec<Arc<FileEntry>>>,
    by_path: HashMap<Path, PartitionKey>,
    clients: BTreeMap<Arc<str>, usize>,
    bytes: u64,
}

/// Why a table cannot be indexed: the scan would read it wrongly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unsupported(pub String);

impl FileIndex {
    /// Builds the index of a whole snapshot, refusing tables whose
    /// features the scan does not read (deletion vectors, column mapping)
    /// or whose partitioning is not the definition's.
    pub(crate) fn from_snapshot(
        def: &TableDef,
        state: &DeltaTableState,
    ) -> Result<Self, Unsupported> {
        let layout = check_table(def, state)?;
        let mut index = Self::default();
        for file in state.log_data() {
            if file.deletion_vector_descriptor().is_some() {
                return Err(deletion_vectors(def));
            }
            let values = file.partition_values_map();
            let entry = FileEntry {
                path: object_path(&file.path()),
                size: u64::try_from(file.size()).unwrap_or(0),
                modified: DateTime::from_timestamp_millis(file.modification_time())
                    .unwrap_or_default(),
                rows: file.num_records().and_then(|n| u64::try_from(n).ok()),
                partition_values: partition_values(def, layout, &values)?,
            };
            index.insert(layout, entry)?;
        }
        Ok(index)
    }

    /// The index of `state`, built from this index (of version `from`) and
    /// the commits in between, with how it was built. Falls back to
    /// [`Self::from_snapshot`] when a commit is gone (log clean-up), changes
    /// the table's metadata or protocol, or the result disagrees with the
    /// snapshot's file count.
    pub(crate) async fn advance(
        &self,
        def: &TableDef,
        log_store: &dyn LogStore,
        from: Version,
        state: &DeltaTableState,
    ) -> Result<(Self, Moved), Unsupported> {
        let rebuilt = |reason: &'static str| {
            Self::from_snapshot(def, state).map(|index| (index, Moved::Rebuilt(reason)))
        };
        let to = state.version();
        if to <= from {
            return rebuilt("the table went back to an earlier version");
        }
        let layout = check_table(def, state)?;
        let mut next = self.clone();
        for version in from + 1..=to {
            let commit = match log_store.read_commit_entry(version).await {
                Ok(Some(bytes)) => bytes,
                Ok(None) | Err(_) => return rebuilt("a commit in between is gone"),
            };
            match next.apply_commit(def, layout, &commit)? {
                Applied::Files => {}
                Applied::NeedsRebuild => {
                    return rebuilt("a commit changed the table's metadata or protocol");
                }
            }
        }
        if next.len() != state.log_data().num_files() {
            tracing::warn!(
                table = def.name,
                indexed = next.len(),
                in_snapshot = state.log_data().num_files(),
                "file index out of step with the snapshot"
            );
            return rebuilt("the index was out of step with the snapshot");
        }
        Ok((next, Moved::Incremental(to - from)))
    }

    /// Applies the actions of one commit (newline-delimited JSON).
    fn apply_commit(
        &mut self,
        def: &TableDef,
        layout: Layout,
        commit: &[u8],
    ) -> Result<Applied, Unsupported> {
        for line in commit.split(|b| *b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else {
                return Ok(Applied::NeedsRebuild);
            };
            if action.get("metaData").is_some() || action.get("protocol").is_some() {
                return Ok(Applied::NeedsRebuild);
            }
            if let Some(remove) = action.get("remove") {
                let Some(path) = remove.get("path").and_then(|p| p.as_str()) else {
                    return Ok(Applied::NeedsRebuild);
                };
                self.remove(&object_path(&decode(path)));
            } else if let Some(add) = action.get("add") {
                if add.get("deletionVector").is_some_and(|d| !d.is_null()) {
                    return Err(deletion_vectors(def));
                }
                let Some(entry) = entry_of_add(def, layout, add)? else {
                    return Ok(Applied::NeedsRebuild);
                };
                self.insert(layout, entry)?;
            }
        }
        Ok(Applied::Files)
    }

    fn insert(&mut self, layout: Layout, entry: FileEntry) -> Result<(), Unsupported> {
        let key = key_of(layout, &entry.partition_values)?;
        // An add of a path already present replaces it (Delta allows it).
        self.remove(&entry.path);
        self.by_path.insert(entry.path.clone(), key.clone());
        if let Some(client) = &key.0 {
            *self.clients.entry(Arc::clone(client)).or_default() += 1;
        }
        self.bytes += entry.size;
        self.files.entry(key).or_default().push(Arc::new(entry));
        Ok(())
    }

    fn remove(&mut self, path: &Path) {
        let Some(key) = self.by_path.remove(path) else {
            return;
        };
        if let Some(files) = self.files.get_mut(&key) {
            if let Some(at) = files.iter().position(|f| &f.path == path) {
                let gone = files.swap_remove(at);
                self.bytes -= gone.size;
            }
            if files.is_empty() {
                self.files.remove(&key);
            }
        }
        if let Some(client) = &key.0
            && let Some(count) = self.clients.get_mut(client)
        {
            *count -= 1;
            if *count == 0 {
                self.clients.remove(client);
            }
        }
    }

    /// Number of active files.
    pub(crate) fn len(&self) -> usize {
        self.by_path.len()
    }

    /// Total size of the active files in bytes.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The files a selection reads, in partition order.
    pub(crate) fn select(&self, selection: &Selection) -> Vec<Arc<FileEntry>> {
        if selection.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut take = |client: Option<Arc<str>>| {
            let lo = match selection.from {
                Bound::Included(d) => Bound::Included((client.clone(), Some(d))),
                Bound::Excluded(d) => Bound::Excluded((client.clone(), Some(d))),
                Bound::Unbounded => Bound::Included((client.clone(), None)),
            };
            let hi = match selection.to {
                Bound::Included(d) => Bound::Included((client.clone(), Some(d))),
                Bound::Excluded(d) => Bound::Excluded((client.clone(), Some(d))),
                Bound::Unbounded => Bound::Included((client.clone(), Some(i32::MAX))),
            };
            for files in self.files.range((lo, hi)).map(|(_, files)| files) {
                out.extend(files.iter().cloned());
            }
        };
        if self.clients.is_empty() {
            // Unpartitioned: every file sits under (None, None), which no
            // day bound selects.
            out.extend(self.files.values().flatten().cloned());
            return out;
        }
        match &selection.clients {
            Some(clients) => {
                for client in clients {
                    if let Some((known, _)) = self.clients.get_key_value(client.as_str()) {
                        take(Some(Arc::clone(known)));
                    }
                }
            }
            None => {
                for client in self.clients.keys() {
                    take(Some(Arc::clone(client)));
                }
            }
        }
        out
    }
}

/// How [`FileIndex::advance`] built the next index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Moved {
    /// From this many commits' adds and removes.
    Incremental(u64),
    /// From the whole snapshot, and why.
    Rebuilt(&'static str),
}

#[derive(Debug)]
enum Applied {
    Files,
    NeedsRebuild,
}

/// Refuses what the scan would read wrongly and returns the layout.
fn check_table(def: &TableDef, state: &DeltaTableState) -> Result<Layout, Unsupported> {
    let layout = Layout::of(def).ok_or_else(|| {
        Unsupported(format!(
            "table {} is partitioned by {:?}, which the scan does not read",
            def.name, def.partition_columns
        ))
    })?;
    let configuration = state.metadata().configuration();
    let setting = |key: &str| configuration.get(key).map(|v| v.to_ascii_lowercase());
    if setting("delta.columnMapping.mode").is_some_and(|mode| mode != "none") {
        return Err(Unsupported(format!(
            "table {} uses Delta column mapping, which adlake's scan does not read",
            def.name
        )));
    }
    if setting("delta.enableDeletionVectors").as_deref() == Some("true") {
        return Err(deletion_vectors(def));
    }
    let partitioned: Vec<&str> = state
        .metadata()
        .partition_columns()
        .iter()
        .map(String::as_str)
        .collect();
    if partitioned != def.partition_columns {
        return Err(Unsupported(format!(
            "table {} is partitioned by {partitioned:?} in its Delta log but by {:?} in adlake's schema",
            def.name, def.partition_columns
        )));
    }
    Ok(layout)
}

fn deletion_vectors(def: &TableDef) -> Unsupported {
    Unsupported(format!(
        "table {} uses Delta deletion vectors, which adlake's scan does not read",
        def.name
    ))
}

/// A file entry from a commit's `add` action; `None` when the action lacks
/// what an entry needs (the caller then rebuilds from the snapshot).
fn entry_of_add(
    def: &TableDef,
    layout: Layout,
    add: &serde_json::Value,
) -> Result<Option<FileEntry>, Unsupported> {
    let (Some(path), Some(size)) = (
        add.get("path").and_then(|p| p.as_str()),
        add.get("size").and_then(serde_json::Value::as_u64),
    ) else {
        return Ok(None);
    };
    let modified = add
        .get("modificationTime")
        .and_then(serde_json::Value::as_i64)
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_default();
    let rows = add
        .get("stats")
        .and_then(|s| s.as_str())
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|stats| stats.get("numRecords").and_then(serde_json::Value::as_u64));
    let values: HashMap<String, Option<String>> = add
        .get("partitionValues")
        .and_then(|v| v.as_object())
        .map(|map| {
            map.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(FileEntry {
        path: object_path(&decode(path)),
        size,
        modified,
        rows,
        partition_values: partition_values(def, layout, &values)?,
    }))
}

/// The typed partition values of a file, from the log's string map.
fn partition_values(
    def: &TableDef,
    layout: Layout,
    values: &HashMap<String, Option<String>>,
) -> Result<Vec<ScalarValue>, Unsupported> {
    match layout {
        Layout::Unpartitioned => Ok(Vec::new()),
        Layout::ClientDate => {
            let get = |column: &str| {
                values.get(column).cloned().flatten().ok_or_else(|| {
                    Unsupported(format!(
                        "a file of table {} has no value for partition column {column}",
                        def.name
                    ))
                })
            };
            let client = get(CLIENT_ID)?;
            let date = get(DATE)?;
            let day = NaiveDate::parse_from_str(&date, "%Y-%m-%d")
                .map(date_to_epoch_day)
                .map_err(|_| {
                    Unsupported(format!(
                        "a file of table {} has date partition value {date:?}, not a date",
                        def.name
                    ))
                })?;
            Ok(vec![
                ScalarValue::Utf8(Some(client)),
                ScalarValue::Date32(Some(day)),
            ])
        }
    }
}

fn key_of(layout: Layout, values: &[ScalarValue]) -> Result<PartitionKey, Unsupported> {
    match (layout, values) {
        (Layout::Unpartitioned, []) => Ok((None, None)),
        (
            Layout::ClientDate,
            [
                ScalarValue::Utf8(Some(client)),
                ScalarValue::Date32(Some(day)),
            ],
        ) => Ok((Some(Arc::from(client.as_str())), Some(*day))),
        _ => Err(Unsupported(format!(
            "partition values {values:?} do not fit the table's layout"
        ))),
    }
}

/// Percent-decodes a path as the Delta log stores it.
fn decode(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

/// The object-store path of a decoded log path, as delta-rs forms it.
fn object_path(decoded: &str) -> Path {
    Path::parse(decoded).unwrap_or_else(|_| Path::from(decoded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::AD_PERFORMANCE;

    fn add(path: &str, client: &str, date: &str, size: u64) -> String {
        serde_json::json!({"add": {
            "path": path, "size": size, "modificationTime": 1_700_000_000_000_i64,
            "dataChange": true,
            "partitionValues": {"client_id": client, "date": date},
            "stats": "{\"numRecords\":7}"
        }})
        .to_string()
    }

    fn remove(path: &str) -> String {
        serde_json::json!({"remove": {"path": path, "dataChange": true}}).to_string()
    }

    fn day(s: &str) -> i32 {
        date_to_epoch_day(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    }

    fn index_of(commits: &[Vec<String>]) -> FileIndex {
        let mut index = FileIndex::default();
        for commit in commits {
            let bytes = commit.join("\n");
            let applied = index
                .apply_commit(&AD_PERFORMANCE, Layout::ClientDate, bytes.as_bytes())
                .unwrap();
            assert!(matches!(applied, Applied::Files));
        }
        index
    }

    fn paths(files: &[Arc<FileEntry>]) -> Vec<String> {
        files.iter().map(|f| f.path.to_string()).collect()
    }

    #[test]
    fn adds_and_removes_move_the_index_and_selection_reads_client_and_day_ranges() {
        let index = index_of(&[
            vec![
                add(
                    "client_id=a/date=2025-01-01/1.parquet",
                    "a",
                    "2025-01-01",
                    10,
                ),
                add(
                    "client_id=a/date=2025-01-02/2.parquet",
                    "a",
                    "2025-01-02",
                    20,
                ),
                add(
                    "client_id=b/date=2025-01-01/3.parquet",
                    "b",
                    "2025-01-01",
                    30,
                ),
            ],
            // A compaction: two files of a's first day replace one.
            vec![
                remove("client_id=a/date=2025-01-01/1.parquet"),
                add(
                    "client_id=a/date=2025-01-01/4.parquet",
                    "a",
                    "2025-01-01",
                    5,
                ),
                add(
                    "client_id=a/date=2025-01-03/5.parquet",
                    "a",
                    "2025-01-03",
                    6,
                ),
            ],
        ]);
        assert_eq!(index.len(), 4);
        assert_eq!(index.bytes(), 20 + 30 + 5 + 6);
        assert!(index.files.values().flatten().all(|f| f.rows == Some(7)));

        let only_a = |from, to| Selection {
            clients: Some(BTreeSet::from(["a".to_string()])),
            from,
            to,
        };
        assert_eq!(
            paths(&index.select(&only_a(Bound::Unbounded, Bound::Unbounded))),
            [
                "client_id=a/date=2025-01-01/4.parquet",
                "client_id=a/date=2025-01-02/2.parquet",
                "client_id=a/date=2025-01-03/5.parquet"
            ]
        );
        assert_eq!(
            paths(&index.select(&only_a(
                Bound::Excluded(day("2025-01-01")),
                Bound::Included(day("2025-01-02"))
            ))),
            ["client_id=a/date=2025-01-02/2.parquet"]
        );
        assert_eq!(
            paths(&index.select(&Selection {
                clients: None,
                from: Bound::Included(day("2025-01-01")),
                to: Bound::Excluded(day("2025-01-02")),
            })),
            [
                "client_id=a/date=2025-01-01/4.parquet",
                "client_id=b/date=2025-01-01/3.parquet"
            ]
        );
        // Unknown clients and empty ranges read nothing.
        let nobody = Selection {
            clients: Some(BTreeSet::from(["zz".to_string()])),
            ..Selection::all()
        };
        assert!(index.select(&nobody).is_empty());
        let backwards = only_a(
            Bound::Included(day("2025-01-03")),
            Bound::Included(day("2025-01-01")),
        );
        assert!(backwards.is_empty());
        assert!(index.select(&backwards).is_empty());
    }

    #[test]
    fn encoded_paths_in_removes_match_their_adds_and_a_client_leaves_when_its_last_file_does() {
        let index = index_of(&[
            vec![add(
                "client_id=a%20b/date=2025-01-01/1.parquet",
                "a b",
                "2025-01-01",
                1,
            )],
            vec![remove("client_id=a%20b/date=2025-01-01/1.parquet")],
        ]);
        assert_eq!(index.len(), 0);
        assert_eq!(index.bytes(), 0);
        assert!(index.clients.is_empty());
        assert!(index.files.is_empty());
    }

    #[tokio::test]
    async fn a_real_tables_commits_move_the_index_as_a_rebuild_would() {
        use crate::semantic::tests::{batch, dates, text, write};
        let dir = tempfile::tempdir().unwrap();
        let rows = |clients: &[&str], days: &[&str]| {
            batch(
                &AD_PERFORMANCE,
                clients.len(),
                vec![("client_id", text(clients)), ("date", dates(days))],
            )
        };
        write(
            dir.path(),
            &AD_PERFORMANCE,
            rows(&["a", "b"], &["2026-01-01", "2026-01-01"]),
        )
        .await;
        let url = url::Url::from_directory_path(dir.path().join("ad_performance")).unwrap();
        let load = || async {
            deltalake::DeltaTable::try_from_url(url.clone())
                .await
                .unwrap()
        };
        let first = load().await;
        let v0 = first.version().unwrap();
        let index = FileIndex::from_snapshot(&AD_PERFORMANCE, first.snapshot().unwrap()).unwrap();

        write(dir.path(), &AD_PERFORMANCE, rows(&["a"], &["2026-01-02"])).await;
        write(dir.path(), &AD_PERFORMANCE, rows(&["a"], &["2026-01-02"])).await;
        load()
            .await
            .delete()
            .with_predicate("client_id = 'b'")
            .await
            .unwrap();
        let _ = load().await.optimize().await.unwrap();

        let now = load().await;
        let state = now.snapshot().unwrap();
        let (moved, how) = index
            .advance(&AD_PERFORMANCE, now.log_store().as_ref(), v0, state)
            .await
            .unwrap();
        assert_eq!(how, Moved::Incremental(now.version().unwrap() - v0));
        let rebuilt = FileIndex::from_snapshot(&AD_PERFORMANCE, state).unwrap();
        let sorted = |index: &FileIndex| {
            let mut files: Vec<FileEntry> = index
                .files
                .values()
                .flatten()
                .map(|f| (**f).clone())
                .collect();
            files.sort_by(|x, y| x.path.cmp(&y.path));
            files
        };
        assert_eq!(sorted(&moved), sorted(&rebuilt));
        assert_eq!(moved.bytes(), rebuilt.bytes());
        assert_eq!(moved.clients, rebuilt.clients);
        // Client b is gone; a's second day was compacted into one file.
        assert_eq!(
            moved.clients.keys().map(|c| c.as_ref()).collect::<Vec<_>>(),
            ["a"]
        );
        let day2 = Selection {
            clients: None,
            from: Bound::Included(day("2026-01-02")),
            to: Bound::Unbounded,
        };
        assert_eq!(moved.select(&day2).len(), 1);
        assert_eq!(moved.select(&day2)[0].rows, Some(2));
    }

    #[test]
    fn what_the_scan_cannot_read_is_refused_or_rebuilt() {
        let mut index = FileIndex::default();
        let dv = serde_json::json!({"add": {
            "path": "x.parquet", "size": 1, "partitionValues": {"client_id": "a", "date": "2025-01-01"},
            "deletionVector": {"storageType": "u", "pathOrInlineDv": "ab", "sizeInBytes": 1, "cardinality": 1}
        }})
        .to_string();
        let err = index
            .apply_commit(&AD_PERFORMANCE, Layout::ClientDate, dv.as_bytes())
            .unwrap_err();
        assert!(err.0.contains("deletion vectors"), "{err}");

        let bad_date = add("y.parquet", "a", "yesterday", 1);
        let err = index
            .apply_commit(&AD_PERFORMANCE, Layout::ClientDate, bad_date.as_bytes())
            .unwrap_err();
        assert!(err.0.contains("\"yesterday\""), "{err}");

        let metadata = r#"{"metaData":{"id":"x"}}"#;
        let applied = index
            .apply_commit(&AD_PERFORMANCE, Layout::ClientDate, metadata.as_bytes())
            .unwrap();
        assert!(matches!(applied, Applied::NeedsRebuild));
    }
}
