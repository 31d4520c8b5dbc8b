//! The metric layer from SQL: the `metric_query` table function, so that a
//! BI tool over Flight SQL gets the same numbers as `QueryMetrics` for the
//! same question.
//!
//! ```sql
//! SELECT * FROM metric_query('spend,ctr', 'week,platform', '2026-01-01', '2026-01-31');
//! SELECT * FROM metric_query('roas', '', 'last_7_days', 'comparison=previous_period');
//! SELECT * FROM metric_query('spend', 'month', '2026-01-01', '2026-03-31', 'currency=USD;zero_fill=true');
//! ```
//!
//! Arguments, all text literals: the metrics (comma-separated), the
//! dimensions (comma-separated, `''` for one total row), then either a
//! start and an end date (`YYYY-MM-DD`, inclusive) or one relative range
//! (`last_7_days`, `month_to_date`, …), then optionally `key=value` options
//! separated by `;`: `comparison` (`previous_period`,
//! `same_period_last_year`), `currency` (a reporting currency, converted
//! through `fx_rates`), `zero_fill` (`true`/`false`) and `time_zone` (IANA,
//! for relative ranges).
//!
//! Dimension filters, order and limit are plain SQL around the call: a
//! `WHERE` on a grouped dimension keeps whole groups, so their ratios are
//! unchanged.
//!
//! The function is registered in each caller's session: its statements run
//! in that session, over the tables already restricted to the caller's
//! clients at the scan, through the same code as [`crate::Engine::query_metrics`].

use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Builder, Float64Builder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use chrono::NaiveDate;
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, SchedulingType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};

pub(crate) use super::plan::{Prepared, prepare};
use super::plan::{Source, run_on};
use super::{Cell, ColumnKind, Comparison, DateRange, MetricQuery, MetricResult, MetricsConfig};
use crate::Scope;
use crate::error::Error;

/// The name the function is registered under.
pub const FUNCTION_NAME: &str = "metric_query";

const USAGE: &str = "metric_query('<metrics>', '<dimensions>', '<start>', '<end>' | '<relative range>' [, '<options>'])";

pub(crate) fn function_error(
    name: &str,
    usage: &str,
    message: impl std::fmt::Display,
) -> DataFusionError {
    DataFusionError::External(Box::new(Error::InvalidSql(format!(
        "{name}: {message} (usage: {usage})"
    ))))
}

fn usage_error(message: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::External(Box::new(Error::InvalidSql(format!(
        "{FUNCTION_NAME}: {message} (usage: {USAGE}; options: comparison=previous_period|same_period_last_year; currency=XXX; zero_fill=true; time_zone=Area/City)"
    ))))
}

/// `metric_query` for one caller (registered in each caller's session).
#[derive(Debug)]
pub struct MetricQueryFunction {
    scope: Scope,
    config: Arc<MetricsConfig>,
    clock: crate::clock::Clock,
}

impl MetricQueryFunction {
    /// The function for a caller in `scope`; relative ranges are resolved
    /// at `clock`.
    pub fn new(scope: Scope, config: Arc<MetricsConfig>, clock: crate::clock::Clock) -> Self {
        Self {
            scope,
            config,
            clock,
        }
    }
}

fn text_arg(i: usize, expr: &Expr) -> Result<String> {
    match expr {
        Expr::Literal(value, _) => match value.try_as_str() {
            Some(Some(s)) => Ok(s.to_string()),
            Some(None) => Ok(String::new()),
            None => Err(usage_error(format!(
                "argument {} must be a text literal, got {value}",
                i + 1
            ))),
        },
        other => Err(usage_error(format!(
            "argument {} must be a text literal, got {other}",
            i + 1
        ))),
    }
}

