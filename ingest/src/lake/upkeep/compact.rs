//! Compaction of small files, partition by partition, in bounded commits.
//!
//! Each partition's small files are packed into bins of at most the target
//! size; every bin of two or more files is read straight from storage and
//! rewritten as one file (sorted by the Z-order column when asked: with a
//! single column, Z-order is that column's order). The rewritten bins are
//! committed in groups of at most `files_per_commit` replaced files, so a
//! year of 50 clients (tens of thousands of files) is compacted in a few
//! dozen commits, each of which is visible to readers as soon as it lands,
//! and a crash or a lost race costs one group, not the whole run.
//!
//! The files of a bin are read directly, not through a Delta scan: a scan
//! restricted to a few files still replays the whole snapshot to find them,
//! which made the cost of compaction grow with the square of the file count.
//!
//! Replaced files are removed and new ones added with `dataChange = false`:
//! the rows do not change. A slice write that read the table before a
//! compaction commit still loses the race at its own commit, since that
//! commit added files in the partitions the write read.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::sync::Arc;

use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::SchemaRef;
use deltalake::datafile::writer::PartitionWriter;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Remove};
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaResult, DeltaTable, DeltaTableError, ObjectStore};
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path;
use serde_json::json;
use tracing::{debug, info};

use crate::lake::files::{FileSettings, conform, delete_added, file_schema, read_data_file};

/// How one table is compacted.
#[derive(Debug, Clone)]
pub(super) struct CompactOptions {
    /// Largest file a bin may grow to, in bytes; files at least this large
    /// are left alone.
    pub target_size: NonZeroU64,
    /// Most files replaced by one commit.
    pub files_per_commit: usize,
    /// Column to sort each rewritten bin by (Z-order on one column).
    pub sort_column: Option<&'static str>,
    /// Who compacts, recorded in each commit.
    pub actor: String,
}

/// What compaction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Compacted {
    pub files_removed: u64,
    pub files_added: u64,
    pub commits: u32,
}

/// A file compaction may replace.
#[derive(Debug)]
struct SmallFile {
    /// Its location, relative to the table root.
    path: Path,
    size: u64,
    /// The action that removes it (its partition values included).
    remove: Remove,
}

/// A partition's values (column, value), sorted by column.
type PartitionKey = Vec<(String, Option<String>)>;

/// Files of one partition rewritten into one.
#[derive(Debug)]
struct Bin {
    /// The partition's folder, relative to the table root.
    prefix: Path,
    files: Vec<SmallFile>,
}

/// Finds the bins worth rewriting in the table's current snapshot: in
/// every partition, its files smaller than the target packed greedily (in
/// path order) into bins of at most the target size, keeping bins of two
/// or more files.
fn plan(table: &DeltaTable, target_size: u64) -> DeltaResult<Vec<Bin>> {
    let snapshot = table.snapshot()?;
    let mut partitions: BTreeMap<PartitionKey, (Path, Vec<SmallFile>)> = BTreeMap::new();
    for file in snapshot.log_data().iter() {
        let size = u64::try_from(file.size()).unwrap_or(u64::MAX);
        if size >= target_size {
            continue;
        }
        let mut key: Vec<_> = file.partition_values_map().into_iter().collect();
        key.sort();
        let path = file.object_store_path();
        let parts: Vec<_> = path.parts().collect();
        let prefix = Path::from_iter(parts[..parts.len().saturating_sub(1)].iter().cloned());
        drop(parts);
        partitions
            .entry(key)
            .or_insert_with(|| (prefix, Vec::new()))
            .1
            .push(SmallFile {
                path,
                size,
                remove: file.remove_action(false),
            });
    }

    let mut bins = Vec::new();
    for (_, (prefix, mut files)) in partitions {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut current: Vec<SmallFile> = Vec::new();
        let mut current_size = 0u64;
        for file in files {
            let size = file.size;
            if !current.is_empty() && current_size.saturating_add(size) > target_size {
                bins.push(Bin {
                    prefix: prefix.clone(),
                    files: std::mem::take(&mut current),
                });
                current_size = 0;
            }
            current_size = current_size.saturating_add(size);
            current.push(file);
        }
        bins.push(Bin {
            prefix: prefix.clone(),
            files: current,
        });
    }
    bins.retain(|b| b.files.len() >= 2);
    Ok(bins)
}

/// Opens the writer of one rewritten bin in the given partition folder.
type WriterFactory = dyn Fn(&Path) -> DeltaResult<PartitionWriter> + Send + Sync;

