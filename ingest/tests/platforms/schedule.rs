//! The `backfill` and `worker` commands of the real binary against the fake
//! platforms.

use super::*;

fn command(s: &Setup, sub: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_adlake-ingest"));
    cmd.arg(sub)
        .arg("--config")
        .arg(s.dir.join("clients.toml"))
        .arg("--secrets")
        .arg(s.dir.join("secrets.toml"))
        .args([
            "--warehouse",
            s.dir.join("wh").to_str().unwrap(),
            "--base-delay-ms",
            "5",
            "--max-attempts",
            "3",
        ]);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_splits_half_a_year_into_chunks_google_accepts() {
    let server = FakePlatform::start().await;
    // Only the chunk holding June 1-2 has rows; the others are empty
    // streams (a batch without `results`).
    server.route(
        "POST",
        GOOGLE_PATH,
        Some("BETWEEN '2025-04-01' AND '2025-06-29'"),
        vec![],
        Some(Resp::json(200, &google_stream())),
    );
    server.route(
        "POST",
        GOOGLE_PATH,
        None,
        vec![],
        Some(Resp::json(
            200,
            r#"[{"fieldMask":"x","requestId":"g-empty"}]"#,
        )),
    );
    let s = setup(&server);
    let out = command(&s, "backfill")
        .args([
            "--client",
            "northwind",
            "--source",
            "google_ads",
            "--since",
            "2025-01-01",
            "--until",
            "2025-06-30",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        3,
        "{stdout}"
    );
    // 181 days in chunks of 90: Jan 1-Mar 31 (31+28+31), Apr 1-Jun 29
    // (30+31+29), Jun 30.
    assert_eq!(
        rows(&s.warehouse, &INGEST_RUNS,
            "SELECT source, trigger, status, CAST(date_from AS VARCHAR) AS f, CAST(date_to AS VARCHAR) AS t, rows_written, rows_quarantined \
             FROM t WHERE status <> 'started' ORDER BY date_from").await,
        [
            "google_ads|backfill|succeeded|2025-01-01|2025-03-31|0|0",
            "google_ads|backfill|succeeded|2025-04-01|2025-06-29|2|1",
            "google_ads|backfill|succeeded|2025-06-30|2025-06-30|0|0",
        ]
    );
    assert_eq!(server.hits("POST", GOOGLE_PATH), 3);
    assert_eq!(
        rows(&s.warehouse, &AD_PERFORMANCE,
            "SELECT CAST(date AS VARCHAR) AS d, CAST(spend AS VARCHAR) AS sp, impressions, clicks FROM t ORDER BY date").await,
        ["2025-06-01|12.345678|1000|50", "2025-06-02|2.000000|400|10"]
    );

    // A bad request exits 1 with one line naming the problem.
    let out = command(&s, "backfill")
        .args([
            "--client",
            "northwind",
            "--source",
            "bing_ads",
            "--since",
            "2025-01-01",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown platform 'bing_ads'"), "{err}");
    let out = command(&s, "backfill")
        .args([
            "--client",
            "northwind",
            "--source",
            "google_ads",
            "--since",
            "2025-13-01",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("expected a date as YYYY-MM-DD, got '2025-13-01'"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_lands_each_clients_yesterday_once() {
    let server = FakePlatform::start().await;
    let (ny, berlin) = script_yesterday(&server);
    let s = setup(&server);
    // Run time 00:00: every client is due on the first check; the second
    // check finds every yesterday landed and calls no platform.
    let out = command(&s, "worker")
        .args(["--run-at", "00:00", "--tick-secs", "1", "--max-ticks", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        6,
        "{stdout}"
    );
    for (method, path) in [
        ("POST", GOOGLE_PATH),
        ("GET", META_PATH),
        ("GET", TIKTOK_PATH),
        ("GET", LINKEDIN_PATH),
        ("POST", GA4_PATH),
        ("GET", SHOPIFY_PATH),
    ] {
        assert_eq!(server.hits(method, path), 1, "{path}");
    }
    // ingest_runs records when each slice landed, for each client's day.
    let runs = rows(&s.warehouse, &INGEST_RUNS,
        "SELECT client_id, source, trigger, status, CAST(date_to AS VARCHAR) AS d, finished_at IS NOT NULL AND finished_at >= started_at FROM t WHERE status <> 'started' ORDER BY client_id, source").await;
    assert_eq!(
        runs,
        [
            format!("contoso|ga4|schedule|succeeded|{berlin}|true"),
            format!("contoso|linkedin_ads|schedule|succeeded|{berlin}|true"),
            format!("contoso|tiktok_ads|schedule|succeeded|{berlin}|true"),
            format!("northwind|google_ads|schedule|succeeded|{ny}|true"),
            format!("northwind|meta_ads|schedule|succeeded|{ny}|true"),
            format!("northwind|shopify|schedule|succeeded|{ny}|true"),
        ]
    );
}
