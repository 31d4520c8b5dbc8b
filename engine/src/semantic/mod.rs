//! The metric layer: marketing metrics defined once and computed correctly
//! at any grain.
//!
//! * **Base measures** are sums of one column of one source table
//!   ([`MEASURES`]).
//! * **Metrics** are expressions over base measures ([`expr::MetricExpr`]):
//!   the built-in ratios (CTR, CPC, CPM, CPA, ROAS, CVR), blended metrics
//!   across sources (MER = Shopify revenue ÷ ad spend, cost per session) and
//!   per-client custom metrics loaded from a configuration file
//!   ([`MetricsConfig`]). Every operand is the *sum* at the requested grain,
//!   so a ratio is never an average of ratios, and a zero denominator gives
//!   NULL.
//! * **Dimensions** ([`DIMENSIONS`]): the date at day / ISO week / month /
//!   quarter grain, platform, account, campaign, ad group, ad, UTM fields,
//!   currency and client.
//! * A [`MetricQuery`] asks for metrics by dimensions over a date range
//!   (absolute or relative in the client's time zone), with an optional
//!   comparison period, a filter tree, order, limit and a zero-filled date
//!   spine. [`crate::Engine::query_metrics`] answers it under the caller's
//!   scope, through the result cache.
//!
//! Money is never summed across currencies silently: with a reporting
//! currency each row is converted through `fx_rates`; without one, a query
//! whose money measures see more than one currency fails with a message
//! naming them, unless `currency` is one of its dimensions.

pub mod expr;
mod plan;
mod range;
pub mod sql;

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::Deserialize;

pub use expr::MetricExpr;
pub use plan::{Cell, ColumnKind, FreshnessRow, MetricResult, ResultColumn};
pub use range::{RELATIVE_RANGES, resolve_range};

use crate::error::{Error, Result};

/// One summed column of one source table.
#[derive(Debug, Clone, Copy)]
pub struct Measure {
    /// Name used in metric expressions.
    pub name: &'static str,
    /// The table it is summed from.
    pub table: &'static str,
    /// The SQL of one row's value (over the table aliased `t`).
    pub column: &'static str,
    /// Whether it is an amount of money in the row's `currency`.
    pub money: bool,
    /// What it is.
    pub description: &'static str,
}

/// Every base measure.
pub const MEASURES: &[Measure] = &[
    Measure {
        name: "spend",
        table: "ad_performance",
        column: "t.spend",
        money: true,
        description: "Ad spend",
    },
    Measure {
        name: "impressions",
        table: "ad_performance",
        column: "t.impressions",
        money: false,
        description: "Ad impressions",
    },
    Measure {
        name: "clicks",
        table: "ad_performance",
        column: "t.clicks",
        money: false,
        description: "Ad clicks",
    },
    Measure {
        name: "conversions",
        table: "ad_performance",
        column: "t.conversions",
        money: false,
        description: "Conversions reported by the ad platform",
    },
    Measure {
        name: "conversion_value",
        table: "ad_performance",
        column: "t.conversion_value",
        money: true,
        description: "Value of the conversions reported by the ad platform",
    },
    Measure {
        name: "sessions",
        table: "web_sessions",
        column: "t.sessions",
        money: false,
        description: "GA4 sessions",
    },
    Measure {
        name: "key_events",
        table: "web_sessions",
        column: "t.key_events",
        money: false,
        description: "GA4 key events",
    },
    Measure {
        name: "ga4_revenue",
        table: "web_sessions",
        column: "t.revenue",
        money: true,
        description: "GA4 revenue",
    },
    Measure {
        name: "orders",
        table: "orders",
        column: "1",
        money: false,
        description: "Shopify orders",
    },
    Measure {
        name: "shopify_revenue",
        table: "orders",
        column: "t.total_price",
        money: true,
        description: "Shopify order revenue (total price)",
    },
];

/// Looks a base measure up by name.
pub fn measure(name: &str) -> Option<&'static Measure> {
    MEASURES.iter().find(|m| m.name == name)
}

