//! The `adlake.v1` gRPC services, served on the Flight SQL port:
//! [`MetricsService`](adlake_proto::v1::metrics_service_server::MetricsService),
//! [`InsightsService`](adlake_proto::v1::insights_service_server::InsightsService)
//! and [`CatalogService`](adlake_proto::v1::catalog_service_server::CatalogService).
//!
//! Every call needs `authorization: Bearer <token>` (or Basic with the
//! token as password), exactly as Flight SQL calls; the caller's
//! [`Scope`] comes from the token, never from the request. The services
//! translate requests into engine types and engine answers into messages;
//! the metric semantics live in [`adlake_engine::semantic`].
//!
//! Each call runs in a `tracing` span carrying its request id (and the
//! caller, once known), so every line logged while serving it carries the
//! id; the id is also returned in the `x-request-id` header, on answers and
//! refusals alike.

// Every gRPC call fails with `tonic::Status`, larger than clippy's threshold.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::sync::{Arc, Mutex};

use adlake_engine::semantic::{
    Cell, ColumnKind, Comparison, DIMENSIONS, DateRange, Filter, FilterOp, Grain, MetricKind,
    MetricQuery, MetricResult, OrderBy,
};
use adlake_engine::{CacheStatus, Engine, QueryExecutor, RequestContext, Scope};
use adlake_proto::v1 as pb;
use chrono::NaiveDate;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::Instrument;

mod insights;

use crate::auth::{Authenticator, parse_authorization};
use crate::error::{RequestId, engine_status};

/// Both `adlake.v1` services through the engine's door, with one
/// authenticator.
#[derive(Clone)]
pub struct AdlakeGrpc {
    /// The door (shared with the Flight SQL service, so a caller's rate and
    /// query slots count across both).
    executor: QueryExecutor,
    engine: Arc<Engine>,
    authenticator: Arc<dyn Authenticator>,
}

impl AdlakeGrpc {
    /// Services answering through `executor` for the callers
    /// `authenticator` knows.
    pub fn new(executor: QueryExecutor, authenticator: Arc<dyn Authenticator>) -> Self {
        Self {
            engine: Arc::clone(executor.engine()),
            executor,
            authenticator,
        }
    }

    /// The request of an authenticated caller, with the call's access-log
    /// entry as it stands for the door to complete.
    fn request(
        caller: String,
        scope: Scope,
        started: std::time::Instant,
        bypass: bool,
    ) -> RequestContext {
        RequestContext::new(caller, scope)
            .with_started(started)
            .with_bypass_cache(bypass)
            .with_note(access_entry())
    }

    /// The metrics service.
    pub fn metrics_server(&self) -> pb::metrics_service_server::MetricsServiceServer<Self> {
        pb::metrics_service_server::MetricsServiceServer::new(self.clone())
    }

    /// The insights service (forecasts, anomalies, budget advice).
    pub fn insights_server(&self) -> pb::insights_service_server::InsightsServiceServer<Self> {
        pb::insights_service_server::InsightsServiceServer::new(self.clone())
    }

    /// The catalog service.
    pub fn catalog_server(&self) -> pb::catalog_service_server::CatalogServiceServer<Self> {
        pb::catalog_service_server::CatalogServiceServer::new(self.clone())
    }

    /// The caller's scope, after counting this call against its rate.
    fn scope(&self, metadata: &MetadataMap) -> Result<Scope, Status> {
        self.caller(metadata).map(|(_, scope)| scope)
    }

    /// The caller's name and scope, after counting this call against its
    /// rate.
    fn caller(&self, metadata: &MetadataMap) -> Result<(String, Scope), Status> {
        let value = metadata
            .get("authorization")
            .ok_or_else(|| {
                Status::unauthenticated("missing `authorization: Bearer <token>` header")
            })?
            .to_str()
            .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
        let credential =
            parse_authorization(value).map_err(|e| Status::unauthenticated(e.to_string()))?;
        let principal = self
            .authenticator
            .authenticate(credential.token())
            .ok_or_else(|| Status::unauthenticated("invalid token"))?;
        tracing::Span::current().record("principal", principal.name.as_str());
        note_access(|entry| {
            entry.principal = Some(principal.name.clone());
            entry.scope = Some(principal.scope.to_string());
        });
        self.executor
            .admit_call(&principal.name)
            .map_err(|e| engine_status(&e, RequestId::new()))?;
        Ok((principal.name, principal.scope))
    }
}

tokio::task_local! {
    /// The access-log entry of the call being served.
    static ACCESS: Arc<Mutex<crate::access::Entry>>;
}

