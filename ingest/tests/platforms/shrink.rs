//! The shrink guard end to end: a fetch that would empty a slice, or whose
//! every record is quarantined, is held (the old rows and quarantine
//! stay, the run is `held` with its reason); `adlake-ingest run
//! --confirm-shrink RUN_ID` or a later fetch that agrees applies it; a
//! slice that was empty before passes. Regression tests of issue 19,
//! defect 1 (`an_empty_slice_removes_its_rows` asserted the deletion).

use std::path::Path;
use std::process::Output;

use super::*;

/// Two Meta rows on June 1 and 2 (spend 10 and 20).
fn two_meta_rows() -> String {
    meta_page(
        &format!(
            "{},{}",
            meta_row("2025-06-01", "3001", "10"),
            meta_row("2025-06-02", "3002", "20")
        ),
        None,
    )
}

fn script_meta(server: &FakePlatform, body: &str) {
    server.route("GET", META_PATH, None, vec![], Some(Resp::json(200, body)));
}

/// `adlake-ingest` with the test's configuration, secrets and warehouse.
fn ingest(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_adlake-ingest"));
    cmd.args(args)
        .arg("--config")
        .arg(dir.join("clients.toml"))
        .arg("--secrets")
        .arg(dir.join("secrets.toml"))
        .args(["--warehouse", dir.join("wh").to_str().unwrap()])
        .args(["--base-delay-ms", "5"]);
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn backfill_meta(dir: &Path) -> Output {
    ingest(
        dir,
        &[
            "backfill",
            "--client",
            "northwind",
            "--source",
            "meta_ads",
            "--since",
            "2025-06-01",
            "--until",
            "2025-06-02",
        ],
    )
}

async fn meta_rows(s: &Setup) -> Vec<String> {
    rows(
        &s.warehouse,
        &AD_PERFORMANCE,
        "SELECT CAST(date AS VARCHAR) AS d, ad_id, CAST(spend AS VARCHAR) AS s FROM t \
         WHERE platform = 'meta_ads' ORDER BY date",
    )
    .await
}

/// Each run's rows of `ingest_runs` in the order recorded: `run|status`.
async fn run_statuses(s: &Setup) -> Vec<String> {
    rows(
        &s.warehouse,
        &INGEST_RUNS,
        "SELECT run_id, status FROM t WHERE source = 'meta_ads' \
         ORDER BY finished_at, CASE WHEN status = 'started' THEN 0 ELSE 1 END",
    )
    .await
}

/// The run id of the last run printed by a job command.
fn printed_run(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let (_, after) = line
        .split_once(" run ")
        .unwrap_or_else(|| panic!("no run id in {line:?}"));
    after
        .split(|c: char| c == ':' || c.is_whitespace())
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_fetch_is_held_and_the_old_rows_stay_until_confirmed() {
    let server = FakePlatform::start().await;
    script_meta(&server, &two_meta_rows());
    let s = setup(&server);
    let out = backfill_meta(&s.dir);
    assert!(out.status.success(), "{}", text(&out));
    let before = meta_rows(&s).await;
    assert_eq!(before.len(), 2, "{before:?}");

    // The platform answers with nothing: most of the slice would go.
    script_meta(&server, r#"{"data":[]}"#);
    let out = backfill_meta(&s.dir);
    let printed = text(&out);
    assert!(
        !out.status.success(),
        "a held job is not a clean exit\n{printed}"
    );
    assert!(printed.contains("HELD"), "{printed}");
    assert!(
        printed.contains("remove 2 of the slice's 2 rows"),
        "{printed}"
    );
    assert_eq!(meta_rows(&s).await, before, "the guard kept the old rows");
    let held = printed_run(&out);
    let reason = rows(
        &s.warehouse,
        &INGEST_RUNS,
        &format!("SELECT status, error FROM t WHERE run_id = '{held}'"),
    )
    .await;
    assert_eq!(reason.len(), 1, "{reason:?}");
    assert!(
        reason[0].starts_with("held|the replace would remove 2"),
        "{reason:?}"
    );

    // Confirming applies the staged (empty) rows under the held run's id.
    let out = ingest(&s.dir, &["run", "--confirm-shrink", &held]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(meta_rows(&s).await, Vec::<String>::new());
    let statuses = run_statuses(&s).await;
    let of_held: Vec<&String> = statuses.iter().filter(|r| r.starts_with(&held)).collect();
    assert_eq!(
        of_held,
        [
            &format!("{held}|held"),
            &format!("{held}|started"),
            &format!("{held}|succeeded")
        ]
    );
    // Confirming twice is refused with the run's state.
    let out = ingest(&s.dir, &["run", "--confirm-shrink", &held]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("is not held: its status is 'succeeded'"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_whose_every_record_is_quarantined_is_held() {
    let server = FakePlatform::start().await;
    script_meta(&server, &two_meta_rows());
    let s = setup(&server);
    assert!(backfill_meta(&s.dir).status.success());
    let before = meta_rows(&s).await;

    // Every row now fails validation (dated outside the requested range,
    // as after a platform renames its date field): nothing would be written.
    script_meta(
        &server,
        &meta_page(&meta_row("2025-07-01", "3001", "10"), None),
    );
    let out = backfill_meta(&s.dir);
    assert!(
        text(&out).contains("every record was quarantined (1)"),
        "{}",
        text(&out)
    );
    assert_eq!(meta_rows(&s).await, before);
    let quarantine = rows(
        &s.warehouse,
        &QUARANTINE,
        "SELECT count(*) FROM t WHERE source = 'meta_ads'",
    )
    .await;
    assert!(
        quarantine.is_empty() || quarantine == ["0"],
        "a held run changes no quarantine either: {quarantine:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_slice_stays_empty_and_a_fetch_that_agrees_applies_a_held_one() {
    let server = FakePlatform::start().await;
    // A paused account: the slice was empty and stays empty; nothing held.
    script_meta(&server, r#"{"data":[]}"#);
    let s = setup(&server);
    let out = backfill_meta(&s.dir);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ok "), "{}", text(&out));

    // Data lands, then a fetch returns one of the two rows (half the rows
    // but two thirds of the spend gone): held.
    script_meta(&server, &two_meta_rows());
    assert!(backfill_meta(&s.dir).status.success());
    script_meta(
        &server,
        &meta_page(&meta_row("2025-06-01", "3001", "10"), None),
    );
    let first = backfill_meta(&s.dir);
    assert!(
        text(&first).contains("shrink_max_spend_drop"),
        "{}",
        text(&first)
    );
    assert_eq!(meta_rows(&s).await.len(), 2);
    // The same answer again agrees with the held run: it is applied.
    let second = backfill_meta(&s.dir);
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(
        meta_rows(&s).await,
        ["2025-06-01|3001|10.000000".to_owned()]
    );
    let held = printed_run(&first);
    let staged = s.dir.join("wh/_adlake_staged/northwind").join(&held);
    assert!(!staged.exists(), "the held run's staged rows are removed");
    // The held run is stale now: confirming it is refused.
    let out = ingest(&s.dir, &["run", "--confirm-shrink", &held]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is superseded"), "{}", text(&out));
    assert_eq!(meta_rows(&s).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shrink_limits_are_set_per_source() {
    let server = FakePlatform::start().await;
    script_meta(&server, &two_meta_rows());
    let s = setup(&server);
    assert!(backfill_meta(&s.dir).status.success());
    // Meta of northwind never holds: both limits at 1.
    let config = std::fs::read_to_string(s.dir.join("clients.toml")).unwrap();
    let lenient = config.replacen(
        "credentials = \"meta\"\n",
        "credentials = \"meta\"\nshrink_max_row_drop = 1.0\nshrink_max_spend_drop = 1\n",
        1,
    );
    assert_ne!(lenient, config);
    std::fs::write(s.dir.join("clients.toml"), &lenient).unwrap();
    script_meta(&server, r#"{"data":[]}"#);
    let out = backfill_meta(&s.dir);
    assert!(out.status.success(), "{}", text(&out));
    assert!(meta_rows(&s).await.is_empty());

    let wrong = config.replacen(
        "credentials = \"meta\"\n",
        "credentials = \"meta\"\nshrink_max_row_drop = 1.5\n",
        1,
    );
    std::fs::write(s.dir.join("clients.toml"), wrong).unwrap();
    let out = backfill_meta(&s.dir);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("shrink_max_row_drop must be a fraction from 0 to 1"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_fetch_of_an_account_the_platform_reports_disabled_is_applied() {
    let server = FakePlatform::start().await;
    script_meta(&server, &two_meta_rows());
    let s = setup(&server);
    let out = backfill_meta(&s.dir);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(meta_rows(&s).await.len(), 2);

    // Empty insights, and the ad account node says DISABLED (2), as Meta's
    // `/act_<id>?fields=account_status` answers: the empty days are real.
    script_meta(&server, r#"{"data":[]}"#);
    server.route(
        "GET",
        "/v21.0/act_1001",
        None,
        vec![],
        Some(Resp::json(200, r#"{"account_status":2,"id":"act_1001"}"#)),
    );
    let out = backfill_meta(&s.dir);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("HELD"), "{}", text(&out));
    assert_eq!(meta_rows(&s).await, Vec::<String>::new());

    // An active account (1) with empty insights is held as before.
    script_meta(&server, &two_meta_rows());
    let out = backfill_meta(&s.dir);
    assert!(out.status.success(), "{}", text(&out));
    script_meta(&server, r#"{"data":[]}"#);
    server.route(
        "GET",
        "/v21.0/act_1001",
        None,
        vec![],
        Some(Resp::json(200, r#"{"account_status":1,"id":"act_1001"}"#)),
    );
    let out = backfill_meta(&s.dir);
    assert!(text(&out).contains("HELD"), "{}", text(&out));
    assert_eq!(meta_rows(&s).await.len(), 2);
}
