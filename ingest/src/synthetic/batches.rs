//! The daily numbers and the lazy batch iterators of each table.

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

use adlake_engine::schema::{AD_PERFORMANCE, FX_RATES, MONEY, ORDERS, WEB_SESSIONS};
use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder, RecordBatch,
    StringArray, StringBuilder, TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use chrono::{Datelike, NaiveDate, NaiveTime, TimeZone};

use super::model::{ClientModel, IdLevel, Market, ad_templates, render_id};
use super::names::{EMAIL_DOMAINS, FIRST_NAMES, HOOKS, LAST_NAMES, slugify, themes};
use super::noise::Noise;
use super::{Incident, Inner, Synthetic, Vertical};
use crate::lake::lineage::Lineage;
use crate::pii::customer_key;
use crate::sources::connectors::Platform;

/// One cent at the `Decimal128(18, 6)` money scale.
const CENT: i128 = 10_000;

// Noise tags: each kind of draw gets its own independent stream.
const TAG_AD: u64 = 1;
const TAG_CAMPAIGN_DAY: u64 = 2;
const TAG_ORGANIC: u64 = 3;
const TAG_ORDER: u64 = 4;
const TAG_WEB: u64 = 5;
const TAG_FX: u64 = 6;

/// Traffic by weekday (Monday first) for consumers and for businesses.
const RETAIL_WEEK: [f64; 7] = [0.97, 0.95, 0.96, 0.98, 1.02, 1.10, 1.12];
const B2B_WEEK: [f64; 7] = [1.08, 1.12, 1.10, 1.05, 0.92, 0.50, 0.48];

/// Orders by local hour of the day.
const ORDER_HOURS: [f64; 24] = [
    0.5, 0.3, 0.2, 0.15, 0.15, 0.3, 0.8, 1.5, 2.2, 2.8, 3.2, 3.5, 4.0, 3.8, 3.5, 3.4, 3.5, 3.8,
    4.2, 4.8, 5.2, 5.0, 3.8, 1.8,
];

const DEVICES: [&str; 3] = ["mobile", "desktop", "tablet"];
const SEARCH_DEVICES: [f64; 3] = [0.55, 0.40, 0.05];
const SOCIAL_DEVICES: [f64; 3] = [0.80, 0.17, 0.03];
const LINKEDIN_DEVICES: [f64; 3] = [0.36, 0.62, 0.02];
const DISPLAY_DEVICES: [f64; 3] = [0.65, 0.30, 0.05];
const DIRECT_DEVICES: [f64; 3] = [0.60, 0.35, 0.05];

/// Unpaid GA4 channels of every client.
struct OrganicChannel {
    source: &'static str,
    medium: &'static str,
    campaign: &'static str,
    /// Share of the client's organic sessions.
    share: f64,
    /// Conversion rate relative to the client's organic rate.
    cvr_factor: f64,
    engagement: f64,
    devices: [f64; 3],
    /// Whether Shopify sees the UTMs (e-mail links are tagged).
    tagged: bool,
}

const ORGANIC: [OrganicChannel; 6] = [
    OrganicChannel {
        source: "google",
        medium: "organic",
        campaign: "(organic)",
        share: 0.42,
        cvr_factor: 1.0,
        engagement: 0.68,
        devices: SEARCH_DEVICES,
        tagged: false,
    },
    OrganicChannel {
        source: "(direct)",
        medium: "(none)",
        campaign: "(direct)",
        share: 0.30,
        cvr_factor: 1.1,
        engagement: 0.62,
        devices: DIRECT_DEVICES,
        tagged: false,
    },
    OrganicChannel {
        source: "klaviyo",
        medium: "email",
        campaign: "weekly-newsletter",
        share: 0.12,
        cvr_factor: 1.6,
        engagement: 0.72,
        devices: DIRECT_DEVICES,
        tagged: true,
    },
    OrganicChannel {
        source: "l.instagram.com",
        medium: "referral",
        campaign: "(referral)",
        share: 0.08,
        cvr_factor: 0.5,
        engagement: 0.52,
        devices: SOCIAL_DEVICES,
        tagged: false,
    },
    OrganicChannel {
        source: "bing",
        medium: "organic",
        campaign: "(organic)",
        share: 0.04,
        cvr_factor: 1.0,
        engagement: 0.66,
        devices: SEARCH_DEVICES,
        tagged: false,
    },
    OrganicChannel {
        source: "chatgpt.com",
        medium: "referral",
        campaign: "(referral)",
        share: 0.04,
        cvr_factor: 1.2,
        engagement: 0.70,
        devices: DIRECT_DEVICES,
        tagged: false,
    },
];

fn weekday_factor(date: NaiveDate, b2b: bool) -> f64 {
    let wd = date.weekday().num_days_from_monday() as usize;
    if b2b { B2B_WEEK[wd] } else { RETAIL_WEEK[wd] }
}

/// Seasonal multipliers of (impressions, CPC) on a date.
fn season(date: NaiveDate, vertical: Vertical) -> (f64, f64) {
    let (m, d) = (date.month(), date.day());
    if vertical.is_b2b() {
        return match (m, d) {
            (12, 22..=31) | (1, 1..=2) => (0.6, 0.95),
            (8, _) => (0.9, 1.0),
            _ => (1.0, 1.0),
        };
    }
    match (m, d) {
        // Black Friday / Cyber Monday: everyone bids up.
        (11, 20..=30) | (12, 1..=2) => (1.5, 1.25),
        (12, 3..=20) => (1.2, 1.1),
        (12, 24..=26) => (0.8, 1.0),
        (1, _) => (0.9, 0.95),
        _ => (1.0, 1.0),
    }
}

