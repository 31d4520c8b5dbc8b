//! Parsers against the shared real payloads (read unchanged from
//! `../shared/fixtures/platform-payloads/`) and payloads built from each
//! platform's documented shape. Expected numbers were read off the files by
//! hand.

use std::path::PathBuf;

use chrono::{NaiveDate, TimeZone, Utc};

use super::*;

fn fixture(path: &str) -> Vec<u8> {
    let dir = std::env::var("ADLAKE_PLATFORM_FIXTURES").map_or_else(
        |_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/fixtures/platform-payloads")
        },
        PathBuf::from,
    );
    std::fs::read(dir.join(path)).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn ads(parsed: &Parsed) -> Vec<&AdRow> {
    parsed
        .records
        .iter()
        .map(|r| match r {
            Record::Ad(a) => a,
            other => panic!("not an ad row: {other:?}"),
        })
        .collect()
}

#[test]
fn decimals_become_exact_micros() {
    assert_eq!(decimal_to_micros("12.34"), Some(12_340_000));
    assert_eq!(decimal_to_micros("209.449"), Some(209_449_000));
    assert_eq!(decimal_to_micros("-2E-18"), Some(0));
    assert_eq!(decimal_to_micros("1e3"), Some(1_000_000_000));
    assert_eq!(decimal_to_micros("0.0000005"), Some(1));
    assert_eq!(decimal_to_micros("0.00000049"), Some(0));
    assert_eq!(decimal_to_micros("-1.5"), Some(-1_500_000));
    assert_eq!(decimal_to_micros("abc"), None);
    assert_eq!(decimal_to_micros(""), None);
    assert_eq!(decimal_to_micros("1.2.3"), None);
}

#[test]
fn google_ads_stream_rows_without_a_date_are_rejected_by_name() {
    // The shared SearchStream has 8 campaign rows and no segments.date.
    let parsed = google_ads::parse(
        &fixture("google-ads/googleads_perl_stream_search_response.json"),
        &ParseContext::new("1234567890").with_currency("USD"),
    )
    .unwrap();
    assert!(parsed.records.is_empty());
    assert_eq!(parsed.rejects.len(), 8);
    assert!(
        parsed
            .rejects
            .iter()
            .all(|r| r.reason == "missing field 'segments.date'")
    );
    assert!(parsed.rejects[0].raw.contains("111111111"));
}

#[test]
fn google_ads_paged_search_pages_are_read_alike() {
    // Three pages wrapped in one array: 3 + 3 + 2 rows.
    let parsed = google_ads::parse(
        &fixture("google-ads/googleads_perl_paged_search_response.json"),
        &ParseContext::new("1234567890"),
    )
    .unwrap();
    assert_eq!(parsed.rejects.len(), 8);
}

#[test]
fn google_ads_error_inside_the_stream_fails_the_payload() {
    let err = google_ads::parse(
        &fixture("google-ads/googleads_perl_exception_stream_search.json"),
        &ParseContext::new("1"),
    )
    .unwrap_err();
    assert!(err.contains("INVALID_ARGUMENT"), "{err}");
    assert!(
        err.contains(
            "queryError=UNRECOGNIZED_FIELD: Unrecognized field in the query: 'campaign.fake_field'."
        ),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&fixture(
        "google-ads/googleads_perl_exception_google_ads_failure.json",
    ))
    .unwrap();
    let e = google_ads::api_error(&v["error"]);
    match e.verdict {
        crate::sources::http::Verdict::Fail(m) => {
            assert!(
                m.contains("adError=BAD_SNIPPET: There is a problem with the snippet."),
                "{m}"
            )
        }
        other => panic!("a bad query is not retryable: {other:?}"),
    }
}

#[test]
fn google_ads_metrics_from_the_documented_shape() {
    let body = br#"[{"results":[
      {"customer":{"id":"1234567890","descriptiveName":"Acme","currencyCode":"EUR"},
       "campaign":{"id":"111","name":"Brand"},"adGroup":{"id":"222","name":"Exact"},
       "adGroupAd":{"ad":{"id":"333","name":"RSA 1"}},
       "metrics":{"costMicros":"12345678","impressions":"1000","clicks":"50","conversions":2.5,"conversionsValue":99.95},
       "segments":{"date":"2025-06-01"}},
      {"campaign":{"id":"111"},"metrics":{"costMicros":"1.5","impressions":"1","clicks":"0"},"segments":{"date":"2025-06-01"}}
    ],"fieldMask":"x","requestId":"req-1"},{"fieldMask":"x","requestId":"req-2"}]"#;
    let (parsed, ids) = google_ads::parse_stream(body, &ParseContext::new("123-456-7890")).unwrap();
    assert_eq!(ids, ["req-1", "req-2"]);
    let rows = ads(&parsed);
    assert_eq!(rows.len(), 1);
    let r = rows[0];
    assert_eq!(r.date, day(2025, 6, 1));
    assert_eq!(r.spend_micros, 12_345_678);
    assert_eq!((r.impressions, r.clicks), (1000, 50));
    assert_eq!(r.conversions, 2.5);
    assert_eq!(r.conversion_value_micros, 99_950_000);
    assert_eq!(r.currency, "EUR");
    assert_eq!(r.ad_group_name.as_deref(), Some("Exact"));
    assert_eq!(
        parsed.rejects[0].reason,
        "field 'metrics.costMicros': '1.5' is not a whole number"
    );
}

#[test]
fn meta_uses_one_canonical_action_never_a_sum() {
    let body = br#"{"data":[{"account_id":"1001","account_name":"Shop","account_currency":"USD",
      "campaign_id":"23850000000000001","campaign_name":"Prospecting","adset_id":"23850000000000002",
      "adset_name":"Lookalike","ad_id":"23850000000000003","ad_name":"Video",
      "date_start":"2025-06-01","date_stop":"2025-06-01","spend":"123.45","impressions":"10000","clicks":"250",
      "actions":[{"action_type":"offsite_conversion.fb_pixel_purchase","value":"3"},
                 {"action_type":"purchase","value":"3"},{"action_type":"omni_purchase","value":"3"},
                 {"action_type":"link_click","value":"240"}],
      "action_values":[{"action_type":"offsite_conversion.fb_pixel_purchase","value":"150.00"},
                       {"action_type":"omni_purchase","value":"150.00"}]}],
      "paging":{"cursors":{"before":"a","after":"b"},"next":"https://graph.facebook.com/v21.0/act_1001/insights?after=b"}}"#;
    let page = meta::parse(body, &ParseContext::new("1001")).unwrap();
    assert_eq!(
        page.next.as_deref(),
        Some("https://graph.facebook.com/v21.0/act_1001/insights?after=b")
    );
    let rows = ads(&page.parsed);
    let r = rows[0];
    assert_eq!(r.campaign_id, "23850000000000001");
    assert_eq!(r.ad_group_id.as_deref(), Some("23850000000000002"));
    assert_eq!(r.spend_micros, 123_450_000);
    assert_eq!((r.impressions, r.clicks), (10_000, 250));
    assert_eq!(r.conversions, 3.0);
    assert_eq!(r.conversion_value_micros, 150_000_000);
    let pixel = meta::parse(
        body,
        &ParseContext::new("1001").with_canonical_action("link_click"),
    )
    .unwrap();
    assert_eq!(ads(&pixel.parsed)[0].conversions, 240.0);
    assert!(meta::is_throttle_code(17) && meta::is_throttle_code(80004));
    assert!(!meta::is_throttle_code(100));
}

#[test]
fn tiktok_hourly_ad_rows_merge_into_the_day() {
    let page = tiktok::parse(
        &fixture("tiktok/airbyte_ads_reports_hourly.json"),
        &ParseContext::new("872746382648").with_currency("USD"),
    )
    .unwrap();
    assert!(page.parsed.rejects.is_empty(), "{:?}", page.parsed.rejects);
    let merged = merge_ad_rows(ads(&page.parsed).into_iter().cloned().collect());
    assert_eq!(merged.len(), 1);
    let r = &merged[0];
    assert_eq!(r.date, day(2024, 1, 1));
    assert_eq!(r.account_id, "872746382648");
    assert_eq!(r.campaign_id, "1714125042508817");
    assert_eq!(r.ad_group_id.as_deref(), Some("1714125049901106"));
    assert_eq!(r.ad_id.as_deref(), Some("11111111"));
    assert_eq!(
        r.campaign_name.as_deref(),
        Some("Website Traffic20211020010104")
    );
    // 2 hours x spend "20.00", impressions "5830", clicks "69".
    assert_eq!(r.spend_micros, 40_000_000);
    assert_eq!((r.impressions, r.clicks), (11_660, 138));
    assert_eq!(r.conversions, 0.0);
    assert_eq!(r.conversion_value_micros, 0);
    assert_eq!(r.currency, "USD");
}

