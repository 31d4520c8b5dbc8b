//! The client configuration file, and the secrets file it refers to.
//!
//! ```toml
//! warehouse = "./data/warehouse"      # optional; --warehouse wins
//!
//! [[client]]
//! id = "northwind-outfitters"
//! time_zone = "America/New_York"
//! currency = "USD"                    # reporting currency
//!
//! [[client.source]]
//! platform = "google_ads"             # google_ads, meta_ads, tiktok_ads, linkedin_ads, ga4, shopify
//! accounts = ["1234567890"]
//! credentials = "northwind-google"    # a [credentials.NAME] table of the secrets file;
//!                                     # without it the source is file-only: `adlake-ingest
//!                                     # file` ingests its saved payloads, `run` and the
//!                                     # worker skip it, `backfill` refuses it
//! lookback_days = 7                   # re-pull this many days before yesterday
//! currency = "USD"                    # the account currency, where reports lack it
//! # endpoint = "https://googleads.googleapis.com"   # override of the API base URL
//! # canonical_action = "omni_purchase"               # Meta only
//! # shrink_max_row_drop = 0.5         # hold a replace removing more than this fraction
//! # shrink_max_spend_drop = 0.5       # of the slice's rows / spend (0..=1; 1 = never)
//!
//! [fx]                                # optional: `run` and the worker pull fx_rates
//! source = "ecb"                      # the ECB's daily euro reference rates (the one source)
//! # currencies = ["USD", "GBP"]       # default: every currency the ECB publishes
//! # max_age_days = 5                  # a day without a rate takes the latest earlier one this old
//! # lookback_days = 7                 # days re-read before yesterday on every pull
//! # endpoint = "https://data-api.ecb.europa.eu"
//! ```
//!
//! Any error names the line of the file that is wrong.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use serde::Deserialize;
use toml::Spanned;

use crate::fx::FxConfig;
use crate::pipeline::validate::is_known_currency;
use crate::sources::connectors::{DEFAULT_CANONICAL_ACTION, SourceKind};
use crate::sources::http::Credentials;

/// A configuration error, with the file and line it is about.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// Default lookback window in days.
pub const DEFAULT_LOOKBACK_DAYS: u32 = 7;
/// Longest lookback window accepted.
pub const MAX_LOOKBACK_DAYS: u32 = 90;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    warehouse: Option<String>,
    #[serde(default)]
    client: Vec<Spanned<RawClient>>,
    fx: Option<Spanned<RawFx>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFx {
    source: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
    currencies: Option<Spanned<Vec<String>>>,
    max_age_days: Option<Spanned<u32>>,
    lookback_days: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    id: Spanned<String>,
    time_zone: Spanned<String>,
    currency: Spanned<String>,
    #[serde(default)]
    source: Vec<Spanned<RawSource>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    platform: Spanned<String>,
    accounts: Spanned<Vec<String>>,
    credentials: Option<Spanned<String>>,
    lookback_days: Option<Spanned<u32>>,
    currency: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
    canonical_action: Option<String>,
    shrink_max_row_drop: Option<Spanned<f64>>,
    shrink_max_spend_drop: Option<Spanned<f64>>,
}

/// One source of a client.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// The platform.
    pub kind: SourceKind,
    /// Account ids (customer ids, ad accounts, advertisers, properties, shops).
    pub accounts: Vec<String>,
    /// Name of the credentials in the secrets file; `None` for a file-only
    /// source, whose data comes only from saved payloads (`adlake-ingest
    /// file`) and which is never fetched.
    pub credentials: Option<String>,
    /// Days before yesterday that every run re-pulls.
    pub lookback_days: u32,
    /// The account currency, where reports lack it.
    pub currency: Option<String>,
    /// The API base URL.
    pub endpoint: String,
    /// Meta's canonical conversion action type.
    pub canonical_action: String,
    /// How much of a slice a replace may remove before the shrink guard
    /// holds it (`shrink_max_row_drop`, `shrink_max_spend_drop`).
    pub shrink: crate::pipeline::guard::ShrinkLimits,
}

