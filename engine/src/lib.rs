//! The adlake query engine: the warehouse's Delta tables in an embedded
//! DataFusion engine, read-only SQL, and tenant isolation at the scan.
//!
//! [`Engine`] is the one entry point the server uses. It owns the
//! [`Catalog`](catalog::Catalog) of Delta tables (snapshots held in memory,
//! new versions followed by [`Engine::refresh`]), and turns a caller's SQL
//! plus the caller's [`Scope`] into a [`Query`]: the statement must only read
//! ([`guard`](crate) refuses DDL, DML, `COPY`, `SET` and external tables with
//! a message naming the statement), and every client-scoped table the SQL can
//! name is a view restricted to the scope's clients *at the scan*, below
//! anything the SQL contributes. Results come back in types every Flight SQL
//! client reads (no dictionary or view types), with the schema promised up
//! front equal to the schema of every streamed batch.
//!
//! [`schema`] defines each table of the warehouse once; the ingest crate
//! writes with the same definitions.
//!
//! The engine knows nothing of gRPC, Flight or HTTP.
//!
//! ```no_run
//! # async fn example() -> adlake_engine::Result<()> {
//! use adlake_engine::{Engine, Error, Scope};
//! use futures::TryStreamExt;
//!
//! let engine = Engine::open("./data/warehouse").await?;
//! let query = engine
//!     .plan(&Scope::clients(["acme"]), "SELECT sum(spend) FROM ad_performance")
//!     .await?;
//! let batches: Vec<_> = query
//!     .execute()
//!     .await?
//!     .try_collect()
//!     .await
//!     .map_err(Error::from_execution)?;
//! # Ok(()) }
//! ```

pub mod admission;
pub mod cache;
pub mod catalog;
pub mod clock;
pub mod dates;
pub mod error;
pub mod executor;
pub mod freshness;
mod guard;
pub mod ingest_runs;
pub mod insights;
pub mod lanes;
pub mod memo;
pub mod memory;
pub mod planner;
pub mod scan;
pub mod schema;
pub mod scope;
mod scoped;
pub mod semantic;
pub mod stats;
pub mod transport;
mod travel;
mod yielding;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemoryCatalogProviderList, MemorySchemaProvider,
    SchemaProvider, TableProvider,
};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Column, DataFusionError};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::empty::EmptyTable;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext, SessionState};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, cast};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{StreamExt, TryStreamExt};

pub use cache::{CacheStatus, ResultCache};
pub use catalog::{Catalog, TableSnapshot};
pub use error::{Error, Result};
pub use executor::{QueryExecutor, RequestContext};
pub use guard::{DEFAULT_MAX_EXPRESSION_DEPTH, DEFAULT_MAX_STATEMENT_BYTES, StatementLimits};
pub use memo::Described;
pub use scope::Scope;
pub use stats::{ScanStats, ScanTotals};

use crate::scoped::ScopedTable;
use crate::transport::{is_transport_type, transport_schema, transport_type};

/// The catalog name the warehouse's tables live under.
pub const CATALOG_NAME: &str = "adlake";
/// The schema name the warehouse's tables live under.
pub const SCHEMA_NAME: &str = "public";

/// The most positional parameters (`$1` … `$N`) one statement may have.
pub const MAX_PARAMETERS: usize = 65_535;

/// A table as clients see it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Table name.
    pub name: String,
    /// What the table holds.
    pub description: String,
    /// Columns in the types clients receive.
    pub schema: SchemaRef,
    /// Current Delta version, `None` while the table does not exist yet.
    pub version: Option<u64>,
}

/// The engine: open it once per process and share it.
#[derive(Debug)]
pub struct Engine {
    catalog: Catalog,
    base: SessionState,
    ready: AtomicBool,
    cache: ResultCache,
    metrics_config: Arc<semantic::MetricsConfig>,
    clock: clock::Clock,
    /// Bytes each query may hold in DataFusion's memory pool (sorts,
    /// joins, aggregations spill or fail past it); `None`: unbounded.
    query_memory_bytes: Option<usize>,
    /// The pool every query's share is drawn from; `None`: each query is
    /// bounded by its share alone.
    process_pool: Option<Arc<dyn datafusion::execution::memory_pool::MemoryPool>>,
    /// Rows and bytes read by the scans of every query run so far.
    scans: Arc<ScanStats>,
    /// What planning each statement seen lately gave, per scope.
    memo: memo::PlanMemo,
    /// Statements planned so far.
    planned: AtomicU64,
    /// Bounds on a statement before it is planned.
    limits: StatementLimits,
    /// Parquet footers kept across queries (the runtime's metadata cache).
    footers: Arc<scan::FooterCache>,
}

