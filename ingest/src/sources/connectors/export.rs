//! Platform CSV exports: each row becomes the JSON record of the platform's
//! API shape, wrapped in the API's envelope, and goes through the same
//! parser as a live page.
//!
//! A column is found by its header in one of two spellings:
//! - the platform UI's display header, as its report download writes it
//!   (matched case-insensitively, trimmed, a byte-order mark dropped), e.g.
//!   Google Ads "Day", "Campaign ID", "Cost", "Impr.", "Conv. value"; Meta
//!   Ads Manager "Reporting starts", "Amount spent (EUR)", "Clicks (all)",
//!   "Purchases"; TikTok "Date", "Cost"; LinkedIn Campaign Manager "Start
//!   Date (in UTC)", "Total Spent"; GA4 "Session source", "Key events";
//!   Shopify "Id", "Created at", "Total" (see [`aliases`]);
//! - the API's field name, as ETL tools write them: GAQL names for Google
//!   Ads (`segments.date`, `metrics.cost_micros`, snake or camel case), the
//!   insights fields for Meta with `actions:TYPE` / `action_values:TYPE`
//!   columns for the action lists, dimension and metric names for TikTok
//!   and GA4, analytics fields for LinkedIn with `date` (YYYY-MM-DD) for
//!   the day and `pivotValue` for the entity URN, order fields for Shopify.
//!   A dotted name (`metrics.clicks`) is a nested field.
//!
//! Any other display column (rates, averages: "CTR", "Avg. CPC") is a
//! derived figure and is ignored. A required column missing under every
//! spelling is an error naming it and listing the columns found.
//!
//! UI exports carry more than a table: Google Ads writes a report title and
//! date-range line above the header and "Total: ..." rows below the data,
//! GA4 writes `#` comment lines, Shopify repeats an order on one row per
//! line item. Lines above the header (fewer than two cells, or `#`) and
//! total rows are skipped, and only an order's first row is read. Display
//! numbers lose their thousands separators (`1,234.5`), Google's `--` is a
//! missing value, Google's "Cost" (currency units) becomes micros, and
//! display dates (`6/1/2025`, `2025-06-01 23:30:00 -0400`) become the API's
//! formats. Empty cells are missing values.

use serde_json::{Map, Value, json};

use super::{SourceKind, decimal_to_micros, ga4};

/// TikTok's dimension names; other TikTok columns are metrics.
const TIKTOK_DIMENSIONS: [&str; 6] = [
    "ad_id",
    "adgroup_id",
    "campaign_id",
    "advertiser_id",
    "stat_time_day",
    "stat_time_hour",
];

/// How a display column's cells become the API field's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    /// As written.
    Text,
    /// A display number: thousands separators dropped.
    Number,
    /// A display amount in currency units, as micro-units.
    Micros,
    /// An id written with dashes (`123-456-7890`), without them.
    Digits,
    /// A day as `YYYY-MM-DD`, also read from `M/D/YYYY` and `YYYYMMDD`.
    Day,
    /// A Shopify export time (`2025-06-01 23:30:00 -0400`) as RFC 3339.
    Timestamp,
    /// A LinkedIn id as the URN of this entity type.
    Urn(&'static str),
}

/// One column of the export.
#[derive(Debug, Clone)]
struct Column {
    /// The header as written.
    header: String,
    /// The API field, or `None` for a display column that is not read.
    field: Option<String>,
    /// How the cells are read.
    cell: Cell,
}