/// The date grains a date dimension can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Grain {
    /// One row per day.
    Day,
    /// ISO weeks, labelled by their Monday.
    Week,
    /// Calendar months, labelled by their first day.
    Month,
    /// Calendar quarters, labelled by their first day.
    Quarter,
}

/// A dimension metrics can be grouped or filtered by.
#[derive(Debug, Clone, Copy)]
pub struct Dimension {
    /// Name in queries.
    pub name: &'static str,
    /// `Some` for the date dimensions.
    pub grain: Option<Grain>,
    /// The column of each table that has this dimension.
    pub columns: &'static [(&'static str, &'static str)],
    /// What it is.
    pub description: &'static str,
}

const ALL_DATES: &[(&str, &str)] = &[
    ("ad_performance", "date"),
    ("web_sessions", "date"),
    ("orders", "date"),
];

const fn ads(column: &'static str) -> [(&'static str, &'static str); 1] {
    [("ad_performance", column)]
}

macro_rules! ads_dim {
    ($name:literal, $desc:literal) => {
        Dimension {
            name: $name,
            grain: None,
            columns: &ads($name),
            description: $desc,
        }
    };
}

/// Every dimension.
pub const DIMENSIONS: &[Dimension] = &[
    Dimension {
        name: "date",
        grain: Some(Grain::Day),
        columns: ALL_DATES,
        description: "Report date (day)",
    },
    Dimension {
        name: "week",
        grain: Some(Grain::Week),
        columns: ALL_DATES,
        description: "ISO week, as the date of its Monday",
    },
    Dimension {
        name: "month",
        grain: Some(Grain::Month),
        columns: ALL_DATES,
        description: "Calendar month, as the date of its first day",
    },
    Dimension {
        name: "quarter",
        grain: Some(Grain::Quarter),
        columns: ALL_DATES,
        description: "Calendar quarter, as the date of its first day",
    },
    Dimension {
        name: "client_id",
        grain: None,
        columns: &[
            ("ad_performance", "client_id"),
            ("web_sessions", "client_id"),
            ("orders", "client_id"),
        ],
        description: "Client",
    },
    Dimension {
        name: "currency",
        grain: None,
        columns: &[
            ("ad_performance", "currency"),
            ("web_sessions", "currency"),
            ("orders", "currency"),
        ],
        description: "ISO 4217 currency of the money measures",
    },
    ads_dim!("platform", "Ad platform"),
    ads_dim!("account_id", "Ad account id"),
    ads_dim!("account_name", "Ad account name"),
    ads_dim!("campaign_id", "Campaign id"),
    ads_dim!("campaign_name", "Campaign name"),
    ads_dim!("ad_group_id", "Ad group (ad set) id"),
    ads_dim!("ad_group_name", "Ad group (ad set) name"),
    ads_dim!("ad_id", "Ad id"),
    ads_dim!("ad_name", "Ad name"),
    Dimension {
        name: "utm_source",
        grain: None,
        columns: &[
            ("ad_performance", "utm_source"),
            ("web_sessions", "source"),
            ("orders", "utm_source"),
        ],
        description: "UTM source (GA4 session source)",
    },
    Dimension {
        name: "utm_medium",
        grain: None,
        columns: &[
            ("ad_performance", "utm_medium"),
            ("web_sessions", "medium"),
            ("orders", "utm_medium"),
        ],
        description: "UTM medium (GA4 session medium)",
    },
    Dimension {
        name: "utm_campaign",
        grain: None,
        columns: &[
            ("ad_performance", "utm_campaign"),
            ("web_sessions", "campaign"),
            ("orders", "utm_campaign"),
        ],
        description: "UTM campaign (GA4 session campaign)",
    },
    Dimension {
        name: "utm_content",
        grain: None,
        columns: &[("ad_performance", "utm_content"), ("orders", "utm_content")],
        description: "UTM content",
    },
    Dimension {
        name: "utm_term",
        grain: None,
        columns: &[("ad_performance", "utm_term"), ("orders", "utm_term")],
        description: "UTM term",
    },
];

/// Looks a dimension up by name.
pub fn dimension(name: &str) -> Option<&'static Dimension> {
    DIMENSIONS.iter().find(|d| d.name == name)
}

