//! Operators that yield often enough to be stopped.
//!
//! A query is stopped (past its deadline, or when its caller leaves) by
//! aborting its tasks, which takes effect the next time a task yields to the
//! runtime. DataFusion's scans and exchanges spend a unit of the runtime's
//! cooperative budget per batch, so a task that keeps pulling batches from
//! them yields regularly. A join does not: a cross join emits the product of
//! one input batch with every row it holds, batch after batch, without
//! pulling its input again, and an aggregation over it would run to the end
//! of a product of billions of rows before yielding once, long after its
//! deadline and on the CPU of every other caller. [`YieldAfterJoins`] puts
//! DataFusion's `CooperativeExec` on top of every join, so each batch a join
//! produces spends budget too.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec, SymmetricHashJoinExec,
};
use datafusion::physical_plan::unnest::UnnestExec;

/// Wraps every join (and `UNNEST`, which multiplies rows too) in a
/// `CooperativeExec`.
#[derive(Debug, Default)]
pub(crate) struct YieldAfterJoins;

/// Whether `plan` can emit many batches per batch it reads.
fn multiplies_rows(plan: &dyn ExecutionPlan) -> bool {
    plan.downcast_ref::<CrossJoinExec>().is_some()
        || plan.downcast_ref::<NestedLoopJoinExec>().is_some()
        || plan.downcast_ref::<HashJoinExec>().is_some()
        || plan.downcast_ref::<SortMergeJoinExec>().is_some()
        || plan.downcast_ref::<SymmetricHashJoinExec>().is_some()
        || plan.downcast_ref::<UnnestExec>().is_some()
}

impl PhysicalOptimizerRule for YieldAfterJoins {
    fn name(&self) -> &str {
        "adlake_yield_after_joins"
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|plan| {
            if multiplies_rows(plan.as_ref()) {
                Ok(Transformed::yes(
                    Arc::new(CooperativeExec::new(plan)) as Arc<dyn ExecutionPlan>
                ))
            } else {
                Ok(Transformed::no(plan))
            }
        })
        .map(|t| t.data)
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;

    use super::*;

    #[tokio::test]
    async fn every_join_is_followed_by_a_yield_point() {
        let ctx = SessionContext::new();
        let state = datafusion::execution::SessionStateBuilder::new_from_existing(ctx.state())
            .with_physical_optimizer_rule(Arc::new(YieldAfterJoins))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let plan = ctx
            .sql(
                "SELECT count(*) FROM (VALUES (1), (2)) a(x), (VALUES (3)) b(y) \
                 JOIN (VALUES (3)) c(z) ON b.y = c.z",
            )
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let text = displayable(plan.as_ref()).indent(false).to_string();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let joins: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with("CrossJoinExec") || l.starts_with("HashJoinExec"))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(joins.len(), 2, "{text}");
        for at in joins {
            assert!(lines[at - 1].starts_with("CooperativeExec"), "{text}");
        }
    }
}
