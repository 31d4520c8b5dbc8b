//! Shopify Admin REST: `orders.json`, paged by the `Link` header.
//!
//! Quirks: money is strings; timestamps carry an offset, and the order's
//! date is the shop-local date: the fetch reads the shop's IANA time zone
//! from `shop.json` once per shop and job (saved payloads, without it, use
//! the offset of the timestamp itself); 429 carries
//! `Retry-After`, and `X-Shopify-Shop-Api-Call-Limit` tells how full the
//! leaky bucket is (the fetch paces itself before it overflows). The customer's e-mail is kept only as a keyed hash; no
//! other personal data (phone, addresses, IP, names) leaves this module,
//! not even in the raw record kept for quarantine.

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use super::{
    FetchContext, Fetched, OrderRow, ParseContext, Parsed, Record, Reject, SourceKind, Utm, at,
    json_body, money_field, opt_text, text_field,
};
use crate::sources::http::{Call, SourceError, classify_status, url_encode};

/// The Admin API version in the URL.
pub const API_VERSION: &str = "2024-10";

/// The order fields the fetch asks for (`fields=`): what the parser reads,
/// what a quarantined record keeps, and the e-mail address for the
/// customer hash. Asking for no more keeps personal data (addresses,
/// phone, names, IP) from even crossing the wire.
///
/// A fetched order that carries a top-level field outside this list has it
/// recorded as schema drift ([`Parsed::unmapped`]) and ignored: fields are
/// read by name, so one we do not read cannot corrupt a row, and personal
/// data in it never leaves this module (see [`redacted`]). Saved payloads
/// (`adlake-ingest file`) hold the whole order resource, some eighty
/// documented fields that grow with each API version: no drift is
/// recorded for them.
pub const ORDER_FIELDS: [&str; 16] = [
    "id",
    "name",
    "created_at",
    "processed_at",
    "currency",
    "total_price",
    "subtotal_price",
    "total_price_set",
    "subtotal_price_set",
    "financial_status",
    "landing_site",
    "landing_site_ref",
    "source_name",
    "test",
    "email",
    "contact_email",
];

/// Fields of an order that are kept in a quarantined raw record.
const SAFE_FIELDS: [&str; 12] = [
    "id",
    "name",
    "created_at",
    "processed_at",
    "currency",
    "total_price",
    "subtotal_price",
    "financial_status",
    "landing_site",
    "landing_site_ref",
    "source_name",
    "test",
];