#[test]
fn tiktok_campaign_rows_and_missing_markers() {
    let page = tiktok::parse(
        &fixture("tiktok/airbyte_campaigns_reports_hourly.json"),
        &ParseContext::new("872746382648").with_currency("USD"),
    )
    .unwrap();
    let rows = ads(&page.parsed);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].campaign_id, "11111111");
    assert_eq!(rows[1].spend_micros, 20_000_000);
    assert_eq!((rows[1].impressions, rows[1].clicks), (4696, 51));
    // The audience report has no time dimension: every row is rejected.
    let audience = tiktok::parse(
        &fixture("tiktok/airbyte_advertisers_audience_reports_lifetime.json"),
        &ParseContext::new("872746382648").with_currency("USD"),
    )
    .unwrap();
    assert_eq!(audience.parsed.rejects.len(), 2);
    assert!(audience.parsed.rejects[0].reason.contains("stat_time_day"));
    // "-" and null are missing: zero for optional metrics, a reject for spend.
    let body = br#"{"code":0,"message":"OK","request_id":"r1","data":{"page_info":{"page":1,"total_page":1},"list":[
      {"dimensions":{"stat_time_day":"2025-06-01 00:00:00","ad_id":"9"},"metrics":{"campaign_id":"7","spend":"1.50","impressions":"10","clicks":"1","conversion":"-","total_purchase_value":null}},
      {"dimensions":{"stat_time_day":"2025-06-01 00:00:00","ad_id":"8"},"metrics":{"campaign_id":"7","spend":"-","impressions":"10","clicks":"1"}}]}}"#;
    let page = tiktok::parse(body, &ParseContext::new("1").with_currency("EUR")).unwrap();
    assert_eq!(page.request_id.as_deref(), Some("r1"));
    assert_eq!(ads(&page.parsed)[0].conversions, 0.0);
    assert_eq!(
        page.parsed.rejects[0].reason,
        "missing field 'metrics.spend'"
    );
    let err = tiktok::parse(
        br#"{"code":40100,"message":"Too many requests","data":{}}"#,
        &ParseContext::new("1"),
    )
    .unwrap_err();
    assert!(err.contains("40100"), "{err}");
}

#[test]
fn linkedin_reads_local_cost_not_usd() {
    // The campaign analytics sample carries only costInUsd: not a cost the
    // connector may use for a EUR account.
    let page = linkedin::parse(
        &fixture("linkedin/airbyte_ad_campaign_analytics_response_1.json"),
        &ParseContext::new("508720").with_currency("EUR"),
    )
    .unwrap();
    assert_eq!(page.parsed.rejects.len(), 2);
    assert!(
        page.parsed.rejects[0]
            .reason
            .starts_with("missing field 'costInLocalCurrency': "),
        "{}",
        page.parsed.rejects[0].reason
    );
    // The member-country sample has "-2E-18" local cost (zero) but no pivot.
    let page = linkedin::parse(
        &fixture("linkedin/airbyte_ad_member_country_analytics_response_1.json"),
        &ParseContext::new("508720").with_currency("EUR"),
    )
    .unwrap();
    assert_eq!(page.parsed.rejects.len(), 2);
    assert!(page.parsed.rejects[0].reason.contains("pivotValues"));
    let body = br#"{"paging":{"start":0,"count":2,"links":[{"rel":"next","href":"/rest/adAnalytics?start=2"}]},"elements":[
      {"clicks":100,"impressions":19090,"pivotValues":["urn:li:sponsoredCampaign:1111"],"costInUsd":"209.449","costInLocalCurrency":"190.12","externalWebsiteConversions":4,
       "dateRange":{"start":{"month":1,"day":2,"year":2023},"end":{"month":1,"day":2,"year":2023}}},
      {"clicks":0,"impressions":5,"pivotValues":["urn:li:sponsoredCampaign:1111"],"costInLocalCurrency":"-2E-18",
       "dateRange":{"start":{"month":1,"day":3,"year":2023},"end":{"month":1,"day":3,"year":2023}}}]}"#;
    let page = linkedin::parse(body, &ParseContext::new("508720").with_currency("EUR")).unwrap();
    assert_eq!(page.next.as_deref(), Some("/rest/adAnalytics?start=2"));
    let rows = ads(&page.parsed);
    assert_eq!(rows[0].date, day(2023, 1, 2));
    assert_eq!(rows[0].spend_micros, 190_120_000);
    assert_eq!(rows[0].campaign_id, "1111");
    assert_eq!(rows[0].ad_group_id.as_deref(), Some("1111"));
    assert_eq!(rows[0].conversions, 4.0);
    assert_eq!(rows[1].spend_micros, 0);
}

#[test]
fn ga4_reads_by_header_and_skips_totals() {
    let page = ga4::parse(
        &fixture("ga4/sitekit_report.json"),
        &ParseContext::new("123"),
    )
    .unwrap();
    // One data row (totals/maximums/minimums are not rows), without the
    // `sessions` metric this report did not ask for.
    assert_eq!(page.row_count, 364);
    assert_eq!(page.rows_in_page, 1);
    assert!(page.parsed.records.is_empty());
    assert_eq!(page.parsed.rejects[0].reason, "missing field 'sessions'");
    assert!(page.parsed.rejects[0].raw.contains("20230110"));
    let body = br#"{"dimensionHeaders":[{"name":"date"},{"name":"sessionSource"},{"name":"sessionMedium"},{"name":"sessionCampaignName"},{"name":"deviceCategory"},{"name":"country"}],
      "metricHeaders":[{"name":"sessions","type":"TYPE_INTEGER"},{"name":"engagedSessions","type":"TYPE_INTEGER"},{"name":"keyEvents","type":"TYPE_FLOAT"},{"name":"totalRevenue","type":"TYPE_CURRENCY"}],
      "rows":[{"dimensionValues":[{"value":"20230110"},{"value":"google"},{"value":"cpc"},{"value":"(not set)"},{"value":"mobile"},{"value":"Germany"}],
               "metricValues":[{"value":"120"},{"value":"80"},{"value":"3.5"},{"value":"249.9"}]}],
      "rowCount":1,"metadata":{"currencyCode":"EUR","timeZone":"Europe/Berlin"},"kind":"analyticsData#runReport"}"#;
    let page = ga4::parse(body, &ParseContext::new("123")).unwrap();
    let Record::Session(s) = &page.parsed.records[0] else {
        panic!("not a session row")
    };
    assert_eq!(s.date, day(2023, 1, 10));
    assert_eq!((s.sessions, s.engaged_sessions), (120, 80));
    assert_eq!(s.key_events, 3.5);
    assert_eq!(s.revenue_micros, 249_900_000);
    assert_eq!(s.campaign, None);
    assert_eq!(s.currency, "EUR");
    // No rows at all is an empty page, not an error.
    let empty = ga4::parse(
        br#"{"rowCount":0,"kind":"analyticsData#runReport"}"#,
        &ParseContext::new("1"),
    )
    .unwrap();
    assert!(empty.parsed.records.is_empty() && empty.parsed.rejects.is_empty());
}