pub(crate) fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The question the arguments ask.
pub(crate) fn query_of_args(args: &[String]) -> Result<MetricQuery> {
    if args.len() < 3 || args.len() > 5 {
        return Err(usage_error(format!(
            "takes 3 to 5 arguments, got {}",
            args.len()
        )));
    }
    let start: Option<NaiveDate> = args[2].trim().parse().ok();
    let (range, rest) = match start {
        Some(start) => {
            let Some(end) = args.get(3) else {
                return Err(usage_error(format!("start date {start} needs an end date")));
            };
            let end: NaiveDate = end
                .trim()
                .parse()
                .map_err(|_| usage_error(format!("end '{end}' is not a date (YYYY-MM-DD)")))?;
            (DateRange::Absolute { start, end }, &args[4..])
        }
        None => (DateRange::Relative(args[2].trim().to_string()), &args[3..]),
    };
    if rest.len() > 1 {
        return Err(usage_error("too many arguments after the date range"));
    }
    let mut query = MetricQuery::new(list(&args[0]), range).with_dimensions(list(&args[1]));
    for option in rest.iter().flat_map(|o| o.split(';')) {
        let option = option.trim();
        if option.is_empty() {
            continue;
        }
        let Some((key, value)) = option.split_once('=') else {
            return Err(usage_error(format!("option '{option}' is not key=value")));
        };
        let value = value.trim();
        match key.trim() {
            "comparison" => {
                query.comparison = match value {
                    "previous_period" => Some(Comparison::PreviousPeriod),
                    "same_period_last_year" => Some(Comparison::SamePeriodLastYear),
                    "none" | "" => None,
                    other => {
                        return Err(usage_error(format!(
                            "unknown comparison '{other}' (valid: previous_period, same_period_last_year, none)"
                        )));
                    }
                }
            }
            "currency" => query.reporting_currency = Some(value.to_string()),
            "zero_fill" => {
                query.zero_fill = match value {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(usage_error(format!(
                            "zero_fill is true or false, got '{other}'"
                        )));
                    }
                }
            }
            "time_zone" => query.time_zone = Some(value.to_string()),
            other => {
                return Err(usage_error(format!(
                    "unknown option '{other}' (valid: comparison, currency, zero_fill, time_zone)"
                )));
            }
        }
    }
    Ok(query)
}

impl TableFunctionImpl for MetricQueryFunction {
    fn call(&self, exprs: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        let args = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| text_arg(i, e))
            .collect::<Result<Vec<_>>>()?;
        let query = query_of_args(&args)?;
        let prepared = prepare(&query, &self.scope, &self.config, self.clock.now())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let fields: Vec<Field> = prepared
            .columns()
            .iter()
            .map(|c| {
                let data_type = match c.kind {
                    ColumnKind::Dimension => DataType::Utf8,
                    ColumnKind::Date => DataType::Date32,
                    ColumnKind::Metric => DataType::Float64,
                };
                Field::new(&c.name, data_type, true)
            })
            .collect();
        let relative_range = match &query.range {
            DateRange::Relative(name) => Some(name.clone()),
            _ => None,
        };
        Ok(Arc::new(MetricTable::new(
            Arc::new(Schema::new(fields)),
            prepared,
            relative_range,
            Arc::new(Rows),
        )))
    }
}

/// What becomes of a metric answer before it is a table: its rows as they
/// are ([`Rows`]), or a model's output over them (forecasts, anomalies,
/// budget advice).
///
/// A model's work yields between series, so the query's deadline and
/// cancellation stop it between two of them.
#[async_trait]
pub(crate) trait Finish: std::fmt::Debug + Send + Sync {
    /// The batch of the table's `schema` made from `result`.
    async fn finish(&self, result: MetricResult, schema: &SchemaRef) -> Result<RecordBatch>;
}

/// The answer's rows, one per row.
#[derive(Debug)]
struct Rows;

#[async_trait]
impl Finish for Rows {
    async fn finish(&self, result: MetricResult, schema: &SchemaRef) -> Result<RecordBatch> {
        to_batch(schema, &result.rows)
    }
}

/// The answer of one `metric_query` call, computed when its plan is
/// executed ([`MetricExec`]).
///
/// Its statements run in the scanning session, so they see exactly the
/// tables that session holds for its caller.
#[derive(Debug)]
pub struct MetricTable {
    schema: SchemaRef,
    answer: Arc<dyn Answer>,
    /// The relative range the dates were resolved from, if they were.
    relative_range: Option<String>,
}

/// What a metric table computes when its plan runs, over the tables of
/// the caller's session.
#[async_trait]
pub(crate) trait Answer: std::fmt::Debug + Send + Sync {
    /// The tables it reads.
    fn tables(&self) -> Vec<&'static str>;
    /// Its batch of `schema`.
    async fn answer(&self, state: &SessionState, schema: &SchemaRef) -> Result<RecordBatch>;
}

/// A prepared metric query, finished by a [`Finish`].
#[derive(Debug)]
struct Finished {
    prepared: Prepared,
    finish: Arc<dyn Finish>,
}

#[async_trait]
impl Answer for Finished {
    fn tables(&self) -> Vec<&'static str> {
        self.prepared.tables()
    }

    async fn answer(&self, state: &SessionState, schema: &SchemaRef) -> Result<RecordBatch> {
        let result = run_prepared(state, &self.prepared)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        self.finish.finish(result, schema).await
    }
}

