//! The shape of each synthetic client: markets, accounts, campaigns, ad
//! groups and ads, with the rates that drive their daily numbers.
//!
//! Built once per [`super::Synthetic`]; ads are stored compactly (ids as
//! integers, names rendered on demand) so that a 100M-row configuration
//! (about a million ads) stays small in memory.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::ops::Range;

use chrono_tz::{America, Australia, Europe, Pacific, Tz};
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;

use super::names::{self, slugify, themes};
use super::noise::Noise;
use super::{AccountProfile, ClientProfile, SyntheticConfig, Vertical};
use crate::sources::connectors::Platform;

/// A home market: where a client (or one of its ad accounts) sells.
#[derive(Debug)]
pub(super) struct Market {
    /// ISO 3166 code.
    pub(super) code: &'static str,
    /// Label used in campaign names ("US", "UK", "EU"...).
    pub(super) geo: &'static str,
    /// GA4 country name.
    pub(super) country_name: &'static str,
    pub(super) currency: &'static str,
    pub(super) time_zones: &'static [Tz],
    /// Value of one unit of the currency in USD, for price levels.
    pub(super) usd_per_unit: f64,
    /// Sales tax added at checkout (0 where prices include VAT).
    pub(super) tax_rate: f64,
    /// Free-shipping threshold and flat shipping fee, in the currency.
    pub(super) free_shipping: f64,
    pub(super) shipping_fee: f64,
    /// Nearby countries that also show up in GA4.
    pub(super) neighbours: &'static [&'static str],
    /// Relative frequency among an agency's clients.
    weight: f64,
}

pub(super) const MARKETS: &[Market] = &[
    Market {
        code: "US",
        geo: "US",
        country_name: "United States",
        currency: "USD",
        time_zones: &[
            America::New_York,
            America::Chicago,
            America::Denver,
            America::Los_Angeles,
        ],
        usd_per_unit: 1.0,
        tax_rate: 0.0725,
        free_shipping: 75.0,
        shipping_fee: 6.95,
        neighbours: &["Canada", "United Kingdom"],
        weight: 40.0,
    },
    Market {
        code: "GB",
        geo: "UK",
        country_name: "United Kingdom",
        currency: "GBP",
        time_zones: &[Europe::London],
        usd_per_unit: 1.27,
        tax_rate: 0.0,
        free_shipping: 50.0,
        shipping_fee: 3.99,
        neighbours: &["Ireland", "United States"],
        weight: 15.0,
    },
    Market {
        code: "DE",
        geo: "DE",
        country_name: "Germany",
        currency: "EUR",
        time_zones: &[Europe::Berlin],
        usd_per_unit: 1.08,
        tax_rate: 0.0,
        free_shipping: 49.0,
        shipping_fee: 4.95,
        neighbours: &["Austria", "Switzerland"],
        weight: 8.0,
    },
    Market {
        code: "FR",
        geo: "FR",
        country_name: "France",
        currency: "EUR",
        time_zones: &[Europe::Paris],
        usd_per_unit: 1.08,
        tax_rate: 0.0,
        free_shipping: 60.0,
        shipping_fee: 5.90,
        neighbours: &["Belgium", "Switzerland"],
        weight: 5.0,
    },
    Market {
        code: "NL",
        geo: "NL",
        country_name: "Netherlands",
        currency: "EUR",
        time_zones: &[Europe::Amsterdam],
        usd_per_unit: 1.08,
        tax_rate: 0.0,
        free_shipping: 50.0,
        shipping_fee: 4.95,
        neighbours: &["Belgium", "Germany"],
        weight: 4.0,
    },
    Market {
        code: "AU",
        geo: "AU",
        country_name: "Australia",
        currency: "AUD",
        time_zones: &[Australia::Sydney, Australia::Melbourne, Australia::Brisbane],
        usd_per_unit: 0.66,
        tax_rate: 0.0,
        free_shipping: 99.0,
        shipping_fee: 9.95,
        neighbours: &["New Zealand", "United States"],
        weight: 10.0,
    },
    Market {
        code: "CA",
        geo: "CA",
        country_name: "Canada",
        currency: "CAD",
        time_zones: &[America::Toronto, America::Vancouver],
        usd_per_unit: 0.73,
        tax_rate: 0.13,
        free_shipping: 99.0,
        shipping_fee: 9.95,
        neighbours: &["United States"],
        weight: 10.0,
    },
    Market {
        code: "NZ",
        geo: "NZ",
        country_name: "New Zealand",
        currency: "NZD",
        time_zones: &[Pacific::Auckland],
        usd_per_unit: 0.60,
        tax_rate: 0.0,
        free_shipping: 100.0,
        shipping_fee: 7.50,
        neighbours: &["Australia"],
        weight: 3.0,
    },
    Market {
        code: "SE",
        geo: "SE",
        country_name: "Sweden",
        currency: "SEK",
        time_zones: &[Europe::Stockholm],
        usd_per_unit: 0.095,
        tax_rate: 0.0,
        free_shipping: 499.0,
        shipping_fee: 49.0,
        neighbours: &["Norway", "Denmark", "Finland"],
        weight: 5.0,
    },
];

