//! The lake layer: the warehouse's Delta tables and everything that
//! commits to them.
//!
//! - [`warehouse`]: where the tables live; opens (and creates) them.
//! - [`commit`]: the one retry of a commit that lost a race.
//! - [`layout`]: columns tables gained after their first release.
//! - [`writer`]: idempotent slice replaces and the `ingest_runs` audit.
//! - [`quarantine`]: the rows runs rejected.
//! - [`staged`]: rows of a run not applied yet.
//! - [`reconcile`]: finishing runs a killed process left unfinished.
//! - [`upkeep`]: compaction, checkpoints and vacuum.
//! - [`erase`]: erasure of a client or a shopper.
//! - [`lineage`]: the lineage columns of fact rows.

pub mod commit;
pub mod erase;
pub(crate) mod files;
pub mod layout;
pub mod lineage;
pub mod quarantine;
pub mod reconcile;
pub mod staged;
pub mod upkeep;
pub mod warehouse;
pub mod writer;