/// The display headers of each platform's UI export (lower case) with the
/// API field they hold (`None`: known, not read) and how to read the cells.
fn aliases(kind: SourceKind) -> &'static [(&'static str, Option<&'static str>, Cell)] {
    use Cell::{Day, Digits, Micros, Number, Text, Timestamp, Urn};
    match kind {
        // Google Ads UI report download.
        SourceKind::GoogleAds => &[
            ("day", Some("segments.date"), Day),
            ("date", Some("segments.date"), Day),
            ("customer id", Some("customer.id"), Digits),
            ("account name", Some("customer.descriptive_name"), Text),
            ("account", Some("customer.descriptive_name"), Text),
            ("currency code", Some("customer.currency_code"), Text),
            ("currency", Some("customer.currency_code"), Text),
            ("campaign", Some("campaign.name"), Text),
            ("campaign id", Some("campaign.id"), Text),
            ("ad group", Some("ad_group.name"), Text),
            ("ad group id", Some("ad_group.id"), Text),
            ("ad id", Some("ad_group_ad.ad.id"), Text),
            ("ad name", Some("ad_group_ad.ad.name"), Text),
            ("cost", Some("metrics.cost_micros"), Micros),
            ("impr.", Some("metrics.impressions"), Number),
            ("impressions", Some("metrics.impressions"), Number),
            ("clicks", Some("metrics.clicks"), Number),
            ("conversions", Some("metrics.conversions"), Number),
            ("conv. value", Some("metrics.conversions_value"), Number),
            (
                "conversion value",
                Some("metrics.conversions_value"),
                Number,
            ),
            ("campaign status", None, Text),
            ("ad group status", None, Text),
            ("campaign type", None, Text),
        ],
        // Meta Ads Manager export ("Amount spent (EUR)" is read apart).
        SourceKind::MetaAds => &[
            ("reporting starts", Some("date_start"), Day),
            ("reporting ends", Some("date_stop"), Day),
            ("day", Some("date_start"), Day),
            ("account id", Some("account_id"), Text),
            ("account name", Some("account_name"), Text),
            ("currency", Some("account_currency"), Text),
            ("campaign id", Some("campaign_id"), Text),
            ("campaign name", Some("campaign_name"), Text),
            ("ad set id", Some("adset_id"), Text),
            ("ad set name", Some("adset_name"), Text),
            ("ad id", Some("ad_id"), Text),
            ("ad name", Some("ad_name"), Text),
            ("impressions", Some("impressions"), Number),
            // The API's `clicks` is every click; "Link clicks" is a subset
            // (`inline_link_clicks`) and is not read as clicks.
            ("clicks (all)", Some("clicks"), Number),
            ("link clicks", None, Text),
            ("purchases", Some("actions:omni_purchase"), Number),
            (
                "purchases conversion value",
                Some("action_values:omni_purchase"),
                Number,
            ),
            ("results", None, Text),
            ("result indicator", None, Text),
            ("reach", None, Text),
            ("frequency", None, Text),
        ],
        // TikTok Ads Manager custom report export.
        SourceKind::TiktokAds => &[
            ("date", Some("stat_time_day"), Day),
            ("by day", Some("stat_time_day"), Day),
            ("advertiser id", Some("advertiser_id"), Text),
            ("advertiser name", Some("advertiser_name"), Text),
            ("campaign id", Some("campaign_id"), Text),
            ("campaign name", Some("campaign_name"), Text),
            ("ad group id", Some("adgroup_id"), Text),
            ("ad group name", Some("adgroup_name"), Text),
            ("ad id", Some("ad_id"), Text),
            ("ad name", Some("ad_name"), Text),
            ("cost", Some("spend"), Number),
            ("impressions", Some("impressions"), Number),
            ("clicks", Some("clicks"), Number),
            ("clicks (destination)", Some("clicks"), Number),
            ("conversions", Some("conversion"), Number),
            ("total purchase value", Some("total_purchase_value"), Number),
            ("currency", None, Text),
        ],
        // LinkedIn Campaign Manager campaign performance export.
        SourceKind::LinkedinAds => &[
            ("start date (in utc)", Some("date"), Day),
            ("start date", Some("date"), Day),
            ("campaign id", Some("pivotValue"), Urn("sponsoredCampaign")),
            (
                "campaign group id",
                Some("pivotValue"),
                Urn("sponsoredCampaignGroup"),
            ),
            ("creative id", Some("pivotValue"), Urn("sponsoredCreative")),
            ("total spent", Some("costInLocalCurrency"), Number),
            ("impressions", Some("impressions"), Number),
            ("clicks", Some("clicks"), Number),
            ("conversions", Some("externalWebsiteConversions"), Number),
            (
                "total conversion value",
                Some("conversionValueInLocalCurrency"),
                Number,
            ),
            (
                "conversion value",
                Some("conversionValueInLocalCurrency"),
                Number,
            ),
            ("campaign name", None, Text),
            ("campaign group name", None, Text),
            ("account name", None, Text),
            ("currency", None, Text),
            ("campaign status", None, Text),
        ],
        // GA4 report / exploration download.
        SourceKind::Ga4 => &[
            ("date", Some("date"), Day),
            ("session source", Some("sessionSource"), Text),
            ("session medium", Some("sessionMedium"), Text),
            ("session campaign", Some("sessionCampaignName"), Text),
            ("session campaign name", Some("sessionCampaignName"), Text),
            ("device category", Some("deviceCategory"), Text),
            ("country", Some("country"), Text),
            ("sessions", Some("sessions"), Number),
            ("engaged sessions", Some("engagedSessions"), Number),
            ("key events", Some("keyEvents"), Number),
            ("total revenue", Some("totalRevenue"), Number),
        ],
        // Shopify admin orders export.
        SourceKind::Shopify => &[
            ("id", Some("id"), Text),
            ("name", Some("name"), Text),
            ("email", Some("email"), Text),
            ("financial status", Some("financial_status"), Text),
            ("currency", Some("currency"), Text),
            ("subtotal", Some("subtotal_price"), Number),
            ("total", Some("total_price"), Number),
            ("created at", Some("created_at"), Timestamp),
            ("source", Some("source_name"), Text),
            ("landing site", Some("landing_site"), Text),
        ],
    }
}

