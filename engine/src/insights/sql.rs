//! The insight models as SQL table functions, scoped to the caller.
//!
//! ```sql
//! SELECT * FROM forecast('spend', 'platform,campaign_id', 30);
//! SELECT * FROM forecast('conversions', '', 14, 'interval=0.9;history_days=180;as_of=2026-10-31');
//! SELECT * FROM anomalies('spend,conversions', 'platform', 'last_14_days');
//! SELECT * FROM anomalies('conversion_value', 'campaign_id', '2026-10-01', '2026-10-31', 'threshold=4');
//! SELECT * FROM budget_advice('platform,campaign_id', 'last_90_days', 5000);
//! SELECT * FROM budget_advice('campaign_id', '2026-08-01', '2026-10-31', 5000, 'value=conversions;max_change=0.3');
//! ```
//!
//! Each is a [`MetricTable`]: a daily metric query (the dimensions asked
//! plus `date`, zero-filled) run in the caller's session when the plan
//! executes, finished by a model. So every series is one the caller may
//! see, the result cache and its version keys apply, and a call over a
//! relative range (or a forecast from yesterday) is never served from the
//! cache on another day.
//!
//! Arguments are literals: text for names, lists (comma-separated) and
//! dates, a number or text for horizons and budgets; options are
//! `key=value` pairs separated by `;`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use chrono::{Days, NaiveDate};
use datafusion::catalog::{TableFunctionImpl, TableProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;

use datafusion::execution::context::SessionState;

use super::{Series, anomaly, budget, daily_series, forecast, quality};
use crate::Scope;
use crate::clock::Clock;
use crate::semantic::sql::{
    Answer, Finish, MetricTable, Prepared, function_error, list, prepare, run_prepared, to_batch,
};
use crate::semantic::{
    Cell, DateRange, MetricKind, MetricQuery, MetricResult, MetricsConfig, dimension, metrics_for,
};

/// The name of the forecast function.
pub const FORECAST: &str = "forecast";
/// The name of the anomaly function.
pub const ANOMALIES: &str = "anomalies";
/// The name of the budget advice function.
pub const BUDGET_ADVICE: &str = "budget_advice";
/// The name of the data-quality function.
pub const DATA_QUALITY: &str = "data_quality";

/// The statement `SELECT * FROM <function>('<arg>', …)`, every argument a
/// text literal (quotes doubled), for surfaces that take typed requests
/// (gRPC) and answer them through the same door as SQL.
pub fn statement(function: &str, args: &[String]) -> String {
    let args: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "''")))
        .collect();
    format!("SELECT * FROM {function}({})", args.join(", "))
}

/// The options every function takes.
const COMMON_OPTIONS: [&str; 2] = ["currency", "time_zone"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Forecast,
    Anomalies,
    BudgetAdvice,
    DataQuality,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Forecast => FORECAST,
            Self::Anomalies => ANOMALIES,
            Self::BudgetAdvice => BUDGET_ADVICE,
            Self::DataQuality => DATA_QUALITY,
        }
    }

    fn usage(self) -> &'static str {
        match self {
            Self::Forecast => {
                "forecast('<metric>', '<dimensions>', <horizon_days> [, 'interval=0.8;history_days=365;as_of=YYYY-MM-DD;currency=XXX;time_zone=Area/City'])"
            }
            Self::Anomalies => {
                "anomalies('<metrics>', '<dimensions>', '<start>', '<end>' | '<relative range>' [, 'threshold=3;history_days=56;currency=XXX;time_zone=Area/City'])"
            }
            Self::BudgetAdvice => {
                "budget_advice('<dimensions>', '<start>', '<end>' | '<relative range>', <total_daily_budget> [, 'value=conversion_value|conversions;max_change=0.5;current_days=7;currency=XXX;time_zone=Area/City'])"
            }
            Self::DataQuality => {
                "data_quality(['<as_of YYYY-MM-DD>' [, 'lookback_days=56;threshold=4;time_zone=Area/City']])"
            }
        }
    }

    fn error(self, message: impl std::fmt::Display) -> DataFusionError {
        function_error(self.name(), self.usage(), message)
    }
}

/// One insight function for one caller (registered in each caller's
/// session).
#[derive(Debug)]
pub struct InsightFunction {
    kind: Kind,
    scope: Scope,
    config: Arc<MetricsConfig>,
    clock: Clock,
}

