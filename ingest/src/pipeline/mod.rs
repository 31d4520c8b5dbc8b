//! The ingest pipeline: which jobs are due, running them (fetch, parse,
//! validate, guard, write) and the commands that start them.
//!
//! - [`schedule`]: the jobs due each day and the chunks of a backfill.
//! - [`jobs`]: runs jobs with bounded concurrency per platform.
//! - [`validate`]: the rules a unified record must pass.
//! - [`guard`]: the shrink guard, which holds a replace that would lose
//!   most of a slice.

pub mod guard;
pub mod jobs;
pub mod schedule;
pub mod validate;
