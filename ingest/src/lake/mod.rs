//! The lake layer: everything that commits to the warehouse's Delta tables.

pub mod commit;
pub mod layout;
pub mod lineage;
pub mod quarantine;
