//! The shrink guard: a replace that would remove most of a slice's rows or
//! spend, or that writes nothing because every record was quarantined, is
//! *held* instead of applied (the old rows stay; see
//! [`crate::pipeline::jobs::Ingestor`]).
//!
//! Zero rows is not always wrong: a slice that was already empty, or an
//! account the platform reports inactive (Meta's `account_status`, asked
//! after an empty insights answer), passes. The limits are per source
//! in the client configuration (`shrink_max_row_drop`,
//! `shrink_max_spend_drop`, fractions of the slice).

use adlake_engine::schema::{AD_PERFORMANCE, CLIENT_ID, DATE, ORDERS, TableDef, WEB_SESSIONS};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use chrono::NaiveDate;
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{cast, col, lit};
use datafusion::prelude::SessionContext;

use crate::dates::date_to_epoch_day;
use crate::error::Result;
use crate::lake::warehouse::Warehouse;

/// Default of `shrink_max_row_drop`: hold a replace that removes more than
/// half of the slice's rows.
pub const DEFAULT_MAX_ROW_DROP: f64 = 0.5;
/// Default of `shrink_max_spend_drop`: hold a replace that removes more
/// than half of the slice's spend.
pub const DEFAULT_MAX_SPEND_DROP: f64 = 0.5;

/// How much of a slice a replace may remove before it is held.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShrinkLimits {
    /// Largest fraction of the slice's rows a replace may remove.
    pub max_row_drop: f64,
    /// Largest fraction of the slice's spend (revenue, order totals for
    /// GA4 and Shopify) a replace may remove.
    pub max_spend_drop: f64,
}

impl Default for ShrinkLimits {
    fn default() -> Self {
        Self {
            max_row_drop: DEFAULT_MAX_ROW_DROP,
            max_spend_drop: DEFAULT_MAX_SPEND_DROP,
        }
    }
}

/// Rows and money of a slice.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Rows.
    pub rows: u64,
    /// Spend (or the table's money measure), in the accounts' currencies.
    pub spend: f64,
}

/// The money column the guard watches in `table`, if any.
pub fn money_column(table: &TableDef) -> Option<&'static str> {
    if table.name == AD_PERFORMANCE.name {
        Some("spend")
    } else if table.name == WEB_SESSIONS.name {
        Some("revenue")
    } else if table.name == ORDERS.name {
        Some("total_price")
    } else {
        None
    }
}

/// Why a replace is held, or `None` when it may go ahead.
///
/// `before` is the slice now, `after` what the replace writes, `quarantined`
/// the records of the run that went to quarantine instead, `paused` whether
/// the platform reported the accounts paused.
pub fn decide(
    before: Totals,
    after: Totals,
    quarantined: u64,
    paused: bool,
    limits: &ShrinkLimits,
) -> Option<String> {
    if paused || before.rows == 0 {
        return None;
    }
    if after.rows == 0 && quarantined > 0 {
        return Some(format!(
            "every record was quarantined ({quarantined}): the replace would write nothing \
             and remove the slice's {} rows",
            before.rows
        ));
    }
    let removed_rows = before.rows.saturating_sub(after.rows);
    #[allow(clippy::cast_precision_loss)]
    let row_drop = removed_rows as f64 / before.rows as f64;
    if row_drop > limits.max_row_drop {
        return Some(format!(
            "the replace would remove {removed_rows} of the slice's {} rows ({:.0}%), more than \
             shrink_max_row_drop = {}",
            before.rows,
            row_drop * 100.0,
            limits.max_row_drop
        ));
    }
    if before.spend > 0.0 {
        let spend_drop = (before.spend - after.spend).max(0.0) / before.spend;
        if spend_drop > limits.max_spend_drop {
            return Some(format!(
                "the replace would remove {:.2} of the slice's spend {:.2} ({:.0}%), more than \
                 shrink_max_spend_drop = {}",
                before.spend - after.spend,
                before.spend,
                spend_drop * 100.0,
                limits.max_spend_drop
            ));
        }
    }
    None
}