/// The market of a client's second, international ad account.
fn expansion_market(home: &Market) -> &'static Market {
    let code = match home.code {
        "US" | "CA" => "GB",
        _ => "US",
    };
    MARKETS
        .iter()
        .find(|m| m.code == code)
        .expect("expansion markets are in MARKETS")
}

/// What a campaign is for; decides its rates and how it is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CampaignKind {
    BrandSearch,
    NonBrandSearch,
    Competitor,
    Shopping,
    PerformanceMax,
    Display,
    Video,
    Prospecting,
    Retargeting,
    Catalog,
    LeadGen,
    Awareness,
}

/// The typical numbers of a campaign kind.
struct KindRates {
    /// Click-through rate range.
    ctr: (f64, f64),
    /// Conversions per click range.
    cvr: (f64, f64),
    /// CPC relative to the platform's base CPC.
    cpc_factor: f64,
    /// Impressions per ad per day range.
    impressions: (f64, f64),
}

impl CampaignKind {
    fn rates(self) -> KindRates {
        use CampaignKind::*;
        let (ctr, cvr, cpc_factor, impressions) = match self {
            BrandSearch => ((0.035, 0.048), (0.06, 0.08), 0.35, (150.0, 600.0)),
            NonBrandSearch => ((0.02, 0.04), (0.02, 0.04), 1.0, (300.0, 1500.0)),
            Competitor => ((0.015, 0.03), (0.01, 0.02), 1.3, (200.0, 800.0)),
            Shopping => ((0.008, 0.015), (0.02, 0.04), 0.55, (1000.0, 4000.0)),
            PerformanceMax => ((0.009, 0.02), (0.025, 0.045), 0.7, (1500.0, 6000.0)),
            Display => ((0.0035, 0.007), (0.01, 0.015), 0.35, (4000.0, 15000.0)),
            Video => ((0.004, 0.009), (0.01, 0.015), 0.5, (3000.0, 12000.0)),
            Prospecting => ((0.008, 0.016), (0.012, 0.025), 1.0, (2000.0, 8000.0)),
            Retargeting => ((0.012, 0.025), (0.03, 0.06), 0.9, (800.0, 3000.0)),
            Catalog => ((0.01, 0.02), (0.02, 0.035), 0.9, (2000.0, 7000.0)),
            LeadGen => ((0.0045, 0.009), (0.04, 0.08), 1.0, (400.0, 1500.0)),
            Awareness => ((0.0035, 0.006), (0.01, 0.015), 0.6, (5000.0, 20000.0)),
        };
        KindRates {
            ctr,
            cvr,
            cpc_factor,
            impressions,
        }
    }

    /// Social and display inventory is bought by the thousand impressions;
    /// search by the click.
    pub(super) fn billed_per_impression(self) -> bool {
        !matches!(
            self,
            Self::BrandSearch | Self::NonBrandSearch | Self::Competitor | Self::Shopping
        )
    }

    pub(super) fn is_search(self) -> bool {
        matches!(
            self,
            Self::BrandSearch | Self::NonBrandSearch | Self::Competitor
        )
    }

    fn fits(self, vertical: Vertical) -> bool {
        match self {
            Self::Shopping | Self::PerformanceMax | Self::Catalog => !vertical.is_b2b(),
            Self::LeadGen => vertical.is_b2b(),
            _ => true,
        }
    }

    /// Ad group (Meta ad set, LinkedIn campaign) names; `{theme}` and
    /// `{geo}` are filled in.
    fn ad_group_templates(self) -> &'static [&'static str] {
        use CampaignKind::*;
        match self {
            BrandSearch => &["Brand - Exact", "Brand - Phrase", "Brand + {theme}"],
            NonBrandSearch => &["{theme} - Exact", "{theme} - Phrase", "{theme} - Broad"],
            Competitor => &["Competitors - Exact", "Competitors - Phrase"],
            Shopping => &["All Products", "Best Sellers", "{theme}"],
            PerformanceMax => &["Asset Group - {theme}", "Asset Group - Best Sellers"],
            Display => &[
                "Remarketing - All Visitors 30d",
                "In-Market - {theme}",
                "Custom Intent - {theme}",
            ],
            Video => &["In-Market - {theme}", "Affinity - {theme}"],
            Prospecting => &[
                "{geo} | 25-54 | Broad",
                "LAL 1% Purchasers | {geo}",
                "Interests - {theme} | {geo}",
                "Advantage+ Audience | {geo}",
            ],
            Retargeting => &["WV 30d Excl. Purchasers", "ATC 14d", "Engagers 60d"],
            Catalog => &[
                "All Products - Catalog",
                "Best Sellers - Catalog",
                "{theme}",
            ],
            LeadGen => &[
                "IT Decision Makers - {geo}",
                "Job Title: Marketing Director - {geo}",
                "Company Size 200-1000 - {geo}",
            ],
            Awareness => &["Broad - {geo}", "Interests - {theme}"],
        }
    }
}

