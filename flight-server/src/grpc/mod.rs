//! The `adlake.v1` gRPC services, served on the Flight SQL port:
//! [`MetricsService`](adlake_proto::v1::metrics_service_server::MetricsService)
//! and [`CatalogService`](adlake_proto::v1::catalog_service_server::CatalogService).
//!
//! Every call needs `authorization: Bearer <token>` (or Basic with the
//! token as password), exactly as Flight SQL calls; the caller's
//! [`Scope`] comes from the token, never from the request. The services
//! translate requests into engine types and engine answers into messages;
//! the metric semantics live in [`adlake_engine::metrics`].
//!
//! Each call runs in a `tracing` span carrying its request id (and the
//! caller, once known), so every line logged while serving it carries the
//! id; the id is also returned in the `x-request-id` header, on answers and
//! refusals alike.

// Every gRPC call fails with `tonic::Status`, larger than clippy's threshold.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::sync::{Arc, Mutex};

use adlake_engine::metrics::{
    Cell, ColumnKind, Comparison, DIMENSIONS, DateRange, Filter, FilterOp, Grain, Landing,
    MetricKind, MetricQuery, MetricResult, OrderBy,
};
use adlake_engine::{CacheStatus, Engine, Scope};
use adlake_proto::v1 as pb;
use chrono::{DateTime, Days, NaiveDate, Utc};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::auth::{Authenticator, parse_authorization};
use crate::error::{RequestId, engine_status};
use crate::limits::Limits;

/// Both `adlake.v1` services over one engine and one authenticator.
#[derive(Clone)]
pub struct AdlakeGrpc {
    engine: Arc<Engine>,
    authenticator: Arc<dyn Authenticator>,
    /// The same limits as Flight SQL's (one set per server): rate per
    /// caller on every call, query slots and the query timeout on the
    /// calls that run queries.
    limits: Arc<Limits>,
}

impl AdlakeGrpc {
    /// Services answering from `engine` for the callers `authenticator`
    /// knows.
    pub fn new(engine: Arc<Engine>, authenticator: Arc<dyn Authenticator>) -> Self {
        Self {
            engine,
            authenticator,
            limits: Arc::new(Limits::unlimited()),
        }
    }

    /// The same services under `limits`, shared with the Flight SQL
    /// service so a caller's rate and query slots count across both.
    #[must_use]
    pub fn with_limits(mut self, limits: Arc<Limits>) -> Self {
        self.limits = limits;
        self
    }

    /// Runs `work`, a call that queries the engine, in one of `caller`'s
    /// query slots and within the query timeout.
    async fn in_query_slot<T>(
        &self,
        caller: &str,
        work: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let _permit = self.limits.start_query(caller)?;
        match self.limits.settings().query_timeout {
            Some(limit) => tokio::time::timeout(limit, work)
                .await
                .unwrap_or_else(|_| Err(crate::limits::timed_out(limit))),
            None => work.await,
        }
    }

