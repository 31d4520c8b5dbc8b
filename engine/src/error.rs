//! Errors of the engine.

use datafusion::error::DataFusionError;
use deltalake::DeltaTableError;

/// Result of engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the engine. Each variant says whose fault it is: the
/// caller's (`InvalidSql`, `ReadOnly`, `ResourcesExhausted`) or the system's
/// (`Warehouse`, `Delta`, `Execution`), so the server can translate it to
/// the right status without reading messages.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQL does not parse or does not plan (unknown table or column,
    /// type mismatch, more than one statement, ...).
    #[error("{0}")]
    InvalidSql(String),

    /// The statement would change data or reach outside the warehouse.
    #[error("read-only: {0}")]
    ReadOnly(String),

    /// The query ran into a limit (memory, result size).
    #[error("resources exhausted: {0}")]
    ResourcesExhausted(String),

    /// The warehouse cannot be opened or read.
    #[error("warehouse {location}: {message}")]
    Warehouse {
        /// The warehouse URL or path.
        location: String,
        /// What is wrong with it.
        message: String,
    },

    /// A Delta table could not be loaded or refreshed.
    #[error("delta table {table}: {source}")]
    Delta {
        /// The table name.
        table: String,
        /// The underlying error.
        #[source]
        source: DeltaTableError,
    },

    /// Executing a valid plan failed.
    #[error("query execution failed: {0}")]
    Execution(#[source] DataFusionError),

    /// A configuration the engine was given is wrong (unknown time zone,
    /// unreadable file, ...): the operator's to fix.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// Admission refused the query (the caller's rate, its query slots or
    /// the server's): waiting `retry_after` may help.
    #[error("{reason}; retry after {} s", retry_after_secs(*.retry_after))]
    Refused {
        /// Which limit, in words the caller can act on.
        reason: String,
        /// How long the caller should wait before trying again.
        retry_after: std::time::Duration,
    },

    /// The query ran past the time limit.
    #[error(
        "the query ran longer than the server's limit of {} s: narrow it (date range, filters, LIMIT)",
        .0.as_secs_f64()
    )]
    TimedOut(std::time::Duration),
}

/// Whole seconds to wait, at least 1 (as HTTP's `Retry-After`).
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

impl Error {
    /// A caller's-fault engine error carried through DataFusion as
    /// `External` (raised by the engine's own table functions).
    fn carried(err: &DataFusionError) -> Option<Self> {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = next {
            match e.downcast_ref::<Self>() {
                Some(Self::InvalidSql(m)) => return Some(Self::InvalidSql(m.clone())),
                Some(Self::ResourcesExhausted(m)) => {
                    return Some(Self::ResourcesExhausted(m.clone()));
                }
                _ => next = e.source(),
            }
        }
        None
    }

    /// Sorts a DataFusion error raised while planning a caller's SQL into
    /// the caller's fault or the system's.
    pub(crate) fn from_planning(err: DataFusionError) -> Self {
        if let Some(own) = Self::carried(&err) {
            return own;
        }
        match err.find_root() {
            DataFusionError::SQL(e, _) => Self::InvalidSql(format!("SQL error: {e}")),
            DataFusionError::Plan(m) => Self::InvalidSql(format!("planning error: {m}")),
            DataFusionError::SchemaError(e, _) => Self::InvalidSql(format!("schema error: {e}")),
            DataFusionError::NotImplemented(m) => Self::InvalidSql(format!("not supported: {m}")),
            DataFusionError::ResourcesExhausted(m) => Self::ResourcesExhausted(m.clone()),
            _ => Self::Execution(err),
        }
    }

    /// Sorts a DataFusion error raised while executing.
    pub fn from_execution(err: DataFusionError) -> Self {
        if let Some(own) = Self::carried(&err) {
            return own;
        }
        match err.find_root() {
            DataFusionError::ResourcesExhausted(m) => Self::ResourcesExhausted(m.clone()),
            // Casts and arithmetic on caller-supplied values fail at run time.
            DataFusionError::ArrowError(e, _)
                if matches!(
                    **e,
                    arrow::error::ArrowError::CastError(_)
                        | arrow::error::ArrowError::DivideByZero
                        | arrow::error::ArrowError::ArithmeticOverflow(_)
                        | arrow::error::ArrowError::ParseError(_)
                ) =>
            {
                Self::InvalidSql(format!("{e}"))
            }
            _ => Self::Execution(err),
        }
    }
}