/// Campaign name templates per platform.
fn campaign_templates(platform: Platform) -> &'static [(CampaignKind, &'static str)] {
    use CampaignKind::*;
    match platform {
        Platform::GoogleAds => &[
            (BrandSearch, "Brand | Search | {geo}"),
            (NonBrandSearch, "Non-Brand | Search | {geo} | {theme}"),
            (Shopping, "Shopping | {geo} | All Products"),
            (PerformanceMax, "PMax | {geo} | {theme}"),
            (Competitor, "Competitor | Search | {geo}"),
            (Display, "Display | Remarketing | {geo}"),
            (Video, "YouTube | Awareness | {geo}"),
        ],
        Platform::MetaAds => &[
            (Prospecting, "Prospecting - Lookalike 1% - {geo}"),
            (Retargeting, "Retargeting - DPA - {geo}"),
            (Catalog, "ASC+ | Evergreen | {geo}"),
            (Prospecting, "Prospecting - Broad - {geo}"),
            (LeadGen, "Lead Gen - Instant Form - {geo}"),
            (Retargeting, "Retargeting - Website Visitors 30d"),
            (Prospecting, "Prospecting - Interests - {theme}"),
        ],
        Platform::TiktokAds => &[
            (Prospecting, "Spark Ads - UGC - {geo}"),
            (Catalog, "Video Shopping Ads - {geo}"),
            (Prospecting, "Prospecting - Broad - {geo}"),
            (Retargeting, "Retargeting - Engagers 14d"),
        ],
        Platform::LinkedinAds => &[
            (LeadGen, "ABM - Target Accounts - {geo}"),
            (LeadGen, "Lead Gen - Decision Makers - {geo}"),
            (Awareness, "Thought Leadership - Sponsored Content"),
            (Retargeting, "Retargeting - Website Visitors 90d"),
        ],
        Platform::MicrosoftAds => &[
            (BrandSearch, "Brand | Search | {geo}"),
            (NonBrandSearch, "Non-Brand | Search | {geo} | {theme}"),
            (Shopping, "Shopping | Microsoft | {geo}"),
        ],
        Platform::PinterestAds => &[
            (Prospecting, "Prospecting - Interests - {theme}"),
            (Catalog, "Shopping - Catalog - {geo}"),
            (Retargeting, "Retargeting - Engagers 30d"),
        ],
        Platform::SnapchatAds => &[
            (Prospecting, "Prospecting - Lookalike - {geo}"),
            (Catalog, "Dynamic Product Ads - {geo}"),
            (Awareness, "Story Ads - Awareness"),
        ],
    }
}

/// Ad name templates per platform and campaign kind; `{theme}`, `{hook}`
/// and `{n}` are filled in when a row is rendered.
pub(super) fn ad_templates(platform: Platform, kind: CampaignKind) -> &'static [&'static str] {
    match (platform, kind) {
        (Platform::GoogleAds | Platform::MicrosoftAds, CampaignKind::Shopping) => {
            &["Product Ad - {theme}"]
        }
        (Platform::GoogleAds, CampaignKind::PerformanceMax) => &["Asset Group Ad {n} - {theme}"],
        (Platform::GoogleAds, CampaignKind::Display) => &["Responsive Display - {hook} - {n}"],
        (Platform::GoogleAds, CampaignKind::Video) => &["YouTube - {hook} - 15s - {n}"],
        (Platform::GoogleAds | Platform::MicrosoftAds, _) => &["RSA {n} - {theme}"],
        (Platform::MetaAds, CampaignKind::Catalog) => {
            &["DPA - Catalog - {n}", "Carousel - Best Sellers - {n}"]
        }
        (Platform::MetaAds, _) => &[
            "UGC Video - {hook} - v{n}",
            "Static - {theme} - {n}",
            "Carousel - Best Sellers - {n}",
        ],
        (Platform::TiktokAds, _) => &[
            "Spark - Creator {n} - {hook}",
            "In-Feed Video - {hook} - v{n}",
        ],
        (Platform::LinkedinAds, _) => &[
            "Single Image - {theme} - {n}",
            "Document Ad - {theme} - {n}",
            "Video - Customer Story {n}",
        ],
        (Platform::PinterestAds, _) => {
            &["Standard Pin - {theme} - {n}", "Video Pin - {hook} - {n}"]
        }
        (Platform::SnapchatAds, _) => &[
            "Single Image - {hook} - {n}",
            "Collection Ad - {theme} - {n}",
        ],
    }
}

/// Base cost per click in USD.
fn base_cpc_usd(platform: Platform) -> f64 {
    match platform {
        Platform::GoogleAds => 1.6,
        Platform::MetaAds => 0.9,
        Platform::TiktokAds => 0.55,
        Platform::LinkedinAds => 7.5,
        Platform::MicrosoftAds => 1.1,
        Platform::PinterestAds => 0.7,
        Platform::SnapchatAds => 0.6,
    }
}

