use std::collections::{BTreeMap, HashMap, HashSet};

use adlake_engine::schema::{AD_PERFORMANCE, FX_RATES, ORDERS, WEB_SESSIONS};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    Date32Type, Decimal128Type, Float64Type, Int64Type, TimestampMicrosecondType,
};
use chrono::{DateTime, Datelike, TimeZone, Weekday};

use super::*;
use crate::dates::epoch_day_to_date;
use crate::lake::lineage::Lineage;

fn config(seed: u64) -> SyntheticConfig {
    SyntheticConfig {
        clients: 6,
        days: 56,
        rows: 40_000,
        seed,
        end_date: NaiveDate::from_ymd_opt(2025, 5, 31).unwrap(),
        incidents: false,
    }
}

fn lineage() -> Lineage {
    Lineage {
        source: SYNTHETIC_SOURCE.to_owned(),
        run_id: "test-run".to_owned(),
        ingested_at: DateTime::from_timestamp(1_750_000_000, 0).unwrap(),
    }
}

fn all_ads(s: &Synthetic) -> Vec<RecordBatch> {
    (0..s.clients().len())
        .flat_map(|c| s.ad_performance(c, &lineage()))
        .collect()
}

fn strings<'a>(b: &'a RecordBatch, name: &str) -> &'a arrow::array::StringArray {
    b.column_by_name(name).unwrap().as_string::<i32>()
}

fn ints(b: &RecordBatch, name: &str) -> Vec<i64> {
    b.column_by_name(name)
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}

fn floats(b: &RecordBatch, name: &str) -> Vec<f64> {
    b.column_by_name(name)
        .unwrap()
        .as_primitive::<Float64Type>()
        .values()
        .to_vec()
}

fn money(b: &RecordBatch, name: &str) -> Vec<i128> {
    b.column_by_name(name)
        .unwrap()
        .as_primitive::<Decimal128Type>()
        .values()
        .to_vec()
}

fn dates(b: &RecordBatch) -> Vec<NaiveDate> {
    b.column_by_name("date")
        .unwrap()
        .as_primitive::<Date32Type>()
        .values()
        .iter()
        .map(|d| epoch_day_to_date(*d).unwrap())
        .collect()
}

#[test]
fn same_seed_same_data_different_seed_different_data() {
    let a = Synthetic::new(config(1));
    let b = Synthetic::new(config(1));
    assert_eq!(a.clients(), b.clients());
    for c in 0..a.clients().len() {
        let left: Vec<_> = a.ad_performance(c, &lineage()).collect();
        let right: Vec<_> = b.ad_performance(c, &lineage()).collect();
        assert_eq!(left, right, "ad_performance of client {c}");
        let left: Vec<_> = a.web_sessions(c, &lineage()).collect();
        let right: Vec<_> = b.web_sessions(c, &lineage()).collect();
        assert_eq!(left, right, "web_sessions of client {c}");
        let left: Vec<_> = a.orders(c, &lineage()).collect();
        let right: Vec<_> = b.orders(c, &lineage()).collect();
        assert_eq!(left, right, "orders of client {c}");
    }
    assert_eq!(
        a.fx_rates().collect::<Vec<_>>(),
        b.fx_rates().collect::<Vec<_>>()
    );

    let other = Synthetic::new(config(2));
    assert_ne!(a.clients(), other.clients());
    assert_ne!(all_ads(&a), all_ads(&other));
    assert_ne!(
        a.fx_rates().collect::<Vec<_>>(),
        other.fx_rates().collect::<Vec<_>>()
    );
}