impl InsightFunction {
    /// The insight functions for a caller in `scope`, by name; relative
    /// ranges are resolved at `clock`.
    pub fn all(
        scope: &Scope,
        config: &Arc<MetricsConfig>,
        clock: &Clock,
    ) -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
        [
            Kind::Forecast,
            Kind::Anomalies,
            Kind::BudgetAdvice,
            Kind::DataQuality,
        ]
        .into_iter()
        .map(|kind| {
            let function: Arc<dyn TableFunctionImpl> = Arc::new(Self {
                kind,
                scope: scope.clone(),
                config: Arc::clone(config),
                clock: clock.clone(),
            });
            (kind.name(), function)
        })
        .collect()
    }
}

impl TableFunctionImpl for InsightFunction {
    fn call(&self, exprs: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        let args = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| literal(self.kind, i, e))
            .collect::<Result<Vec<_>>>()?;
        let table = match self.kind {
            Kind::Forecast => self.forecast(&args)?,
            Kind::Anomalies => self.anomalies(&args)?,
            Kind::BudgetAdvice => self.budget_advice(&args)?,
            Kind::DataQuality => self.data_quality(&args)?,
        };
        Ok(Arc::new(table))
    }
}

/// A literal argument as text (numbers as written).
fn literal(kind: Kind, i: usize, expr: &Expr) -> Result<String> {
    match expr {
        Expr::Literal(value, _) if value.is_null() => Ok(String::new()),
        Expr::Literal(value, _) => Ok(match value.try_as_str() {
            Some(Some(s)) => s.to_string(),
            _ => value.to_string(),
        }),
        other => Err(kind.error(format!("argument {} must be a literal, got {other}", i + 1))),
    }
}

/// `key=value` options, each key one of `valid` (or the common ones).
struct Options {
    kind: Kind,
    values: BTreeMap<String, String>,
}

impl Options {
    fn parse(kind: Kind, text: Option<&String>, valid: &[&str]) -> Result<Self> {
        let mut values = BTreeMap::new();
        for option in text.into_iter().flat_map(|t| t.split(';')) {
            let option = option.trim();
            if option.is_empty() {
                continue;
            }
            let Some((key, value)) = option.split_once('=') else {
                return Err(kind.error(format!("option '{option}' is not key=value")));
            };
            let key = key.trim();
            if !valid.contains(&key) && !COMMON_OPTIONS.contains(&key) {
                let mut all: Vec<&str> = valid.to_vec();
                all.extend(COMMON_OPTIONS);
                return Err(kind.error(format!(
                    "unknown option '{key}' (valid: {})",
                    all.join(", ")
                )));
            }
            if values
                .insert(key.to_string(), value.trim().to_string())
                .is_some()
            {
                return Err(kind.error(format!("option '{key}' is given twice")));
            }
        }
        Ok(Self { kind, values })
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    fn number(&self, key: &str, default: f64, low: f64, high: f64) -> Result<f64> {
        let Some(text) = self.text(key) else {
            return Ok(default);
        };
        number(self.kind, key, text, low, high)
    }

    fn days(&self, key: &str, default: u64, low: u64, high: u64) -> Result<u64> {
        let Some(text) = self.text(key) else {
            return Ok(default);
        };
        days(self.kind, key, text, low, high)
    }

    fn date(&self, key: &str) -> Result<Option<NaiveDate>> {
        self.text(key)
            .map(|t| {
                t.parse().map_err(|_| {
                    self.kind
                        .error(format!("{key} '{t}' is not a date (YYYY-MM-DD)"))
                })
            })
            .transpose()
    }

    /// The daily metric question over `range`: `dimensions` and `date`,
    /// zero-filled, with the currency and time zone options.
    fn query(&self, metrics: Vec<String>, dimensions: &[String], range: DateRange) -> MetricQuery {
        let mut by = dimensions.to_vec();
        by.push("date".into());
        let mut query = MetricQuery::new(metrics, range).with_dimensions(by);
        query.zero_fill = true;
        query.reporting_currency = self.text("currency").map(str::to_string);
        query.time_zone = self.text("time_zone").map(str::to_string);
        query
    }
}

/// The name of a relative range (its answer changes with the clock).
fn relative_name(range: &DateRange) -> Option<String> {
    match range {
        DateRange::Relative(name) => Some(name.clone()),
        DateRange::Absolute { .. } => None,
    }
}

/// `date` moved by `days` (back when negative), or an error naming it:
/// a date near chrono's limits must not panic the planner.
fn shifted(kind: Kind, date: NaiveDate, days: i64) -> Result<NaiveDate> {
    let moved = if days < 0 {
        date.checked_sub_days(Days::new(days.unsigned_abs()))
    } else {
        date.checked_add_days(Days::new(days.unsigned_abs()))
    };
    moved.ok_or_else(|| kind.error(format!("{date} moved by {days} days is not a date")))
}

fn number(kind: Kind, what: &str, text: &str, low: f64, high: f64) -> Result<f64> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (low..=high).contains(&v) => Ok(v),
        _ => Err(kind.error(format!(
            "{what} must be a number from {low} to {high}, got '{text}'"
        ))),
    }
}