/// One ad's numbers on one day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct AdDay {
    pub(super) impressions: i64,
    pub(super) clicks: i64,
    pub(super) spend_cents: i64,
    pub(super) conversions: f64,
    pub(super) value_cents: i64,
}

impl Inner {
    fn trend(&self, model: &ClientModel, day: u32) -> f64 {
        let progress = if self.days.len() > 1 {
            f64::from(day) / (self.days.len() - 1) as f64
        } else {
            1.0
        };
        1.0 + model.trend * progress
    }

    /// The funnel of one ad on one day: impressions, then clicks from a CTR,
    /// spend from a CPC (search) or CPM (social, display), conversions from
    /// a per-click rate and value from the client's order value.
    pub(super) fn ad_day(&self, model: &ClientModel, ad_idx: usize, day: u32) -> AdDay {
        let ad = &model.ads[ad_idx];
        let camp = &model.campaigns[ad.campaign as usize];
        let date = self.days[day as usize].date;
        let b2b = model.vertical.is_b2b() || camp.platform == Platform::LinkedinAds;
        let (season_impressions, season_cpc) = season(date, model.vertical);
        let campaign_day = model
            .noise
            .at(TAG_CAMPAIGN_DAY)
            .at(u64::from(ad.campaign))
            .at(u64::from(day));
        let n = model.noise.at(TAG_AD).at(ad_idx as u64).at(u64::from(day));

        let response = &model.response[ad.campaign as usize];
        let expected = camp.impressions
            * f64::from(response.budget[day as usize])
            * f64::from(ad.weight)
            * weekday_factor(date, b2b)
            * season_impressions
            * self.trend(model, day)
            * campaign_day.lognormal(0, 0.12)
            * n.lognormal(0, 0.25);
        let impressions = n.round(1, expected);
        let ctr = (camp.ctr * n.lognormal(2, 0.15)).clamp(0.0005, 0.08);
        let clicks = n.round(3, impressions as f64 * ctr).min(impressions);
        let cost = if camp.kind.billed_per_impression() {
            let cpm = camp.cpc * camp.ctr * 1000.0 * season_cpc;
            impressions as f64 / 1000.0 * cpm * n.lognormal(4, 0.1)
        } else {
            clicks as f64 * camp.cpc * season_cpc * n.lognormal(4, 0.12)
        };
        let expected_conversions = clicks as f64
            * camp.cvr
            * f64::from(response.efficiency[day as usize])
            * n.lognormal(5, 0.25);
        let conversions = if camp.platform.fractional_conversions() {
            // Data-driven attribution hands out fractions of a conversion.
            (expected_conversions * 100.0).round() / 100.0
        } else {
            n.round(6, expected_conversions) as f64
        };
        let value_cents = if conversions > 0.0 {
            (conversions * model.aov_in(camp.account) * n.lognormal(7, 0.3) * 100.0).round() as i64
        } else {
            0
        };
        AdDay {
            impressions,
            clicks,
            spend_cents: (cost * 100.0).round() as i64,
            conversions,
            value_cents,
        }
    }

    /// Clicks and conversions of every campaign on one day.
    fn campaign_days(&self, model: &ClientModel, day: u32) -> Vec<(i64, f64)> {
        let mut out = vec![(0i64, 0.0f64); model.campaigns.len()];
        for (idx, ad) in model.ads.iter().enumerate() {
            if ad.active(day) {
                let m = self.ad_day(model, idx, day);
                let slot = &mut out[ad.campaign as usize];
                slot.0 += m.clicks;
                slot.1 += m.conversions;
            }
        }
        out
    }

    /// Sessions of each organic channel on one day.
    fn organic_sessions(&self, model: &ClientModel, day: u32) -> [i64; ORGANIC.len()] {
        let date = self.days[day as usize].date;
        let base = model.organic_sessions
            * weekday_factor(date, model.vertical.is_b2b())
            * season(date, model.vertical).0
            * self.trend(model, day);
        let n = model.noise.at(TAG_ORGANIC).at(u64::from(day));
        std::array::from_fn(|k| {
            n.round(
                k as u64,
                base * ORGANIC[k].share * n.lognormal(k as u64 + 10, 0.15),
            )
        })
    }

