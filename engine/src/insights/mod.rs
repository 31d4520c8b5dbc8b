//! Campaign insights: forecasts, anomalies and budget advice over the
//! metric layer's daily series.
//!
//! The models are pure functions over `f64` series ([`forecast`],
//! [`anomaly`], [`budget`], and the data-quality checks in [`quality`]);
//! [`sql`] makes them the table functions `forecast(...)`,
//! `anomalies(...)`, `budget_advice(...)` and `data_quality(...)`, registered
//! in each caller's session beside `metric_query(...)`. Their series come
//! from a metric query run in that session, so they see exactly the rows
//! the caller may see, and their plans run under the query's deadline,
//! memory pool and cancellation like any other statement.

pub mod anomaly;
pub mod budget;
pub mod forecast;
pub mod quality;
pub mod sql;

use std::collections::BTreeMap;

use chrono::NaiveDate;

use crate::semantic::{Cell, MetricResult};

/// The most series one call models: past it the call is refused, naming
/// the count (fewer dimensions or a filter around a narrower call help).
pub const MAX_SERIES: usize = 10_000;

/// The daily values of one dimension key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    /// The key's dimension values, in the order asked.
    pub(crate) key: Vec<Option<String>>,
    /// Per metric asked, one value per day of the range (0 for a day
    /// without rows).
    pub(crate) values: Vec<Vec<f64>>,
}

/// The answer of a daily metric query (dimensions, then `date`, then the
/// metrics) as one dense series per dimension key, in key order.
pub(crate) fn daily_series(
    result: &MetricResult,
    dimensions: &[String],
    metrics: &[String],
    start: NaiveDate,
    end: NaiveDate,
) -> std::result::Result<Vec<Series>, String> {
    let days = usize::try_from((end - start).num_days() + 1).unwrap_or(0);
    let column = |name: &str| {
        result
            .column(name)
            .ok_or_else(|| format!("the metric answer has no column '{name}'"))
    };
    let dims: Vec<usize> = dimensions
        .iter()
        .map(|d| column(d))
        .collect::<std::result::Result<_, _>>()?;
    let date = column("date")?;
    let values: Vec<usize> = metrics
        .iter()
        .map(|m| column(m))
        .collect::<std::result::Result<_, _>>()?;
    let mut series: BTreeMap<Vec<Option<String>>, Vec<Vec<f64>>> = BTreeMap::new();
    for row in &result.rows {
        let Cell::Date(day) = row[date] else { continue };
        let Ok(offset) = usize::try_from((day - start).num_days()) else {
            continue;
        };
        if offset >= days {
            continue;
        }
        let key: Vec<Option<String>> = dims
            .iter()
            .map(|&i| match &row[i] {
                Cell::Text(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        if !series.contains_key(&key) && series.len() == MAX_SERIES {
            return Err(format!(
                "more than {MAX_SERIES} series; ask for fewer dimensions or a narrower filter"
            ));
        }
        let slots = series
            .entry(key)
            .or_insert_with(|| vec![vec![0.0; days]; values.len()]);
        for (slot, &i) in slots.iter_mut().zip(&values) {
            slot[offset] += row[i].as_f64().unwrap_or(0.0);
        }
    }
    Ok(series
        .into_iter()
        .map(|(key, values)| Series { key, values })
        .collect())
}

#[cfg(test)]
mod tests;
