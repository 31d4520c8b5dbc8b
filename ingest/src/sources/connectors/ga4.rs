//! GA4 Data API: `properties/{id}:runReport`, paged by `offset`.
//!
//! Quirks: every value is a string; dates are `YYYYMMDD`; `rows` is absent
//! when there is nothing; headers say which column is which, so values are
//! read by header name; `totals`, `maximums` and `minimums` are not rows.
//! The currency is `metadata.currencyCode`.

use serde_json::Value;

use super::{
    FetchContext, Fetched, ParseContext, Parsed, Record, Reject, SessionRow, SourceKind, at,
    count_field, float_field, json_body, money_field, opt_text, or_zero,
};
use crate::sources::http::{Call, Reply, SourceError, Verdict, classify_status};

/// Dimensions asked for.
pub const DIMENSIONS: [&str; 6] = [
    "date",
    "sessionSource",
    "sessionMedium",
    "sessionCampaignName",
    "deviceCategory",
    "country",
];
/// Metrics asked for.
pub const METRICS: [&str; 4] = ["sessions", "engagedSessions", "keyEvents", "totalRevenue"];
/// The keys of a report row. A column the report was not asked for, or a
/// row key besides these, is schema drift: recorded in [`Parsed::unmapped`]
/// and ignored (columns are read by header name, so an extra one cannot
/// shift the others).
pub const ROW_FIELDS: [&str; 2] = ["dimensionValues", "metricValues"];
/// Rows per page.
pub const PAGE_ROWS: u64 = 10_000;

/// One report page.
#[derive(Debug, Default)]
pub struct Page {
    /// Records and rejects.
    pub parsed: Parsed,
    /// `rowCount`: rows of the whole report.
    pub row_count: u64,
    /// Rows in this page.
    pub rows_in_page: u64,
}

fn names(value: &Value, key: &str) -> Vec<String> {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    h.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Parses one runReport page.
pub fn parse(body: &[u8], ctx: &ParseContext) -> Result<Page, String> {
    let value = json_body(body)?;
    if !value.is_object() {
        return Err("expected a runReport object".to_owned());
    }
    if let Some(error) = value.get("error") {
        return Err(format!("GA4 error: {error}"));
    }
    let dims = names(&value, "dimensionHeaders");
    let mets = names(&value, "metricHeaders");
    let currency = opt_text(at(&value, "metadata.currencyCode")).or_else(|| ctx.currency.clone());
    let rows = value
        .get("rows")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut parsed = Parsed::default();
    if !rows.is_empty() {
        parsed.unmapped.extend(
            dims.iter()
                .filter(|d| !DIMENSIONS.contains(&d.as_str()))
                .chain(mets.iter().filter(|m| !METRICS.contains(&m.as_str())))
                .cloned(),
        );
    }
    for row in &rows {
        parsed.note_unmapped(row, &ROW_FIELDS);
        parsed.push(parse_row(row, &dims, &mets, currency.as_deref(), ctx).map(Record::Session));
    }
    Ok(Page {
        parsed,
        row_count: value.get("rowCount").and_then(Value::as_u64).unwrap_or(0),
        rows_in_page: rows.len() as u64,
    })
}

fn cell<'a>(row: &'a Value, list: &str, headers: &[String], name: &str) -> Option<&'a Value> {
    let i = headers.iter().position(|h| h == name)?;
    at(row.get(list)?.get(i)?, "value")
}

fn parse_row(
    row: &Value,
    dims: &[String],
    mets: &[String],
    currency: Option<&str>,
    ctx: &ParseContext,
) -> Result<SessionRow, Reject> {
    let reject = |reason: String| Reject::new(reason, row);
    let dim = |name: &str| cell(row, "dimensionValues", dims, name);
    let met = |name: &str| cell(row, "metricValues", mets, name);
    let date_text = dim("date")
        .and_then(Value::as_str)
        .ok_or_else(|| reject("missing dimension 'date'".to_owned()))?;
    let date = chrono::NaiveDate::parse_from_str(date_text, "%Y%m%d")
        .map_err(|_| reject(format!("dimension 'date': '{date_text}' is not YYYYMMDD")))?;
    let sessions = count_field(met("sessions")).map_err(|e| reject(e.describe("sessions")))?;
    let engaged = or_zero(count_field(met("engagedSessions")))
        .map_err(|e| reject(e.describe("engagedSessions")))?;
    let key_events =
        or_zero(float_field(met("keyEvents"))).map_err(|e| reject(e.describe("keyEvents")))?;
    let revenue = or_zero(money_field(met("totalRevenue")))
        .map_err(|e| reject(e.describe("totalRevenue")))?;
    let text = |name: &str| opt_text(dim(name)).filter(|s| s != "(not set)");
    Ok(SessionRow {
        date,
        property_id: ctx.account_id.clone(),
        source: text("sessionSource"),
        medium: text("sessionMedium"),
        campaign: text("sessionCampaignName"),
        device_category: text("deviceCategory"),
        country: text("country"),
        sessions,
        engaged_sessions: engaged,
        key_events,
        revenue_micros: revenue,
        currency: currency
            .map(str::to_owned)
            .ok_or_else(|| reject("missing 'metadata.currencyCode'".to_owned()))?,
        raw: row.to_string(),
    })
}

fn classify(reply: &Reply) -> Verdict {
    // GA4 quota exhaustion is 429 RESOURCE_EXHAUSTED; the default covers it.
    classify_status(reply)
}

/// Fetches one property's date range, page by page.
pub async fn fetch(ctx: &FetchContext<'_>) -> Result<Fetched, SourceError> {
    let url = format!(
        "{}/v1beta/properties/{}:runReport",
        ctx.base_url, ctx.parse.account_id
    );
    let mut fetched = Fetched::default();
    let mut offset = 0u64;
    loop {
        let body = serde_json::json!({
            "dateRanges": [{"startDate": ctx.from.to_string(), "endDate": ctx.to.to_string()}],
            "dimensions": DIMENSIONS.map(|n| serde_json::json!({"name": n})),
            "metrics": METRICS.map(|n| serde_json::json!({"name": n})),
            "limit": PAGE_ROWS.to_string(),
            "offset": offset.to_string(),
            "keepEmptyRows": false,
        });
        let reply = ctx
            .send(
                SourceKind::Ga4,
                &Call::post_json(url.clone(), body),
                classify,
            )
            .await?;
        let page = parse(&reply.body, &ctx.parse)
            .map_err(|m| ctx.malformed(format!("page at offset {offset}: {m}")))?;
        fetched.request_ids.extend(reply.request_id);
        fetched.parsed.extend(page.parsed);
        offset += page.rows_in_page;
        if page.rows_in_page == 0 || offset >= page.row_count {
            return Ok(fetched);
        }
    }
}
