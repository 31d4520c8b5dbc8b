//! The table provider over one indexed table version.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{Result, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use object_store::{ObjectMeta, ObjectStore};

use super::index::{FileEntry, FileIndex, Unsupported};
use super::prune;
use crate::schema::TableDef;

/// Scans exactly the files of one table version that a query's client and
/// date predicates select, as a DataFusion Parquet scan.
pub(crate) struct IndexedTable {
    def: &'static TableDef,
    /// The table's columns in its own order.
    schema: SchemaRef,
    /// Columns stored in the files (all but the partition columns).
    file_schema: SchemaRef,
    /// The partition columns, in the index's order.
    partition_fields: Vec<FieldRef>,
    /// For each column of `schema`, its index in the scan's table schema
    /// (file columns, then partition columns).
    to_scan: Vec<usize>,
    index: Arc<FileIndex>,
    store_url: ObjectStoreUrl,
    store: Arc<dyn ObjectStore>,
    readers: Arc<CachedParquetFileReaderFactory>,
}

impl fmt::Debug for IndexedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexedTable")
            .field("table", &self.def.name)
            .field("files", &self.index.len())
            .finish_non_exhaustive()
    }
}

impl IndexedTable {
    /// A provider over `index`, whose files are read from `store` (rooted
    /// at the table), known to sessions as `store_url`, through `readers`.
    pub(crate) fn try_new(
        def: &'static TableDef,
        schema: SchemaRef,
        index: Arc<FileIndex>,
        (store_url, store): (ObjectStoreUrl, Arc<dyn ObjectStore>),
        readers: Arc<CachedParquetFileReaderFactory>,
    ) -> Result<Self, Unsupported> {
        let is_partition = |name: &str| def.partition_columns.contains(&name);
        let file_schema = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .filter(|f| !is_partition(f.name()))
                .cloned()
                .collect::<Vec<_>>(),
        ));
        let mut partition_fields = Vec::new();
        for (column, expected) in def.partition_columns.iter().zip(partition_types(def)) {
            let field = schema.field_with_name(column).map_err(|_| {
                Unsupported(format!(
                    "table {} has no partition column {column} in its schema",
                    def.name
                ))
            })?;
            if field.data_type() != &expected {
                return Err(Unsupported(format!(
                    "partition column {column} of table {} is {}, not {expected}",
                    def.name,
                    field.data_type()
                )));
            }
            partition_fields.push(Arc::new(field.clone()));
        }
        let to_scan = schema
            .fields()
            .iter()
            .map(
                |f| match def.partition_columns.iter().position(|p| p == f.name()) {
                    Some(p) => file_schema.fields().len() + p,
                    None => file_schema
                        .index_of(f.name())
                        .expect("every non-partition column is a file column"),
                },
            )
            .collect();
        Ok(Self {
            def,
            schema,
            file_schema,
            partition_fields,
            to_scan,
            index,
            store_url,
            store,
            readers,
        })
    }

    /// `true` when `expr` reads partition columns only.
    fn on_partitions_only(&self, expr: &Expr) -> bool {
        expr.column_refs()
            .iter()
            .all(|c| self.def.partition_columns.contains(&c.name.as_str()))
    }
}

/// The Arrow types the scan gives the partition columns.
fn partition_types(def: &TableDef) -> impl Iterator<Item = DataType> + '_ {
    def.partition_columns.iter().map(|c| {
        if *c == crate::schema::DATE {
            DataType::Date32
        } else {
            DataType::Utf8
        }
    })
}

