//! Answers a [`MetricQuery`]: validates it, sums the base measures it needs
//! per group with one SQL statement run under the caller's scope (so the
//! tenancy filter sits at the scan as for any SQL), then evaluates the
//! metric expressions over those sums, joins the comparison period, fills
//! the date spine, orders and limits.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Date32Type, Float64Type};
use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};
use chrono_tz::Tz;

use super::expr::{MetricExpr, Op};
use super::range::{Shift, comparison_range, resolve_range};
use super::{
    Comparison, Dimension, Filter, FilterOp, Grain, MetricDef, MetricQuery, MetricsConfig,
    dimension, measure, metrics_for,
};
use crate::error::{Error, Result};
use crate::{Engine, Scope};

/// One value of a result.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// No value (a ratio with a zero denominator, a missing dimension).
    Null,
    /// A dimension value.
    Text(String),
    /// A date bucket (day, or the first day of the week, month, quarter).
    Date(NaiveDate),
    /// A metric value.
    Number(f64),
}

impl Cell {
    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Number(n) => Some(*n),
            _ => None,
        }
    }
}

/// What a result column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// A text dimension.
    Dimension,
    /// A date dimension.
    Date,
    /// A metric or comparison value.
    Metric,
}

/// One result column.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultColumn {
    /// Its name.
    pub name: String,
    /// What it holds.
    pub kind: ColumnKind,
}

/// The latest landed date of one source table for one client.
#[derive(Debug, Clone, PartialEq)]
pub struct FreshnessRow {
    /// The table.
    pub table: String,
    /// The client.
    pub client_id: String,
    /// The latest date with rows.
    pub latest_date: Option<NaiveDate>,
}

/// The answer to a metric query.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricResult {
    /// Columns: dimensions, then each metric (and its `_prev`, `_delta`,
    /// `_pct` with a comparison).
    pub columns: Vec<ResultColumn>,
    /// The rows.
    pub rows: Vec<Vec<Cell>>,
    /// The metrics over the whole range (dimension cells are `Null`),
    /// computed from the total sums, never from the rows' ratios.
    pub totals: Vec<Cell>,
    /// The resolved range.
    pub start: NaiveDate,
    /// Its last day.
    pub end: NaiveDate,
    /// The resolved comparison period.
    pub comparison: Option<(NaiveDate, NaiveDate)>,
    /// The Delta version of every table read.
    pub table_versions: BTreeMap<String, Option<u64>>,
    /// Latest landed date per source table and client.
    pub freshness: Vec<FreshnessRow>,
    /// Things the caller should know (data not landed yet, …).
    pub warnings: Vec<String>,
}

impl MetricResult {
    /// The index of a column.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Approximate memory held, for the cache's weigher.
    pub fn approximate_bytes(&self) -> usize {
        let cell = |c: &Cell| {
            std::mem::size_of::<Cell>()
                + match c {
                    Cell::Text(s) => s.capacity(),
                    _ => 0,
                }
        };
        let rows: usize = self
            .rows
            .iter()
            .map(|r| std::mem::size_of::<Vec<Cell>>() + r.iter().map(cell).sum::<usize>())
            .sum();
        std::mem::size_of::<Self>()
            + rows
            + self.totals.iter().map(cell).sum::<usize>()
            + self
                .columns
                .iter()
                .map(|c| c.name.capacity() + 32)
                .sum::<usize>()
            + self
                .freshness
                .iter()
                .map(|f| f.table.capacity() + f.client_id.capacity() + 48)
                .sum::<usize>()
            + self.warnings.iter().map(String::capacity).sum::<usize>()
            + self
                .table_versions
                .keys()
                .map(|k| k.capacity() + 48)
                .sum::<usize>()
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidSql(message)
}

/// A validated query, with its dates resolved.
#[derive(Debug)]
pub(crate) struct Prepared {
    metrics: Vec<MetricDef>,
    dims: Vec<&'static Dimension>,
    filter: Option<Filter>,
    start: NaiveDate,
    end: NaiveDate,
    comparison: Option<(NaiveDate, NaiveDate, Shift)>,
    order_by: Vec<(usize, bool)>,
    limit: Option<usize>,
    zero_fill: bool,
    currency: Option<String>,
    tables: Vec<&'static str>,
    columns: Vec<ResultColumn>,
}

impl Prepared {
    /// The tables the query reads (with `fx_rates` when converting).
    pub(crate) fn tables(&self) -> Vec<&'static str> {
        let mut t = self.tables.clone();
        if self.currency.is_some() {
            t.push("fx_rates");
        }
        t
    }

