//! Dates as Arrow `Date32` values: the engine's helpers, one definition.

pub(crate) use adlake_engine::dates::{date_to_epoch_day, epoch_day_to_date};
