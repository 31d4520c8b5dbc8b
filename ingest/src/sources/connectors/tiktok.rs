//! TikTok Marketing API: `/report/integrated/get/` (BASIC report, ad level,
//! daily), paged by `page`/`total_page`.
//!
//! Quirks: errors come as HTTP 200 with a non-zero `code` (40100 and 40133
//! are rate limits); metrics are strings, numbers, `null` or `"-"` (missing);
//! ids are 16-digit numbers or strings; hourly reports carry
//! `stat_time_hour`, daily ones `stat_time_day`. The report has no currency:
//! it is the advertiser's, from configuration.

use serde_json::Value;

use super::{
    AdRow, FetchContext, Fetched, ParseContext, Parsed, Record, Reject, SourceKind, Utm, at,
    count_field, float_field, json_body, money_field, opt_text, or_zero, text_field,
};
use crate::sources::http::{Call, Reply, SourceError, Verdict, classify_status, url_encode};

/// TikTok's rate-limit codes.
pub const RATE_LIMIT_CODES: [i64; 2] = [40100, 40133];

/// Dimensions a row may carry: the time dimensions and the ids of the
/// report's data levels.
pub const KNOWN_DIMENSIONS: [&str; 8] = [
    "stat_time_day",
    "stat_time_hour",
    "ad_id",
    "adgroup_id",
    "campaign_id",
    "advertiser_id",
    "age",
    "gender",
];

/// Metrics a row may carry: those the connector reads and the other
/// documented BASIC report metrics (saved reports of other tools ask for
/// them; they are known and ignored). Anything else in `metrics`, in
/// `dimensions` or at the top of a row is schema drift: recorded in
/// [`Parsed::unmapped`] and ignored, never a reason to drop the row.
pub const KNOWN_METRICS: [&str; 84] = [
    "ad_id",
    "ad_name",
    "ad_text",
    "adgroup_id",
    "adgroup_name",
    "advertiser_id",
    "advertiser_name",
    "app_install",
    "average_video_play",
    "average_video_play_per_user",
    "campaign_id",
    "campaign_name",
    "cash_spend",
    "clicks",
    "clicks_on_music_disc",
    "comments",
    "complete_payment",
    "conversion",
    "conversion_rate",
    "cost_per_1000_reached",
    "cost_per_app_install",
    "cost_per_conversion",
    "cost_per_purchase",
    "cost_per_registration",
    "cost_per_result",
    "cost_per_sales_lead",
    "cost_per_secondary_goal_result",
    "cost_per_total_app_event_add_to_cart",
    "cost_per_total_sales_lead",
    "cpc",
    "cpm",
    "cta_conversion",
    "cta_purchase",
    "ctr",
    "dpa_target_audience_type",
    "follows",
    "frequency",
    "impressions",
    "likes",
    "mobile_app_id",
    "onsite_shopping",
    "placement_type",
    "profile_visits",
    "profile_visits_rate",
    "promotion_type",
    "purchase",
    "purchase_rate",
    "reach",
    "real_time_app_install",
    "real_time_app_install_cost",
    "real_time_conversion",
    "real_time_conversion_rate",
    "real_time_cost_per_conversion",
    "real_time_cost_per_result",
    "real_time_result",
    "real_time_result_rate",
    "registration",
    "registration_rate",
    "result",
    "result_rate",
    "sales_lead",
    "sales_lead_rate",
    "secondary_goal_result",
    "secondary_goal_result_rate",
    "shares",
    "spend",
    "total_app_event_add_to_cart",
    "total_complete_payment_rate",
    "total_onsite_shopping_value",
    "total_pageview",
    "total_purchase_value",
    "tt_app_id",
    "tt_app_name",
    "value_per_complete_payment",
    "video_play_actions",
    "video_views_p100",
    "video_views_p25",
    "video_views_p50",
    "video_views_p75",
    "video_watched_2s",
    "video_watched_6s",
    "voucher_spend",
    "vta_conversion",
    "vta_purchase",
];

/// The fields of a report row outside the known ones (schema drift).
fn unmapped_fields(row: &Value) -> Vec<String> {
    let Some(object) = row.as_object() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in object {
        let known: &[&str] = match key.as_str() {
            "dimensions" => &KNOWN_DIMENSIONS,
            "metrics" => &KNOWN_METRICS,
            "advertiser_id" => continue,
            _ => {
                out.push(key.clone());
                continue;
            }
        };
        if let Some(inner) = value.as_object() {
            out.extend(
                inner
                    .keys()
                    .filter(|k| !known.contains(&k.as_str()))
                    .map(|name| format!("{key}.{name}")),
            );
        }
    }
    out
}

/// One report page.
#[derive(Debug, Default)]
pub struct Page {
    /// Records and rejects.
    pub parsed: Parsed,
    /// Total pages, when reported.
    pub total_pages: Option<u64>,
    /// The body's `request_id`.
    pub request_id: Option<String>,
}

fn classify(reply: &Reply) -> Verdict {
    if !reply.status.is_success() {
        return classify_status(reply);
    }
    let Ok(body) = serde_json::from_slice::<Value>(&reply.body) else {
        return Verdict::Ok; // the parser names the problem
    };
    let code = body.get("code").and_then(Value::as_i64).unwrap_or(0);
    let message = format!(
        "code {code}: {}",
        body.get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
    );
    match code {
        0 => Verdict::Ok,
        c if RATE_LIMIT_CODES.contains(&c) => Verdict::Retry {
            rate_limited: true,
            after: None,
            reason: message,
        },
        40104 | 40105 => Verdict::Unauthorized(message),
        c if (50000..60000).contains(&c) => Verdict::Retry {
            rate_limited: false,
            after: None,
            reason: message,
        },
        _ => Verdict::Fail(message),
    }
}