    /// The resolved range: its first and last day.
    pub(crate) fn range(&self) -> (NaiveDate, NaiveDate) {
        (self.start, self.end)
    }

    /// The columns of the answer.
    pub(crate) fn columns(&self) -> &[ResultColumn] {
        &self.columns
    }

    /// The normalized question: relative dates resolved, names in order.
    pub(crate) fn normalized(&self) -> String {
        let names: Vec<&str> = self.metrics.iter().map(|m| m.name.as_str()).collect();
        let exprs: Vec<&str> = self.metrics.iter().map(|m| m.expression.as_str()).collect();
        let dims: Vec<&str> = self.dims.iter().map(|d| d.name).collect();
        format!(
            "metrics={names:?} exprs={exprs:?} dims={dims:?} range={}..{} cmp={:?} filter={:?} order={:?} limit={:?} fill={} currency={:?}",
            self.start,
            self.end,
            self.comparison,
            self.filter,
            self.order_by,
            self.limit,
            self.zero_fill,
            self.currency
        )
    }
}

fn names<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items.into_iter().collect::<Vec<_>>().join(", ")
}

/// Validates `query` for a caller in `scope`; relative ranges are resolved
/// at `now` in the query's (or the client's) time zone.
pub(crate) fn prepare(
    query: &MetricQuery,
    scope: &Scope,
    config: &MetricsConfig,
    now: DateTime<Utc>,
) -> Result<Prepared> {
    let available = metrics_for(config, scope);
    if query.metrics.is_empty() {
        return Err(invalid(format!(
            "no metric asked for (metrics: {})",
            names(available.iter().map(|m| m.name.as_str()))
        )));
    }
    let mut metrics = Vec::new();
    for name in &query.metrics {
        let Some(def) = available.iter().find(|m| &m.name == name) else {
            return Err(invalid(format!(
                "unknown metric '{name}' (metrics: {})",
                names(available.iter().map(|m| m.name.as_str()))
            )));
        };
        if metrics.iter().any(|m: &MetricDef| &m.name == name) {
            return Err(invalid(format!("metric '{name}' is asked for twice")));
        }
        metrics.push(def.clone());
    }
    let mut tables: Vec<&'static str> = metrics.iter().flat_map(MetricDef::tables).collect();
    tables.sort_unstable();
    tables.dedup();

    let mut dims = Vec::new();
    for name in &query.dimensions {
        let dim = known_dimension(name, &tables)?;
        if dims.iter().any(|d: &&Dimension| d.name == dim.name) {
            return Err(invalid(format!("dimension '{name}' is asked for twice")));
        }
        dims.push(dim);
    }
    if let Some(filter) = &query.filter {
        check_filter(filter, &tables)?;
    }

    let tz: Tz = match (&query.time_zone, scope) {
        (Some(tz), _) => tz.parse().map_err(|_| {
            invalid(format!(
                "unknown time zone '{tz}' (use an IANA name such as Europe/Berlin)"
            ))
        })?,
        (None, Scope::Clients(ids)) if ids.len() == 1 => ids
            .iter()
            .next()
            .and_then(|c| config.time_zone(c))
            .unwrap_or(Tz::UTC),
        (None, _) => Tz::UTC,
    };
    let (start, end) = resolve_range(&query.range, now, tz).map_err(invalid)?;
    let comparison = query
        .comparison
        .map(|c: Comparison| comparison_range(start, end, c));

    let currency = match &query.reporting_currency {
        Some(c) if c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase()) => Some(c.clone()),
        Some(c) => {
            return Err(invalid(format!(
                "reporting currency '{c}' is not an ISO 4217 code (three capital letters, e.g. EUR)"
            )));
        }
        None => None,
    };

    let mut columns: Vec<ResultColumn> = dims
        .iter()
        .map(|d| ResultColumn {
            name: d.name.to_string(),
            kind: if d.grain.is_some() {
                ColumnKind::Date
            } else {
                ColumnKind::Dimension
            },
        })
        .collect();
    for m in &metrics {
        let mut push = |name: String| {
            columns.push(ResultColumn {
                name,
                kind: ColumnKind::Metric,
            });
        };
        push(m.name.clone());
        if comparison.is_some() {
            for suffix in ["prev", "delta", "pct"] {
                push(format!("{}_{suffix}", m.name));
            }
        }
    }
    let mut order_by = Vec::new();
    for o in &query.order_by {
        let Some(i) = columns.iter().position(|c| c.name == o.column) else {
            return Err(invalid(format!(
                "cannot order by '{}': not a result column (columns: {})",
                o.column,
                names(columns.iter().map(|c| c.name.as_str()))
            )));
        };
        order_by.push((i, o.descending));
    }
    let date_dims = dims.iter().filter(|d| d.grain.is_some()).count();
    if query.zero_fill && date_dims != 1 {
        return Err(invalid(format!(
            "a zero-filled date spine needs exactly one date dimension (date, week, month or quarter); the query has {date_dims}"
        )));
    }
    Ok(Prepared {
        metrics,
        dims,
        filter: query.filter.clone(),
        start,
        end,
        comparison,
        order_by,
        limit: query.limit,
        zero_fill: query.zero_fill,
        currency,
        tables,
        columns,
    })
}

