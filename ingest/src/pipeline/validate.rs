//! Validation rules of unified records: pure checks, no I/O.
//!
//! Rules per table: money and counts are non-negative, clicks do not
//! exceed impressions where the platform guarantees it, the date is inside
//! the requested range, the currency is a known ISO 4217 code. (Unparsable
//! values are rejected earlier, by the parsers.) A rejected record becomes
//! a [`Reject`] with its reason and raw record, for the `quarantine` table
//! (see [`crate::lake::quarantine`]); the good ones still land.

use chrono::NaiveDate;

use crate::error::Result;
use crate::sources::connectors::{Record, Reject};

/// Active ISO 4217 currency codes.
pub const ISO_4217: [&str; 153] = [
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SYP", "SZL", "THB", "TJS",
    "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VES",
    "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF", "YER", "ZAR", "ZMW",
];

/// Whether `code` is a known ISO 4217 currency.
pub fn is_known_currency(code: &str) -> bool {
    ISO_4217.binary_search(&code).is_ok()
}

/// The rules of one run.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// First date of the requested range.
    pub from: NaiveDate,
    /// Last date of the requested range (inclusive).
    pub to: NaiveDate,
    /// Whether clicks must not exceed impressions.
    pub clicks_within_impressions: bool,
}

/// Checks one record; `Err` holds the reason.
pub fn check(record: &Record, rules: &Rules) -> Result<(), String> {
    let date = record.date();
    if date < rules.from || date > rules.to {
        return Err(format!(
            "date {date} outside the requested range {} to {}",
            rules.from, rules.to
        ));
    }
    let currency_ok = |c: &str| {
        if is_known_currency(c) {
            Ok(())
        } else {
            Err(format!("unknown currency '{c}'"))
        }
    };
    let non_negative = |name: &str, v: i128| {
        if v < 0 {
            Err(format!("negative {name}: {}", micros_text(v)))
        } else {
            Ok(())
        }
    };
    let non_negative_count = |name: &str, v: i64| {
        if v < 0 {
            Err(format!("negative {name}: {v}"))
        } else {
            Ok(())
        }
    };
    let non_negative_float = |name: &str, v: f64| {
        if v < 0.0 || !v.is_finite() {
            Err(format!("negative or non-finite {name}: {v}"))
        } else {
            Ok(())
        }
    };
    match record {
        Record::Ad(r) => {
            currency_ok(&r.currency)?;
            non_negative("spend", r.spend_micros)?;
            non_negative_count("impressions", r.impressions)?;
            non_negative_count("clicks", r.clicks)?;
            non_negative_float("conversions", r.conversions)?;
            non_negative("conversion value", r.conversion_value_micros)?;
            if rules.clicks_within_impressions && r.clicks > r.impressions {
                return Err(format!(
                    "clicks ({}) exceed impressions ({})",
                    r.clicks, r.impressions
                ));
            }
        }
        Record::Session(r) => {
            currency_ok(&r.currency)?;
            non_negative_count("sessions", r.sessions)?;
            non_negative_count("engaged sessions", r.engaged_sessions)?;
            non_negative_float("key events", r.key_events)?;
            non_negative("revenue", r.revenue_micros)?;
            if r.engaged_sessions > r.sessions {
                return Err(format!(
                    "engaged sessions ({}) exceed sessions ({})",
                    r.engaged_sessions, r.sessions
                ));
            }
        }
        Record::Order(r) => {
            currency_ok(&r.currency)?;
            non_negative("total price", r.total_price_micros)?;
            non_negative("subtotal price", r.subtotal_price_micros)?;
        }
    }
    Ok(())
}

/// Splits records into the good ones and rejects.
pub fn validate(records: Vec<Record>, rules: &Rules) -> (Vec<Record>, Vec<Reject>) {
    let mut good = Vec::with_capacity(records.len());
    let mut rejects = Vec::new();
    for r in records {
        match check(&r, rules) {
            Ok(()) => good.push(r),
            Err(reason) => rejects.push(Reject {
                reason,
                raw: r.raw().to_owned(),
            }),
        }
    }
    (good, rejects)
}