#[test]
fn a_platform_slice_is_the_same_rows_as_in_the_whole_client() {
    let s = Synthetic::new(config(3));
    let client = 0;
    let whole: Vec<RecordBatch> = s.ad_performance(client, &lineage()).collect();
    let whole_rows: usize = whole.iter().map(RecordBatch::num_rows).sum();
    let mut per_platform = 0usize;
    for &p in &s.clients()[client].platforms {
        let batches: Vec<RecordBatch> = s.ad_performance_for(client, p, &lineage()).collect();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows as u64, s.ad_performance_rows(client, Some(p)));
        for b in &batches {
            assert!(strings(b, "platform").iter().all(|v| v == Some(p.as_str())));
        }
        per_platform += rows;
        // Spend of the slice equals the spend of that platform in the whole.
        let slice_spend: i128 = batches.iter().flat_map(|b| money(b, "spend")).sum();
        let whole_spend: i128 = whole
            .iter()
            .flat_map(|b| {
                let platforms = strings(b, "platform");
                money(b, "spend")
                    .into_iter()
                    .enumerate()
                    .filter(move |(i, _)| platforms.value(*i) == p.as_str())
                    .map(|(_, v)| v)
            })
            .sum();
        assert_eq!(slice_spend, whole_spend, "{p}");
    }
    assert_eq!(per_platform, whole_rows);
    assert_eq!(
        s.ad_performance_for(client, Platform::ALL[3], &lineage())
            .count()
            .min(1),
        usize::from(s.clients()[client].platforms.contains(&Platform::ALL[3]))
    );
}

#[test]
fn clients_look_like_an_agency_book() {
    let s = Synthetic::new(SyntheticConfig {
        clients: 40,
        ..config(4)
    });
    let mut ids = HashSet::new();
    for client in s.clients() {
        assert!(ids.insert(client.id.clone()), "duplicate id {}", client.id);
        assert!(
            client
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{}",
            client.id
        );
        assert!(client.id.contains('-'));
        assert!((2..=6).contains(&client.platforms.len()), "{client:?}");
        assert!(client.platforms.contains(&Platform::GoogleAds));
        for p in &client.platforms {
            let n = client.accounts.iter().filter(|a| a.platform == *p).count();
            assert!((1..=2).contains(&n), "{} has {n} {p} accounts", client.id);
        }
        for account in &client.accounts {
            let id = &account.id;
            match account.platform {
                Platform::GoogleAds => {
                    let parts: Vec<&str> = id.split('-').collect();
                    assert_eq!(
                        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                        vec![3, 3, 4],
                        "{id}"
                    );
                }
                Platform::MetaAds => {
                    let n: u64 = id.parse().unwrap();
                    assert!(n > 1 << 53, "{id}");
                    assert!((15..=17).contains(&id.len()), "{id}");
                }
                Platform::TiktokAds => assert_eq!(id.len(), 19, "{id}"),
                Platform::LinkedinAds => assert_eq!(id.len(), 9, "{id}"),
                _ => assert!(!id.is_empty()),
            }
            assert_eq!(account.currency.len(), 3);
        }
        // Mostly one currency; never more than two.
        let account_currencies: HashSet<&str> = client
            .accounts
            .iter()
            .map(|a| a.currency.as_str())
            .collect();
        assert!(account_currencies.len() <= 2, "{client:?}");
        assert!(client.time_zone.name().contains('/'));
    }
    let single_currency = s
        .clients()
        .iter()
        .filter(|c| c.accounts.iter().all(|a| a.currency == c.currency))
        .count();
    assert!(single_currency * 2 > s.clients().len());
}

