//! The lineage columns every fact row carries: which connector wrote it,
//! in which run, and when (`_source`, `_run_id`, `_ingested_at`).

use chrono::{DateTime, Utc};

/// The lineage columns of the rows of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// `_source`: connector and version, e.g. `google_ads/v21`.
    pub source: String,
    /// `_run_id`: the ingest run writing the rows.
    pub run_id: String,
    /// `_ingested_at`: when the run started (UTC).
    pub ingested_at: DateTime<Utc>,
}

impl Lineage {
    /// Lineage of a run starting now.
    pub fn new(source: impl Into<String>, run_id: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            run_id: run_id.into(),
            ingested_at: Utc::now(),
        }
    }
}