fn days(kind: Kind, what: &str, text: &str, low: u64, high: u64) -> Result<u64> {
    match text.trim().parse::<u64>() {
        Ok(v) if (low..=high).contains(&v) => Ok(v),
        _ => Err(kind.error(format!(
            "{what} must be a whole number of days from {low} to {high}, got '{text}'"
        ))),
    }
}

/// The dimensions of the series: any of the metric layer's except a date
/// grain (the series are daily).
fn series_dimensions(kind: Kind, text: &str) -> Result<Vec<String>> {
    let dims = list(text);
    for name in &dims {
        if dimension(name).is_some_and(|d| d.grain.is_some()) {
            return Err(kind.error(format!(
                "'{name}' is a date grain; the series are daily, so leave it out of the dimensions"
            )));
        }
    }
    Ok(dims)
}

/// A date range argument at `args[at]`: two dates, or one relative range;
/// the arguments after it.
fn date_range(kind: Kind, args: &[String], at: usize) -> Result<(DateRange, usize)> {
    let Some(first) = args.get(at) else {
        return Err(kind.error("a date range is missing"));
    };
    match first.trim().parse::<NaiveDate>() {
        Ok(start) => {
            let Some(end) = args.get(at + 1) else {
                return Err(kind.error(format!("start date {start} needs an end date")));
            };
            let end: NaiveDate = end
                .trim()
                .parse()
                .map_err(|_| kind.error(format!("end '{end}' is not a date (YYYY-MM-DD)")))?;
            Ok((DateRange::Absolute { start, end }, at + 2))
        }
        Err(_) => Ok((DateRange::Relative(first.trim().to_string()), at + 1)),
    }
}

impl InsightFunction {
    /// Fails unless every metric is additive (a base measure): a forecast
    /// of a ratio is the ratio of forecasts of its parts, not a series of
    /// its own.
    fn additive(&self, metrics: &[String]) -> Result<()> {
        let defs = metrics_for(&self.config, &self.scope);
        for name in metrics {
            if let Some(def) = defs.iter().find(|m| &m.name == name)
                && def.kind != MetricKind::Base
            {
                return Err(self.kind.error(format!(
                    "'{name}' is not additive ({}); model the sums it is made of (spend, impressions, clicks, conversions, conversion_value, sessions, revenue, …)",
                    def.expression
                )));
            }
        }
        Ok(())
    }

