//! A deterministic synthetic source that reads like a real agency's data.
//!
//! [`Synthetic::new`] turns a [`SyntheticConfig`] into a set of clients
//! ([`ClientProfile`]): each has a slug id, a home market (time zone and
//! currency), 2–4 ad platforms (those with a connector) with one or two accounts each, campaigns
//! named the way media buyers name them, ad groups and ads. Each table is
//! then produced lazily, one client at a time, as an iterator of Arrow
//! [`RecordBatch`]es with exactly the schema of its
//! [`TableDef`](adlake_engine::schema::TableDef):
//!
//! - [`Synthetic::ad_performance`]: one row per ad per active day; impressions
//!   follow weekly seasonality (B2B and LinkedIn dip at weekends, retail
//!   lifts), retail peaks around Black Friday, a per-client trend and noise;
//!   CTR, CPC and conversion rates depend on the platform and campaign kind.
//! - [`Synthetic::web_sessions`]: GA4 sessions driven by the same UTMs and
//!   clicks (80–95% of paid clicks become sessions) plus organic, direct,
//!   e-mail and referral traffic.
//! - [`Synthetic::orders`]: Shopify orders whose daily count follows the
//!   platforms' conversions, with the UTMs of the campaign that drove them
//!   and a keyed hash of the customer's e-mail (never the e-mail).
//! - [`Synthetic::fx_rates`]: daily rates of every currency used against USD
//!   and EUR, as a small random walk.
//!
//! Everything is a pure function of the configuration: the same config gives
//! byte-identical batches (apart from the [`Lineage`] columns the caller
//! passes in). The number of ads is chosen so that the ad-performance row
//! count equals [`SyntheticConfig::rows`].

mod batches;

#[cfg(test)]
pub(crate) use batches::customer_email as batches_customer_email;
mod model;
mod names;
mod noise;
mod response;

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use chrono::{Days, NaiveDate};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};

use self::batches::{AdPerformanceBatches, FxRateBatches, OrderBatches, WebSessionBatches};
use self::model::ClientModel;
use self::noise::Noise;
use crate::dates::date_to_epoch_day;
use crate::error::{Error, Result};
use crate::lake::lineage::Lineage;
use crate::sources::connectors::Platform;

pub use self::names::slugify;
pub use self::response::Incident;

/// The `_source` lineage value of synthetic rows.
pub const SYNTHETIC_SOURCE: &str = "synthetic/1";

/// Upper bound on the rows of one generated batch.
pub const DEFAULT_BATCH_ROWS: usize = 65_536;

/// Largest window the generator accepts (ten years of days).
pub const MAX_DAYS: u32 = 3_660;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticConfig {
    /// Number of clients of the agency.
    pub clients: usize,
    /// Number of days, ending at `end_date` (inclusive).
    pub days: u32,
    /// Target number of `ad_performance` rows over all clients; met exactly.
    pub rows: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Last report date of the window.
    pub end_date: NaiveDate,
    /// Inject one incident per client (a two-day conversion tracking outage
    /// or a day of tripled spend; see [`Incident`]) in the last two weeks.
    pub incidents: bool,
}

impl SyntheticConfig {
    /// Checks the configuration, with a message naming the bad value.
    pub fn validate(&self) -> Result<()> {
        if self.clients == 0 {
            return Err(Error::InvalidConfig(
                "clients must be at least 1".to_owned(),
            ));
        }
        if self.days == 0 || self.days > MAX_DAYS {
            return Err(Error::InvalidConfig(format!(
                "days must be between 1 and {MAX_DAYS}, got {}",
                self.days
            )));
        }
        if self.rows == 0 {
            return Err(Error::InvalidConfig("rows must be at least 1".to_owned()));
        }
        self.start_date()?;
        Ok(())
    }

    /// First report date of the window.
    pub fn start_date(&self) -> Result<NaiveDate> {
        self.end_date
            .checked_sub_days(Days::new(u64::from(self.days.saturating_sub(1))))
            .ok_or(Error::DateOutOfRange(self.end_date))
    }
}

/// What a client sells; drives order values, platform mix and weekly rhythm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vertical {
    /// Outdoor gear.
    Outdoor,
    /// Clothing and shoes.
    Apparel,
    /// Furniture and home goods.
    Home,
    /// Skincare and cosmetics.
    Beauty,
    /// Coffee, tea and pantry.
    Food,
    /// Pet supplies.
    Pets,
    /// Business-to-business: weekday-heavy, LinkedIn, high order values.
    B2b,
}

impl Vertical {
    /// Whether the client sells to businesses (weekend dip).
    pub fn is_b2b(self) -> bool {
        self == Self::B2b
    }

    /// Range of the average order value in USD.
    fn aov_usd(self) -> (f64, f64) {
        match self {
            Self::Outdoor => (90.0, 200.0),
            Self::Apparel => (60.0, 120.0),
            Self::Home => (120.0, 300.0),
            Self::Beauty => (35.0, 70.0),
            Self::Food => (30.0, 60.0),
            Self::Pets => (45.0, 90.0),
            Self::B2b => (300.0, 1200.0),
        }
    }
}

