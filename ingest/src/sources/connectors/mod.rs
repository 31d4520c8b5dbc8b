//! Platform connectors: one module per platform, each turning the
//! platform's own payloads into unified records.
//!
//! A connector has two halves. The *parser* (`parse_*`) is a pure function
//! from one response body to [`Parsed`] records and rejects, used alike for
//! live API pages and for saved payload files; the *fetcher* (`fetch`) walks
//! the platform's paging through the shared [`HttpClient`](crate::sources::http::HttpClient).
//! A record that cannot be read (a missing field, a wrong type, an
//! unparsable number) becomes a [`Reject`] with its reason and raw JSON; it
//! never stops the other records.
//!
//! **An unmapped field never costs a row.** Platforms add fields all the
//! time, and a saved payload may have been requested with more `fields`
//! than the connector asks for: a field the parser does not read, at any
//! level of the payload, is ignored and recorded as schema drift in
//! [`Parsed::unmapped`]. Only a missing required field, an unparsable value
//! or a failed validation rule sends a record to quarantine.

pub mod export;
pub mod ga4;
pub mod google_ads;
pub mod linkedin;
pub mod meta;
mod platform;
pub mod shopify;
pub mod tiktok;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use adlake_engine::schema::{AD_PERFORMANCE, MONEY, ORDERS, TableDef, WEB_SESSIONS};
use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder, RecordBatch,
    StringArray, StringBuilder, TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use crate::dates::date_to_epoch_day;
use crate::error::{Error, Result};
use crate::lake::lineage::Lineage;

pub use self::platform::Platform;

/// A source of data: the six platforms with a connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// Google Ads (REST `googleAds:searchStream`).
    GoogleAds,
    /// Meta Marketing API Insights.
    MetaAds,
    /// TikTok Marketing API integrated reports.
    TiktokAds,
    /// LinkedIn Marketing API ad analytics.
    LinkedinAds,
    /// Google Analytics 4 Data API.
    Ga4,
    /// Shopify Admin orders.
    Shopify,
}

impl SourceKind {
    /// Every source kind.
    pub const ALL: [SourceKind; 6] = [
        Self::GoogleAds,
        Self::MetaAds,
        Self::TiktokAds,
        Self::LinkedinAds,
        Self::Ga4,
        Self::Shopify,
    ];

    /// The ad platform of an ad source (`None` for GA4 and Shopify).
    pub const fn platform(self) -> Option<Platform> {
        match self {
            Self::GoogleAds => Some(Platform::GoogleAds),
            Self::MetaAds => Some(Platform::MetaAds),
            Self::TiktokAds => Some(Platform::TiktokAds),
            Self::LinkedinAds => Some(Platform::LinkedinAds),
            Self::Ga4 | Self::Shopify => None,
        }
    }

    /// The name used in configuration, on the command line and in
    /// `ingest_runs.source` (the `platform` value for ad platforms).
    pub fn as_str(self) -> &'static str {
        match (self.platform(), self) {
            (Some(platform), _) => platform.as_str(),
            (None, Self::Ga4) => "ga4",
            (None, _) => "shopify",
        }
    }

    /// The table this source writes.
    pub fn table(self) -> &'static TableDef {
        match self {
            Self::Ga4 => &WEB_SESSIONS,
            Self::Shopify => &ORDERS,
            _ => &AD_PERFORMANCE,
        }
    }

    /// The value of the table's source column (`platform`), if it has one.
    pub fn source_value(self) -> Option<&'static str> {
        self.platform().map(Platform::as_str)
    }

    /// The `_source` lineage value: connector and API version.
    pub fn lineage_source(self) -> &'static str {
        match self {
            Self::GoogleAds => "google_ads/v21",
            Self::MetaAds => "meta_ads/v21.0",
            Self::TiktokAds => "tiktok_ads/v1.3",
            Self::LinkedinAds => "linkedin_ads/202405",
            Self::Ga4 => "ga4/v1beta",
            Self::Shopify => "shopify/2024-10",
        }
    }

    /// The longest date range one request may cover; backfills are split
    /// into chunks of at most this many days.
    pub fn max_chunk_days(self) -> u32 {
        match self {
            Self::GoogleAds => 90,
            Self::MetaAds => 30,
            Self::TiktokAds => 30,
            Self::LinkedinAds => 90,
            Self::Ga4 => 180,
            Self::Shopify => 31,
        }
    }

    /// Whether the platform guarantees clicks never exceed impressions
    /// (LinkedIn counts clicks on elements without an impression, so it
    /// does not).
    pub fn clicks_within_impressions(self) -> bool {
        matches!(self, Self::GoogleAds | Self::MetaAds | Self::TiktokAds)
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "unknown platform '{s}' (known: {})",
                    Self::ALL.map(Self::as_str).join(", ")
                ))
            })
    }
}