    fn prepare(&self, query: &MetricQuery) -> Result<crate::semantic::sql::Prepared> {
        prepare(query, &self.scope, &self.config, self.clock.now())
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    fn forecast(&self, args: &[String]) -> Result<MetricTable> {
        let kind = Kind::Forecast;
        if !(3..=4).contains(&args.len()) {
            return Err(kind.error(format!("takes 3 or 4 arguments, got {}", args.len())));
        }
        let metric = args[0].trim().to_string();
        if metric.is_empty() || metric.contains(',') {
            return Err(kind.error("the first argument is one metric"));
        }
        let metrics = vec![metric];
        self.additive(&metrics)?;
        let dims = series_dimensions(kind, &args[1])?;
        let horizon = days(
            kind,
            "horizon_days",
            &args[2],
            1,
            forecast::MAX_HORIZON_DAYS as u64,
        )? as usize;
        let options = Options::parse(kind, args.get(3), &["interval", "history_days", "as_of"])?;
        let level = options.number("interval", 0.8, 0.5, 0.99)?;
        let history = options.days("history_days", 365, 14, 3660)?;
        let (range, relative) = match options.date("as_of")? {
            Some(as_of) => (
                DateRange::Absolute {
                    start: shifted(kind, as_of, 1 - history as i64)?,
                    end: as_of,
                },
                None,
            ),
            None => {
                let name = format!("last_{history}_days");
                (DateRange::Relative(name.clone()), Some(name))
            }
        };
        let prepared = self.prepare(&options.query(metrics.clone(), &dims, range))?;
        let (start, end) = prepared.range();
        // The forecast days must be dates too.
        shifted(kind, end, horizon as i64)?;
        let mut fields = dimension_fields(&dims);
        fields.push(Field::new("date", DataType::Date32, false));
        for name in ["forecast", "lower", "upper"] {
            fields.push(Field::new(name, DataType::Float64, false));
        }
        fields.push(Field::new("model", DataType::Utf8, false));
        let finish = ForecastFinish {
            spec: SeriesSpec {
                kind,
                dims,
                metrics,
                start,
                end,
            },
            horizon,
            level,
        };
        Ok(MetricTable::new(
            Arc::new(Schema::new(fields)),
            prepared,
            relative,
            Arc::new(finish),
        ))
    }

    fn anomalies(&self, args: &[String]) -> Result<MetricTable> {
        let kind = Kind::Anomalies;
        if !(3..=5).contains(&args.len()) {
            return Err(kind.error(format!("takes 3 to 5 arguments, got {}", args.len())));
        }
        let metrics = list(&args[0]);
        if metrics.is_empty() {
            return Err(kind.error("no metric asked for"));
        }
        self.additive(&metrics)?;
        let dims = series_dimensions(kind, &args[1])?;
        let (range, next) = date_range(kind, args, 2)?;
        if args.len() > next + 1 {
            return Err(kind.error("too many arguments after the date range"));
        }
        let options = Options::parse(kind, args.get(next), &["threshold", "history_days"])?;
        let threshold = options.number("threshold", anomaly::DEFAULT_THRESHOLD, 1.0, 50.0)?;
        let history = options.days("history_days", 56, 0, 730)?;
        let relative = relative_name(&range);
        // The days examined, resolved; the series runs from the context
        // before them.
        let (from, end) = self
            .prepare(&options.query(metrics.clone(), &dims, range))?
            .range();
        let start = shifted(kind, from, -(history as i64))?;
        let prepared = self.prepare(&options.query(
            metrics.clone(),
            &dims,
            DateRange::Absolute { start, end },
        ))?;
        let mut fields = dimension_fields(&dims);
        fields.push(Field::new("date", DataType::Date32, false));
        fields.push(Field::new("metric", DataType::Utf8, false));
        for name in ["actual", "expected", "lower", "upper", "score"] {
            fields.push(Field::new(name, DataType::Float64, false));
        }
        fields.push(Field::new("direction", DataType::Utf8, false));
        let finish = AnomalyFinish {
            spec: SeriesSpec {
                kind,
                dims,
                metrics,
                start,
                end,
            },
            from,
            threshold,
        };
        Ok(MetricTable::new(
            Arc::new(Schema::new(fields)),
            prepared,
            relative,
            Arc::new(finish),
        ))
    }

    fn budget_advice(&self, args: &[String]) -> Result<MetricTable> {
        let kind = Kind::BudgetAdvice;
        if !(3..=5).contains(&args.len()) {
            return Err(kind.error(format!("takes 3 to 5 arguments, got {}", args.len())));
        }
        let dims = series_dimensions(kind, &args[0])?;
        let (range, next) = date_range(kind, args, 1)?;
        let Some(total) = args.get(next) else {
            return Err(kind.error("the total daily budget is missing"));
        };
        let total = number(kind, "total_daily_budget", total, 0.0, 1e15)?;
        if args.len() > next + 2 {
            return Err(kind.error("too many arguments after the budget"));
        }
        let options = Options::parse(
            kind,
            args.get(next + 1),
            &["value", "max_change", "current_days"],
        )?;
        let value = match options.text("value").unwrap_or("conversion_value") {
            v @ ("conversion_value" | "conversions") => v.to_string(),
            other => {
                return Err(kind.error(format!(
                    "value is conversion_value or conversions, got '{other}'"
                )));
            }
        };
        let max_change = options.number("max_change", budget::DEFAULT_MAX_CHANGE, 0.0, 10.0)?;
        let current_days = options.days("current_days", 7, 1, 90)?;
        let relative = relative_name(&range);
        let metrics = vec!["spend".to_string(), value];
        let prepared = self.prepare(&options.query(metrics.clone(), &dims, range))?;
        let (start, end) = prepared.range();
        let mut fields = dimension_fields(&dims);
        for name in [
            "current_daily_spend",
            "recommended_daily_spend",
            "current_value",
            "expected_value",
        ] {
            fields.push(Field::new(name, DataType::Float64, false));
        }
        for name in [
            "current_marginal_roas",
            "recommended_marginal_roas",
            "fit_r2",
        ] {
            fields.push(Field::new(name, DataType::Float64, true));
        }
        fields.push(Field::new("note", DataType::Utf8, true));
        let finish = BudgetFinish {
            spec: SeriesSpec {
                kind,
                dims,
                metrics,
                start,
                end,
            },
            total,
            max_change,
            current_days: current_days as usize,
        };
        Ok(MetricTable::new(
            Arc::new(Schema::new(fields)),
            prepared,
            relative,
            Arc::new(finish),
        ))
    }
}

impl InsightFunction {
    fn data_quality(&self, args: &[String]) -> Result<MetricTable> {
        use crate::semantic::{Filter, FilterOp};
        let kind = Kind::DataQuality;
        if args.len() > 2 {
            return Err(kind.error(format!("takes 0 to 2 arguments, got {}", args.len())));
        }
        let options = Options::parse(kind, args.get(1), &["lookback_days", "threshold"])?;
        let lookback = options.days("lookback_days", quality::DEFAULT_LOOKBACK_DAYS, 14, 730)?;
        let threshold = options.number("threshold", quality::DEFAULT_THRESHOLD, 1.0, 50.0)?;
        let daily = |metrics: &[&str], source: Option<&str>, range: DateRange| {
            let mut dims = vec!["client_id".to_string()];
            dims.extend(source.map(str::to_string));
            options.query(
                metrics.iter().map(|m| m.to_string()).collect(),
                &dims,
                range,
            )
        };
        let (as_of, relative) = match args.first().map(|a| a.trim()).filter(|a| !a.is_empty()) {
            Some(text) => (
                text.parse::<NaiveDate>().map_err(|_| {
                    kind.error(format!("as_of '{text}' is not a date (YYYY-MM-DD)"))
                })?,
                None,
            ),
            None => {
                let yesterday = DateRange::Relative("yesterday".into());
                let (day, _) = self.prepare(&daily(&["spend"], None, yesterday))?.range();
                (day, Some("yesterday".to_string()))
            }
        };
        let range = DateRange::Absolute {
            start: shifted(kind, as_of, 1 - lookback as i64)?,
            end: as_of,
        };
        let mut ads = daily(
            &["spend", "clicks", "conversions"],
            Some("currency"),
            range.clone(),
        );
        ads.dimensions.insert(2, "platform".into());
        ads.zero_fill = false;
        let mut paid = daily(&["sessions"], None, range.clone());
        paid.zero_fill = false;
        let medium = |op, value: &str| Filter::Condition {
            dimension: "utm_medium".into(),
            op,
            values: vec![value.into()],
        };
        // GA4's paid channels: a medium with "cp" (cpc, cpm, cpv), "ppc",
        // "paid…" or "retargeting".
        paid.filter = Some(Filter::Or(vec![
            medium(FilterOp::Contains, "cp"),
            medium(FilterOp::Equals, "ppc"),
            medium(FilterOp::Contains, "paid"),
            medium(FilterOp::Contains, "retargeting"),
        ]));
        let mut sessions = daily(&["sessions"], None, range.clone());
        sessions.zero_fill = false;
        let mut orders = daily(&["orders"], None, range);
        orders.zero_fill = false;
        let answer = QualityAnswer {
            ads: self.prepare(&ads)?,
            paid: self.prepare(&paid)?,
            sessions: self.prepare(&sessions)?,
            orders: self.prepare(&orders)?,
            as_of,
            threshold,
        };
        let fields = vec![
            Field::new("client_id", DataType::Utf8, false),
            Field::new("source", DataType::Utf8, false),
            Field::new("date", DataType::Date32, false),
            Field::new("check", DataType::Utf8, false),
            Field::new("severity", DataType::Utf8, false),
            Field::new("detail", DataType::Utf8, false),
        ];
        Ok(MetricTable::of(
            Arc::new(Schema::new(fields)),
            Arc::new(answer),
            relative,
        ))
    }
}

/// The data-quality checks over four daily metric answers.
#[derive(Debug)]
struct QualityAnswer {
    ads: Prepared,
    paid: Prepared,
    sessions: Prepared,
    orders: Prepared,
    as_of: NaiveDate,
    threshold: f64,
}

#[async_trait]
impl Answer for QualityAnswer {
    fn tables(&self) -> Vec<&'static str> {
        let mut tables: Vec<&'static str> = [&self.ads, &self.sessions, &self.orders]
            .iter()
            .flat_map(|p| p.tables())
            .collect();
        tables.sort_unstable();
        tables.dedup();
        tables
    }

