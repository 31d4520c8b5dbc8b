//! Reading and writing a Delta table's data files directly, for the
//! operations that replace files themselves (slice writes, compaction)
//! rather than through a delta-rs operation that replays the snapshot.

use std::num::NonZeroU64;
use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions, new_null_array};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory as _;
use datafusion::datasource::physical_plan::parquet::DefaultParquetFileReaderFactory;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use deltalake::datafile::writer::{PartitionWriter, PartitionWriterConfig, WriterConfig};
use deltalake::kernel::Action;
use deltalake::parquet::arrow::ParquetRecordBatchStreamBuilder;
use deltalake::parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStream};
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::table::config::TablePropertiesExt as _;
use deltalake::table::state::DeltaTableState;
use deltalake::{DeltaResult, DeltaTable, DeltaTableError, ObjectMeta, ObjectStore};
use object_store::path::Path;
use tracing::warn;

/// Opens one data file for reading, with the size the log records: no
/// extra request for it, and no suffix range request for the footer
/// (Azure has none).
pub(crate) async fn read_data_file(
    store: Arc<dyn ObjectStore>,
    path: &Path,
    size: u64,
) -> DeltaResult<ParquetRecordBatchStream<Box<dyn AsyncFileReader>>> {
    let readers = DefaultParquetFileReaderFactory::new(store);
    let metrics = ExecutionPlanMetricsSet::new();
    let meta = ObjectMeta {
        location: path.clone(),
        last_modified: chrono::Utc::now(),
        size,
        e_tag: None,
        version: None,
    };
    let reader: Box<dyn AsyncFileReader> = readers
        .create_reader(0, PartitionedFile::from(meta), None, &metrics)
        .map_err(|e| DeltaTableError::Generic(format!("cannot read {path}: {e}")))?;
    Ok(ParquetRecordBatchStreamBuilder::new(reader)
        .await?
        .build()?)
}

/// The schema of the data files: the table's columns without the
/// partition columns (their values live in the log).
pub(crate) fn file_schema(table: &DeltaTable) -> DeltaResult<SchemaRef> {
    let snapshot = table.snapshot()?;
    let partition_columns = snapshot.metadata().partition_columns();
    let schema = snapshot.snapshot().arrow_schema();
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .filter(|f| !partition_columns.contains(f.name()))
        .cloned()
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// A batch read from an older file, in the current file schema: columns by
/// name, cast where the file stored another type, null where the file
/// predates the column. A missing non-nullable column is an error.
pub(crate) fn conform(batch: &RecordBatch, schema: &SchemaRef) -> DeltaResult<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(c) if c.data_type() == field.data_type() => Ok(Arc::clone(c)),
            Some(c) => arrow::compute::cast(c, field.data_type()),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &options,
    )?)
}

/// How the table's own writes encode files and collect their statistics.
#[derive(Debug, Clone)]
pub(crate) struct FileSettings {
    /// The snapshot whose table properties name the statistics columns.
    snapshot: DeltaTableState,
}

impl FileSettings {
    /// The settings of `table`'s current snapshot.
    pub(crate) fn of(table: &DeltaTable) -> DeltaResult<Self> {
        Ok(Self {
            snapshot: table.snapshot()?.clone(),
        })
    }

    /// Parquet settings of every data file: Snappy, as delta-rs writes.
    pub(crate) fn writer_properties() -> WriterProperties {
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build()
    }

    /// A writer of one partition's files (of at most `target` bytes each)
    /// under `prefix`; its adds carry no partition values, the caller sets
    /// them.
    pub(crate) fn partition_writer(
        &self,
        store: Arc<dyn ObjectStore>,
        schema: SchemaRef,
        prefix: &Path,
        target: NonZeroU64,
    ) -> DeltaResult<PartitionWriter> {
        let config = PartitionWriterConfig::try_new(
            schema,
            indexmap::IndexMap::new(),
            Some(Self::writer_properties()),
            Some(target),
            None,
            None,
            Some(prefix.clone()),
        )?;
        let properties = self.snapshot.snapshot().table_properties();
        PartitionWriter::try_with_config(
            store,
            config,
            properties.num_indexed_cols(),
            self.stats_columns(),
        )
    }

    /// The configuration of a writer that splits its rows into the
    /// table's partitions (files of at most `target` bytes each).
    pub(crate) fn delta_writer_config(
        &self,
        schema: SchemaRef,
        partition_columns: Vec<String>,
        target: NonZeroU64,
    ) -> WriterConfig {
        WriterConfig::new(
            schema,
            partition_columns,
            Some(Self::writer_properties()),
            Some(target),
            None,
            self.snapshot
                .snapshot()
                .table_properties()
                .num_indexed_cols(),
            self.stats_columns(),
        )
    }

    /// The table's target file size.
    pub(crate) fn target_size(&self) -> NonZeroU64 {
        self.snapshot
            .snapshot()
            .table_properties()
            .target_file_size()
    }

    fn stats_columns(&self) -> Option<Vec<String>> {
        self.snapshot
            .snapshot()
            .table_properties()
            .data_skipping_stats_columns
            .as_ref()
            .map(|v| v.iter().map(ToString::to_string).collect())
    }
}

/// Deletes the files that `actions` add, after their commit failed: they
/// are in no version of the table.
pub(crate) async fn delete_added(store: &Arc<dyn ObjectStore>, actions: &[Action]) {
    use object_store::ObjectStoreExt as _;
    for action in actions {
        if let Action::Add(add) = action {
            let deleted = match Path::from_url_path(&add.path) {
                Ok(path) => store.delete(&path).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = deleted {
                warn!(path = %add.path, error = %e, "could not delete a file of an uncommitted change; vacuum --full removes it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    use super::*;

    #[test]
    fn older_files_are_read_in_the_current_schema() {
        let old = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("b", DataType::Int32, false),
                Field::new("a", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(arrow::array::Int32Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec!["x", "y"])),
            ],
        )
        .unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, false),
            Field::new("b", DataType::Int64, false),
            Field::new("added_later", DataType::Int64, true),
        ]));
        let got = conform(&old, &schema).unwrap();
        assert_eq!(got.schema(), schema);
        assert_eq!(
            got.column(1).as_any().downcast_ref::<Int64Array>().unwrap(),
            &Int64Array::from(vec![1, 2])
        );
        assert_eq!(got.column(2).null_count(), 2);

        // A required column the file lacks cannot be made up.
        let strict = Arc::new(Schema::new(vec![Field::new(
            "required",
            DataType::Int64,
            false,
        )]));
        assert!(conform(&old, &strict).is_err());
    }
}
