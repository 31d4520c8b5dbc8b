//! The ad platforms: the `platform` value of `ad_performance` rows and
//! the UTM tags agencies give their links.

use std::fmt;
use std::str::FromStr;

use super::SourceKind;
use crate::error::{Error, Result};

/// An ad platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    /// Google Ads.
    GoogleAds,
    /// Meta (Facebook and Instagram) Ads.
    MetaAds,
    /// TikTok Ads.
    TiktokAds,
    /// LinkedIn Ads.
    LinkedinAds,
    /// Microsoft Advertising (Bing).
    MicrosoftAds,
    /// Pinterest Ads.
    PinterestAds,
    /// Snapchat Ads.
    SnapchatAds,
}

impl Platform {
    /// The platforms adlake has a connector for, in the order of
    /// [`SourceKind::ALL`]: the ones the demo generator produces, so the
    /// demo holds only data adlake can ingest. Microsoft, Pinterest and
    /// Snapchat are modelled (ids, names, costs) for the connectors still
    /// to come and join this list when theirs lands in [`SourceKind`].
    pub const ALL: [Platform; 4] = {
        let mut all = [Platform::GoogleAds; 4];
        let (mut kind, mut n) = (0, 0);
        while kind < SourceKind::ALL.len() {
            if let Some(platform) = SourceKind::ALL[kind].platform() {
                all[n] = platform;
                n += 1;
            }
            kind += 1;
        }
        assert!(n == all.len(), "every ad source has a platform");
        all
    };

    /// The value of the `platform` column, e.g. `google_ads`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GoogleAds => "google_ads",
            Self::MetaAds => "meta_ads",
            Self::TiktokAds => "tiktok_ads",
            Self::LinkedinAds => "linkedin_ads",
            Self::MicrosoftAds => "microsoft_ads",
            Self::PinterestAds => "pinterest_ads",
            Self::SnapchatAds => "snapchat_ads",
        }
    }

    /// The `utm_source` agencies tag this platform's links with.
    pub fn utm_source(self) -> &'static str {
        match self {
            Self::GoogleAds => "google",
            Self::MetaAds => "facebook",
            Self::TiktokAds => "tiktok",
            Self::LinkedinAds => "linkedin",
            Self::MicrosoftAds => "bing",
            Self::PinterestAds => "pinterest",
            Self::SnapchatAds => "snapchat",
        }
    }

    /// The `utm_medium`: `cpc` for search engines, `paid_social` otherwise.
    pub fn utm_medium(self) -> &'static str {
        match self {
            Self::GoogleAds | Self::MicrosoftAds => "cpc",
            _ => "paid_social",
        }
    }

    /// Whether the platform reports fractional (attributed) conversions.
    pub fn fractional_conversions(self) -> bool {
        matches!(self, Self::GoogleAds | Self::MicrosoftAds)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| Error::InvalidConfig(format!("unknown platform '{s}'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ad_sources_are_the_platforms_with_a_connector() {
        assert_eq!(
            Platform::ALL.map(Platform::as_str),
            ["google_ads", "meta_ads", "tiktok_ads", "linkedin_ads"]
        );
        for kind in SourceKind::ALL {
            match kind.platform() {
                Some(platform) => {
                    assert!(Platform::ALL.contains(&platform));
                    assert_eq!(kind.as_str(), platform.as_str());
                    assert_eq!(kind.source_value(), Some(platform.as_str()));
                }
                None => assert_eq!(kind.source_value(), None),
            }
        }
        assert_eq!(SourceKind::Ga4.as_str(), "ga4");
        assert_eq!(SourceKind::Shopify.as_str(), "shopify");
        assert_eq!("meta_ads".parse::<Platform>().unwrap(), Platform::MetaAds);
        assert!("microsoft_ads".parse::<Platform>().is_err());
    }
}