fn micros_text(v: i128) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!("{sign}{}.{:06}", a / 1_000_000, a % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::Utc;

    use crate::sources::connectors::{AdRow, OrderRow, SessionRow, Utm};

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, 6, d).unwrap()
    }

    fn ad(date: NaiveDate) -> AdRow {
        AdRow {
            date,
            account_id: "1".to_owned(),
            account_name: None,
            campaign_id: "c".to_owned(),
            campaign_name: None,
            ad_group_id: None,
            ad_group_name: None,
            ad_id: None,
            ad_name: None,
            spend_micros: 1_000_000,
            impressions: 10,
            clicks: 2,
            conversions: 1.0,
            conversion_value_micros: 0,
            currency: "EUR".to_owned(),
            utm: Utm::default(),
            raw: "{}".to_owned(),
        }
    }

    #[test]
    fn each_rule_names_what_is_wrong_and_good_rows_pass() {
        let rules = Rules {
            from: day(1),
            to: day(2),
            clicks_within_impressions: true,
        };
        let reason = |r: Record| check(&r, &rules).err();
        assert_eq!(reason(Record::Ad(ad(day(2)))), None);
        assert_eq!(
            reason(Record::Ad(ad(day(3)))).as_deref(),
            Some("date 2025-06-03 outside the requested range 2025-06-01 to 2025-06-02")
        );
        let mut negative = ad(day(1));
        negative.spend_micros = -1_500_000;
        assert_eq!(
            reason(Record::Ad(negative)).as_deref(),
            Some("negative spend: -1.500000")
        );
        let mut clicks = ad(day(1));
        clicks.clicks = 11;
        assert_eq!(
            reason(Record::Ad(clicks.clone())).as_deref(),
            Some("clicks (11) exceed impressions (10)")
        );
        // Where the platform does not guarantee it, more clicks pass.
        let loose = Rules {
            clicks_within_impressions: false,
            ..rules
        };
        assert_eq!(check(&Record::Ad(clicks), &loose), Ok(()));
        let mut currency = ad(day(1));
        currency.currency = "EURO".to_owned();
        assert_eq!(
            reason(Record::Ad(currency)).as_deref(),
            Some("unknown currency 'EURO'")
        );
        let session = SessionRow {
            date: day(1),
            property_id: "p".to_owned(),
            source: None,
            medium: None,
            campaign: None,
            device_category: None,
            country: None,
            sessions: 5,
            engaged_sessions: 6,
            key_events: 0.0,
            revenue_micros: 0,
            currency: "EUR".to_owned(),
            raw: "{}".to_owned(),
        };
        assert_eq!(
            reason(Record::Session(session)).as_deref(),
            Some("engaged sessions (6) exceed sessions (5)")
        );
        let order = OrderRow {
            date: day(2),
            shop_id: "s".to_owned(),
            order_id: "o".to_owned(),
            created_at: Utc::now(),
            currency: "EUR".to_owned(),
            total_price_micros: -1,
            subtotal_price_micros: 0,
            financial_status: None,
            utm: Utm::default(),
            customer_key: None,
            raw: "{\"id\":\"o\"}".to_owned(),
        };
        let (good, rejects) = validate(vec![Record::Ad(ad(day(1))), Record::Order(order)], &rules);
        assert_eq!(good.len(), 1);
        assert_eq!(
            rejects,
            [Reject {
                reason: "negative total price: -0.000001".to_owned(),
                raw: "{\"id\":\"o\"}".to_owned(),
            }]
        );
    }

    #[test]
    fn currency_list_is_sorted_for_binary_search() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
        assert!(is_known_currency("USD") && is_known_currency("EUR"));
        assert!(!is_known_currency("usd") && !is_known_currency("XYZ"));
    }
}