/// Runs `prepared` over the tables `state` holds (the caller's).
pub(crate) async fn run_prepared(
    state: &SessionState,
    prepared: &Prepared,
) -> crate::error::Result<MetricResult> {
    run_on(&Source::Session(state), prepared).await
}

impl MetricTable {
    /// The table of `prepared`'s answer made into `schema` by `finish`.
    pub(crate) fn new(
        schema: SchemaRef,
        prepared: Prepared,
        relative_range: Option<String>,
        finish: Arc<dyn Finish>,
    ) -> Self {
        Self::of(
            schema,
            Arc::new(Finished { prepared, finish }),
            relative_range,
        )
    }

    /// The table whose rows `answer` computes.
    pub(crate) fn of(
        schema: SchemaRef,
        answer: Arc<dyn Answer>,
        relative_range: Option<String>,
    ) -> Self {
        Self {
            schema,
            answer,
            relative_range,
        }
    }

    /// The tables the answer reads (for the result cache's key).
    pub fn tables(&self) -> Vec<&'static str> {
        self.answer.tables()
    }

    /// The relative range (`yesterday`, …) its dates were resolved from at
    /// planning, if they were: the answer changes with the clock.
    pub fn relative_range(&self) -> Option<&str> {
        self.relative_range.as_deref()
    }
}

pub(crate) fn to_batch(schema: &SchemaRef, rows: &[Vec<Cell>]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| -> ArrayRef {
            match f.data_type() {
                DataType::Date32 => {
                    let mut b = Date32Builder::with_capacity(rows.len());
                    for row in rows {
                        match &row[i] {
                            Cell::Date(d) => b.append_value(crate::dates::date_to_epoch_day(*d)),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
                DataType::Float64 => {
                    let mut b = Float64Builder::with_capacity(rows.len());
                    for row in rows {
                        b.append_option(row[i].as_f64());
                    }
                    Arc::new(b.finish())
                }
                _ => {
                    let mut b = StringBuilder::new();
                    for row in rows {
                        match &row[i] {
                            Cell::Text(t) => b.append_value(t),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
            }
        })
        .collect();
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

#[async_trait]
impl TableProvider for MetricTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
            return Err(DataFusionError::Internal(
                "metric_query needs the engine's session".into(),
            ));
        };
        let schema = match projection {
            Some(columns) => Arc::new(self.schema.project(columns)?),
            None => Arc::clone(&self.schema),
        };
        Ok(Arc::new(MetricExec {
            properties: Arc::new(
                PlanProperties::new(
                    EquivalenceProperties::new(Arc::clone(&schema)),
                    Partitioning::UnknownPartitioning(1),
                    EmissionType::Final,
                    Boundedness::Bounded,
                )
                .with_scheduling_type(SchedulingType::Cooperative),
            ),
            state: state.clone(),
            answer: Arc::clone(&self.answer),
            full_schema: Arc::clone(&self.schema),
            projection: projection.cloned(),
        }))
    }
}

/// The execution of one `metric_query` call: its statements run when the
/// plan is executed (not when it is planned), in the scanning session, so
/// the query's deadline, cancellation and memory pool apply to them like
/// to any other operator.
struct MetricExec {
    properties: Arc<PlanProperties>,
    /// The caller's session: the tables it holds are the caller's.
    state: SessionState,
    answer: Arc<dyn Answer>,
    full_schema: SchemaRef,
    projection: Option<Vec<usize>>,
}

impl std::fmt::Debug for MetricExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricExec")
            .field("answer", &self.answer)
            .finish_non_exhaustive()
    }
}

impl DisplayAs for MetricExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MetricExec: tables={:?}, answer={:?}",
            self.answer.tables(),
            self.answer
        )
    }
}

impl ExecutionPlan for MetricExec {
    fn name(&self) -> &'static str {
        "MetricExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "MetricExec has one partition, not {partition}"
            )));
        }
        let (state, answer, full_schema, projection) = (
            self.state.clone(),
            Arc::clone(&self.answer),
            Arc::clone(&self.full_schema),
            self.projection.clone(),
        );
        let answer = async move {
            let batch = answer.answer(&state, &full_schema).await?;
            match projection {
                Some(columns) => Ok(batch.project(&columns)?),
                None => Ok(batch),
            }
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            futures::stream::once(answer),
        )))
    }
}
