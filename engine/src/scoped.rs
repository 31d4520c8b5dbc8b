//! Tenant isolation at the scan.
//!
//! [`ScopedTable`] wraps a client-scoped table so that its scan only ever
//! yields rows of the caller's clients. The `client_id IN (...)` predicate is
//! handed to the Delta scan (so other clients' partitions are never even
//! listed) and also applied by a `FilterExec` placed directly on top of that
//! scan, below every operator the caller's SQL contributes. The caller's own
//! predicates are reported as `Inexact`, so DataFusion evaluates them above
//! the tenancy filter: no expression of the caller ever sees another
//! client's row, not even one that would fail on it.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, cast, col, lit};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

use crate::schema::CLIENT_ID;

/// A client-scoped table restricted to a non-empty set of clients.
pub(crate) struct ScopedTable {
    inner: Arc<dyn TableProvider>,
    clients: Vec<String>,
    client_index: usize,
}

impl fmt::Debug for ScopedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedTable")
            .field("clients", &self.clients)
            .finish_non_exhaustive()
    }
}

impl ScopedTable {
    /// Restricts `inner` to `clients`. Fails when the table has no
    /// `client_id` column or `clients` is empty: both would be a bug in the
    /// caller, and failing closed is the only safe answer.
    pub(crate) fn try_new(inner: Arc<dyn TableProvider>, clients: Vec<String>) -> Result<Self> {
        let client_index = inner.schema().index_of(CLIENT_ID)?;
        if clients.is_empty() {
            return Err(datafusion::error::DataFusionError::Internal(
                "a scoped table needs at least one client".into(),
            ));
        }
        Ok(Self {
            inner,
            clients,
            client_index,
        })
    }

    /// `client_id IN (...)` with literals of the column's own type, so the
    /// Delta scan can prune partitions without coercion.
    fn pushdown_predicate(&self) -> Expr {
        let schema = self.inner.schema();
        let data_type = schema.field(self.client_index).data_type().clone();
        let literals = self
            .clients
            .iter()
            .map(|c| {
                let value = ScalarValue::Utf8(Some(c.clone()));
                match &data_type {
                    DataType::Dictionary(key, _) => {
                        lit(ScalarValue::Dictionary(key.clone(), Box::new(value)))
                    }
                    DataType::Utf8View => lit(ScalarValue::Utf8View(Some(c.clone()))),
                    _ => lit(value),
                }
            })
            .collect();
        col(CLIENT_ID).in_list(literals, false)
    }

    /// The same predicate over the scan's output, whatever string encoding
    /// the scan chose for the partition column.
    fn exact_predicate(&self) -> Expr {
        let literals = self.clients.iter().map(|c| lit(c.as_str())).collect();
        cast(col(CLIENT_ID), DataType::Utf8).in_list(literals, false)
    }
}

#[async_trait]
impl TableProvider for ScopedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Inexact: the scan may use them to skip files, but DataFusion must
        // still evaluate them, above our tenancy filter.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        // Never pushed: the scan must not stop early before our filter ran.
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut pushed = filters.to_vec();
        pushed.push(self.pushdown_predicate());

        let (inner_projection, drop_client_column) = match projection {
            Some(p) if !p.contains(&self.client_index) => {
                let mut with_client = p.clone();
                with_client.push(self.client_index);
                (Some(with_client), true)
            }
            other => (other.cloned(), false),
        };
        let scan = self
            .inner
            .scan(state, inner_projection.as_ref(), &pushed, None)
            .await?;

        let scan_schema = scan.schema();
        let df_schema = DFSchema::try_from(scan_schema.as_ref().clone())?;
        let predicate = state.create_physical_expr(self.exact_predicate(), &df_schema)?;
        let filtered: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(predicate, scan)?);
        if !drop_client_column {
            return Ok(filtered);
        }
        let kept = scan_schema.fields().len() - 1;
        let exprs = scan_schema
            .fields()
            .iter()
            .take(kept)
            .enumerate()
            .map(|(i, field)| ProjectionExpr {
                expr: Arc::new(Column::new(field.name(), i)),
                alias: field.name().clone(),
            });
        Ok(Arc::new(ProjectionExec::try_new(exprs, filtered)?))
    }
}
