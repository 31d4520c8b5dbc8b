//! Google Ads: REST `googleAds:searchStream` with GAQL at ad level.
//!
//! Quirks: int64 fields (ids, `costMicros`, `impressions`, `clicks`) arrive
//! as strings, cost is in micros, the SearchStream body is a JSON array of
//! batches any of which can be an `{"error": ...}` instead, and a batch with
//! no rows has no `results` key. Quota errors are `RESOURCE_EXHAUSTED` with
//! a `RetryInfo.retryDelay`.

use serde_json::Value;

use super::{
    AdRow, FetchContext, Fetched, ParseContext, Parsed, Record, Reject, SourceKind, Utm, at,
    count_field, float_field, json_body, opt_text, or_zero, text_field,
};
use crate::sources::http::{Call, Reply, SourceError, Verdict, classify_status, proto_duration};

/// The API version in the URL.
pub const API_VERSION: &str = "v21";

/// The GAQL query of one date range.
pub fn query(from: chrono::NaiveDate, to: chrono::NaiveDate) -> String {
    format!(
        "SELECT customer.id, customer.descriptive_name, customer.currency_code, \
         campaign.id, campaign.name, ad_group.id, ad_group.name, ad_group_ad.ad.id, \
         ad_group_ad.ad.name, metrics.cost_micros, metrics.impressions, metrics.clicks, \
         metrics.conversions, metrics.conversions_value, segments.date \
         FROM ad_group_ad WHERE segments.date BETWEEN '{from}' AND '{to}'"
    )
}

/// Fields a result row may carry, as the API names them: those the GAQL
/// [`query`] selects (camel case, nested per resource) and the
/// `resourceName` the API adds to every resource it returns. Anything else
/// in a row is schema drift: recorded in [`Parsed::unmapped`] and ignored,
/// never a reason to drop the row.
pub const KNOWN_FIELDS: [&str; 20] = [
    "customer.resourceName",
    "customer.id",
    "customer.descriptiveName",
    "customer.currencyCode",
    "campaign.resourceName",
    "campaign.id",
    "campaign.name",
    "adGroup.resourceName",
    "adGroup.id",
    "adGroup.name",
    "adGroupAd.resourceName",
    "adGroupAd.ad.resourceName",
    "adGroupAd.ad.id",
    "adGroupAd.ad.name",
    "metrics.costMicros",
    "metrics.impressions",
    "metrics.clicks",
    "metrics.conversions",
    "metrics.conversionsValue",
    "segments.date",
];

/// An error object of the API (unary body or SearchStream element).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// How to treat it.
    pub verdict: Verdict,
}

/// Reads an `{"error": {...}}` object: its message with every
/// GoogleAdsFailure error, and whether a retry can help.
pub fn api_error(error: &Value) -> ApiError {
    let status = at(error, "status").and_then(Value::as_str).unwrap_or("");
    let mut message = format!(
        "{status}: {}",
        at(error, "message").and_then(Value::as_str).unwrap_or("")
    );
    let mut retry_delay = None;
    for detail in error
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for e in detail
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let code = e
                .get("errorCode")
                .and_then(Value::as_object)
                .and_then(error_code)
                .map(|(k, v)| format!("{k}={v}"))
                .unwrap_or_default();
            let text = e.get("message").and_then(Value::as_str).unwrap_or_default();
            message.push_str(&format!("; {code}: {text}"));
        }
        if let Some(d) = detail.get("retryDelay").and_then(Value::as_str) {
            retry_delay = proto_duration(d);
        }
    }
    let verdict = match status {
        "RESOURCE_EXHAUSTED" => Verdict::Retry {
            rate_limited: true,
            after: retry_delay,
            reason: message,
        },
        "UNAVAILABLE" | "INTERNAL" | "DEADLINE_EXCEEDED" | "ABORTED" => Verdict::Retry {
            rate_limited: false,
            after: retry_delay,
            reason: message,
        },
        "UNAUTHENTICATED" => Verdict::Unauthorized(message),
        _ => Verdict::Fail(message),
    };
    ApiError { verdict }
}

/// The one set case of a GoogleAdsFailure `errorCode` (a oneof:
/// `{"queryError": "UNRECOGNIZED_FIELD"}`): a `...Error` key with an enum
/// name, else the first key with a string value; other keys are ignored.
fn error_code(code: &serde_json::Map<String, Value>) -> Option<(&str, &str)> {
    let cases = || {
        code.iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
    };
    cases()
        .find(|(k, _)| k.ends_with("Error"))
        .or_else(|| cases().next())
}

fn classify(reply: &Reply) -> Verdict {
    if reply.status.is_success() {
        // Errors inside a successful stream are handled while parsing.
        return Verdict::Ok;
    }
    let body: Option<Value> = serde_json::from_slice(&reply.body).ok();
    let error = body.as_ref().and_then(|b| match b {
        Value::Array(items) => items.iter().find_map(|i| i.get("error")).cloned(),
        other => other.get("error").cloned(),
    });
    match error {
        Some(e) => match api_error(&e).verdict {
            Verdict::Fail(m) if reply.status.is_server_error() => Verdict::Retry {
                rate_limited: false,
                after: None,
                reason: m,
            },
            v => v,
        },
        None => classify_status(reply),
    }
}