    async fn answer(&self, state: &SessionState, schema: &SchemaRef) -> Result<RecordBatch> {
        let external = |e| DataFusionError::External(Box::new(e));
        let ads = run_prepared(state, &self.ads).await.map_err(external)?;
        let mut tracks = quality::tracks(
            &ads,
            Some("platform"),
            "",
            &["spend", "clicks", "conversions"],
        );
        // GA4 and Shopify are checked where the warehouse has them.
        if let Ok(sessions) = run_prepared(state, &self.sessions).await {
            tracks.extend(quality::tracks(&sessions, None, "ga4", &["sessions"]));
        }
        if let Ok(orders) = run_prepared(state, &self.orders).await {
            tracks.extend(quality::tracks(&orders, None, "shopify", &["orders"]));
        }
        let mut paid = BTreeMap::new();
        if let Ok(result) = run_prepared(state, &self.paid).await {
            for t in quality::tracks(&result, None, "ga4", &["sessions"]) {
                for (day, v) in t.days {
                    paid.insert((t.client_id.clone(), day), v[0]);
                }
            }
        }
        tokio::task::yield_now().await;
        let rows: Vec<Vec<Cell>> = quality::check(&tracks, &paid, self.as_of, self.threshold)
            .into_iter()
            .map(|f| {
                vec![
                    Cell::Text(f.client_id),
                    Cell::Text(f.source),
                    Cell::Date(f.date),
                    Cell::Text(f.check.to_string()),
                    Cell::Text(f.severity.name().to_string()),
                    Cell::Text(f.detail),
                ]
            })
            .collect();
        to_batch(schema, &rows)
    }
}