fn known_dimension(name: &str, tables: &[&str]) -> Result<&'static Dimension> {
    let Some(dim) = dimension(name) else {
        return Err(invalid(format!(
            "unknown dimension '{name}' (dimensions: {})",
            names(super::DIMENSIONS.iter().map(|d| d.name))
        )));
    };
    for table in tables {
        if dim.column_in(table).is_none() {
            let valid = super::DIMENSIONS
                .iter()
                .filter(|d| tables.iter().all(|t| d.column_in(t).is_some()))
                .map(|d| d.name);
            return Err(invalid(format!(
                "dimension '{name}' is not available for the metrics asked for: table {table} has no such column (dimensions available: {})",
                names(valid)
            )));
        }
    }
    Ok(dim)
}

fn check_filter(filter: &Filter, tables: &[&str]) -> Result<()> {
    match filter {
        Filter::Condition {
            dimension,
            op,
            values,
        } => {
            let dim = known_dimension(dimension, tables)?;
            if dim.grain.is_some() {
                return Err(invalid(format!(
                    "malformed filter: '{dimension}' is a date dimension; restrict dates with the date range"
                )));
            }
            let ok = match op {
                FilterOp::Equals | FilterOp::NotEquals | FilterOp::Contains => values.len() == 1,
                FilterOp::In | FilterOp::NotIn => !values.is_empty(),
            };
            if !ok {
                return Err(invalid(format!(
                    "malformed filter on '{dimension}': {op:?} takes {} value(s), got {}",
                    if matches!(op, FilterOp::In | FilterOp::NotIn) {
                        "one or more"
                    } else {
                        "exactly one"
                    },
                    values.len()
                )));
            }
            Ok(())
        }
        Filter::And(children) | Filter::Or(children) => {
            if children.is_empty() {
                return Err(invalid(
                    "malformed filter: an and/or node needs at least one child".into(),
                ));
            }
            children.iter().try_for_each(|c| check_filter(c, tables))
        }
        Filter::Not(child) => check_filter(child, tables),
    }
}

fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn filter_sql(filter: &Filter, table: &str) -> String {
    match filter {
        Filter::Condition {
            dimension: name,
            op,
            values,
        } => {
            let column = format!(
                "t.{}",
                dimension(name)
                    .and_then(|d| d.column_in(table))
                    .expect("filter validated")
            );
            let list = || {
                values
                    .iter()
                    .map(|v| quote(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            match op {
                FilterOp::Equals => format!("({column} = {})", quote(&values[0])),
                FilterOp::NotEquals => {
                    format!("({column} IS DISTINCT FROM {})", quote(&values[0]))
                }
                FilterOp::In => format!("({column} IN ({}))", list()),
                FilterOp::NotIn => {
                    format!("({column} IS NULL OR {column} NOT IN ({}))", list())
                }
                FilterOp::Contains => format!("(strpos({column}, {}) > 0)", quote(&values[0])),
            }
        }
        Filter::And(children) => format!(
            "({})",
            children
                .iter()
                .map(|c| filter_sql(c, table))
                .collect::<Vec<_>>()
                .join(" AND ")
        ),
        Filter::Or(children) => format!(
            "({})",
            children
                .iter()
                .map(|c| filter_sql(c, table))
                .collect::<Vec<_>>()
                .join(" OR ")
        ),
        Filter::Not(child) => format!("(NOT COALESCE({}, FALSE))", filter_sql(child, table)),
    }
}

fn date_sql(dim: &Dimension, shift: Shift) -> String {
    let base = match shift {
        Shift::None => "t.date".to_string(),
        Shift::Days(n) => format!("(t.date + INTERVAL '{n} days')"),
        Shift::Years(n) => format!("(t.date + INTERVAL '{} months')", 12 * n),
    };
    let unit = match dim.grain.expect("date dimension") {
        Grain::Day => return format!("CAST({base} AS DATE)"),
        Grain::Week => "week",
        Grain::Month => "month",
        Grain::Quarter => "quarter",
    };
    format!("CAST(date_trunc('{unit}', CAST({base} AS TIMESTAMP)) AS DATE)")
}

fn where_sql(p: &Prepared, table: &str, start: NaiveDate, end: NaiveDate) -> String {
    let mut conditions = vec![format!("t.date BETWEEN DATE '{start}' AND DATE '{end}'")];
    if let Some(f) = &p.filter {
        conditions.push(filter_sql(f, table));
    }
    conditions.join(" AND ")
}

fn fx_join(currency: &str) -> String {
    format!(
        "LEFT JOIN fx_rates fx ON fx.date = t.date AND fx.base = t.currency AND fx.quote = {}",
        quote(currency)
    )
}

/// The base measures the query's metrics need.
fn measures_of(p: &Prepared) -> Vec<&'static super::Measure> {
    let names: BTreeSet<String> = p.metrics.iter().flat_map(|m| m.expr.measures()).collect();
    names.iter().filter_map(|n| measure(n)).collect()
}

/// One statement summing every needed measure per group over one period.
fn sums_sql(p: &Prepared, start: NaiveDate, end: NaiveDate, shift: Shift) -> String {
    let measures = measures_of(p);
    let mut parts = Vec::new();
    for table in &p.tables {
        let mut select: Vec<String> = p
            .dims
            .iter()
            .enumerate()
            .map(|(i, d)| match d.grain {
                Some(_) => format!("{} AS d{i}", date_sql(d, shift)),
                None => format!(
                    "CAST(t.{} AS VARCHAR) AS d{i}",
                    d.column_in(table).expect("dimension validated")
                ),
            })
            .collect();
        for m in &measures {
            let value = if m.table != *table {
                "CAST(NULL AS DOUBLE)".to_string()
            } else if let (true, Some(cur)) = (m.money, &p.currency) {
                format!(
                    "CASE WHEN t.currency = {} THEN CAST({} AS DOUBLE) ELSE CAST({} AS DOUBLE) * fx.rate END",
                    quote(cur),
                    m.column,
                    m.column
                )
            } else {
                format!("CAST({} AS DOUBLE)", m.column)
            };
            select.push(format!("{value} AS m_{}", m.name));
        }
        let join = match &p.currency {
            Some(c) if measures.iter().any(|m| m.money && m.table == *table) => fx_join(c),
            _ => String::new(),
        };
        parts.push(format!(
            "SELECT {} FROM {table} t {join} WHERE {}",
            select.join(", "),
            where_sql(p, table, start, end)
        ));
    }
    let dims: Vec<String> = (0..p.dims.len()).map(|i| format!("d{i}")).collect();
    let mut outer = dims.clone();
    outer.extend(
        measures
            .iter()
            .map(|m| format!("sum(u.m_{0}) AS m_{0}", m.name)),
    );
    let group = if dims.is_empty() {
        String::new()
    } else {
        format!(" GROUP BY {}", dims.join(", "))
    };
    format!(
        "SELECT {} FROM ({}) u{group}",
        outer.join(", "),
        parts.join(" UNION ALL ")
    )
}

type Key = Vec<Option<String>>;
type Sums = BTreeMap<&'static str, f64>;

/// Where the statements of a metric query run: the engine under a caller's
/// scope, or a session that already holds the caller's scoped tables (the
/// `metric_query` SQL table function).
pub(crate) enum Source<'a> {
    /// Plan each statement with [`Engine::plan`] for `scope`.
    Engine(&'a Engine, &'a Scope),
    /// Plan each statement in this (already scoped) session.
    Session(&'a datafusion::execution::context::SessionState),
}

async fn collect(
    src: &Source<'_>,
    sql: &str,
    versions: &mut BTreeMap<String, Option<u64>>,
) -> Result<Vec<RecordBatch>> {
    tracing::debug!(sql, "metric query statement");
    match src {
        Source::Engine(engine, scope) => {
            let (batches, read) = engine.collect_sql(scope, sql).await?;
            versions.extend(read);
            Ok(batches)
        }
        Source::Session(state) => {
            let plan = state
                .create_logical_plan(sql)
                .await
                .map_err(Error::from_planning)?;
            datafusion::dataframe::DataFrame::new((*state).clone(), plan)
                .collect()
                .await
                .map_err(Error::from_execution)
        }
    }
}

fn text_at(array: &dyn Array, row: usize) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    match array.data_type() {
        DataType::Date32 => Some(
            array
                .as_primitive::<Date32Type>()
                .value_as_date(row)
                .map(|d| d.to_string())
                .unwrap_or_default(),
        ),
        DataType::Utf8 => Some(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Some(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Some(array.as_string_view().value(row).to_string()),
        other => Some(format!("<{other}>")),
    }
}

async fn sums(
    src: &Source<'_>,
    p: &Prepared,
    (start, end, shift): (NaiveDate, NaiveDate, Shift),
    versions: &mut BTreeMap<String, Option<u64>>,
) -> Result<BTreeMap<Key, Sums>> {
    let measures = measures_of(p);
    let batches = collect(src, &sums_sql(p, start, end, shift), versions).await?;
    let mut out = BTreeMap::new();
    let n = p.dims.len();
    for batch in &batches {
        for row in 0..batch.num_rows() {
            let key: Key = (0..n)
                .map(|i| text_at(batch.column(i).as_ref(), row))
                .collect();
            let mut sums = Sums::new();
            for (j, m) in measures.iter().enumerate() {
                let col = batch.column(n + j);
                let v = col
                    .as_primitive_opt::<Float64Type>()
                    .and_then(|a| (!a.is_null(row)).then(|| a.value(row)));
                sums.insert(m.name, v.unwrap_or(0.0));
            }
            out.insert(key, sums);
        }
    }
    Ok(out)
}

fn eval(expr: &MetricExpr, sums: &Sums) -> Option<f64> {
    match expr {
        MetricExpr::Number(n) => Some(*n),
        MetricExpr::Measure(m) => Some(sums.get(m.as_str()).copied().unwrap_or(0.0)),
        MetricExpr::Neg(e) => eval(e, sums).map(|v| -v),
        MetricExpr::Binary(a, op, b) => {
            let (a, b) = (eval(a, sums)?, eval(b, sums)?);
            match op {
                Op::Add => Some(a + b),
                Op::Sub => Some(a - b),
                Op::Mul => Some(a * b),
                Op::Div => (b != 0.0).then(|| a / b),
            }
        }
    }
}

fn add(total: &mut Sums, sums: &Sums) {
    for (k, v) in sums {
        *total.entry(k).or_insert(0.0) += v;
    }
}

fn metric_cells(p: &Prepared, cur: &Sums, prev: Option<&Sums>) -> Vec<Cell> {
    let num = |v: Option<f64>| v.map_or(Cell::Null, Cell::Number);
    let mut cells = Vec::new();
    for m in &p.metrics {
        let c = eval(&m.expr, cur);
        cells.push(num(c));
        if p.comparison.is_some() {
            let empty = Sums::new();
            let pv = eval(&m.expr, prev.unwrap_or(&empty));
            let delta = c.zip(pv).map(|(c, p)| c - p);
            let pct = delta.zip(pv).and_then(|(d, p)| (p != 0.0).then(|| d / p));
            cells.extend([num(pv), num(delta), num(pct)]);
        }
    }
    cells
}

/// The first day of every bucket of `grain` that meets `start..=end`.
fn buckets(grain: Grain, start: NaiveDate, end: NaiveDate) -> Vec<NaiveDate> {
    let first = match grain {
        Grain::Day => start,
        Grain::Week => start - Days::new(u64::from(start.weekday().num_days_from_monday())),
        Grain::Month => start.with_day(1).expect("day 1"),
        Grain::Quarter => NaiveDate::from_ymd_opt(start.year(), (start.month() - 1) / 3 * 3 + 1, 1)
            .expect("quarter start"),
    };
    let mut out = Vec::new();
    let mut d = first;
    while d <= end {
        out.push(d);
        d = match grain {
            Grain::Day => d + Days::new(1),
            Grain::Week => d + Days::new(7),
            Grain::Month => d + Months::new(1),
            Grain::Quarter => d + Months::new(3),
        };
    }
    out
}

fn compare_cells(a: &Cell, b: &Cell) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Cell::Number(x), Cell::Number(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Cell::Text(x), Cell::Text(y)) => x.cmp(y),
        (Cell::Date(x), Cell::Date(y)) => x.cmp(y),
        (Cell::Null, Cell::Null) => Ordering::Equal,
        (Cell::Null, _) => Ordering::Greater,
        (_, Cell::Null) => Ordering::Less,
        _ => Ordering::Equal,
    }
}

/// Runs a prepared query under `scope`.
pub(crate) async fn run(engine: &Engine, scope: &Scope, p: &Prepared) -> Result<MetricResult> {
    run_on(&Source::Engine(engine, scope), p).await
}

/// Runs a prepared query, its statements planned by `src`.
pub(crate) async fn run_on(src: &Source<'_>, p: &Prepared) -> Result<MetricResult> {
    let mut versions = BTreeMap::new();
    let current = (p.start, p.end, Shift::None);
    check_currencies(src, p, &mut versions).await?;
    let cur = sums(src, p, current, &mut versions).await?;
    let prev = match p.comparison {
        Some(period) => Some(sums(src, p, period, &mut versions).await?),
        None => None,
    };

    let mut keys: BTreeSet<Key> = cur.keys().cloned().collect();
    if let Some(prev) = &prev {
        keys.extend(prev.keys().cloned());
    }
    if p.zero_fill {
        let (i, grain) = p
            .dims
            .iter()
            .enumerate()
            .find_map(|(i, d)| d.grain.map(|g| (i, g)))
            .expect("validated: one date dimension");
        let mut others: BTreeSet<Key> = keys
            .iter()
            .map(|k| {
                let mut k = k.clone();
                k[i] = None;
                k
            })
            .collect();
        if others.is_empty() && p.dims.len() == 1 {
            others.insert(vec![None]);
        }
        for other in others {
            for day in buckets(grain, p.start, p.end) {
                let mut k = other.clone();
                k[i] = Some(day.to_string());
                keys.insert(k);
            }
        }
    }

    let empty = Sums::new();
    let mut total_cur = Sums::new();
    let mut total_prev = Sums::new();
    cur.values().for_each(|s| add(&mut total_cur, s));
    if let Some(prev) = &prev {
        prev.values().for_each(|s| add(&mut total_prev, s));
    }
    let mut rows: Vec<Vec<Cell>> = Vec::with_capacity(keys.len());
    for key in &keys {
        let mut row: Vec<Cell> = key
            .iter()
            .zip(&p.dims)
            .map(|(v, d)| match (v, d.grain) {
                (None, _) => Cell::Null,
                (Some(v), Some(_)) => v.parse().map_or(Cell::Null, Cell::Date),
                (Some(v), None) => Cell::Text(v.clone()),
            })
            .collect();
        let c = cur.get(key).unwrap_or(&empty);
        let pv = prev.as_ref().map(|prev| prev.get(key).unwrap_or(&empty));
        row.extend(metric_cells(p, c, pv));
        rows.push(row);
    }
    if !p.order_by.is_empty() {
        rows.sort_by(|a, b| {
            for (i, desc) in &p.order_by {
                let o = compare_cells(&a[*i], &b[*i]);
                let o = if *desc && !matches!((&a[*i], &b[*i]), (Cell::Null, _) | (_, Cell::Null)) {
                    o.reverse()
                } else {
                    o
                };
                if o.is_ne() {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    if let Some(limit) = p.limit {
        rows.truncate(limit);
    }
    let mut totals: Vec<Cell> = p.dims.iter().map(|_| Cell::Null).collect();
    totals.extend(metric_cells(
        p,
        &total_cur,
        p.comparison.is_some().then_some(&total_prev),
    ));

    let freshness = freshness_on(src, &p.tables, &mut versions).await?;
    let mut warnings = Vec::new();
    for f in &freshness {
        match f.latest_date {
            Some(latest) if latest < p.end => warnings.push(format!(
                "{} of client {} has data up to {latest}; the range ends {}",
                f.table, f.client_id, p.end
            )),
            _ => {}
        }
    }
    Ok(MetricResult {
        columns: p.columns.clone(),
        rows,
        totals,
        start: p.start,
        end: p.end,
        comparison: p.comparison.map(|(s, e, _)| (s, e)),
        table_versions: versions,
        freshness,
        warnings,
    })
}

async fn check_currencies(
    src: &Source<'_>,
    p: &Prepared,
    versions: &mut BTreeMap<String, Option<u64>>,
) -> Result<()> {
    let measures = measures_of(p);
    let mut periods = vec![(p.start, p.end)];
    if let Some((s, e, _)) = p.comparison {
        periods.push((s, e));
    }
    let money_tables: BTreeSet<&str> = measures
        .iter()
        .filter(|m| m.money)
        .map(|m| m.table)
        .collect();
    if money_tables.is_empty()
        || (p.currency.is_none() && p.dims.iter().any(|d| d.name == "currency"))
    {
        return Ok(());
    }
    let mut parts = Vec::new();
    for table in &money_tables {
        for (start, end) in &periods {
            parts.push(match &p.currency {
                Some(c) => format!(
                    "SELECT CAST(t.currency AS VARCHAR) AS currency, t.date AS date FROM {table} t {} WHERE {} AND t.currency <> {} AND fx.rate IS NULL",
                    fx_join(c),
                    where_sql(p, table, *start, *end),
                    quote(c)
                ),
                None => format!(
                    "SELECT CAST(t.currency AS VARCHAR) AS currency, t.date AS date FROM {table} t WHERE {}",
                    where_sql(p, table, *start, *end)
                ),
            });
        }
    }
    // Each currency found, with the first and last date it lacks a rate
    // on and how many such dates (for a conversion), so the error names
    // what to load.
    let sql = format!(
        "SELECT currency, min(date) AS first, max(date) AS last, count(DISTINCT date) AS days \
         FROM ({}) c GROUP BY currency ORDER BY currency",
        parts.join(" UNION ALL ")
    );
    let batches = collect(src, &sql, versions).await?;
    let mut found: Vec<String> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for b in &batches {
        let days = b
            .column(3)
            .as_primitive_opt::<arrow::datatypes::Int64Type>();
        for r in 0..b.num_rows() {
            let Some(currency) = text_at(b.column(0).as_ref(), r) else {
                continue;
            };
            let first = text_at(b.column(1).as_ref(), r).unwrap_or_default();
            let last = text_at(b.column(2).as_ref(), r).unwrap_or_default();
            let n = days.map_or(0, |d| d.value(r));
            let pair = match &p.currency {
                Some(c) => format!("{currency} to {c}"),
                None => currency.clone(),
            };
            missing.push(match n {
                1 => format!("{pair} on {first}"),
                n => format!("{pair} on {n} dates from {first} to {last}"),
            });
            found.push(currency);
        }
    }
    match &p.currency {
        Some(c) if !found.is_empty() => Err(invalid(format!(
            "cannot convert to reporting currency {c}: fx_rates has no rate for {} (load rates with \
             `adlake-ingest fx` or `adlake-ingest file --table fx_rates`; a day without a \
             published rate takes the latest earlier one only within the configured age)",
            missing.join("; ")
        ))),
        None if found.len() > 1 => Err(invalid(format!(
            "the money measures mix currencies {}: set a reporting currency (converted through fx_rates) or group by the 'currency' dimension",
            found.join(", ")
        ))),
        _ => Ok(()),
    }
}

/// The latest landed date per client of each table, under `scope`.
pub(crate) async fn freshness(
    engine: &Engine,
    scope: &Scope,
    tables: &[&str],
    versions: &mut BTreeMap<String, Option<u64>>,
) -> Result<Vec<FreshnessRow>> {
    freshness_on(&Source::Engine(engine, scope), tables, versions).await
}

async fn freshness_on(
    src: &Source<'_>,
    tables: &[&str],
    versions: &mut BTreeMap<String, Option<u64>>,
) -> Result<Vec<FreshnessRow>> {
    let mut out = Vec::new();
    for table in tables {
        let sql = format!(
            "SELECT client_id, max(date) AS latest FROM {table} GROUP BY client_id ORDER BY client_id"
        );
        for batch in collect(src, &sql, versions).await? {
            for row in 0..batch.num_rows() {
                out.push(FreshnessRow {
                    table: (*table).to_string(),
                    client_id: text_at(batch.column(0).as_ref(), row).unwrap_or_default(),
                    latest_date: text_at(batch.column(1).as_ref(), row)
                        .and_then(|d| d.parse().ok()),
                });
            }
        }
    }
    Ok(out)
}