/// Columns an export must have: one of the API fields (after mapping),
/// and the display header to name when none is there.
fn required(kind: SourceKind) -> &'static [(&'static [&'static str], &'static str)] {
    match kind {
        SourceKind::GoogleAds => &[
            (&["segments.date"], "Day"),
            (&["campaign.id"], "Campaign ID"),
            (&["metrics.costMicros"], "Cost"),
            (&["metrics.impressions"], "Impr."),
            (&["metrics.clicks"], "Clicks"),
        ],
        SourceKind::MetaAds => &[
            (&["date_start"], "Reporting starts"),
            (&["campaign_id"], "Campaign ID"),
            (&["spend"], "Amount spent (CUR)"),
            (&["impressions"], "Impressions"),
            (&["clicks"], "Clicks (all)"),
        ],
        SourceKind::TiktokAds => &[
            (&["stat_time_day", "stat_time_hour"], "Date"),
            (&["campaign_id"], "Campaign ID"),
            (&["spend"], "Cost"),
            (&["impressions"], "Impressions"),
            (&["clicks"], "Clicks"),
        ],
        SourceKind::LinkedinAds => &[
            (&["date"], "Start Date (in UTC)"),
            (&["pivotValue", "pivotValues"], "Campaign ID"),
            (&["costInLocalCurrency"], "Total Spent"),
            (&["impressions"], "Impressions"),
            (&["clicks"], "Clicks"),
        ],
        SourceKind::Ga4 => &[(&["date"], "Date"), (&["sessions"], "Sessions")],
        SourceKind::Shopify => &[
            (&["id"], "Id"),
            (&["created_at"], "Created at"),
            (&["currency"], "Currency"),
            (&["total_price"], "Total"),
            (&["subtotal_price"], "Subtotal"),
        ],
    }
}

/// Whether a header is written as an API field name: they all start with a
/// lower-case letter and hold no spaces or punctuation but `_ . :`.
fn api_style(header: &str) -> bool {
    header.starts_with(|c: char| c.is_ascii_lowercase())
        && header
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':'))
}

/// `cost_micros` → `costMicros`.
fn camel(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    let mut upper = false;
    for c in segment.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The API field name a required-column check compares: Google's GAQL
/// names in the camel case of the JSON payload.
fn normalized(kind: SourceKind, field: &str) -> String {
    match kind {
        SourceKind::GoogleAds => field.split('.').map(camel).collect::<Vec<_>>().join("."),
        _ => field.to_owned(),
    }
}

/// Finds the column of one header; `currency` receives Meta's currency
/// from an "Amount spent (EUR)" header.
fn resolve(kind: SourceKind, raw: &str, currency: &mut Option<String>) -> Column {
    let header = raw.trim_start_matches('\u{feff}').trim().to_owned();
    let lower = header.to_lowercase();
    let column = |field: Option<&str>, cell: Cell| Column {
        header: header.clone(),
        field: field.map(str::to_owned),
        cell,
    };
    if kind == SourceKind::MetaAds
        && let Some(code) = lower
            .strip_prefix("amount spent (")
            .and_then(|r| r.strip_suffix(')'))
    {
        *currency = Some(code.trim().to_uppercase());
        return column(Some("spend"), Cell::Number);
    }
    if let Some((_, field, cell)) = aliases(kind).iter().find(|(a, _, _)| *a == lower) {
        return column(*field, *cell);
    }
    if api_style(&header) {
        return column(Some(header.as_str()), Cell::Text);
    }
    column(None, Cell::Text)
}

/// A display date as `YYYY-MM-DD`.
fn day_text(cell: &str) -> Option<String> {
    let d = chrono::NaiveDate::parse_from_str(cell, "%Y-%m-%d")
        .or_else(|_| chrono::NaiveDate::parse_from_str(cell, "%m/%d/%Y"))
        .or_else(|_| chrono::NaiveDate::parse_from_str(cell, "%Y%m%d"))
        .or_else(|_| chrono::NaiveDate::parse_from_str(cell, "%b %d, %Y"))
        .ok()?;
    Some(d.format("%Y-%m-%d").to_string())
}

/// A cell's value for the API field, or `None` when it is a missing value.
fn cell_value(kind: SourceKind, column: &Column, cell: &str) -> Result<Option<String>, String> {
    let cell = cell.trim();
    if cell.is_empty() || (kind == SourceKind::GoogleAds && cell == "--") {
        return Ok(None);
    }
    let number = || cell.replace(',', "");
    let bad = |what: &str| format!("column '{}': '{cell}' is not {what}", column.header);
    Ok(Some(match column.cell {
        Cell::Text => cell.to_owned(),
        Cell::Number => number(),
        Cell::Micros => decimal_to_micros(&number())
            .ok_or_else(|| bad("an amount"))?
            .to_string(),
        Cell::Digits => cell.replace('-', ""),
        Cell::Day => match kind {
            // GA4 dates are YYYYMMDD in the API.
            SourceKind::Ga4 => day_text(cell)
                .ok_or_else(|| bad("a date"))?
                .replace('-', ""),
            // TikTok's time dimensions carry a time of day.
            SourceKind::TiktokAds if cell.len() > 10 => cell.to_owned(),
            _ => day_text(cell).ok_or_else(|| bad("a date"))?,
        },
        Cell::Timestamp => chrono::DateTime::parse_from_str(cell, "%Y-%m-%d %H:%M:%S %z")
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|_| cell.to_owned()),
        Cell::Urn(_) if cell.starts_with("urn:li:") => cell.to_owned(),
        Cell::Urn(entity) => format!("urn:li:{entity}:{cell}"),
    }))
}