/// Settings of an [`Engine`] beyond the warehouse location.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Byte bound of the result cache.
    pub cache_bytes: u64,
    /// Per-client time zones and custom metrics.
    pub metrics_config: semantic::MetricsConfig,
    /// "Now" for relative date ranges and SQL's `now()`/`current_date`:
    /// the system clock, or a fixed one (reproducible reports and tests).
    pub clock: clock::Clock,
    /// Bounds on a statement's size and depth, checked before planning.
    pub statement_limits: StatementLimits,
    /// Byte bound of the cache of parsed Parquet footers.
    pub footer_cache_bytes: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            cache_bytes: cache::DEFAULT_CACHE_BYTES,
            metrics_config: semantic::MetricsConfig::default(),
            clock: clock::Clock::system(),
            statement_limits: StatementLimits::default(),
            footer_cache_bytes: scan::DEFAULT_FOOTER_CACHE_BYTES,
        }
    }
}

/// The answer to a statement: its batches as they are produced, what the
/// result cache did, and the table versions it reads.
pub struct SqlAnswer {
    /// The result, streamed.
    pub batches: SendableRecordBatchStream,
    /// Answered from the cache, computed, or computed without it.
    pub cache: CacheStatus,
    /// Each table the statement reads, at the version it reads.
    pub versions: BTreeMap<String, Option<u64>>,
}

impl std::fmt::Debug for SqlAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlAnswer")
            .field("cache", &self.cache)
            .field("versions", &self.versions)
            .finish_non_exhaustive()
    }
}

/// A planned read-only query for one caller.
#[derive(Debug)]
pub struct Query {
    frame: DataFrame,
    schema: SchemaRef,
    versions: BTreeMap<String, Option<u64>>,
    scans: Arc<ScanStats>,
    /// Why the answer depends on when it is asked (`now()`, a relative
    /// `metric_query` range, …): such an answer is never cached.
    time_dependent: Option<String>,
}

impl Engine {
    /// Opens the warehouse at `warehouse` (a local directory or `file://`
    /// URL) and every table in it at its latest version.
    pub async fn open(warehouse: &str) -> Result<Self> {
        Self::open_with(warehouse, EngineOptions::default()).await
    }

    /// Opens the warehouse with `options`.
    pub async fn open_with(warehouse: &str, options: EngineOptions) -> Result<Self> {
        let location = catalog::warehouse_url(warehouse)?;
        let footers = Arc::new(scan::FooterCache::new(options.footer_cache_bytes));
        let base = base_state(&footers)?;
        let catalog = Catalog::open(location, &base).await?;
        Ok(Self {
            catalog,
            base,
            ready: AtomicBool::new(true),
            cache: ResultCache::new(options.cache_bytes),
            metrics_config: Arc::new(options.metrics_config),
            clock: options.clock,
            query_memory_bytes: None,
            process_pool: None,
            scans: Arc::default(),
            memo: memo::PlanMemo::default(),
            planned: AtomicU64::new(0),
            limits: options.statement_limits,
            footers,
        })
    }

    /// Runs a plan another engine over the same warehouse encoded with
    /// [`Query::encode`]. The plan carries its caller's tenancy filter; only
    /// plans from a trusted planner may be run (see [`travel`]).
    pub fn execute_encoded(&self, plan: &[u8]) -> Result<SendableRecordBatchStream> {
        travel::execute(plan, self.base.task_ctx())
    }

    /// Hits, misses and size of the cache of Parquet footers.
    pub fn footer_cache(&self) -> scan::FooterCacheStats {
        self.footers.stats()
    }

    /// The bounds every statement is checked against before planning.
    pub fn statement_limits(&self) -> &StatementLimits {
        &self.limits
    }

    /// Gives every query its own memory pool of `bytes`: an operator that
    /// needs more spills to disk where it can and otherwise fails the query
    /// with [`Error::ResourcesExhausted`], so one query cannot take the
    /// memory of the others.
    #[must_use]
    pub fn with_query_memory_limit(mut self, bytes: usize) -> Self {
        self.query_memory_bytes = Some(bytes);
        self
    }

