//! Per-platform paging, rate-limit signals, 5xx bursts, report runs, errors
//! inside a SearchStream, and giving up cleanly. Expected numbers are read
//! off the payloads below by hand.

use super::*;

/// The ad rows of one platform, without lineage columns.
async fn platform_rows(s: &Setup, platform: &str) -> Vec<String> {
    rows(
        &s.warehouse,
        &AD_PERFORMANCE,
        &format!(
            "SELECT client_id, CAST(date AS VARCHAR) AS date_text, account_id, campaign_id, ad_group_id, ad_id, \
             CAST(spend AS VARCHAR) AS spend_text, impressions, clicks, conversions, \
             CAST(conversion_value AS VARCHAR) AS conversion_value_text, currency \
             FROM t WHERE platform = '{platform}' ORDER BY date, ad_group_id, ad_id"
        ),
    )
    .await
}

async fn sorted_rows(s: &Setup, table: &TableDef) -> Vec<String> {
    let mut all = rows(&s.warehouse, table, "SELECT * FROM t").await;
    all.sort();
    all
}

async fn run_row(s: &Setup, run_id: &str) -> Vec<String> {
    rows(
        &s.warehouse,
        &INGEST_RUNS,
        &format!(
            "SELECT status, rows_written, rows_quarantined, array_to_string(source_request_ids, ',') \
             FROM t WHERE status <> 'started' AND run_id = '{run_id}'"
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_long_ranges_go_through_an_async_report_run() {
    let server = FakePlatform::start().await;
    let base = server.base();
    server.route(
        "POST",
        META_PATH,
        None,
        vec![Resp::json(
            400,
            r#"{"error":{"message":"(#17) User request limit reached","type":"OAuthException","code":17}}"#,
        )],
        Some(Resp::json(200, r#"{"report_run_id":"6200001"}"#).header("x-fb-trace-id", "fb-run")),
    );
    server.route(
        "GET",
        "/v21.0/6200001",
        None,
        vec![Resp::json(
            200,
            r#"{"id":"6200001","async_status":"Job Running","async_percent_completion":40}"#,
        )],
        Some(Resp::json(
            200,
            r#"{"id":"6200001","async_status":"Job Completed","async_percent_completion":100}"#,
        )),
    );
    let bad_type =
        meta_row("2025-06-20", "3006", "5.00").replace(r#""spend":"5.00""#, r#""spend":true"#);
    let bad_currency = meta_row("2025-06-21", "3007", "1.00").replace(r#""USD""#, r#""XYZ""#);
    server.route(
        "GET",
        "/v21.0/6200001/insights",
        Some("after=p2"),
        vec![],
        Some(
            Resp::json(
                200,
                &meta_page(
                    &format!(
                        "{},{bad_type},{bad_currency}",
                        meta_row("2025-06-30", "3005", "1.10")
                    ),
                    None,
                ),
            )
            .header("x-fb-trace-id", "fb-p2"),
        ),
    );
    server.route(
        "GET",
        "/v21.0/6200001/insights",
        None,
        vec![],
        Some(
            Resp::json(
                200,
                &meta_page(
                    &format!(
                        "{},{}",
                        meta_row("2025-06-01", "3001", "10.25"),
                        meta_row("2025-06-15", "3004", "0.99")
                    ),
                    Some(&format!("{base}/v21.0/6200001/insights?limit=500&after=p2")),
                ),
            )
            .header("x-fb-trace-id", "fb-p1")
            // 95% of the app's call budget used: the fetch paces itself.
            .header(
                "x-app-usage",
                r#"{"call_count":95,"total_cputime":10,"total_time":10}"#,
            ),
        ),
    );
    let s = setup(&server);
    // 30 days: one chunk (Meta accepts 30), past the synchronous limit.
    let r = backfill(
        &s,
        "northwind",
        SourceKind::MetaAds,
        "2025-06-01",
        "2025-06-30",
    )
    .await;
    assert!(r.succeeded(), "{r:?}");
    let expected = [
        "northwind|2025-06-01|1001|238500000000000011|238500000000000022|3001|10.250000|1000|20|2.0|80.500000|USD",
        "northwind|2025-06-15|1001|238500000000000011|238500000000000022|3004|0.990000|1000|20|2.0|80.500000|USD",
        "northwind|2025-06-30|1001|238500000000000011|238500000000000022|3005|1.100000|1000|20|2.0|80.500000|USD",
    ];
    assert_eq!(platform_rows(&s, "meta_ads").await, expected);
    assert_eq!(
        run_row(&s, &r.run_id).await,
        ["succeeded|3|2|fb-run,fb-p1,fb-p2"]
    );
    assert_eq!(
        rows(
            &s.warehouse,
            &QUARANTINE,
            "SELECT source, reason FROM t ORDER BY reason"
        )
        .await,
        [
            "meta_ads|field 'spend': expected a number, got a boolean",
            "meta_ads|unknown currency 'XYZ'",
        ]
    );
    // Throttled start retried; two status polls; two pages; no sync call.
    assert_eq!(server.hits("POST", META_PATH), 2);
    assert_eq!(server.hits("GET", "/v21.0/6200001"), 2);
    assert_eq!(server.hits("GET", "/v21.0/6200001/insights"), 2);
    assert_eq!(server.hits("GET", META_PATH), 0);

    // A failed report run fails the job and keeps the slice.
    server.route(
        "GET",
        "/v21.0/6200001",
        None,
        vec![],
        Some(Resp::json(
            200,
            r#"{"id":"6200001","async_status":"Job Failed","async_percent_completion":0}"#,
        )),
    );
    let version_before = version(&s.warehouse, &AD_PERFORMANCE).await;
    let r = backfill(
        &s,
        "northwind",
        SourceKind::MetaAds,
        "2025-06-01",
        "2025-06-30",
    )
    .await;
    let e = r.error.unwrap();
    assert!(
        e.contains("report run 6200001 ended with status 'Job Failed'"),
        "{e}"
    );
    assert!(e.contains("a retry later can help"), "{e}");
    assert_eq!(platform_rows(&s, "meta_ads").await, expected);
    assert_eq!(version(&s.warehouse, &AD_PERFORMANCE).await, version_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linkedin_follows_next_links_and_reads_the_local_currency() {
    let server = FakePlatform::start().await;
    let range = |d: u32| {
        format!(
            r#""dateRange":{{"start":{{"year":2023,"month":1,"day":{d}}},"end":{{"year":2023,"month":1,"day":{d}}}}}"#
        )
    };
    let page1 = format!(
        r#"{{"paging":{{"start":0,"count":2,"links":[{{"rel":"next","type":"application/json","href":"/rest/adAnalytics?q=analytics&start=2&count=2"}}]}},
        "elements":[
          {{"clicks":100,"impressions":19090,"pivotValues":["urn:li:sponsoredCampaign:1111"],"costInUsd":"209.449","costInLocalCurrency":"193.12",
            "externalWebsiteConversions":4,"conversionValueInLocalCurrency":"250.5",{}}},
          {{"clicks":3,"impressions":0,"pivotValues":["urn:li:sponsoredCampaign:2222"],"costInUsd":"0","costInLocalCurrency":"-2E-18",{}}}
        ]}}"#,
        range(2),
        range(2)
    );
    let page2 = format!(
        r#"{{"paging":{{"start":2,"count":2,"links":[{{"rel":"prev","href":"/rest/adAnalytics?q=analytics&start=0&count=2"}}]}},
        "elements":[{{"clicks":408,"impressions":20210,"pivotValues":["urn:li:sponsoredCampaign:1111"],"costInUsd":"509.980","costInLocalCurrency":"470.35",{}}}]}}"#,
        range(3)
    );
    server.route(
        "GET",
        LINKEDIN_PATH,
        Some("start=2"),
        vec![Resp::json(
            500,
            r#"{"status":500,"message":"Internal Server Error"}"#,
        )],
        Some(Resp::json(200, &page2).header("x-li-uuid", "li-p2")),
    );
    server.route(
        "GET",
        LINKEDIN_PATH,
        None,
        vec![],
        Some(Resp::json(200, &page1).header("x-li-uuid", "li-p1")),
    );
    let s = setup(&server);
    let r = backfill(
        &s,
        "contoso",
        SourceKind::LinkedinAds,
        "2023-01-02",
        "2023-01-03",
    )
    .await;
    assert!(r.succeeded(), "{r:?}");
    // Local cost, never costInUsd; "-2E-18" is zero; clicks may exceed
    // impressions on LinkedIn; the campaign stands for the campaign group.
    let expected = [
        "contoso|2023-01-02|508720|1111|1111||193.120000|19090|100|4.0|250.500000|EUR",
        "contoso|2023-01-02|508720|2222|2222||0.000000|0|3|0.0|0.000000|EUR",
        "contoso|2023-01-03|508720|1111|1111||470.350000|20210|408|0.0|0.000000|EUR",
    ];
    assert_eq!(platform_rows(&s, "linkedin_ads").await, expected);
    assert_eq!(run_row(&s, &r.run_id).await, ["succeeded|3|0|li-p1,li-p2"]);
    // Page two failed once (500) and was retried: 1 + 2 calls.
    assert_eq!(server.hits("GET", LINKEDIN_PATH), 3);

    // Page two down for good: the job fails and the slice keeps its rows.
    server.route(
        "GET",
        LINKEDIN_PATH,
        Some("start=2"),
        vec![],
        Some(Resp::json(503, "{}")),
    );
    let version_before = version(&s.warehouse, &AD_PERFORMANCE).await;
    let r = backfill(
        &s,
        "contoso",
        SourceKind::LinkedinAds,
        "2023-01-02",
        "2023-01-03",
    )
    .await;
    assert!(r.error.unwrap().contains("gave up after 3 attempts"));
    assert_eq!(platform_rows(&s, "linkedin_ads").await, expected);
    assert_eq!(version(&s.warehouse, &AD_PERFORMANCE).await, version_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiktok_pages_by_page_info_and_backs_off_on_its_rate_limit_codes() {
    let server = FakePlatform::start().await;
    let page1 = r#"{"code":0,"message":"OK","request_id":"tt-p1","data":{"page_info":{"page":1,"page_size":1000,"total_number":3,"total_page":2},"list":[
      {"dimensions":{"ad_id":"555","stat_time_day":"2024-03-01 00:00:00"},"metrics":{"campaign_id":"77","campaign_name":"C","adgroup_name":"G","ad_name":"A","spend":"12.50","impressions":"1000","clicks":"10","conversion":"-","total_purchase_value":null}},
      {"dimensions":{"ad_id":"556","stat_time_day":"2024-03-01 00:00:00"},"metrics":{"campaign_id":"77","spend":"3","impressions":"200","clicks":"2","conversion":"1","total_purchase_value":"19.99"}}]}}"#;
    let page2 = r#"{"code":0,"message":"OK","request_id":"tt-p2","data":{"page_info":{"page":2,"page_size":1000,"total_number":3,"total_page":2},"list":[
      {"dimensions":{"ad_id":"555","stat_time_day":"2024-03-02 00:00:00"},"metrics":{"campaign_id":"77","spend":"7.25","impressions":"500","clicks":"5","conversion":"2","total_purchase_value":"40.00"}}]}}"#;
    server.route(
        "GET",
        TIKTOK_PATH,
        Some("page=2&"),
        vec![Resp::json(
            200,
            r#"{"code":40133,"message":"The request frequency exceeds the limit","request_id":"tt-limit","data":{}}"#,
        )],
        Some(Resp::json(200, page2)),
    );
    server.route(
        "GET",
        TIKTOK_PATH,
        Some("page=1&"),
        vec![],
        Some(Resp::json(200, page1)),
    );
    let s = setup(&server);
    let r = backfill(
        &s,
        "contoso",
        SourceKind::TiktokAds,
        "2024-03-01",
        "2024-03-02",
    )
    .await;
    assert!(r.succeeded(), "{r:?}");
    // "-" and null are missing (zero conversions, zero value); the report
    // has no currency: the configured USD.
    let expected = [
        "contoso|2024-03-01|872746382648|77||555|12.500000|1000|10|0.0|0.000000|USD",
        "contoso|2024-03-01|872746382648|77||556|3.000000|200|2|1.0|19.990000|USD",
        "contoso|2024-03-02|872746382648|77||555|7.250000|500|5|2.0|40.000000|USD",
    ];
    assert_eq!(platform_rows(&s, "tiktok_ads").await, expected);
    assert_eq!(run_row(&s, &r.run_id).await, ["succeeded|3|0|tt-p1,tt-p2"]);
    assert_eq!(server.hits("GET", TIKTOK_PATH), 3);
    assert_eq!(
        server
            .last_header("GET", TIKTOK_PATH, "access-token")
            .as_deref(),
        Some("tiktok-token")
    );

    // Re-running the same job leaves the table as it was.
    let r = backfill(
        &s,
        "contoso",
        SourceKind::TiktokAds,
        "2024-03-01",
        "2024-03-02",
    )
    .await;
    assert!(r.succeeded(), "{r:?}");
    assert_eq!(platform_rows(&s, "tiktok_ads").await, expected);

    // The limit code on every try: gives up as rate limited, slice kept.
    server.route(
        "GET",
        TIKTOK_PATH,
        Some("page=2&"),
        vec![],
        Some(Resp::json(
            200,
            r#"{"code":40100,"message":"Requests made too frequently","data":{}}"#,
        )),
    );
    let version_before = version(&s.warehouse, &AD_PERFORMANCE).await;
    let r = backfill(
        &s,
        "contoso",
        SourceKind::TiktokAds,
        "2024-03-01",
        "2024-03-02",
    )
    .await;
    let e = r.error.unwrap();
    assert!(
        e.contains("gave up after 3 attempts: code 40100") && e.contains("a retry later can help"),
        "{e}"
    );
    assert_eq!(platform_rows(&s, "tiktok_ads").await, expected);
    assert_eq!(version(&s.warehouse, &AD_PERFORMANCE).await, version_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopify_and_ga4_honour_their_limits_and_ride_out_a_5xx_burst() {
    let server = FakePlatform::start().await;
    let base = server.base();
    server.route(
        "GET",
        SHOPIFY_PATH,
        Some("page_info=2"),
        vec![],
        Some(Resp::json(200, r#"{"orders":[]}"#).header("x-request-id", "shop-2")),
    );
    server.route(
        "GET",
        SHOPIFY_PATH,
        None,
        vec![
            Resp::json(
                429,
                r#"{"errors":"Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."}"#,
            )
            .header("retry-after", "0.05"),
        ],
        Some(
            Resp::bytes(200, fixture("shopify/shopify_python_api_orders.json"))
                .header("x-shopify-shop-api-call-limit", "39/40")
                .header(
                    "link",
                    &format!("<{base}{SHOPIFY_PATH}?page_info=2>; rel=\"next\""),
                )
                .header("x-request-id", "shop-1"),
        ),
    );
    server.route(
        "POST",
        GA4_PATH,
        Some("\"offset\":\"1\""),
        vec![Resp::json(
            429,
            r#"{"error":{"code":429,"message":"Exhausted property tokens per hour.","status":"RESOURCE_EXHAUSTED"}}"#,
        )],
        Some(Resp::json(200, &ga4_page("20230111", "200", 2))),
    );
    server.route(
        "POST",
        GA4_PATH,
        None,
        vec![
            Resp::json(503, r#"{"error":{"code":503,"status":"UNAVAILABLE"}}"#),
            Resp::json(500, r#"{"error":{"code":500,"status":"INTERNAL"}}"#),
        ],
        Some(Resp::json(200, &ga4_page("20230110", "100", 2))),
    );
    let s = setup(&server);

    let shop = backfill(
        &s,
        "northwind",
        SourceKind::Shopify,
        "2008-01-10",
        "2008-01-10",
    )
    .await;
    assert!(shop.succeeded(), "{shop:?}");
    // The shared order: 598.94 total, 597.00 subtotal, 11:00 at -05:00 is
    // 16:00 UTC on the shop's 2008-01-10; e-mail only as its keyed hash
    // (HMAC-SHA256 of "bob.norman@hostmail.com" under "test-key").
    assert_eq!(
        rows(&s.warehouse, &ORDERS,
            "SELECT CAST(date AS VARCHAR) AS d, order_id, CAST(created_at AS VARCHAR) AS c, CAST(total_price AS VARCHAR) AS tp, \
             CAST(subtotal_price AS VARCHAR) AS sp, currency, customer_key FROM t").await,
        ["2008-01-10|450789469|2008-01-10T16:00:00Z|598.940000|597.000000|USD|400587f50c32db5839716a3716ab33c1efc3383ed1f4bac722c1b1b44257b0b0"]
    );
    assert_eq!(
        run_row(&s, &shop.run_id).await,
        ["succeeded|1|0|shop-1,shop-2"]
    );
    assert_eq!(server.hits("GET", SHOPIFY_PATH), 3);

    let ga4 = backfill(&s, "contoso", SourceKind::Ga4, "2023-01-10", "2023-01-11").await;
    assert!(ga4.succeeded(), "{ga4:?}");
    assert_eq!(
        rows(&s.warehouse, &WEB_SESSIONS,
            "SELECT CAST(date AS VARCHAR) AS d, property_id, source, medium, campaign, device_category, country, sessions, engaged_sessions, key_events, CAST(revenue AS VARCHAR) AS r, currency FROM t ORDER BY date").await,
        [
            "2023-01-10|987654|google|cpc|brand|mobile|Germany|100|40|2.0|120.500000|EUR",
            "2023-01-11|987654|google|cpc|brand|mobile|Germany|200|40|2.0|120.500000|EUR",
        ]
    );
    // Page one: 503, 500, then 200; page two: 429 then 200.
    assert_eq!(server.hits("POST", GA4_PATH), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connector_gives_up_cleanly_and_keeps_its_slice() {
    let server = FakePlatform::start().await;
    server.token_replies(&["tok-1"]);
    script_all(&server);
    let s = setup(&server);
    for r in land_everything(&s).await {
        assert!(r.succeeded(), "{r:?}");
    }
    // (client, source, method, path, which call fails, range, calls made).
    // Paged sources fail on their second page: the first page must not be
    // committed alone.
    let cases = [
        (
            "northwind",
            SourceKind::GoogleAds,
            "POST",
            GOOGLE_PATH,
            None,
            ("2025-06-01", "2025-06-02"),
            3,
        ),
        (
            "northwind",
            SourceKind::MetaAds,
            "GET",
            META_PATH,
            Some("after=page2"),
            ("2025-06-01", "2025-06-02"),
            4,
        ),
        (
            "northwind",
            SourceKind::Shopify,
            "GET",
            SHOPIFY_PATH,
            Some("page_info=2"),
            ("2008-01-10", "2008-01-10"),
            4,
        ),
        (
            "contoso",
            SourceKind::TiktokAds,
            "GET",
            TIKTOK_PATH,
            None,
            ("2024-01-01", "2024-01-01"),
            3,
        ),
        (
            "contoso",
            SourceKind::LinkedinAds,
            "GET",
            LINKEDIN_PATH,
            None,
            ("2023-01-02", "2023-01-03"),
            3,
        ),
        (
            "contoso",
            SourceKind::Ga4,
            "POST",
            GA4_PATH,
            Some("\"offset\":\"1\""),
            ("2023-01-10", "2023-01-11"),
            4,
        ),
    ];
    for (client, kind, method, path, contains, (from, to), calls) in cases {
        let table = kind.table();
        let rows_before = sorted_rows(&s, table).await;
        let version_before = version(&s.warehouse, table).await;
        server.route(
            method,
            path,
            contains,
            vec![],
            Some(Resp::json(
                503,
                r#"{"error":{"code":503,"status":"UNAVAILABLE","message":"down"}}"#,
            )),
        );
        let hits = server.hits(method, path);
        let r = backfill(&s, client, kind, from, to).await;
        let e = r
            .error
            .clone()
            .unwrap_or_else(|| panic!("{kind} should fail: {r:?}"));
        assert!(
            e.contains(&format!("{client}/{kind}: gave up after 3 attempts"))
                && e.contains("a retry later can help"),
            "{kind}: {e}"
        );
        assert_eq!(server.hits(method, path) - hits, calls, "{kind}");
        assert_eq!(sorted_rows(&s, table).await, rows_before, "{kind}");
        assert_eq!(version(&s.warehouse, table).await, version_before, "{kind}");
        assert_eq!(
            rows(&s.warehouse, &INGEST_RUNS,
                &format!("SELECT client_id, source, status, rows_written, table_version IS NULL, error IS NOT NULL FROM t WHERE status <> 'started' AND run_id = '{}'", r.run_id)).await,
            [format!("{client}|{kind}|failed|0|true|true")]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_part_way_through_a_search_stream_keeps_nothing_of_it() {
    let server = FakePlatform::start().await;
    server.token_replies(&["tok-1"]);
    let row = r#"{"customer":{"id":"1234567890","currencyCode":"USD"},"campaign":{"id":"111"},"adGroup":{"id":"222"},"adGroupAd":{"ad":{"id":"333"}},
        "metrics":{"costMicros":"99000000","impressions":"5","clicks":"1"},"segments":{"date":"2025-06-01"}}"#;
    // A transient error after a first batch: the whole call is retried and
    // the first batch is not counted twice.
    server.route(
        "POST",
        GOOGLE_PATH,
        None,
        vec![Resp::json(
            200,
            &format!(
                r#"[{{"results":[{row}],"fieldMask":"x"}},{{"error":{{"code":503,"message":"The service is currently unavailable.","status":"UNAVAILABLE"}}}}]"#
            ),
        )],
        Some(Resp::json(200, &google_stream())),
    );
    let s = setup(&server);
    let r = backfill(
        &s,
        "northwind",
        SourceKind::GoogleAds,
        "2025-06-01",
        "2025-06-02",
    )
    .await;
    assert!(r.succeeded(), "{r:?}");
    // costMicros 12345678 / 1e6 and 2000000 / 1e6; the third row of the
    // stream (9 clicks on 1 impression) is quarantined.
    let expected = [
        "northwind|2025-06-01|1234567890|111|222|333|12.345678|1000|50|2.5|99.950000|USD",
        "northwind|2025-06-02|1234567890|111|222|333|2.000000|400|10|0.5|5.000000|USD",
    ];
    assert_eq!(platform_rows(&s, "google_ads").await, expected);
    assert_eq!(run_row(&s, &r.run_id).await, ["succeeded|2|1|g-stream-1"]);
    assert_eq!(server.hits("POST", GOOGLE_PATH), 2);

    // A request error after a first batch: no retry, nothing of the batch
    // lands, the slice keeps its rows.
    server.route(
        "POST",
        GOOGLE_PATH,
        None,
        vec![],
        Some(Resp::json(
            200,
            &format!(
                r#"[{{"results":[{row}],"fieldMask":"x"}},{{"error":{{"code":400,"message":"Request contains an invalid argument.","status":"INVALID_ARGUMENT",
                "details":[{{"@type":"type.googleapis.com/google.ads.googleads.v21.errors.GoogleAdsFailure","errors":[{{"errorCode":{{"queryError":"PROHIBITED_FIELD_IN_SELECT_CLAUSE"}},"message":"The field is prohibited."}}]}}]}}}}]"#
            ),
        )),
    );
    let version_before = version(&s.warehouse, &AD_PERFORMANCE).await;
    let r = backfill(
        &s,
        "northwind",
        SourceKind::GoogleAds,
        "2025-06-01",
        "2025-06-02",
    )
    .await;
    let e = r.error.unwrap();
    assert!(
        e.contains("INVALID_ARGUMENT")
            && e.contains("queryError=PROHIBITED_FIELD_IN_SELECT_CLAUSE: The field is prohibited.")
            && e.contains("a retry cannot help"),
        "{e}"
    );
    assert_eq!(server.hits("POST", GOOGLE_PATH), 3);
    assert_eq!(platform_rows(&s, "google_ads").await, expected);
    assert_eq!(version(&s.warehouse, &AD_PERFORMANCE).await, version_before);
}
