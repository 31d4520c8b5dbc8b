//! Named points of a run where the process can be made to stop, so a test
//! can kill the real binary there (`ADLAKE_INGEST_PAUSE_AT=<point>`).
//!
//! At the named point the process prints `paused at <point>` on stderr and
//! waits forever; nothing else changes. The points, in the order a run
//! passes them: `started` (its `started` row is in `ingest_runs`),
//! `staged` (its quarantine rows are staged), `data-committed`,
//! `quarantined`, `unstaged` (the staged rows are removed), `finished`
//! (its finish row is in), and for a held run `held-staged` (its `held`
//! row is in and its rows are staged).

use std::io::Write as _;

/// The variable naming the point to stop at.
pub const PAUSE_AT_VAR: &str = "ADLAKE_INGEST_PAUSE_AT";

/// Stops here, forever, when `ADLAKE_INGEST_PAUSE_AT` names `name`.
pub async fn point(name: &str) {
    let Ok(want) = std::env::var(PAUSE_AT_VAR) else {
        return;
    };
    if want.trim() != name {
        return;
    }
    {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "paused at {name}");
        let _ = err.flush();
    }
    std::future::pending::<()>().await;
}