    /// The orders of one day: how many each channel drove and what each
    /// looked like, without rendering strings.
    fn day_orders(
        &self,
        model: &ClientModel,
        day: u32,
        campaign_days: &[(i64, f64)],
        organic: &[i64; ORGANIC.len()],
    ) -> Vec<OrderDraft> {
        let base = model.noise.at(TAG_ORDER).at(u64::from(day));
        let counts = base.at(u64::MAX);
        let mut channels: Vec<(Channel, i64)> = Vec::new();
        for (c, (_, conversions)) in campaign_days.iter().enumerate() {
            let n = counts.round(c as u64, conversions * model.attribution);
            if n > 0 {
                channels.push((Channel::Paid(c as u32), n));
            }
        }
        for (k, sessions) in organic.iter().enumerate() {
            let expected = *sessions as f64 * model.organic_cvr * ORGANIC[k].cvr_factor;
            let n = counts.round((1 << 32) + k as u64, expected);
            if n > 0 {
                channels.push((Channel::Organic(k as u8), n));
            }
        }

        let recent = day as usize + 2 >= self.days.len();
        let market = model.home;
        let mut out = Vec::with_capacity(channels.iter().map(|c| c.1 as usize).sum());
        let mut seq = 0u32;
        for (channel, n) in channels {
            for _ in 0..n {
                let o = base.at(u64::from(seq));
                let units = (model.aov * o.lognormal(1, 0.45)).round().max(5.0) as i64;
                // Price points end in .95: 89.95, 899.95 SEK.
                let subtotal_cents = units * 100 - 5;
                let shipping_cents = if (subtotal_cents as f64) < market.free_shipping * 100.0 {
                    (market.shipping_fee * 100.0).round() as i64
                } else {
                    0
                };
                let tax_cents = (subtotal_cents as f64 * market.tax_rate).round() as i64;
                let pending = if recent { 0.08 } else { 0.01 };
                let r = o.unit(2);
                let status = if r < pending {
                    FinancialStatus::Pending
                } else if r < pending + 0.01 {
                    FinancialStatus::Authorized
                } else if r < pending + 0.04 {
                    FinancialStatus::Refunded
                } else if r < pending + 0.05 {
                    FinancialStatus::PartiallyRefunded
                } else {
                    FinancialStatus::Paid
                };
                let hour = o.weighted(3, &ORDER_HOURS) as u32;
                let second_of_day = hour * 3600 + o.index(4, 3600) as u32;
                // Skewed towards low indexes: some customers come back.
                let customer = (model.customers as f64 * o.unit(5).powf(1.6)) as u64;
                let (ad, utm_stripped) = match channel {
                    Channel::Paid(c) => {
                        let ads = &model.campaigns[c as usize].ads;
                        let mut pick = ads.start;
                        for t in 0..3 {
                            pick = ads.start + o.index(6 + t, ads.len());
                            if model.ads[pick].active(day) {
                                break;
                            }
                        }
                        // Some checkouts lose the landing-page UTMs.
                        (Some(pick as u32), o.unit(9) < 0.08)
                    }
                    Channel::Organic(_) => (None, false),
                };
                out.push(OrderDraft {
                    channel,
                    seq,
                    ga4: o.unit(0) < model.ga4_capture,
                    cell_pick: o.unit(10),
                    subtotal_cents,
                    shipping_cents,
                    tax_cents,
                    status,
                    second_of_day,
                    customer,
                    ad,
                    utm_stripped,
                });
                seq += 1;
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    /// A campaign, by index.
    Paid(u32),
    /// An [`ORGANIC`] channel, by index.
    Organic(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FinancialStatus {
    Paid,
    Pending,
    Authorized,
    Refunded,
    PartiallyRefunded,
}

impl FinancialStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Paid => "paid",
            Self::Pending => "pending",
            Self::Authorized => "authorized",
            Self::Refunded => "refunded",
            Self::PartiallyRefunded => "partially_refunded",
        }
    }
}

#[derive(Debug, Clone)]
struct OrderDraft {
    channel: Channel,
    seq: u32,
    /// Whether GA4 recorded the purchase.
    ga4: bool,
    /// Uniform draw choosing the GA4 device/country of the purchase.
    cell_pick: f64,
    subtotal_cents: i64,
    shipping_cents: i64,
    tax_cents: i64,
    status: FinancialStatus,
    second_of_day: u32,
    customer: u64,
    ad: Option<u32>,
    utm_stripped: bool,
}

impl OrderDraft {
    fn total_cents(&self) -> i64 {
        self.subtotal_cents + self.shipping_cents + self.tax_cents
    }
}

/// Splits `total` into integer parts proportional to `weights`, summing to
/// `total` exactly (largest remainder).
fn apportion(total: i64, weights: &[f64]) -> Vec<i64> {
    let sum: f64 = weights.iter().sum();
    if total <= 0 || sum <= 0.0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| w / sum * total as f64).collect();
    let mut parts: Vec<i64> = exact.iter().map(|x| x.floor() as i64).collect();
    let mut missing = total - parts.iter().sum::<i64>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .total_cmp(&(exact[a] - exact[a].floor()))
            .then(a.cmp(&b))
    });
    for &i in order.iter().cycle() {
        if missing <= 0 {
            break;
        }
        parts[i] += 1;
        missing -= 1;
    }
    parts
}

/// One GA4 row before rendering.
#[derive(Debug, Clone)]
struct WebRow {
    channel: Channel,
    device: u8,
    country: &'static str,
    sessions: i64,
    engaged: i64,
    key_events: f64,
    revenue_cents: i64,
}

