//! The per-platform limit on requests in flight, Shopify's shop-local
//! dates, and quarantine rows replaced per (client, source, requested
//! range) slice. Expected values are worked out by hand in the comments.

use adlake_ingest::http::{Call, Credentials, classify_status};
use adlake_ingest::jobs::Job;
use adlake_ingest::writer::Trigger;

use super::*;

const EMPTY_TIKTOK: &str =
    r#"{"code":0,"message":"OK","data":{"list":[],"page_info":{"page":1,"total_page":1}}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_the_platform_limit_of_requests_is_in_flight() {
    // Every answer takes 150 ms, so calls that are let through together
    // overlap at the server.
    let slow = Duration::from_millis(150);
    let server = FakePlatform::start().await;
    server.route(
        "GET",
        TIKTOK_PATH,
        None,
        vec![],
        Some(Resp::json(200, EMPTY_TIKTOK).delay(slow)),
    );
    server.route(
        "GET",
        META_PATH,
        None,
        vec![],
        Some(Resp::json(200, r#"{"data":[]}"#).delay(slow)),
    );
    // The HTTP layer: 8 calls to each of two platforms at once, with a
    // limit of 2 per platform (`http_config`).
    let http = HttpClient::new(http_config()).unwrap();
    assert_eq!(http.config().platform_concurrency, 2);
    let creds = Credentials {
        access_token: Some("token".to_owned()),
        ..Credentials::default()
    };
    let calls = (0..16).map(|i| {
        let (platform, path) = if i % 2 == 0 {
            ("tiktok_ads", TIKTOK_PATH)
        } else {
            ("meta_ads", META_PATH)
        };
        let call = Call::get(format!("{}{path}", server.base()));
        let (http, creds) = (&http, &creds);
        async move {
            http.send(
                &format!("client-{i}/{platform}"),
                platform,
                "token",
                creds,
                &call,
                classify_status,
            )
            .await
        }
    });
    for reply in futures::future::join_all(calls).await {
        assert!(reply.is_ok(), "{reply:?}");
    }
    assert_eq!(server.hits("GET", TIKTOK_PATH), 8);
    assert_eq!(server.hits("GET", META_PATH), 8);
    // Exactly 2 at once per platform: more would break the limit, fewer
    // would mean the calls were not concurrent at all.
    assert_eq!(server.max_in_flight(Some(TIKTOK_PATH)), 2);
    assert_eq!(server.max_in_flight(Some(META_PATH)), 2);
    // The limit is per platform, not global: both ran at once (2 + 2).
    assert_eq!(server.max_in_flight(None), 4);

    // Jobs: six one-day TikTok jobs of one client through `run_jobs`, four
    // jobs at a time (the ingestor's default) but two calls to TikTok.
    let server = FakePlatform::start().await;
    server.route(
        "GET",
        TIKTOK_PATH,
        None,
        vec![],
        Some(Resp::json(200, EMPTY_TIKTOK).delay(slow)),
    );
    let s = setup(&server);
    let client = s.config.client("contoso").unwrap().clone();
    let source = client
        .sources
        .iter()
        .find(|x| x.kind == SourceKind::TiktokAds)
        .unwrap()
        .clone();
    let jobs: Vec<Job> = (1..=6)
        .map(|d| Job {
            client: client.clone(),
            source: source.clone(),
            from: NaiveDate::from_ymd_opt(2024, 1, d).unwrap(),
            to: NaiveDate::from_ymd_opt(2024, 1, d).unwrap(),
            trigger: Trigger::Manual,
        })
        .collect();
    for r in s.ingestor.run_jobs(jobs).await {
        assert!(r.succeeded(), "{r:?}");
    }
    assert_eq!(server.hits("GET", TIKTOK_PATH), 6);
    assert_eq!(server.max_in_flight(Some(TIKTOK_PATH)), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopify_orders_land_on_the_shop_local_date() {
    let server = FakePlatform::start().await;
    // An order with personal data the fetch does not ask for: the fake,
    // like Shopify, answers only the `fields=` asked for.
    let orders = r#"{"orders":[{"id":7001,"created_at":"2025-06-01T23:30:00-04:00","currency":"USD",
        "total_price":"20.00","subtotal_price":"18.00","financial_status":"paid","email":"ann@example.com",
        "phone":"+1 555 0100","billing_address":{"city":"Ottawa"},"browser_ip":"203.0.113.9"}]}"#;
    server.route(
        "GET",
        SHOPIFY_PATH,
        None,
        vec![],
        Some(Resp::json(200, orders)),
    );
    let s = setup(&server);
    let shop_path = "/admin/api/2024-10/shop.json";
    let landed = |s: &Setup| {
        let warehouse = s.warehouse.clone();
        async move {
            rows(
                &warehouse,
                &ORDERS,
                "SELECT CAST(date AS VARCHAR) AS d, order_id, CAST(created_at AS VARCHAR) AS c, CAST(total_price AS VARCHAR) AS tp FROM t",
            )
            .await
        }
    };

    // The shop in New York (the fake's default): 23:30 at UTC-4 (EDT) is
    // 03:30 UTC on June 2 but still June 1 in the shop.
    let r = backfill(
        &s,
        "northwind",
        SourceKind::Shopify,
        "2025-06-01",
        "2025-06-02",
    )
    .await;
    assert!(r.succeeded(), "{r:?}");
    assert_eq!(r.rows_quarantined, 0, "{r:?}");
    assert_eq!(
        landed(&s).await,
        ["2025-06-01|7001|2025-06-02T03:30:00Z|20.000000"]
    );
    assert_eq!(server.hits("GET", shop_path), 1, "one look-up per job");

    // The shop's zone is Berlin while the timestamp says -04:00: the
    // shop's zone wins. 03:30 UTC is 05:30 in Berlin (UTC+2): June 2.
    server.shop_time_zone("Europe/Berlin");
    let r = backfill(
        &s,
        "northwind",
        SourceKind::Shopify,
        "2025-06-01",
        "2025-06-02",
    )
    .await;
    assert!(r.succeeded(), "{r:?}");
    assert_eq!(
        landed(&s).await,
        ["2025-06-02|7001|2025-06-02T03:30:00Z|20.000000"]
    );
    assert_eq!(server.hits("GET", shop_path), 2);

    // A shop.json that names no zone fails the job clearly; the orders
    // stay as they were.
    server.route(
        "GET",
        shop_path,
        None,
        vec![],
        Some(Resp::json(200, r#"{"shop":{"id":1}}"#)),
    );
    let r = backfill(
        &s,
        "northwind",
        SourceKind::Shopify,
        "2025-06-01",
        "2025-06-02",
    )
    .await;
    let error = r.error.clone().unwrap_or_default();
    assert!(error.contains("shop.iana_timezone"), "{r:?}");
    assert_eq!(
        landed(&s).await,
        ["2025-06-02|7001|2025-06-02T03:30:00Z|20.000000"]
    );
}

/// The quarantine rows of one client and source.
async fn quarantined(s: &Setup, client: &str, source: &str) -> Vec<String> {
    rows(
        &s.warehouse,
        &QUARANTINE,
        &format!(
            "SELECT CAST(date_from AS VARCHAR) AS f, CAST(date_to AS VARCHAR) AS t, reason FROM t \
             WHERE client_id = '{client}' AND source = '{source}' ORDER BY date_from, date_to, reason"
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_rows_are_replaced_per_slice_not_appended() {
    let server = FakePlatform::start().await;
    server.token_replies(&["tok-1"]);
    script_all(&server);
    let s = setup(&server);
    let clicks = "clicks (9) exceed impressions (1)";

    // The Google stream has one bad row (9 clicks on 1 impression). Run
    // the same job twice: the reject is there once, from the second run.
    let first = backfill(
        &s,
        "northwind",
        SourceKind::GoogleAds,
        "2025-06-01",
        "2025-06-02",
    )
    .await;
    let second = backfill(
        &s,
        "northwind",
        SourceKind::GoogleAds,
        "2025-06-01",
        "2025-06-02",
    )
    .await;
    for r in [&first, &second] {
        assert!(r.succeeded(), "{r:?}");
        assert_eq!(r.rows_quarantined, 1);
    }
    assert_eq!(
        quarantined(&s, "northwind", "google_ads").await,
        [format!("2025-06-01|2025-06-02|{clicks}")]
    );
    assert_eq!(
        rows(
            &s.warehouse,
            &QUARANTINE,
            "SELECT run_id FROM t WHERE source = 'google_ads'"
        )
        .await,
        [second.run_id.as_str()]
    );

    // Other slices: the same source over another range (all three rows
    // of the stream fall outside June 3), and another client's source.
    let other_range = backfill(
        &s,
        "northwind",
        SourceKind::GoogleAds,
        "2025-06-03",
        "2025-06-03",
    )
    .await;
    assert_eq!(other_range.rows_quarantined, 3, "{other_range:?}");
    let outside = |d: &str| {
        format!(
            "2025-06-03|2025-06-03|date {d} outside the requested range 2025-06-03 to 2025-06-03"
        )
    };
    let linkedin = backfill(
        &s,
        "contoso",
        SourceKind::LinkedinAds,
        "2023-01-02",
        "2023-01-03",
    )
    .await;
    assert_eq!(linkedin.rows_quarantined, 2, "{linkedin:?}");
    let linkedin_row = format!("2023-01-02|2023-01-03|{LINKEDIN_EUR_WITHOUT_LOCAL_COST}");
    let linkedin_rows = [linkedin_row.clone(), linkedin_row];
    assert_eq!(
        quarantined(&s, "contoso", "linkedin_ads").await,
        linkedin_rows
    );

    // The platform fixes the row: a re-run of the first slice leaves no
    // reject of it, and the other slices keep theirs.
    let fixed = google_stream().replace(
        r#""impressions":"1","clicks":"9""#,
        r#""impressions":"10","clicks":"9""#,
    );
    assert_ne!(fixed, google_stream());
    server.route(
        "POST",
        GOOGLE_PATH,
        None,
        vec![],
        Some(Resp::json(200, &fixed)),
    );
    let clean = backfill(
        &s,
        "northwind",
        SourceKind::GoogleAds,
        "2025-06-01",
        "2025-06-02",
    )
    .await;
    assert!(clean.succeeded(), "{clean:?}");
    assert_eq!(clean.rows_quarantined, 0);
    assert_eq!(
        quarantined(&s, "northwind", "google_ads").await,
        [
            outside("2025-06-01"),
            outside("2025-06-02"),
            outside("2025-06-02"),
        ]
    );
    assert_eq!(
        quarantined(&s, "contoso", "linkedin_ads").await,
        linkedin_rows
    );

    // A run over a range that covers June 3 re-pulled it: the rejects of
    // the June 3 run are replaced too (none now: all three rows land).
    let wide = backfill(
        &s,
        "northwind",
        SourceKind::GoogleAds,
        "2025-06-01",
        "2025-06-03",
    )
    .await;
    assert!(wide.succeeded(), "{wide:?}");
    assert_eq!((wide.rows_written, wide.rows_quarantined), (3, 0));
    assert!(quarantined(&s, "northwind", "google_ads").await.is_empty());
    assert_eq!(
        quarantined(&s, "contoso", "linkedin_ads").await,
        linkedin_rows
    );
}
