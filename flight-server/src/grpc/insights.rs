//! `adlake.v1.InsightsService`: forecasts, anomalies and budget advice.
//!
//! Each request becomes a call of the engine's table function of the same
//! name (`forecast`, `anomalies`, `budget_advice`), every argument a text
//! literal, answered through the door like any SQL statement: the same
//! admission, deadline, cache and tenancy, and the same numbers as the
//! function over Flight SQL.

use adlake_engine::insights::sql::{ANOMALIES, BUDGET_ADVICE, DATA_QUALITY, FORECAST, statement};
use adlake_engine::semantic::DateRange;
use adlake_engine::{CacheStatus, Error};
use adlake_proto::v1 as pb;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Float64Type};
use futures::TryStreamExt;
use tonic::{Request, Response, Status};

use super::{AdlakeGrpc, cache_status, date_range, invalid, note_access, serve};
use crate::error::{RequestId, engine_status};

/// `key=value` options of a function call; a value may not hold the
/// separators.
#[derive(Default)]
struct Options(Vec<String>);

impl Options {
    fn set(&mut self, key: &str, value: Option<String>) -> Result<(), Status> {
        if let Some(value) = value {
            if value.contains([';', '=']) {
                return Err(invalid(format!(
                    "{key} '{value}' may not contain ';' or '='"
                )));
            }
            self.0.push(format!("{key}={value}"));
        }
        Ok(())
    }

    fn text(self) -> String {
        self.0.join(";")
    }
}

/// The date range as the functions take it: two dates or one name.
fn range_args(range: DateRange) -> Vec<String> {
    match range {
        DateRange::Absolute { start, end } => vec![start.to_string(), end.to_string()],
        DateRange::Relative(name) => vec![name],
    }
}

fn list(names: &[String], what: &str) -> Result<String, Status> {
    if let Some(bad) = names.iter().find(|n| n.contains(',')) {
        return Err(invalid(format!("{what} '{bad}' may not contain ','")));
    }
    Ok(names.join(","))
}

/// One answer's batches, read by column name.
struct Rows {
    batches: Vec<RecordBatch>,
    cache: CacheStatus,
}

impl Rows {
    fn iter(&self) -> impl Iterator<Item = (&RecordBatch, usize)> {
        self.batches
            .iter()
            .flat_map(|b| (0..b.num_rows()).map(move |i| (b, i)))
    }
}

fn text(batch: &RecordBatch, name: &str, i: usize) -> Option<String> {
    let column = batch.column_by_name(name)?;
    let column = column.as_string_opt::<i32>()?;
    column.is_valid(i).then(|| column.value(i).to_string())
}

fn number(batch: &RecordBatch, name: &str, i: usize) -> Option<f64> {
    let column = batch
        .column_by_name(name)?
        .as_primitive_opt::<Float64Type>()?;
    column.is_valid(i).then(|| column.value(i))
}

fn date(batch: &RecordBatch, name: &str, i: usize) -> String {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Date32Type>())
        .and_then(|c| c.value_as_date(i))
        .map(|d| d.to_string())
        .unwrap_or_default()
}

fn key(batch: &RecordBatch, dimensions: &[String], i: usize) -> Vec<pb::Value> {
    dimensions
        .iter()
        .map(|d| pb::Value {
            kind: text(batch, d, i).map(pb::value::Kind::Text),
        })
        .collect()
}

impl AdlakeGrpc {
    /// Runs the function call `sql` for the caller of `request`.
    async fn call<T>(
        &self,
        id: RequestId,
        request: &Request<T>,
        started: std::time::Instant,
        bypass: bool,
        sql: &str,
    ) -> Result<Rows, Status> {
        let (caller, scope) = self.caller(request.metadata())?;
        if crate::access::enabled() {
            note_access(|entry| entry.request = Some(sql.to_string()));
        }
        let ctx = Self::request(caller, scope, started, bypass);
        let answer = self
            .executor
            .sql(ctx, sql)
            .await
            .map_err(|e| engine_status(&e, id))?;
        let cache = answer.cache;
        let batches = answer
            .batches
            .try_collect()
            .await
            .map_err(|e: Error| engine_status(&e, id))?;
        Ok(Rows { batches, cache })
    }
}