impl Inner {
    /// GA4 rows of one day: paid sessions from the day's clicks, organic
    /// sessions, and purchases (key events, revenue) from the day's orders.
    fn day_web_rows(&self, model: &ClientModel, day: u32) -> Vec<WebRow> {
        let campaign_days = self.campaign_days(model, day);
        let organic = self.organic_sessions(model, day);
        let orders = self.day_orders(model, day, &campaign_days, &organic);
        let n_campaigns = model.campaigns.len();
        let channel_pos = |ch: Channel| match ch {
            Channel::Paid(c) => c as usize,
            Channel::Organic(k) => n_campaigns + k as usize,
        };
        let mut purchases: Vec<Vec<&OrderDraft>> = vec![Vec::new(); n_campaigns + ORGANIC.len()];
        for order in orders.iter().filter(|o| o.ga4) {
            purchases[channel_pos(order.channel)].push(order);
        }

        let web = model.noise.at(TAG_WEB).at(u64::from(day));
        let mut rows = Vec::new();
        let channels = (0..n_campaigns)
            .map(|c| Channel::Paid(c as u32))
            .chain((0..ORGANIC.len()).map(|k| Channel::Organic(k as u8)));
        for channel in channels {
            let pos = channel_pos(channel);
            let n = web.at(pos as u64);
            let (sessions, devices, market, engagement): (i64, [f64; 3], &'static Market, f64) =
                match channel {
                    Channel::Paid(c) => {
                        let camp = &model.campaigns[c as usize];
                        let clicks = campaign_days[c as usize].0;
                        // Some clicks bounce before the GA4 tag fires.
                        let sessions = n.round(0, clicks as f64 * n.range(1, 0.80, 0.95));
                        let (devices, engagement) = match camp.platform {
                            Platform::LinkedinAds => (LINKEDIN_DEVICES, 0.55),
                            Platform::GoogleAds | Platform::MicrosoftAds => {
                                if camp.kind.is_search() || !camp.kind.billed_per_impression() {
                                    (SEARCH_DEVICES, 0.66)
                                } else {
                                    (DISPLAY_DEVICES, 0.40)
                                }
                            }
                            _ => (SOCIAL_DEVICES, 0.48),
                        };
                        (
                            sessions,
                            devices,
                            model.account_markets[camp.account],
                            engagement,
                        )
                    }
                    Channel::Organic(k) => {
                        let ch = &ORGANIC[k as usize];
                        (organic[k as usize], ch.devices, model.home, ch.engagement)
                    }
                };
            let bought = &purchases[pos];
            if sessions == 0 && bought.is_empty() {
                continue;
            }
            let countries: Vec<&'static str> = std::iter::once(market.country_name)
                .chain(market.neighbours.iter().copied())
                .collect();
            let mut cells: Vec<(u8, &'static str)> = Vec::new();
            let mut weights: Vec<f64> = Vec::new();
            for (d, device_share) in devices.iter().enumerate() {
                for (i, country) in countries.iter().enumerate() {
                    let country_share = if i == 0 {
                        0.88
                    } else {
                        0.12 / (countries.len() - 1) as f64
                    };
                    let jitter = n.lognormal(10 + weights.len() as u64, 0.1);
                    cells.push((d as u8, country));
                    weights.push(device_share * country_share * jitter);
                }
            }
            let mut cell_sessions = apportion(sessions, &weights);
            if sessions == 0 {
                // A purchase always comes with a session.
                cell_sessions[0] = bought.len() as i64;
            }
            let mut key_events = vec![0i64; cells.len()];
            let mut revenue = vec![0i64; cells.len()];
            let session_weights: Vec<f64> = cell_sessions.iter().map(|s| *s as f64).collect();
            let total_sessions: f64 = session_weights.iter().sum();
            for order in bought {
                let mut target = order.cell_pick * total_sessions;
                let mut cell = 0;
                for (i, w) in session_weights.iter().enumerate() {
                    cell = i;
                    if target < *w {
                        break;
                    }
                    target -= w;
                }
                key_events[cell] += 1;
                revenue[cell] += order.total_cents();
            }
            for (i, (device, country)) in cells.into_iter().enumerate() {
                let s = cell_sessions[i];
                if s == 0 {
                    continue;
                }
                let engaged = (n.round(
                    100 + i as u64,
                    s as f64 * engagement * n.lognormal(200 + i as u64, 0.06),
                ))
                .clamp(key_events[i].min(s), s);
                rows.push(WebRow {
                    channel,
                    device,
                    country,
                    sessions: s,
                    engaged,
                    key_events: key_events[i] as f64,
                    revenue_cents: revenue[i],
                });
            }
        }
        rows
    }
}

fn money_builder(capacity: usize) -> Decimal128Builder {
    Decimal128Builder::with_capacity(capacity).with_data_type(MONEY)
}

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

/// Fills `{theme}`, `{hook}` and `{n}` of an ad name template.
fn render_template(template: &str, theme: &str, hook: &str, n: u16, out: &mut String) {
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        match &rest[start + 1..start + len] {
            "theme" => out.push_str(theme),
            "hook" => out.push_str(hook),
            "n" => {
                let _ = write!(out, "{n:02}");
            }
            other => out.push_str(other),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
}

/// Builders of one `ad_performance` batch.
struct AdColumns {
    client_id: StringBuilder,
    date: Date32Builder,
    platform: StringBuilder,
    account_id: StringBuilder,
    account_name: StringBuilder,
    campaign_id: StringBuilder,
    campaign_name: StringBuilder,
    ad_group_id: StringBuilder,
    ad_group_name: StringBuilder,
    ad_id: StringBuilder,
    ad_name: StringBuilder,
    spend: Decimal128Builder,
    impressions: Int64Builder,
    clicks: Int64Builder,
    conversions: Float64Builder,
    conversion_value: Decimal128Builder,
    currency: StringBuilder,
    utm_source: StringBuilder,
    utm_medium: StringBuilder,
    utm_campaign: StringBuilder,
    utm_content: StringBuilder,
    utm_term: StringBuilder,
    len: usize,
}

impl AdColumns {
    fn new(capacity: usize) -> Self {
        let s = || StringBuilder::with_capacity(capacity, capacity * 16);
        Self {
            client_id: s(),
            date: Date32Builder::with_capacity(capacity),
            platform: s(),
            account_id: s(),
            account_name: s(),
            campaign_id: s(),
            campaign_name: s(),
            ad_group_id: s(),
            ad_group_name: s(),
            ad_id: s(),
            ad_name: s(),
            spend: money_builder(capacity),
            impressions: Int64Builder::with_capacity(capacity),
            clicks: Int64Builder::with_capacity(capacity),
            conversions: Float64Builder::with_capacity(capacity),
            conversion_value: money_builder(capacity),
            currency: s(),
            utm_source: s(),
            utm_medium: s(),
            utm_campaign: s(),
            utm_content: s(),
            utm_term: s(),
            len: 0,
        }
    }

    fn finish(mut self, lineage: &Lineage) -> RecordBatch {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.client_id.finish()),
            Arc::new(self.date.finish()),
            Arc::new(self.platform.finish()),
            Arc::new(self.account_id.finish()),
            Arc::new(self.account_name.finish()),
            Arc::new(self.campaign_id.finish()),
            Arc::new(self.campaign_name.finish()),
            Arc::new(self.ad_group_id.finish()),
            Arc::new(self.ad_group_name.finish()),
            Arc::new(self.ad_id.finish()),
            Arc::new(self.ad_name.finish()),
            Arc::new(self.spend.finish()),
            Arc::new(self.impressions.finish()),
            Arc::new(self.clicks.finish()),
            Arc::new(self.conversions.finish()),
            Arc::new(self.conversion_value.finish()),
            Arc::new(self.currency.finish()),
            Arc::new(self.utm_source.finish()),
            Arc::new(self.utm_medium.finish()),
            Arc::new(self.utm_campaign.finish()),
            Arc::new(self.utm_content.finish()),
            Arc::new(self.utm_term.finish()),
        ];
        columns.extend(lineage_columns(lineage, self.len));
        RecordBatch::try_new(AD_PERFORMANCE.schema(), columns)
            .expect("generated ad_performance columns match the table schema")
    }
}

/// Lazy `ad_performance` batches of one client over a range of its ads
/// (all of them, or one platform's), day by day.
pub(super) struct AdPerformanceBatches {
    synthetic: Synthetic,
    client: usize,
    ads: Range<usize>,
    lineage: Lineage,
    day: u32,
    next_ad: usize,
    scratch: String,
}

impl AdPerformanceBatches {
    pub(super) fn new(
        synthetic: Synthetic,
        client: usize,
        ads: Range<usize>,
        lineage: Lineage,
    ) -> Self {
        Self {
            synthetic,
            client,
            next_ad: ads.start,
            ads,
            lineage,
            day: 0,
            scratch: String::new(),
        }
    }

