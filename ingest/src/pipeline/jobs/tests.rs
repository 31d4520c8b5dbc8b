//! Job planning: daily jobs, backfill chunks, the worker's schedule. The
//! expected dates are counted by hand on a calendar.

use std::path::Path;

use chrono::TimeZone;

use super::*;

fn config() -> Config {
    Config::parse(
        r#"
[[client]]
id = "northwind"
time_zone = "America/New_York"
currency = "USD"

[[client.source]]
platform = "meta_ads"
accounts = ["act_1"]
credentials = "meta"

[[client.source]]
platform = "google_ads"
accounts = ["1"]
credentials = "google"
lookback_days = 3

[[client]]
id = "contoso"
time_zone = "Europe/Berlin"
currency = "EUR"

[[client.source]]
platform = "ga4"
accounts = ["9"]
credentials = "google"
lookback_days = 0
"#,
        Path::new("clients.toml"),
    )
    .unwrap()
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn spans(jobs: &[Job]) -> Vec<String> {
    jobs.iter()
        .map(|j| format!("{}/{} {}..{}", j.client.id, j.source.kind, j.from, j.to))
        .collect()
}

#[test]
fn daily_jobs_are_yesterday_in_the_client_zone_plus_the_lookback() {
    // 2025-06-02 02:30 UTC: 22:30 on June 1 in New York, 04:30 on June 2
    // in Berlin.
    let now = Utc.with_ymd_and_hms(2025, 6, 2, 2, 30, 0).unwrap();
    let jobs = due_jobs(&config(), now);
    assert_eq!(
        spans(&jobs),
        [
            // Yesterday is May 31 in New York; 7 days (default) before.
            "northwind/meta_ads 2025-05-24..2025-05-31",
            "northwind/google_ads 2025-05-28..2025-05-31",
            "contoso/ga4 2025-06-01..2025-06-01",
        ]
    );
    assert!(jobs.iter().all(|j| j.trigger == Trigger::Schedule));
}

#[test]
fn backfills_are_split_into_chunks_the_platform_accepts() {
    let config = config();
    // 65 days of Meta (30 days a request): Jan 1-30, Jan 31-Mar 1, Mar 2-6.
    let jobs = backfill_jobs(
        &config,
        "northwind",
        SourceKind::MetaAds,
        day("2025-01-01"),
        day("2025-03-06"),
    )
    .unwrap();
    assert_eq!(
        spans(&jobs),
        [
            "northwind/meta_ads 2025-01-01..2025-01-30",
            "northwind/meta_ads 2025-01-31..2025-03-01",
            "northwind/meta_ads 2025-03-02..2025-03-06",
        ]
    );
    assert!(jobs.iter().all(|j| j.trigger == Trigger::Backfill));
    // Exactly one chunk long, and one day.
    let one = |since, until| {
        spans(
            &backfill_jobs(
                &config,
                "northwind",
                SourceKind::GoogleAds,
                day(since),
                day(until),
            )
            .unwrap(),
        )
    };
    assert_eq!(
        one("2025-01-01", "2025-03-31"),
        ["northwind/google_ads 2025-01-01..2025-03-31"]
    );
    assert_eq!(
        one("2025-04-01", "2025-04-01"),
        ["northwind/google_ads 2025-04-01..2025-04-01"]
    );
    // Bad requests name the problem.
    let err = |client, kind, since, until| {
        backfill_jobs(&config, client, kind, day(since), day(until))
            .unwrap_err()
            .to_string()
    };
    assert!(
        err("nobody", SourceKind::Ga4, "2025-01-01", "2025-01-02")
            .contains("client 'nobody' is not configured")
    );
    assert!(
        err("contoso", SourceKind::Shopify, "2025-01-01", "2025-01-02")
            .contains("client 'contoso' has no source 'shopify'")
    );
    assert!(
        err("contoso", SourceKind::Ga4, "2025-01-03", "2025-01-02")
            .contains("--since 2025-01-03 is after --until 2025-01-02")
    );
}

#[test]
fn the_worker_pulls_yesterday_once_after_the_local_run_time() {
    let config = config();
    let run_at = NaiveTime::from_hms_opt(3, 0, 0).unwrap();
    let mut landed = HashMap::new();
    // 05:30 UTC: 01:30 in New York (too early), 07:30 in Berlin (due).
    let now = Utc.with_ymd_and_hms(2025, 6, 2, 5, 30, 0).unwrap();
    assert_eq!(
        spans(&worker_due(&config, now, run_at, &landed)),
        ["contoso/ga4 2025-06-01..2025-06-01"]
    );
    landed.insert(("contoso".to_owned(), SourceKind::Ga4), day("2025-06-01"));
    assert!(worker_due(&config, now, run_at, &landed).is_empty());
    // 07:05 UTC: 03:05 in New York; Berlin's day already landed.
    let later = Utc.with_ymd_and_hms(2025, 6, 2, 7, 5, 0).unwrap();
    assert_eq!(
        spans(&worker_due(&config, later, run_at, &landed)),
        [
            "northwind/meta_ads 2025-05-25..2025-06-01",
            "northwind/google_ads 2025-05-29..2025-06-01",
        ]
    );
    for kind in [SourceKind::MetaAds, SourceKind::GoogleAds] {
        landed.insert(("northwind".to_owned(), kind), day("2025-06-01"));
    }
    // The next Berlin day is due at 03:00 local (01:00 UTC); New York
    // (21:00 on June 2) has landed its yesterday already.
    let next_day = Utc.with_ymd_and_hms(2025, 6, 3, 1, 0, 0).unwrap();
    assert_eq!(
        spans(&worker_due(&config, next_day, run_at, &landed)),
        ["contoso/ga4 2025-06-02..2025-06-02"]
    );
}

#[test]
fn a_source_without_credentials_is_file_only() {
    // Issue 19 item 8: ingesting saved payloads (`adlake-ingest file`) must
    // not need a platform credential in the configuration.
    let config = Config::parse(
        r#"
[[client]]
id = "northwind"
time_zone = "America/New_York"
currency = "USD"

[[client.source]]
platform = "meta_ads"
accounts = ["act_1"]

[[client.source]]
platform = "google_ads"
accounts = ["1"]
credentials = "google"
"#,
        Path::new("clients.toml"),
    )
    .unwrap();
    let meta = &config.clients[0].sources[0];
    assert_eq!(
        (meta.kind, meta.credentials.as_deref()),
        (SourceKind::MetaAds, None)
    );
    // It is never fetched: no daily job, no backfill.
    let now = Utc.with_ymd_and_hms(2025, 6, 2, 12, 0, 0).unwrap();
    assert_eq!(
        spans(&due_jobs(&config, now)),
        ["northwind/google_ads 2025-05-25..2025-06-01"]
    );
    let err = backfill_jobs(
        &config,
        "northwind",
        SourceKind::MetaAds,
        day("2025-06-01"),
        day("2025-06-01"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("source 'meta_ads' has no credentials: it is file-only"),
        "{err}"
    );
    // A blank name is still a mistake, named on its line.
    let err = Config::parse(
        "[[client]]\nid = \"a\"\ntime_zone = \"UTC\"\ncurrency = \"EUR\"\n\n[[client.source]]\nplatform = \"meta_ads\"\naccounts = [\"1\"]\ncredentials = \" \"\n",
        Path::new("clients.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("clients.toml:9: credentials must name an entry"),
        "{err}"
    );
}
