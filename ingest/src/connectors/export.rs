//! Platform CSV exports: each row becomes the JSON record of the platform's
//! API shape, wrapped in the API's envelope, and goes through the same
//! parser as a live page.
//!
//! The header row names the API's fields, as the platforms' report
//! downloads and ETL tools write them:
//! - Google Ads: GAQL field names, `segments.date`, `campaign.id`,
//!   `metrics.cost_micros` (snake or camel case);
//! - Meta: insights field names (`date_start`, `spend`, ...), and
//!   `actions:TYPE` / `action_values:TYPE` columns for the action lists;
//! - TikTok: dimension and metric names (`stat_time_day`, `ad_id`, `spend`);
//! - LinkedIn: analytics field names, `date` (YYYY-MM-DD) for the day and
//!   `pivotValue` for the entity URN;
//! - GA4: dimension and metric names (`date` as YYYYMMDD, `sessions`);
//! - Shopify: order field names (`id`, `created_at`, `total_price`,
//!   `landing_site`, `email`, ...).
//!
//! A dotted header (`metrics.clicks`) is a nested field. Empty cells are
//! missing values.

use serde_json::{Map, Value, json};

use super::{SourceKind, ga4};

/// TikTok's dimension names; other TikTok columns are metrics.
const TIKTOK_DIMENSIONS: [&str; 6] = [
    "ad_id",
    "adgroup_id",
    "campaign_id",
    "advertiser_id",
    "stat_time_day",
    "stat_time_hour",
];

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
    headers: &[String],
    record: &csv::StringRecord,
) -> Result<Value, String> {
    let mut row = Map::new();
    for (header, cell) in headers.iter().zip(record.iter()) {
        let cell = cell.trim();
        if cell.is_empty() {
            continue;
        }
        let text = Value::String(cell.to_owned());
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
                    let d = chrono::NaiveDate::parse_from_str(cell, "%Y-%m-%d")
                        .map_err(|_| format!("column 'date': '{cell}' is not YYYY-MM-DD"))?;
                    use chrono::Datelike;
                    let ymd = json!({"year": d.year(), "month": d.month(), "day": d.day()});
                    row.insert("dateRange".to_owned(), json!({"start": ymd, "end": ymd}));
                }
                "pivotValue" | "pivotValues" => {
                    row.insert("pivotValues".to_owned(), json!([cell]));
                }
                _ => set(&mut row, &dotted(header), text)?,
            },
            SourceKind::Ga4 => {
                row.insert(header.clone(), text);
            }
            SourceKind::Shopify => set(&mut row, &dotted(header), text)?,
        }
    }
    Ok(Value::Object(row))
}

/// The API payload equivalent to a CSV export of `kind`.
pub fn csv_payload(kind: SourceKind, body: &[u8]) -> Result<Vec<u8>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::Headers)
        .from_reader(body);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format!("the CSV header cannot be read: {e}"))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_owned())
        .collect();
    if headers.iter().all(String::is_empty) {
        return Err("the CSV file has no header row".to_owned());
    }
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        // Line 1 is the header.
        let record = record.map_err(|e| format!("CSV line {}: {e}", i + 2))?;
        rows.push(
            row_object(kind, &headers, &record).map_err(|e| format!("CSV line {}: {e}", i + 2))?,
        );
    }
    let payload = match kind {
        SourceKind::GoogleAds => json!([{ "results": rows }]),
        SourceKind::MetaAds => json!({ "data": rows }),
        SourceKind::TiktokAds => json!({"code": 0, "message": "OK", "data": {"list": rows}}),
        SourceKind::LinkedinAds => json!({ "elements": rows }),
        SourceKind::Shopify => json!({ "orders": rows }),
        SourceKind::Ga4 => {
            let (mets, dims): (Vec<&String>, Vec<&String>) = headers
                .iter()
                .partition(|h| ga4::METRICS.contains(&h.as_str()));
            let values = |names: &[&String], row: &Value| {
                names
                    .iter()
                    .map(|n| json!({"value": row.get(n.as_str()).cloned().unwrap_or(Value::Null)}))
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