#[test]
fn ad_rows_hit_the_target_and_are_plausible() {
    let cfg = config(5);
    let s = Synthetic::new(cfg.clone());
    let batches = all_ads(&s);
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows as u64, cfg.rows);

    let (first, last) = s.date_range().unwrap();
    let mut per_platform: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut google_fractional = false;
    let mut ad_ids: HashMap<String, String> = HashMap::new();
    for b in &batches {
        assert_eq!(b.schema(), AD_PERFORMANCE.schema());
        let (impressions, clicks) = (ints(b, "impressions"), ints(b, "clicks"));
        let spend = money(b, "spend");
        let value = money(b, "conversion_value");
        let conversions = floats(b, "conversions");
        let platforms = strings(b, "platform");
        for i in 0..b.num_rows() {
            assert!(clicks[i] <= impressions[i], "clicks > impressions");
            assert!(clicks[i] >= 0 && spend[i] >= 0 && value[i] >= 0);
            assert!(conversions[i] >= 0.0);
            // Realistic cents at scale 6.
            assert_eq!(spend[i] % 10_000, 0);
            assert_eq!(value[i] % 10_000, 0);
            let p = platforms.value(i).to_owned();
            if p == "google_ads" && conversions[i].fract() != 0.0 {
                google_fractional = true;
            }
            if p != "google_ads" && p != "microsoft_ads" {
                assert_eq!(conversions[i].fract(), 0.0, "{p} conversions");
            }
            let e = per_platform.entry(p).or_default();
            e.0 += impressions[i];
            e.1 += clicks[i];
        }
        for d in dates(b) {
            assert!(first <= d && d <= last);
        }
        for name in ["utm_source", "utm_medium", "utm_campaign", "utm_content"] {
            assert_eq!(b.column_by_name(name).unwrap().null_count(), 0, "{name}");
        }
        let (ids, names) = (strings(b, "ad_id"), strings(b, "ad_name"));
        for i in 0..b.num_rows() {
            let previous = ad_ids.insert(ids.value(i).to_owned(), names.value(i).to_owned());
            if let Some(previous) = previous {
                assert_eq!(previous, names.value(i), "one name per ad id");
            }
        }
    }
    assert!(google_fractional, "Google reports fractional conversions");
    for (platform, (impressions, clicks)) in per_platform {
        let ctr = clicks as f64 / impressions as f64;
        assert!((0.003..=0.05).contains(&ctr), "{platform} CTR {ctr}");
    }
}

#[test]
fn platforms_and_audiences_behave_differently() {
    let s = Synthetic::new(SyntheticConfig {
        clients: 30,
        rows: 60_000,
        ..config(6)
    });
    // CPC in USD accounts only, so currencies do not blur the comparison.
    let mut cost: HashMap<String, (i128, i64)> = HashMap::new();
    // Impressions by (B2B audience?, weekend?).
    let mut week: HashMap<(bool, bool), (i64, i64)> = HashMap::new();
    for c in 0..s.clients().len() {
        let b2b_client = s.clients()[c].vertical.is_b2b();
        for b in s.ad_performance(c, &lineage()) {
            let (platforms, currencies) = (strings(&b, "platform"), strings(&b, "currency"));
            let (spend, clicks, impressions) = (
                money(&b, "spend"),
                ints(&b, "clicks"),
                ints(&b, "impressions"),
            );
            for (i, date) in dates(&b).into_iter().enumerate() {
                let platform = platforms.value(i);
                if currencies.value(i) == "USD" {
                    let e = cost.entry(platform.to_owned()).or_default();
                    e.0 += spend[i];
                    e.1 += clicks[i];
                }
                let b2b = b2b_client || platform == "linkedin_ads";
                let weekend = matches!(date.weekday(), Weekday::Sat | Weekday::Sun);
                let e = week.entry((b2b, weekend)).or_default();
                e.0 += impressions[i];
                e.1 += 1;
            }
        }
    }
    let cpc = |p: &str| {
        let (spend, clicks) = cost[p];
        spend as f64 / 1e6 / clicks as f64
    };
    assert!(
        cpc("linkedin_ads") > 2.0 * cpc("google_ads"),
        "LinkedIn is expensive"
    );
    assert!(cpc("google_ads") > cpc("meta_ads"));
    assert!(cpc("google_ads") > cpc("tiktok_ads"));
    let per_row = |k: (bool, bool)| week[&k].0 as f64 / week[&k].1 as f64;
    assert!(
        per_row((true, true)) < 0.7 * per_row((true, false)),
        "B2B weekend dip"
    );
    assert!(
        per_row((false, true)) > per_row((false, false)),
        "retail weekend lift"
    );
}