#[tonic::async_trait]
impl pb::insights_service_server::InsightsService for AdlakeGrpc {
    async fn forecast(
        &self,
        request: Request<pb::ForecastRequest>,
    ) -> Result<Response<pb::ForecastResponse>, Status> {
        serve("Forecast", request, |id, request| async move {
            let started = std::time::Instant::now();
            let r = request.get_ref();
            let mut options = Options::default();
            options.set("interval", r.interval.map(|v| v.to_string()))?;
            options.set("history_days", r.history_days.map(|v| v.to_string()))?;
            options.set("as_of", r.as_of.clone())?;
            options.set("currency", r.reporting_currency.clone())?;
            options.set("time_zone", r.time_zone.clone())?;
            let sql = statement(
                FORECAST,
                &[
                    r.metric.clone(),
                    list(&r.dimensions, "dimension")?,
                    r.horizon_days.to_string(),
                    options.text(),
                ],
            );
            let rows = self
                .call(id, &request, started, r.bypass_cache, &sql)
                .await?;
            let dimensions = request.get_ref().dimensions.clone();
            let points = rows
                .iter()
                .map(|(b, i)| pb::ForecastPoint {
                    dimension_values: key(b, &dimensions, i),
                    date: date(b, "date", i),
                    forecast: number(b, "forecast", i).unwrap_or_default(),
                    lower: number(b, "lower", i).unwrap_or_default(),
                    upper: number(b, "upper", i).unwrap_or_default(),
                    model: text(b, "model", i).unwrap_or_default(),
                })
                .collect();
            Ok(Response::new(pb::ForecastResponse {
                dimensions,
                points,
                cache_status: cache_status(rows.cache),
            }))
        })
        .await
    }

    async fn detect_anomalies(
        &self,
        request: Request<pb::DetectAnomaliesRequest>,
    ) -> Result<Response<pb::DetectAnomaliesResponse>, Status> {
        serve("DetectAnomalies", request, |id, request| async move {
            let started = std::time::Instant::now();
            let r = request.get_ref();
            let mut options = Options::default();
            options.set("threshold", r.threshold.map(|v| v.to_string()))?;
            options.set("history_days", r.history_days.map(|v| v.to_string()))?;
            options.set("currency", r.reporting_currency.clone())?;
            options.set("time_zone", r.time_zone.clone())?;
            let mut args = vec![
                list(&r.metrics, "metric")?,
                list(&r.dimensions, "dimension")?,
            ];
            args.extend(range_args(date_range(r.date_range.clone())?));
            args.push(options.text());
            let sql = statement(ANOMALIES, &args);
            let rows = self
                .call(id, &request, started, r.bypass_cache, &sql)
                .await?;
            let dimensions = request.get_ref().dimensions.clone();
            let anomalies = rows
                .iter()
                .map(|(b, i)| pb::Anomaly {
                    dimension_values: key(b, &dimensions, i),
                    date: date(b, "date", i),
                    metric: text(b, "metric", i).unwrap_or_default(),
                    actual: number(b, "actual", i).unwrap_or_default(),
                    expected: number(b, "expected", i).unwrap_or_default(),
                    lower: number(b, "lower", i).unwrap_or_default(),
                    upper: number(b, "upper", i).unwrap_or_default(),
                    score: number(b, "score", i).unwrap_or_default(),
                    direction: match text(b, "direction", i).as_deref() {
                        Some("spike") => pb::Direction::Spike,
                        Some("drop") => pb::Direction::Drop,
                        _ => pb::Direction::Unspecified,
                    } as i32,
                })
                .collect();
            Ok(Response::new(pb::DetectAnomaliesResponse {
                dimensions,
                anomalies,
                cache_status: cache_status(rows.cache),
            }))
        })
        .await
    }

