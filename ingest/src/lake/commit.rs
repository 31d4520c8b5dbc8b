//! Retrying a commit that lost an optimistic-concurrency race.
//!
//! Delta commits are optimistic: a writer prepares its actions against a
//! snapshot and commits them as the next version. delta-rs already
//! re-tries a commit whose version was taken by a commit that does not
//! conflict with it (an append beside an append). What it cannot resolve
//! is a real conflict, e.g. compaction removed a file the commit also
//! removes: then nothing was committed and the whole operation must be
//! planned again from a fresh snapshot. [`commit_with_retry`] does that,
//! for every writer of this crate, and retries nothing else.

use std::time::Duration;

use deltalake::DeltaTableError;
use deltalake::kernel::transaction::TransactionError;
use tracing::info;

use crate::error::{Error, Result};

/// How many times a commit is tried when it keeps losing races.
pub const DEFAULT_ATTEMPTS: u32 = 5;

/// Whether a commit failed only because another writer got there first.
pub fn is_lost_race(err: &DeltaTableError) -> bool {
    matches!(
        err,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(_)
                    | TransactionError::VersionAlreadyExists(_)
                    | TransactionError::MaxCommitAttempts(_)
            }
    )
}

/// Whether an ingest error is a commit that lost a race with a concurrent
/// writer (compaction, another slice write): nothing was committed and
/// running the same operation again is safe and will succeed.
pub fn lost_race(err: &Error) -> bool {
    matches!(err, Error::Delta { source, .. } if is_lost_race(source))
}

/// Runs `commit` (given the attempt number, from 1) until it succeeds,
/// fails for another reason than a lost race, or has been tried
/// `attempts` times (at least once). Each attempt must plan its commit
/// from the table's latest version; between attempts it waits a little
/// longer each time, with jitter, so writers that collided do not collide
/// again. `what` names the commit in the log.
pub async fn commit_with_retry<T, F, Fut>(what: &str, attempts: u32, mut commit: F) -> Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let attempts = attempts.max(1);
    let mut attempt = 1;
    loop {
        match commit(attempt).await {
            Err(err) if attempt < attempts && lost_race(&err) => {
                info!(what, attempt, error = %err, "the commit lost a race with a concurrent writer; trying again");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// The wait after attempt `attempt` lost: 10 ms more per attempt, plus up
/// to 20 ms of jitter.
fn backoff(attempt: u32) -> Duration {
    let jitter = rand::Rng::random_range(&mut rand::rng(), 0..20u64);
    Duration::from_millis(10 * u64::from(attempt) + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost() -> Error {
        Error::delta("t", DeltaTableError::VersionAlreadyExists(3))
    }

    #[test]
    fn only_concurrency_conflicts_count_as_a_lost_race() {
        assert!(is_lost_race(&DeltaTableError::VersionAlreadyExists(3)));
        assert!(is_lost_race(&DeltaTableError::Transaction {
            source: TransactionError::MaxCommitAttempts(15)
        }));
        assert!(!is_lost_race(&DeltaTableError::Generic("disk full".into())));
        assert!(!is_lost_race(&DeltaTableError::NotATable("x".into())));
    }

    #[tokio::test]
    async fn a_lost_race_is_tried_again_and_other_errors_are_not() {
        use std::sync::Mutex;

        let tried = Mutex::new(Vec::new());
        let done = commit_with_retry("t", 5, |attempt| {
            tried.lock().unwrap().push(attempt);
            async move {
                if attempt < 3 {
                    Err(lost())
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
        assert_eq!(done.unwrap(), 3);
        assert_eq!(*tried.lock().unwrap(), [1, 2, 3]);

        let mut calls = 0;
        let failed: Result<()> = commit_with_retry("t", 5, |_| {
            calls += 1;
            async {
                Err(Error::delta(
                    "t",
                    DeltaTableError::Generic("disk full".into()),
                ))
            }
        })
        .await;
        assert!(!lost_race(&failed.unwrap_err()));
        assert_eq!(calls, 1);

        let mut calls = 0;
        let gave_up: Result<()> = commit_with_retry("t", 2, |_| {
            calls += 1;
            async { Err(lost()) }
        })
        .await;
        assert!(lost_race(&gave_up.unwrap_err()));
        assert_eq!(calls, 2);
    }
}