/// What a parser needs to know besides the payload.
#[derive(Clone)]
pub struct ParseContext {
    /// The account (Google customer, Meta ad account, TikTok advertiser,
    /// LinkedIn account, GA4 property, Shopify shop) the payload is for.
    pub account_id: String,
    /// The account's currency, for platforms whose reports do not carry it.
    pub currency: Option<String>,
    /// Meta: the one action type counted as a conversion.
    pub canonical_action: String,
    /// Shopify: the key of the customer hash.
    pub customer_hash_key: Vec<u8>,
    /// Shopify: the shop's time zone, whose local date is an order's date
    /// (without it, the offset of the order's own timestamp).
    pub time_zone: Option<chrono_tz::Tz>,
}

impl fmt::Debug for ParseContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParseContext")
            .field("account_id", &self.account_id)
            .field("currency", &self.currency)
            .field("canonical_action", &self.canonical_action)
            .field("time_zone", &self.time_zone)
            .finish_non_exhaustive()
    }
}

/// Meta's default canonical conversion: the cross-channel purchase count,
/// which already de-duplicates pixel, app and offline purchases.
pub const DEFAULT_CANONICAL_ACTION: &str = "omni_purchase";

impl ParseContext {
    /// A context for `account_id` with defaults elsewhere.
    pub fn new(account_id: impl Into<String>) -> Self {
        Self {
            account_id: account_id.into(),
            currency: None,
            canonical_action: DEFAULT_CANONICAL_ACTION.to_owned(),
            customer_hash_key: Vec::new(),
            time_zone: None,
        }
    }

    /// Sets the shop's time zone (Shopify).
    #[must_use]
    pub fn with_time_zone(mut self, zone: chrono_tz::Tz) -> Self {
        self.time_zone = Some(zone);
        self
    }

    /// Sets the account currency.
    #[must_use]
    pub fn with_currency(mut self, currency: impl Into<String>) -> Self {
        self.currency = Some(currency.into());
        self
    }

    /// Sets Meta's canonical action type.
    #[must_use]
    pub fn with_canonical_action(mut self, action: impl Into<String>) -> Self {
        self.canonical_action = action.into();
        self
    }

    /// Sets the customer hash key.
    #[must_use]
    pub fn with_customer_hash_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.customer_hash_key = key.into();
        self
    }
}

/// UTM attribution of a row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Utm {
    /// `utm_source`.
    pub source: Option<String>,
    /// `utm_medium`.
    pub medium: Option<String>,
    /// `utm_campaign`.
    pub campaign: Option<String>,
    /// `utm_content`.
    pub content: Option<String>,
    /// `utm_term`.
    pub term: Option<String>,
}

/// One unified `ad_performance` row (money in micro-units).
#[derive(Debug, Clone, PartialEq)]
pub struct AdRow {
    /// Report date in the account's time zone.
    pub date: NaiveDate,
    /// Ad account.
    pub account_id: String,
    /// Ad account name, when reported.
    pub account_name: Option<String>,
    /// Campaign.
    pub campaign_id: String,
    /// Campaign name.
    pub campaign_name: Option<String>,
    /// Ad group (Meta ad set, LinkedIn campaign).
    pub ad_group_id: Option<String>,
    /// Ad group name.
    pub ad_group_name: Option<String>,
    /// Ad.
    pub ad_id: Option<String>,
    /// Ad name.
    pub ad_name: Option<String>,
    /// Spend in micro-units of `currency`.
    pub spend_micros: i128,
    /// Impressions.
    pub impressions: i64,
    /// Clicks.
    pub clicks: i64,
    /// Conversions (fractional on Google Ads).
    pub conversions: f64,
    /// Conversion value in micro-units of `currency`.
    pub conversion_value_micros: i128,
    /// ISO 4217 currency of the account.
    pub currency: String,
    /// UTM attribution (none of the report APIs return it today).
    pub utm: Utm,
    /// The record as received, for quarantine.
    pub raw: String,
}

