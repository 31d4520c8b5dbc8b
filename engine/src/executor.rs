//! The door into the engine: [`QueryExecutor`] is the one entry every
//! surface (Flight SQL, gRPC `adlake.v1`, and whatever comes next) uses for
//! query-shaped requests: SQL statements (prepared ones arrive with their
//! parameters bound), metric queries and freshness.
//!
//! Behind it, and so the same for every surface:
//! * **admission** ([`admission::Limits`]): each call counts against the
//!   caller's rate, each query takes one of the caller's slots and one of
//!   the engine's, held until its answer is over;
//! * **the deadline**: planning and every batch of the answer run within
//!   the query timeout, and the answer ends with [`Error::TimedOut`] past
//!   it;
//! * **fair share**: the work runs in the caller's execution lane
//!   ([`lanes`]), and the result may not stream more than the configured
//!   bytes;
//! * **query metrics**: the [`QueryObserver`] hears of every query once,
//!   when its answer is over (streamed to the end, failed, or dropped by
//!   the caller), with the rows that went out, its outcome and its latency
//!   from the first byte of the call to the last of the answer.
//!
//! What stays with the surface: decoding its wire format, authentication
//! (which gives the [`RequestContext`]'s caller and scope), and turning
//! [`Error`]s into its own statuses.

use std::any::Any;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::{Stream, StreamExt, stream};

use crate::admission::{self, Limits, QueryPermit};
use crate::cache::CacheStatus;
use crate::error::{Error, Result};
use crate::freshness::Freshness;
use crate::metrics::{FreshnessRow, MetricQuery, MetricResult};
use crate::{Described, Engine, Scope, lanes};

/// Who asks, and how: what every request through the door carries.
pub struct RequestContext {
    /// The authenticated caller (its rate, slots and lane are its own).
    pub caller: String,
    /// The clients it may see.
    pub scope: Scope,
    /// When the call came in: latency is measured from here.
    pub started: Instant,
    /// Skip the result cache (neither read nor written).
    pub bypass_cache: bool,
    /// What the surface wants back with the query's [`Completed`] record
    /// (its access-log entry, ...): the door does not look inside.
    pub note: Option<Box<dyn Any + Send + Sync>>,
}

impl RequestContext {
    /// A request of `caller` in `scope` that came in now.
    pub fn new(caller: impl Into<String>, scope: Scope) -> Self {
        Self {
            caller: caller.into(),
            scope,
            started: Instant::now(),
            bypass_cache: false,
            note: None,
        }
    }

    /// The same request, counted from `started`.
    #[must_use]
    pub fn with_started(mut self, started: Instant) -> Self {
        self.started = started;
        self
    }

    /// The same request, bypassing the result cache when `bypass`.
    #[must_use]
    pub fn with_bypass_cache(mut self, bypass: bool) -> Self {
        self.bypass_cache = bypass;
        self
    }

    /// The same request, with `note` handed back on completion.
    #[must_use]
    pub fn with_note(mut self, note: impl Any + Send + Sync) -> Self {
        self.note = Some(Box::new(note));
        self
    }
}

/// How a query's answer ended.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// Every row went out.
    Ok,
    /// It failed with this error (what the caller got).
    Failed(&'a Error),
    /// The caller let go of the answer before its end.
    Cancelled,
}

/// One query, once its answer is over.
pub struct Completed<'a> {
    /// What was asked: `sql`, `metric`, `freshness`.
    pub kind: &'static str,
    /// Who asked.
    pub caller: &'a str,
    /// Rows the caller was sent.
    pub rows: u64,
    /// How it ended.
    pub outcome: Outcome<'a>,
    /// From the first byte of the call to the end of the answer.
    pub elapsed: Duration,
    /// Each table read, at the version read.
    pub tables: &'a BTreeMap<String, Option<u64>>,
    /// What the result cache did, for answers that went through it.
    pub cache: Option<CacheStatus>,
    /// The request's [`RequestContext::note`].
    pub note: Option<Box<dyn Any + Send + Sync>>,
}

/// Hears of every query that went through the door, once, when it is over.
pub trait QueryObserver: Send + Sync {
    /// `query` is over.
    fn completed(&self, query: Completed<'_>);
}

/// An observer that keeps nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl QueryObserver for NoObserver {
    fn completed(&self, _query: Completed<'_>) {}
}

/// A streamed answer.
pub type AnswerStream = Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>;

/// The answer to a SQL statement: its schema (that of every batch, sent
/// first so an empty result has one too) and its batches, streamed under
/// the query's limits.
pub struct Answer {
    /// The schema of every batch.
    pub schema: SchemaRef,
    /// The batches.
    pub batches: AnswerStream,
    /// What the result cache did.
    pub cache: CacheStatus,
    /// Each table read, at the version read.
    pub tables: BTreeMap<String, Option<u64>>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("cache", &self.cache)
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

/// The freshness answer: the latest landed date of every fact table per
/// client, and the SLA verdict per client and table.
#[derive(Debug, Clone)]
pub struct FreshnessAnswer {
    /// Latest date with rows, per table and client.
    pub latest: Vec<FreshnessRow>,
    /// Whether yesterday landed by 08:00 client-local, per client and table
    /// (tables with runs that wrote rows).
    pub sla: Vec<Freshness>,
}

/// The engine's door (see the module documentation).
#[derive(Clone)]
pub struct QueryExecutor {
    engine: Arc<Engine>,
    limits: Arc<Limits>,
    observer: Arc<dyn QueryObserver>,
}

impl std::fmt::Debug for QueryExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryExecutor")
            .field("limits", self.limits.settings())
            .finish_non_exhaustive()
    }
}

