//! What platform calls took, per run in `ingest_runs` and live per source:
//! requests sent, retries, rate-limit waits, circuit-breaker openings and
//! state; the worker's `/metrics` and its `--metrics-addr` errors.

use std::sync::Arc;

use adlake_engine::schema::INGEST_RUNS;
use adlake_ingest::http::BreakerState;
use adlake_ingest::{RunRecord, RunStatus, Trigger, append_run};
use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::Schema;

use super::*;

const ACCOUNT: &str = "contoso/linkedin_ads";

/// One LinkedIn page (no next link) with one campaign row on 2023-01-02.
fn linkedin_page() -> String {
    r#"{"paging":{"start":0,"count":1,"links":[]},
        "elements":[{"clicks":10,"impressions":1000,"pivotValues":["urn:li:sponsoredCampaign:1111"],"costInLocalCurrency":"12.5",
          "dateRange":{"start":{"year":2023,"month":1,"day":2},"end":{"year":2023,"month":1,"day":2}}}]}"#
        .to_owned()
}

/// `api_calls|retries|rate_limit_waits|wait in ms|breaker_opens|status` of
/// every run of the source, oldest first.
async fn call_rows(s: &Setup, source: &str) -> Vec<String> {
    rows(
        &s.warehouse,
        &INGEST_RUNS,
        &format!(
            "SELECT api_calls, retries, rate_limit_waits, CAST(round(rate_limit_wait_seconds * 1000) AS BIGINT), \
             breaker_opens, status FROM t WHERE status <> 'started' AND source = '{source}' ORDER BY started_at"
        ),
    )
    .await
}