/// The order without personal data.
pub fn redacted(order: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for f in SAFE_FIELDS {
        if let Some(v) = order.get(f) {
            out.insert(f.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

/// Parses `{"orders": [...]}`, `{"order": {...}}` or a bare array (a saved
/// payload: every order field is accepted, see [`ORDER_FIELDS`]).
pub fn parse(body: &[u8], ctx: &ParseContext) -> Result<Parsed, String> {
    parse_orders(body, ctx, None)
}

/// Parses a fetched page whose orders were asked for with `fields`: a
/// top-level field outside them is recorded as drift and ignored.
pub fn parse_fetched(body: &[u8], ctx: &ParseContext, fields: &[&str]) -> Result<Parsed, String> {
    parse_orders(body, ctx, Some(fields))
}

fn parse_orders(
    body: &[u8],
    ctx: &ParseContext,
    fields: Option<&[&str]>,
) -> Result<Parsed, String> {
    let value = json_body(body)?;
    if let Some(errors) = value.get("errors") {
        return Err(format!("Shopify error: {errors}"));
    }
    let orders: Vec<Value> = match (&value, value.get("orders"), value.get("order")) {
        (_, Some(Value::Array(list)), _) => list.clone(),
        (_, _, Some(order @ Value::Object(_))) => vec![order.clone()],
        (Value::Array(list), _, _) => list.clone(),
        _ => return Err("expected 'orders' (array) or 'order' (object)".to_owned()),
    };
    let mut parsed = Parsed::default();
    for order in &orders {
        if let Some(fields) = fields
            && let Some(object) = order.as_object()
        {
            parsed.unmapped.extend(
                object
                    .keys()
                    .filter(|k| !fields.contains(&k.as_str()))
                    .cloned(),
            );
        }
        parsed.push(parse_order(order, ctx).map(Record::Order));
    }
    Ok(parsed)
}

/// The UTM parameters of a landing-site URL or path.
pub fn utm_from_landing_site(landing: &str) -> Utm {
    let mut utm = Utm::default();
    let query = landing.split_once('?').map(|(_, q)| q).unwrap_or("");
    let query = query.split('#').next().unwrap_or("");
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let v = Some(v.into_owned()).filter(|v| !v.is_empty());
        match k.as_ref() {
            "utm_source" => utm.source = v,
            "utm_medium" => utm.medium = v,
            "utm_campaign" => utm.campaign = v,
            "utm_content" => utm.content = v,
            "utm_term" => utm.term = v,
            _ => {}
        }
    }
    utm
}

fn parse_order(order: &Value, ctx: &ParseContext) -> Result<OrderRow, Reject> {
    let safe = redacted(order);
    let reject = |reason: String| Reject::new(reason, &safe);
    let order_id = text_field(order.get("id")).map_err(|e| reject(e.describe("id")))?;
    let created_text =
        text_field(order.get("created_at")).map_err(|e| reject(e.describe("created_at")))?;
    let created = DateTime::parse_from_rfc3339(&created_text).map_err(|_| {
        reject(format!(
            "field 'created_at': '{created_text}' is not an RFC 3339 timestamp"
        ))
    })?;
    let total =
        money_field(at(order, "total_price_set.shop_money.amount").or(order.get("total_price")))
            .map_err(|e| reject(e.describe("total_price")))?;
    let subtotal = money_field(
        at(order, "subtotal_price_set.shop_money.amount").or(order.get("subtotal_price")),
    )
    .map_err(|e| reject(e.describe("subtotal_price")))?;
    let currency = text_field(order.get("currency")).map_err(|e| reject(e.describe("currency")))?;
    let email = opt_text(order.get("email"))
        .or_else(|| opt_text(order.get("contact_email")))
        .or_else(|| opt_text(at(order, "customer.email")));
    let customer_key = match email {
        Some(_) if ctx.customer_hash_key.is_empty() => {
            return Err(reject("no customer hash key is configured".to_owned()));
        }
        Some(e) => Some(crate::pii::customer_key(&ctx.customer_hash_key, &e)),
        None => None,
    };
    Ok(OrderRow {
        date: shop_date(created, ctx.time_zone),
        shop_id: ctx.account_id.clone(),
        order_id,
        created_at: created.with_timezone(&Utc),
        currency,
        total_price_micros: total,
        subtotal_price_micros: subtotal,
        financial_status: opt_text(order.get("financial_status")),
        utm: opt_text(order.get("landing_site"))
            .map(|l| utm_from_landing_site(&l))
            .unwrap_or_default(),
        customer_key,
        raw: safe.to_string(),
    })
}

/// The shop-local date of `created`: in the shop's time zone when known,
/// else in the timestamp's own offset (which Shopify writes in the shop's
/// zone).
pub fn shop_date(created: DateTime<FixedOffset>, shop_zone: Option<Tz>) -> NaiveDate {
    match shop_zone {
        Some(tz) => created.with_timezone(&tz).date_naive(),
        None => created.date_naive(),
    }
}

/// Reads `shop.iana_timezone` from a `shop.json` body.
pub fn parse_shop_zone(body: &[u8]) -> Result<Tz, String> {
    let value = json_body(body)?;
    let name = text_field(at(&value, "shop.iana_timezone"))
        .map_err(|e| format!("shop.json: {}", e.describe("shop.iana_timezone")))?;
    name.parse::<Tz>()
        .map_err(|_| format!("shop.json: '{name}' is not an IANA time zone"))
}

/// The pause Shopify's leaky bucket needs before the next call, from the
/// `X-Shopify-Shop-Api-Call-Limit: used/size` header: none below 80% full,
/// else the time to drain to half full at the standard leak rate of two
/// calls a second.
pub fn call_limit_pause(headers: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    let value = headers
        .get("x-shopify-shop-api-call-limit")?
        .to_str()
        .ok()?;
    let (used, size) = value.trim().split_once('/')?;
    let (used, size): (u32, u32) = (used.trim().parse().ok()?, size.trim().parse().ok()?);
    if size == 0 || used * 10 < size * 8 {
        return None;
    }
    let excess = used.saturating_sub(size / 2);
    Some(std::time::Duration::from_millis(u64::from(excess) * 500))
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == r#"rel="next""#)
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    })
}

/// Fetches one shop's orders created in the date range (the bounds are the
/// shop-local days, sent with the shop's offset unknown: UTC day bounds
/// widened by a day on each side, then the rows outside are dropped by
/// validation against the shop-local date).
pub async fn fetch(ctx: &FetchContext<'_>) -> Result<Fetched, SourceError> {
    let mut fetched = Fetched::default();
    // The shop's time zone, once per shop and job: the order dates are
    // shop-local days.
    let shop = ctx
        .send(
            SourceKind::Shopify,
            &Call::get(format!(
                "{}/admin/api/{API_VERSION}/shop.json",
                ctx.base_url
            ))
            .token_in("X-Shopify-Access-Token"),
            classify_status,
        )
        .await?;
    fetched.request_ids.extend(shop.request_id.clone());
    let zone = parse_shop_zone(&shop.body).map_err(|m| ctx.malformed(m))?;
    let parse_ctx = ParseContext {
        time_zone: Some(zone),
        ..ctx.parse.clone()
    };
    let min = ctx.from.pred_opt().unwrap_or(ctx.from);
    let max = ctx.to.succ_opt().unwrap_or(ctx.to);
    let mut url = Some(format!(
        "{}/admin/api/{API_VERSION}/orders.json?status=any&limit=250&created_at_min={}&created_at_max={}&fields={}",
        ctx.base_url,
        url_encode(&format!("{min}T00:00:00Z")),
        url_encode(&format!("{max}T23:59:59Z")),
        ORDER_FIELDS.join(","),
    ));
    let mut pages = 0usize;
    while let Some(next) = url.take() {
        pages += 1;
        if pages > 10_000 {
            return Err(ctx.malformed("more than 10000 pages; the paging loops".to_owned()));
        }
        let call = Call::get(next).token_in("X-Shopify-Access-Token");
        let reply = ctx
            .send(SourceKind::Shopify, &call, classify_status)
            .await?;
        let mut parsed = parse_fetched(&reply.body, &parse_ctx, &ORDER_FIELDS)
            .map_err(|m| ctx.malformed(format!("page {pages}: {m}")))?;
        // Orders of neighbouring days were asked for only to cover every
        // shop offset; they belong to other slices, not to quarantine.
        parsed
            .records
            .retain(|r| (ctx.from..=ctx.to).contains(&r.date()));
        fetched.request_ids.extend(reply.request_id.clone());
        fetched.parsed.extend(parsed);
        url = reply
            .headers
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(next_link);
        if url.is_some() {
            ctx.pace(call_limit_pause(&reply.headers)).await;
        }
    }
    Ok(fetched)
}