    fn push_row(&mut self, cols: &mut AdColumns, ad_idx: usize, day: u32) {
        let inner = &*self.synthetic.inner;
        let profile = &inner.profiles[self.client];
        let model = &inner.models[self.client];
        let ad = &model.ads[ad_idx];
        let camp = &model.campaigns[ad.campaign as usize];
        let group = &model.ad_groups[ad.ad_group as usize];
        let account = &profile.accounts[camp.account];
        let mut m = inner.ad_day(model, ad_idx, day);
        // An incident changes what the platform reports, not what happened:
        // orders and sessions (from `ad_day`) are unchanged.
        match model.incident {
            Some(Incident::TrackingOutage {
                platform,
                first_day,
                days,
            }) if platform == camp.platform && (first_day..first_day + days).contains(&day) => {
                m.conversions = 0.0;
                m.value_cents = 0;
            }
            Some(Incident::SpendSpike { campaign, day: d })
                if campaign == ad.campaign && d == day =>
            {
                m.spend_cents *= 3;
            }
            _ => {}
        }

        cols.client_id.append_value(&profile.id);
        cols.date.append_value(inner.days[day as usize].epoch_day);
        cols.platform.append_value(camp.platform.as_str());
        cols.account_id.append_value(&account.id);
        cols.account_name.append_value(&account.name);
        cols.campaign_id.append_value(&camp.id);
        cols.campaign_name.append_value(&camp.name);
        cols.ad_group_id.append_value(&group.id);
        cols.ad_group_name.append_value(&group.name);

        let scratch = &mut self.scratch;
        scratch.clear();
        render_id(camp.platform, IdLevel::Ad, ad.id, scratch);
        cols.ad_id.append_value(&*scratch);
        let id_len = scratch.len();
        let templates = ad_templates(camp.platform, camp.kind);
        render_template(
            templates[ad.template as usize % templates.len()],
            themes(model.vertical)[group.theme as usize],
            HOOKS[ad.hook as usize],
            ad.number,
            scratch,
        );
        let name = &scratch[id_len..];
        cols.ad_name.append_value(name);

        cols.spend.append_value(i128::from(m.spend_cents) * CENT);
        cols.impressions.append_value(m.impressions);
        cols.clicks.append_value(m.clicks);
        cols.conversions.append_value(m.conversions);
        cols.conversion_value
            .append_value(i128::from(m.value_cents) * CENT);
        cols.currency.append_value(&account.currency);
        cols.utm_source.append_value(camp.platform.utm_source());
        cols.utm_medium.append_value(camp.platform.utm_medium());
        cols.utm_campaign.append_value(&camp.utm_campaign);
        if camp.platform.utm_medium() == "cpc" {
            cols.utm_content.append_value(slugify(name));
        } else {
            // Social platforms fill utm_content from the {{ad.id}} macro.
            cols.utm_content.append_value(&scratch[..id_len]);
        }
        cols.utm_term.append_option(group.utm_term.as_deref());
        cols.len += 1;
    }
}

impl Iterator for AdPerformanceBatches {
    type Item = RecordBatch;