#[test]
fn shopify_orders_keep_no_pii() {
    let ctx = ParseContext::new("apple").with_customer_hash_key(b"test-key".to_vec());
    let one = shopify::parse(&fixture("shopify/shopify_python_api_order.json"), &ctx).unwrap();
    let Record::Order(o) = &one.records[0] else {
        panic!("not an order")
    };
    assert_eq!(o.order_id, "450789469");
    // 2008-01-10T11:00:00-05:00 is 16:00 UTC; the shop-local date stays.
    assert_eq!(o.date, day(2008, 1, 10));
    assert_eq!(
        o.created_at,
        Utc.with_ymd_and_hms(2008, 1, 10, 16, 0, 0).unwrap()
    );
    assert_eq!(o.total_price_micros, 409_940_000);
    assert_eq!(o.subtotal_price_micros, 398_000_000);
    assert_eq!(o.financial_status.as_deref(), Some("authorized"));
    assert_eq!(o.utm, Utm::default(), "source=abc is not a UTM parameter");
    // HMAC-SHA256("test-key", "bob.norman@hostmail.com"), computed apart.
    assert_eq!(
        o.customer_key.as_deref(),
        Some("400587f50c32db5839716a3716ab33c1efc3383ed1f4bac722c1b1b44257b0b0")
    );
    for pii in ["bob", "Norman", "555-625", "Chestnut", "0.0.0.0", "4242"] {
        assert!(!o.raw.contains(pii), "raw record holds {pii}: {}", o.raw);
    }
    let list = shopify::parse(&fixture("shopify/shopify_python_api_orders.json"), &ctx).unwrap();
    let Record::Order(o) = &list.records[0] else {
        panic!("not an order")
    };
    assert_eq!(o.total_price_micros, 598_940_000);
    assert_eq!(o.subtotal_price_micros, 597_000_000);
    assert_eq!(o.financial_status.as_deref(), Some("partially_refunded"));
    let utm = shopify::utm_from_landing_site(
        "/products/x?utm_source=facebook&utm_medium=paid_social&utm_campaign=summer%20sale&fbclid=1",
    );
    assert_eq!(utm.source.as_deref(), Some("facebook"));
    assert_eq!(utm.campaign.as_deref(), Some("summer sale"));
    assert_eq!(
        shopify::next_link(r#"<https://s.myshopify.com/admin/api/2024-10/orders.json?page_info=abc>; rel="next", <https://x>; rel="previous""#).as_deref(),
        Some("https://s.myshopify.com/admin/api/2024-10/orders.json?page_info=abc")
    );
}

#[test]
fn malformed_payloads_are_errors_not_panics() {
    let ctx = ParseContext::new("1").with_currency("USD");
    for kind in SourceKind::ALL {
        assert!(parse_payload(kind, b"{not json", &ctx).is_err(), "{kind}");
        assert!(parse_payload(kind, b"42", &ctx).is_err(), "{kind}");
    }
}

#[test]
fn usage_headers_ask_for_the_right_pause() {
    use reqwest::header::{HeaderMap, HeaderValue};
    use std::time::Duration;
    let headers = |pairs: &[(&'static str, &str)]| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    };
    // Meta: low usage, no pause.
    assert_eq!(
        meta::usage_pause(&headers(&[(
            "x-app-usage",
            r#"{"call_count":12,"total_cputime":3,"total_time":5}"#
        )])),
        None
    );
    // 95% of CPU time: a minute.
    assert_eq!(
        meta::usage_pause(&headers(&[(
            "x-app-usage",
            r#"{"call_count":12,"total_cputime":95,"total_time":5}"#
        )])),
        Some(Duration::from_secs(60))
    );
    // Business use case throttled: 5 minutes to regain access wins.
    assert_eq!(
        meta::usage_pause(&headers(&[(
            "x-business-use-case-usage",
            r#"{"1001":[{"type":"ads_insights","call_count":100,"total_cputime":20,"total_time":30,"estimated_time_to_regain_access":5}]}"#
        )])),
        Some(Duration::from_secs(300))
    );
    // Ad account: reset in 42 s.
    assert_eq!(
        meta::usage_pause(&headers(&[(
            "x-ad-account-usage",
            r#"{"acc_id_util_pct":20.5,"reset_time_duration":42}"#
        )])),
        Some(Duration::from_secs(42))
    );
    // Unreadable headers are ignored, never a panic.
    assert_eq!(
        meta::usage_pause(&headers(&[("x-app-usage", "not json")])),
        None
    );

    // Shopify's bucket: 39 of 40 used, drain to 20 at 2 calls/s = 9.5 s.
    assert_eq!(
        shopify::call_limit_pause(&headers(&[("x-shopify-shop-api-call-limit", "39/40")])),
        Some(Duration::from_millis(9_500))
    );
    assert_eq!(
        shopify::call_limit_pause(&headers(&[("x-shopify-shop-api-call-limit", "31/40")])),
        None
    );
    assert_eq!(
        shopify::call_limit_pause(&headers(&[("x-shopify-shop-api-call-limit", "x/0")])),
        None
    );
}

#[test]
fn csv_exports_go_through_the_same_parsers() {
    let ctx = |account: &str| ParseContext::new(account).with_customer_hash_key(b"k".to_vec());
    // Google Ads: GAQL names; cost in micros.
    let google = "segments.date,customer.currency_code,campaign.id,ad_group.id,ad_group_ad.ad.id,metrics.cost_micros,metrics.impressions,metrics.clicks,metrics.conversions,metrics.conversions_value\n\
                  2025-06-01,USD,111,222,333,12345678,1000,50,2.5,99.95\n\
                  2025-06-02,USD,111,222,333,oops,10,1,,\n";
    let parsed =
        parse_csv_export(SourceKind::GoogleAds, google.as_bytes(), &ctx("1234567890")).unwrap();
    let rows = ads(&parsed);
    assert_eq!(rows.len(), 1);
    let r = rows[0];
    assert_eq!(
        (
            r.date,
            r.campaign_id.as_str(),
            r.ad_group_id.as_deref(),
            r.ad_id.as_deref()
        ),
        (day(2025, 6, 1), "111", Some("222"), Some("333"))
    );
    assert_eq!(
        (r.spend_micros, r.impressions, r.clicks),
        (12_345_678, 1000, 50)
    );
    assert_eq!(
        (r.conversions, r.conversion_value_micros),
        (2.5, 99_950_000)
    );
    assert_eq!(r.currency, "USD");
    assert_eq!(parsed.rejects.len(), 1);
    assert_eq!(
        parsed.rejects[0].reason,
        "field 'metrics.costMicros': 'oops' is not a whole number"
    );

    // Meta: one column per action type; only the canonical one counts.
    let meta = "date_start,date_stop,account_currency,campaign_id,adset_id,ad_id,spend,impressions,clicks,actions:omni_purchase,actions:offsite_conversion.fb_pixel_purchase,action_values:omni_purchase\n\
                2025-06-01,2025-06-01,EUR,c1,s1,a1,10.25,1000,20,2,2,80.50\n";
    let parsed = parse_csv_export(SourceKind::MetaAds, meta.as_bytes(), &ctx("1001")).unwrap();
    let r = ads(&parsed)[0];
    assert_eq!(
        (r.spend_micros, r.impressions, r.clicks),
        (10_250_000, 1000, 20)
    );
    assert_eq!(
        (r.conversions, r.conversion_value_micros),
        (2.0, 80_500_000)
    );
    assert_eq!(
        (r.account_id.as_str(), r.currency.as_str()),
        ("1001", "EUR")
    );

    // TikTok: dimensions and metrics by name; "-" is missing.
    let tiktok = "stat_time_day,ad_id,campaign_id,spend,impressions,clicks,conversion\n\
                  2024-03-01 00:00:00,555,77,12.50,1000,10,-\n";
    let parsed = parse_csv_export(
        SourceKind::TiktokAds,
        tiktok.as_bytes(),
        &ctx("872746382648").with_currency("USD"),
    )
    .unwrap();
    let r = ads(&parsed)[0];
    assert_eq!(
        (r.date, r.ad_id.as_deref(), r.campaign_id.as_str()),
        (day(2024, 3, 1), Some("555"), "77")
    );
    assert_eq!(
        (r.spend_micros, r.impressions, r.clicks, r.conversions),
        (12_500_000, 1000, 10, 0.0)
    );

    // LinkedIn: local cost, the day as a date, the URN as pivotValue.
    let linkedin = "date,pivotValue,costInLocalCurrency,costInUsd,impressions,clicks\n\
                    2023-01-02,urn:li:sponsoredCampaign:1111,193.12,209.449,19090,100\n";
    let parsed = parse_csv_export(
        SourceKind::LinkedinAds,
        linkedin.as_bytes(),
        &ctx("508720").with_currency("EUR"),
    )
    .unwrap();
    let r = ads(&parsed)[0];
    assert_eq!(
        (
            r.date,
            r.campaign_id.as_str(),
            r.spend_micros,
            r.impressions,
            r.clicks
        ),
        (day(2023, 1, 2), "1111", 193_120_000, 19_090, 100)
    );

    // GA4: metrics by name, the rest dimensions; currency from the source.
    let ga4_csv = "date,sessionSource,sessionMedium,sessions,engagedSessions,keyEvents,totalRevenue\n\
                   20230110,google,cpc,100,40,2,120.5\n";
    let parsed = parse_csv_export(
        SourceKind::Ga4,
        ga4_csv.as_bytes(),
        &ctx("987654").with_currency("EUR"),
    )
    .unwrap();
    let Record::Session(r) = &parsed.records[0] else {
        panic!("not a session row");
    };
    assert_eq!(
        (
            r.date,
            r.source.as_deref(),
            r.medium.as_deref(),
            r.sessions,
            r.engaged_sessions
        ),
        (day(2023, 1, 10), Some("google"), Some("cpc"), 100, 40)
    );
    assert_eq!(
        (r.key_events, r.revenue_micros, r.currency.as_str()),
        (2.0, 120_500_000, "EUR")
    );

    // Shopify: the e-mail only as its keyed hash; UTMs from the landing site.
    let shopify = "id,created_at,currency,total_price,subtotal_price,financial_status,landing_site,email,phone\n\
                   1001,2025-06-01T23:30:00+02:00,EUR,59.90,49.90,paid,/?utm_source=meta&utm_campaign=june,Ann@Example.com,+49 30 1234\n";
    let parsed = parse_csv_export(SourceKind::Shopify, shopify.as_bytes(), &ctx("shop")).unwrap();
    let Record::Order(o) = &parsed.records[0] else {
        panic!("not an order row");
    };
    assert_eq!((o.date, o.order_id.as_str()), (day(2025, 6, 1), "1001"));
    assert_eq!(
        o.created_at,
        Utc.with_ymd_and_hms(2025, 6, 1, 21, 30, 0).unwrap()
    );
    assert_eq!(
        (o.total_price_micros, o.subtotal_price_micros),
        (59_900_000, 49_900_000)
    );
    assert_eq!(
        (o.utm.source.as_deref(), o.utm.campaign.as_deref()),
        (Some("meta"), Some("june"))
    );
    assert_eq!(
        o.customer_key.as_deref(),
        Some(crate::pii::customer_key(b"k", "ann@example.com").as_str())
    );
    assert!(!o.raw.contains("Ann") && !o.raw.contains("1234"));

    // A ragged line is an error naming the line, not a panic.
    let err = parse_csv_export(
        SourceKind::MetaAds,
        b"date_start,campaign_id,spend,impressions,clicks\n2025-06-01\n",
        &ctx("1"),
    )
    .unwrap_err();
    assert!(err.contains("CSV line 2"), "{err}");
}

fn reasons(parsed: &Parsed) -> Vec<&str> {
    parsed.rejects.iter().map(|r| r.reason.as_str()).collect()
}

#[test]
fn every_shared_fixture_parses_without_an_unknown_field() {
    // The real payloads carry fields the connectors do not read (Google's
    // resourceName, TikTok's and LinkedIn's other metrics, LinkedIn's
    // costInUsd, Shopify's whole order): none may be sent to quarantine
    // as unknown.
    let ctx = ParseContext::new("1")
        .with_currency("USD")
        .with_customer_hash_key(b"k".to_vec());
    let cases = [
        (
            SourceKind::GoogleAds,
            "google-ads/googleads_perl_stream_search_response.json",
        ),
        (
            SourceKind::GoogleAds,
            "google-ads/googleads_perl_paged_search_response.json",
        ),
        (SourceKind::Ga4, "ga4/sitekit_report.json"),
        (
            SourceKind::LinkedinAds,
            "linkedin/airbyte_ad_campaign_analytics_response_1.json",
        ),
        (
            SourceKind::LinkedinAds,
            "linkedin/airbyte_ad_member_country_analytics_response_1.json",
        ),
        (SourceKind::Shopify, "shopify/shopify_python_api_order.json"),
        (
            SourceKind::Shopify,
            "shopify/shopify_python_api_orders.json",
        ),
        (
            SourceKind::TiktokAds,
            "tiktok/airbyte_ads_reports_hourly.json",
        ),
        (
            SourceKind::TiktokAds,
            "tiktok/airbyte_advertisers_audience_reports_lifetime.json",
        ),
        (
            SourceKind::TiktokAds,
            "tiktok/airbyte_advertisers_reports_hourly.json",
        ),
        (
            SourceKind::TiktokAds,
            "tiktok/airbyte_campaigns_reports_hourly.json",
        ),
    ];
    for (kind, path) in cases {
        let parsed = parse_payload(kind, &fixture(path), &ctx).unwrap();
        for r in &parsed.rejects {
            assert!(!r.reason.contains("unknown field"), "{path}: {}", r.reason);
        }
    }
    // Counts read off the files: the ad report has 2 hourly rows, the
    // campaign report 2 rows, all of them read.
    let tiktok = |path: &str| parse_payload(SourceKind::TiktokAds, &fixture(path), &ctx).unwrap();
    let hourly = tiktok("tiktok/airbyte_ads_reports_hourly.json");
    assert_eq!((hourly.records.len(), hourly.rejects.len()), (2, 0));
    let campaigns = tiktok("tiktok/airbyte_campaigns_reports_hourly.json");
    assert_eq!(campaigns.records.len(), 2);
    // Shopify's fetched pages ask for ORDER_FIELDS; cut down to them, the
    // real order still parses to the same numbers.
    let mut page: serde_json::Value =
        serde_json::from_slice(&fixture("shopify/shopify_python_api_orders.json")).unwrap();
    for order in page["orders"].as_array_mut().unwrap() {
        order
            .as_object_mut()
            .unwrap()
            .retain(|k, _| shopify::ORDER_FIELDS.contains(&k.as_str()));
    }
    let fetched = shopify::parse_fetched(
        &serde_json::to_vec(&page).unwrap(),
        &ctx,
        &shopify::ORDER_FIELDS,
    )
    .unwrap();
    assert!(fetched.rejects.is_empty(), "{:?}", fetched.rejects);
    let Record::Order(o) = &fetched.records[0] else {
        panic!("not an order")
    };
    assert_eq!(
        (
            o.order_id.as_str(),
            o.total_price_micros,
            o.subtotal_price_micros
        ),
        ("450789469", 598_940_000, 597_000_000)
    );
}

fn unmapped(parsed: &Parsed) -> Vec<&str> {
    parsed.unmapped.iter().map(String::as_str).collect()
}

#[test]
fn a_record_with_an_unmapped_field_lands_and_the_field_is_recorded() {
    // Issue 19 item 8: a field outside the mapping used to send its record
    // to quarantine. It is ignored now, at every level, and recorded as
    // schema drift; the record is the same as without it.
    let strip = |parsed: &Parsed| -> Vec<Record> { without_raw(&parsed.records) };

    // Google: an extra metric inside a resource object, an extra resource.
    let row = |extra: &str| {
        format!(
            r#"{{"customer":{{"resourceName":"customers/1","id":"1","currencyCode":"EUR"}},"campaign":{{"resourceName":"customers/1/campaigns/7","id":"7"}},
               "metrics":{{"costMicros":"1000000","impressions":"10","clicks":"1"{extra}}},"segments":{{"date":"2025-06-01"}}}}"#
        )
    };
    let body = format!(r#"[{{"results":[{},{}]}}]"#, row(""), row(r#","foo":"3""#));
    let parsed = google_ads::parse(body.as_bytes(), &ParseContext::new("1")).unwrap();
    assert_eq!((parsed.records.len(), reasons(&parsed)), (2, vec![]));
    assert_eq!(strip(&parsed)[0], strip(&parsed)[1]);
    assert_eq!(unmapped(&parsed), ["metrics.foo"]);
    let body = format!(
        r#"[{{"results":[{}]}}]"#,
        row("").replacen('{', r#"{"adGroupCriterion":{"id":"5"},"#, 1)
    );
    let parsed = google_ads::parse(body.as_bytes(), &ParseContext::new("1")).unwrap();
    assert_eq!((parsed.records.len(), reasons(&parsed)), (1, vec![]));
    assert_eq!(unmapped(&parsed), ["adGroupCriterion"]);

    // Meta: fields outside `fields` and the day (the issue's case:
    // `inline_link_clicks`).
    let meta_row = |extra: &str| {
        format!(
            r#"{{"account_currency":"USD","campaign_id":"1","ad_id":"2","date_start":"2025-06-01","date_stop":"2025-06-01","spend":"1.00","impressions":"10","clicks":"1"{extra}}}"#
        )
    };
    let body = format!(
        r#"{{"data":[{},{}]}}"#,
        meta_row(r#","cpm":"100","inline_link_clicks":"1""#),
        meta_row("")
    );
    let page = meta::parse(body.as_bytes(), &ParseContext::new("1")).unwrap();
    assert_eq!(
        (page.parsed.records.len(), reasons(&page.parsed)),
        (2, vec![])
    );
    assert_eq!(strip(&page.parsed)[0], strip(&page.parsed)[1]);
    assert_eq!(unmapped(&page.parsed), ["cpm", "inline_link_clicks"]);

    // TikTok: an unknown metric, and an unknown top-level key.
    let tt_row = |extra_metric: &str, extra_top: &str| {
        format!(
            r#"{{"dimensions":{{"stat_time_day":"2025-06-01 00:00:00","ad_id":"9"}},"metrics":{{"campaign_id":"7","spend":"1.5","impressions":"10","clicks":"1"{extra_metric}}}{extra_top}}}"#
        )
    };
    let body = format!(
        r#"{{"code":0,"message":"OK","data":{{"list":[{},{},{}]}}}}"#,
        tt_row("", ""),
        tt_row(r#","foo":"1""#, ""),
        tt_row("", r#","bar":1"#)
    );
    let page = tiktok::parse(
        body.as_bytes(),
        &ParseContext::new("1").with_currency("EUR"),
    )
    .unwrap();
    assert_eq!(
        (page.parsed.records.len(), reasons(&page.parsed)),
        (3, vec![])
    );
    assert_eq!(unmapped(&page.parsed), ["bar", "metrics.foo"]);

    // LinkedIn: a field outside the requested ones.
    let li_row = |extra: &str| {
        format!(
            r#"{{"impressions":10,"clicks":1,"pivotValues":["urn:li:sponsoredCampaign:1"],"costInLocalCurrency":"2.5"{extra},
               "dateRange":{{"start":{{"year":2023,"month":1,"day":2}},"end":{{"year":2023,"month":1,"day":2}}}}}}"#
        )
    };
    let body = format!(
        r#"{{"elements":[{},{}]}}"#,
        li_row(""),
        li_row(r#","videoViews":4"#)
    );
    let page = linkedin::parse(
        body.as_bytes(),
        &ParseContext::new("1").with_currency("EUR"),
    )
    .unwrap();
    assert_eq!(
        (page.parsed.records.len(), reasons(&page.parsed)),
        (2, vec![])
    );
    assert_eq!(strip(&page.parsed)[0], strip(&page.parsed)[1]);
    assert_eq!(unmapped(&page.parsed), ["videoViews"]);

    // GA4: a row with a key besides its two value lists; a column the
    // report did not ask for (read by header name, it shifts nothing).
    let ga = |extra_row: &str, extra_metric: &str, extra_value: &str| {
        format!(
            r#"{{"dimensionHeaders":[{{"name":"date"}}],"metricHeaders":[{{"name":"sessions"}}{extra_metric}],
               "rows":[{{"dimensionValues":[{{"value":"20230110"}}],"metricValues":[{{"value":"5"}}{extra_value}]}},
                       {{"dimensionValues":[{{"value":"20230111"}}],"metricValues":[{{"value":"6"}}{extra_value}]{extra_row}}}],
               "metadata":{{"currencyCode":"EUR"}}}}"#
        )
    };
    let plain = ga4::parse(ga("", "", "").as_bytes(), &ParseContext::new("1")).unwrap();
    let page = ga4::parse(
        ga(r#","foo":[]"#, "", "").as_bytes(),
        &ParseContext::new("1"),
    )
    .unwrap();
    assert_eq!(strip(&page.parsed), strip(&plain.parsed));
    assert_eq!(unmapped(&page.parsed), ["foo"]);
    let page = ga4::parse(
        ga("", r#",{"name":"bounceRate"}"#, r#",{"value":"0.5"}"#).as_bytes(),
        &ParseContext::new("1"),
    )
    .unwrap();
    assert_eq!(strip(&page.parsed), strip(&plain.parsed));
    assert_eq!(unmapped(&page.parsed), ["bounceRate"]);
    // An unrequested dimension before `date` moves the columns; values are
    // read by header name, so the rows are the same.
    let page = ga4::parse(
        br#"{"dimensionHeaders":[{"name":"deviceModel"},{"name":"date"}],"metricHeaders":[{"name":"sessions"}],
             "rows":[{"dimensionValues":[{"value":"Pixel 8"},{"value":"20230110"}],"metricValues":[{"value":"5"}]},
                     {"dimensionValues":[{"value":"iPhone"},{"value":"20230111"}],"metricValues":[{"value":"6"}]}],
             "metadata":{"currencyCode":"EUR"}}"#,
        &ParseContext::new("1"),
    )
    .unwrap();
    assert_eq!(strip(&page.parsed), strip(&plain.parsed));
    assert_eq!(unmapped(&page.parsed), ["deviceModel"]);

    // Shopify: a fetched order with a field it was not asked for lands; the
    // raw record kept is still free of personal data.
    let order = |id: &str, extra: &str| {
        format!(
            r#"{{"id":{id},"created_at":"2025-06-01T10:00:00-04:00","currency":"USD","total_price":"10.00","subtotal_price":"9.00","email":"ann@example.com"{extra}}}"#
        )
    };
    let body = format!(
        r#"{{"orders":[{},{}]}}"#,
        order("1", ""),
        order("2", r#","phone":"+1 555 0100""#)
    );
    let ctx = ParseContext::new("shop").with_customer_hash_key(b"k".to_vec());
    let parsed = shopify::parse_fetched(body.as_bytes(), &ctx, &shopify::ORDER_FIELDS).unwrap();
    assert_eq!((parsed.records.len(), reasons(&parsed)), (2, vec![]));
    assert_eq!(unmapped(&parsed), ["phone"]);
    for r in &parsed.records {
        assert!(!r.raw().contains("555"), "{}", r.raw());
    }
    // A saved payload holds the whole order resource: accepted, no drift.
    let saved = shopify::parse(body.as_bytes(), &ctx).unwrap();
    assert_eq!((saved.records.len(), saved.rejects.len()), (2, 0));
    assert!(saved.unmapped.is_empty());
}

#[test]
fn shopify_dates_are_shop_local() {
    let ctx = ParseContext::new("shop");
    let body = br#"{"orders":[{"id":1,"created_at":"2025-06-01T23:30:00-04:00","currency":"USD","total_price":"1","subtotal_price":"1"}]}"#;
    let date = |ctx: &ParseContext| shopify::parse(body, ctx).unwrap().records[0].date();
    // Without the shop's zone: the timestamp's own offset.
    assert_eq!(date(&ctx), day(2025, 6, 1));
    // New York is UTC-4 in June: 23:30 local, the same day.
    assert_eq!(
        date(&ctx.clone().with_time_zone(chrono_tz::America::New_York)),
        day(2025, 6, 1)
    );
    // 03:30 UTC on June 2 is 05:30 in Berlin (UTC+2): the shop's zone wins.
    assert_eq!(
        date(&ctx.clone().with_time_zone(chrono_tz::Europe::Berlin)),
        day(2025, 6, 2)
    );
    assert_eq!(
        shopify::parse_shop_zone(br#"{"shop":{"iana_timezone":"Europe/Berlin"}}"#),
        Ok(chrono_tz::Europe::Berlin)
    );
    let err =
        shopify::parse_shop_zone(br#"{"shop":{"iana_timezone":"Mars/Olympus"}}"#).unwrap_err();
    assert!(err.contains("Mars/Olympus"), "{err}");
    let err = shopify::parse_shop_zone(br#"{"shop":{}}"#).unwrap_err();
    assert!(err.contains("missing field 'shop.iana_timezone'"), "{err}");
}

#[test]
fn csv_exports_with_the_platforms_display_headers() {
    let ctx = |account: &str| ParseContext::new(account).with_customer_hash_key(b"k".to_vec());

    // Google Ads UI report download layout: a title line and a date-range
    // line above the header, "Total: ..." rows below, thousands
    // separators, cost in currency units, "--" for none, a BOM.
    let google = "\u{feff}Ad group report\n\
                  \"June 1, 2025 - June 2, 2025\"\n\
                  Day,Campaign,Campaign ID,Ad group,Ad group ID,Currency code,Cost,Impr.,Clicks,CTR,Conversions,Conv. value\n\
                  2025-06-01,Brand,111,Exact,222,USD,\"1,234.56\",\"12,000\",50,0.42%,2.5,99.95\n\
                  2025-06-02,Brand,111,Exact,222,USD,0.10,400,10,2.50%,--,--\n\
                  \"Total: Account\",,,,,,\"1,234.66\",\"12,400\",60,0.48%,2.5,99.95\n\
                  \"Total: Campaigns\",,,,,,\"1,234.66\",\"12,400\",60,0.48%,2.5,99.95\n";
    let parsed = parse_csv_export(
        SourceKind::GoogleAds,
        google.as_bytes(),
        &ctx("123-456-7890"),
    )
    .unwrap();
    assert!(parsed.rejects.is_empty(), "{:?}", parsed.rejects);
    let rows = ads(&parsed);
    assert_eq!(rows.len(), 2);
    // 1,234.56 currency units = 1 234 560 000 micros.
    assert_eq!(
        (
            rows[0].date,
            rows[0].campaign_id.as_str(),
            rows[0].campaign_name.as_deref()
        ),
        (day(2025, 6, 1), "111", Some("Brand"))
    );
    assert_eq!(
        (
            rows[0].ad_group_id.as_deref(),
            rows[0].ad_group_name.as_deref()
        ),
        (Some("222"), Some("Exact"))
    );
    assert_eq!(
        (
            rows[0].spend_micros,
            rows[0].impressions,
            rows[0].clicks,
            rows[0].currency.as_str()
        ),
        (1_234_560_000, 12_000, 50, "USD")
    );
    assert_eq!(
        (rows[0].conversions, rows[0].conversion_value_micros),
        (2.5, 99_950_000)
    );
    assert_eq!(
        (
            rows[1].spend_micros,
            rows[1].impressions,
            rows[1].conversions
        ),
        (100_000, 400, 0.0)
    );

    // Meta Ads Manager export layout: the currency in the spend header.
    let meta = "Reporting starts,Reporting ends,Campaign name,Campaign ID,Ad set name,Ad set ID,Ad name,Ad ID,Amount spent (EUR),Impressions,Reach,Clicks (all),Link clicks,Purchases,Purchases conversion value\n\
                2025-06-01,2025-06-01,Prospecting,c1,Lookalike,s1,Video,a1,10.25,\"1,000\",800,20,15,2,80.50\n";
    let parsed = parse_csv_export(SourceKind::MetaAds, meta.as_bytes(), &ctx("1001")).unwrap();
    assert!(parsed.rejects.is_empty(), "{:?}", parsed.rejects);
    let r = ads(&parsed)[0];
    assert_eq!(
        (
            r.date,
            r.campaign_id.as_str(),
            r.ad_group_id.as_deref(),
            r.ad_id.as_deref()
        ),
        (day(2025, 6, 1), "c1", Some("s1"), Some("a1"))
    );
    assert_eq!(
        (r.spend_micros, r.impressions, r.clicks, r.currency.as_str()),
        (10_250_000, 1000, 20, "EUR")
    );
    assert_eq!(
        (r.conversions, r.conversion_value_micros),
        (2.0, 80_500_000)
    );

    // TikTok Ads Manager custom report layout.
    let tiktok = "Date,Campaign name,Campaign ID,Ad group ID,Ad ID,Cost,Impressions,Clicks,CTR,Conversions,Currency\n\
                  2024-03-01,Spring,77,66,555,12.50,\"1,000\",10,1.00%,3,USD\n";
    let parsed = parse_csv_export(
        SourceKind::TiktokAds,
        tiktok.as_bytes(),
        &ctx("872746382648").with_currency("USD"),
    )
    .unwrap();
    assert!(parsed.rejects.is_empty(), "{:?}", parsed.rejects);
    let r = ads(&parsed)[0];
    assert_eq!(
        (
            r.date,
            r.campaign_id.as_str(),
            r.campaign_name.as_deref(),
            r.ad_id.as_deref()
        ),
        (day(2024, 3, 1), "77", Some("Spring"), Some("555"))
    );
    assert_eq!(
        (r.spend_micros, r.impressions, r.clicks, r.conversions),
        (12_500_000, 1000, 10, 3.0)
    );

    // LinkedIn Campaign Manager campaign performance layout (US dates).
    let linkedin = "Start Date (in UTC),Account Name,Campaign Group ID,Campaign Name,Campaign ID,Currency,Total Spent,Impressions,Clicks,Conversions\n\
                    1/2/2023,Acme,600,Launch,1111,EUR,193.12,\"19,090\",100,4\n";
    let parsed = parse_csv_export(
        SourceKind::LinkedinAds,
        linkedin.as_bytes(),
        &ctx("508720").with_currency("EUR"),
    )
    .unwrap();
    assert!(parsed.rejects.is_empty(), "{:?}", parsed.rejects);
    let r = ads(&parsed)[0];
    // The campaign group is the campaign, the campaign the ad group.
    assert_eq!(
        (r.date, r.campaign_id.as_str(), r.ad_group_id.as_deref()),
        (day(2023, 1, 2), "600", Some("1111"))
    );
    assert_eq!(
        (r.spend_micros, r.impressions, r.clicks, r.conversions),
        (193_120_000, 19_090, 100, 4.0)
    );

    // GA4 download layout: `#` comment lines above the header.
    let ga4_csv = "# ----------------------------------------\n\
                   # Traffic acquisition\n\
                   # Start date: 20230110\n\
                   # ----------------------------------------\n\
                   \n\
                   Date,Session source,Session medium,Session campaign,Device category,Country,Sessions,Engaged sessions,Key events,Total revenue\n\
                   20230110,google,cpc,brand,mobile,Germany,\"1,100\",400,2,120.5\n";
    let parsed = parse_csv_export(
        SourceKind::Ga4,
        ga4_csv.as_bytes(),
        &ctx("987654").with_currency("EUR"),
    )
    .unwrap();
    assert!(parsed.rejects.is_empty(), "{:?}", parsed.rejects);
    let Record::Session(r) = &parsed.records[0] else {
        panic!("not a session row");
    };
    assert_eq!(
        (
            r.date,
            r.source.as_deref(),
            r.campaign.as_deref(),
            r.country.as_deref()
        ),
        (
            day(2023, 1, 10),
            Some("google"),
            Some("brand"),
            Some("Germany")
        )
    );
    assert_eq!(
        (
            r.sessions,
            r.engaged_sessions,
            r.key_events,
            r.revenue_micros
        ),
        (1100, 400, 2.0, 120_500_000)
    );

    // Shopify orders export layout: one row per line item, the order's
    // fields on its first row only; the shop's offset in "Created at".
    let shopify = "Name,Email,Financial Status,Currency,Subtotal,Shipping,Taxes,Total,Created at,Lineitem quantity,Lineitem name,Id,Source\n\
                   #1001,ann@example.com,paid,USD,49.90,5.00,5.00,59.90,2025-06-01 23:30:00 -0400,1,Shirt,5001,web\n\
                   #1001,,,,,,,,,2,Socks,5001,\n\
                   #1002,,pending,USD,10.00,0.00,0.00,10.00,2025-06-02 08:00:00 -0400,1,Hat,5002,web\n";
    let parsed = parse_csv_export(SourceKind::Shopify, shopify.as_bytes(), &ctx("shop")).unwrap();
    assert!(parsed.rejects.is_empty(), "{:?}", parsed.rejects);
    assert_eq!(parsed.records.len(), 2);
    let Record::Order(o) = &parsed.records[0] else {
        panic!("not an order row");
    };
    assert_eq!((o.date, o.order_id.as_str()), (day(2025, 6, 1), "5001"));
    // 23:30 at UTC-4 is 03:30 UTC the next day.
    assert_eq!(
        o.created_at,
        Utc.with_ymd_and_hms(2025, 6, 2, 3, 30, 0).unwrap()
    );
    assert_eq!(
        (o.total_price_micros, o.subtotal_price_micros),
        (59_900_000, 49_900_000)
    );
    assert_eq!(
        o.customer_key.as_deref(),
        Some(crate::pii::customer_key(b"k", "ann@example.com").as_str())
    );
}

#[test]
fn a_csv_export_without_a_required_column_names_it() {
    let ctx = ParseContext::new("1").with_currency("USD");
    // A Google export without the campaign id column.
    let err = parse_csv_export(
        SourceKind::GoogleAds,
        b"Day,Campaign,Cost,Impr.,Clicks\n2025-06-01,Brand,1.00,10,1\n",
        &ctx,
    )
    .unwrap_err();
    assert!(err.contains("missing column 'Campaign ID'"), "{err}");
    assert!(err.contains("Day, Campaign, Cost, Impr., Clicks"), "{err}");
    // Meta's "Link clicks" is not the API's clicks.
    let err = parse_csv_export(
        SourceKind::MetaAds,
        b"Reporting starts,Campaign ID,Amount spent (USD),Impressions,Link clicks\n2025-06-01,c,1,10,1\n",
        &ctx,
    )
    .unwrap_err();
    assert!(err.contains("missing column 'Clicks (all)'"), "{err}");
    // A LinkedIn export with names but no ids.
    let err = parse_csv_export(
        SourceKind::LinkedinAds,
        b"Start Date (in UTC),Campaign Name,Total Spent,Impressions,Clicks\n1/2/2023,Launch,1,10,1\n",
        &ctx,
    )
    .unwrap_err();
    assert!(err.contains("missing column 'Campaign ID'"), "{err}");
    // A bad display amount names the column.
    let err = parse_csv_export(
        SourceKind::GoogleAds,
        b"Day,Campaign ID,Cost,Impr.,Clicks\n2025-06-01,1,a lot,10,1\n",
        &ctx,
    )
    .unwrap_err();
    assert!(
        err.contains("column 'Cost': 'a lot' is not an amount"),
        "{err}"
    );
    // Only a title line: no header.
    let err = parse_csv_export(SourceKind::GoogleAds, b"Campaign report\n", &ctx).unwrap_err();
    assert!(err.contains("no header row"), "{err}");
}

// ---------------------------------------------------------------------------
// Unknown fields at every level (STYLE 16; issue 19 item 8).

/// The project's own payloads, built from the platforms' documented shapes
/// (`tests/data/platform-payloads/`, one folder per platform).
fn project_fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/platform-payloads")
}

fn project_fixture(path: &str) -> Vec<u8> {
    std::fs::read(project_fixture_dir().join(path))
        .unwrap_or_else(|e| panic!("project fixture {path}: {e}"))
}

fn shared_fixture_dir() -> PathBuf {
    std::env::var("ADLAKE_PLATFORM_FIXTURES").map_or_else(
        |_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/fixtures/platform-payloads")
        },
        PathBuf::from,
    )
}

/// The platform of a fixture folder (the shared folder's names).
fn platform_of_folder(folder: &str) -> SourceKind {
    match folder {
        "google-ads" => SourceKind::GoogleAds,
        "meta" => SourceKind::MetaAds,
        "tiktok" => SourceKind::TiktokAds,
        "linkedin" => SourceKind::LinkedinAds,
        "ga4" => SourceKind::Ga4,
        "shopify" => SourceKind::Shopify,
        other => panic!("fixture folder '{other}' is of no known platform: map it here"),
    }
}

/// Every `.json` payload under `dir`, with its platform, sorted by path.
fn payload_files(dir: &std::path::Path) -> Vec<(SourceKind, PathBuf)> {
    let mut files = Vec::new();
    for folder in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let folder = folder.unwrap().path();
        if !folder.is_dir() {
            continue;
        }
        let kind = platform_of_folder(folder.file_name().unwrap().to_str().unwrap());
        for file in std::fs::read_dir(&folder).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "json") {
                files.push((kind, file));
            }
        }
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    files
}

/// Fields a platform might add, one of every JSON type. The first and last
/// names sort before and after every real key, so a parser that reads "the
/// first key" of an object is caught; the array holds an action-shaped
/// entry, so a parser that scans every list for action types is caught.
fn unknown_fields() -> Vec<(&'static str, Value)> {
    use serde_json::json;
    vec![
        ("!adlake_unknown_first", json!("first")),
        (
            "adlake_unknown_object",
            json!({"nested": {"deeper": [1, {"x": null}]}, "value": "7"}),
        ),
        (
            "adlake_unknown_array",
            json!([{"action_type": "omni_purchase", "value": "99"}, "text", 3, null]),
        ),
        ("adlake_unknown_string", json!("surprise")),
        ("adlake_unknown_number", json!(12.5)),
        ("adlake_unknown_integer", json!(-7)),
        ("adlake_unknown_bool", json!(true)),
        ("adlake_unknown_null", Value::Null),
        ("~adlake_unknown_last", json!({"value": "9"})),
    ]
}

/// Adds [`unknown_fields`] to every object of `value` (envelope, rows,
/// nested objects, objects inside arrays); returns how many objects.
fn add_unknown_fields(value: &mut Value) -> usize {
    match value {
        Value::Object(map) => {
            let inner: usize = map.values_mut().map(add_unknown_fields).sum();
            for (name, v) in unknown_fields() {
                map.insert(name.to_owned(), v);
            }
            inner + 1
        }
        Value::Array(items) => items.iter_mut().map(add_unknown_fields).sum(),
        _ => 0,
    }
}

/// Records without the raw JSON they were read from (which keeps every
/// field as received, unknown ones included).
fn without_raw(records: &[Record]) -> Vec<Record> {
    records
        .iter()
        .cloned()
        .map(|mut r| {
            match &mut r {
                Record::Ad(a) => a.raw.clear(),
                Record::Session(s) => s.raw.clear(),
                Record::Order(o) => o.raw.clear(),
            }
            r
        })
        .collect()
}

/// The unified outcome of a parse: records without raw, reject reasons.
type Unified = std::result::Result<(Vec<Record>, Vec<String>), String>;

fn unified(parsed: &std::result::Result<Parsed, String>) -> Unified {
    parsed.as_ref().map_err(Clone::clone).map(|p| {
        (
            without_raw(&p.records),
            p.rejects.iter().map(|r| r.reason.clone()).collect(),
        )
    })
}

/// Parses `body` as it is and with unknown fields added to every object;
/// asserts that the unified rows, the rejects' reasons (or the payload's
/// error) are the same. Returns the outcome of the plain parse.
fn assert_unknown_fields_change_nothing(
    kind: SourceKind,
    body: &[u8],
    ctx: &ParseContext,
    name: &str,
) -> Unified {
    let mut noisy: Value =
        serde_json::from_slice(body).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
    let objects = add_unknown_fields(&mut noisy);
    assert!(objects > 0, "{name}: no object to add fields to");
    let plain = parse_payload(kind, body, ctx);
    let with_unknown = parse_payload(kind, &serde_json::to_vec(&noisy).unwrap(), ctx);
    assert_eq!(
        unified(&with_unknown),
        unified(&plain),
        "{name} ({kind}, currency {:?}): unknown fields in {objects} objects changed the rows",
        ctx.currency
    );
    if let (Ok(p), Ok(n)) = (&plain, &with_unknown) {
        assert!(n.unmapped.is_superset(&p.unmapped), "{name}: drift lost");
    }
    unified(&plain)
}

#[test]
fn every_fixture_parses_the_same_with_unknown_fields_at_every_level() {
    let mut files = payload_files(&shared_fixture_dir());
    let shared = files.len();
    files.extend(payload_files(&project_fixture_dir()));
    // 14 shared samples (SOURCES.md) and the project's own.
    assert!(shared >= 14, "only {shared} shared fixtures found");
    assert!(files.len() > shared, "no project fixture found");
    let mut kinds = BTreeSet::new();
    let mut landed = 0;
    for (kind, path) in &files {
        kinds.insert(*kind);
        let body = std::fs::read(path).unwrap();
        let name = path.display().to_string();
        // The account currency decides LinkedIn's USD cost; try both.
        for currency in ["USD", "EUR"] {
            let ctx = ParseContext::new("1")
                .with_currency(currency)
                .with_customer_hash_key(b"k".to_vec());
            if let Ok((records, _)) =
                assert_unknown_fields_change_nothing(*kind, &body, &ctx, &name)
            {
                landed += records.len();
            }
        }
    }
    assert_eq!(
        kinds.len(),
        SourceKind::ALL.len(),
        "a platform has no fixture"
    );
    assert!(
        landed > 0,
        "no fixture yields a row: the comparison proves little"
    );
}

#[test]
fn the_project_test_payloads_parse_the_same_with_unknown_fields() {
    // The payloads the other tests write inline, through the same check.
    let usd = ParseContext::new("1")
        .with_currency("USD")
        .with_customer_hash_key(b"k".to_vec());
    let bodies: [(SourceKind, &str); 6] = [
        (
            SourceKind::GoogleAds,
            r#"[{"results":[
      {"customer":{"id":"1234567890","descriptiveName":"Acme","currencyCode":"EUR"},
       "campaign":{"id":"111","name":"Brand"},"adGroup":{"id":"222","name":"Exact"},
       "adGroupAd":{"ad":{"id":"333","name":"RSA 1"}},
       "metrics":{"costMicros":"12345678","impressions":"1000","clicks":"50","conversions":2.5,"conversionsValue":99.95},
       "segments":{"date":"2025-06-01"}},
      {"campaign":{"id":"111"},"metrics":{"costMicros":"1.5","impressions":"1","clicks":"0"},"segments":{"date":"2025-06-01"}}
    ],"fieldMask":"x","requestId":"req-1"},{"fieldMask":"x","requestId":"req-2"}]"#,
        ),
        (
            SourceKind::TiktokAds,
            r#"{"code":0,"message":"OK","request_id":"r1","data":{"page_info":{"page":1,"total_page":1},"list":[
      {"dimensions":{"stat_time_day":"2025-06-01 00:00:00","ad_id":"9"},"metrics":{"campaign_id":"7","spend":"1.50","impressions":"10","clicks":"1","conversion":"-","total_purchase_value":null}},
      {"dimensions":{"stat_time_day":"2025-06-01 00:00:00","ad_id":"8"},"metrics":{"campaign_id":"7","spend":"-","impressions":"10","clicks":"1"}}]}}"#,
        ),
        (
            SourceKind::LinkedinAds,
            r#"{"paging":{"start":0,"count":2,"links":[{"rel":"next","href":"/rest/adAnalytics?start=2"}]},"elements":[
      {"clicks":100,"impressions":19090,"pivotValues":["urn:li:sponsoredCampaign:1111"],"costInUsd":"209.449","costInLocalCurrency":"190.12","externalWebsiteConversions":4,
       "dateRange":{"start":{"month":1,"day":2,"year":2023},"end":{"month":1,"day":2,"year":2023}}},
      {"clicks":0,"impressions":5,"pivotValues":["urn:li:sponsoredCampaign:1111"],"costInLocalCurrency":"-2E-18",
       "dateRange":{"start":{"month":1,"day":3,"year":2023},"end":{"month":1,"day":3,"year":2023}}}]}"#,
        ),
        (
            SourceKind::Ga4,
            r#"{"dimensionHeaders":[{"name":"date"},{"name":"sessionSource"},{"name":"sessionMedium"},{"name":"sessionCampaignName"},{"name":"deviceCategory"},{"name":"country"}],
      "metricHeaders":[{"name":"sessions","type":"TYPE_INTEGER"},{"name":"engagedSessions","type":"TYPE_INTEGER"},{"name":"keyEvents","type":"TYPE_FLOAT"},{"name":"totalRevenue","type":"TYPE_CURRENCY"}],
      "rows":[{"dimensionValues":[{"value":"20230110"},{"value":"google"},{"value":"cpc"},{"value":"(not set)"},{"value":"mobile"},{"value":"Germany"}],
               "metricValues":[{"value":"120"},{"value":"80"},{"value":"3.5"},{"value":"249.9"}]}],
      "rowCount":1,"metadata":{"currencyCode":"EUR","timeZone":"Europe/Berlin"},"kind":"analyticsData#runReport"}"#,
        ),
        (
            SourceKind::Shopify,
            r#"{"orders":[{"id":1,"created_at":"2025-06-01T23:30:00-04:00","currency":"USD","total_price":"1","subtotal_price":"1",
      "total_price_set":{"shop_money":{"amount":"1.00","currency_code":"USD"},"presentment_money":{"amount":"0.92","currency_code":"EUR"}},
      "landing_site":"/?utm_source=google&utm_medium=cpc","email":"ann@example.com"}]}"#,
        ),
        (
            SourceKind::MetaAds,
            r#"{"data":[{"account_currency":"USD","campaign_id":"1","ad_id":"2","date_start":"2025-06-01","date_stop":"2025-06-01","spend":"1.00","impressions":"10","clicks":"1"},
      {"account_currency":"USD","campaign_id":"1","ad_id":"3","date_start":"2025-06-01","date_stop":"2025-06-02","spend":"1.00","impressions":"10","clicks":"1"}]}"#,
        ),
    ];
    for (kind, body) in bodies {
        let (records, _) =
            assert_unknown_fields_change_nothing(kind, body.as_bytes(), &usd, kind.as_str())
                .unwrap();
        assert!(!records.is_empty(), "{kind}");
    }
}

