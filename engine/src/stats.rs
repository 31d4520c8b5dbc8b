//! What queries read: rows and bytes of the scans, summed over every query
//! the engine has run, for the server's `/metrics`.
//!
//! The numbers come from DataFusion's own operator metrics: the rows each
//! leaf of the physical plan (the Delta / Parquet scan, or a memory source)
//! produced, and the `bytes_scanned` the Parquet reader counted. They are
//! read once, when a query's stream ends or is dropped, so a query a client
//! abandons half-way still counts what it read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::physical_plan::ExecutionPlan;

/// Running totals of what the scans of all queries read.
#[derive(Debug, Default)]
pub struct ScanStats {
    queries: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
}

/// A reading of [`ScanStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanTotals {
    /// Queries whose scans have been counted.
    pub queries: u64,
    /// Rows produced by the plans' scans (after partition and row-group
    /// pruning, before any filter above the scan).
    pub rows: u64,
    /// Bytes the Parquet reader fetched from storage.
    pub bytes: u64,
}

impl ScanStats {
    /// The totals so far.
    pub fn totals(&self) -> ScanTotals {
        ScanTotals {
            queries: self.queries.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    fn add(&self, read: ScanTotals) {
        self.queries.fetch_add(read.queries, Ordering::Relaxed);
        self.rows.fetch_add(read.rows, Ordering::Relaxed);
        self.bytes.fetch_add(read.bytes, Ordering::Relaxed);
    }
}

/// What the scans of one executed plan read, from its operator metrics.
pub fn plan_scans(plan: &dyn ExecutionPlan) -> ScanTotals {
    let mut read = ScanTotals {
        queries: 1,
        ..ScanTotals::default()
    };
    add_scans(plan, &mut read);
    read
}

fn add_scans(plan: &dyn ExecutionPlan, read: &mut ScanTotals) {
    let children = plan.children();
    if let Some(metrics) = plan.metrics() {
        if let Some(bytes) = metrics.sum_by_name("bytes_scanned") {
            read.bytes += bytes.as_usize() as u64;
        }
        if children.is_empty() {
            read.rows += metrics.output_rows().unwrap_or(0) as u64;
        }
    }
    for child in children {
        add_scans(child.as_ref(), read);
    }
}

/// Adds a plan's scans to the totals when dropped (the plan's stream holds
/// it, so that is when the query ends, finished or abandoned).
pub(crate) struct Recorder {
    plan: Arc<dyn ExecutionPlan>,
    stats: Arc<ScanStats>,
}

impl Recorder {
    pub(crate) fn new(plan: Arc<dyn ExecutionPlan>, stats: Arc<ScanStats>) -> Self {
        Self { plan, stats }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stats.add(plan_scans(self.plan.as_ref()));
    }
}
