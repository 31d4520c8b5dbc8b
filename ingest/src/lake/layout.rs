//! Columns tables gained after their first release.
//!
//! A table written by an older release lacks them. It is given them,
//! nullable (its old rows read null there), the first time a process
//! opens it for writing ([`Warehouse::open_or_create`]), not on every
//! write.
//!
//! [`Warehouse::open_or_create`]: crate::lake::warehouse::Warehouse::open_or_create

use adlake_engine::schema::{INGEST_RUNS, QUARANTINE, TableDef};
use deltalake::kernel::DataType as DeltaDataType;

/// Column of the first requested date of a range-keyed table.
pub const DATE_FROM: &str = "date_from";
/// Column of the last requested date of a range-keyed table.
pub const DATE_TO: &str = "date_to";

/// The `ingest_runs` columns of the run's platform calls
/// ([`CallCounts`](crate::sources::http::CallCounts)), in schema order, with their
/// Delta types.
pub static CALL_COLUMNS: [(&str, DeltaDataType); 5] = [
    ("api_calls", DeltaDataType::LONG),
    ("retries", DeltaDataType::LONG),
    ("rate_limit_waits", DeltaDataType::LONG),
    ("rate_limit_wait_seconds", DeltaDataType::DOUBLE),
    ("breaker_opens", DeltaDataType::LONG),
];

/// The requested-range columns of `quarantine`; rows written before they
/// existed keep nulls there and are never replaced.
pub static QUARANTINE_RANGE_COLUMNS: [(&str, DeltaDataType); 2] = [
    (DATE_FROM, DeltaDataType::DATE),
    (DATE_TO, DeltaDataType::DATE),
];

/// The columns `def` gained after its first release, in the order they
/// end its schema.
pub fn added_columns(def: &TableDef) -> &'static [(&'static str, DeltaDataType)] {
    if def.name == INGEST_RUNS.name {
        &CALL_COLUMNS
    } else if def.name == QUARANTINE.name {
        &QUARANTINE_RANGE_COLUMNS
    } else {
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_columns_end_the_schema_in_order() {
        for def in adlake_engine::schema::all_tables() {
            let added = added_columns(def);
            let fields = def.schema.fields();
            let tail = &fields[fields.len() - added.len()..];
            for ((name, _), field) in added.iter().zip(tail) {
                assert_eq!(*name, field.name(), "{}", def.name);
                assert!(field.is_nullable(), "{}.{name}", def.name);
            }
        }
    }
}