#[test]
fn meta_inline_link_clicks_costs_no_row_and_rows_without_actions_count_zero() {
    // Issue 19 item 8: the row holding 12.34 of the 15.44 spend and all 3
    // purchases carries `inline_link_clicks`; it was quarantined, and the
    // report lost 80% of its spend. The other row has no purchases, so Meta
    // leaves out `actions` and `action_values`: 0 conversions, 0 value.
    let page = meta::parse(
        &project_fixture("meta/insights_inline_link_clicks_and_a_row_without_actions.json"),
        &ParseContext::new("1001"),
    )
    .unwrap();
    assert!(
        page.parsed.rejects.is_empty(),
        "{:?}",
        reasons(&page.parsed)
    );
    assert_eq!(unmapped(&page.parsed), ["inline_link_clicks"]);
    let rows = ads(&page.parsed);
    assert_eq!(rows.len(), 2);
    let spend: i128 = rows.iter().map(|r| r.spend_micros).sum();
    assert_eq!(spend, 15_440_000);
    let (linked, plain) = (rows[0], rows[1]);
    assert_eq!(linked.ad_id.as_deref(), Some("23850000000000033"));
    assert_eq!(linked.spend_micros, 12_340_000);
    assert_eq!((linked.impressions, linked.clicks), (2500, 57));
    assert_eq!(linked.conversions, 3.0);
    assert_eq!(linked.conversion_value_micros, 89_970_000);
    assert_eq!(plain.ad_id.as_deref(), Some("23850000000000044"));
    assert_eq!(plain.spend_micros, 3_100_000);
    assert_eq!((plain.conversions, plain.conversion_value_micros), (0.0, 0));
    assert_eq!(plain.currency, "USD");
    // The same payload with the canonical type absent from the lists (a
    // row whose only actions are clicks) is also zero, not an error.
    let body = br#"{"data":[{"account_currency":"USD","campaign_id":"1","date_start":"2025-06-01","date_stop":"2025-06-01","spend":"1.00","impressions":"10","clicks":"1",
        "actions":[{"action_type":"link_click","value":"1"}]}]}"#;
    let page = meta::parse(body, &ParseContext::new("1")).unwrap();
    assert_eq!(ads(&page.parsed)[0].conversions, 0.0);
    // A list that is not a list is an unparsable value: quarantined.
    let body = br#"{"data":[{"account_currency":"USD","campaign_id":"1","date_start":"2025-06-01","date_stop":"2025-06-01","spend":"1.00","impressions":"10","clicks":"1",
        "actions":{"omni_purchase":"1"}}]}"#;
    let page = meta::parse(body, &ParseContext::new("1")).unwrap();
    assert_eq!(
        reasons(&page.parsed),
        ["field 'actions': expected an array"]
    );
}