/// Applies `change` to the access-log entry of the call being served.
fn note_access(change: impl FnOnce(&mut crate::access::Entry)) {
    let _ = ACCESS.try_with(|entry| {
        change(
            &mut entry
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    });
}

/// The access-log entry of the call being served, as it stands.
fn access_entry() -> crate::access::Entry {
    ACCESS
        .try_with(|entry| {
            entry
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        })
        .unwrap_or_default()
}

/// Runs one call in its span (see the module's documentation): `handler`
/// gets the call's request id, and the outcome is tagged with it; a
/// refusal is logged.
async fn serve<T, R, F>(
    rpc: &'static str,
    request: Request<T>,
    handler: impl FnOnce(RequestId, Request<T>) -> F,
) -> Result<Response<R>, Status>
where
    F: Future<Output = Result<Response<R>, Status>>,
{
    let id = RequestId::new();
    let started = std::time::Instant::now();
    let span = crate::flight_sql::call_span(id, rpc);
    span.record("method", rpc);
    let entry = Arc::new(Mutex::new(crate::access::Entry::new("grpc", rpc, id)));
    let result = ACCESS
        .scope(
            Arc::clone(&entry),
            handler(id, request).instrument(span.clone()),
        )
        .await;
    let _entered = span.enter();
    match result {
        Ok(mut response) => {
            id.tag(response.metadata_mut());
            Ok(response)
        }
        Err(mut status) => {
            crate::flight_sql::log_failure(id, rpc, None, &status);
            crate::observability::observe_failure(rpc, status.code(), started.elapsed());
            let entry = entry
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            entry.write(
                &crate::observability::status_name(status.code()),
                Some(status.message()),
                started.elapsed(),
            );
            id.tag(status.metadata_mut());
            Err(status)
        }
    }
}

fn invalid(message: String) -> Status {
    Status::invalid_argument(crate::error::cap_message(&message))
}

fn parse_date(what: &str, text: &str) -> Result<NaiveDate, Status> {
    text.parse()
        .map_err(|_| invalid(format!("{what} '{text}' is not a date (YYYY-MM-DD)")))
}

fn filter_of(f: pb::Filter) -> Result<Filter, Status> {
    use pb::filter::Node;
    match f.node {
        None => Err(invalid(
            "malformed filter: a filter node has no condition, all_of, any_of or negate".into(),
        )),
        Some(Node::Condition(c)) => {
            let op = match pb::FilterOperator::try_from(c.operator) {
                Ok(pb::FilterOperator::Equals) => FilterOp::Equals,
                Ok(pb::FilterOperator::NotEquals) => FilterOp::NotEquals,
                Ok(pb::FilterOperator::In) => FilterOp::In,
                Ok(pb::FilterOperator::NotIn) => FilterOp::NotIn,
                Ok(pb::FilterOperator::Contains) => FilterOp::Contains,
                _ => {
                    return Err(invalid(format!(
                        "malformed filter on '{}': operator {} (valid: EQUALS, NOT_EQUALS, IN, NOT_IN, CONTAINS)",
                        c.dimension, c.operator
                    )));
                }
            };
            Ok(Filter::Condition {
                dimension: c.dimension,
                op,
                values: c.values,
            })
        }
        Some(Node::AllOf(list)) => Ok(Filter::And(
            list.filters
                .into_iter()
                .map(filter_of)
                .collect::<Result<_, _>>()?,
        )),
        Some(Node::AnyOf(list)) => Ok(Filter::Or(
            list.filters
                .into_iter()
                .map(filter_of)
                .collect::<Result<_, _>>()?,
        )),
        Some(Node::Negate(inner)) => Ok(Filter::Not(Box::new(filter_of(*inner)?))),
    }
}

/// The engine's question for a request.
/// The engine's date range of a request's.
fn date_range(range: Option<pb::DateRange>) -> Result<DateRange, Status> {
    use pb::date_range::Range;
    match range.and_then(|d| d.range) {
        Some(Range::Absolute(a)) => Ok(DateRange::Absolute {
            start: parse_date("start", &a.start)?,
            end: parse_date("end", &a.end)?,
        }),
        Some(Range::Relative(name)) => Ok(DateRange::Relative(name)),
        None => Err(invalid(
            "a date range is required: absolute {start, end} or relative (e.g. last_7_days)".into(),
        )),
    }
}

/// The message's cache status.
fn cache_status(status: CacheStatus) -> i32 {
    let status = match status {
        CacheStatus::Hit => pb::CacheStatus::Hit,
        CacheStatus::Miss => pb::CacheStatus::Miss,
        CacheStatus::Bypass => pb::CacheStatus::Bypass,
    };
    status as i32
}

pub fn metric_query(r: pb::QueryMetricsRequest) -> Result<MetricQuery, Status> {
    let range = date_range(r.date_range)?;
    let comparison = match pb::Comparison::try_from(r.comparison) {
        Ok(pb::Comparison::None) => None,
        Ok(pb::Comparison::PreviousPeriod) => Some(Comparison::PreviousPeriod),
        Ok(pb::Comparison::SamePeriodLastYear) => Some(Comparison::SamePeriodLastYear),
        Err(_) => {
            return Err(invalid(format!(
                "unknown comparison {} (valid: NONE, PREVIOUS_PERIOD, SAME_PERIOD_LAST_YEAR)",
                r.comparison
            )));
        }
    };
    Ok(MetricQuery {
        metrics: r.metrics,
        dimensions: r.dimensions,
        range,
        comparison,
        filter: r.filter.map(filter_of).transpose()?,
        order_by: r
            .order_by
            .into_iter()
            .map(|o| OrderBy {
                column: o.column,
                descending: o.descending,
            })
            .collect(),
        limit: r.limit.map(|l| l as usize),
        zero_fill: r.zero_fill_dates,
        reporting_currency: r.reporting_currency,
        time_zone: r.time_zone,
    })
}

fn value(cell: &Cell) -> pb::Value {
    use pb::value::Kind;
    pb::Value {
        kind: match cell {
            Cell::Null => None,
            Cell::Text(t) => Some(Kind::Text(t.clone())),
            Cell::Date(d) => Some(Kind::Date(d.to_string())),
            Cell::Number(n) => Some(Kind::Number(*n)),
        },
    }
}

fn response(result: &MetricResult, status: CacheStatus) -> pb::QueryMetricsResponse {
    let row = |cells: &[Cell]| pb::Row {
        values: cells.iter().map(value).collect(),
    };
    pb::QueryMetricsResponse {
        columns: result
            .columns
            .iter()
            .map(|c| pb::ResultColumn {
                name: c.name.clone(),
                kind: match c.kind {
                    ColumnKind::Dimension => pb::ColumnKind::Dimension,
                    ColumnKind::Date => pb::ColumnKind::Date,
                    ColumnKind::Metric => pb::ColumnKind::Metric,
                } as i32,
            })
            .collect(),
        rows: result.rows.iter().map(|r| row(r)).collect(),
        totals: Some(row(&result.totals)),
        start_date: result.start.to_string(),
        end_date: result.end.to_string(),
        comparison_start_date: result
            .comparison
            .map(|c| c.0.to_string())
            .unwrap_or_default(),
        comparison_end_date: result
            .comparison
            .map(|c| c.1.to_string())
            .unwrap_or_default(),
        table_versions: result
            .table_versions
            .iter()
            .map(|(t, v)| pb::TableVersion {
                table: t.clone(),
                version: v.and_then(|v| i64::try_from(v).ok()),
            })
            .collect(),
        freshness: result
            .freshness
            .iter()
            .map(|f| pb::SourceFreshness {
                table: f.table.clone(),
                client_id: f.client_id.clone(),
                latest_date: f.latest_date.map(|d| d.to_string()).unwrap_or_default(),
            })
            .collect(),
        cache_status: cache_status(status),
        warnings: result.warnings.clone(),
    }
}

#[tonic::async_trait]
impl pb::metrics_service_server::MetricsService for AdlakeGrpc {
    async fn query_metrics(
        &self,
        request: Request<pb::QueryMetricsRequest>,
    ) -> Result<Response<pb::QueryMetricsResponse>, Status> {
        serve("QueryMetrics", request, |id, request| async move {
            let started = std::time::Instant::now();
            let (caller, scope) = self.caller(request.metadata())?;
            let request = request.into_inner();
            if crate::access::enabled() {
                note_access(|entry| entry.request = Some(format!("{request:?}")));
            }
            let bypass = request.bypass_cache;
            let query = metric_query(request)?;
            let ctx = Self::request(caller, scope, started, bypass);
            let (result, status) = self
                .executor
                .metrics(ctx, &query)
                .await
                .map_err(|e| engine_status(&e, id))?;
            let answer = response(&result, status);
            Ok(Response::new(answer))
        })
        .await
    }

    async fn list_metrics(
        &self,
        request: Request<pb::ListMetricsRequest>,
    ) -> Result<Response<pb::ListMetricsResponse>, Status> {
        serve("ListMetrics", request, |_, request| async move {
            let scope = self.scope(request.metadata())?;
            let metrics = self
                .engine
                .metrics(&scope)
                .into_iter()
                .map(|m| pb::MetricInfo {
                    tables: m.tables().into_iter().map(str::to_string).collect(),
                    kind: match m.kind {
                        MetricKind::Base => "base",
                        MetricKind::Ratio => "ratio",
                        MetricKind::Blended => "blended",
                        MetricKind::Custom => "custom",
                    }
                    .to_string(),
                    client_id: m.client.unwrap_or_default(),
                    name: m.name,
                    description: m.description,
                    expression: m.expression,
                })
                .collect();
            Ok(Response::new(pb::ListMetricsResponse { metrics }))
        })
        .await
    }

    async fn list_dimensions(
        &self,
        request: Request<pb::ListDimensionsRequest>,
    ) -> Result<Response<pb::ListDimensionsResponse>, Status> {
        serve("ListDimensions", request, |_, request| async move {
            self.scope(request.metadata())?;
            let dimensions = DIMENSIONS
                .iter()
                .map(|d| pb::DimensionInfo {
                    name: d.name.to_string(),
                    description: d.description.to_string(),
                    grain: match d.grain {
                        None => "",
                        Some(Grain::Day) => "day",
                        Some(Grain::Week) => "week",
                        Some(Grain::Month) => "month",
                        Some(Grain::Quarter) => "quarter",
                    }
                    .to_string(),
                    tables: d.columns.iter().map(|(t, _)| (*t).to_string()).collect(),
                })
                .collect();
            Ok(Response::new(pb::ListDimensionsResponse { dimensions }))
        })
        .await
    }

    async fn get_freshness(
        &self,
        request: Request<pb::GetFreshnessRequest>,
    ) -> Result<Response<pb::GetFreshnessResponse>, Status> {
        serve("GetFreshness", request, |id, request| async move {
            let started = std::time::Instant::now();
            let (caller, scope) = self.caller(request.metadata())?;
            let now = self.engine.now();
            let ctx = Self::request(caller, scope, started, false);
            let adlake_engine::executor::FreshnessAnswer { latest: rows, sla } = self
                .executor
                .freshness(ctx)
                .await
                .map_err(|e| engine_status(&e, id))?;
            let sources: Vec<pb::ClientFreshness> = rows
                .into_iter()
                .map(|f| {
                    let tz = self.engine.client_time_zone(&f.client_id);
                    let (yesterday, _) = adlake_engine::freshness::due(tz, now);
                    let verdict = sla
                        .iter()
                        .find(|s| s.client_id == f.client_id && s.source == f.table);
                    let landed_at = verdict.and_then(|v| v.landed_at);
                    pb::ClientFreshness {
                        yesterday_landed_at: landed_at
                            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                            .unwrap_or_default(),
                        yesterday_landed_by_8am: verdict.is_some_and(|v| {
                            v.status == adlake_engine::freshness::SlaStatus::OnTime
                        }),
                        yesterday_landed: f.latest_date.is_some_and(|d| d >= yesterday),
                        latest_date: f.latest_date.map(|d| d.to_string()).unwrap_or_default(),
                        time_zone: tz.name().to_string(),
                        yesterday: yesterday.to_string(),
                        client_id: f.client_id,
                        table: f.table,
                    }
                })
                .collect();
            Ok(Response::new(pb::GetFreshnessResponse { sources }))
        })
        .await
    }
}

#[tonic::async_trait]
impl pb::catalog_service_server::CatalogService for AdlakeGrpc {
    async fn list_tables(
        &self,
        request: Request<pb::ListTablesRequest>,
    ) -> Result<Response<pb::ListTablesResponse>, Status> {
        serve("ListTables", request, |_, request| async move {
            let scope = self.scope(request.metadata())?;
            let tables = self
                .engine
                .tables()
                .into_iter()
                .map(|t| pb::Table {
                    columns: t
                        .schema
                        .fields()
                        .iter()
                        .map(|f| pb::Column {
                            name: f.name().clone(),
                            data_type: f.data_type().to_string(),
                            nullable: f.is_nullable(),
                        })
                        .collect(),
                    name: t.name,
                    description: t.description,
                    version: t.version.and_then(|v| i64::try_from(v).ok()),
                })
                .collect();
            let visible_clients = match scope {
                Scope::AllClients => vec![crate::auth::ALL_CLIENTS.to_string()],
                Scope::Clients(ids) => ids.into_iter().collect(),
            };
            Ok(Response::new(pb::ListTablesResponse {
                tables,
                visible_clients,
            }))
        })
        .await
    }
}