/// One ad account of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountProfile {
    /// The platform the account lives on.
    pub platform: Platform,
    /// Platform-shaped account id (`123-456-7890` on Google, 17 digits on
    /// Meta, 19 on TikTok, 9 on LinkedIn...).
    pub id: String,
    /// Account name as the platform shows it.
    pub name: String,
    /// ISO 4217 currency the account is billed and reports in.
    pub currency: String,
    /// The account's time zone; its report dates are local to it.
    pub time_zone: Tz,
}

/// One client of the agency.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientProfile {
    /// Unique slug, lowercase `[a-z0-9-]`, e.g. `northwind-outfitters`.
    pub id: String,
    /// Display name, e.g. `Northwind Outfitters`.
    pub name: String,
    /// What the client sells.
    pub vertical: Vertical,
    /// ISO 3166 code of the home market.
    pub country: String,
    /// IANA time zone of the shop and the GA4 property.
    pub time_zone: Tz,
    /// Currency of the shop and the GA4 property (the reporting currency).
    pub currency: String,
    /// The platforms it advertises on, 2 to 4, in [`Platform::ALL`] order.
    pub platforms: Vec<Platform>,
    /// Its ad accounts, one or two per platform, in platform order.
    pub accounts: Vec<AccountProfile>,
    /// GA4 property id.
    pub ga4_property_id: String,
    /// Shopify shop domain.
    pub shop_id: String,
    /// Average order value in [`ClientProfile::currency`].
    pub average_order_value: f64,
}

impl ClientProfile {
    /// The currencies of its ad accounts and its shop, sorted, deduplicated.
    pub fn currencies(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .accounts
            .iter()
            .map(|a| a.currency.clone())
            .chain([self.currency.clone()])
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// One calendar day of the window and its seasonal factors.
#[derive(Debug, Clone)]
struct DayInfo {
    date: NaiveDate,
    /// Days since 1970-01-01, the `Date32` value.
    epoch_day: i32,
}

struct Inner {
    config: SyntheticConfig,
    noise: Noise,
    profiles: Vec<ClientProfile>,
    models: Vec<ClientModel>,
    days: Vec<DayInfo>,
    /// Key of the customer hash; stands for the agency's secret.
    customer_key: [u8; 32],
    currencies: Vec<String>,
}

/// The synthetic source. Cheap to clone; batch iterators own a handle, so
/// they are `Send + 'static` and can run on another thread.
#[derive(Clone)]
pub struct Synthetic {
    inner: Arc<Inner>,
    batch_rows: usize,
}

impl fmt::Debug for Synthetic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Synthetic")
            .field("config", &self.inner.config)
            .field("batch_rows", &self.batch_rows)
            .field("clients", &self.inner.profiles.len())
            .finish_non_exhaustive()
    }
}

impl Synthetic {
    /// Builds the clients and their ad structures. Call
    /// [`SyntheticConfig::validate`] first to reject bad input with a
    /// message; an invalid config yields a source with nothing in it.
    pub fn new(config: SyntheticConfig) -> Self {
        let valid = config.validate().is_ok();
        let noise = Noise::new(config.seed);
        let (profiles, mut models) = if valid {
            model::build_profiles(&config, noise.at(1))
        } else {
            (Vec::new(), Vec::new())
        };
        let days: Vec<DayInfo> = match (valid, config.start_date()) {
            (true, Ok(start)) => start
                .iter_days()
                .take(config.days as usize)
                .map(|date| DayInfo {
                    date,
                    epoch_day: date_to_epoch_day(date),
                })
                .collect(),
            _ => Vec::new(),
        };
        if valid {
            let rows = model::allocate_rows(&models, config.rows, noise.at(2));
            for (client, ((profile, model), account_rows)) in
                profiles.iter().zip(&mut models).zip(&rows).enumerate()
            {
                model::build_ads(profile, model, account_rows, config.days);
                model.response = (0..model.campaigns.len())
                    .map(|c| response::CampaignResponse::new(model.noise, c, config.days as usize))
                    .collect();
                if config.incidents {
                    model.incident = response::incident(
                        model.noise,
                        client,
                        config.days,
                        &profile.platforms,
                        model.campaigns.len(),
                    );
                }
            }
        }
        let mut currencies: Vec<String> = profiles
            .iter()
            .flat_map(ClientProfile::currencies)
            .chain(["USD".to_owned(), "EUR".to_owned()])
            .collect();
        currencies.sort();
        currencies.dedup();
        let customer_key: [u8; 32] = Sha256::new()
            .chain_update(b"adlake synthetic customer key")
            .chain_update(config.seed.to_le_bytes())
            .finalize()
            .into();
        Self {
            inner: Arc::new(Inner {
                config,
                noise,
                profiles,
                models,
                days,
                customer_key,
                currencies,
            }),
            batch_rows: DEFAULT_BATCH_ROWS,
        }
    }