/// How much of a client's budget a platform usually gets.
fn platform_weight(platform: Platform) -> f64 {
    match platform {
        Platform::GoogleAds | Platform::MetaAds => 1.0,
        Platform::TiktokAds => 0.5,
        Platform::LinkedinAds => 0.45,
        Platform::MicrosoftAds => 0.25,
        Platform::PinterestAds | Platform::SnapchatAds => 0.3,
    }
}

/// Chance that a client of this vertical advertises on the platform, given
/// it does not yet (Google is always on).
fn platform_affinity(platform: Platform, vertical: Vertical) -> f64 {
    let b2b = vertical.is_b2b();
    match platform {
        Platform::GoogleAds => 0.0,
        Platform::MetaAds => {
            if b2b {
                0.5
            } else {
                1.0
            }
        }
        Platform::TiktokAds => {
            if b2b {
                0.08
            } else {
                0.6
            }
        }
        Platform::LinkedinAds => {
            if b2b {
                1.0
            } else {
                0.06
            }
        }
        Platform::MicrosoftAds => {
            if b2b {
                0.6
            } else {
                0.35
            }
        }
        Platform::PinterestAds => {
            if b2b {
                0.04
            } else {
                0.35
            }
        }
        Platform::SnapchatAds => {
            if b2b {
                0.04
            } else {
                0.25
            }
        }
    }
}

/// Which id a platform object gets.
#[derive(Debug, Clone, Copy)]
pub(super) enum IdLevel {
    Account,
    Campaign,
    AdGroup,
    Ad,
}

/// The numeric range `[lo, lo + span)` of a platform's ids at one level,
/// shaped like the real ones (Meta ids beyond 2^53, TikTok 19 digits...).
fn id_range(platform: Platform, level: IdLevel) -> (u64, u64) {
    use IdLevel::*;
    match (platform, level) {
        // Google customer ids are rendered as 123-456-7890.
        (Platform::GoogleAds, Account) => (1_000_000_000, 8_999_999_999),
        (Platform::GoogleAds, Campaign) => (20_000_000_000, 2_000_000_000),
        (Platform::GoogleAds, AdGroup) => (140_000_000_000, 20_000_000_000),
        (Platform::GoogleAds, Ad) => (600_000_000_000, 90_000_000_000),
        (Platform::MetaAds, Account) => (10_000_000_000_000_000, 80_000_000_000_000_000),
        (Platform::MetaAds, Campaign | AdGroup) => (238_500_000_000_000_000, 500_000_000_000_000),
        (Platform::MetaAds, Ad) => (120_200_000_000_000_000, 900_000_000_000_000),
        (Platform::TiktokAds, Account) => (7_000_000_000_000_000_000, 400_000_000_000_000_000),
        (Platform::TiktokAds, _) => (1_700_000_000_000_000_000, 100_000_000_000_000_000),
        (Platform::LinkedinAds, Account) => (500_000_000, 20_000_000),
        (Platform::LinkedinAds, Campaign) => (600_000_000, 90_000_000),
        (Platform::LinkedinAds, AdGroup) => (300_000_000, 90_000_000),
        (Platform::LinkedinAds, Ad) => (400_000_000, 90_000_000),
        (Platform::MicrosoftAds, Account) => (180_000_000, 9_000_000),
        (Platform::MicrosoftAds, Campaign) => (400_000_000, 90_000_000),
        (Platform::MicrosoftAds, AdGroup) => (1_200_000_000_000, 90_000_000_000),
        (Platform::MicrosoftAds, Ad) => (80_000_000_000, 9_000_000_000),
        (Platform::PinterestAds, Account) => (549_755_000_000, 999_999),
        (Platform::PinterestAds, Campaign) => (626_700_000_000, 90_000_000),
        (Platform::PinterestAds, AdGroup) => (2_680_000_000_000, 9_000_000_000),
        (Platform::PinterestAds, Ad) => (687_000_000_000, 900_000_000),
        // Snapchat ids are UUIDs rendered from the number.
        (Platform::SnapchatAds, _) => (0, u64::MAX),
    }
}

/// Renders a platform id from its number.
pub(super) fn render_id(platform: Platform, level: IdLevel, n: u64, out: &mut String) {
    match (platform, level) {
        (Platform::GoogleAds, IdLevel::Account) => {
            let _ = write!(
                out,
                "{:03}-{:03}-{:04}",
                n / 10_000_000,
                n / 10_000 % 1000,
                n % 10_000
            );
        }
        (Platform::SnapchatAds, _) => {
            let hi = n;
            let lo = Noise::new(n).bits(0);
            let _ = write!(
                out,
                "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
                hi >> 32,
                (hi >> 16) & 0xffff,
                hi & 0x0fff,
                (lo >> 48) & 0x3fff | 0x8000,
                lo & 0xffff_ffff_ffff
            );
        }
        _ => {
            let _ = write!(out, "{n}");
        }
    }
}

fn new_id(platform: Platform, level: IdLevel, rng: &mut ChaCha8Rng) -> u64 {
    let (lo, span) = id_range(platform, level);
    lo + rng.random_range(0..span)
}

fn id_string(platform: Platform, level: IdLevel, n: u64) -> String {
    let mut s = String::new();
    render_id(platform, level, n, &mut s);
    s
}