/// Sets `value` at the dotted `path` of `object`.
fn set(object: &mut Map<String, Value>, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("an empty column name")?;
    let mut at = object;
    for p in parents {
        let entry = at
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        at = entry
            .as_object_mut()
            .ok_or_else(|| format!("column '{}' clashes with another column", path.join(".")))?;
    }
    at.insert(last.clone(), value);
    Ok(())
}

fn row_object(
    kind: SourceKind,
    columns: &[Column],
    record: &csv::StringRecord,
    currency: Option<&str>,
) -> Result<Value, String> {
    let mut row = Map::new();
    for (column, cell) in columns.iter().zip(record.iter()) {
        let Some(header) = &column.field else {
            continue;
        };
        let Some(cell) = cell_value(kind, column, cell)? else {
            continue;
        };
        let text = Value::String(cell.clone());
        let dotted = |h: &str| h.split('.').map(str::to_owned).collect::<Vec<_>>();
        match kind {
            SourceKind::GoogleAds => {
                let path: Vec<String> = header.split('.').map(camel).collect();
                set(&mut row, &path, text)?;
            }
            SourceKind::MetaAds => {
                if let Some((list @ ("actions" | "action_values"), action)) = header.split_once(':')
                {
                    let entry = row
                        .entry(list.to_owned())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(items) = entry {
                        items.push(json!({"action_type": action, "value": cell}));
                    }
                } else {
                    set(&mut row, &dotted(header), text)?;
                }
            }
            SourceKind::TiktokAds => {
                let path = if header.contains('.') {
                    dotted(header)
                } else if TIKTOK_DIMENSIONS.contains(&header.as_str()) {
                    vec!["dimensions".to_owned(), header.clone()]
                } else {
                    vec!["metrics".to_owned(), header.clone()]
                };
                set(&mut row, &path, text)?;
            }
            SourceKind::LinkedinAds => match header.as_str() {
                "date" => {
                    let d = chrono::NaiveDate::parse_from_str(&cell, "%Y-%m-%d")
                        .map_err(|_| format!("column 'date': '{cell}' is not YYYY-MM-DD"))?;
                    use chrono::Datelike;
                    let ymd = json!({"year": d.year(), "month": d.month(), "day": d.day()});
                    row.insert("dateRange".to_owned(), json!({"start": ymd, "end": ymd}));
                }
                "pivotValue" | "pivotValues" => {
                    let entry = row
                        .entry("pivotValues".to_owned())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(items) = entry {
                        items.push(text);
                    }
                }
                _ => set(&mut row, &dotted(header), text)?,
            },
            SourceKind::Ga4 => {
                row.insert(header.clone(), text);
            }
            SourceKind::Shopify => set(&mut row, &dotted(header), text)?,
        }
    }
    if let Some(code) = currency
        && kind == SourceKind::MetaAds
        && !row.contains_key("account_currency")
    {
        row.insert("account_currency".to_owned(), json!(code));
    }
    Ok(Value::Object(row))
}