    async fn advise_budget(
        &self,
        request: Request<pb::AdviseBudgetRequest>,
    ) -> Result<Response<pb::AdviseBudgetResponse>, Status> {
        serve("AdviseBudget", request, |id, request| async move {
            let started = std::time::Instant::now();
            let r = request.get_ref();
            let mut options = Options::default();
            options.set("value", r.value_metric.clone())?;
            options.set("max_change", r.max_change.map(|v| v.to_string()))?;
            options.set("current_days", r.current_days.map(|v| v.to_string()))?;
            options.set("currency", r.reporting_currency.clone())?;
            options.set("time_zone", r.time_zone.clone())?;
            let mut args = vec![list(&r.dimensions, "dimension")?];
            args.extend(range_args(date_range(r.date_range.clone())?));
            args.push(r.total_daily_budget.to_string());
            args.push(options.text());
            let sql = statement(BUDGET_ADVICE, &args);
            let rows = self
                .call(id, &request, started, r.bypass_cache, &sql)
                .await?;
            let dimensions = request.get_ref().dimensions.clone();
            let advice = rows
                .iter()
                .map(|(b, i)| pb::BudgetAdvice {
                    dimension_values: key(b, &dimensions, i),
                    current_daily_spend: number(b, "current_daily_spend", i).unwrap_or_default(),
                    recommended_daily_spend: number(b, "recommended_daily_spend", i)
                        .unwrap_or_default(),
                    current_value: number(b, "current_value", i).unwrap_or_default(),
                    expected_value: number(b, "expected_value", i).unwrap_or_default(),
                    current_marginal_roas: number(b, "current_marginal_roas", i),
                    recommended_marginal_roas: number(b, "recommended_marginal_roas", i),
                    fit_r2: number(b, "fit_r2", i),
                    note: text(b, "note", i),
                })
                .collect();
            Ok(Response::new(pb::AdviseBudgetResponse {
                dimensions,
                advice,
                cache_status: cache_status(rows.cache),
            }))
        })
        .await
    }

    async fn get_data_quality(
        &self,
        request: Request<pb::GetDataQualityRequest>,
    ) -> Result<Response<pb::GetDataQualityResponse>, Status> {
        serve("GetDataQuality", request, |id, request| async move {
            let started = std::time::Instant::now();
            let r = request.get_ref();
            let mut options = Options::default();
            options.set("lookback_days", r.lookback_days.map(|v| v.to_string()))?;
            options.set("threshold", r.threshold.map(|v| v.to_string()))?;
            let as_of = r.as_of.clone().unwrap_or_default();
            if as_of.contains('\'') {
                return Err(invalid(format!(
                    "as_of '{as_of}' is not a date (YYYY-MM-DD)"
                )));
            }
            let sql = statement(DATA_QUALITY, &[as_of, options.text()]);
            let rows = self
                .call(id, &request, started, r.bypass_cache, &sql)
                .await?;
            let findings = rows
                .iter()
                .map(|(b, i)| pb::DataQualityFinding {
                    client_id: text(b, "client_id", i).unwrap_or_default(),
                    source: text(b, "source", i).unwrap_or_default(),
                    date: date(b, "date", i),
                    check: text(b, "check", i).unwrap_or_default(),
                    severity: match text(b, "severity", i).as_deref() {
                        Some("warning") => pb::Severity::Warning,
                        Some("critical") => pb::Severity::Critical,
                        _ => pb::Severity::Unspecified,
                    } as i32,
                    detail: text(b, "detail", i).unwrap_or_default(),
                })
                .collect();
            Ok(Response::new(pb::GetDataQualityResponse {
                findings,
                cache_status: cache_status(rows.cache),
            }))
        })
        .await
    }
}