impl Dimension {
    /// The column of `table` holding this dimension.
    pub fn column_in(&self, table: &str) -> Option<&'static str> {
        self.columns
            .iter()
            .find(|(t, _)| *t == table)
            .map(|(_, c)| *c)
    }
}

/// What kind of metric a definition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A base measure.
    Base,
    /// A ratio of measures of one source.
    Ratio,
    /// Measures of several sources joined by client and date.
    Blended,
    /// Defined in configuration for one client.
    Custom,
}

/// A metric: an expression over base measures.
#[derive(Debug, Clone)]
pub struct MetricDef {
    /// Name in queries and result columns.
    pub name: String,
    /// What it is.
    pub description: String,
    /// Its expression, as written.
    pub expression: String,
    /// Its parsed expression.
    pub expr: MetricExpr,
    /// Its kind.
    pub kind: MetricKind,
    /// The client a custom metric belongs to.
    pub client: Option<String>,
}

impl MetricDef {
    /// The tables the metric reads.
    pub fn tables(&self) -> Vec<&'static str> {
        let mut tables: Vec<&'static str> = self
            .expr
            .measures()
            .iter()
            .filter_map(|m| measure(m).map(|m| m.table))
            .collect();
        tables.sort_unstable();
        tables.dedup();
        tables
    }
}

const BUILT_IN: &[(&str, &str, MetricKind, &str)] = &[
    (
        "ctr",
        "clicks / impressions",
        MetricKind::Ratio,
        "Click-through rate",
    ),
    ("cpc", "spend / clicks", MetricKind::Ratio, "Cost per click"),
    (
        "cpm",
        "1000 * spend / impressions",
        MetricKind::Ratio,
        "Cost per thousand impressions",
    ),
    (
        "cpa",
        "spend / conversions",
        MetricKind::Ratio,
        "Cost per conversion",
    ),
    (
        "roas",
        "conversion_value / spend",
        MetricKind::Ratio,
        "Return on ad spend (platform-reported conversion value)",
    ),
    (
        "cvr",
        "conversions / clicks",
        MetricKind::Ratio,
        "Conversion rate",
    ),
    (
        "mer",
        "shopify_revenue / spend",
        MetricKind::Blended,
        "Marketing efficiency ratio: Shopify revenue / total ad spend",
    ),
    (
        "blended_roas",
        "shopify_revenue / spend",
        MetricKind::Blended,
        "Blended ROAS: Shopify revenue / total ad spend",
    ),
    (
        "cost_per_session",
        "spend / sessions",
        MetricKind::Blended,
        "Total ad spend / GA4 sessions",
    ),
    (
        "cost_per_order",
        "spend / orders",
        MetricKind::Blended,
        "Total ad spend / Shopify orders",
    ),
];