/// One unified `web_sessions` row.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    /// Report date in the property's time zone.
    pub date: NaiveDate,
    /// GA4 property.
    pub property_id: String,
    /// Session source.
    pub source: Option<String>,
    /// Session medium.
    pub medium: Option<String>,
    /// Session campaign.
    pub campaign: Option<String>,
    /// Device category.
    pub device_category: Option<String>,
    /// Country.
    pub country: Option<String>,
    /// Sessions.
    pub sessions: i64,
    /// Engaged sessions.
    pub engaged_sessions: i64,
    /// Key events (fractional in GA4).
    pub key_events: f64,
    /// Revenue in micro-units of `currency`.
    pub revenue_micros: i128,
    /// The property's currency.
    pub currency: String,
    /// The record as received, for quarantine.
    pub raw: String,
}

/// One unified `orders` row; holds no personal data.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRow {
    /// Shop-local date of creation.
    pub date: NaiveDate,
    /// Shop.
    pub shop_id: String,
    /// Order id.
    pub order_id: String,
    /// Creation time, UTC.
    pub created_at: DateTime<Utc>,
    /// Shop currency.
    pub currency: String,
    /// Total price in micro-units.
    pub total_price_micros: i128,
    /// Subtotal price in micro-units.
    pub subtotal_price_micros: i128,
    /// Financial status.
    pub financial_status: Option<String>,
    /// UTMs from the landing site.
    pub utm: Utm,
    /// Keyed hash of the customer's e-mail address.
    pub customer_key: Option<String>,
    /// The record as received minus personal data, for quarantine.
    pub raw: String,
}

/// A unified record of any of the three fact tables.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// `ad_performance`.
    Ad(AdRow),
    /// `web_sessions`.
    Session(SessionRow),
    /// `orders`.
    Order(OrderRow),
}

impl Record {
    /// The report date.
    pub fn date(&self) -> NaiveDate {
        match self {
            Self::Ad(r) => r.date,
            Self::Session(r) => r.date,
            Self::Order(r) => r.date,
        }
    }

    /// The raw record.
    pub fn raw(&self) -> &str {
        match self {
            Self::Ad(r) => &r.raw,
            Self::Session(r) => &r.raw,
            Self::Order(r) => &r.raw,
        }
    }
}

/// A record that could not be used, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Why it was rejected.
    pub reason: String,
    /// The record as received.
    pub raw: String,
}

impl Reject {
    /// A reject of `raw` (a JSON value) for `reason`.
    pub fn new(reason: impl Into<String>, raw: &Value) -> Self {
        Self {
            reason: reason.into(),
            raw: raw.to_string(),
        }
    }
}

/// What a parser made of one payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// Records read.
    pub records: Vec<Record>,
    /// Records that could not be read.
    pub rejects: Vec<Reject>,
    /// Schema drift: the fields outside the connector's mapping that the
    /// payload's records carried (dotted paths, e.g. `inline_link_clicks`,
    /// `metrics.foo`). Ignored when parsing; reported by the job.
    pub unmapped: BTreeSet<String>,
}

impl Parsed {
    /// Appends another payload's outcome.
    pub fn extend(&mut self, other: Parsed) {
        self.records.extend(other.records);
        self.rejects.extend(other.rejects);
        self.unmapped.extend(other.unmapped);
    }

    /// Records the fields of `record` outside `known` as schema drift (see
    /// [`unmapped_fields`]).
    pub(crate) fn note_unmapped(&mut self, record: &Value, known: &[&str]) {
        self.unmapped.extend(unmapped_fields(record, known));
    }

    /// Adds one record or its reject.
    pub(crate) fn push(&mut self, item: std::result::Result<Record, Reject>) {
        match item {
            Ok(r) => self.records.push(r),
            Err(r) => self.rejects.push(r),
        }
    }
}

/// Parses a saved payload of `kind` (any shape its parser accepts).
pub fn parse_payload(kind: SourceKind, body: &[u8], ctx: &ParseContext) -> Result<Parsed, String> {
    match kind {
        SourceKind::GoogleAds => google_ads::parse(body, ctx),
        SourceKind::MetaAds => meta::parse(body, ctx).map(|p| p.parsed),
        SourceKind::TiktokAds => tiktok::parse(body, ctx).map(|p| p.parsed),
        SourceKind::LinkedinAds => linkedin::parse(body, ctx).map(|p| p.parsed),
        SourceKind::Ga4 => ga4::parse(body, ctx).map(|p| p.parsed),
        SourceKind::Shopify => shopify::parse(body, ctx),
    }
}