    /// Caps the rows per generated batch (default [`DEFAULT_BATCH_ROWS`]).
    #[must_use]
    pub fn with_batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows.max(1);
        self
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &SyntheticConfig {
        &self.inner.config
    }

    /// The clients, in generation order.
    pub fn clients(&self) -> &[ClientProfile] {
        &self.inner.profiles
    }

    /// First and last report date (inclusive), `None` for an empty window.
    pub fn date_range(&self) -> Option<(NaiveDate, NaiveDate)> {
        Some((self.inner.days.first()?.date, self.inner.days.last()?.date))
    }

    /// The injected incidents: client id, first date, last date, and what
    /// happened (`tracking_outage <platform>` or `spend_spike <campaign id>`).
    pub fn incidents(&self) -> Vec<(String, NaiveDate, NaiveDate, String)> {
        let inner = &self.inner;
        let date = |day: u32| inner.days[day as usize].date;
        inner
            .profiles
            .iter()
            .zip(&inner.models)
            .filter_map(|(profile, model)| {
                Some(match model.incident.as_ref()? {
                    Incident::TrackingOutage {
                        platform,
                        first_day,
                        days,
                    } => (
                        profile.id.clone(),
                        date(*first_day),
                        date(first_day + days - 1),
                        format!("tracking_outage {}", platform.as_str()),
                    ),
                    Incident::SpendSpike { campaign, day } => (
                        profile.id.clone(),
                        date(*day),
                        date(*day),
                        format!("spend_spike {}", model.campaigns[*campaign as usize].id),
                    ),
                })
            })
            .collect()
    }

    /// Every currency used by an account or a shop, plus USD and EUR.
    pub fn currencies(&self) -> &[String] {
        &self.inner.currencies
    }

    /// The key of the customer hash in `orders.customer_key`.
    pub fn customer_hash_key(&self) -> &[u8] {
        &self.inner.customer_key
    }

    /// Exact number of `ad_performance` rows of one client, optionally of one
    /// platform, without generating them.
    pub fn ad_performance_rows(&self, client: usize, platform: Option<Platform>) -> u64 {
        let model = &self.inner.models[client];
        model
            .platform_ads
            .iter()
            .filter(|(p, _)| platform.is_none_or(|want| *p == want))
            .flat_map(|(_, range)| &model.ads[range.clone()])
            .map(|ad| ad.active_days())
            .sum()
    }

    /// The `ad_performance` batches of one client, all platforms.
    ///
    /// # Panics
    /// If `client` is not an index of [`Synthetic::clients`].
    pub fn ad_performance(
        &self,
        client: usize,
        lineage: &Lineage,
    ) -> impl Iterator<Item = RecordBatch> + Send + use<> {
        let ads = 0..self.inner.models[client].ads.len();
        AdPerformanceBatches::new(self.clone(), client, ads, lineage.clone())
    }

    /// The `ad_performance` batches of one client and platform: the rows of
    /// one (client, platform) slice. Empty if the client does not use it.
    ///
    /// # Panics
    /// If `client` is not an index of [`Synthetic::clients`].
    pub fn ad_performance_for(
        &self,
        client: usize,
        platform: Platform,
        lineage: &Lineage,
    ) -> impl Iterator<Item = RecordBatch> + Send + use<> {
        let ads = self.inner.models[client]
            .platform_ads
            .iter()
            .find(|(p, _)| *p == platform)
            .map_or(0..0, |(_, range)| range.clone());
        AdPerformanceBatches::new(self.clone(), client, ads, lineage.clone())
    }

    /// The GA4 `web_sessions` batches of one client.
    ///
    /// # Panics
    /// If `client` is not an index of [`Synthetic::clients`].
    pub fn web_sessions(
        &self,
        client: usize,
        lineage: &Lineage,
    ) -> impl Iterator<Item = RecordBatch> + Send + use<> {
        assert!(client < self.inner.profiles.len(), "no client {client}");
        WebSessionBatches::new(self.clone(), client, lineage.clone())
    }

    /// The Shopify `orders` batches of one client.
    ///
    /// # Panics
    /// If `client` is not an index of [`Synthetic::clients`].
    pub fn orders(
        &self,
        client: usize,
        lineage: &Lineage,
    ) -> impl Iterator<Item = RecordBatch> + Send + use<> {
        assert!(client < self.inner.profiles.len(), "no client {client}");
        OrderBatches::new(self.clone(), client, lineage.clone())
    }

    /// The `fx_rates` batches: every used currency against USD and EUR (both
    /// directions), every day of the window.
    pub fn fx_rates(&self) -> impl Iterator<Item = RecordBatch> + Send + use<> {
        FxRateBatches::new(self.clone())
    }
}

#[cfg(test)]
mod tests;