/// Per-client settings: time zone and custom metrics, from a TOML file:
///
/// ```toml
/// [[client]]
/// id = "acme"
/// time_zone = "Europe/Berlin"
///
/// [[metric]]
/// client = "acme"
/// name = "profit"
/// expression = "conversion_value - spend"
/// description = "Platform conversion value minus spend"
/// ```
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    time_zones: BTreeMap<String, Tz>,
    custom: Vec<MetricDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    client: Vec<ClientEntry>,
    #[serde(default)]
    metric: Vec<MetricEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientEntry {
    id: String,
    time_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricEntry {
    client: String,
    name: String,
    expression: String,
    #[serde(default)]
    description: String,
}

impl MetricsConfig {
    /// Reads and validates a configuration file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidSql(format!(
                "metrics configuration {}: cannot be read: {e}",
                path.display()
            ))
        })?;
        Self::from_toml_str(&text).map_err(|m| {
            Error::InvalidSql(format!("metrics configuration {}: {m}", path.display()))
        })
    }

    /// Parses and validates a configuration: time zones must be IANA names,
    /// custom metric names must be new identifiers and their expressions
    /// must parse and use only base measures.
    pub fn from_toml_str(text: &str) -> std::result::Result<Self, String> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut config = Self::default();
        for c in file.client {
            if let Some(tz) = c.time_zone {
                let parsed: Tz = tz.parse().map_err(|_| {
                    format!("client {}: unknown time zone '{tz}' (use an IANA name such as Europe/Berlin)", c.id)
                })?;
                config.time_zones.insert(c.id, parsed);
            }
        }
        for m in file.metric {
            let valid_name = !m.name.is_empty()
                && m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !m.name.starts_with(|c: char| c.is_ascii_digit());
            if !valid_name {
                return Err(format!(
                    "custom metric '{}' of client {}: a name is lower-case letters, digits and '_'",
                    m.name, m.client
                ));
            }
            if measure(&m.name).is_some() || BUILT_IN.iter().any(|b| b.0 == m.name) {
                return Err(format!(
                    "custom metric '{}' of client {}: the name is taken by a built-in metric",
                    m.name, m.client
                ));
            }
            if config
                .custom
                .iter()
                .any(|d| d.name == m.name && d.client.as_deref() == Some(&m.client))
            {
                return Err(format!(
                    "custom metric '{}' of client {} is defined twice",
                    m.name, m.client
                ));
            }
            let expr = MetricExpr::parse(&m.expression).map_err(|e| {
                format!(
                    "custom metric '{}' of client {}: expression '{}' does not parse: {e}",
                    m.name, m.client, m.expression
                )
            })?;
            if let Some(unknown) = expr.measures().into_iter().find(|n| measure(n).is_none()) {
                return Err(format!(
                    "custom metric '{}' of client {}: unknown measure '{unknown}' (measures: {})",
                    m.name,
                    m.client,
                    measure_names()
                ));
            }
            config.custom.push(MetricDef {
                name: m.name,
                description: m.description,
                expression: m.expression,
                expr,
                kind: MetricKind::Custom,
                client: Some(m.client),
            });
        }
        Ok(config)
    }

    /// This configuration with `client` in time zone `zone`; an error if
    /// the configuration already puts the client in another zone.
    pub fn with_time_zone(mut self, client: &str, zone: Tz) -> std::result::Result<Self, String> {
        match self.time_zones.get(client) {
            Some(&other) if other != zone => Err(format!(
                "the metrics configuration puts it in {other}, the client configuration in {zone}: keep one"
            )),
            _ => {
                self.time_zones.insert(client.to_owned(), zone);
                Ok(self)
            }
        }
    }

    /// The configured time zone of a client.
    pub fn time_zone(&self, client: &str) -> Option<Tz> {
        self.time_zones.get(client).copied()
    }

    /// Every configured client zone (UTC for the others).
    pub fn time_zones(&self) -> crate::freshness::TimeZones {
        self.time_zones
            .iter()
            .fold(crate::freshness::TimeZones::default(), |zones, (c, z)| {
                zones.with_client(c.clone(), *z)
            })
    }
}

fn measure_names() -> String {
    MEASURES
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every metric a caller in `scope` can ask for: base measures, built-in
/// metrics and the custom metrics of the clients the scope allows.
pub fn metrics_for(config: &MetricsConfig, scope: &crate::Scope) -> Vec<MetricDef> {
    let mut out: Vec<MetricDef> = MEASURES
        .iter()
        .map(|m| MetricDef {
            name: m.name.to_string(),
            description: m.description.to_string(),
            expression: m.name.to_string(),
            expr: MetricExpr::Measure(m.name.to_string()),
            kind: MetricKind::Base,
            client: None,
        })
        .collect();
    for (name, expression, kind, description) in BUILT_IN {
        out.push(MetricDef {
            name: (*name).to_string(),
            description: (*description).to_string(),
            expression: (*expression).to_string(),
            expr: MetricExpr::parse(expression).expect("built-in metric expressions parse"),
            kind: *kind,
            client: None,
        });
    }
    for custom in &config.custom {
        let client = custom.client.as_deref().unwrap_or_default();
        // One definition per name: a caller seeing two clients that both
        // define a name gets the first, which is reported with its client.
        if scope.allows(client) && !out.iter().any(|d| d.name == custom.name) {
            out.push(custom.clone());
        }
    }
    out
}

/// A comparison period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Comparison {
    /// The same number of days right before the range.
    PreviousPeriod,
    /// The same dates one year earlier.
    SamePeriodLastYear,
}