/// One campaign and the rates it runs at.
#[derive(Debug)]
pub(super) struct CampaignModel {
    pub(super) account: usize,
    pub(super) platform: Platform,
    pub(super) kind: CampaignKind,
    pub(super) id: String,
    pub(super) name: String,
    pub(super) utm_campaign: String,
    pub(super) ctr: f64,
    pub(super) cvr: f64,
    /// CPC in the account's currency.
    pub(super) cpc: f64,
    /// Impressions per ad per day before seasonality.
    pub(super) impressions: f64,
    /// This campaign's ads, an index range of the client's ads.
    pub(super) ads: Range<usize>,
}

/// One ad group (Meta ad set, LinkedIn campaign).
#[derive(Debug)]
pub(super) struct AdGroupModel {
    pub(super) id: String,
    pub(super) name: String,
    /// Product theme index into [`themes`].
    pub(super) theme: u8,
    /// The keyword in `utm_term` for search ad groups.
    pub(super) utm_term: Option<String>,
}

/// One ad, kept small: strings are rendered per row.
#[derive(Debug, Clone, Copy)]
pub(super) struct AdModel {
    pub(super) campaign: u32,
    pub(super) ad_group: u32,
    pub(super) id: u64,
    /// Index into [`ad_templates`].
    pub(super) template: u8,
    /// Index into [`names::HOOKS`].
    pub(super) hook: u8,
    /// Creative number within the ad group, from 1.
    pub(super) number: u16,
    /// First and last active day (inclusive), as day indexes.
    pub(super) first_day: u16,
    pub(super) last_day: u16,
    /// Relative delivery (some ads win the auction, most do not).
    pub(super) weight: f32,
}

impl AdModel {
    pub(super) fn active(&self, day: u32) -> bool {
        u32::from(self.first_day) <= day && day <= u32::from(self.last_day)
    }

    pub(super) fn active_days(&self) -> u64 {
        u64::from(self.last_day - self.first_day) + 1
    }
}

/// Everything needed to generate one client's rows.
#[derive(Debug)]
pub(super) struct ClientModel {
    pub(super) noise: Noise,
    pub(super) vertical: Vertical,
    pub(super) home: &'static Market,
    /// Market of each account (parallel to the profile's accounts).
    pub(super) account_markets: Vec<&'static Market>,
    /// Weight of each account in the client's budget.
    account_weights: Vec<f64>,
    pub(super) campaigns: Vec<CampaignModel>,
    pub(super) ad_groups: Vec<AdGroupModel>,
    /// Ads ordered by platform (in [`Platform::ALL`] order), account,
    /// campaign and ad group.
    pub(super) ads: Vec<AdModel>,
    /// Range of `ads` per platform.
    pub(super) platform_ads: Vec<(Platform, Range<usize>)>,
    /// Average order value in the shop currency.
    pub(super) aov: f64,
    /// Growth over the whole window (0.2 = +20% from first to last day).
    pub(super) trend: f64,
    /// Shop orders per conversion the platforms claim (they over-count).
    pub(super) attribution: f64,
    /// Share of orders GA4 sees.
    pub(super) ga4_capture: f64,
    /// Organic sessions per day, before seasonality.
    pub(super) organic_sessions: f64,
    /// Orders per organic session.
    pub(super) organic_cvr: f64,
    /// Number of distinct customers.
    pub(super) customers: u64,
    /// First order id.
    pub(super) order_id_base: u64,
    /// Each campaign's budget and response, by campaign index.
    pub(super) response: Vec<super::response::CampaignResponse>,
    /// The client's injected incident, if any.
    pub(super) incident: Option<super::response::Incident>,
}

impl ClientModel {
    /// Average order value in an account's currency.
    pub(super) fn aov_in(&self, account: usize) -> f64 {
        let market = self.account_markets[account];
        self.aov * self.home.usd_per_unit / market.usd_per_unit
    }
}

fn weighted_pick<T>(rng: &mut ChaCha8Rng, items: &[T], weight: impl Fn(&T) -> f64) -> usize {
    let total: f64 = items.iter().map(&weight).sum();
    let mut target = rng.random::<f64>() * total;
    for (i, item) in items.iter().enumerate() {
        let w = weight(item);
        if target < w {
            return i;
        }
        target -= w;
    }
    items.len() - 1
}

fn lognormal(rng: &mut ChaCha8Rng, sigma: f64) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (sigma * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()).exp()
}

fn fill(template: &str, geo: &str, theme: &str) -> String {
    template.replace("{geo}", geo).replace("{theme}", theme)
}