/// Parses a SearchStream body (array of batches) or one `search` page. An
/// error element fails the whole payload: a stream that broke part-way is
/// not a complete answer.
pub fn parse_stream(body: &[u8], ctx: &ParseContext) -> Result<(Parsed, Vec<String>), ApiError> {
    let value = json_body(body).map_err(|m| ApiError {
        verdict: Verdict::Fail(m),
    })?;
    let batches = match value {
        Value::Array(items) => items,
        obj @ Value::Object(_) => vec![obj],
        other => {
            return Err(ApiError {
                verdict: Verdict::Fail(format!(
                    "expected an array of batches, got {}",
                    super::json_type(&other)
                )),
            });
        }
    };
    let mut parsed = Parsed::default();
    let mut request_ids = Vec::new();
    for batch in &batches {
        if let Some(error) = batch.get("error") {
            return Err(api_error(error));
        }
        if let Some(id) = batch.get("requestId").and_then(Value::as_str) {
            request_ids.push(id.to_owned());
        }
        // An empty batch has no `results` key at all.
        for row in batch
            .get("results")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            parsed.note_unmapped(row, &KNOWN_FIELDS);
            parsed.push(parse_row(row, ctx).map(Record::Ad));
        }
    }
    Ok((parsed, request_ids))
}

/// Parses a saved payload.
pub fn parse(body: &[u8], ctx: &ParseContext) -> Result<Parsed, String> {
    parse_stream(body, ctx)
        .map(|(p, _)| p)
        .map_err(|e| match e.verdict {
            Verdict::Retry { reason, .. }
            | Verdict::Fail(reason)
            | Verdict::Unauthorized(reason) => {
                format!("Google Ads error: {reason}")
            }
            Verdict::Ok => "Google Ads error".to_owned(),
        })
}

fn parse_row(row: &Value, ctx: &ParseContext) -> Result<AdRow, Reject> {
    let reject = |reason: String| Reject::new(reason, row);
    let date_text =
        text_field(at(row, "segments.date")).map_err(|e| reject(e.describe("segments.date")))?;
    let date = chrono::NaiveDate::parse_from_str(&date_text, "%Y-%m-%d").map_err(|_| {
        reject(format!(
            "field 'segments.date': '{date_text}' is not YYYY-MM-DD"
        ))
    })?;
    let campaign_id =
        text_field(at(row, "campaign.id")).map_err(|e| reject(e.describe("campaign.id")))?;
    let cost_micros = count_field(at(row, "metrics.costMicros"))
        .map_err(|e| reject(e.describe("metrics.costMicros")))?;
    let impressions = count_field(at(row, "metrics.impressions"))
        .map_err(|e| reject(e.describe("metrics.impressions")))?;
    let clicks =
        count_field(at(row, "metrics.clicks")).map_err(|e| reject(e.describe("metrics.clicks")))?;
    let conversions = or_zero(float_field(at(row, "metrics.conversions")))
        .map_err(|e| reject(e.describe("metrics.conversions")))?;
    let conversion_value = or_zero(super::money_field(at(row, "metrics.conversionsValue")))
        .map_err(|e| reject(e.describe("metrics.conversionsValue")))?;
    let currency = opt_text(at(row, "customer.currencyCode"))
        .or_else(|| ctx.currency.clone())
        .ok_or_else(|| reject("missing field 'customer.currencyCode'".to_owned()))?;
    Ok(AdRow {
        date,
        // Customer ids are written without dashes, as the API returns them.
        account_id: opt_text(at(row, "customer.id"))
            .unwrap_or_else(|| ctx.account_id.replace('-', "")),
        account_name: opt_text(at(row, "customer.descriptiveName")),
        campaign_id,
        campaign_name: opt_text(at(row, "campaign.name")),
        ad_group_id: opt_text(at(row, "adGroup.id")),
        ad_group_name: opt_text(at(row, "adGroup.name")),
        ad_id: opt_text(at(row, "adGroupAd.ad.id")),
        ad_name: opt_text(at(row, "adGroupAd.ad.name")),
        spend_micros: i128::from(cost_micros),
        impressions,
        clicks,
        conversions,
        conversion_value_micros: conversion_value,
        currency,
        utm: Utm::default(),
        raw: row.to_string(),
    })
}

/// Fetches one customer's date range in one SearchStream call.
pub async fn fetch(ctx: &FetchContext<'_>) -> Result<Fetched, SourceError> {
    let customer = ctx.parse.account_id.replace('-', "");
    let url = format!(
        "{}/{API_VERSION}/customers/{customer}/googleAds:searchStream",
        ctx.base_url
    );
    let mut call = Call::post_json(url, serde_json::json!({ "query": query(ctx.from, ctx.to) }));
    if let Some(dev) = &ctx.creds.developer_token {
        call = call.header("developer-token", dev.clone());
    }
    if let Some(login) = &ctx.creds.login_customer_id {
        call = call.header("login-customer-id", login.replace('-', ""));
    }
    // An error inside the stream of a 200 is judged like a unary error, so
    // a quota error mid-stream is retried as a whole call.
    let classify_all = |reply: &Reply| {
        let verdict = classify(reply);
        if verdict != Verdict::Ok {
            return verdict;
        }
        match parse_stream(&reply.body, &ctx.parse) {
            Err(e) => e.verdict,
            Ok(_) => Verdict::Ok,
        }
    };
    let reply = ctx.send(SourceKind::GoogleAds, &call, classify_all).await?;
    let (parsed, mut ids) = parse_stream(&reply.body, &ctx.parse).map_err(|e| {
        ctx.malformed(match e.verdict {
            Verdict::Retry { reason, .. }
            | Verdict::Fail(reason)
            | Verdict::Unauthorized(reason) => reason,
            Verdict::Ok => String::new(),
        })
    })?;
    if let Some(id) = reply.request_id {
        ids.insert(0, id);
    }
    ids.dedup();
    Ok(Fetched {
        parsed,
        request_ids: ids,
        inactive: None,
    })
}