/// Totals of the rows of `batch`.
pub fn batch_totals(table: &TableDef, batch: &RecordBatch) -> Result<Totals> {
    let spend = match money_column(table).and_then(|c| batch.column_by_name(c)) {
        Some(column) => {
            let values = arrow::compute::cast(column, &DataType::Float64)?;
            arrow::compute::sum(values.as_primitive::<Float64Type>()).unwrap_or(0.0)
        }
        None => 0.0,
    };
    Ok(Totals {
        rows: batch.num_rows() as u64,
        spend,
    })
}

/// Totals of one (client, source, date range) slice of `table` now.
pub async fn slice_totals(
    warehouse: &Warehouse,
    table: &'static TableDef,
    client: &str,
    source: Option<&str>,
    (from, to): (NaiveDate, NaiveDate),
) -> Result<Totals> {
    let Ok(delta) = warehouse.open_table(table).await else {
        return Ok(Totals::default());
    };
    if delta.version().is_none() {
        return Ok(Totals::default());
    }
    let ctx = SessionContext::new();
    let day = |d: NaiveDate| lit(ScalarValue::Date32(Some(date_to_epoch_day(d))));
    let mut predicate = col(CLIENT_ID)
        .eq(lit(client))
        .and(col(DATE).gt_eq(day(from)))
        .and(col(DATE).lt_eq(day(to)));
    if let (Some(column), Some(value)) = (table.source_column, source) {
        predicate = predicate.and(col(column).eq(lit(value)));
    }
    let spend = match money_column(table) {
        Some(c) => sum(cast(col(c), DataType::Float64)),
        None => sum(lit(0.0)),
    };
    let batches = ctx
        .read_table(delta.table_provider().await?)?
        .filter(predicate)?
        .aggregate(
            vec![],
            vec![count(lit(1)).alias("rows"), spend.alias("spend")],
        )?
        .collect()
        .await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(Totals::default());
    };
    let rows = batch.column(0).as_primitive::<Int64Type>().value(0);
    let spend = batch.column(1).as_primitive::<Float64Type>();
    Ok(Totals {
        rows: u64::try_from(rows).unwrap_or(0),
        spend: if spend.is_null(0) {
            0.0
        } else {
            spend.value(0)
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: u64, spend: f64) -> Totals {
        Totals { rows, spend }
    }

    #[test]
    fn most_of_a_slice_disappearing_is_held() {
        let limits = ShrinkLimits::default();
        assert!(decide(t(10, 100.0), t(0, 0.0), 0, false, &limits).is_some());
        assert!(decide(t(10, 100.0), t(4, 40.0), 0, false, &limits).is_some());
        // Rows stay, but spend falls by 90%.
        let why = decide(t(10, 100.0), t(10, 10.0), 0, false, &limits).unwrap();
        assert!(why.contains("shrink_max_spend_drop"), "{why}");
        // Everything quarantined, even with the drop limits off.
        let off = ShrinkLimits {
            max_row_drop: 1.0,
            max_spend_drop: 1.0,
        };
        let why = decide(t(10, 100.0), t(0, 0.0), 10, false, &off).unwrap();
        assert!(why.contains("every record was quarantined"), "{why}");
        assert!(decide(t(10, 100.0), t(0, 0.0), 0, false, &off).is_none());
    }

    #[test]
    fn small_changes_empty_slices_and_paused_accounts_pass() {
        let limits = ShrinkLimits::default();
        assert!(decide(t(10, 100.0), t(6, 60.0), 0, false, &limits).is_none());
        assert!(decide(t(10, 100.0), t(20, 300.0), 0, false, &limits).is_none());
        assert!(decide(t(0, 0.0), t(0, 0.0), 0, false, &limits).is_none());
        assert!(decide(t(0, 0.0), t(0, 0.0), 5, false, &limits).is_none());
        assert!(decide(t(10, 100.0), t(0, 0.0), 0, true, &limits).is_none());
    }
}
