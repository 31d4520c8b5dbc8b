//! Partition pruning without per-file statistics.
//!
//! A Delta scan handed a predicate on a data column (`campaign_id = '…'`)
//! evaluates it against the JSON statistics of every file in the snapshot
//! before it reads one, and does so again on every query. On a year of 50
//! clients (tens of thousands of small files, one or a few per client and
//! day) that costs about twenty times more than reading the few files the
//! partition values already select. [`PartitionPruned`] therefore hands
//! the Delta scan only the predicates over partition columns (client and
//! date), which it resolves from partition values alone, and leaves every
//! other predicate to a filter DataFusion places above the scan. Files of
//! one client and day are small, so reading them whole costs less than the
//! statistics look-up that would have skipped some of them.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

/// A table provider that pushes only partition-column predicates down to
/// the provider it wraps.
pub(crate) struct PartitionPruned {
    inner: Arc<dyn TableProvider>,
    partition_columns: &'static [&'static str],
}

impl fmt::Debug for PartitionPruned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionPruned")
            .field("partition_columns", &self.partition_columns)
            .finish_non_exhaustive()
    }
}

impl PartitionPruned {
    /// Wraps `inner`, whose partition columns are `partition_columns`.
    pub(crate) fn new(
        inner: Arc<dyn TableProvider>,
        partition_columns: &'static [&'static str],
    ) -> Self {
        Self {
            inner,
            partition_columns,
        }
    }

    /// Whether `expr` reads partition columns only (and so costs the scan
    /// no statistics look-up).
    fn on_partitions_only(&self, expr: &Expr) -> bool {
        expr.column_refs()
            .iter()
            .all(|c| self.partition_columns.contains(&c.name.as_str()))
    }
}

#[async_trait]
impl TableProvider for PartitionPruned {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
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
        // A wrapper above (the tenancy scope) may hand down every predicate
        // as inexact; keep the partition ones.
        let pushed: Vec<Expr> = filters
            .iter()
            .filter(|f| self.on_partitions_only(f))
            .cloned()
            .collect();
        // A limit is only safe to pass when nothing is left for a filter
        // above to drop.
        let limit = if pushed.len() == filters.len() {
            limit
        } else {
            None
        };
        self.inner.scan(state, projection, &pushed, limit).await
    }
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, lit};

    use super::*;

    fn pruned() -> PartitionPruned {
        let schema = Arc::new(arrow::datatypes::Schema::empty());
        PartitionPruned::new(
            Arc::new(datafusion::datasource::empty::EmptyTable::new(schema)),
            &["client_id", "date"],
        )
    }

    #[test]
    fn only_partition_predicates_are_pushed() {
        let p = pruned();
        let on_client = col("client_id").eq(lit("a"));
        let on_both = col("date")
            .gt(lit("2025-01-01"))
            .and(col("client_id").eq(lit("a")));
        let on_campaign = col("campaign_id").eq(lit("7"));
        let mixed = col("client_id").eq(lit("a")).or(col("spend").gt(lit(1)));
        let none = lit(true);
        let got = p
            .supports_filters_pushdown(&[&on_client, &on_both, &on_campaign, &mixed, &none])
            .unwrap();
        use TableProviderFilterPushDown::{Inexact, Unsupported};
        assert_eq!(
            got,
            vec![Inexact, Inexact, Unsupported, Unsupported, Inexact]
        );
    }
}