/// The first phase: who the clients are and how their budget splits over
/// accounts. Ads come in the second phase, once every account's share of
/// the requested rows is known.
pub(super) fn build_profiles(
    cfg: &SyntheticConfig,
    noise: Noise,
) -> (Vec<ClientProfile>, Vec<ClientModel>) {
    let mut taken: HashSet<String> = HashSet::new();
    let mut profiles = Vec::with_capacity(cfg.clients);
    let mut models = Vec::with_capacity(cfg.clients);
    for idx in 0..cfg.clients {
        let client_noise = noise.at(idx as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(client_noise.bits(0));
        let (id, vertical) = client_slug(&mut rng, &mut taken);
        let name = names::title_case(&id);
        let home = &MARKETS[weighted_pick(&mut rng, MARKETS, |m| m.weight)];
        let time_zone = *home
            .time_zones
            .choose(&mut rng)
            .expect("every market has a time zone");
        let platforms = pick_platforms(&mut rng, vertical);

        let mut accounts = Vec::new();
        let mut account_markets = Vec::new();
        let mut account_weights = Vec::new();
        for &platform in &platforms {
            let n_accounts = if rng.random_bool(0.25) { 2 } else { 1 };
            let platform_share = platform_weight(platform) * rng.random_range(0.6..1.4);
            for a in 0..n_accounts {
                let international = a == 1 && rng.random_bool(0.5);
                let market = if international {
                    expansion_market(home)
                } else {
                    home
                };
                let label = if a == 0 {
                    market.geo.to_owned()
                } else if international {
                    format!("{} Expansion", market.geo)
                } else {
                    "Prospecting".to_owned()
                };
                let account_name = match platform {
                    Platform::GoogleAds | Platform::MicrosoftAds => format!("{name} - {label}"),
                    Platform::MetaAds => format!("{name} ({label})"),
                    _ => format!("{name} | {label}"),
                };
                let time_zone = if market.code == home.code {
                    time_zone
                } else {
                    market.time_zones[0]
                };
                accounts.push(AccountProfile {
                    platform,
                    id: id_string(
                        platform,
                        IdLevel::Account,
                        new_id(platform, IdLevel::Account, &mut rng),
                    ),
                    name: account_name,
                    currency: market.currency.to_owned(),
                    time_zone,
                });
                account_markets.push(market);
                account_weights.push(if a == 0 {
                    platform_share
                } else {
                    platform_share * 0.35
                });
            }
        }

        let (aov_lo, aov_hi) = vertical.aov_usd();
        let aov = (rng.random_range(aov_lo..aov_hi) / home.usd_per_unit).round();
        let profile = ClientProfile {
            id: id.clone(),
            name,
            vertical,
            country: home.code.to_owned(),
            time_zone,
            currency: home.currency.to_owned(),
            platforms,
            accounts,
            ga4_property_id: rng.random_range(300_000_000u64..460_000_000).to_string(),
            shop_id: format!("{id}.myshopify.com"),
            average_order_value: aov,
        };
        let model = ClientModel {
            noise: client_noise,
            vertical,
            home,
            account_markets,
            account_weights,
            campaigns: Vec::new(),
            ad_groups: Vec::new(),
            ads: Vec::new(),
            platform_ads: Vec::new(),
            aov,
            trend: rng.random_range(-0.15..0.35),
            attribution: rng.random_range(0.55..0.8),
            ga4_capture: rng.random_range(0.85..0.95),
            organic_sessions: 0.0,
            organic_cvr: rng.random_range(0.012..0.028),
            customers: 0,
            order_id_base: rng.random_range(4_100_000_000_000u64..6_200_000_000_000),
            response: Vec::new(),
            incident: None,
        };
        profiles.push(profile);
        models.push(model);
    }
    (profiles, models)
}

/// A unique, realistic client slug such as `northwind-outfitters`.
fn client_slug(rng: &mut ChaCha8Rng, taken: &mut HashSet<String>) -> (String, Vertical) {
    // 40 × 24 combinations; past that, a numeric suffix keeps ids unique.
    for attempt in 0.. {
        let first = names::CLIENT_FIRST[rng.random_range(0..names::CLIENT_FIRST.len())];
        let (second, vertical) =
            names::CLIENT_SECOND[rng.random_range(0..names::CLIENT_SECOND.len())];
        let mut slug = format!("{first}-{second}");
        if attempt >= 50 {
            slug = format!("{slug}-{}", attempt - 48);
        }
        if taken.insert(slug.clone()) {
            return (slug, vertical);
        }
    }
    unreachable!("the suffix makes every attempt past 50 unique eventually")
}

fn pick_platforms(rng: &mut ChaCha8Rng, vertical: Vertical) -> Vec<Platform> {
    const COUNT_WEIGHTS: [(usize, f64); 3] = [(2, 0.35), (3, 0.4), (4, 0.25)];
    let count = COUNT_WEIGHTS[weighted_pick(rng, &COUNT_WEIGHTS, |c| c.1)].0;
    let mut chosen = vec![Platform::GoogleAds];
    let mut rest: Vec<Platform> = Platform::ALL[1..].to_vec();
    while chosen.len() < count {
        let i = weighted_pick(rng, &rest, |p| platform_affinity(*p, vertical));
        chosen.push(rest.remove(i));
    }
    // Stable platform order keeps each platform's ads contiguous.
    chosen.sort_by_key(|p| Platform::ALL.iter().position(|q| q == p));
    chosen
}

/// Splits `rows` ad-days over every account of every client, exactly.
pub(super) fn allocate_rows(models: &[ClientModel], rows: u64, noise: Noise) -> Vec<Vec<u64>> {
    // Clients differ in size: a log-normal spread of budgets.
    let client_weights: Vec<f64> = (0..models.len())
        .map(|i| noise.at(i as u64).lognormal(7, 0.6))
        .collect();
    let mut shares = Vec::new();
    for (model, cw) in models.iter().zip(&client_weights) {
        let total: f64 = model.account_weights.iter().sum();
        for w in &model.account_weights {
            shares.push(cw * w / total);
        }
    }
    let total: f64 = shares.iter().sum();
    // Largest remainder: floors first, then the biggest fractions get +1.
    let exact: Vec<f64> = shares.iter().map(|s| s / total * rows as f64).collect();
    let mut counts: Vec<u64> = exact.iter().map(|x| x.floor() as u64).collect();
    let missing = rows - counts.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..exact.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = exact[a] - exact[a].floor();
        let fb = exact[b] - exact[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &i in order.iter().take(missing as usize) {
        counts[i] += 1;
    }
    let mut out = Vec::with_capacity(models.len());
    let mut it = counts.into_iter();
    for model in models {
        out.push(it.by_ref().take(model.account_weights.len()).collect());
    }
    out
}

/// The second phase: campaigns, ad groups and ads for every account, with
/// ad lifetimes adding up to exactly `account_rows[a]` ad-days.
pub(super) fn build_ads(
    profile: &ClientProfile,
    model: &mut ClientModel,
    account_rows: &[u64],
    days: u32,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(model.noise.bits(1));
    let theme_list = themes(model.vertical);
    let mut used_utms: HashSet<(Platform, String)> = HashSet::new();
    let mut expected_daily_clicks = 0.0;
    let mut expected_daily_conversions = 0.0;

    for (a, account) in profile.accounts.iter().enumerate() {
        let target = account_rows[a];
        if target == 0 {
            continue;
        }
        let platform = account.platform;
        let market = model.account_markets[a];
        let est_ads = (target as f64 / (f64::from(days) * 0.83)).ceil().max(1.0);
        let n_campaigns = (1.3 * est_ads.powf(0.4)).round().clamp(1.0, est_ads) as usize;
        let groups_per_campaign = ((est_ads / n_campaigns as f64).sqrt() * 0.8)
            .round()
            .max(1.0) as usize;

        let templates: Vec<(CampaignKind, &str)> = campaign_templates(platform)
            .iter()
            .copied()
            .filter(|(k, _)| k.fits(model.vertical))
            .collect();
        let b2b_factor = if model.vertical.is_b2b() { 1.8 } else { 1.0 };
        let currency_factor = 1.0 / market.usd_per_unit;

        let first_campaign = model.campaigns.len();
        let mut campaign_groups: Vec<Vec<usize>> = Vec::with_capacity(n_campaigns);
        let mut campaign_id = new_id(platform, IdLevel::Campaign, &mut rng);
        let mut group_id = new_id(platform, IdLevel::AdGroup, &mut rng);
        for c in 0..n_campaigns {
            let (kind, template) = templates[c % templates.len()];
            let theme = theme_list[rng.random_range(0..theme_list.len())];
            let base_name = fill(template, market.geo, theme);
            let mut name = base_name.clone();
            let mut variant = 1;
            while !used_utms.insert((platform, slugify(&name))) {
                variant += 1;
                name = format!("{base_name} | {variant:02}");
            }
            let rates = kind.rates();
            campaign_id += rng.random_range(1..5_000);
            model.campaigns.push(CampaignModel {
                account: a,
                platform,
                kind,
                id: id_string(platform, IdLevel::Campaign, campaign_id),
                utm_campaign: slugify(&name),
                name,
                ctr: rng.random_range(rates.ctr.0..rates.ctr.1),
                cvr: rng.random_range(rates.cvr.0..rates.cvr.1),
                cpc: base_cpc_usd(platform)
                    * rates.cpc_factor
                    * b2b_factor
                    * currency_factor
                    * rng.random_range(0.75..1.3),
                impressions: rng.random_range(rates.impressions.0..rates.impressions.1),
                ads: 0..0,
            });

            let group_templates = kind.ad_group_templates();
            let mut groups = Vec::with_capacity(groups_per_campaign);
            for g in 0..groups_per_campaign {
                let theme_idx = rng.random_range(0..theme_list.len());
                let theme = theme_list[theme_idx];
                let mut group_name = fill(
                    group_templates[g % group_templates.len()],
                    market.geo,
                    theme,
                );
                if g >= group_templates.len() {
                    let _ = write!(group_name, " - {:02}", g / group_templates.len() + 1);
                }
                let utm_term = match kind {
                    CampaignKind::BrandSearch => Some(profile.name.to_lowercase()),
                    CampaignKind::NonBrandSearch => Some(theme.to_lowercase()),
                    CampaignKind::Competitor => {
                        Some(format!("{} alternatives", theme.to_lowercase()))
                    }
                    _ => None,
                };
                group_id += rng.random_range(1..5_000);
                groups.push(model.ad_groups.len());
                model.ad_groups.push(AdGroupModel {
                    id: id_string(platform, IdLevel::AdGroup, group_id),
                    name: group_name,
                    theme: theme_idx as u8,
                    utm_term,
                });
            }
            campaign_groups.push(groups);
        }

        // Ads go round-robin over the ad groups until the account's ad-days
        // are used up exactly.
        let all_groups: Vec<(usize, usize)> = campaign_groups
            .iter()
            .enumerate()
            .flat_map(|(c, gs)| gs.iter().map(move |&g| (c, g)))
            .collect();
        let mut per_group: Vec<Vec<AdModel>> = vec![Vec::new(); all_groups.len()];
        let last = days - 1;
        let mut remaining = target;
        let mut k = 0usize;
        while remaining > 0 {
            let slot = k % all_groups.len();
            k += 1;
            let (c, g) = all_groups[slot];
            let kind = model.campaigns[first_campaign + c].kind;
            let templates = ad_templates(platform, kind);
            let (mut first, mut last_day) = (0, last);
            let r: f64 = rng.random();
            if days >= 7 && r >= 0.65 {
                if r < 0.85 {
                    // Launched during the window.
                    first = rng.random_range(1..days);
                } else {
                    // Paused during the window.
                    last_day = rng.random_range(0..last);
                }
            }
            let len = u64::from(last_day - first) + 1;
            if len > remaining {
                let keep = remaining as u32;
                if first > 0 {
                    first = last_day + 1 - keep;
                } else {
                    last_day = first + keep - 1;
                }
            }
            let ad = AdModel {
                campaign: (first_campaign + c) as u32,
                ad_group: g as u32,
                id: 0,
                template: rng.random_range(0..templates.len()) as u8,
                hook: rng.random_range(0..names::HOOKS.len()) as u8,
                number: (per_group[slot].len() + 1).min(usize::from(u16::MAX)) as u16,
                first_day: first as u16,
                last_day: last_day as u16,
                weight: lognormal(&mut rng, 0.7) as f32,
            };
            remaining -= ad.active_days();
            per_group[slot].push(ad);
        }

        let mut ad_id = new_id(platform, IdLevel::Ad, &mut rng);
        let mut current_campaign = usize::MAX;
        for (slot, ads) in per_group.into_iter().enumerate() {
            let c = first_campaign + all_groups[slot].0;
            if c != current_campaign {
                if current_campaign != usize::MAX {
                    model.campaigns[current_campaign].ads.end = model.ads.len();
                }
                model.campaigns[c].ads.start = model.ads.len();
                current_campaign = c;
            }
            for mut ad in ads {
                ad_id += rng.random_range(1..2_000);
                ad.id = ad_id;
                let camp = &model.campaigns[c];
                let delivery = f64::from(ad.weight) * camp.impressions * ad.active_days() as f64
                    / f64::from(days);
                expected_daily_clicks += delivery * camp.ctr;
                expected_daily_conversions += delivery * camp.ctr * camp.cvr;
                model.ads.push(ad);
            }
        }
        if current_campaign != usize::MAX {
            model.campaigns[current_campaign].ads.end = model.ads.len();
        }
    }

    // Campaigns that got no ads (tiny targets) would never produce a row.
    for p in &profile.platforms {
        let start = model
            .ads
            .iter()
            .position(|ad| model.campaigns[ad.campaign as usize].platform == *p)
            .unwrap_or(model.ads.len());
        let end = model.ads[start..]
            .iter()
            .position(|ad| model.campaigns[ad.campaign as usize].platform != *p)
            .map_or(model.ads.len(), |n| start + n);
        model.platform_ads.push((*p, start..end));
    }

    model.organic_sessions = expected_daily_clicks * rng.random_range(0.5..1.4);
    let expected_orders = (expected_daily_conversions * model.attribution
        + model.organic_sessions * model.organic_cvr)
        * f64::from(days);
    // About a quarter of orders come from returning customers.
    model.customers = (expected_orders * 0.75).max(50.0) as u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_platform_shapes() {
        let mut s = String::new();
        render_id(Platform::GoogleAds, IdLevel::Account, 1_234_567_890, &mut s);
        assert_eq!(s, "123-456-7890");
        let (lo, span) = id_range(Platform::MetaAds, IdLevel::Account);
        assert!(lo > 1 << 53 && (lo + span).to_string().len() == 17);
        let (lo, span) = id_range(Platform::TiktokAds, IdLevel::Campaign);
        assert_eq!(lo.to_string().len(), 19);
        assert_eq!((lo + span - 1).to_string().len(), 19);
        let (lo, span) = id_range(Platform::LinkedinAds, IdLevel::Account);
        assert_eq!(lo.to_string().len(), 9);
        assert_eq!((lo + span - 1).to_string().len(), 9);
        s.clear();
        render_id(Platform::SnapchatAds, IdLevel::Ad, 42, &mut s);
        assert_eq!(s.len(), 36);
    }
}
