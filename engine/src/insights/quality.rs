//! Data quality: what the landed data itself says is wrong.
//!
//! Per client and source (each ad platform, GA4, Shopify), over a lookback
//! window ending at a day (default yesterday):
//!
//! * `stopped`: the source has no rows since a day while the client's other
//!   sources landed through the last day (critical);
//! * `missing_day`: a day without rows between the source's first and last
//!   landed day (warning);
//! * `volume`: the last day's spend, clicks or conversions (sessions, orders)
//!   outside the band of the source's own series (robust STL remainder,
//!   [`anomaly::detect`]): critical when it fell to zero, a warning
//!   otherwise;
//! * `drift`: GA4's paid sessions per ad click on the last day outside the
//!   band of its own history (tracking or tagging broke on one side).
//!
//! Each finding names the client, the source, the day, the check, its
//! severity and a sentence with the numbers.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Days, NaiveDate};

use super::anomaly;
use crate::semantic::{Cell, MetricResult};

/// The default window, in days.
pub const DEFAULT_LOOKBACK_DAYS: u64 = 56;

/// The default threshold of the volume and drift checks, in robust
/// standard deviations (above the anomaly default: an alert, not a hint).
pub const DEFAULT_THRESHOLD: f64 = 4.0;

/// Missing days reported per source, past which one summary stands for the
/// rest.
const MAX_MISSING_REPORTED: usize = 5;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth a look.
    Warning,
    /// Numbers shown to clients are wrong or missing.
    Critical,
}

impl Severity {
    /// The name in answers and labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The client.
    pub client_id: String,
    /// The source: an ad platform, `ga4` or `shopify`.
    pub source: String,
    /// The day it is about.
    pub date: NaiveDate,
    /// `stopped`, `missing_day`, `volume` or `drift`.
    pub check: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// What was seen, with the numbers.
    pub detail: String,
}

/// The daily values of one (client, source).
#[derive(Debug, Default)]
pub(crate) struct Track {
    pub(crate) client_id: String,
    pub(crate) source: String,
    /// Metric names, in the order of each day's values.
    pub(crate) metrics: Vec<String>,
    /// The days with rows.
    pub(crate) days: BTreeMap<NaiveDate, Vec<f64>>,
}

/// The tracks of a daily metric answer keyed by `client_id` and, when
/// given, the `source_dimension` (else every row's source is `source`).
pub(crate) fn tracks(
    result: &MetricResult,
    source_dimension: Option<&str>,
    source: &str,
    metrics: &[&str],
) -> Vec<Track> {
    let col = |name: &str| result.column(name);
    let (Some(client), Some(date)) = (col("client_id"), col("date")) else {
        return Vec::new();
    };
    let by = source_dimension.and_then(col);
    let values: Vec<Option<usize>> = metrics.iter().map(|m| col(m)).collect();
    let mut out: BTreeMap<(String, String), Track> = BTreeMap::new();
    for row in &result.rows {
        let (Cell::Text(c), Cell::Date(d)) = (&row[client], &row[date]) else {
            continue;
        };
        let s = match by.map(|i| &row[i]) {
            Some(Cell::Text(s)) => s.clone(),
            Some(_) => continue,
            None => source.to_string(),
        };
        let track = out.entry((c.clone(), s.clone())).or_insert_with(|| Track {
            client_id: c.clone(),
            source: s,
            metrics: metrics.iter().map(|m| (*m).to_string()).collect(),
            days: BTreeMap::new(),
        });
        let slot = track
            .days
            .entry(*d)
            .or_insert_with(|| vec![0.0; metrics.len()]);
        for (v, i) in slot.iter_mut().zip(&values) {
            *v += i.and_then(|i| row[i].as_f64()).unwrap_or(0.0);
        }
    }
    out.into_values().collect()
}