fn dimension_fields(dims: &[String]) -> Vec<Field> {
    dims.iter()
        .map(|d| Field::new(d, DataType::Utf8, true))
        .collect()
}

fn key_cells(series: &Series) -> impl Iterator<Item = Cell> + '_ {
    series.key.iter().map(|k| match k {
        Some(t) => Cell::Text(t.clone()),
        None => Cell::Null,
    })
}

fn finite(v: f64) -> Cell {
    if v.is_finite() {
        Cell::Number(v)
    } else {
        Cell::Null
    }
}

fn model_error(message: String) -> DataFusionError {
    DataFusionError::External(Box::new(crate::error::Error::InvalidSql(message)))
}

/// Which series of a daily answer a model reads.
#[derive(Debug)]
struct SeriesSpec {
    kind: Kind,
    dims: Vec<String>,
    metrics: Vec<String>,
    /// First day of the series.
    start: NaiveDate,
    /// Last day.
    end: NaiveDate,
}

impl SeriesSpec {
    fn series(&self, result: &MetricResult) -> Result<Vec<Series>> {
        daily_series(result, &self.dims, &self.metrics, self.start, self.end)
            .map_err(|m| model_error(format!("{}: {m}", self.kind.name())))
    }
}

#[derive(Debug)]
struct ForecastFinish {
    spec: SeriesSpec,
    horizon: usize,
    level: f64,
}

#[async_trait]
impl Finish for ForecastFinish {
    async fn finish(&self, result: MetricResult, schema: &SchemaRef) -> Result<RecordBatch> {
        let series = self.spec.series(&result)?;
        let mut rows = Vec::with_capacity(series.len() * self.horizon);
        for s in &series {
            let f = forecast::forecast(&s.values[0], self.horizon, self.level);
            for day in 0..self.horizon {
                let mut row: Vec<Cell> = key_cells(s).collect();
                row.push(Cell::Date(self.spec.end + Days::new(day as u64 + 1)));
                row.push(Cell::Number(f.point[day]));
                row.push(Cell::Number(f.lower[day]));
                row.push(Cell::Number(f.upper[day]));
                row.push(Cell::Text(f.model.name().to_string()));
                rows.push(row);
            }
            tokio::task::yield_now().await;
        }
        to_batch(schema, &rows)
    }
}

