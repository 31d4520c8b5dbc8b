//! Dates as Arrow `Date32` values: days since 1970-01-01.

use chrono::{Days, NaiveDate};

/// The `Date32` value of a date.
pub(crate) fn date_to_epoch_day(date: NaiveDate) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    // Dates come from validated windows well inside ±5.8 million years.
    i32::try_from(date.signed_duration_since(epoch).num_days()).expect("date fits Date32")
}

/// The date of a `Date32` value.
pub(crate) fn epoch_day_to_date(day: i32) -> Option<NaiveDate> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    if day >= 0 {
        epoch.checked_add_days(Days::new(day as u64))
    } else {
        epoch.checked_sub_days(Days::new(u64::from(day.unsigned_abs())))
    }
}
