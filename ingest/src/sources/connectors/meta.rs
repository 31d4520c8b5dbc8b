//! Meta Marketing API Insights: `/act_{id}/insights` at ad level with
//! `time_increment=1`, cursor paging through `paging.next`.
//!
//! Quirks: every number is a string; conversions live in `actions[]` and
//! `action_values[]` where several action types count the same purchase, so
//! exactly one configurable canonical type is read and never a sum across
//! types; throttling is HTTP 400 with error codes 4, 17, 32, 613 or 80000+,
//! and the `x-app-usage`, `x-ad-account-usage` and
//! `x-business-use-case-usage` headers say how close the next throttle is.
//! Long ranges go through an asynchronous report run.

use serde_json::Value;

use super::{
    AdRow, FetchContext, Fetched, ParseContext, Parsed, Record, Reject, SourceKind, Utm, at,
    count_field, float_field, json_body, money_field, opt_text, or_zero, text_field,
};
use crate::sources::http::{Call, Reply, SourceError, Verdict, classify_status, url_encode};

/// The Graph API version in the URL.
pub const API_VERSION: &str = "v21.0";

/// Fields asked for.
pub const FIELDS: &str = "account_id,account_name,account_currency,campaign_id,campaign_name,\
adset_id,adset_name,ad_id,ad_name,spend,impressions,clicks,actions,action_values";

/// Fields a row may carry besides those of [`FIELDS`]: the day of a
/// `time_increment=1` row. Anything else in a row (`inline_link_clicks`,
/// `cpm`, `reach`, ... when a saved payload asked for more) is schema
/// drift: recorded in [`Parsed::unmapped`] and ignored, never a reason to
/// drop the row.
pub const ROW_FIELDS: [&str; 2] = ["date_start", "date_stop"];

/// The fields an insights row is expected to carry: [`FIELDS`] and
/// [`ROW_FIELDS`].
fn known_fields() -> Vec<&'static str> {
    FIELDS.split(',').chain(ROW_FIELDS).collect()
}

/// One page of insights.
#[derive(Debug, Default)]
pub struct Page {
    /// Records and rejects.
    pub parsed: Parsed,
    /// The next page's URL.
    pub next: Option<String>,
}

/// Whether a Graph API error code is a throttling signal.
pub fn is_throttle_code(code: i64) -> bool {
    matches!(code, 4 | 17 | 32 | 613) || (80000..=80014).contains(&code)
}

fn classify(reply: &Reply) -> Verdict {
    if reply.status.is_success() {
        return Verdict::Ok;
    }
    let body: Option<Value> = serde_json::from_slice(&reply.body).ok();
    let Some(error) = body.as_ref().and_then(|b| b.get("error")) else {
        return classify_status(reply);
    };
    let code = error
        .get("code")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    let message = format!(
        "error {code}: {}",
        error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
    );
    if is_throttle_code(code) {
        return Verdict::Retry {
            rate_limited: true,
            after: usage_pause(&reply.headers)
                .or_else(|| crate::sources::http::retry_after(&reply.headers)),
            reason: message,
        };
    }
    if code == 190 || reply.status.as_u16() == 401 {
        return Verdict::Unauthorized(message);
    }
    if error.get("is_transient").and_then(Value::as_bool) == Some(true)
        || reply.status.is_server_error()
    {
        return Verdict::Retry {
            rate_limited: false,
            after: None,
            reason: message,
        };
    }
    Verdict::Fail(message)
}