impl QueryExecutor {
    /// The door to `engine`, with no rate limit or timeout, the default
    /// query slots, and no observer.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self {
            engine,
            limits: Arc::new(Limits::unlimited()),
            observer: Arc::new(NoObserver),
        }
    }

    /// The same door under `limits`.
    #[must_use]
    pub fn with_limits(mut self, limits: Arc<Limits>) -> Self {
        self.limits = limits;
        self
    }

    /// The same door, telling `observer` of every query.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn QueryObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// The engine behind the door, for what is not a query (the catalog's
    /// tables, the metric definitions, readiness).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Counts one call of `caller` against its rate: every authenticated
    /// call of every surface, query or not.
    pub fn admit_call(&self, caller: &str) -> Result<()> {
        self.limits.check_rate(caller)
    }

    /// Plans `sql` for the caller (from the memo when it was planned
    /// before), in one of its query slots and within the query timeout:
    /// what a statement's answer will look like.
    pub async fn describe(&self, ctx: &RequestContext, sql: &str) -> Result<Arc<Described>> {
        let _permit = self.limits.start_query(&ctx.caller)?;
        within(
            self.limits.settings().query_timeout,
            self.engine.describe(&ctx.scope, sql),
        )
        .await
    }

    /// Runs `sql` for the caller: planned (unless the memo or the cache
    /// has it) in the caller's lane within the deadline, and streamed under
    /// the limits; the query's slot is held until the answer is over, and
    /// the observer hears of it then.
    pub async fn sql(&self, ctx: RequestContext, sql: &str) -> Result<Answer> {
        let permit = self.limits.start_query(&ctx.caller)?;
        let planning_started = tokio::time::Instant::now();
        let settings = self.limits.settings();
        let starting = {
            let (engine, scope, sql, bypass) = (
                Arc::clone(&self.engine),
                ctx.scope.clone(),
                sql.to_owned(),
                ctx.bypass_cache,
            );
            lanes::stream(&ctx.caller, async move {
                let answer = engine.execute_sql(&scope, &sql, bypass).await?;
                Ok((answer.batches, (answer.cache, answer.versions)))
            })
        };
        let (batches, (cache, tables)) = within(settings.query_timeout, starting).await?;
        let schema = batches.schema();
        let record = Record::new(&self.observer, "sql", ctx)
            .with_tables(tables.clone())
            .with_cache(cache);
        let batches = limited(
            batches.map(|b| b.map_err(Error::from_execution)),
            permit,
            record,
            settings
                .query_timeout
                .map(|limit| (planning_started + limit, limit)),
            settings.max_result_bytes,
        );
        Ok(Answer {
            schema,
            batches: Box::pin(batches),
            cache,
            tables,
        })
    }

    /// Answers a metric query for the caller, in its lane and one of its
    /// slots, within the deadline; the observer hears of it with the rows
    /// of the answer.
    pub async fn metrics(
        &self,
        ctx: RequestContext,
        query: &MetricQuery,
    ) -> Result<(Arc<MetricResult>, CacheStatus)> {
        let _permit = self.limits.start_query(&ctx.caller)?;
        let work = {
            let (engine, scope, query, bypass) = (
                Arc::clone(&self.engine),
                ctx.scope.clone(),
                query.clone(),
                ctx.bypass_cache,
            );
            lanes::run(&ctx.caller, async move {
                engine.query_metrics(&scope, &query, bypass).await
            })
        };
        let (result, cache) = within(self.limits.settings().query_timeout, work).await?;
        let mut record = Record::new(&self.observer, "metric", ctx)
            .with_tables(result.table_versions.clone())
            .with_cache(cache);
        record.streamed(result.rows.len());
        record.finish(Outcome::Ok);
        Ok((result, cache))
    }

    /// The freshness of every fact table per client the caller may see, and
    /// the SLA verdict of each, in its lane and one of its slots, within
    /// the deadline; the observer hears of it with one row per table and
    /// client.
    pub async fn freshness(&self, ctx: RequestContext) -> Result<FreshnessAnswer> {
        let _permit = self.limits.start_query(&ctx.caller)?;
        let now = self.engine.now();
        let work = {
            let (engine, scope) = (Arc::clone(&self.engine), ctx.scope.clone());
            lanes::run(&ctx.caller, async move {
                let latest = engine.freshness(&scope).await?;
                // Yesterday is at most two days back from today in UTC,
                // whatever the client's time zone.
                let since = now.date_naive() - chrono::Days::new(2);
                let landings = engine.landings(&scope, since).await?;
                let sla = crate::freshness::by_table(&landings, &engine.time_zones(), now);
                Ok(FreshnessAnswer { latest, sla })
            })
        };
        let answer = within(self.limits.settings().query_timeout, work).await?;
        let mut record = Record::new(&self.observer, "freshness", ctx);
        record.streamed(answer.latest.len());
        record.finish(Outcome::Ok);
        Ok(answer)
    }
}

