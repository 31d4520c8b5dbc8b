use chrono::TimeZone;
use chrono_tz::{America, Australia, Europe};

use super::*;
use crate::writer::{GLOBAL_CLIENT, RunRecord, RunStatus, Trigger, append_run};
use chrono::NaiveDate;

fn d(month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, month, day).unwrap()
}

fn utc(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, day, hour, minute, 0).unwrap()
}

fn run(
    client: &str,
    source: &str,
    from: u32,
    to: u32,
    finished: DateTime<Utc>,
    ok: bool,
) -> RunRecord {
    RunRecord {
        run_id: format!("{client}-{source}-{from}-{to}-{}", finished.timestamp()),
        client_id: client.to_owned(),
        source: source.to_owned(),
        trigger: Trigger::Schedule,
        date_from: d(6, from),
        date_to: d(6, to),
        started_at: finished - chrono::Duration::minutes(5),
        finished_at: finished,
        status: if ok {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        },
        rows_read: 10,
        rows_written: if ok { 10 } else { 0 },
        rows_quarantined: 0,
        target_table: "ad_performance".to_owned(),
        table_version: ok.then_some(1),
        source_request_ids: Vec::new(),
        error: (!ok).then(|| "platform timeout".to_owned()),
        calls: None,
    }
}

/// The scenario of every test here, as of 2025-06-10 07:30 UTC:
/// Berlin is UTC+2 (09:30 local), Sydney UTC+10 (17:30), Vancouver UTC-7
/// (00:30 local, still June 10 there).
fn runs() -> Vec<RunRecord> {
    vec![
        // Berlin, google_ads: yesterday in at 05:00Z, before 08:00 local = 06:00Z.
        run("berlin", "google_ads", 3, 9, utc(10, 5, 0), true),
        // Berlin, meta_ads: an older run up to June 8, then June 9 at 06:30Z: late.
        run("berlin", "meta_ads", 1, 8, utc(9, 4, 0), true),
        run("berlin", "meta_ads", 3, 9, utc(10, 6, 30), true),
        // Berlin, ga4: only up to June 8; a failed run for June 9 does not count.
        run("berlin", "ga4", 2, 8, utc(9, 5, 0), true),
        run("berlin", "ga4", 3, 9, utc(10, 4, 0), false),
        // Sydney, shopify: deadline 08:00 local June 10 = 22:00Z June 9; landed 23:00Z.
        run("sydney", "shopify", 1, 9, utc(9, 23, 0), true),
        // Vancouver: up to June 8; June 9's deadline (15:00Z June 10) is ahead.
        run("vancouver", "tiktok_ads", 1, 8, utc(9, 12, 0), true),
        // FX rates are global, not a client.
        run(GLOBAL_CLIENT, "fx", 1, 9, utc(10, 1, 0), true),
    ]
}

fn zones() -> TimeZones {
    TimeZones::default()
        .with_client("berlin", Europe::Berlin)
        .with_client("sydney", Australia::Sydney)
        .with_client("vancouver", America::Vancouver)
}

fn landings(records: &[RunRecord]) -> Vec<Landing> {
    records
        .iter()
        .filter(|r| r.status == RunStatus::Succeeded)
        .map(|r| Landing {
            client_id: r.client_id.clone(),
            source: r.source.clone(),
            table: r.target_table.clone(),
            rows_written: r.rows_written,
            date_from: r.date_from,
            date_to: r.date_to,
            finished_at: r.finished_at,
        })
        .collect()
}

/// (client, source, status, landed_at, lag seconds).
type Expected = (
    &'static str,
    &'static str,
    SlaStatus,
    Option<DateTime<Utc>>,
    i64,
);

/// The expected freshness, worked out by hand.
fn expected() -> Vec<Expected> {
    vec![
        // lag: end of June 9 Berlin = 22:00Z June 9 -> 9h30 = 34200 s
        ("berlin", "ga4", SlaStatus::Missed, None, 120_600), // end of June 8 = 22:00Z June 8 -> 33h30
        (
            "berlin",
            "google_ads",
            SlaStatus::OnTime,
            Some(utc(10, 5, 0)),
            34_200,
        ),
        (
            "berlin",
            "meta_ads",
            SlaStatus::Late,
            Some(utc(10, 6, 30)),
            34_200,
        ),
        // end of June 9 Sydney = 14:00Z June 9 -> 17h30 = 63000 s
        (
            "sydney",
            "shopify",
            SlaStatus::Late,
            Some(utc(9, 23, 0)),
            63_000,
        ),
        // end of June 8 Vancouver = 07:00Z June 9 -> 24h30 = 88200 s
        ("vancouver", "tiktok_ads", SlaStatus::Pending, None, 88_200),
    ]
}

fn check(report: &[Freshness]) {
    let got: Vec<_> = report
        .iter()
        .map(|f| {
            (
                f.client_id.as_str(),
                f.source.as_str(),
                f.status,
                f.landed_at,
                f.lag_seconds,
            )
        })
        .collect();
    assert_eq!(got, expected());
    let berlin = &report[1];
    assert_eq!(berlin.expected_date, d(6, 9));
    assert_eq!(berlin.deadline, utc(10, 6, 0));
    assert_eq!(berlin.time_zone, "Europe/Berlin");
    assert_eq!(report[3].deadline, utc(9, 22, 0));
    assert_eq!(report[4].expected_date, d(6, 9));
    assert_eq!(report[4].deadline, utc(10, 15, 0));
}

#[test]
fn computes_landing_and_lag_per_client_and_source() {
    check(&compute(&landings(&runs()), &zones(), utc(10, 7, 30)));
}

#[tokio::test]
async fn reads_the_runs_back_from_ingest_runs() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
    assert!(
        report(&warehouse, &zones(), utc(10, 7, 30))
            .await
            .unwrap()
            .is_empty()
    );
    for record in runs() {
        append_run(&warehouse, &record).await.unwrap();
    }
    check(&report(&warehouse, &zones(), utc(10, 7, 30)).await.unwrap());
}

#[test]
fn zone_assignments_parse_or_say_what_is_wrong() {
    assert_eq!(
        TimeZones::parse_assignment("acme=Europe/Berlin").unwrap(),
        ("acme".to_owned(), Europe::Berlin)
    );
    assert_eq!(
        TimeZones::parse_assignment("acme").unwrap_err().to_string(),
        "invalid configuration: expected CLIENT=Area/City (e.g. acme=Europe/Berlin), got 'acme'"
    );
    assert_eq!(
        TimeZones::parse_assignment("acme=Mars/Olympus")
            .unwrap_err()
            .to_string(),
        "invalid configuration: unknown time zone 'Mars/Olympus'"
    );
}