async fn linkedin(s: &Setup) -> JobReport {
    backfill(
        s,
        "contoso",
        SourceKind::LinkedinAds,
        "2023-01-02",
        "2023-01-02",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_and_a_5xx_are_counted_in_the_run_record() {
    let server = FakePlatform::start().await;
    // 429 asking for 50 ms, then a 500, then the page.
    server.route(
        "GET",
        LINKEDIN_PATH,
        None,
        vec![
            Resp::json(429, r#"{"status":429}"#).header("retry-after", "0.05"),
            Resp::json(500, r#"{"status":500}"#),
        ],
        Some(Resp::json(200, &linkedin_page())),
    );
    let s = setup(&server);
    let r = linkedin(&s).await;
    assert!(r.succeeded(), "{r:?}");
    // Three requests (the page, then two retries of it); one wait for the
    // rate limit: the 429's 50 ms, above the first backoff (5 ms at most,
    // jittered) and below the longest delay (200 ms), so exactly 50 ms.
    // The backoff after the 500 is no rate-limit wait. Nothing opened.
    assert_eq!(server.hits("GET", LINKEDIN_PATH), 3);
    assert_eq!(
        call_rows(&s, "linkedin_ads").await,
        ["3|2|1|50|0|succeeded"]
    );
    assert_eq!(r.calls.api_calls, 3);
    assert_eq!(r.calls.retries, 2);
    assert_eq!(r.calls.rate_limit_waits, 1);
    assert!(
        (r.calls.rate_limit_wait_seconds - 0.05).abs() < 1e-9,
        "{r:?}"
    );

    // The source's live totals say the same; a clean re-run adds 1 call.
    let r = linkedin(&s).await;
    assert!(r.succeeded(), "{r:?}");
    assert_eq!(
        call_rows(&s, "linkedin_ads").await,
        ["3|2|1|50|0|succeeded", "1|0|0|0|0|succeeded"]
    );
    let live = s.ingestor.http().stats(ACCOUNT).counts();
    assert_eq!(
        (live.api_calls, live.retries, live.rate_limit_waits),
        (4, 2, 1)
    );
    assert_eq!(
        s.ingestor.http().breaker_state(ACCOUNT),
        BreakerState::Closed
    );

    // A token refresh is a request too: Google Ads with an OAuth2 refresh
    // token makes 1 token call and 1 search call.
    server.route(
        "POST",
        GOOGLE_PATH,
        None,
        vec![],
        Some(Resp::json(200, &google_stream())),
    );
    let r = backfill(
        &s,
        "northwind",
        SourceKind::GoogleAds,
        "2025-06-01",
        "2025-06-02",
    )
    .await;
    assert!(r.succeeded(), "{r:?}");
    assert_eq!(server.hits("POST", "/token"), 1);
    assert_eq!(call_rows(&s, "google_ads").await, ["2|0|0|0|0|succeeded"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_openings_are_recorded_and_served_live() {
    let server = FakePlatform::start().await;
    server.route(
        "GET",
        LINKEDIN_PATH,
        None,
        vec![],
        Some(Resp::json(500, r#"{"status":500}"#)),
    );
    let s = setup(&server);
    // Threshold 2 failed calls, 3 attempts per call: run 1 gives up after 3
    // requests (1 failure), run 2 after 3 more (2 failures: the circuit
    // opens), run 3 fails fast without a request.
    for _ in 0..3 {
        let r = linkedin(&s).await;
        assert!(!r.succeeded());
    }
    assert_eq!(server.hits("GET", LINKEDIN_PATH), 6);
    assert_eq!(
        call_rows(&s, "linkedin_ads").await,
        ["3|2|0|0|0|failed", "3|2|0|0|1|failed", "0|0|0|0|0|failed"]
    );
    let http = Arc::clone(s.ingestor.http());
    assert_eq!(http.breaker_state(ACCOUNT), BreakerState::Open);

    // The worker's /metrics, over HTTP.
    let addr = adlake_ingest::live::serve("127.0.0.1:0".parse().unwrap(), Arc::clone(&http))
        .await
        .unwrap();
    let reply = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let text = reply.text().await.unwrap();
    let labels = r#"{client="contoso",source="linkedin_ads"}"#;
    for line in [
        format!("adlake_ingest_breaker_state{labels} 2"),
        format!("adlake_ingest_worker_api_calls_total{labels} 6"),
        format!("adlake_ingest_worker_retries_total{labels} 4"),
        format!("adlake_ingest_worker_rate_limit_waits_total{labels} 0"),
        format!("adlake_ingest_worker_rate_limit_wait_seconds_total{labels} 0.0"),
        format!("adlake_ingest_worker_breaker_opens_total{labels} 1"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing in:\n{text}"
        );
    }
    for name in adlake_ingest::live::EXPORTED {
        let family = name.trim_end_matches("_total");
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{name}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_half_opens_and_a_failed_trial_opens_it_again() {
    let server = FakePlatform::start().await;
    server.route(
        "GET",
        LINKEDIN_PATH,
        None,
        vec![],
        Some(Resp::json(503, "{}")),
    );
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("c.toml"), config_text(&server.base())).unwrap();
    std::fs::write(tmp.path().join("s.toml"), secrets_text(&server.base())).unwrap();
    let config = Config::load(&tmp.path().join("c.toml")).unwrap();
    let http = Arc::new(
        HttpClient::new(HttpConfig {
            max_attempts: 1,
            breaker_threshold: 1,
            breaker_cooldown: Duration::from_millis(300),
            ..http_config()
        })
        .unwrap(),
    );
    let warehouse = Warehouse::open(tmp.path().join("wh").to_str().unwrap()).unwrap();
    let ingestor = Ingestor::new(
        warehouse.clone(),
        Arc::clone(&http),
        Secrets::load(&tmp.path().join("s.toml")).unwrap(),
    );
    let run = || async {
        let jobs = backfill_jobs(
            &config,
            "contoso",
            SourceKind::LinkedinAds,
            day("2023-01-02"),
            day("2023-01-02"),
        )
        .unwrap();
        ingestor.run_jobs(jobs).await.remove(0)
    };
    // One failed call opens the circuit (threshold 1).
    assert_eq!(run().await.calls.breaker_opens, 1);
    assert_eq!(http.breaker_state(ACCOUNT), BreakerState::Open);
    tokio::time::sleep(Duration::from_millis(350)).await;
    // The cool-down passed: half-open until the trial call.
    assert_eq!(http.breaker_state(ACCOUNT), BreakerState::HalfOpen);
    assert!(
        adlake_ingest::live::render(&http).lines().any(
            |l| l == r#"adlake_ingest_breaker_state{client="contoso",source="linkedin_ads"} 1"#
        )
    );
    // The trial fails: open again, a second opening.
    let r = run().await;
    assert_eq!((r.calls.api_calls, r.calls.breaker_opens), (1, 1));
    assert_eq!(http.breaker_state(ACCOUNT), BreakerState::Open);
    // After the cool-down a good trial closes it; no more openings.
    tokio::time::sleep(Duration::from_millis(350)).await;
    server.route(
        "GET",
        LINKEDIN_PATH,
        None,
        vec![],
        Some(Resp::json(200, &linkedin_page())),
    );
    let r = run().await;
    assert!(r.succeeded(), "{r:?}");
    assert_eq!(http.breaker_state(ACCOUNT), BreakerState::Closed);
    assert_eq!(http.stats(ACCOUNT).counts().breaker_opens, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_runs_table_of_the_older_layout_gains_the_call_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let wh = Warehouse::open(tmp.path().to_str().unwrap()).unwrap();
    let record = |run_id: &str, calls| RunRecord {
        run_id: run_id.to_owned(),
        client_id: "c".to_owned(),
        source: "meta_ads".to_owned(),
        trigger: Trigger::Schedule,
        date_from: day("2025-06-01"),
        date_to: day("2025-06-01"),
        started_at: chrono::DateTime::from_timestamp(1_750_000_000, 0).unwrap(),
        finished_at: chrono::DateTime::from_timestamp(1_750_000_060, 0).unwrap(),
        status: RunStatus::Succeeded,
        rows_read: 1,
        rows_written: 1,
        rows_quarantined: 0,
        target_table: "ad_performance".to_owned(),
        table_version: Some(1),
        source_request_ids: Vec::new(),
        error: None,
        calls,
    };
    // The table as written before the call columns: the first 16 columns.
    let old_schema = Arc::new(Schema::new(INGEST_RUNS.schema().fields()[..16].to_vec()));
    let full_batch = {
        // A full row, cut to the old columns.
        let tmp2 = tempfile::tempdir().unwrap();
        let scratch = Warehouse::open(tmp2.path().to_str().unwrap()).unwrap();
        append_run(&scratch, &record("old", None)).await.unwrap();
        let table = scratch.open_table(&INGEST_RUNS).await.unwrap();
        let ctx = SessionContext::new();
        table.update_datafusion_session(&ctx.state()).unwrap();
        ctx.register_table("t", table.table_provider().await.unwrap())
            .unwrap();
        let batches = ctx
            .sql("SELECT * FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        // Read back in the reader's types (views); cast to the writer's.
        let columns: Vec<ArrayRef> = batches[0].columns()[..16]
            .iter()
            .zip(old_schema.fields())
            .map(|(c, f)| arrow::compute::cast(c, f.data_type()).unwrap())
            .collect();
        RecordBatch::try_new(Arc::clone(&old_schema), columns).unwrap()
    };
    wh.open_table(&INGEST_RUNS)
        .await
        .unwrap()
        .write([full_batch])
        .with_save_mode(deltalake::protocol::SaveMode::ErrorIfExists)
        .await
        .unwrap();

    let calls = adlake_ingest::http::CallCounts {
        api_calls: 4,
        retries: 1,
        rate_limit_waits: 1,
        rate_limit_wait_seconds: 2.5,
        breaker_opens: 0,
    };
    append_run(&wh, &record("new", Some(calls))).await.unwrap();
    append_run(&wh, &record("file", None)).await.unwrap();
    assert_eq!(
        rows(
            &wh,
            &INGEST_RUNS,
            "SELECT run_id, api_calls, retries, rate_limit_waits, rate_limit_wait_seconds, breaker_opens \
             FROM t WHERE status <> 'started' ORDER BY run_id"
        )
        .await,
        ["file|||||", "new|4|1|1|2.5|0", "old|||||"]
    );
}

#[test]
fn a_bad_metrics_addr_is_a_usage_error() {
    let bin = env!("CARGO_BIN_EXE_adlake-ingest");
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("c.toml");
    std::fs::write(&config, config_text("http://127.0.0.1:9")).unwrap();
    let worker = |addr: &str| {
        std::process::Command::new(bin)
            .args(["worker", "--config"])
            .arg(&config)
            .arg("--warehouse")
            .arg(tmp.path().join("wh"))
            .args([
                "--max-ticks",
                "1",
                "--run-at",
                "23:59",
                "--metrics-addr",
                addr,
            ])
            .env_remove("ADLAKE_INGEST_METRICS_ADDR")
            .output()
            .unwrap()
    };
    for (addr, says) in [
        (
            "nonsense",
            "expected HOST:PORT for --metrics-addr, got 'nonsense'",
        ),
        ("127.0.0.1:99999", "expected HOST:PORT for --metrics-addr"),
    ] {
        let out = worker(addr);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{addr}: {stderr}");
        assert!(stderr.contains(says), "{addr}: {stderr}");
    }
    // A port in use: the same exit code, and the port named.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = worker(&addr);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on --metrics-addr {addr}")),
        "{stderr}"
    );
}