#[test]
fn linkedin_airbyte_campaign_analytics_without_local_cost_is_handled_deliberately() {
    // Issue 19 item 9. The Airbyte sample (unchanged) carries costInUsd but
    // no costInLocalCurrency: LinkedIn returns a metric only when `fields`
    // names it, so its request did not ask for the local cost.
    let body = fixture("linkedin/airbyte_ad_campaign_analytics_response_1.json");
    // A USD account: the USD cost is the local cost; both rows land.
    let page = linkedin::parse(&body, &ParseContext::new("508720").with_currency("USD")).unwrap();
    assert!(
        page.parsed.rejects.is_empty(),
        "{:?}",
        reasons(&page.parsed)
    );
    let rows = ads(&page.parsed);
    assert_eq!(
        rows.iter()
            .map(|r| (
                r.date,
                r.campaign_id.as_str(),
                r.spend_micros,
                r.impressions,
                r.clicks
            ))
            .collect::<Vec<_>>(),
        [
            (day(2023, 1, 2), "1111", 209_449_000, 19_090, 100),
            (day(2023, 1, 3), "1111", 509_980_000, 20_210, 408),
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r.currency == "USD" && r.conversions == 0.0)
    );
    // Any other currency: the spend is unknown (never zero, never USD under
    // another currency's name); quarantined with what to do about it.
    let page = linkedin::parse(&body, &ParseContext::new("508720").with_currency("EUR")).unwrap();
    assert!(page.parsed.records.is_empty());
    assert_eq!(page.parsed.rejects.len(), 2);
    for r in &page.parsed.rejects {
        assert!(
            r.reason.starts_with(
                "missing field 'costInLocalCurrency': LinkedIn returns a metric only when the request's `fields` names it"
            ),
            "{}",
            r.reason
        );
        for hint in ["adlake-ingest backfill", "costInUsd", "currency is EUR"] {
            assert!(r.reason.contains(hint), "{hint}: {}", r.reason);
        }
        assert!(r.raw.contains("209.449") || r.raw.contains("509.980"));
    }
    // The local cost wins whenever it is there, whatever the currency.
    let page = linkedin::parse(
        &project_fixture("linkedin/ad_analytics_campaign_daily_requested_fields.json"),
        &ParseContext::new("508720").with_currency("USD"),
    )
    .unwrap();
    let rows = ads(&page.parsed);
    assert_eq!(
        rows.iter()
            .map(|r| (r.spend_micros, r.conversions, r.conversion_value_micros))
            .collect::<Vec<_>>(),
        [(190_120_000, 4.0, 320_500_000), (0, 0.0, 0)]
    );
    // Without impressions (not asked for) the row is quarantined the same way.
    let page = linkedin::parse(
        br#"{"elements":[{"clicks":1,"pivotValues":["urn:li:sponsoredCampaign:1"],"costInLocalCurrency":"2.5",
             "dateRange":{"start":{"year":2023,"month":1,"day":2},"end":{"year":2023,"month":1,"day":2}}}]}"#,
        &ParseContext::new("1").with_currency("EUR"),
    )
    .unwrap();
    assert!(
        page.parsed.rejects[0]
            .reason
            .starts_with("missing field 'impressions': LinkedIn returns a metric only when"),
        "{}",
        page.parsed.rejects[0].reason
    );
}