#[test]
fn sessions_and_orders_follow_the_ads() {
    let s = Synthetic::new(config(7));
    for (c, client) in s.clients().iter().enumerate() {
        // Paid clicks per (utm_source, utm_campaign).
        let mut clicks: HashMap<(String, String), i64> = HashMap::new();
        let mut conversions = 0.0;
        for b in s.ad_performance(c, &lineage()) {
            let (src, camp) = (strings(&b, "utm_source"), strings(&b, "utm_campaign"));
            let (k, conv) = (ints(&b, "clicks"), floats(&b, "conversions"));
            for i in 0..b.num_rows() {
                *clicks
                    .entry((src.value(i).to_owned(), camp.value(i).to_owned()))
                    .or_default() += k[i];
                conversions += conv[i];
            }
        }

        let mut sessions: HashMap<(String, String), i64> = HashMap::new();
        let mut organic_rows = 0;
        for b in s.web_sessions(c, &lineage()) {
            assert_eq!(b.schema(), WEB_SESSIONS.schema());
            let (src, med, camp) = (
                strings(&b, "source"),
                strings(&b, "medium"),
                strings(&b, "campaign"),
            );
            let (n, engaged, key_events) = (
                ints(&b, "sessions"),
                ints(&b, "engaged_sessions"),
                floats(&b, "key_events"),
            );
            for i in 0..b.num_rows() {
                assert!(engaged[i] <= n[i] && n[i] > 0);
                assert!(key_events[i] >= 0.0);
                if med.value(i) == "cpc" || med.value(i) == "paid_social" {
                    *sessions
                        .entry((src.value(i).to_owned(), camp.value(i).to_owned()))
                        .or_default() += n[i];
                } else {
                    organic_rows += 1;
                }
            }
            assert!(
                strings(&b, "currency")
                    .iter()
                    .all(|v| v == Some(client.currency.as_str()))
            );
        }
        assert!(organic_rows > 0);
        let total_clicks: i64 = clicks.values().sum();
        let total_sessions: i64 = sessions.values().sum();
        let ratio = total_sessions as f64 / total_clicks as f64;
        assert!(
            (0.78..=0.97).contains(&ratio),
            "{}: sessions/clicks {ratio}",
            client.id
        );
        for key in sessions.keys() {
            assert!(clicks.contains_key(key), "GA4 campaign {key:?} has no ads");
        }

        let mut order_ids = HashSet::new();
        let mut paid_orders = 0;
        let mut statuses: HashMap<String, usize> = HashMap::new();
        let mut orders = 0;
        for b in s.orders(c, &lineage()) {
            assert_eq!(b.schema(), ORDERS.schema());
            let ids = strings(&b, "order_id");
            let medium = strings(&b, "utm_medium");
            let campaign = strings(&b, "utm_campaign");
            let source = strings(&b, "utm_source");
            let keys = strings(&b, "customer_key");
            let status = strings(&b, "financial_status");
            let created = b
                .column_by_name("created_at")
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>();
            let (total, subtotal) = (money(&b, "total_price"), money(&b, "subtotal_price"));
            for (i, date) in dates(&b).into_iter().enumerate() {
                orders += 1;
                assert!(
                    order_ids.insert(ids.value(i).to_owned()),
                    "duplicate order id"
                );
                let key = keys.value(i);
                assert_eq!(key.len(), 64);
                assert!(key.chars().all(|ch| ch.is_ascii_hexdigit()) && !key.contains('@'));
                assert!(total[i] >= subtotal[i] && subtotal[i] > 0);
                // created_at is UTC; in the shop's zone it falls on the order date.
                let utc = DateTime::from_timestamp_micros(created.value(i)).unwrap();
                let local = client.time_zone.from_utc_datetime(&utc.naive_utc());
                assert_eq!(local.date_naive(), date);
                *statuses.entry(status.value(i).to_owned()).or_default() += 1;
                if medium.is_valid(i) && medium.value(i) != "email" {
                    paid_orders += 1;
                    let key = (source.value(i).to_owned(), campaign.value(i).to_owned());
                    assert!(clicks.contains_key(&key), "order UTM {key:?} has no ads");
                }
            }
        }
        assert!(orders > 0);
        assert!(statuses["paid"] * 10 > orders * 8, "{statuses:?}");
        // Shop orders from ads stay below what the platforms claim.
        let claimed = conversions;
        assert!(
            (paid_orders as f64) < claimed && (paid_orders as f64) > 0.35 * claimed,
            "{}: {paid_orders} paid orders for {claimed} conversions",
            client.id
        );
    }
}