    /// Draws every query's memory from one pool of `bytes` for the process
    /// (see [`memory`]): past it, operators spill or queries fail with
    /// [`Error::ResourcesExhausted`], however many run at once.
    #[must_use]
    pub fn with_memory_pool(mut self, bytes: usize) -> Self {
        self.process_pool = Some(Arc::new(GreedyMemoryPool::new(bytes)));
        self
    }

    /// The result cache.
    pub fn cache(&self) -> &ResultCache {
        &self.cache
    }

    /// Rows and bytes the scans of every query have read since the engine
    /// opened (cache hits read nothing).
    pub fn scan_totals(&self) -> ScanTotals {
        self.scans.totals()
    }

    /// The metrics a caller in `scope` can ask for.
    pub fn metrics(&self, scope: &Scope) -> Vec<semantic::MetricDef> {
        semantic::metrics_for(&self.metrics_config, scope)
    }

    /// Answers a metric query for a caller in `scope`, through the cache
    /// unless `bypass`. Relative dates are resolved at `now`.
    pub async fn query_metrics_at(
        &self,
        scope: &Scope,
        query: &semantic::MetricQuery,
        bypass: bool,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(Arc<semantic::MetricResult>, CacheStatus)> {
        let prepared = semantic::prepare(query, scope, &self.metrics_config, now)?;
        if bypass {
            let result = semantic::run(self, scope, &prepared).await?;
            return Ok((Arc::new(result), CacheStatus::Bypass));
        }
        let key = cache::CacheKey {
            scope: scope.clone(),
            kind: "metrics",
            question: prepared.normalized(),
            versions: self.current_versions(&prepared.tables()),
        };
        if let Some(cache::Cached::Metrics(hit)) = self.cache.get(&key).await {
            return Ok((hit, CacheStatus::Hit));
        }
        let result = Arc::new(semantic::run(self, scope, &prepared).await?);
        // Stored only when every statement read the versions the key names
        // (a refresh in between would make the key lie).
        if key
            .versions
            .iter()
            .all(|(t, v)| result.table_versions.get(t).is_none_or(|r| r == v))
        {
            self.cache
                .insert(key, cache::Cached::Metrics(Arc::clone(&result)))
                .await;
        }
        Ok((result, CacheStatus::Miss))
    }

    /// [`Engine::query_metrics_at`] now.
    pub async fn query_metrics(
        &self,
        scope: &Scope,
        query: &semantic::MetricQuery,
        bypass: bool,
    ) -> Result<(Arc<semantic::MetricResult>, CacheStatus)> {
        self.query_metrics_at(scope, query, bypass, self.now())
            .await
    }

    /// The latest landed date per client of each fact table, under `scope`.
    pub async fn freshness(&self, scope: &Scope) -> Result<Vec<semantic::FreshnessRow>> {
        let mut versions = BTreeMap::new();
        semantic::freshness(
            self,
            scope,
            &["ad_performance", "web_sessions", "orders"],
            &mut versions,
        )
        .await
    }

    /// The successful ingest runs under `scope` that landed dates from
    /// `since` on, with when they finished (for "did yesterday land before
    /// 08:00 client-local", [`freshness::by_table`]).
    pub async fn landings(
        &self,
        scope: &Scope,
        since: chrono::NaiveDate,
    ) -> Result<Vec<freshness::Landing>> {
        let Some(runs) = self.catalog.snapshot(schema::INGEST_RUNS.name) else {
            return Ok(Vec::new());
        };
        if runs.version.is_none() {
            return Ok(Vec::new());
        }
        let provider = scoped_provider(&runs, scope).map_err(Error::from_planning)?;
        freshness::load_landings(provider, Some(since)).await
    }

    /// The configured client time zones, for [`freshness`]'s rule.
    pub fn time_zones(&self) -> freshness::TimeZones {
        self.metrics_config.time_zones()
    }

    /// Now, for relative date ranges: the fixed clock when one is set.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// The configured time zone of a client (UTC when none is set).
    pub fn client_time_zone(&self, client: &str) -> chrono_tz::Tz {
        self.metrics_config
            .time_zone(client)
            .unwrap_or(chrono_tz::Tz::UTC)
    }

    fn current_versions(&self, tables: &[&str]) -> BTreeMap<String, Option<u64>> {
        tables
            .iter()
            .filter_map(|t| self.catalog.snapshot(t))
            .map(|s| (s.def.name.to_string(), s.version))
            .collect()
    }

    /// Plans and runs `sql` for `scope`, collecting its batches and the
    /// versions it read.
    pub(crate) async fn collect_sql(
        &self,
        scope: &Scope,
        sql: &str,
    ) -> Result<(Vec<RecordBatch>, BTreeMap<String, Option<u64>>)> {
        let query = self.plan(scope, sql).await?;
        let versions = query.table_versions().clone();
        let batches = query
            .execute()
            .await?
            .try_collect()
            .await
            .map_err(Error::from_execution)?;
        Ok((batches, versions))
    }

    /// How many statements have been planned (parsed, scoped and turned
    /// into a logical plan) since the engine opened.
    pub fn statements_planned(&self) -> u64 {
        self.planned.load(Ordering::Relaxed)
    }

    /// The version of `table` now: `None` for a table the warehouse does
    /// not have, `Some(None)` for one not created yet.
    fn version_now(&self, table: &str) -> Option<Option<u64>> {
        self.catalog.snapshot(table).map(|s| s.version)
    }

    /// Describes `sql` for `scope`: the result schema, the parameter types
    /// and the versions it reads. A statement planned before for the same
    /// scope, whose tables have not moved since, is described from the
    /// [memo](memo) without being parsed or planned again.
    pub async fn describe(&self, scope: &Scope, sql: &str) -> Result<Arc<Described>> {
        self.limits.check_size(sql)?;
        let question = memo::normalize(sql);
        if let Some(described) = self
            .memo
            .get(scope, &question, |t| self.version_now(t))
            .await
        {
            return Ok(described);
        }
        let query = self.plan(scope, sql).await?;
        Ok(Arc::new(Described {
            schema: query.schema(),
            parameter_types: query.parameter_types()?,
            time_dependent: query.time_dependent.is_some(),
            versions: query.versions,
        }))
    }

    /// Plans and runs `sql` for `scope` through the result cache (unless
    /// `bypass`). A statement described before is looked up in the cache
    /// straight away: a hit is answered without parsing or planning.
    pub async fn execute_sql(&self, scope: &Scope, sql: &str, bypass: bool) -> Result<SqlAnswer> {
        self.limits.check_size(sql)?;
        if bypass {
            let query = self.plan(scope, sql).await?;
            let versions = query.table_versions().clone();
            return Ok(SqlAnswer {
                batches: query.execute().await?,
                cache: CacheStatus::Bypass,
                versions,
            });
        }
        let question = memo::normalize(sql);
        let described = self
            .memo
            .get(scope, &question, |t| self.version_now(t))
            .await;
        let Some(described) = described.filter(|d| !d.time_dependent) else {
            let query = self.plan(scope, sql).await?;
            let versions = query.table_versions().clone();
            let (batches, cache) = self.execute_cached(scope, sql, query, false).await?;
            return Ok(SqlAnswer {
                batches,
                cache,
                versions,
            });
        };
        let key = sql_cache_key(scope, question, described.versions.clone());
        if let Some(batches) = self.cached_stream(&key).await {
            return Ok(SqlAnswer {
                batches,
                cache: CacheStatus::Hit,
                versions: key.versions,
            });
        }
        // The lookup above counted the miss.
        let query = self.plan(scope, sql).await?;
        let key = cache::CacheKey {
            versions: query.table_versions().clone(),
            ..key
        };
        let versions = key.versions.clone();
        let (batches, cache) = self.execute_and_store(key, query).await?;
        Ok(SqlAnswer {
            batches,
            cache,
            versions,
        })
    }

    /// Runs a planned statement through the result cache: a hit streams the
    /// stored batches; a miss streams live and stores the batches at the end
    /// when they fit. The key is the scope, the statement text and the
    /// versions the plan reads.
    pub async fn execute_cached(
        &self,
        scope: &Scope,
        sql: &str,
        query: Query,
        bypass: bool,
    ) -> Result<(SendableRecordBatchStream, CacheStatus)> {
        // An answer for another instant must never be served: computed
        // live each time, neither read from the cache nor stored.
        if bypass || query.time_dependent.is_some() {
            return Ok((query.execute().await?, CacheStatus::Bypass));
        }
        let key = sql_cache_key(scope, memo::normalize(sql), query.table_versions().clone());
        if let Some(stream) = self.cached_stream(&key).await {
            return Ok((stream, CacheStatus::Hit));
        }
        self.execute_and_store(key, query).await
    }

    /// The stored answer under `key` as a stream, counting a hit or a miss.
    async fn cached_stream(&self, key: &cache::CacheKey) -> Option<SendableRecordBatchStream> {
        let Some(cache::Cached::Batches(schema, batches)) = self.cache.get(key).await else {
            return None;
        };
        let items: Vec<std::result::Result<RecordBatch, DataFusionError>> =
            batches.iter().cloned().map(Ok).collect();
        let stream = RecordBatchStreamAdapter::new(schema, futures::stream::iter(items));
        Some(Box::pin(stream))
    }

    /// Runs `query`, streaming live, and stores its batches under `key` at
    /// the end when they fit the cache.
    async fn execute_and_store(
        &self,
        key: cache::CacheKey,
        query: Query,
    ) -> Result<(SendableRecordBatchStream, CacheStatus)> {
        let schema = query.schema();
        let live = query.execute().await?;
        let cache = self.cache.clone();
        let limit = usize::try_from(cache.max_bytes()).unwrap_or(usize::MAX);
        let kept = Arc::new(std::sync::Mutex::new(Some((Vec::new(), 0usize))));
        let tee = Arc::clone(&kept);
        let stream = live.map(move |batch| {
            let mut slot = tee.lock().expect("cache tee lock");
            match &batch {
                Ok(b) => {
                    if let Some((batches, bytes)) = slot.as_mut() {
                        let own = cache::compact(b);
                        *bytes += own.get_array_memory_size();
                        if *bytes > limit {
                            *slot = None;
                        } else {
                            batches.push(own);
                        }
                    }
                }
                Err(_) => *slot = None,
            }
            batch
        });
        let store_schema = Arc::clone(&schema);
        let store = futures::stream::once(async move {
            let done = kept.lock().expect("cache tee lock").take();
            if let Some((batches, _)) = done {
                cache
                    .insert(key, cache::Cached::Batches(store_schema, Arc::new(batches)))
                    .await;
            }
        })
        .filter_map(|()| async { None });
        let stream = RecordBatchStreamAdapter::new(schema, stream.chain(store));
        Ok((Box::pin(stream), CacheStatus::Miss))
    }

    /// The catalog of tables.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Whether the tables are open and the last look at the warehouse worked.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Follows new Delta versions of every table.
    /// Cache entries of older versions are dropped when a table moved, so
    /// an erased client's rows leave memory with the erasure's commit.
    pub async fn refresh(&self) -> Result<()> {
        let outcome = self.catalog.refresh(&self.base).await;
        self.ready.store(outcome.is_ok(), Ordering::Relaxed);
        if outcome.as_ref().is_ok_and(|changed| !changed.is_empty()) {
            let current = self
                .catalog
                .snapshots()
                .iter()
                .map(|s| (s.def.name.to_owned(), s.version))
                .collect();
            let dropped = self.cache.drop_stale(&current).await;
            tracing::debug!(dropped, "dropped cache entries of older table versions");
        }
        outcome.map(|_| ())
    }

    /// Refreshes the catalog every `every` until the returned task is
    /// aborted.
    pub fn spawn_refresh(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if let Err(e) = engine.refresh().await {
                    tracing::warn!(error = %e, "refreshing the warehouse failed");
                }
            }
        })
    }

    /// Every table, sorted by name, as clients see it.
    pub fn tables(&self) -> Vec<TableInfo> {
        self.catalog
            .snapshots()
            .into_iter()
            .map(|s| TableInfo {
                name: s.def.name.to_string(),
                description: s.def.description.to_string(),
                schema: transport_schema(&s.provider.schema()),
                version: s.version,
            })
            .collect()
    }

    /// The client ids that have rows in any fact table.
    pub async fn clients(&self) -> Result<BTreeSet<String>> {
        let sql = "SELECT DISTINCT client_id FROM ad_performance \
                   UNION SELECT DISTINCT client_id FROM web_sessions \
                   UNION SELECT DISTINCT client_id FROM orders";
        let batches: Vec<RecordBatch> = self
            .plan(&Scope::AllClients, sql)
            .await?
            .execute()
            .await?
            .try_collect()
            .await
            .map_err(Error::from_execution)?;
        let mut clients = BTreeSet::new();
        for batch in &batches {
            let column = batch.column(0).as_string::<i32>();
            clients.extend(column.iter().flatten().map(str::to_string));
        }
        Ok(clients)
    }

    /// Plans `sql` for a caller limited to `scope`.
    ///
    /// Only a single read-only statement is accepted. The tables the SQL can
    /// name are the warehouse's tables at their current versions, each
    /// restricted to the scope's clients at the scan.
    pub async fn plan(&self, scope: &Scope, sql: &str) -> Result<Query> {
        self.planned.fetch_add(1, Ordering::Relaxed);
        // Refused before anything is copied or queued.
        self.limits.check_size(sql)?;
        let snapshots = self.catalog.snapshots();
        let state = self.session_for(scope, &snapshots)?;
        let limits = self.limits;
        let text = sql.to_owned();
        // Parsing and planning recurse over the statement: on a planning
        // thread, off the runtime's workers (see `planner`).
        let (frame, versions, time_dependent) = planner::run(move |runtime| {
            let statement = guard::read_only_statement(&text, &limits)?;
            let plan = runtime
                .block_on(state.statement_to_plan(statement))
                .map_err(Error::from_planning)?;
            SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false)
                .verify_plan(&plan)
                .map_err(|e| Error::ReadOnly(e.strip_backtrace()))?;
            let versions = tables_read(&plan, &snapshots);
            let time_dependent = time_dependent(&plan);
            let frame = with_transport_types(DataFrame::new(state, plan))?;
            Ok((frame, versions, time_dependent))
        })
        .await?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let query = Query {
            frame,
            schema,
            versions,
            scans: Arc::clone(&self.scans),
            time_dependent,
        };
        // A statement whose parameter types cannot be told is described by
        // planning it each time, which reports why.
        if let Ok(parameter_types) = query.parameter_types() {
            let described = Described {
                schema: query.schema(),
                parameter_types,
                versions: query.versions.clone(),
                time_dependent: query.time_dependent.is_some(),
            };
            self.memo
                .insert(scope, memo::normalize(sql), described)
                .await;
        }
        Ok(query)
    }

    /// A session whose catalog holds this caller's view of the tables.
    ///
    /// Built fresh per query over a new catalog list: the base state's
    /// catalog list is shared by every clone of it, so registering into it
    /// would leak one caller's tables into another's session.
    fn session_for(&self, scope: &Scope, snapshots: &[Arc<TableSnapshot>]) -> Result<SessionState> {
        let schema = MemorySchemaProvider::new();
        for snapshot in snapshots {
            let provider = scoped_provider(snapshot, scope).map_err(Error::from_planning)?;
            schema
                .register_table(snapshot.def.name.to_string(), provider)
                .map_err(Error::from_planning)?;
        }
        let catalog = MemoryCatalogProvider::new();
        catalog
            .register_schema(SCHEMA_NAME, Arc::new(schema))
            .map_err(Error::from_planning)?;
        let catalogs = MemoryCatalogProviderList::new();
        datafusion::catalog::CatalogProviderList::register_catalog(
            &catalogs,
            CATALOG_NAME.to_string(),
            Arc::new(catalog),
        );
        let mut builder = SessionStateBuilder::new_from_existing(self.base.clone())
            .with_catalog_list(Arc::new(catalogs));
        let share = match (&self.process_pool, self.query_memory_bytes) {
            (_, Some(bytes)) => Some(bytes),
            (Some(process), None) => match process.memory_limit() {
                datafusion::execution::memory_pool::MemoryLimit::Finite(bytes) => Some(bytes),
                _ => None,
            },
            (None, None) => None,
        };
        if let Some(bytes) = share {
            // Same object stores and disk manager, a pool of its own that
            // draws from the process's.
            let runtime = RuntimeEnvBuilder::from_runtime_env(self.base.runtime_env())
                .with_memory_pool(Arc::new(memory::QueryPool::new(
                    bytes,
                    self.process_pool.clone(),
                )))
                .build_arc()
                .map_err(Error::from_planning)?;
            builder = builder.with_runtime_env(runtime);
        }
        let mut state = builder.build();
        // The metric layer from SQL, over this caller's scoped tables.
        state.register_udtf(
            semantic::sql::FUNCTION_NAME,
            Arc::new(semantic::sql::MetricQueryFunction::new(
                scope.clone(),
                Arc::clone(&self.metrics_config),
                self.clock.clone(),
            )),
        );
        // Forecasts, anomalies and budget advice over the same scoped
        // metric layer.
        for (name, function) in
            insights::sql::InsightFunction::all(scope, &self.metrics_config, &self.clock)
        {
            state.register_udtf(name, function);
        }
        // `now()`, `current_date` and `current_timestamp` read the
        // engine's clock too: one instant for the whole statement.
        state.execution_props_mut().query_execution_start_time = Some(self.now());
        Ok(state)
    }
}