    /// The metrics service.
    pub fn metrics_server(&self) -> pb::metrics_service_server::MetricsServiceServer<Self> {
        pb::metrics_service_server::MetricsServiceServer::new(self.clone())
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
        self.limits.check_rate(&principal.name)?;
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
            crate::metrics::observe_failure(rpc, status.code(), started.elapsed());
            let entry = entry
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            entry.write(
                &crate::metrics::status_name(status.code()),
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
pub fn metric_query(r: pb::QueryMetricsRequest) -> Result<MetricQuery, Status> {
    use pb::date_range::Range;
    let range = match r.date_range.and_then(|d| d.range) {
        Some(Range::Absolute(a)) => DateRange::Absolute {
            start: parse_date("start", &a.start)?,
            end: parse_date("end", &a.end)?,
        },
        Some(Range::Relative(name)) => DateRange::Relative(name),
        None => {
            return Err(invalid(
                "a date range is required: absolute {start, end} or relative (e.g. last_7_days)"
                    .into(),
            ));
        }
    };
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
        cache_status: match status {
            CacheStatus::Hit => pb::CacheStatus::Hit,
            CacheStatus::Miss => pb::CacheStatus::Miss,
            CacheStatus::Bypass => pb::CacheStatus::Bypass,
        } as i32,
        warnings: result.warnings.clone(),
    }
}

/// When yesterday (client-local at `now`) of `table` first landed for
/// `client`, and whether that was before 08:00 today client-local.
fn yesterday_landing(
    landings: &[Landing],
    client: &str,
    table: &str,
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, bool) {
    let today = now.with_timezone(&tz).date_naive();
    let yesterday = today - Days::new(1);
    let landed_at = landings
        .iter()
        .filter(|l| {
            l.client_id == client
                && l.table == table
                && l.date_from <= yesterday
                && yesterday <= l.date_to
        })
        .map(|l| l.finished_at)
        .min();
    let eight = today
        .and_hms_opt(8, 0, 0)
        .and_then(|t| t.and_local_timezone(tz).earliest())
        .map(|t| t.with_timezone(&Utc));
    (landed_at, landed_at.zip(eight).is_some_and(|(t, e)| t < e))
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
            let (result, status) = self
                .in_query_slot(&caller, async {
                    let engine = Arc::clone(&self.engine);
                    adlake_engine::lanes::run(&caller, async move {
                        engine.query_metrics(&scope, &query, bypass).await
                    })
                    .await
                    .map_err(|e| engine_status(&e, id))
                })
                .await?;
            let answer = response(&result, status);
            // A failure is recorded by `serve`, with its status.
            let mut access = access_entry();
            access.tables = result.table_versions.clone();
            access.cache = Some(status.as_str());
            let mut record =
                crate::metrics::QueryRecord::new("metric", started).with_access(access);
            record.streamed(answer.rows.len());
            record.finished();
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
            let (rows, landings) = self
                .in_query_slot(&caller, async {
                    let engine = Arc::clone(&self.engine);
                    adlake_engine::lanes::run(&caller, async move {
                        let rows = engine.freshness(&scope).await?;
                        // Yesterday is at most two days back from today in
                        // UTC, whatever the client's time zone.
                        let landings = engine
                            .landings(&scope, now.date_naive() - Days::new(2))
                            .await?;
                        Ok((rows, landings))
                    })
                    .await
                    .map_err(|e| engine_status(&e, id))
                })
                .await?;
            let sources: Vec<pb::ClientFreshness> = rows
                .into_iter()
                .map(|f| {
                    let tz = self.engine.client_time_zone(&f.client_id);
                    let today = now.with_timezone(&tz).date_naive();
                    let yesterday = today - Days::new(1);
                    let (landed_at, by_8am) =
                        yesterday_landing(&landings, &f.client_id, &f.table, tz, now);
                    pb::ClientFreshness {
                        yesterday_landed_at: landed_at
                            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                            .unwrap_or_default(),
                        yesterday_landed_by_8am: by_8am,
                        yesterday_landed: f.latest_date.is_some_and(|d| d >= yesterday),
                        latest_date: f.latest_date.map(|d| d.to_string()).unwrap_or_default(),
                        time_zone: tz.name().to_string(),
                        yesterday: yesterday.to_string(),
                        client_id: f.client_id,
                        table: f.table,
                    }
                })
                .collect();
            let mut record =
                crate::metrics::QueryRecord::new("freshness", started).with_access(access_entry());
            record.streamed(sources.len());
            record.finished();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn landing(client: &str, from: &str, to: &str, finished: &str) -> Landing {
        Landing {
            client_id: client.into(),
            table: "ad_performance".into(),
            date_from: from.parse().unwrap(),
            date_to: to.parse().unwrap(),
            finished_at: finished.parse().unwrap(),
        }
    }

    #[test]
    fn yesterday_landed_before_8am_client_local() {
        let ny: chrono_tz::Tz = "America/New_York".parse().unwrap();
        // 2026-03-02 15:00 UTC is 10:00 in New York (UTC-5): yesterday is
        // Mar 1, and 08:00 local is 13:00 UTC.
        let now: DateTime<Utc> = "2026-03-02T15:00:00Z".parse().unwrap();
        let runs = [
            // Covers Feb 27 - Mar 1, finished 12:30 UTC = 07:30 local.
            landing("acme", "2026-02-27", "2026-03-01", "2026-03-02T12:30:00Z"),
            // A later re-run of Mar 1 does not change the first landing.
            landing("acme", "2026-03-01", "2026-03-01", "2026-03-02T14:00:00Z"),
            // Another client, landed late.
            landing("globex", "2026-03-01", "2026-03-01", "2026-03-02T13:30:00Z"),
            // Only up to Feb 28.
            landing(
                "initech",
                "2026-02-01",
                "2026-02-28",
                "2026-03-01T01:00:00Z",
            ),
        ];
        let at = |c| yesterday_landing(&runs, c, "ad_performance", ny, now);
        assert_eq!(
            at("acme"),
            (Some("2026-03-02T12:30:00Z".parse().unwrap()), true)
        );
        // 13:30 UTC is 08:30 in New York: landed, but late.
        assert_eq!(
            at("globex"),
            (Some("2026-03-02T13:30:00Z".parse().unwrap()), false)
        );
        assert_eq!(at("initech"), (None, false));
        // In UTC, 12:30 is past 08:00.
        assert!(!yesterday_landing(&runs, "acme", "ad_performance", chrono_tz::Tz::UTC, now).1);
        // Another table has no runs.
        assert_eq!(
            yesterday_landing(&runs, "acme", "orders", ny, now),
            (None, false)
        );
    }
}
