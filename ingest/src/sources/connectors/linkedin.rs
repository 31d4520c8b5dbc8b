//! LinkedIn Marketing API: `/rest/adAnalytics?q=analytics` with daily
//! granularity and the `LinkedIn-Version` header.
//!
//! Quirks: costs are decimal strings, even `"-2E-18"` (a rounding residue,
//! zero at micro precision); the cost read is `costInLocalCurrency`, never
//! `costInUsd`; dates are `{year, month, day}` objects; the entity is a URN
//! in `pivotValues`. LinkedIn's hierarchy is campaign group > campaign >
//! creative: a campaign is an ad group here, and the campaign id stands for
//! the campaign when no campaign group URN is given.
//!
//! LinkedIn returns a metric only when the request's `fields` parameter
//! names it (without `fields`, only `impressions` and `clicks`), so a
//! record without `costInLocalCurrency` comes from a request that did not
//! ask for it: its spend is unknown, not zero. The fetch names every field
//! the parser reads ([`FIELDS`]). A saved payload without the field (the
//! Airbyte campaign analytics sample carries only `costInUsd`) is read from
//! `costInUsd` when the account's currency is USD, where the two are the
//! same amount; for any other currency the record goes to quarantine with a
//! reason that says how to get the cost (never a zero spend, and never USD
//! written as the account's currency).
//!
//! The conversion metrics (`externalWebsiteConversions`,
//! `conversionValueInLocalCurrency`) are read as zero when absent. The fetch
//! names them, and LinkedIn then returns them on every row, zero included,
//! so a live row never lacks them; a saved report whose request did not
//! name them (the Airbyte sample) lands its spend, impressions and clicks
//! with zero conversions rather than losing the row, the same rule as
//! Meta's rows without `actions`. The cost is the one metric whose absence
//! quarantines, because a row without spend would silently understate
//! what the client is invoiced.

use serde_json::Value;

use super::{
    AdRow, FetchContext, Fetched, FieldError, ParseContext, Parsed, Record, Reject, SourceKind,
    Utm, at, count_field, float_field, json_body, money_field, or_zero,
};
use crate::sources::http::{Call, SourceError, classify_status, url_encode};

/// The `LinkedIn-Version` header value.
pub const API_VERSION: &str = "202405";

/// The `fields` the fetch asks for: every field the parser reads.
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
/// USD cost (read only for a USD account whose row lacks the local cost),
/// and documented analytics metrics that saved reports of other tools ask
/// for (known and ignored). Anything else is schema drift: recorded in
/// [`Parsed::unmapped`] and ignored, never a reason to drop the row.
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
    let known: Vec<&str> = FIELDS.iter().chain(&OTHER_KNOWN_FIELDS).copied().collect();
    for row in rows {
        parsed.note_unmapped(row, &known);
        parsed.push(parse_row(row, ctx).map(Record::Ad));
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

/// How to get a metric that LinkedIn left out because the request did not
/// name it in `fields`.
const NOT_REQUESTED: &str = "LinkedIn returns a metric only when the request's `fields` \
names it, so the value is unknown, not zero; re-pull these dates with `adlake-ingest \
backfill` (its requests name every field read) or save the report from a request whose \
`fields` include it";

/// A metric the row cannot do without; its absence says how to get it.
fn required_metric<T>(
    row: &Value,
    name: &str,
    read: fn(Option<&Value>) -> Result<T, FieldError>,
) -> Result<T, String> {
    read(at(row, name)).map_err(|e| match e {
        FieldError::Missing => format!("missing field '{name}': {NOT_REQUESTED}"),
        invalid => invalid.describe(name),
    })
}

/// The spend in micro-units of `currency`: `costInLocalCurrency`, or for a
/// USD account whose row lacks it, `costInUsd` (the same amount).
fn spend(row: &Value, currency: &str) -> Result<i128, String> {
    let local = at(row, "costInLocalCurrency");
    let usd = at(row, "costInUsd");
    if let (None, Some(usd), "USD") = (local, usd, currency) {
        return money_field(Some(usd)).map_err(|e| e.describe("costInUsd"));
    }
    required_metric(row, "costInLocalCurrency", money_field).map_err(|reason| {
        if local.is_none() && usd.is_some() {
            format!(
                "{reason} (its costInUsd is the spend only of a USD account; this account's \
                 currency is {currency})"
            )
        } else {
            reason
        }
    })
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
    let currency = ctx
        .currency
        .clone()
        .ok_or_else(|| reject("the ad account's currency is not configured".to_owned()))?;
    let spend = spend(row, &currency).map_err(reject)?;
    let campaign = urn_id(row, "sponsoredCampaign");
    let group = urn_id(row, "sponsoredCampaignGroup");
    let creative = urn_id(row, "sponsoredCreative");
    let campaign_id = group.or_else(|| campaign.clone()).ok_or_else(|| {
        reject(
            "missing field 'pivotValues' (no sponsoredCampaign or sponsoredCampaignGroup URN): \
             the connector reads reports pivoted by CAMPAIGN or CAMPAIGN_GROUP"
                .to_owned(),
        )
    })?;
    let impressions = required_metric(row, "impressions", count_field).map_err(reject)?;
    let clicks = required_metric(row, "clicks", count_field).map_err(reject)?;
    let conversions = or_zero(float_field(at(row, "externalWebsiteConversions")))
        .map_err(|e| reject(e.describe("externalWebsiteConversions")))?;
    let value = or_zero(money_field(at(row, "conversionValueInLocalCurrency")))
        .map_err(|e| reject(e.describe("conversionValueInLocalCurrency")))?;
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

/// The first analytics request of one account's `from..=to`: daily rows
/// pivoted by campaign, with `fields` naming every field the parser reads.
pub fn analytics_url(
    base_url: &str,
    account_id: &str,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> String {
    use chrono::Datelike;
    let range = format!(
        "(start:(year:{},month:{},day:{}),end:(year:{},month:{},day:{}))",
        from.year(),
        from.month(),
        from.day(),
        to.year(),
        to.month(),
        to.day()
    );
    let account = format!("urn:li:sponsoredAccount:{account_id}");
    format!(
        "{base_url}/rest/adAnalytics?q=analytics&pivot=CAMPAIGN&timeGranularity=DAILY&dateRange={range}&accounts=List({})&fields={}",
        url_encode(&account),
        FIELDS.join(",")
    )
}

/// Fetches one ad account's date range, following `next` links.
pub async fn fetch(ctx: &FetchContext<'_>) -> Result<Fetched, SourceError> {
    let mut url = Some(analytics_url(
        &ctx.base_url,
        &ctx.parse.account_id,
        ctx.from,
        ctx.to,
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