impl Query {
    /// The schema of every batch the query streams.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The version of every table the query reads (`None`: not created yet).
    pub fn table_versions(&self) -> &BTreeMap<String, Option<u64>> {
        &self.versions
    }

    /// The types of the statement's positional parameters (`$1`, `$2`, …),
    /// in order; `None` where the SQL does not decide a parameter's type.
    /// A query with parameters runs once the caller's values replace them.
    pub fn parameter_types(&self) -> Result<Vec<Option<arrow::datatypes::DataType>>> {
        let types = self
            .frame
            .logical_plan()
            .get_parameter_types()
            .map_err(Error::from_planning)?;
        let mut positional: Vec<(usize, Option<arrow::datatypes::DataType>)> = types
            .into_iter()
            .filter_map(|(id, t)| Some((id.strip_prefix('$')?.parse().ok()?, t)))
            .filter(|(n, _)| *n >= 1)
            .collect();
        positional.sort_by_key(|(n, _)| *n);
        let count = positional.last().map_or(0, |(n, _)| *n);
        if count > MAX_PARAMETERS {
            return Err(Error::InvalidSql(format!(
                "parameter ${count} is past the limit of {MAX_PARAMETERS} parameters"
            )));
        }
        let mut ordered = vec![None; count];
        for (n, t) in positional {
            ordered[n - 1] = t;
        }
        Ok(ordered)
    }

