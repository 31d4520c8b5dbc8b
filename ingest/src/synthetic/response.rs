//! What a campaign's budget buys: budget levels that change over time, and
//! conversions that saturate with spend and carry over from earlier days.
//!
//! Each campaign's daily budget is a level that changes every 10 to 35 days
//! (a budget decision, a launch), log-normal around 1. Impressions (and so
//! clicks and spend) scale with it. Conversions follow the response curve
//! marketing-mix models fit: a geometric adstock `a[t] = (1 − θ)·b[t] +
//! θ·a[t−1]` of the budget level `b`, saturated by a Hill curve of shape 1
//! normalised to 1 at the usual budget, `(1 + k)·a / (a + k)`. So doubling a
//! campaign's budget less than doubles its conversions, more so the smaller
//! its half-saturation `k`, and the return of money moved between campaigns
//! can be read off the curves.
//!
//! Incidents ([`Incident`]) are what real accounts show and anomaly
//! detection must find: a platform whose conversion tracking breaks for two
//! days (conversions and value reported as zero while orders go on), and a
//! campaign whose spend triples for a day (a bidding mistake).

use super::noise::Noise;
use crate::sources::connectors::Platform;

const TAG_BUDGET: u64 = 7;
const TAG_INCIDENT: u64 = 8;

/// One campaign's daily budget level and the conversions per click it buys.
#[derive(Debug, Clone, Default)]
pub(super) struct CampaignResponse {
    /// Budget level per day (1 = the campaign's usual budget).
    pub(super) budget: Vec<f32>,
    /// Conversions per click per day, relative to the usual budget's.
    pub(super) efficiency: Vec<f32>,
}

impl CampaignResponse {
    /// The campaign's curve and budget over `days` days.
    pub(super) fn new(noise: Noise, campaign: usize, days: usize) -> Self {
        let n = noise.at(TAG_BUDGET).at(campaign as u64);
        let half = n.range(0, 0.5, 3.0);
        let decay = n.range(1, 0.0, 0.6);
        let mut budget = Vec::with_capacity(days);
        let mut period = 0u64;
        while budget.len() < days {
            let length = 10 + n.index(1000 + period, 26);
            let level = n.lognormal(2000 + period, 0.4).clamp(0.3, 2.5) as f32;
            budget.extend(std::iter::repeat_n(level, length.min(days - budget.len())));
            period += 1;
        }
        let mut adstock = f64::from(budget.first().copied().unwrap_or(1.0));
        let efficiency = budget
            .iter()
            .map(|b| {
                let b = f64::from(*b);
                adstock = (1.0 - decay) * b + decay * adstock;
                let saturated = (1.0 + half) * adstock / (adstock + half);
                (saturated / b) as f32
            })
            .collect();
        Self { budget, efficiency }
    }
}

/// An injected incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incident {
    /// A platform reports no conversions (and no value) on these days.
    TrackingOutage {
        /// The platform.
        platform: Platform,
        /// First day index.
        first_day: u32,
        /// Days it lasts.
        days: u32,
    },
    /// One campaign's spend is three times what it bought on one day.
    SpendSpike {
        /// Index of the campaign in the client's model.
        campaign: u32,
        /// The day index.
        day: u32,
    },
}

/// Days of data below which no incident is injected.
const MIN_DAYS: u32 = 21;

/// The incident of a client, if any: an outage for even-numbered clients,
/// a spike for odd ones, in the last two weeks of the window.
pub(super) fn incident(
    noise: Noise,
    client: usize,
    days: u32,
    platforms: &[Platform],
    campaigns: usize,
) -> Option<Incident> {
    if days < MIN_DAYS || platforms.is_empty() || campaigns == 0 {
        return None;
    }
    let n = noise.at(TAG_INCIDENT);
    let back = 3 + n.index(0, 10) as u32;
    if client.is_multiple_of(2) {
        Some(Incident::TrackingOutage {
            platform: platforms[n.index(1, platforms.len())],
            first_day: days - 1 - back,
            days: 2,
        })
    } else {
        Some(Incident::SpendSpike {
            campaign: n.index(2, campaigns) as u32,
            day: days - 1 - back,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_vary_and_conversions_saturate() {
        let r = CampaignResponse::new(Noise::new(3), 0, 365);
        assert_eq!(r.budget.len(), 365);
        let levels: std::collections::BTreeSet<u32> =
            r.budget.iter().map(|b| b.to_bits()).collect();
        assert!(levels.len() >= 8, "{levels:?}");
        // Steady state: more budget, fewer conversions per click.
        for t in 60..365 {
            if r.budget[t] == r.budget[t - 59] && r.budget[t] > 1.2 {
                assert!(r.efficiency[t] < 1.0);
            }
        }
    }
}