/// A date range.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DateRange {
    /// Inclusive dates.
    Absolute {
        /// First day.
        start: NaiveDate,
        /// Last day (inclusive).
        end: NaiveDate,
    },
    /// A named range relative to today in the client's time zone
    /// ([`RELATIVE_RANGES`], or `last_N_days`).
    Relative(String),
}

/// How a filter condition compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterOp {
    /// Equal to the one value.
    Equals,
    /// Not equal to the one value (NULL counts as not equal).
    NotEquals,
    /// Equal to one of the values.
    In,
    /// Equal to none of the values.
    NotIn,
    /// Contains the one value as a substring.
    Contains,
}

/// A filter tree on dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Filter {
    /// One condition.
    Condition {
        /// A non-date dimension.
        dimension: String,
        /// The comparison.
        op: FilterOp,
        /// The values compared with.
        values: Vec<String>,
    },
    /// Every child holds.
    And(Vec<Filter>),
    /// At least one child holds.
    Or(Vec<Filter>),
    /// The child does not hold.
    Not(Box<Filter>),
}

/// One ordering term.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderBy {
    /// A result column: a dimension, a metric or a comparison column.
    pub column: String,
    /// Largest first.
    pub descending: bool,
}

/// A metric question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetricQuery {
    /// Metric names.
    pub metrics: Vec<String>,
    /// Dimension names to group by.
    pub dimensions: Vec<String>,
    /// The date range.
    pub range: DateRange,
    /// An optional comparison period.
    pub comparison: Option<Comparison>,
    /// An optional filter.
    pub filter: Option<Filter>,
    /// Order of the rows (default: by the dimensions, ascending).
    pub order_by: Vec<OrderBy>,
    /// At most this many rows.
    pub limit: Option<usize>,
    /// Emit a zero row for every date bucket of the range without data.
    pub zero_fill: bool,
    /// Convert money to this currency through `fx_rates`.
    pub reporting_currency: Option<String>,
    /// IANA time zone for relative ranges (default: the client's).
    pub time_zone: Option<String>,
}

impl MetricQuery {
    /// A query of `metrics` over `range`, no dimensions.
    pub fn new<S: Into<String>>(metrics: impl IntoIterator<Item = S>, range: DateRange) -> Self {
        Self {
            metrics: metrics.into_iter().map(Into::into).collect(),
            dimensions: Vec::new(),
            range,
            comparison: None,
            filter: None,
            order_by: Vec::new(),
            limit: None,
            zero_fill: false,
            reporting_currency: None,
            time_zone: None,
        }
    }

    /// Groups by `dimensions`.
    #[must_use]
    pub fn with_dimensions<S: Into<String>>(
        mut self,
        dimensions: impl IntoIterator<Item = S>,
    ) -> Self {
        self.dimensions = dimensions.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a comparison period.
    #[must_use]
    pub fn with_comparison(mut self, comparison: Comparison) -> Self {
        self.comparison = Some(comparison);
        self
    }

    /// Restricts to rows matching `filter`.
    #[must_use]
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Converts money to `currency`.
    #[must_use]
    pub fn with_reporting_currency(mut self, currency: impl Into<String>) -> Self {
        self.reporting_currency = Some(currency.into());
        self
    }

    /// Orders the rows.
    #[must_use]
    pub fn with_order_by(mut self, column: impl Into<String>, descending: bool) -> Self {
        self.order_by.push(OrderBy {
            column: column.into(),
            descending,
        });
        self
    }

    /// Keeps at most `limit` rows.
    #[must_use]
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Zero-fills the date buckets without data.
    #[must_use]
    pub fn with_zero_fill(mut self) -> Self {
        self.zero_fill = true;
        self
    }
}

pub(crate) use plan::{freshness, prepare, run};

#[cfg(test)]
mod golden;
#[cfg(test)]
pub(crate) mod tests;