/// Parses one report page.
pub fn parse(body: &[u8], ctx: &ParseContext) -> Result<Page, String> {
    let value = json_body(body)?;
    let code = value.get("code").and_then(Value::as_i64).unwrap_or(0);
    if code != 0 {
        return Err(format!(
            "TikTok error code {code}: {}",
            value
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ));
    }
    let rows = at(&value, "data.list")
        .and_then(Value::as_array)
        .ok_or("missing 'data.list' array in the report page")?;
    let mut parsed = Parsed::default();
    for row in rows {
        parsed.unmapped.extend(unmapped_fields(row));
        parsed.push(parse_row(row, ctx).map(Record::Ad));
    }
    Ok(Page {
        parsed,
        total_pages: at(&value, "data.page_info.total_page").and_then(Value::as_u64),
        request_id: opt_text(value.get("request_id")),
    })
}

/// A value from `dimensions` first, then `metrics`.
fn dim_or_metric<'a>(row: &'a Value, name: &str) -> Option<&'a Value> {
    at(row, &format!("dimensions.{name}")).or_else(|| at(row, &format!("metrics.{name}")))
}

fn parse_row(row: &Value, ctx: &ParseContext) -> Result<AdRow, Reject> {
    let reject = |reason: String| Reject::new(reason, row);
    let (field, stamp) = match (
        opt_text(at(row, "dimensions.stat_time_day")),
        opt_text(at(row, "dimensions.stat_time_hour")),
    ) {
        (Some(day), _) => ("stat_time_day", day),
        (None, Some(hour)) => ("stat_time_hour", hour),
        (None, None) => {
            return Err(reject(
                "missing field 'dimensions.stat_time_day' (or stat_time_hour)".to_owned(),
            ));
        }
    };
    let date = stamp
        .get(..10)
        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .ok_or_else(|| reject(format!("field '{field}': '{stamp}' is not a date")))?;
    let campaign_id = text_field(dim_or_metric(row, "campaign_id"))
        .map_err(|e| reject(e.describe("campaign_id")))?;
    let metric = |name: &str| at(row, &format!("metrics.{name}"));
    let spend = money_field(metric("spend")).map_err(|e| reject(e.describe("metrics.spend")))?;
    let impressions = count_field(metric("impressions"))
        .map_err(|e| reject(e.describe("metrics.impressions")))?;
    let clicks = count_field(metric("clicks")).map_err(|e| reject(e.describe("metrics.clicks")))?;
    let conversions = or_zero(float_field(metric("conversion")))
        .map_err(|e| reject(e.describe("metrics.conversion")))?;
    let value = or_zero(money_field(metric("total_purchase_value")))
        .map_err(|e| reject(e.describe("metrics.total_purchase_value")))?;
    let currency = ctx
        .currency
        .clone()
        .ok_or_else(|| reject("the advertiser's currency is not configured".to_owned()))?;
    Ok(AdRow {
        date,
        account_id: opt_text(row.get("advertiser_id"))
            .or_else(|| opt_text(dim_or_metric(row, "advertiser_id")))
            .unwrap_or_else(|| ctx.account_id.clone()),
        account_name: opt_text(metric("advertiser_name")),
        campaign_id,
        campaign_name: opt_text(metric("campaign_name")),
        ad_group_id: opt_text(dim_or_metric(row, "adgroup_id")),
        ad_group_name: opt_text(metric("adgroup_name")),
        ad_id: opt_text(dim_or_metric(row, "ad_id")),
        ad_name: opt_text(metric("ad_name")),
        spend_micros: spend,
        impressions,
        clicks,
        conversions,
        conversion_value_micros: value,
        currency,
        utm: Utm::default(),
        raw: row.to_string(),
    })
}

/// Fetches one advertiser's date range, page by page.
pub async fn fetch(ctx: &FetchContext<'_>) -> Result<Fetched, SourceError> {
    let metrics = r#"["spend","impressions","clicks","conversion","total_purchase_value","campaign_id","campaign_name","adgroup_name","ad_name"]"#;
    let dimensions = r#"["ad_id","stat_time_day"]"#;
    let mut fetched = Fetched::default();
    let mut page = 1u64;
    loop {
        let url = format!(
            "{}/open_api/v1.3/report/integrated/get/?advertiser_id={}&report_type=BASIC&data_level=AUCTION_AD&dimensions={}&metrics={}&start_date={}&end_date={}&page={page}&page_size=1000",
            ctx.base_url,
            url_encode(&ctx.parse.account_id),
            url_encode(dimensions),
            url_encode(metrics),
            ctx.from,
            ctx.to
        );
        let call = Call::get(url).token_in("Access-Token");
        let reply = ctx.send(SourceKind::TiktokAds, &call, classify).await?;
        let parsed = parse(&reply.body, &ctx.parse)
            .map_err(|m| ctx.malformed(format!("page {page}: {m}")))?;
        fetched
            .request_ids
            .extend(parsed.request_id.or(reply.request_id));
        fetched.parsed.extend(parsed.parsed);
        match parsed.total_pages {
            Some(total) if page < total && page < 10_000 => page += 1,
            _ => return Ok(fetched),
        }
    }
}