/// Every finding about `tracks` for the window ending `as_of`; `paid` is
/// GA4's paid sessions per client and day (for the drift check).
pub(crate) fn check(
    tracks: &[Track],
    paid: &BTreeMap<(String, NaiveDate), f64>,
    as_of: NaiveDate,
    threshold: f64,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let latest_of_client: BTreeMap<&str, NaiveDate> =
        tracks.iter().fold(BTreeMap::new(), |mut m, t| {
            if let Some(last) = t.days.keys().next_back() {
                let e = m.entry(t.client_id.as_str()).or_insert(*last);
                *e = (*e).max(*last);
            }
            m
        });
    for t in tracks {
        let (Some(first), Some(last)) = (t.days.keys().next(), t.days.keys().next_back()) else {
            continue;
        };
        let (first, last) = (*first, *last);
        let finding = |date, check, severity, detail| Finding {
            client_id: t.client_id.clone(),
            source: t.source.clone(),
            date,
            check,
            severity,
            detail,
        };
        let client_latest = latest_of_client[t.client_id.as_str()];
        if last < client_latest {
            let others: BTreeSet<&str> = tracks
                .iter()
                .filter(|o| {
                    o.client_id == t.client_id && o.days.keys().next_back() == Some(&client_latest)
                })
                .map(|o| o.source.as_str())
                .collect();
            findings.push(finding(
                last.checked_add_days(Days::new(1)).unwrap_or(last),
                "stopped",
                Severity::Critical,
                format!(
                    "no rows since {last} while {} landed through {client_latest}",
                    others.into_iter().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let missing: Vec<NaiveDate> = first
            .iter_days()
            .take_while(|d| *d <= last)
            .filter(|d| !t.days.contains_key(d))
            .collect();
        for day in missing.iter().take(MAX_MISSING_REPORTED) {
            findings.push(finding(
                *day,
                "missing_day",
                Severity::Warning,
                format!("no rows on {day}, between days with rows ({first} to {last})"),
            ));
        }
        if missing.len() > MAX_MISSING_REPORTED {
            findings.push(finding(
                missing[MAX_MISSING_REPORTED],
                "missing_day",
                Severity::Warning,
                format!(
                    "{} more days without rows between {first} and {last}",
                    missing.len() - MAX_MISSING_REPORTED
                ),
            ));
        }
        if last == as_of {
            let len = usize::try_from((last - first).num_days() + 1).unwrap_or(0);
            for (m, metric) in t.metrics.iter().enumerate() {
                let series: Vec<f64> = first
                    .iter_days()
                    .take(len)
                    .map(|d| t.days.get(&d).map_or(0.0, |v| v[m]))
                    .collect();
                if let Some(a) = anomaly::detect(&series, len - 1, threshold).pop() {
                    let severity = if a.actual == 0.0 {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    };
                    findings.push(finding(
                        as_of,
                        "volume",
                        severity,
                        format!(
                            "{metric} {:.2} on {as_of}, expected {:.2} (normal {:.2} to {:.2}): a {} of {:.1} robust standard deviations",
                            a.actual,
                            a.expected,
                            a.lower,
                            a.upper,
                            a.direction.name(),
                            a.score
                        ),
                    ));
                }
            }
        }
    }
    findings.extend(drift(tracks, paid, as_of, threshold));
    findings.sort_by(|a, b| {
        (&a.client_id, &a.source, a.date, a.check).cmp(&(&b.client_id, &b.source, b.date, b.check))
    });
    findings
}

/// GA4 paid sessions per ad click, per client: the last day against its
/// own history.
fn drift(
    tracks: &[Track],
    paid: &BTreeMap<(String, NaiveDate), f64>,
    as_of: NaiveDate,
    threshold: f64,
) -> Vec<Finding> {
    let mut clicks: BTreeMap<(String, NaiveDate), f64> = BTreeMap::new();
    for t in tracks {
        let Some(i) = t.metrics.iter().position(|m| m == "clicks") else {
            continue;
        };
        for (d, v) in &t.days {
            *clicks.entry((t.client_id.clone(), *d)).or_default() += v[i];
        }
    }
    let clients: BTreeSet<&String> = clicks.keys().map(|(c, _)| c).collect();
    let mut out = Vec::new();
    for client in clients {
        let ratios: Vec<(NaiveDate, f64)> = clicks
            .range((client.clone(), NaiveDate::MIN)..=(client.clone(), as_of))
            .filter_map(|((_, d), c)| {
                let s = paid.get(&(client.clone(), *d))?;
                (*c > 0.0).then_some((*d, s / c))
            })
            .collect();
        if ratios.last().map(|(d, _)| *d) != Some(as_of) || ratios.len() < 14 {
            continue;
        }
        // Ratios near 1: scaled to percent so the detector's floors fit.
        let series: Vec<f64> = ratios.iter().map(|(_, r)| r * 100.0).collect();
        if let Some(a) = anomaly::detect(&series, series.len() - 1, threshold).pop() {
            out.push(Finding {
                client_id: client.clone(),
                source: "ga4".into(),
                date: as_of,
                check: "drift",
                severity: Severity::Warning,
                detail: format!(
                    "{:.2} GA4 paid sessions per ad click on {as_of}, usually {:.2}: tracking or tagging changed on one side",
                    a.actual / 100.0,
                    a.expected / 100.0
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(n: u64) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 9, 1).unwrap() + Days::new(n)
    }

    fn track(client: &str, source: &str, days: u64, value: impl Fn(u64) -> Option<f64>) -> Track {
        Track {
            client_id: client.into(),
            source: source.into(),
            metrics: vec!["clicks".into()],
            days: (0..days)
                .filter_map(|d| value(d).map(|v| (day(d), vec![v])))
                .collect(),
        }
    }

    fn weekly(d: u64) -> f64 {
        [100.0, 110.0, 105.0, 100.0, 95.0, 70.0, 65.0][(d % 7) as usize]
            * (1.0 + ((d * 7919 % 11) as f64 - 5.0) / 200.0)
    }

    #[test]
    fn finds_a_stopped_source_a_gap_and_a_collapse() {
        let tracks = [
            track("acme", "google_ads", 40, |d| Some(weekly(d))),
            // Stopped after day 35.
            track("acme", "meta_ads", 36, |d| Some(weekly(d))),
            // A gap on day 20, and zero clicks on the last day.
            track("acme", "tiktok_ads", 40, |d| match d {
                20 => None,
                39 => Some(0.0),
                _ => Some(weekly(d)),
            }),
        ];
        let found = check(&tracks, &BTreeMap::new(), day(39), DEFAULT_THRESHOLD);
        let summary: Vec<(&str, &str, NaiveDate, Severity)> = found
            .iter()
            .map(|f| (f.source.as_str(), f.check, f.date, f.severity))
            .collect();
        assert_eq!(
            summary,
            [
                ("meta_ads", "stopped", day(36), Severity::Critical),
                ("tiktok_ads", "missing_day", day(20), Severity::Warning),
                ("tiktok_ads", "volume", day(39), Severity::Critical),
            ],
            "{found:#?}"
        );
        assert!(
            found[0]
                .detail
                .contains("google_ads, tiktok_ads landed through 2026-10-10")
        );
        assert!(
            found[2].detail.contains("clicks 0.00 on 2026-10-10"),
            "{}",
            found[2].detail
        );
    }

    #[test]
    fn finds_paid_sessions_drifting_from_clicks() {
        let tracks = [track("acme", "google_ads", 40, |d| Some(weekly(d)))];
        let paid: BTreeMap<(String, NaiveDate), f64> = (0..40)
            .map(|d| {
                let share = if d == 39 { 0.3 } else { 0.9 };
                (("acme".to_string(), day(d)), weekly(d) * share)
            })
            .collect();
        let found = check(&tracks, &paid, day(39), DEFAULT_THRESHOLD);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!((found[0].source.as_str(), found[0].check), ("ga4", "drift"));
        assert!(
            found[0]
                .detail
                .starts_with("0.30 GA4 paid sessions per ad click")
        );
    }
}