#[test]
fn the_linkedin_fetch_asks_for_every_field_it_reads() {
    let url = linkedin::analytics_url(
        "https://api.linkedin.com",
        "508720",
        day(2023, 1, 2),
        day(2023, 1, 3),
    );
    let fields = url
        .split_once("&fields=")
        .map(|(_, f)| f.split('&').next().unwrap_or(f))
        .unwrap_or_else(|| panic!("no fields in {url}"));
    let fields: Vec<&str> = fields.split(',').collect();
    for read in [
        "dateRange",
        "pivotValues",
        "impressions",
        "clicks",
        "costInLocalCurrency",
        "externalWebsiteConversions",
        "conversionValueInLocalCurrency",
    ] {
        assert!(fields.contains(&read), "{read} is not requested: {url}");
    }
    assert!(
        url.contains("pivot=CAMPAIGN&timeGranularity=DAILY"),
        "{url}"
    );
    assert!(
        url.contains("urn%3Ali%3AsponsoredAccount%3A508720"),
        "{url}"
    );
}

#[test]
fn a_google_error_code_is_its_enum_case_whatever_else_the_object_holds() {
    let error = serde_json::json!({"status": "INVALID_ARGUMENT", "message": "bad",
        "details": [{"errors": [{"errorCode": {"!first": "x", "queryError": "UNRECOGNIZED_FIELD", "other": {}}, "message": "m"}]}]});
    match google_ads::api_error(&error).verdict {
        crate::sources::http::Verdict::Fail(m) => {
            assert!(m.contains("queryError=UNRECOGNIZED_FIELD: m"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}
