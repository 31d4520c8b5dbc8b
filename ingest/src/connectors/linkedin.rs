//! LinkedIn Marketing API: `/rest/adAnalytics?q=analytics` with daily
//! granularity and the `LinkedIn-Version` header.
//!
//! Quirks: costs are decimal strings, even `"-2E-18"` (a rounding residue,
//! zero at micro precision); the cost read is `costInLocalCurrency`, never
//! `costInUsd`; dates are `{year, month, day}` objects; the entity is a URN
//! in `pivotValues`. LinkedIn's hierarchy is campaign group > campaign >
//! creative: a campaign is an ad group here, and the campaign id stands for
//! the campaign when no campaign group URN is given.

use serde_json::Value;

use super::{
    AdRow, FetchContext, Fetched, ParseContext, Parsed, Record, Reject, SourceKind, Utm, at,
    count_field, float_field, json_body, money_field, or_zero,
};
use crate::http::{Call, SourceError, classify_status, url_encode};

/// The `LinkedIn-Version` header value.
pub const API_VERSION: &str = "202405";

/// The `fields` the fetch asks for.
pub const FIELDS: [&str; 7] = [
    "dateRange",
    "pivotValues",
    "impressions",
    "clicks",
    "costInLocalCurrency",
    "externalWebsiteConversions",
    "conversionValueInLocalCurrency",
];

/// Fields a row may carry besides [`FIELDS`]: the older single pivot, the
/// USD cost (known, never read), and documented analytics metrics that
/// saved reports of other tools ask for (known and ignored). Anything else
/// is an unknown field.
pub const OTHER_KNOWN_FIELDS: [&str; 17] = [
    "pivot",
    "pivotValue",
    "costInUsd",
    "conversionValueInUsd",
    "actionClicks",
    "adUnitClicks",
    "approximateUniqueImpressions",
    "cardClicks",
    "cardImpressions",
    "commentLikes",
    "comments",
    "companyPageClicks",
    "documentCompletions",
    "documentFirstQuartileCompletions",
    "documentMidpointCompletions",
    "documentThirdQuartileCompletions",
    "downloadClicks",
];

/// One analytics page.
#[derive(Debug, Default)]
pub struct Page {
    /// Records and rejects.
    pub parsed: Parsed,
    /// The href of the `next` link, if any.
    pub next: Option<String>,
}

/// Parses one analytics page.
pub fn parse(body: &[u8], ctx: &ParseContext) -> Result<Page, String> {
    let value = json_body(body)?;
    let rows = value
        .get("elements")
        .and_then(Value::as_array)
        .ok_or("missing 'elements' array in the analytics page")?;
    let mut parsed = Parsed::default();
    for row in rows {
        let item = parse_row(row, ctx).and_then(|record| {
            let unknown = row.as_object().and_then(|o| {
                o.keys().find(|k| {
                    !FIELDS.contains(&k.as_str()) && !OTHER_KNOWN_FIELDS.contains(&k.as_str())
                })
            });
            match unknown {
                Some(field) => Err(Reject::new(format!("unknown field '{field}'"), row)),
                None => Ok(record),
            }
        });
        parsed.push(item.map(Record::Ad));
    }
    let next = at(&value, "paging.links")
        .and_then(Value::as_array)
        .and_then(|links| {
            links
                .iter()
                .find(|l| l.get("rel").and_then(Value::as_str) == Some("next"))
        })
        .and_then(|l| l.get("href").and_then(Value::as_str))
        .map(str::to_owned);
    Ok(Page { parsed, next })
}

fn ymd(value: Option<&Value>) -> Option<chrono::NaiveDate> {
    let v = value?;
    let part = |k: &str| v.get(k).and_then(Value::as_u64);
    chrono::NaiveDate::from_ymd_opt(
        i32::try_from(part("year")?).ok()?,
        u32::try_from(part("month")?).ok()?,
        u32::try_from(part("day")?).ok()?,
    )
}