/// Parses one insights page.
pub fn parse(body: &[u8], ctx: &ParseContext) -> Result<Page, String> {
    let value = json_body(body)?;
    if let Some(error) = value.get("error") {
        return Err(format!("Meta error: {error}"));
    }
    let rows = value
        .get("data")
        .and_then(Value::as_array)
        .ok_or("missing 'data' array in the insights page")?;
    let mut parsed = Parsed::default();
    let known = known_fields();
    for row in rows {
        // Insights rows are flat: `actions` and `action_values` are lists
        // whose entries are read by action type.
        parsed.note_unmapped(row, &known);
        parsed.push(parse_row(row, ctx).map(Record::Ad));
    }
    Ok(Page {
        parsed,
        next: at(&value, "paging.next")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// The value of the canonical action type in an `actions`-like list; a
/// list without it counts zero, and so does a row without the list: Meta
/// leaves `actions` and `action_values` out of a row that has none.
fn action(row: &Value, list: &str, action_type: &str) -> Result<Option<Value>, Reject> {
    match row.get(list) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(items
            .iter()
            .find(|a| a.get("action_type").and_then(Value::as_str) == Some(action_type))
            .and_then(|a| a.get("value").cloned())),
        Some(_) => Err(Reject::new(
            format!("field '{list}': expected an array"),
            row,
        )),
    }
}

fn parse_row(row: &Value, ctx: &ParseContext) -> Result<AdRow, Reject> {
    let reject = |reason: String| Reject::new(reason, row);
    let date_text =
        text_field(at(row, "date_start")).map_err(|e| reject(e.describe("date_start")))?;
    let date = chrono::NaiveDate::parse_from_str(&date_text, "%Y-%m-%d").map_err(|_| {
        reject(format!(
            "field 'date_start': '{date_text}' is not YYYY-MM-DD"
        ))
    })?;
    if let Some(stop) = opt_text(at(row, "date_stop"))
        && stop != date_text
    {
        return Err(reject(format!(
            "row spans {date_text} to {stop}; expected one day (time_increment=1)"
        )));
    }
    let campaign_id =
        text_field(at(row, "campaign_id")).map_err(|e| reject(e.describe("campaign_id")))?;
    let spend = money_field(at(row, "spend")).map_err(|e| reject(e.describe("spend")))?;
    let impressions =
        count_field(at(row, "impressions")).map_err(|e| reject(e.describe("impressions")))?;
    let clicks =
        or_zero(count_field(at(row, "clicks"))).map_err(|e| reject(e.describe("clicks")))?;
    let canonical = ctx.canonical_action.as_str();
    let conversions = or_zero(float_field(action(row, "actions", canonical)?.as_ref()))
        .map_err(|e| reject(e.describe(&format!("actions[{canonical}]"))))?;
    let value = or_zero(money_field(
        action(row, "action_values", canonical)?.as_ref(),
    ))
    .map_err(|e| reject(e.describe(&format!("action_values[{canonical}]"))))?;
    let currency = opt_text(at(row, "account_currency"))
        .or_else(|| ctx.currency.clone())
        .ok_or_else(|| reject("missing field 'account_currency'".to_owned()))?;
    Ok(AdRow {
        date,
        account_id: opt_text(at(row, "account_id")).unwrap_or_else(|| ctx.account_id.clone()),
        account_name: opt_text(at(row, "account_name")),
        campaign_id,
        campaign_name: opt_text(at(row, "campaign_name")),
        ad_group_id: opt_text(at(row, "adset_id")),
        ad_group_name: opt_text(at(row, "adset_name")),
        ad_id: opt_text(at(row, "ad_id")),
        ad_name: opt_text(at(row, "ad_name")),
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

/// Ranges longer than this many days are pulled through an asynchronous
/// report run (`POST /act_{id}/insights`, poll the run, read its pages):
/// large synchronous insights queries time out on Meta's side.
pub const ASYNC_AFTER_DAYS: i64 = 14;

/// Status polls of one report run before the job gives up.
pub const MAX_POLLS: u32 = 120;

/// The longest pause Meta's usage headers ask for: the most urgent of
/// `estimated_time_to_regain_access` (minutes, in
/// `x-business-use-case-usage`), `reset_time_duration` (seconds, in
/// `x-ad-account-usage`), or a minute when any usage percentage (`call_count`,
/// `total_cputime`, `total_time`, `acc_id_util_pct`) reaches 90.
pub fn usage_pause(headers: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let json = |name: &str| -> Option<Value> {
        serde_json::from_str(headers.get(name)?.to_str().ok()?).ok()
    };
    let mut pause: Option<Duration> = None;
    let mut longest = |d: Duration| pause = Some(pause.map_or(d, |p| p.max(d)));
    let mut busy = false;
    let mut pct = |v: &Value| {
        for k in [
            "call_count",
            "total_cputime",
            "total_time",
            "acc_id_util_pct",
        ] {
            if v.get(k).and_then(Value::as_f64).is_some_and(|p| p >= 90.0) {
                busy = true;
            }
        }
    };
    if let Some(app) = json("x-app-usage") {
        pct(&app);
    }
    if let Some(account) = json("x-ad-account-usage") {
        pct(&account);
        if let Some(s) = account.get("reset_time_duration").and_then(Value::as_f64)
            && s > 0.0
            && s.is_finite()
        {
            longest(Duration::from_secs_f64(s));
        }
    }
    if let Some(Value::Object(accounts)) = json("x-business-use-case-usage") {
        for entry in accounts.values().filter_map(Value::as_array).flatten() {
            pct(entry);
            if let Some(m) = entry
                .get("estimated_time_to_regain_access")
                .and_then(Value::as_f64)
                && m > 0.0
                && m.is_finite()
            {
                longest(Duration::from_secs_f64(m * 60.0));
            }
        }
    }
    if busy {
        longest(Duration::from_secs(60));
    }
    pause
}

fn report_run_error(ctx: &FetchContext<'_>, message: String) -> SourceError {
    SourceError {
        source_key: ctx.source_key.clone(),
        kind: crate::sources::http::FailureKind::Transient,
        message,
        attempts: 1,
    }
}

/// Starts an asynchronous report run and waits until it completes; returns
/// the URL of its first insights page.
async fn report_run(
    ctx: &FetchContext<'_>,
    account: &str,
    time_range: &str,
    request_ids: &mut Vec<String>,
) -> Result<String, SourceError> {
    let start = format!(
        "{}/{API_VERSION}/act_{account}/insights?level=ad&time_increment=1&fields={}&time_range={}",
        ctx.base_url,
        url_encode(FIELDS),
        url_encode(time_range)
    );
    let call = Call {
        method: reqwest::Method::POST,
        ..Call::get(start)
    };
    let reply = ctx.send(SourceKind::MetaAds, &call, classify).await?;
    request_ids.extend(reply.request_id.clone());
    let body = json_body(&reply.body).map_err(|m| ctx.malformed(format!("report run: {m}")))?;
    let run_id = opt_text(body.get("report_run_id"))
        .ok_or_else(|| ctx.malformed("report run: no 'report_run_id' in the reply".to_owned()))?;
    let status_url = format!("{}/{API_VERSION}/{run_id}", ctx.base_url);
    let mut wait = ctx.http.config().base_delay;
    for _ in 0..MAX_POLLS {
        let reply = ctx
            .send(
                SourceKind::MetaAds,
                &Call::get(status_url.clone()),
                classify,
            )
            .await?;
        let status = json_body(&reply.body)
            .map_err(|m| ctx.malformed(format!("report run {run_id}: {m}")))?;
        let state = status
            .get("async_status")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let percent = status
            .get("async_percent_completion")
            .and_then(Value::as_i64)
            .unwrap_or_default();
        match state {
            "Job Completed" if percent >= 100 => {
                return Ok(format!(
                    "{}/{API_VERSION}/{run_id}/insights?limit=500",
                    ctx.base_url
                ));
            }
            "Job Failed" | "Job Skipped" => {
                return Err(report_run_error(
                    ctx,
                    format!("report run {run_id} ended with status '{state}'"),
                ));
            }
            _ => {}
        }
        ctx.pace(usage_pause(&reply.headers)).await;
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(ctx.http.config().max_delay);
    }
    Err(report_run_error(
        ctx,
        format!("report run {run_id} did not complete after {MAX_POLLS} status checks"),
    ))
}

/// Fetches one ad account's date range, page by page: synchronously for up
/// to [`ASYNC_AFTER_DAYS`] days, through a report run beyond.
pub async fn fetch(ctx: &FetchContext<'_>) -> Result<Fetched, SourceError> {
    let account = ctx.parse.account_id.trim_start_matches("act_");
    let time_range = format!(r#"{{"since":"{}","until":"{}"}}"#, ctx.from, ctx.to);
    let mut fetched = Fetched::default();
    let first = if (ctx.to - ctx.from).num_days() + 1 > ASYNC_AFTER_DAYS {
        report_run(ctx, account, &time_range, &mut fetched.request_ids).await?
    } else {
        format!(
            "{}/{API_VERSION}/act_{account}/insights?level=ad&time_increment=1&limit=500&fields={}&time_range={}",
            ctx.base_url,
            url_encode(FIELDS),
            url_encode(&time_range)
        )
    };
    let mut url = Some(first);
    let mut pages = 0usize;
    while let Some(next) = url.take() {
        pages += 1;
        if pages > 10_000 {
            return Err(ctx.malformed("more than 10000 pages; the paging loops".to_owned()));
        }
        let reply = ctx
            .send(SourceKind::MetaAds, &Call::get(next), classify)
            .await?;
        let page = parse(&reply.body, &ctx.parse)
            .map_err(|m| ctx.malformed(format!("page {pages}: {m}")))?;
        fetched.request_ids.extend(reply.request_id);
        fetched.parsed.extend(page.parsed);
        url = page.next;
        if url.is_some() {
            ctx.pace(usage_pause(&reply.headers)).await;
        }
    }
    if fetched.parsed.records.is_empty() && fetched.parsed.rejects.is_empty() {
        fetched.inactive = account_inactive(ctx, account).await;
    }
    Ok(fetched)
}

/// The ad account's `account_status` when it is not active (1), asked only
/// when the insights came back empty: a disabled or closed account
/// delivers nothing, so its empty days are real. A failed call says
/// nothing (the run then goes on as if the status were unknown).
async fn account_inactive(ctx: &FetchContext<'_>, account: &str) -> Option<String> {
    let url = format!(
        "{}/{API_VERSION}/act_{account}?fields=account_status",
        ctx.base_url
    );
    let reply = ctx
        .send(SourceKind::MetaAds, &Call::get(url), classify)
        .await
        .ok()?;
    let status = account_status(&reply.body)?;
    (status != 1).then(|| {
        format!(
            "Meta reports ad account act_{account} as {} (account_status {status})",
            account_status_name(status)
        )
    })
}

/// `account_status` of an ad account node.
pub fn account_status(body: &[u8]) -> Option<i64> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("account_status")
        .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
}

/// The documented name of an `account_status` value.
pub fn account_status_name(status: i64) -> &'static str {
    match status {
        1 => "ACTIVE",
        2 => "DISABLED",
        3 => "UNSETTLED",
        7 => "PENDING_RISK_REVIEW",
        8 => "PENDING_SETTLEMENT",
        9 => "IN_GRACE_PERIOD",
        100 => "PENDING_CLOSURE",
        101 => "CLOSED",
        201 => "ANY_ACTIVE",
        202 => "ANY_CLOSED",
        _ => "not active",
    }
}
