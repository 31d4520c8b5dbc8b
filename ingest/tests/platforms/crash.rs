//! A run killed (SIGKILL) at any moment leaves the old slice or the new
//! one with its run record, never a `_run_id` that `ingest_runs` cannot
//! explain; the next run of the slice finishes what the killed one left
//! (its quarantine, its finish row). The real `adlake-ingest` binary is
//! killed at each named point of a run (`ADLAKE_INGEST_PAUSE_AT`) and at
//! evenly spread moments of an unpaused run. Regression test of issue 19,
//! defect 2 (quarantine committed before the data, the run row after).

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Instant;

use adlake_ingest::reconcile::{landed_unfinished, latest_runs, reconcile_slice, run_rows};
use adlake_ingest::writer::RunStatus;

use super::*;

/// The named points of a run, and whether the new data is in when the
/// process dies there.
const POINTS: [(&str, bool); 6] = [
    ("started", false),
    ("staged", false),
    ("data-committed", true),
    ("quarantined", true),
    ("unstaged", true),
    ("finished", true),
];

/// Moments of an unpaused run at which it is killed.
const TIMED_KILLS: u32 = 24;

fn meta_answer(rows: &[(&str, &str, &str)]) -> String {
    let rows: Vec<String> = rows.iter().map(|(d, a, s)| meta_row(d, a, s)).collect();
    meta_page(&rows.join(","), None)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn spawn_backfill(dir: &Path, pause: Option<&str>) -> Child {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_adlake-ingest"));
    cmd.args([
        "backfill",
        "--client",
        "northwind",
        "--source",
        "meta_ads",
        "--since",
        "2025-06-01",
        "--until",
        "2025-06-02",
        "--base-delay-ms",
        "5",
    ])
    .arg("--config")
    .arg(dir.join("clients.toml"))
    .arg("--secrets")
    .arg(dir.join("secrets.toml"))
    .args(["--warehouse", dir.join("wh").to_str().unwrap()])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    match pause {
        Some(point) => cmd.env("ADLAKE_INGEST_PAUSE_AT", point),
        None => cmd.env_remove("ADLAKE_INGEST_PAUSE_AT"),
    };
    cmd.spawn().unwrap()
}

/// Waits for the child to say it paused at `point`, then kills it.
fn kill_at(mut child: Child, point: &str) {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let want = format!("paused at {point}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.trim() == want => break,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("the run never reached {point}:\n{}", seen.join("\n"));
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A case's copy of the base directory (configuration, secrets and the
/// warehouse with the old slice).
fn case_dir(base: &Path, root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    copy_dir(base, &dir);
    dir
}

/// What a reader finds in a warehouse: the run ids of the Meta slice and
/// of its quarantine rows, each checked against `ingest_runs`.
struct Seen {
    data_runs: BTreeSet<String>,
    data_rows: usize,
    quarantine_runs: Vec<String>,
}

async fn look(wh: &Warehouse, case: &str) -> Seen {
    let runs: BTreeSet<String> = rows(wh, &INGEST_RUNS, "SELECT run_id FROM t")
        .await
        .into_iter()
        .collect();
    let data = rows(
        wh,
        &AD_PERFORMANCE,
        "SELECT _run_id FROM t WHERE client_id = 'northwind' AND platform = 'meta_ads'",
    )
    .await;
    let every_run = rows(wh, &AD_PERFORMANCE, "SELECT DISTINCT _run_id FROM t").await;
    for run in &every_run {
        assert!(
            runs.contains(run),
            "{case}: ad_performance._run_id {run} has no ingest_runs row"
        );
    }
    let quarantine_runs = rows(
        wh,
        &QUARANTINE,
        "SELECT run_id FROM t WHERE source = 'meta_ads' ORDER BY run_id",
    )
    .await;
    for run in &quarantine_runs {
        assert!(
            runs.contains(run),
            "{case}: quarantine.run_id {run} has no ingest_runs row"
        );
    }
    Seen {
        data_runs: data.iter().cloned().collect(),
        data_rows: data.len(),
        quarantine_runs,
    }
}

/// Checks one killed case: old or new data right after the kill, then the
/// whole run or none of it once the slice is reconciled. Returns whether
/// the new data was in.
async fn check_case(dir: &Path, case: &str, old_run: &str) -> bool {
    let wh = Warehouse::open(dir.join("wh").to_str().unwrap()).unwrap();
    let seen = look(&wh, case).await;
    let old = BTreeSet::from([old_run.to_owned()]);
    let new = seen.data_runs != old;
    if new {
        assert_eq!(
            seen.data_runs.len(),
            1,
            "{case}: one run's rows: {:?}",
            seen.data_runs
        );
        assert_eq!(seen.data_rows, 3, "{case}: the new slice whole");
    } else {
        assert_eq!(seen.data_rows, 2, "{case}: the old slice intact");
    }

    // What `freshness` counts as landed before anyone reconciles: a run
    // left `started` whose data is in, and no other.
    let unfinished: Vec<String> = landed_unfinished(&wh)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    let before = latest_runs(run_rows(&wh).await.unwrap());
    if new {
        let killed = seen.data_runs.iter().next().unwrap();
        assert_eq!(
            unfinished.contains(killed),
            before[killed].status == RunStatus::Started,
            "{case}: {unfinished:?}"
        );
        assert!(unfinished.len() <= 1, "{case}: {unfinished:?}");
    } else {
        assert!(unfinished.is_empty(), "{case}: {unfinished:?}");
    }

    // The next run of the slice reconciles first (the same call).
    reconcile_slice(&wh, "northwind", "meta_ads", &Default::default())
        .await
        .unwrap();
    let after = look(&wh, case).await;
    assert_eq!(
        after.data_runs, seen.data_runs,
        "{case}: reconciling moves no data"
    );
    let latest = latest_runs(run_rows(&wh).await.unwrap());
    for run in latest.values() {
        assert_ne!(
            run.status,
            RunStatus::Started,
            "{case}: {run:?} left unfinished"
        );
    }
    if new {
        let killed = seen.data_runs.iter().next().unwrap();
        assert_eq!(latest[killed].status, RunStatus::Succeeded, "{case}");
        assert_eq!(latest[killed].rows_written, 3, "{case}");
        assert_eq!(
            after.quarantine_runs,
            std::slice::from_ref(killed),
            "{case}: the new run's quarantine with its data"
        );
    } else {
        assert_eq!(
            after.quarantine_runs,
            [old_run.to_owned()],
            "{case}: the old quarantine with the old data"
        );
        for run in latest.values().filter(|r| r.run_id != old_run) {
            assert_eq!(run.status, RunStatus::Failed, "{case}: {run:?}");
        }
    }
    let staged = dir.join("wh/_adlake_staged/northwind");
    let left: Vec<_> = std::fs::read_dir(&staged)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| std::fs::read_dir(e.path()).is_ok_and(|mut f| f.next().is_some()))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{case}: staged rows left behind: {left:?}");
    new
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_at_any_moment_leaves_old_or_new_data_with_its_run() {
    let server = FakePlatform::start().await;
    // The old slice: two rows and one reject (dated outside the range).
    server.route(
        "GET",
        META_PATH,
        None,
        vec![],
        Some(Resp::json(
            200,
            &meta_answer(&[
                ("2025-06-01", "3001", "10"),
                ("2025-06-02", "3002", "20"),
                ("2025-07-01", "3009", "1"),
            ]),
        )),
    );
    let s = setup(&server);
    let out = spawn_backfill(&s.dir, None).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let old_runs = rows(
        &s.warehouse,
        &AD_PERFORMANCE,
        "SELECT DISTINCT _run_id FROM t",
    )
    .await;
    assert_eq!(old_runs.len(), 1);
    let old_run = old_runs[0].clone();

    // The new answer: three rows and another reject.
    server.route(
        "GET",
        META_PATH,
        None,
        vec![],
        Some(Resp::json(
            200,
            &meta_answer(&[
                ("2025-06-01", "3001", "11"),
                ("2025-06-02", "3002", "21"),
                ("2025-06-02", "3003", "5"),
                ("2025-07-02", "3009", "1"),
            ]),
        )),
    );
    let cases = tempfile::tempdir().unwrap();

    for (point, lands) in POINTS {
        let dir = case_dir(&s.dir, cases.path(), point);
        kill_at(spawn_backfill(&dir, Some(point)), point);
        let new = check_case(&dir, point, &old_run).await;
        assert_eq!(new, lands, "killed at {point}");
    }

    // How long an unpaused run takes, then kills spread over it.
    let dir = case_dir(&s.dir, cases.path(), "whole");
    let t0 = Instant::now();
    let out = spawn_backfill(&dir, None).wait_with_output().unwrap();
    let whole = t0.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(check_case(&dir, "whole", &old_run).await);
    let mut outcomes = BTreeSet::new();
    for i in 0..TIMED_KILLS {
        let at = whole.mul_f64(f64::from(i) / f64::from(TIMED_KILLS));
        let case = format!("after-{}ms", at.as_millis());
        let dir = case_dir(&s.dir, cases.path(), &case);
        let mut child = spawn_backfill(&dir, None);
        std::thread::sleep(at);
        let _ = child.kill();
        child.wait().unwrap();
        outcomes.insert(check_case(&dir, &case, &old_run).await);
    }
    assert!(outcomes.contains(&false), "some kill left the old slice");

    // After a kill, the next real run of the slice finishes cleanly.
    let dir = case_dir(&s.dir, cases.path(), "rerun");
    kill_at(
        spawn_backfill(&dir, Some("data-committed")),
        "data-committed",
    );
    let out = spawn_backfill(&dir, None).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wh = Warehouse::open(dir.join("wh").to_str().unwrap()).unwrap();
    let statuses: Vec<String> = {
        let latest = latest_runs(run_rows(&wh).await.unwrap());
        let mut v: Vec<String> = latest
            .values()
            .map(|r| r.status.as_str().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(statuses, ["succeeded", "succeeded", "succeeded"]);
}
