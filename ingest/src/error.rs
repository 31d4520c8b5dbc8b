//! The errors of the ingest crate.

use std::path::PathBuf;

use chrono::NaiveDate;
use deltalake::DeltaTableError;

/// Everything that can go wrong while generating, validating or writing data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The warehouse location names a storage scheme this build cannot write.
    #[error("unsupported warehouse scheme '{scheme}' (supported: file, s3, gs, az)")]
    UnsupportedScheme {
        /// The URL scheme that was given, e.g. `s3`.
        scheme: String,
    },

    /// The warehouse location could not be understood.
    #[error("invalid warehouse location '{location}': {reason}")]
    InvalidWarehouse {
        /// The location as given.
        location: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The warehouse directory could not be created or written.
    #[error("warehouse directory '{}' is not writable: {source}", path.display())]
    WarehouseNotWritable {
        /// The directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A command-line value cannot be used (exit code 2, as for arguments
    /// the parser rejects).
    #[error("{0}")]
    Usage(String),

    /// A slice write was asked for without something it needs, or with
    /// something the table does not have.
    #[error("invalid slice for table '{table}': {reason}")]
    InvalidSlice {
        /// The target table.
        table: &'static str,
        /// What is missing or wrong.
        reason: String,
    },

    /// An incoming batch does not have the table's schema.
    #[error("batch does not match the schema of table '{table}': {detail}")]
    SchemaMismatch {
        /// The target table.
        table: &'static str,
        /// The first difference found.
        detail: String,
    },

    /// An incoming row does not belong to the slice being replaced; nothing
    /// was committed.
    #[error(
        "row outside the slice of table '{table}': {row} does not belong to {slice}; nothing was committed"
    )]
    RowOutsideSlice {
        /// The target table.
        table: &'static str,
        /// The offending row's client, source and date.
        row: String,
        /// The slice being written.
        slice: String,
    },

    /// The input of a write failed part-way; nothing was committed.
    #[error("input of the write to table '{table}' failed: {message}; nothing was committed")]
    Input {
        /// The target table.
        table: &'static str,
        /// The input's own error.
        message: String,
    },

    /// A date does not fit the 32-bit day count of Arrow's `Date32`.
    #[error("date {0} is out of range")]
    DateOutOfRange(NaiveDate),

    /// An erasure named a client that has no row in any table; nothing was
    /// changed.
    #[error("unknown client '{0}': no table holds a row of it; nothing was changed")]
    UnknownClient(String),

    /// A source could not be read (after the HTTP client's retries), or
    /// gave nothing usable; nothing was written.
    #[error("{0}")]
    Fetch(String),

    /// The Delta Lake library failed.
    #[error("Delta table '{table}': {source}")]
    Delta {
        /// The table being read or written.
        table: String,
        /// The delta-rs error.
        #[source]
        source: DeltaTableError,
    },

    /// Building or reading Arrow data failed.
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),

    /// Planning or executing a DataFusion plan failed.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),

    /// The engine failed (reading runs for freshness, ...); boxed, as it
    /// is large and rare.
    #[error(transparent)]
    Engine(Box<adlake_engine::Error>),
}

impl From<adlake_engine::Error> for Error {
    fn from(err: adlake_engine::Error) -> Self {
        Self::Engine(Box::new(err))
    }
}

impl Error {
    pub(crate) fn delta(table: impl Into<String>, source: DeltaTableError) -> Self {
        Self::Delta {
            table: table.into(),
            source,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