/// One client.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// Client id (the tenant).
    pub id: String,
    /// The client's time zone: "yesterday" is in it.
    pub time_zone: Tz,
    /// Reporting currency.
    pub currency: String,
    /// Its sources, one per platform.
    pub sources: Vec<SourceConfig>,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// Warehouse location, if set.
    pub warehouse: Option<String>,
    /// The clients.
    pub clients: Vec<ClientConfig>,
    /// The exchange-rate source (`[fx]`), when `run` and the worker pull
    /// `fx_rates`.
    pub fx: Option<FxConfig>,
}

/// Longest `max_age_days` of `[fx]`: a rate older than a month is no
/// rate for the day.
pub const MAX_FX_AGE_DAYS: u32 = 31;

fn http_url(e: &Spanned<String>) -> Result<String, (Range<usize>, String)> {
    let url = e.get_ref().trim_end_matches('/').to_owned();
    if url::Url::parse(&url).map(|u| u.scheme().starts_with("http")) != Ok(true) {
        return Err((e.span(), format!("endpoint '{url}' is not an http(s) URL")));
    }
    Ok(url)
}

fn parse_fx(
    raw: RawFx,
    err: &dyn Fn(Option<Range<usize>>, String) -> ConfigError,
) -> Result<FxConfig, ConfigError> {
    if let Some(s) = &raw.source
        && s.get_ref() != "ecb"
    {
        return Err(err(
            Some(s.span()),
            format!(
                "unknown fx source '{}' (the one scheduled source is \"ecb\"; load other rates with `adlake-ingest file --table fx_rates`)",
                s.get_ref()
            ),
        ));
    }
    let mut fx = FxConfig::default();
    if let Some(e) = &raw.endpoint {
        fx.endpoint = http_url(e).map_err(|(span, m)| err(Some(span), m))?;
    }
    if let Some(c) = &raw.currencies {
        for code in c.get_ref() {
            if !is_known_currency(code) {
                return Err(err(
                    Some(c.span()),
                    format!("unknown currency '{code}' (expected an ISO 4217 code)"),
                ));
            }
        }
        fx.currencies = c
            .get_ref()
            .iter()
            .filter(|c| *c != "EUR")
            .cloned()
            .collect();
    }
    if let Some(m) = &raw.max_age_days {
        if *m.get_ref() > MAX_FX_AGE_DAYS {
            return Err(err(
                Some(m.span()),
                format!(
                    "max_age_days must be at most {MAX_FX_AGE_DAYS}, got {}",
                    m.get_ref()
                ),
            ));
        }
        fx.max_age_days = *m.get_ref();
    }
    if let Some(l) = &raw.lookback_days {
        if *l.get_ref() > MAX_LOOKBACK_DAYS {
            return Err(err(
                Some(l.span()),
                format!(
                    "lookback_days must be at most {MAX_LOOKBACK_DAYS}, got {}",
                    l.get_ref()
                ),
            ));
        }
        fx.lookback_days = *l.get_ref();
    }
    Ok(fx)
}

/// The production API base URL of a platform.
pub fn default_endpoint(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::GoogleAds => "https://googleads.googleapis.com",
        SourceKind::MetaAds => "https://graph.facebook.com",
        SourceKind::TiktokAds => "https://business-api.tiktok.com",
        SourceKind::LinkedinAds => "https://api.linkedin.com",
        SourceKind::Ga4 => "https://analyticsdata.googleapis.com",
        SourceKind::Shopify => "https://{account}.myshopify.com",
    }
}