#[derive(Debug)]
struct AnomalyFinish {
    /// The series, context included.
    spec: SeriesSpec,
    /// First day examined.
    from: NaiveDate,
    threshold: f64,
}

#[async_trait]
impl Finish for AnomalyFinish {
    async fn finish(&self, result: MetricResult, schema: &SchemaRef) -> Result<RecordBatch> {
        let series = self.spec.series(&result)?;
        let from = usize::try_from((self.from - self.spec.start).num_days()).unwrap_or(0);
        let mut rows = Vec::new();
        for s in &series {
            let mut found: Vec<(usize, usize, anomaly::Anomaly)> = Vec::new();
            for (m, values) in s.values.iter().enumerate() {
                found.extend(
                    anomaly::detect(values, from, self.threshold)
                        .into_iter()
                        .map(|a| (a.index, m, a)),
                );
            }
            found.sort_by_key(|(day, m, _)| (*day, *m));
            for (day, m, a) in found {
                let mut row: Vec<Cell> = key_cells(s).collect();
                row.push(Cell::Date(self.spec.start + Days::new(day as u64)));
                row.push(Cell::Text(self.spec.metrics[m].clone()));
                row.extend([a.actual, a.expected, a.lower, a.upper, a.score].map(finite));
                row.push(Cell::Text(a.direction.name().to_string()));
                rows.push(row);
            }
            tokio::task::yield_now().await;
        }
        to_batch(schema, &rows)
    }
}

#[derive(Debug)]
struct BudgetFinish {
    /// `spend` and the value.
    spec: SeriesSpec,
    total: f64,
    max_change: f64,
    current_days: usize,
}

#[async_trait]
impl Finish for BudgetFinish {
    async fn finish(&self, result: MetricResult, schema: &SchemaRef) -> Result<RecordBatch> {
        let series = self.spec.series(&result)?;
        let recent = |values: &[f64]| {
            let n = self.current_days.min(values.len()).max(1);
            values[values.len() - n..].iter().sum::<f64>() / n as f64
        };
        // Each series: its current spend and value, and its curve or why
        // it has none.
        let mut fits = Vec::with_capacity(series.len());
        for s in &series {
            let (spend, value) = (&s.values[0], &s.values[1]);
            let current = recent(spend);
            let fit = if current <= 0.0 {
                Err(format!(
                    "no spend in the last {} days: left as it is",
                    self.current_days
                ))
            } else {
                budget::fit(spend, value)
            };
            fits.push((current, recent(value), fit));
            tokio::task::yield_now().await;
        }
        let fixed: f64 = fits
            .iter()
            .filter(|(_, _, f)| f.is_err())
            .map(|(c, _, _)| c)
            .sum();
        let curves: Vec<budget::Curve> = fits
            .iter()
            .filter_map(|(_, _, f)| f.as_ref().ok().copied())
            .collect();
        let currents: Vec<f64> = fits
            .iter()
            .filter(|(_, _, f)| f.is_ok())
            .map(|(c, _, _)| *c)
            .collect();
        let allocation = budget::allocate(&curves, &currents, self.total - fixed, self.max_change);
        let mut advised = allocation.spend.into_iter();
        let mut rows = Vec::with_capacity(series.len());
        for (s, (current, current_value, fit)) in series.iter().zip(fits) {
            let mut row: Vec<Cell> = key_cells(s).collect();
            match fit {
                Ok(curve) => {
                    let recommended = advised.next().unwrap_or(current);
                    row.extend(
                        [
                            current,
                            recommended,
                            curve.value(current),
                            curve.value(recommended),
                            curve.marginal(current),
                            curve.marginal(recommended),
                            curve.r2,
                        ]
                        .map(finite),
                    );
                    row.push(match &allocation.note {
                        Some(note) => Cell::Text(note.clone()),
                        None => Cell::Null,
                    });
                }
                Err(why) => {
                    row.extend([current, current, current_value, current_value].map(finite));
                    row.extend([Cell::Null, Cell::Null, Cell::Null]);
                    row.push(Cell::Text(why));
                }
            }
            rows.push(row);
        }
        to_batch(schema, &rows)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn statements_quote_every_argument() {
        let sql = super::statement(
            "forecast",
            &["spend".into(), "x'); DROP TABLE t; --".into()],
        );
        assert_eq!(
            sql,
            "SELECT * FROM forecast('spend', 'x''); DROP TABLE t; --')"
        );
    }
}
