//! Dates as Arrow `Date32` values: days since 1970-01-01.

use chrono::NaiveDate;

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("1970-01-01 is a date")
}

/// The `Date32` value of a date (saturating past ±5.8 million years,
/// which no validated date reaches).
pub fn date_to_epoch_day(date: NaiveDate) -> i32 {
    let days = (date - epoch()).num_days();
    i32::try_from(days).unwrap_or(if days < 0 { i32::MIN } else { i32::MAX })
}

/// The date of a `Date32` value, if chrono can hold it.
pub fn epoch_day_to_date(day: i32) -> Option<NaiveDate> {
    epoch().checked_add_signed(chrono::Duration::days(day.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for text in ["1970-01-01", "1969-12-31", "2026-12-03", "1900-02-28"] {
            let d: NaiveDate = text.parse().unwrap();
            assert_eq!(epoch_day_to_date(date_to_epoch_day(d)), Some(d));
        }
        assert_eq!(date_to_epoch_day("1970-01-02".parse().unwrap()), 1);
        assert_eq!(epoch_day_to_date(i32::MAX), None);
    }
}
