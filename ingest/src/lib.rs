//! `adlake-ingest` gets data into the warehouse: it owns the sources
//! (today the deterministic [`synthetic`] source; platform connectors and
//! file drops follow), the [`Warehouse`] layout of Delta tables, idempotent
//! slice writes ([`WriteSliceBuilder`]) and the `ingest_runs` audit trail
//! ([`RunRecord`]), keyed hashing of personal data ([`pii`]) and the
//! [`demo`] that fills a warehouse with a whole synthetic agency.
//!
//! Every table's schema comes from [`adlake_engine::schema`]; this crate
//! never defines columns of its own. It writes tables and must not serve
//! queries: reading is the engine's job.
//!
//! The modules by role, each layer importing only from those below it:
//! - [`sources`]: the platform connectors and the HTTP layer they call
//!   through (retries, circuit breakers, OAuth tokens).
//! - [`pipeline`]: which jobs are due, and running them: fetch, validate,
//!   guard, write.
//! - [`lake`]: the Delta tables and every commit to them: the warehouse,
//!   slice writes, quarantine, staged rows, reconciliation, upkeep,
//!   erasure, and the one retry of a commit that lost a race.
//! - [`synthetic`]: the demo data generator, and [`demo`], which writes it.
//!
//! The main types:
//! - [`Warehouse`]: resolves a directory or `file://` URL and opens or
//!   creates each table under it.
//! - [`Synthetic`] / [`SyntheticConfig`]: realistic, deterministic clients,
//!   ad performance, GA4 sessions, Shopify orders and FX rates, streamed as
//!   Arrow batches with bounded memory.
//! - [`WriteSliceBuilder`]: replaces one (client, source, date range) slice
//!   in one Delta transaction and records the run.
//! - [`run_demo`]: everything above, for every client.
//!
//! ```no_run
//! use adlake_engine::schema::AD_PERFORMANCE;
//! use adlake_ingest::{Lineage, Platform, Synthetic, SyntheticConfig, Trigger, Warehouse,
//!     WriteSliceBuilder, SYNTHETIC_SOURCE};
//! use chrono::NaiveDate;
//!
//! # async fn example() -> adlake_ingest::Result<()> {
//! let warehouse = Warehouse::open("./data/warehouse")?;
//! warehouse.ensure_tables().await?;
//! let config = SyntheticConfig {
//!     clients: 3,
//!     days: 30,
//!     rows: 50_000,
//!     seed: 42,
//!     end_date: NaiveDate::from_ymd_opt(2025, 6, 30).unwrap(),
//!     incidents: true,
//! };
//! let synthetic = Synthetic::new(config.clone());
//! let client = &synthetic.clients()[0];
//! let lineage = Lineage::new(SYNTHETIC_SOURCE, "run-1");
//! let written = WriteSliceBuilder::new(&warehouse, &AD_PERFORMANCE)
//!     .with_client(client.id.clone())
//!     .with_source(Some(Platform::GoogleAds.as_str()))
//!     .with_date_range(config.start_date()?, config.end_date)
//!     .with_run("run-1")
//!     .with_trigger(Trigger::Manual)
//!     .execute(synthetic.ad_performance_for(0, Platform::GoogleAds, &lineage))
//!     .await?;
//! println!("{} rows at version {}", written.rows_written, written.version);
//! # Ok(())
//! # }
//! ```

pub mod admin;
pub mod config;
mod dates;
pub mod demo;
pub mod error;
pub mod freshness;
pub mod fx;
pub mod lake;
pub mod lineage;
pub mod live;
pub mod pause;
pub mod pii;
pub mod pipeline;
pub mod sources;
pub mod synthetic;

pub use adlake_engine::schema;

// Each module also under its path from before the folders by role, which
// callers outside the crate (and `freshness`) use.
pub use crate::lake::{erase, reconcile, staged, upkeep, warehouse, writer};
pub use crate::pipeline::{guard, jobs, validate};
pub use crate::sources::{connectors, http};

pub use crate::demo::{DemoOptions, DemoSummary, Progress, run_demo};
pub use crate::error::{Error, Result};
pub use crate::lake::lineage::Lineage;
pub use crate::lake::warehouse::Warehouse;
pub use crate::lake::writer::{
    DEFAULT_WRITE_BUFFER, GLOBAL_CLIENT, RUN_ID_METADATA_KEY, RunRecord, RunStatus, SliceWrite,
    SourceBatches, Trigger, WriteSliceBuilder, append_run, append_runs,
};
pub use crate::sources::connectors::Platform;
pub use crate::synthetic::{
    AccountProfile, ClientProfile, SYNTHETIC_SOURCE, Synthetic, SyntheticConfig, Vertical,
};