    fn next(&mut self) -> Option<RecordBatch> {
        let inner = Arc::clone(&self.synthetic.inner);
        let n_days = inner.days.len() as u32;
        let batch_rows = self.synthetic.batch_rows;
        let mut cols: Option<AdColumns> = None;
        while self.day < n_days {
            while self.next_ad < self.ads.end {
                let ad_idx = self.next_ad;
                self.next_ad += 1;
                if !inner.models[self.client].ads[ad_idx].active(self.day) {
                    continue;
                }
                let c = cols.get_or_insert_with(|| AdColumns::new(batch_rows.min(8_192)));
                self.push_row(c, ad_idx, self.day);
                if c.len >= batch_rows {
                    return cols.map(|c| c.finish(&self.lineage));
                }
            }
            self.day += 1;
            self.next_ad = self.ads.start;
        }
        cols.map(|c| c.finish(&self.lineage))
    }
}

/// Lazy GA4 `web_sessions` batches of one client.
pub(super) struct WebSessionBatches {
    synthetic: Synthetic,
    client: usize,
    lineage: Lineage,
    day: u32,
    pending: std::vec::IntoIter<WebRow>,
    pending_day: u32,
}

impl WebSessionBatches {
    pub(super) fn new(synthetic: Synthetic, client: usize, lineage: Lineage) -> Self {
        Self {
            synthetic,
            client,
            lineage,
            day: 0,
            pending: Vec::new().into_iter(),
            pending_day: 0,
        }
    }
}

impl Iterator for WebSessionBatches {
    type Item = RecordBatch;

    fn next(&mut self) -> Option<RecordBatch> {
        let inner = Arc::clone(&self.synthetic.inner);
        let profile = &inner.profiles[self.client];
        let model = &inner.models[self.client];
        let batch_rows = self.synthetic.batch_rows;
        let cap = batch_rows.min(8_192);
        let s = || StringBuilder::with_capacity(cap, cap * 12);
        let (mut client_id, mut property_id, mut source, mut medium, mut campaign) =
            (s(), s(), s(), s(), s());
        let (mut device, mut country, mut currency) = (s(), s(), s());
        let mut date = Date32Builder::with_capacity(cap);
        let mut sessions = Int64Builder::with_capacity(cap);
        let mut engaged = Int64Builder::with_capacity(cap);
        let mut key_events = Float64Builder::with_capacity(cap);
        let mut revenue = money_builder(cap);
        let mut len = 0usize;

        while len < batch_rows {
            let Some(row) = self.pending.next() else {
                if self.day as usize >= inner.days.len() {
                    break;
                }
                self.pending = inner.day_web_rows(model, self.day).into_iter();
                self.pending_day = self.day;
                self.day += 1;
                continue;
            };
            let (src, med, camp) = match row.channel {
                Channel::Paid(c) => {
                    let camp = &model.campaigns[c as usize];
                    (
                        camp.platform.utm_source(),
                        camp.platform.utm_medium(),
                        camp.utm_campaign.as_str(),
                    )
                }
                Channel::Organic(k) => {
                    let ch = &ORGANIC[k as usize];
                    (ch.source, ch.medium, ch.campaign)
                }
            };
            client_id.append_value(&profile.id);
            date.append_value(inner.days[self.pending_day as usize].epoch_day);
            property_id.append_value(&profile.ga4_property_id);
            source.append_value(src);
            medium.append_value(med);
            campaign.append_value(camp);
            device.append_value(DEVICES[row.device as usize]);
            country.append_value(row.country);
            sessions.append_value(row.sessions);
            engaged.append_value(row.engaged);
            key_events.append_value(row.key_events);
            revenue.append_value(i128::from(row.revenue_cents) * CENT);
            currency.append_value(&profile.currency);
            len += 1;
        }
        if len == 0 {
            return None;
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(client_id.finish()),
            Arc::new(date.finish()),
            Arc::new(property_id.finish()),
            Arc::new(source.finish()),
            Arc::new(medium.finish()),
            Arc::new(campaign.finish()),
            Arc::new(device.finish()),
            Arc::new(country.finish()),
            Arc::new(sessions.finish()),
            Arc::new(engaged.finish()),
            Arc::new(key_events.finish()),
            Arc::new(revenue.finish()),
            Arc::new(currency.finish()),
        ];
        columns.extend(lineage_columns(&self.lineage, len));
        Some(
            RecordBatch::try_new(WEB_SESSIONS.schema(), columns)
                .expect("generated web_sessions columns match the table schema"),
        )
    }
}

/// The synthetic e-mail of customer `n`; only its keyed hash is stored.
pub(crate) fn customer_email(n: u64, out: &mut String) {
    let first = FIRST_NAMES[(n % FIRST_NAMES.len() as u64) as usize];
    let rest = n / FIRST_NAMES.len() as u64;
    let last = LAST_NAMES[(rest % LAST_NAMES.len() as u64) as usize];
    let number = rest / LAST_NAMES.len() as u64;
    let domain = EMAIL_DOMAINS[Noise::new(n).index(0, EMAIL_DOMAINS.len())];
    out.clear();
    if number == 0 {
        let _ = write!(out, "{first}.{last}@{domain}");
    } else {
        let _ = write!(out, "{first}.{last}{number}@{domain}");
    }
}

/// Lazy Shopify `orders` batches of one client.
pub(super) struct OrderBatches {
    synthetic: Synthetic,
    client: usize,
    lineage: Lineage,
    day: u32,
    pending: std::vec::IntoIter<OrderDraft>,
    pending_day: u32,
    scratch: String,
}

impl OrderBatches {
    pub(super) fn new(synthetic: Synthetic, client: usize, lineage: Lineage) -> Self {
        Self {
            synthetic,
            client,
            lineage,
            day: 0,
            pending: Vec::new().into_iter(),
            pending_day: 0,
            scratch: String::new(),
        }
    }
}

impl Iterator for OrderBatches {
    type Item = RecordBatch;