/// Parses a platform CSV export of `kind` (see [`export`]) through the same
/// parser as the API payloads.
pub fn parse_csv_export(
    kind: SourceKind,
    body: &[u8],
    ctx: &ParseContext,
) -> Result<Parsed, String> {
    let payload = export::csv_payload(kind, body)?;
    parse_payload(kind, &payload, ctx)
}

// ---------------------------------------------------------------------------
// Field readers shared by the parsers.

/// Parses a decimal number (`"12.34"`, `"-2E-18"`, `"1e3"`) to micro-units,
/// rounding half away from zero. Exact: no floating point on the way.
pub fn decimal_to_micros(text: &str) -> Option<i128> {
    let s = text.trim();
    let (negative, s) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
        None => (s, 0),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part
        .bytes()
        .chain(frac_part.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let digits: String = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    // value = digits * 10^(exponent - frac_len); we want value * 10^6.
    let shift = exponent - frac_part.len() as i32 + 6;
    if digits.is_empty() {
        return Some(0);
    }
    if digits.len() > 30 && shift >= 0 {
        return None;
    }
    let magnitude = if shift >= 0 {
        let base: i128 = digits.parse().ok()?;
        base.checked_mul(10i128.checked_pow(shift as u32)?)?
    } else {
        let cut = (-shift) as usize;
        if cut > digits.len() {
            // Less than half a micro-unit unless the first dropped digit is
            // the leading one and at least 5 (only when cut == len).
            0
        } else {
            let (kept, dropped) = digits.split_at(digits.len() - cut);
            let kept: i128 = if kept.is_empty() {
                0
            } else {
                kept.parse().ok()?
            };
            let round_up = dropped.as_bytes().first().is_some_and(|d| *d >= b'5');
            kept + i128::from(round_up)
        }
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// Why a field could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldError {
    /// Absent, `null`, or a platform's "no value" marker.
    Missing,
    /// Present but not of the expected type or format.
    Invalid(String),
}

impl FieldError {
    pub(crate) fn describe(&self, name: &str) -> String {
        match self {
            Self::Missing => format!("missing field '{name}'"),
            Self::Invalid(detail) => format!("field '{name}': {detail}"),
        }
    }
}

/// The value at a dotted path of a JSON object, treating `null` as absent.
pub(crate) fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(value, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

/// A string field, also accepting numbers (ids are numbers in some APIs).
pub(crate) fn text_field(value: Option<&Value>) -> std::result::Result<String, FieldError> {
    match value {
        None | Some(Value::Null) => Err(FieldError::Missing),
        Some(Value::String(s)) if s.is_empty() => Err(FieldError::Missing),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(FieldError::Invalid(format!(
            "expected a string, got {}",
            json_type(other)
        ))),
    }
}

/// An optional string field.
pub(crate) fn opt_text(value: Option<&Value>) -> Option<String> {
    text_field(value).ok()
}

/// Money as a decimal string or a JSON number, in micro-units.
pub(crate) fn money_field(value: Option<&Value>) -> std::result::Result<i128, FieldError> {
    let text = number_text(value)?;
    decimal_to_micros(&text)
        .ok_or_else(|| FieldError::Invalid(format!("'{text}' is not a decimal number")))
}

/// A count as an integer string or a JSON integer.
pub(crate) fn count_field(value: Option<&Value>) -> std::result::Result<i64, FieldError> {
    let text = number_text(value)?;
    text.trim()
        .parse::<i64>()
        .map_err(|_| FieldError::Invalid(format!("'{text}' is not a whole number")))
}

/// A fractional quantity as a decimal string or a JSON number.
pub(crate) fn float_field(value: Option<&Value>) -> std::result::Result<f64, FieldError> {
    let text = number_text(value)?;
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .ok_or_else(|| FieldError::Invalid(format!("'{text}' is not a number")))
}

/// The text of a numeric field; `"-"` and `""` count as missing.
fn number_text(value: Option<&Value>) -> std::result::Result<String, FieldError> {
    match value {
        None | Some(Value::Null) => Err(FieldError::Missing),
        Some(Value::String(s)) if s.trim().is_empty() || s.trim() == "-" => {
            Err(FieldError::Missing)
        }
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(FieldError::Invalid(format!(
            "expected a number, got {}",
            json_type(other)
        ))),
    }
}

/// A metric that the platform may leave out when it does not apply: missing
/// is zero, present but unreadable is an error.
pub(crate) fn or_zero<T: Default>(
    result: std::result::Result<T, FieldError>,
) -> std::result::Result<T, FieldError> {
    match result {
        Err(FieldError::Missing) => Ok(T::default()),
        other => other,
    }
}

pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The fields of `record` outside `known`, as dotted paths: schema drift,
/// recorded and ignored (never a reason to reject the record).
///
/// `known` lists dotted paths: a listed path is a field whose whole value
/// is known (whatever lies beneath it, arrays included); an object that is
/// only the parent of listed paths is walked, and any other field in it is
/// unmapped. Fields are visited in name order, so the answer is stable.
pub(crate) fn unmapped_fields(record: &Value, known: &[&str]) -> Vec<String> {
    fn walk(value: &Value, prefix: &str, known: &[&str], out: &mut Vec<String>) {
        let Value::Object(map) = value else {
            return;
        };
        for (key, v) in map {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if known.contains(&path.as_str()) {
                continue;
            }
            let parent = format!("{path}.");
            if v.is_object() && known.iter().any(|k| k.starts_with(&parent)) {
                walk(v, &path, known, out);
                continue;
            }
            out.push(path);
        }
    }
    let mut out = Vec::new();
    walk(record, "", known, &mut out);
    out
}

/// Parses a JSON body, naming the problem when it is not JSON.
pub(crate) fn json_body(body: &[u8]) -> std::result::Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("the payload is not valid JSON: {e}"))
}

// ---------------------------------------------------------------------------
// Arrow batches of unified rows.

fn lineage_columns(lineage: &Lineage, len: usize) -> [ArrayRef; 3] {
    [
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            lineage.source.as_str(),
            len,
        ))),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            lineage.run_id.as_str(),
            len,
        ))),
        Arc::new(
            TimestampMicrosecondArray::from(vec![lineage.ingested_at.timestamp_micros(); len])
                .with_timezone("UTC"),
        ),
    ]
}