/// Rewrites one bin; returns its remove and add actions.
async fn rewrite(
    store: Arc<dyn ObjectStore>,
    bin: Bin,
    schema: SchemaRef,
    options: Arc<CompactOptions>,
    new_writer: Arc<WriterFactory>,
) -> DeltaResult<Vec<Action>> {
    let mut writer = new_writer(&bin.prefix)?;

    let mut sorted_input = Vec::new();
    for file in &bin.files {
        let mut stream = read_data_file(Arc::clone(&store), &file.path, file.size).await?;
        while let Some(batch) = stream.try_next().await? {
            let batch = conform(&batch, &schema)?;
            if options.sort_column.is_some() {
                sorted_input.push(batch);
            } else {
                writer.write(&batch).await?;
            }
        }
    }
    if let Some(column) = options.sort_column
        && !sorted_input.is_empty()
    {
        let all = concat_batches(&schema, &sorted_input)?;
        drop(sorted_input);
        let sorted = match all.column_by_name(column) {
            Some(values) => {
                let indices = lexsort_to_indices(
                    &[SortColumn {
                        values: Arc::clone(values),
                        options: None,
                    }],
                    None,
                )?;
                take_record_batch(&all, &indices)?
            }
            None => all,
        };
        writer.write(&sorted).await?;
    }

    // The partition values of the replaced files, exactly as the log holds
    // them.
    let partition_values = bin
        .files
        .first()
        .and_then(|f| f.remove.partition_values.clone())
        .unwrap_or_default();
    let mut actions: Vec<Action> = bin
        .files
        .into_iter()
        .map(|f| Action::Remove(f.remove))
        .collect();
    for mut add in writer.close().await? {
        add.partition_values = partition_values.clone();
        add.data_change = false;
        actions.push(Action::Add(add));
    }
    Ok(actions)
}

/// Compacts `table` from its current snapshot. A commit that loses a race
/// returns the error after deleting the files it wrote; the caller
/// refreshes the table and calls again (bins already committed then hold
/// one file and are not planned again).
pub(super) async fn compact(
    table: &mut DeltaTable,
    options: &CompactOptions,
    done: &mut Compacted,
) -> DeltaResult<()> {
    let target = options.target_size.get();
    let bins = plan(table, target)?;
    if bins.is_empty() {
        return Ok(());
    }
    let schema = file_schema(table)?;
    let log_store = table.log_store();
    let store = log_store.object_store(None);
    let new_writer: Arc<WriterFactory> = {
        // File statistics as the table's own writes collect them.
        let settings = FileSettings::of(table)?;
        let (store, schema, target) =
            (Arc::clone(&store), Arc::clone(&schema), options.target_size);
        Arc::new(move |prefix: &Path| {
            settings.partition_writer(Arc::clone(&store), Arc::clone(&schema), prefix, target)
        })
    };
    let options_arc = Arc::new(options.clone());
    let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
    let total_files: usize = bins.iter().map(|b| b.files.len()).sum();
    info!(bins = bins.len(), files = total_files, "compaction planned");

    // Groups of bins, each replacing at most `files_per_commit` files (a
    // bin larger than that is a group of its own).
    let mut groups: Vec<Vec<Bin>> = Vec::new();
    let mut in_group = 0usize;
    for bin in bins {
        if groups.is_empty() || in_group + bin.files.len() > options.files_per_commit.max(1) {
            groups.push(Vec::new());
            in_group = 0;
        }
        in_group += bin.files.len();
        if let Some(group) = groups.last_mut() {
            group.push(bin);
        }
    }

    let group_count = groups.len();
    for (index, group) in groups.into_iter().enumerate() {
        let removed = group.iter().map(|b| b.files.len() as u64).sum::<u64>();
        let results: Vec<DeltaResult<Vec<Action>>> = futures::stream::iter(group)
            .map(|bin| {
                let task = rewrite(
                    Arc::clone(&store),
                    bin,
                    Arc::clone(&schema),
                    Arc::clone(&options_arc),
                    Arc::clone(&new_writer),
                );
                async move {
                    tokio::spawn(task).await.unwrap_or_else(|e| {
                        Err(DeltaTableError::Generic(format!(
                            "a compaction task stopped: {e}"
                        )))
                    })
                }
            })
            .buffer_unordered(parallelism)
            .collect()
            .await;
        let mut actions = Vec::new();
        let mut failure = None;
        for result in results {
            match result {
                Ok(a) => actions.extend(a),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Some(err) = failure {
            delete_added(&store, &actions).await;
            return Err(err);
        }
        let added = actions
            .iter()
            .filter(|a| matches!(a, Action::Add(_)))
            .count() as u64;

        // Removed as of this commit: vacuum's retention counts from here.
        let now = chrono::Utc::now().timestamp_millis();
        for action in &mut actions {
            if let Action::Remove(remove) = action {
                remove.deletion_timestamp = Some(now);
            }
        }
        let properties = CommitProperties::default().with_metadata([
            ("adlake.actor".to_owned(), json!(options.actor)),
            (
                "adlake.compaction_group".to_owned(),
                json!(format!("{} of {group_count}", index + 1)),
            ),
        ]);
        let operation = DeltaOperation::Optimize {
            predicate: None,
            target_size: i64::try_from(target).unwrap_or(i64::MAX),
        };
        let committed = CommitBuilder::from(properties)
            .with_actions(actions.clone())
            .build(Some(table.snapshot()?), log_store.clone(), operation)
            .await;
        match committed {
            Ok(commit) => {
                debug!(
                    version = commit.version(),
                    removed, added, "compaction group committed"
                );
                table.state = Some(commit.snapshot());
                done.files_removed += removed;
                done.files_added += added;
                done.commits += 1;
            }
            Err(err) => {
                delete_added(&store, &actions).await;
                return Err(err);
            }
        }
    }
    Ok(())
}