    fn next(&mut self) -> Option<RecordBatch> {
        let inner = Arc::clone(&self.synthetic.inner);
        let profile = &inner.profiles[self.client];
        let model = &inner.models[self.client];
        let batch_rows = self.synthetic.batch_rows;
        let cap = batch_rows.min(8_192);
        let s = || StringBuilder::with_capacity(cap, cap * 16);
        let (mut client_id, mut shop_id, mut order_id, mut currency, mut status) =
            (s(), s(), s(), s(), s());
        let (mut utm_source, mut utm_medium, mut utm_campaign, mut utm_content, mut utm_term) =
            (s(), s(), s(), s(), s());
        let mut customer = StringBuilder::with_capacity(cap, cap * 64);
        let mut date = Date32Builder::with_capacity(cap);
        let mut created_at = TimestampMicrosecondBuilder::with_capacity(cap).with_timezone("UTC");
        let mut total = money_builder(cap);
        let mut subtotal = money_builder(cap);
        let mut len = 0usize;
        let mut scratch = std::mem::take(&mut self.scratch);

        while len < batch_rows {
            let Some(order) = self.pending.next() else {
                if self.day as usize >= inner.days.len() {
                    break;
                }
                let campaign_days = inner.campaign_days(model, self.day);
                let organic = inner.organic_sessions(model, self.day);
                self.pending = inner
                    .day_orders(model, self.day, &campaign_days, &organic)
                    .into_iter();
                self.pending_day = self.day;
                self.day += 1;
                continue;
            };
            let day = inner.days[self.pending_day as usize].date;
            client_id.append_value(&profile.id);
            date.append_value(inner.days[self.pending_day as usize].epoch_day);
            shop_id.append_value(&profile.shop_id);
            let id = model.order_id_base
                + u64::from(self.pending_day) * 20_000_000
                + u64::from(order.seq) * 11
                + order.customer % 11;
            scratch.clear();
            let _ = write!(scratch, "{id}");
            order_id.append_value(&scratch);
            created_at.append_value(utc_micros(profile.time_zone, day, order.second_of_day));
            currency.append_value(&profile.currency);
            total.append_value(i128::from(order.total_cents()) * CENT);
            subtotal.append_value(i128::from(order.subtotal_cents) * CENT);
            status.append_value(order.status.as_str());

            match (order.channel, order.ad) {
                (Channel::Paid(c), Some(ad_idx)) if !order.utm_stripped => {
                    let camp = &model.campaigns[c as usize];
                    let ad = &model.ads[ad_idx as usize];
                    let group = &model.ad_groups[ad.ad_group as usize];
                    utm_source.append_value(camp.platform.utm_source());
                    utm_medium.append_value(camp.platform.utm_medium());
                    utm_campaign.append_value(&camp.utm_campaign);
                    scratch.clear();
                    render_id(camp.platform, IdLevel::Ad, ad.id, &mut scratch);
                    if camp.platform.utm_medium() == "cpc" {
                        let id_len = scratch.len();
                        let templates = ad_templates(camp.platform, camp.kind);
                        render_template(
                            templates[ad.template as usize % templates.len()],
                            themes(model.vertical)[group.theme as usize],
                            HOOKS[ad.hook as usize],
                            ad.number,
                            &mut scratch,
                        );
                        utm_content.append_value(slugify(&scratch[id_len..]));
                    } else {
                        utm_content.append_value(&scratch);
                    }
                    utm_term.append_option(group.utm_term.as_deref());
                }
                (Channel::Organic(k), _) if ORGANIC[k as usize].tagged => {
                    let ch = &ORGANIC[k as usize];
                    utm_source.append_value(ch.source);
                    utm_medium.append_value(ch.medium);
                    utm_campaign.append_value(ch.campaign);
                    utm_content.append_null();
                    utm_term.append_null();
                }
                _ => {
                    utm_source.append_null();
                    utm_medium.append_null();
                    utm_campaign.append_null();
                    utm_content.append_null();
                    utm_term.append_null();
                }
            }
            customer_email(order.customer, &mut scratch);
            customer.append_value(customer_key(&inner.customer_key, &scratch));
            len += 1;
        }
        self.scratch = scratch;
        if len == 0 {
            return None;
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(client_id.finish()),
            Arc::new(date.finish()),
            Arc::new(shop_id.finish()),
            Arc::new(order_id.finish()),
            Arc::new(created_at.finish()),
            Arc::new(currency.finish()),
            Arc::new(total.finish()),
            Arc::new(subtotal.finish()),
            Arc::new(status.finish()),
            Arc::new(utm_source.finish()),
            Arc::new(utm_medium.finish()),
            Arc::new(utm_campaign.finish()),
            Arc::new(utm_content.finish()),
            Arc::new(utm_term.finish()),
            Arc::new(customer.finish()),
        ];
        columns.extend(lineage_columns(&self.lineage, len));
        Some(
            RecordBatch::try_new(ORDERS.schema(), columns)
                .expect("generated orders columns match the table schema"),
        )
    }
}

/// UTC microseconds of a shop-local date and second of the day.
fn utc_micros(tz: chrono_tz::Tz, date: NaiveDate, second_of_day: u32) -> i64 {
    let time =
        NaiveTime::from_num_seconds_from_midnight_opt(second_of_day, 0).unwrap_or(NaiveTime::MIN);
    let local = date.and_time(time);
    let resolved = tz
        .from_local_datetime(&local)
        .earliest()
        // In a spring-forward gap the wall-clock time does not exist; an
        // hour later does.
        .or_else(|| {
            tz.from_local_datetime(&(local + chrono::Duration::hours(1)))
                .earliest()
        });
    match resolved {
        Some(t) => t.timestamp_micros(),
        None => local.and_utc().timestamp_micros(),
    }
}

/// Value of one unit of a currency in USD, the starting point of its walk.
fn usd_per_unit(currency: &str) -> f64 {
    super::model::MARKETS
        .iter()
        .find(|m| m.currency == currency)
        .map_or(1.0, |m| m.usd_per_unit)
}

/// Lazy `fx_rates` batches: a daily random walk of every currency against
/// USD, crossed to give every pair with USD and EUR in both directions.
pub(super) struct FxRateBatches {
    synthetic: Synthetic,
    day: u32,
    /// Next pair of the current day; 0 means the day's walk step is due.
    next_pair: usize,
    /// ln(USD per unit) of each currency.
    log_usd: Vec<f64>,
    pairs: Vec<(usize, usize)>,
}

impl FxRateBatches {
    pub(super) fn new(synthetic: Synthetic) -> Self {
        let currencies = &synthetic.inner.currencies;
        let log_usd = currencies.iter().map(|c| usd_per_unit(c).ln()).collect();
        let anchor = |c: &str| c == "USD" || c == "EUR";
        let mut pairs = Vec::new();
        for (b, base) in currencies.iter().enumerate() {
            for (q, quote) in currencies.iter().enumerate() {
                if b != q && (anchor(base) || anchor(quote)) {
                    pairs.push((b, q));
                }
            }
        }
        Self {
            synthetic,
            day: 0,
            next_pair: 0,
            log_usd,
            pairs,
        }
    }
}

impl Iterator for FxRateBatches {
    type Item = RecordBatch;