/// The id at the end of a URN of `kind` among the pivot values.
fn urn_id(row: &Value, kind: &str) -> Option<String> {
    let prefix = format!("urn:li:{kind}:");
    let values = row
        .get("pivotValues")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    values
        .iter()
        .chain(row.get("pivotValue"))
        .filter_map(Value::as_str)
        .find_map(|u| u.strip_prefix(&prefix).map(str::to_owned))
}

fn parse_row(row: &Value, ctx: &ParseContext) -> Result<AdRow, Reject> {
    let reject = |reason: String| Reject::new(reason, row);
    let start = ymd(at(row, "dateRange.start"))
        .ok_or_else(|| reject("missing or invalid field 'dateRange.start'".to_owned()))?;
    let end = ymd(at(row, "dateRange.end")).unwrap_or(start);
    if end != start {
        return Err(reject(format!(
            "row spans {start} to {end}; expected one day (timeGranularity=DAILY)"
        )));
    }
    let spend = money_field(at(row, "costInLocalCurrency"))
        .map_err(|e| reject(e.describe("costInLocalCurrency")))?;
    let campaign = urn_id(row, "sponsoredCampaign");
    let group = urn_id(row, "sponsoredCampaignGroup");
    let creative = urn_id(row, "sponsoredCreative");
    let campaign_id = group.or_else(|| campaign.clone()).ok_or_else(|| {
        reject("missing field 'pivotValues' (no sponsoredCampaign URN)".to_owned())
    })?;
    let impressions =
        count_field(at(row, "impressions")).map_err(|e| reject(e.describe("impressions")))?;
    let clicks = count_field(at(row, "clicks")).map_err(|e| reject(e.describe("clicks")))?;
    let conversions = or_zero(float_field(at(row, "externalWebsiteConversions")))
        .map_err(|e| reject(e.describe("externalWebsiteConversions")))?;
    let value = or_zero(money_field(at(row, "conversionValueInLocalCurrency")))
        .map_err(|e| reject(e.describe("conversionValueInLocalCurrency")))?;
    let currency = ctx
        .currency
        .clone()
        .ok_or_else(|| reject("the ad account's currency is not configured".to_owned()))?;
    Ok(AdRow {
        date: start,
        account_id: ctx.account_id.clone(),
        account_name: None,
        campaign_id,
        campaign_name: None,
        ad_group_id: campaign,
        ad_group_name: None,
        ad_id: creative,
        ad_name: None,
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

/// Fetches one ad account's date range, following `next` links.
pub async fn fetch(ctx: &FetchContext<'_>) -> Result<Fetched, SourceError> {
    let (f, t) = (ctx.from, ctx.to);
    use chrono::Datelike;
    let range = format!(
        "(start:(year:{},month:{},day:{}),end:(year:{},month:{},day:{}))",
        f.year(),
        f.month(),
        f.day(),
        t.year(),
        t.month(),
        t.day()
    );
    let account = format!("urn:li:sponsoredAccount:{}", ctx.parse.account_id);
    let mut url = Some(format!(
        "{}/rest/adAnalytics?q=analytics&pivot=CAMPAIGN&timeGranularity=DAILY&dateRange={range}&accounts=List({})&fields={}",
        ctx.base_url,
        url_encode(&account),
        FIELDS.join(",")
    ));
    let mut fetched = Fetched::default();
    let mut pages = 0usize;
    while let Some(next) = url.take() {
        pages += 1;
        if pages > 10_000 {
            return Err(ctx.malformed("more than 10000 pages; the paging loops".to_owned()));
        }
        let next = if next.starts_with('/') {
            format!("{}{next}", ctx.base_url)
        } else {
            next
        };
        let call = Call::get(next)
            .header("LinkedIn-Version", API_VERSION)
            .header("X-Restli-Protocol-Version", "2.0.0");
        let reply = ctx
            .send(SourceKind::LinkedinAds, &call, classify_status)
            .await?;
        let page = parse(&reply.body, &ctx.parse)
            .map_err(|m| ctx.malformed(format!("page {pages}: {m}")))?;
        fetched.request_ids.extend(reply.request_id);
        fetched.parsed.extend(page.parsed);
        url = page.next;
    }
    Ok(fetched)
}