    /// The query's physical plan, scope applied, encoded with
    /// `datafusion-proto` for another process of the deployment to run with
    /// [`Engine::execute_encoded`] (see [`travel`]).
    pub async fn encode(self) -> Result<bytes::Bytes> {
        travel::encode(physical_plan(self.frame).await?)
    }

    /// Runs the query, streaming its batches. When the stream ends (or is
    /// dropped), the rows and bytes its scans read are added to the
    /// engine's [`ScanStats`].
    pub async fn execute(self) -> Result<SendableRecordBatchStream> {
        let schema = self.schema;
        let task = Arc::new(self.frame.task_ctx());
        let plan = physical_plan(self.frame).await?;
        let stream = datafusion::physical_plan::execute_stream(Arc::clone(&plan), task)
            .map_err(Error::from_execution)?;
        let recorder = stats::Recorder::new(plan, self.scans);
        let advertised = Arc::clone(&schema);
        let stream = stream.map(move |batch| {
            // Held by the stream: records the scans when the stream goes.
            let _ = &recorder;
            relabel(batch?, &advertised)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Optimises `frame` and plans it physically, on a planning thread: both
/// recurse over the plan (see `planner`).
async fn physical_plan(
    frame: DataFrame,
) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    planner::run(move |runtime| {
        runtime
            .block_on(frame.create_physical_plan())
            .map_err(Error::from_execution)
    })
    .await
}

/// The result-cache key of a SQL statement.
fn sql_cache_key(
    scope: &Scope,
    question: String,
    versions: BTreeMap<String, Option<u64>>,
) -> cache::CacheKey {
    cache::CacheKey {
        scope: scope.clone(),
        kind: "sql",
        question,
        versions,
    }
}

/// Gives a batch exactly the advertised schema (invariant I7).
///
/// The physical plan may differ in field nullability or metadata, and in
/// types where DataFusion's optimiser rewrites an aggregate after the
/// schema was worked out: a single `COUNT(DISTINCT ...)` beside a `SUM`
/// becomes a two-phase aggregation whose outer sum widens a decimal from
/// precision 28 to 38. Such a column is cast to the advertised type; a
/// value that does not fit it fails the query rather than changing.
fn relabel(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, DataFusionError> {
    if batch.schema() == *schema {
        return Ok(batch);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    let strict = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    let columns: Vec<Arc<dyn Array>> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                arrow::compute::cast_with_options(column, field.data_type(), &strict)
            }
        })
        .collect::<Result<_, _>>()
        .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))?;
    RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
        .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))
}