fn money(values: impl Iterator<Item = i128>) -> Result<ArrayRef> {
    let mut b = Decimal128Builder::new().with_data_type(MONEY);
    for v in values {
        b.append_value(v);
    }
    Ok(Arc::new(b.finish()))
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut b = StringBuilder::new();
    for v in values {
        b.append_option(v);
    }
    Arc::new(b.finish())
}

fn dates(values: impl Iterator<Item = NaiveDate>) -> ArrayRef {
    let mut b = Date32Builder::new();
    for d in values {
        b.append_value(date_to_epoch_day(d));
    }
    Arc::new(b.finish())
}

fn ints(values: impl Iterator<Item = i64>) -> ArrayRef {
    let mut b = Int64Builder::new();
    for v in values {
        b.append_value(v);
    }
    Arc::new(b.finish())
}

fn floats(values: impl Iterator<Item = f64>) -> ArrayRef {
    let mut b = Float64Builder::new();
    for v in values {
        b.append_value(v);
    }
    Arc::new(b.finish())
}

fn utm_columns(rows: &[&Utm]) -> [ArrayRef; 5] {
    [
        strings(rows.iter().map(|u| u.source.as_deref())),
        strings(rows.iter().map(|u| u.medium.as_deref())),
        strings(rows.iter().map(|u| u.campaign.as_deref())),
        strings(rows.iter().map(|u| u.content.as_deref())),
        strings(rows.iter().map(|u| u.term.as_deref())),
    ]
}