#[test]
fn fx_rates_cover_every_currency_against_usd_and_eur() {
    let s = Synthetic::new(SyntheticConfig {
        clients: 20,
        ..config(8)
    });
    let mut rates: HashMap<(NaiveDate, String, String), f64> = HashMap::new();
    for b in s.fx_rates() {
        assert_eq!(b.schema(), FX_RATES.schema());
        let (base, quote, rate) = (
            strings(&b, "base"),
            strings(&b, "quote"),
            floats(&b, "rate"),
        );
        for (i, d) in dates(&b).into_iter().enumerate() {
            assert!(rate[i] > 0.0);
            let previous = rates.insert(
                (d, base.value(i).to_owned(), quote.value(i).to_owned()),
                rate[i],
            );
            assert!(previous.is_none(), "duplicate fx row");
        }
    }
    let (first, last) = s.date_range().unwrap();
    for currency in s.currencies() {
        for anchor in ["USD", "EUR"] {
            if currency == anchor {
                continue;
            }
            for day in first.iter_days().take_while(|d| *d <= last) {
                let there = rates[&(day, currency.clone(), anchor.to_owned())];
                let back = rates[&(day, anchor.to_owned(), currency.clone())];
                assert!((there * back - 1.0).abs() < 1e-3, "{currency}/{anchor}");
            }
        }
    }
    // A small walk: EUR/USD stays near its start and moves day to day.
    let eur: Vec<f64> = first
        .iter_days()
        .take(s.config().days as usize)
        .map(|d| rates[&(d, "EUR".to_owned(), "USD".to_owned())])
        .collect();
    assert!(eur.iter().all(|r| (0.9..1.3).contains(r)), "{eur:?}");
    assert!(eur.windows(2).all(|w| (w[1] / w[0] - 1.0).abs() < 0.03));
    assert!(eur.windows(2).any(|w| w[0] != w[1]));
}

#[test]
fn batches_are_bounded_and_lazy() {
    let s = Synthetic::new(config(9)).with_batch_rows(1_000);
    let mut ad_batches = 0;
    for c in 0..s.clients().len() {
        for b in s.ad_performance(c, &lineage()) {
            assert!(b.num_rows() <= 1_000 && b.num_rows() > 0);
            ad_batches += 1;
        }
        for b in s.web_sessions(c, &lineage()).chain(s.orders(c, &lineage())) {
            assert!(b.num_rows() <= 1_000 && b.num_rows() > 0);
        }
    }
    assert!(ad_batches >= 40, "{ad_batches}");
    for b in s.fx_rates() {
        assert!(b.num_rows() <= 1_000);
    }
    // Batches are produced on demand: taking one batch of a large client's
    // data does not generate the rest.
    let big = Synthetic::new(SyntheticConfig {
        clients: 1,
        rows: 5_000_000,
        ..config(9)
    })
    .with_batch_rows(100);
    let start = std::time::Instant::now();
    let first = big.ad_performance(0, &lineage()).next().unwrap();
    assert_eq!(first.num_rows(), 100);
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn lineage_columns_carry_the_run() {
    let s = Synthetic::new(config(10));
    let l = lineage();
    let b = s.ad_performance(0, &l).next().unwrap();
    assert!(strings(&b, "_run_id").iter().all(|v| v == Some("test-run")));
    assert!(
        strings(&b, "_source")
            .iter()
            .all(|v| v == Some(SYNTHETIC_SOURCE))
    );
    let at = b
        .column_by_name("_ingested_at")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    assert!(
        at.values()
            .iter()
            .all(|v| *v == l.ingested_at.timestamp_micros())
    );
}

#[test]
fn invalid_configs_are_rejected_with_a_reason() {
    let bad = |f: fn(&mut SyntheticConfig)| {
        let mut c = config(1);
        f(&mut c);
        c.validate().unwrap_err().to_string()
    };
    assert!(bad(|c| c.clients = 0).contains("clients"));
    assert!(bad(|c| c.days = 0).contains("days"));
    assert!(bad(|c| c.rows = 0).contains("rows"));
    let empty = Synthetic::new(SyntheticConfig {
        days: 0,
        ..config(1)
    });
    assert!(empty.clients().is_empty());
    assert_eq!(empty.fx_rates().count(), 0);
}