/// `work`, ended with [`Error::TimedOut`] past `limit`.
async fn within<T>(limit: Option<Duration>, work: impl Future<Output = Result<T>>) -> Result<T> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, work)
            .await
            .unwrap_or(Err(Error::TimedOut(limit))),
        None => work.await,
    }
}

/// A query's record, handed to the observer once: when [`Record::finish`]
/// is called, or when it drops unfinished (the caller went away).
struct Record {
    observer: Arc<dyn QueryObserver>,
    kind: &'static str,
    ctx: Option<RequestContext>,
    rows: u64,
    tables: BTreeMap<String, Option<u64>>,
    cache: Option<CacheStatus>,
}

impl Record {
    fn new(observer: &Arc<dyn QueryObserver>, kind: &'static str, ctx: RequestContext) -> Self {
        Self {
            observer: Arc::clone(observer),
            kind,
            ctx: Some(ctx),
            rows: 0,
            tables: BTreeMap::new(),
            cache: None,
        }
    }

    fn with_tables(mut self, tables: BTreeMap<String, Option<u64>>) -> Self {
        self.tables = tables;
        self
    }

    fn with_cache(mut self, cache: CacheStatus) -> Self {
        self.cache = Some(cache);
        self
    }

    fn streamed(&mut self, rows: usize) {
        self.rows = self.rows.saturating_add(rows as u64);
    }

    fn finish(&mut self, outcome: Outcome<'_>) {
        let Some(mut ctx) = self.ctx.take() else {
            return;
        };
        self.observer.completed(Completed {
            kind: self.kind,
            caller: &ctx.caller,
            rows: self.rows,
            outcome,
            elapsed: ctx.started.elapsed(),
            tables: &self.tables,
            cache: self.cache,
            note: ctx.note.take(),
        });
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        self.finish(Outcome::Cancelled);
    }
}

/// A result stream under the query limits: it ends with
/// [`Error::TimedOut`] once `deadline` passes and with a resources error
/// once more than `max_bytes` went out, holds the query's slot until it
/// ends, and records the query (rows streamed, outcome, time to the last
/// batch) when it ends or is dropped.
fn limited(
    batches: impl Stream<Item = Result<RecordBatch>> + Send + 'static,
    permit: QueryPermit,
    record: Record,
    deadline: Option<(tokio::time::Instant, Duration)>,
    max_bytes: Option<u64>,
) -> impl Stream<Item = Result<RecordBatch>> + Send + 'static {
    struct State<S> {
        /// `None` once the stream has ended: the query's plan (and the work
        /// it spawned) and its slot go as soon as it ends, whether or not
        /// the caller lets go of the stream.
        batches: Option<Pin<Box<S>>>,
        permit: Option<QueryPermit>,
        record: Record,
        bytes: u64,
    }
    impl<S> State<S> {
        fn fail(&mut self, err: Error) -> Result<RecordBatch> {
            self.batches = None;
            self.permit = None;
            self.record.finish(Outcome::Failed(&err));
            Err(err)
        }
    }
    let state = State {
        batches: Some(Box::pin(batches)),
        permit: Some(permit),
        record,
        bytes: 0,
    };
    stream::unfold(state, move |mut state| async move {
        let batches = state.batches.as_mut()?;
        let next = match deadline {
            Some((at, limit)) => match tokio::time::timeout_at(at, batches.next()).await {
                Ok(next) => next,
                Err(_) => {
                    let failed = state.fail(Error::TimedOut(limit));
                    return Some((failed, state));
                }
            },
            None => batches.next().await,
        };
        match next {
            None => {
                state.record.finish(Outcome::Ok);
                None
            }
            Some(Ok(batch)) => {
                state.bytes = state
                    .bytes
                    .saturating_add(batch.get_array_memory_size() as u64);
                match max_bytes {
                    Some(max) if state.bytes > max => {
                        let failed = state.fail(admission::result_too_large(max));
                        Some((failed, state))
                    }
                    _ => {
                        state.record.streamed(batch.num_rows());
                        Some((Ok(batch), state))
                    }
                }
            }
            Some(Err(err)) => {
                let failed = state.fail(err);
                Some((failed, state))
            }
        }
    })
}