/// Builds one batch of `table` from `records` of `client` (records of
/// another table are an error).
pub fn records_to_batch(
    table: &'static TableDef,
    client: &str,
    platform: Option<&str>,
    records: &[Record],
    lineage: &Lineage,
) -> Result<RecordBatch> {
    let n = records.len();
    let client_col: ArrayRef = Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
        client, n,
    )));
    let wrong = |what: &str| Error::InvalidSlice {
        table: table.name,
        reason: format!("a {what} record cannot be written to it"),
    };
    let mut columns: Vec<ArrayRef> = vec![client_col];
    if table.name == AD_PERFORMANCE.name {
        let rows = records
            .iter()
            .map(|r| match r {
                Record::Ad(a) => Ok(a),
                _ => Err(wrong("non-ad")),
            })
            .collect::<Result<Vec<_>>>()?;
        let platform = platform.ok_or_else(|| Error::InvalidSlice {
            table: table.name,
            reason: "a platform is required".to_owned(),
        })?;
        columns.extend([
            dates(rows.iter().map(|r| r.date)),
            strings(std::iter::repeat_n(Some(platform), n)),
            strings(rows.iter().map(|r| Some(r.account_id.as_str()))),
            strings(rows.iter().map(|r| r.account_name.as_deref())),
            strings(rows.iter().map(|r| Some(r.campaign_id.as_str()))),
            strings(rows.iter().map(|r| r.campaign_name.as_deref())),
            strings(rows.iter().map(|r| r.ad_group_id.as_deref())),
            strings(rows.iter().map(|r| r.ad_group_name.as_deref())),
            strings(rows.iter().map(|r| r.ad_id.as_deref())),
            strings(rows.iter().map(|r| r.ad_name.as_deref())),
            money(rows.iter().map(|r| r.spend_micros))?,
            ints(rows.iter().map(|r| r.impressions)),
            ints(rows.iter().map(|r| r.clicks)),
            floats(rows.iter().map(|r| r.conversions)),
            money(rows.iter().map(|r| r.conversion_value_micros))?,
            strings(rows.iter().map(|r| Some(r.currency.as_str()))),
        ]);
        columns.extend(utm_columns(
            &rows.iter().map(|r| &r.utm).collect::<Vec<_>>(),
        ));
    } else if table.name == WEB_SESSIONS.name {
        let rows = records
            .iter()
            .map(|r| match r {
                Record::Session(s) => Ok(s),
                _ => Err(wrong("non-session")),
            })
            .collect::<Result<Vec<_>>>()?;
        columns.extend([
            dates(rows.iter().map(|r| r.date)),
            strings(rows.iter().map(|r| Some(r.property_id.as_str()))),
            strings(rows.iter().map(|r| r.source.as_deref())),
            strings(rows.iter().map(|r| r.medium.as_deref())),
            strings(rows.iter().map(|r| r.campaign.as_deref())),
            strings(rows.iter().map(|r| r.device_category.as_deref())),
            strings(rows.iter().map(|r| r.country.as_deref())),
            ints(rows.iter().map(|r| r.sessions)),
            ints(rows.iter().map(|r| r.engaged_sessions)),
            floats(rows.iter().map(|r| r.key_events)),
            money(rows.iter().map(|r| r.revenue_micros))?,
            strings(rows.iter().map(|r| Some(r.currency.as_str()))),
        ]);
    } else if table.name == ORDERS.name {
        let rows = records
            .iter()
            .map(|r| match r {
                Record::Order(o) => Ok(o),
                _ => Err(wrong("non-order")),
            })
            .collect::<Result<Vec<_>>>()?;
        let mut created = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        for r in &rows {
            created.append_value(r.created_at.timestamp_micros());
        }
        columns.extend([
            dates(rows.iter().map(|r| r.date)),
            strings(rows.iter().map(|r| Some(r.shop_id.as_str()))),
            strings(rows.iter().map(|r| Some(r.order_id.as_str()))),
            Arc::new(created.finish()) as ArrayRef,
            strings(rows.iter().map(|r| Some(r.currency.as_str()))),
            money(rows.iter().map(|r| r.total_price_micros))?,
            money(rows.iter().map(|r| r.subtotal_price_micros))?,
            strings(rows.iter().map(|r| r.financial_status.as_deref())),
        ]);
        columns.extend(utm_columns(
            &rows.iter().map(|r| &r.utm).collect::<Vec<_>>(),
        ));
        columns.push(strings(rows.iter().map(|r| r.customer_key.as_deref())));
    } else {
        return Err(Error::InvalidSlice {
            table: table.name,
            reason: "connectors write only ad_performance, web_sessions and orders".to_owned(),
        });
    }
    columns.extend(lineage_columns(lineage, n));
    Ok(RecordBatch::try_new(table.schema(), columns)?)
}