fn base_state(footers: &Arc<scan::FooterCache>) -> Result<SessionState> {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG_NAME, SCHEMA_NAME)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true);
    let limit = footers.stats().limit;
    let runtime = RuntimeEnvBuilder::new()
        .with_cache_manager(
            CacheManagerConfig::default()
                .with_file_metadata_cache(Some(scan::footers::shared(footers)))
                .with_metadata_cache_limit(usize::try_from(limit).unwrap_or(usize::MAX)),
        )
        .build_arc()
        .map_err(Error::from_planning)?;
    let context = SessionContext::new_with_config_rt(config, runtime);
    // The rule rewrites a single `COUNT(DISTINCT x)` beside other aggregates
    // into a two-phase aggregation after types were coerced: the outer
    // `SUM` of a decimal widens it from precision 28 to 38, so the plan
    // streams other types than it promised and a comparison over the sum
    // (`NULLIF(SUM(spend), 0)`) fails at run time with "Invalid comparison
    // operation: Decimal128(38, 6) == Decimal128(28, 6)". Without it the
    // distinct aggregate is computed directly; tests/python/test_schema_grid.py
    // runs every aggregate shape over every column.
    context.remove_optimizer_rule(SINGLE_DISTINCT_RULE);
    // Joins yield to the runtime per batch, so a deadline can stop them.
    Ok(SessionStateBuilder::new_from_existing(context.state())
        .with_physical_optimizer_rule(Arc::new(yielding::YieldAfterJoins))
        .build())
}