/// The CSV delimiter: tab when the first line has more tabs than commas
/// (Google Ads and Excel "CSV" downloads are often tab-separated).
fn delimiter(body: &[u8]) -> u8 {
    let first = body.split(|b| *b == b'\n').next().unwrap_or_default();
    let count = |c: u8| first.iter().filter(|b| **b == c).count();
    if count(b'\t') > count(b',') {
        b'\t'
    } else {
        b','
    }
}

/// Whether a row is a total of a UI export rather than data.
fn is_total(record: &csv::StringRecord) -> bool {
    record
        .iter()
        .map(str::trim)
        .find(|c| !c.is_empty())
        .is_some_and(|c| {
            let c = c.to_lowercase();
            c.starts_with("total") || c.starts_with("grand total")
        })
}

/// The API payload equivalent to a CSV export of `kind`.
pub fn csv_payload(kind: SourceKind, body: &[u8]) -> Result<Vec<u8>, String> {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter(body))
        .from_reader(body);
    let mut records = reader.records();
    // The header is the first line with two cells or more that is not a
    // comment: titles and date-range lines above it are skipped.
    let (header, header_line) = loop {
        match records.next() {
            None => return Err("the CSV file has no header row".to_owned()),
            Some(Err(e)) => return Err(format!("the CSV header cannot be read: {e}")),
            Some(Ok(r)) => {
                let cells = r.iter().filter(|c| !c.trim().is_empty()).count();
                let comment = r.get(0).is_some_and(|c| c.trim_start().starts_with('#'));
                if cells >= 2 && !comment {
                    let line = r.position().map_or(1, |p| p.line());
                    break (r, line);
                }
            }
        }
    };
    let mut currency = None;
    let columns: Vec<Column> = header
        .iter()
        .map(|h| resolve(kind, h, &mut currency))
        .collect();
    let found: Vec<String> = columns
        .iter()
        .filter_map(|c| c.field.as_deref().map(|f| normalized(kind, f)))
        .collect();
    for (fields, display) in required(kind) {
        if !fields.iter().any(|f| found.iter().any(|x| x == f)) {
            return Err(format!(
                "missing column '{display}' (API field '{}'); the header (line {header_line}) has: {}",
                fields.join("' or '"),
                columns
                    .iter()
                    .map(|c| c.header.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let mut rows = Vec::new();
    let mut last_order: Option<Value> = None;
    for record in records {
        let record = record.map_err(|e| format!("CSV: {e}"))?;
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(|c| c.trim().is_empty()) || is_total(&record) {
            continue;
        }
        if record.len() != columns.len() {
            return Err(format!(
                "CSV line {line}: {} cells where the header has {}",
                record.len(),
                columns.len()
            ));
        }
        let row = row_object(kind, &columns, &record, currency.as_deref())
            .map_err(|e| format!("CSV line {line}: {e}"))?;
        if kind == SourceKind::Shopify {
            // Further line items of the same order repeat its id.
            let id = row.get("id").cloned();
            if id.is_some() && id == last_order {
                continue;
            }
            last_order = id;
        }
        rows.push(row);
    }
    let payload = match kind {
        SourceKind::GoogleAds => json!([{ "results": rows }]),
        SourceKind::MetaAds => json!({ "data": rows }),
        SourceKind::TiktokAds => json!({"code": 0, "message": "OK", "data": {"list": rows}}),
        SourceKind::LinkedinAds => json!({ "elements": rows }),
        SourceKind::Shopify => json!({ "orders": rows }),
        SourceKind::Ga4 => {
            let mut names: Vec<&str> = Vec::new();
            for c in &columns {
                if let Some(f) = c.field.as_deref()
                    && !names.contains(&f)
                {
                    names.push(f);
                }
            }
            let (mets, dims): (Vec<&str>, Vec<&str>) =
                names.into_iter().partition(|h| ga4::METRICS.contains(h));
            let values = |names: &[&str], row: &Value| {
                names
                    .iter()
                    .map(|n| json!({"value": row.get(*n).cloned().unwrap_or(Value::Null)}))
                    .collect::<Vec<_>>()
            };
            let ga_rows: Vec<Value> = rows
                .iter()
                .map(|r| json!({"dimensionValues": values(&dims, r), "metricValues": values(&mets, r)}))
                .collect();
            json!({
                "dimensionHeaders": dims.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
                "metricHeaders": mets.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
                "rows": ga_rows,
                "rowCount": rows.len(),
            })
        }
    };
    serde_json::to_vec(&payload).map_err(|e| format!("cannot convert the CSV rows: {e}"))
}