fn line_of(text: &str, span: Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            line: None,
            message: format!("cannot read the configuration: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks configuration text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let err = |span: Option<Range<usize>>, message: String| ConfigError {
            path: path.to_owned(),
            line: span.map(|s| line_of(text, s)),
            message,
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| err(e.span(), e.message().trim().to_owned()))?;
        let mut clients = Vec::new();
        let mut ids = HashSet::new();
        for client in raw.client {
            let client_span = client.span();
            let client = client.into_inner();
            let id = client.id.get_ref().trim().to_owned();
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(err(
                    Some(client.id.span()),
                    format!("client id '{id}' must be non-empty letters, digits, '-' or '_'"),
                ));
            }
            if !ids.insert(id.clone()) {
                return Err(err(
                    Some(client.id.span()),
                    format!("client '{id}' is listed twice"),
                ));
            }
            let time_zone: Tz = client.time_zone.get_ref().parse().map_err(|_| {
                err(
                    Some(client.time_zone.span()),
                    format!("unknown time zone '{}'", client.time_zone.get_ref()),
                )
            })?;
            let currency = client.currency.get_ref().clone();
            if !is_known_currency(&currency) {
                return Err(err(
                    Some(client.currency.span()),
                    format!("unknown currency '{currency}' (expected an ISO 4217 code)"),
                ));
            }
            let mut sources = Vec::new();
            let mut kinds = HashSet::new();
            for source in client.source {
                let s = source.get_ref();
                let kind: SourceKind =
                    s.platform.get_ref().parse().map_err(|e: crate::Error| {
                        err(
                            Some(s.platform.span()),
                            e.to_string().replace("invalid configuration: ", ""),
                        )
                    })?;
                if !kinds.insert(kind) {
                    return Err(err(
                        Some(s.platform.span()),
                        format!(
                            "client '{id}' lists platform '{kind}' twice; put every account in one source"
                        ),
                    ));
                }
                if s.accounts.get_ref().is_empty()
                    || s.accounts.get_ref().iter().any(|a| a.trim().is_empty())
                {
                    return Err(err(
                        Some(s.accounts.span()),
                        "accounts must list at least one non-empty account id".to_owned(),
                    ));
                }
                if let Some(c) = &s.credentials
                    && c.get_ref().trim().is_empty()
                {
                    return Err(err(
                        Some(c.span()),
                        "credentials must name an entry of the secrets file (leave it out for a file-only source)".to_owned(),
                    ));
                }
                let lookback_days = match &s.lookback_days {
                    Some(l) if *l.get_ref() > MAX_LOOKBACK_DAYS => {
                        return Err(err(
                            Some(l.span()),
                            format!(
                                "lookback_days must be at most {MAX_LOOKBACK_DAYS}, got {}",
                                l.get_ref()
                            ),
                        ));
                    }
                    Some(l) => *l.get_ref(),
                    None => DEFAULT_LOOKBACK_DAYS,
                };
                let currency = match &s.currency {
                    Some(c) if !is_known_currency(c.get_ref()) => {
                        return Err(err(
                            Some(c.span()),
                            format!(
                                "unknown currency '{}' (expected an ISO 4217 code)",
                                c.get_ref()
                            ),
                        ));
                    }
                    Some(c) => Some(c.get_ref().clone()),
                    None => None,
                };
                if currency.is_none()
                    && matches!(kind, SourceKind::TiktokAds | SourceKind::LinkedinAds)
                {
                    return Err(err(
                        Some(source.span()),
                        format!("{kind} reports carry no currency: set the account's currency"),
                    ));
                }
                let endpoint = match &s.endpoint {
                    Some(e) => http_url(e).map_err(|(span, m)| err(Some(span), m))?,
                    None => default_endpoint(kind).to_owned(),
                };
                let fraction = |v: &Option<Spanned<f64>>, name: &str, default: f64| match v {
                    Some(f) if !(0.0..=1.0).contains(f.get_ref()) => Err(err(
                        Some(f.span()),
                        format!(
                            "{name} must be a fraction from 0 to 1 (1 never holds), got {}",
                            f.get_ref()
                        ),
                    )),
                    Some(f) => Ok(*f.get_ref()),
                    None => Ok(default),
                };
                let shrink = crate::pipeline::guard::ShrinkLimits {
                    max_row_drop: fraction(
                        &s.shrink_max_row_drop,
                        "shrink_max_row_drop",
                        crate::pipeline::guard::DEFAULT_MAX_ROW_DROP,
                    )?,
                    max_spend_drop: fraction(
                        &s.shrink_max_spend_drop,
                        "shrink_max_spend_drop",
                        crate::pipeline::guard::DEFAULT_MAX_SPEND_DROP,
                    )?,
                };
                sources.push(SourceConfig {
                    kind,
                    accounts: s.accounts.get_ref().clone(),
                    credentials: s.credentials.as_ref().map(|c| c.get_ref().clone()),
                    lookback_days,
                    currency,
                    endpoint,
                    canonical_action: s
                        .canonical_action
                        .clone()
                        .unwrap_or_else(|| DEFAULT_CANONICAL_ACTION.to_owned()),
                    shrink,
                });
            }
            if sources.is_empty() {
                return Err(err(
                    Some(client_span),
                    format!("client '{id}' has no [[client.source]]"),
                ));
            }
            clients.push(ClientConfig {
                id,
                time_zone,
                currency,
                sources,
            });
        }
        if clients.is_empty() {
            return Err(err(None, "no [[client]] is configured".to_owned()));
        }
        let fx = raw
            .fx
            .map(|fx| parse_fx(fx.into_inner(), &err))
            .transpose()?;
        Ok(Self {
            warehouse: raw.warehouse,
            clients,
            fx,
        })
    }

    /// The client `id`.
    pub fn client(&self, id: &str) -> Option<&ClientConfig> {
        self.clients.iter().find(|c| c.id == id)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecrets {
    customer_hash_key: Option<String>,
    #[serde(default)]
    credentials: BTreeMap<String, Credentials>,
}

/// Credentials by name, and the customer hash key. `Debug` shows no secret.
#[derive(Clone, Default)]
pub struct Secrets {
    /// Key of the Shopify customer hash.
    pub customer_hash_key: Option<String>,
    /// Credentials by name.
    pub credentials: BTreeMap<String, Credentials>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// Environment variable prefix of secrets: `ADLAKE_SECRET_<NAME>_<FIELD>`,
/// the name upper-cased with `-` as `_`.
pub const SECRET_ENV_PREFIX: &str = "ADLAKE_SECRET_";

impl Secrets {
    /// Reads a secrets file (TOML: `customer_hash_key`, `[credentials.NAME]`).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            line: None,
            message: format!("cannot read the secrets file: {e}"),
        })?;
        let raw: RawSecrets = toml::from_str(&text).map_err(|e| ConfigError {
            path: path.to_owned(),
            line: e.span().map(|s| line_of(&text, s)),
            // The message of a TOML error can quote the value; keep only its
            // first line, which names the problem, not the secret.
            message: e.message().lines().next().unwrap_or("invalid").to_owned(),
        })?;
        Ok(Self {
            customer_hash_key: raw.customer_hash_key,
            credentials: raw.credentials,
        })
    }

    /// The credentials named `name`: the file's entry, completed or
    /// overridden by `ADLAKE_SECRET_<NAME>_<FIELD>` environment variables.
    pub fn credentials(&self, name: &str) -> Option<Credentials> {
        let prefix = format!(
            "{SECRET_ENV_PREFIX}{}_",
            name.to_uppercase().replace(['-', '.'], "_")
        );
        let env = |field: &str| std::env::var(format!("{prefix}{field}")).ok();
        let mut creds = self.credentials.get(name).cloned();
        let fields = [
            "ACCESS_TOKEN",
            "TOKEN_URL",
            "CLIENT_ID",
            "CLIENT_SECRET",
            "REFRESH_TOKEN",
            "DEVELOPER_TOKEN",
            "LOGIN_CUSTOMER_ID",
        ];
        for field in fields {
            if let Some(value) = env(field) {
                let c = creds.get_or_insert_with(Credentials::default);
                let slot = match field {
                    "ACCESS_TOKEN" => &mut c.access_token,
                    "TOKEN_URL" => &mut c.token_url,
                    "CLIENT_ID" => &mut c.client_id,
                    "CLIENT_SECRET" => &mut c.client_secret,
                    "REFRESH_TOKEN" => &mut c.refresh_token,
                    "DEVELOPER_TOKEN" => &mut c.developer_token,
                    _ => &mut c.login_customer_id,
                };
                *slot = Some(value);
            }
        }
        creds
    }
}

#[cfg(test)]
mod tests;