/// DataFusion's `SingleDistinctToGroupBy` optimizer rule (see [`base_state`]).
const SINGLE_DISTINCT_RULE: &str = "single_distinct_aggregation_to_group_by";

/// The provider a caller in `scope` gets for one table.
fn scoped_provider(
    snapshot: &TableSnapshot,
    scope: &Scope,
) -> datafusion::error::Result<Arc<dyn TableProvider>> {
    let provider = Arc::clone(&snapshot.provider);
    if !snapshot.def.client_scoped {
        return Ok(provider);
    }
    match scope {
        Scope::AllClients => Ok(provider),
        Scope::Clients(ids) if ids.is_empty() => Ok(Arc::new(EmptyTable::new(provider.schema()))),
        Scope::Clients(ids) => Ok(Arc::new(ScopedTable::try_new(
            provider,
            ids.iter().cloned().collect(),
        )?)),
    }
}

/// The tables a plan scans, with the versions the query reads.
fn tables_read(
    plan: &LogicalPlan,
    snapshots: &[Arc<TableSnapshot>],
) -> BTreeMap<String, Option<u64>> {
    let mut read = BTreeMap::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = scan.table_name.table();
            if let Some(s) = snapshots.iter().find(|s| s.def.name == name) {
                read.insert(name.to_string(), s.version);
            }
            // A `metric_query` call reads its tables when scanned.
            let metric_tables = datafusion::datasource::source_as_provider(&scan.source)
                .ok()
                .and_then(|p| {
                    p.downcast_ref::<semantic::sql::MetricTable>()
                        .map(semantic::sql::MetricTable::tables)
                })
                .unwrap_or_default();
            for table in metric_tables {
                if let Some(s) = snapshots.iter().find(|s| s.def.name == table) {
                    read.insert(table.to_string(), s.version);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    read
}

/// Why `plan`'s answer depends on when it is computed, if it does: a
/// function that is not immutable (`now()`, `current_date`, `random()`,
/// …; DataFusion folds the stable ones to the statement's instant), or a
/// `metric_query` over a relative date range (resolved at the clock when
/// the statement is planned).
fn time_dependent(plan: &LogicalPlan) -> Option<String> {
    use datafusion::common::tree_node::TreeNode;
    use datafusion::logical_expr::Volatility;
    let mut why = None;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let relative = datafusion::datasource::source_as_provider(&scan.source)
                .ok()
                .and_then(|p| {
                    p.downcast_ref::<semantic::sql::MetricTable>()
                        .and_then(|t| t.relative_range().map(str::to_owned))
                });
            if let Some(range) = relative {
                why = Some(format!(
                    "a metric function over the relative range '{range}'"
                ));
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && f.func.signature().volatility != Volatility::Immutable
                {
                    why = Some(format!("{}()", f.func.name()));
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    why
}

/// Ends the plan in a projection to client-readable types, if needed.
fn with_transport_types(frame: DataFrame) -> Result<DataFrame> {
    let schema = frame.schema().clone();
    if schema
        .fields()
        .iter()
        .all(|f| is_transport_type(f.data_type()))
    {
        return Ok(frame);
    }
    let exprs: Vec<Expr> = schema
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            if is_transport_type(field.data_type()) {
                column
            } else {
                cast(column, transport_type(field.data_type()))
                    .alias_qualified(qualifier.cloned(), field.name())
            }
        })
        .collect();
    frame.select(exprs).map_err(Error::from_planning)
}
