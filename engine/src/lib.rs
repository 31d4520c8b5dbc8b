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

pub mod catalog;
pub mod error;
mod guard;
pub mod schema;
pub mod scope;
mod scoped;
pub mod transport;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext, SessionState};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, cast};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{StreamExt, TryStreamExt};

pub use catalog::{Catalog, TableSnapshot};
pub use error::{Error, Result};
pub use scope::Scope;

use crate::scoped::ScopedTable;
use crate::transport::{is_transport_type, transport_schema, transport_type};

/// The catalog name the warehouse's tables live under.
pub const CATALOG_NAME: &str = "adlake";
/// The schema name the warehouse's tables live under.
pub const SCHEMA_NAME: &str = "public";

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
}

/// A planned read-only query for one caller.
#[derive(Debug)]
pub struct Query {
    frame: DataFrame,
    schema: SchemaRef,
    versions: BTreeMap<String, Option<u64>>,
}

impl Engine {
    /// Opens the warehouse at `warehouse` (a local directory or `file://`
    /// URL) and every table in it at its latest version.
    pub async fn open(warehouse: &str) -> Result<Self> {
        let location = catalog::warehouse_url(warehouse)?;
        let base = base_state();
        let catalog = Catalog::open(location, &base).await?;
        Ok(Self {
            catalog,
            base,
            ready: AtomicBool::new(true),
        })
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
    pub async fn refresh(&self) -> Result<()> {
        let outcome = self.catalog.refresh(&self.base).await;
        self.ready.store(outcome.is_ok(), Ordering::Relaxed);
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
        let statement = guard::read_only_statement(sql)?;
        let snapshots = self.catalog.snapshots();
        let state = self.session_for(scope, &snapshots)?;
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(Error::from_planning)?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| Error::ReadOnly(e.strip_backtrace()))?;

        let versions = tables_read(&plan, &snapshots);
        let frame = with_transport_types(DataFrame::new(state, plan))?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        Ok(Query {
            frame,
            schema,
            versions,
        })
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
        Ok(SessionStateBuilder::new_from_existing(self.base.clone())
            .with_catalog_list(Arc::new(catalogs))
            .build())
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

    /// Runs the query, streaming its batches.
    pub async fn execute(self) -> Result<SendableRecordBatchStream> {
        let schema = self.schema;
        let stream = self
            .frame
            .execute_stream()
            .await
            .map_err(Error::from_execution)?;
        let advertised = Arc::clone(&schema);
        let stream = stream.map(move |batch| relabel(batch?, &advertised));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Gives a batch exactly the advertised schema (the physical plan may
/// differ in field nullability or metadata, never in types).
fn relabel(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, DataFusionError> {
    if batch.schema() == *schema {
        return Ok(batch);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    let columns: Vec<Arc<dyn Array>> = batch.columns().to_vec();
    RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
        .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))
}

fn base_state() -> SessionState {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG_NAME, SCHEMA_NAME)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true);
    SessionContext::new_with_config(config).state()
}

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
        }
        Ok(TreeNodeRecursion::Continue)
    });
    read
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
