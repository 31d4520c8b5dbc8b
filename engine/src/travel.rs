//! Plans that travel: a scoped query's physical plan, encoded so another
//! process can execute it.
//!
//! The plan is encoded with `datafusion-proto` after the caller's scope was
//! applied, so the tenancy filter placed on every scan (see `scoped`) is
//! part of what travels: the process that executes it reads the files the
//! plan names and filters them exactly as the planning process would have.
//! Executing an encoded plan is therefore for processes the planner trusts
//! (a worker of the same deployment), never for a caller's bytes.
//!
//! Every node of a plain SQL query is one of DataFusion's (the Parquet
//! `DataSourceExec` with its partition values, filters, aggregates, joins,
//! `CooperativeExec`), which the default codec carries. The engine's own
//! nodes (the metric layer's `MetricExec`) do not travel yet: encoding such
//! a plan is refused with an error naming it.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;

use crate::error::{Error, Result};

/// Encodes a physical plan.
pub(crate) fn encode(plan: Arc<dyn ExecutionPlan>) -> Result<Bytes> {
    datafusion_proto::bytes::physical_plan_to_bytes(plan).map_err(|e| {
        Error::InvalidSql(format!(
            "this query's plan cannot be sent to another process: {e}"
        ))
    })
}

/// Decodes a plan encoded by [`encode`] and starts it in `task`.
pub(crate) fn execute(bytes: &[u8], task: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
    let plan = datafusion_proto::bytes::physical_plan_from_bytes(bytes, &task)
        .map_err(|e| Error::InvalidConfig(format!("an encoded plan could not be decoded: {e}")))?;
    datafusion::physical_plan::execute_stream(plan, task).map_err(Error::from_execution)
}
