//! Date ranges: relative names resolved against "today" in a time zone,
//! and comparison periods.

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};
use chrono_tz::Tz;

use super::{Comparison, DateRange};

/// The named relative ranges (plus `last_N_days` for any N from 1 to 3660).
/// `last_*` ranges end yesterday; `*_to_date` ranges end today.
pub const RELATIVE_RANGES: &[&str] = &[
    "today",
    "yesterday",
    "last_7_days",
    "last_14_days",
    "last_28_days",
    "last_30_days",
    "last_90_days",
    "week_to_date",
    "month_to_date",
    "quarter_to_date",
    "year_to_date",
    "last_week",
    "last_month",
    "last_quarter",
];

fn quarter_start(d: NaiveDate) -> NaiveDate {
    let month = (d.month() - 1) / 3 * 3 + 1;
    NaiveDate::from_ymd_opt(d.year(), month, 1).expect("valid quarter start")
}

fn month_start(d: NaiveDate) -> NaiveDate {
    d.with_day(1).expect("day 1 exists")
}

fn week_start(d: NaiveDate) -> NaiveDate {
    d - Days::new(u64::from(d.weekday().num_days_from_monday()))
}

/// Resolves `range` to inclusive dates, with "today" taken at `now` in
/// `tz`. Errors name the problem and the valid choices.
pub fn resolve_range(
    range: &DateRange,
    now: DateTime<Utc>,
    tz: Tz,
) -> Result<(NaiveDate, NaiveDate), String> {
    let (start, end) = match range {
        DateRange::Absolute { start, end } => (*start, *end),
        DateRange::Relative(name) => {
            let today = now.with_timezone(&tz).date_naive();
            let yesterday = today - Days::new(1);
            let last_days = |n: u64| (today - Days::new(n), yesterday);
            match name.as_str() {
                "today" => (today, today),
                "yesterday" => (yesterday, yesterday),
                "week_to_date" => (week_start(today), today),
                "month_to_date" => (month_start(today), today),
                "quarter_to_date" => (quarter_start(today), today),
                "year_to_date" => (
                    NaiveDate::from_ymd_opt(today.year(), 1, 1).expect("Jan 1"),
                    today,
                ),
                "last_week" => {
                    let this = week_start(today);
                    (this - Days::new(7), this - Days::new(1))
                }
                "last_month" => {
                    let this = month_start(today);
                    (this - Months::new(1), this - Days::new(1))
                }
                "last_quarter" => {
                    let this = quarter_start(today);
                    (this - Months::new(3), this - Days::new(1))
                }
                other => match other
                    .strip_prefix("last_")
                    .and_then(|r| r.strip_suffix("_days"))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    Some(n @ 1..=3660) => last_days(n),
                    _ => {
                        return Err(format!(
                            "unknown relative date range '{other}' (valid: {}, or last_N_days)",
                            RELATIVE_RANGES.join(", ")
                        ));
                    }
                },
            }
        }
    };
    if end < start {
        return Err(format!(
            "date range is inverted: start {start} is after end {end}"
        ));
    }
    Ok((start, end))
}

/// The comparison period of an inclusive range, and the shift that maps a
/// comparison date onto the range's timeline.
pub(crate) fn comparison_range(
    start: NaiveDate,
    end: NaiveDate,
    comparison: Comparison,
) -> (NaiveDate, NaiveDate, Shift) {
    match comparison {
        Comparison::PreviousPeriod => {
            let days = (end - start).num_days() as u64 + 1;
            (
                start - Days::new(days),
                end - Days::new(days),
                Shift::Days(days),
            )
        }
        Comparison::SamePeriodLastYear => (
            start - Months::new(12),
            end - Months::new(12),
            Shift::Years(1),
        ),
    }
}

/// How comparison-period dates are moved onto the current timeline before
/// bucketing, so that buckets of both periods line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shift {
    /// No shift (the current period).
    None,
    /// Forward by this many days.
    Days(u64),
    /// Forward by this many years.
    Years(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn relative_ranges_use_the_clients_today() {
        // 2026-03-01 03:30 UTC is still 2026-02-28 in New York (UTC-5),
        // already 2026-03-01 in Berlin.
        let now: DateTime<Utc> = "2026-03-01T03:30:00Z".parse().unwrap();
        let ny: Tz = "America/New_York".parse().unwrap();
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let r = |name: &str, tz| resolve_range(&DateRange::Relative(name.into()), now, tz).unwrap();
        assert_eq!(r("month_to_date", ny), (d("2026-02-01"), d("2026-02-28")));
        assert_eq!(
            r("month_to_date", berlin),
            (d("2026-03-01"), d("2026-03-01"))
        );
        assert_eq!(r("yesterday", ny), (d("2026-02-27"), d("2026-02-27")));
        assert_eq!(r("last_7_days", berlin), (d("2026-02-22"), d("2026-02-28")));
        assert_eq!(r("last_month", berlin), (d("2026-02-01"), d("2026-02-28")));
        assert_eq!(
            r("last_quarter", berlin),
            (d("2025-10-01"), d("2025-12-31"))
        );
        // 2026-03-01 is a Sunday: the ISO week began Monday 2026-02-23.
        assert_eq!(
            r("week_to_date", berlin),
            (d("2026-02-23"), d("2026-03-01"))
        );
        assert_eq!(r("last_week", berlin), (d("2026-02-16"), d("2026-02-22")));
        assert_eq!(r("last_3_days", ny), (d("2026-02-25"), d("2026-02-27")));
    }

    #[test]
    fn bad_ranges_name_the_problem() {
        let now: DateTime<Utc> = "2026-03-01T00:00:00Z".parse().unwrap();
        let err =
            resolve_range(&DateRange::Relative("last_fortnight".into()), now, Tz::UTC).unwrap_err();
        assert!(
            err.contains("last_fortnight") && err.contains("month_to_date"),
            "{err}"
        );
        let inverted = DateRange::Absolute {
            start: d("2026-03-02"),
            end: d("2026-03-01"),
        };
        assert!(
            resolve_range(&inverted, now, Tz::UTC)
                .unwrap_err()
                .contains("inverted")
        );
    }

    #[test]
    fn comparison_periods_cross_month_and_year_boundaries() {
        // Previous period of 2026-03-01..2026-03-10 (10 days) ends Feb 28.
        let (s, e, shift) =
            comparison_range(d("2026-03-01"), d("2026-03-10"), Comparison::PreviousPeriod);
        assert_eq!(
            (s, e, shift),
            (d("2026-02-19"), d("2026-02-28"), Shift::Days(10))
        );
        // Previous period of January crosses into the previous year.
        let (s, e, _) =
            comparison_range(d("2026-01-01"), d("2026-01-31"), Comparison::PreviousPeriod);
        assert_eq!((s, e), (d("2025-12-01"), d("2025-12-31")));
        let (s, e, shift) = comparison_range(
            d("2025-03-01"),
            d("2025-03-31"),
            Comparison::SamePeriodLastYear,
        );
        assert_eq!(
            (s, e, shift),
            (d("2024-03-01"), d("2024-03-31"), Shift::Years(1))
        );
    }
}
