//! Where statements are parsed and planned: a small pool of threads of its
//! own, off the async runtime's workers, each with a large stack.
//!
//! Parsing, SQL-to-plan and optimisation recurse over the statement's
//! expression tree. On the runtime's workers (2 MiB stacks) a deep tree
//! overflowed the stack and aborted the process, and a burst of heavy
//! statements held every worker, so health checks and cached answers
//! waited behind them. Here the statement limits
//! ([`StatementLimits`](crate::StatementLimits)) bound the depth before
//! planning starts, the large stack leaves a wide margin under that bound
//! (and under the drop of a refused statement's tree, which is as deep as
//! its text allows), and the pool's size bounds how many statements are
//! planned at once: more wait in its queue without holding a runtime
//! worker, and one whose caller has left by the time a thread takes it
//! (cancelled, past its deadline) is dropped unplanned. A statement
//! already being planned runs to the end of planning (the depth limits
//! bound how long that is); its caller is answered at the deadline.

use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};

/// Stack of each planning thread. Only the pages a statement touches are
/// ever resident; the size is a reservation of address space.
pub const PLANNER_STACK_BYTES: usize = 512 * 1024 * 1024;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Planning threads: one per core, at least two.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

/// The pool's queue; threads start on first use.
fn queue() -> &'static Mutex<mpsc::Sender<Job>> {
    static QUEUE: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = std::sync::Arc::new(Mutex::new(receiver));
        for i in 0..threads() {
            let receiver = std::sync::Arc::clone(&receiver);
            let spawned = std::thread::Builder::new()
                .name(format!("adlake-planner-{i}"))
                .stack_size(PLANNER_STACK_BYTES)
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for one job.
                        let job = match receiver.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(err) = spawned {
                tracing::error!(error = %err, "cannot start a planning thread");
            }
        }
        Mutex::new(sender)
    })
}

/// Runs `work` on a planning thread and waits for its answer without
/// holding the caller's runtime worker. `work` may block on futures with
/// the runtime handle it is given (the engine's planning is async but
/// CPU-bound). A panic in `work` is an internal error of this query, not
/// the end of the thread or the process.
pub(crate) async fn run<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&tokio::runtime::Handle) -> Result<T> + Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    let (answer, answered) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        // A caller that left while the job waited in the queue (cancelled,
        // past its deadline) costs no planning.
        if answer.is_closed() {
            return;
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&handle)));
        let outcome = outcome.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            tracing::error!(panic = %what, "planning a statement panicked");
            Err(internal(format!("planning failed: {what}")))
        });
        // The caller may have gone (cancelled, timed out): nothing to tell.
        let _ = answer.send(outcome);
    });
    queue()
        .lock()
        .map_err(|_| internal("the planning queue is poisoned".into()))?
        .send(job)
        .map_err(|_| internal("no planning thread is running".into()))?;
    answered
        .await
        .map_err(|_| internal("a planning thread stopped".into()))?
}

fn internal(message: String) -> Error {
    Error::Execution(datafusion::error::DataFusionError::Internal(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_statement_whose_caller_left_while_it_waited_is_not_planned() {
        // Every planning thread busy until the gate opens.
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let started = Arc::new(AtomicUsize::new(0));
        let mut busy = Vec::new();
        for _ in 0..threads() {
            let (gate, started) = (Arc::clone(&gate), Arc::clone(&started));
            busy.push(tokio::spawn(run(move |_| {
                started.fetch_add(1, Ordering::SeqCst);
                let (open, opened) = &*gate;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = opened.wait(open).unwrap();
                }
                Ok(())
            })));
        }
        while started.load(Ordering::SeqCst) < threads() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A statement queued behind them whose caller then leaves.
        let planned = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&planned);
        let left = tokio::spawn(run(move |_| {
            flag.store(true, Ordering::SeqCst);
            Ok(())
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        left.abort();
        assert!(left.await.unwrap_err().is_cancelled());

        let (open, opened) = &*gate;
        *open.lock().unwrap() = true;
        opened.notify_all();
        for job in busy {
            job.await.unwrap().unwrap();
        }
        // Every thread at once in a later job: the one that left has been
        // taken from the queue, and was not planned.
        let all = Arc::new(std::sync::Barrier::new(threads()));
        let later: Vec<_> = (0..threads())
            .map(|_| {
                let all = Arc::clone(&all);
                tokio::spawn(run(move |_| {
                    all.wait();
                    Ok(())
                }))
            })
            .collect();
        for job in later {
            job.await.unwrap().unwrap();
        }
        assert!(!planned.load(Ordering::SeqCst));
    }
}