    fn next(&mut self) -> Option<RecordBatch> {
        let inner = Arc::clone(&self.synthetic.inner);
        let batch_rows = self.synthetic.batch_rows;
        let currencies = &inner.currencies;
        let mut date = Date32Builder::new();
        let mut base = StringBuilder::new();
        let mut quote = StringBuilder::new();
        let mut rate = Float64Builder::new();
        let mut len = 0usize;
        while len < batch_rows && (self.day as usize) < inner.days.len() && !self.pairs.is_empty() {
            if self.next_pair == 0 {
                let n = inner.noise.at(TAG_FX).at(u64::from(self.day));
                for (i, c) in currencies.iter().enumerate() {
                    if c != "USD" {
                        self.log_usd[i] += 0.004 * n.normal(i as u64);
                    }
                }
            }
            let (b, q) = self.pairs[self.next_pair];
            let r = (self.log_usd[b] - self.log_usd[q]).exp();
            date.append_value(inner.days[self.day as usize].epoch_day);
            base.append_value(&currencies[b]);
            quote.append_value(&currencies[q]);
            // Published rates carry six decimals.
            rate.append_value((r * 1e6).round() / 1e6);
            len += 1;
            self.next_pair += 1;
            if self.next_pair == self.pairs.len() {
                self.next_pair = 0;
                self.day += 1;
            }
        }
        if len == 0 {
            return None;
        }
        Some(
            RecordBatch::try_new(
                FX_RATES.schema(),
                vec![
                    Arc::new(date.finish()),
                    Arc::new(base.finish()),
                    Arc::new(quote.finish()),
                    Arc::new(rate.finish()),
                ],
            )
            .expect("generated fx_rates columns match the table schema"),
        )
    }
}

#[cfg(test)]
mod tests {
    use chrono::Timelike;

    use super::*;

    #[test]
    fn apportion_sums_exactly() {
        assert_eq!(apportion(10, &[1.0, 1.0, 1.0]).iter().sum::<i64>(), 10);
        assert_eq!(apportion(0, &[1.0, 2.0]), vec![0, 0]);
        assert_eq!(apportion(7, &[0.0, 1.0]), vec![0, 7]);
    }

    #[test]
    fn templates_render() {
        let mut s = String::new();
        render_template("UGC Video - {hook} - v{n}", "x", "Testimonial", 3, &mut s);
        assert_eq!(s, "UGC Video - Testimonial - v03");
    }

    #[test]
    fn dst_gap_resolves_forward() {
        // 2025-03-09 02:30 does not exist in New York.
        let date = NaiveDate::from_ymd_opt(2025, 3, 9).unwrap();
        let micros = utc_micros(chrono_tz::America::New_York, date, 2 * 3600 + 1800);
        let t = chrono::DateTime::from_timestamp_micros(micros).unwrap();
        assert_eq!((t.hour(), t.minute()), (7, 30));
    }
}