/// Sums ad rows with the same (date, account, campaign, ad group, ad,
/// currency): hourly reports become daily rows, and a payload that repeats
/// a key cannot double a slice's row count.
pub(crate) fn merge_ad_rows(rows: Vec<AdRow>) -> Vec<AdRow> {
    type Key = (
        NaiveDate,
        String,
        String,
        Option<String>,
        Option<String>,
        String,
    );
    let mut merged: BTreeMap<Key, AdRow> = BTreeMap::new();
    for row in rows {
        let key = (
            row.date,
            row.account_id.clone(),
            row.campaign_id.clone(),
            row.ad_group_id.clone(),
            row.ad_id.clone(),
            row.currency.clone(),
        );
        match merged.get_mut(&key) {
            None => {
                merged.insert(key, row);
            }
            Some(acc) => {
                acc.spend_micros += row.spend_micros;
                acc.impressions += row.impressions;
                acc.clicks += row.clicks;
                acc.conversions += row.conversions;
                acc.conversion_value_micros += row.conversion_value_micros;
                acc.raw = format!("{}\n{}", acc.raw, row.raw);
            }
        }
    }
    merged.into_values().collect()
}

#[cfg(test)]
mod tests;

/// What a fetch needs: the client, the credentials, where and what to ask.
#[derive(Debug)]
pub struct FetchContext<'a> {
    /// The shared HTTP layer.
    pub http: &'a crate::sources::http::HttpClient,
    /// The source key for the circuit breaker and errors (`client/platform`).
    pub source_key: String,
    /// The name of the credentials (token cache key).
    pub cred_key: String,
    /// The credentials.
    pub creds: &'a crate::sources::http::Credentials,
    /// The API base URL, without a trailing slash.
    pub base_url: String,
    /// The parser's context (account, currency, ...).
    pub parse: ParseContext,
    /// First report date.
    pub from: NaiveDate,
    /// Last report date (inclusive).
    pub to: NaiveDate,
    /// The run's call counters, when the fetch belongs to a run.
    pub run: Option<&'a crate::sources::http::CallStats>,
}

impl FetchContext<'_> {
    pub(crate) fn malformed(&self, message: String) -> crate::sources::http::SourceError {
        crate::sources::http::SourceError {
            source_key: self.source_key.clone(),
            kind: crate::sources::http::FailureKind::Malformed,
            message,
            attempts: 1,
        }
    }

    /// Waits before the next call when the platform's usage headers asked
    /// for a pause, never longer than the HTTP layer's longest delay.
    pub(crate) async fn pace(&self, pause: Option<std::time::Duration>) {
        if let Some(p) = pause {
            let p = p.min(self.http.config().max_delay);
            tracing::debug!(source = %self.source_key, pause = ?p, "pacing to the platform's usage");
            self.http
                .count_rate_limit_wait(&self.source_key, self.run, p);
            tokio::time::sleep(p).await;
        }
    }

    pub(crate) async fn send(
        &self,
        platform: SourceKind,
        call: &crate::sources::http::Call,
        classify: impl Fn(&crate::sources::http::Reply) -> crate::sources::http::Verdict,
    ) -> std::result::Result<crate::sources::http::Reply, crate::sources::http::SourceError> {
        let target = crate::sources::http::Target {
            source_key: &self.source_key,
            platform: platform.as_str(),
            cred_key: &self.cred_key,
            creds: self.creds,
            run: self.run,
        };
        self.http.send_for(&target, call, classify).await
    }
}

/// What one account's fetch brought back.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Records and rejects.
    pub parsed: Parsed,
    /// Request ids of every call that contributed.
    pub request_ids: Vec<String>,
    /// Why the platform says the account delivers nothing (disabled,
    /// closed), when it said so: an empty answer is then not a reason to
    /// hold the run.
    pub inactive: Option<String>,
}

/// Fetches `from..=to` of one account of `kind`.
pub async fn fetch(
    kind: SourceKind,
    ctx: &FetchContext<'_>,
) -> std::result::Result<Fetched, crate::sources::http::SourceError> {
    match kind {
        SourceKind::GoogleAds => google_ads::fetch(ctx).await,
        SourceKind::MetaAds => meta::fetch(ctx).await,
        SourceKind::TiktokAds => tiktok::fetch(ctx).await,
        SourceKind::LinkedinAds => linkedin::fetch(ctx).await,
        SourceKind::Ga4 => ga4::fetch(ctx).await,
        SourceKind::Shopify => shopify::fetch(ctx).await,
    }
}