#[async_trait]
impl TableProvider for IndexedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Inexact even for partition predicates: DataFusion keeps its own
        // filter, so the answer never depends on how far the scan pruned.
        Ok(filters
            .iter()
            .map(|f| {
                if self.on_partitions_only(f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // A wrapper above (the tenancy scope) may hand down predicates on
        // any column; only the partition ones select files.
        let pushed: Vec<Expr> = filters
            .iter()
            .filter(|f| self.on_partitions_only(f))
            .cloned()
            .collect();
        let selection = prune::selection(&pushed);
        let files = self.index.select(&selection);
        let indices: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        // Any session may scan this table (the engine's, or one a helper
        // opened over the same providers): make sure it knows the store.
        let runtime = state.runtime_env();
        if runtime.object_store(&self.store_url).is_err() {
            runtime.register_object_store(self.store_url.as_ref(), Arc::clone(&self.store));
        }
        if files.is_empty() {
            let projected = self.schema.project(&indices)?;
            return Ok(Arc::new(EmptyExec::new(Arc::new(projected))));
        }
        let table_schema = TableSchema::builder(Arc::clone(&self.file_schema))
            .with_table_partition_cols(self.partition_fields.clone())
            .build();
        let source = ParquetSource::new(table_schema)
            .with_table_parquet_options(state.table_options().parquet.clone())
            .with_parquet_file_reader_factory(Arc::clone(&self.readers) as _);
        let groups = file_groups(&files, state.config().target_partitions());
        let mut statistics = Statistics::new_unknown(&Schema::new(
            self.file_schema
                .fields()
                .iter()
                .chain(&self.partition_fields)
                .cloned()
                .collect::<Vec<_>>(),
        ));
        statistics.num_rows = files
            .iter()
            .map(|f| f.rows.and_then(|r| usize::try_from(r).ok()))
            .sum::<Option<usize>>()
            .map_or(Precision::Absent, Precision::Inexact);
        statistics.total_byte_size = files
            .iter()
            .map(|f| usize::try_from(f.size).ok())
            .sum::<Option<usize>>()
            .map_or(Precision::Absent, Precision::Inexact);
        let mapped: Vec<usize> = indices.iter().map(|i| self.to_scan[*i]).collect();
        let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_file_groups(groups)
            .with_statistics(statistics)
            .with_limit(limit)
            .with_projection_indices(Some(mapped))?
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

/// Spreads files over at most `target` groups of about equal bytes, each
/// group read in partition order.
fn file_groups(files: &[Arc<FileEntry>], target: usize) -> Vec<FileGroup> {
    let target = target.clamp(1, files.len().max(1));
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(files[*i].size));
    let mut groups: Vec<(u64, Vec<usize>)> = vec![(0, Vec::new()); target];
    for i in order {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(bytes, _)| *bytes)
            .expect("at least one group");
        lightest.0 += files[i].size;
        lightest.1.push(i);
    }
    groups
        .into_iter()
        .filter(|(_, members)| !members.is_empty())
        .map(|(_, mut members)| {
            members.sort_unstable();
            FileGroup::new(
                members
                    .into_iter()
                    .map(|i| partitioned(&files[i]))
                    .collect(),
            )
        })
        .collect()
}

fn partitioned(file: &FileEntry) -> PartitionedFile {
    PartitionedFile::new_from_meta(ObjectMeta {
        location: file.path.clone(),
        last_modified: file.modified,
        size: file.size,
        e_tag: None,
        version: None,
    })
    .with_partition_values(file.partition_values.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: u64) -> Arc<FileEntry> {
        Arc::new(FileEntry {
            path: format!("f{size}.parquet").into(),
            size,
            modified: chrono::DateTime::default(),
            rows: None,
            partition_values: vec![],
        })
    }

    #[test]
    fn files_are_spread_by_bytes_and_keep_their_order_within_a_group() {
        let files: Vec<_> = [50, 10, 40, 20, 30].into_iter().map(entry).collect();
        let groups = file_groups(&files, 2);
        let sizes: Vec<Vec<u64>> = groups
            .iter()
            .map(|g| g.iter().map(|f| f.object_meta.size).collect())
            .collect();
        // Largest first onto the lightest group: 50 | 40, 30 | 70, 20 → 70 | 70.
        let totals: Vec<u64> = sizes.iter().map(|g| g.iter().sum()).collect();
        assert_eq!(totals.iter().sum::<u64>(), 150);
        assert!(totals.iter().all(|t| (70..=80).contains(t)), "{totals:?}");
        for group in &groups {
            let names: Vec<String> = group
                .iter()
                .map(|f| f.object_meta.location.to_string())
                .collect();
            let positions: Vec<usize> = names
                .iter()
                .map(|n| files.iter().position(|f| f.path.as_ref() == n).unwrap())
                .collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        }
        assert_eq!(file_groups(&files, 16).len(), 5);
        assert_eq!(file_groups(&files[..1], 0).len(), 1);
    }
}
