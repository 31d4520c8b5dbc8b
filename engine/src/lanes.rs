//! Fair share of the CPU between callers: execution lanes.
//!
//! A query's operators run as tasks of the async runtime that executes
//! them, each partition fanning out over every worker. On one shared
//! runtime, a caller with eight heavy queries in flight has sixteen tasks
//! ready for every one of a dashboard's, and the dashboard waits behind
//! them: the query slots bound how many queries a caller runs, not its
//! share of the machine.
//!
//! So execution runs in *lanes*: a small set of runtimes of their own, each
//! with as many worker threads as the machine has cores. While a caller has
//! queries running it holds one lane, shared with as few other callers as
//! possible (a new caller takes the lane with the fewest callers). The
//! operating system's scheduler shares the cores fairly between the threads
//! that are ready to run, so between lanes: a caller gets at least its
//! lane's share of the CPU however many queries another caller runs in its
//! own. Past as many callers as lanes, callers share lanes, and a lane's
//! share is split between its callers' tasks as before.
//!
//! Each lane has two halves. A caller's one query in flight runs in the
//! lane's *first* half; the queries it runs beside that one run in the
//! *second*, whose threads have a lower scheduling priority (nice
//! [`SECOND_NICE`], about a tenth of the CPU weight). So a caller that asks
//! one question at a time (a dashboard) is barely slowed by one that keeps
//! eight heavy queries in flight: those compete at full weight for one
//! query's worth of threads, and at a tenth for the rest. Lowering a
//! thread's priority needs no privilege; raising it would, so a thread
//! keeps the priority of its half.
//!
//! The lanes are the process's, like the planning threads
//! ([`planner`](crate::planner)); their threads start when a lane is first
//! used. [`configure`] sets their number once, before the first query.
//! Answers from the result cache take the same route, through the caller's
//! own lane, which is idle unless the caller itself is busy.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll, ready};

use arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{Stream, StreamExt};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// Lanes when [`configure`] was not called.
pub const DEFAULT_LANES: usize = 8;

/// Nice value of the threads of each lane's second half.
pub const SECOND_NICE: i32 = 10;

/// Batches a lane computes ahead of the caller reading them.
const AHEAD: usize = 2;

/// How many lanes the process has, and the threads of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneSettings {
    /// Number of lanes (at least 1).
    pub lanes: usize,
    /// Worker threads of each lane (at least 1).
    pub threads: usize,
}

impl Default for LaneSettings {
    fn default() -> Self {
        Self {
            lanes: DEFAULT_LANES,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// Sets the lanes' number and size. Only the first call before the lanes
/// are used takes effect; later ones return `false`.
pub fn configure(settings: LaneSettings) -> bool {
    let settings = LaneSettings {
        lanes: settings.lanes.max(1),
        threads: settings.threads.max(1),
    };
    let mut set = false;
    lanes_with(|| {
        set = true;
        settings
    });
    set
}

/// The settings in effect.
pub fn settings() -> LaneSettings {
    lanes().settings
}

/// How many callers hold each lane now.
pub fn callers_per_lane() -> Vec<usize> {
    lanes()
        .assignment
        .lock()
        .map(|a| a.callers_per_lane.clone())
        .unwrap_or_default()
}

/// Runs `work` in `caller`'s lane and returns its answer. Dropping the
/// returned future (a deadline, a caller who left) stops `work`.
pub async fn run<T, F>(caller: &str, work: F) -> Result<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    let ticket = lanes().enter(caller)?;
    let task = Aborting(Some(ticket.handle.clone().spawn(async move {
        let _ticket = ticket;
        work.await
    })));
    task.await
}

/// Starts a query with `start` in `caller`'s lane and streams its batches:
/// the lane polls the query and hands each batch over, at most [`AHEAD`]
/// ahead of the reader. Dropping the stream stops the query. `start`'s
/// second value (a cache status, say) is handed back as it is.
pub async fn stream<X, F>(caller: &str, start: F) -> Result<(SendableRecordBatchStream, X)>
where
    X: Send + 'static,
    F: Future<Output = Result<(SendableRecordBatchStream, X)>> + Send + 'static,
{
    let ticket = lanes().enter(caller)?;
    let (started, first) = oneshot::channel();
    let (batches, received) = mpsc::channel(AHEAD);
    let task = Aborting(Some(ticket.handle.clone().spawn(async move {
        let (mut query, extra) = match start.await {
            Ok(answer) => answer,
            Err(err) => {
                // The lane is free before the caller hears of the error.
                drop(ticket);
                let _ = started.send(Err(err));
                return;
            }
        };
        let _ticket = ticket;
        if started.send(Ok((query.schema(), extra))).is_err() {
            return;
        }
        loop {
            tokio::select! {
                biased;
                () = batches.closed() => return,
                batch = query.next() => match batch {
                    Some(batch) => {
                        if batches.send(batch).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
            }
        }
    })));
    let mut task = task;
    let first = first.await;
    let (schema, extra) = match first {
        Ok(started) => started?,
        // The task ended without a word: it panicked or its lane stopped.
        Err(_) => return Err(stopped(task.finish().await)),
    };
    let stream = LaneStream {
        received,
        task: task.0.take(),
    };
    Ok((
        Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
        extra,
    ))
}

/// A lane's batches as the caller reads them. When they end, the lane's
/// task is asked how it ended, so a query that stopped halfway (a panic)
/// is an error rather than a short answer.
struct LaneStream {
    received: mpsc::Receiver<Result<RecordBatch, DataFusionError>>,
    task: Option<JoinHandle<()>>,
}

impl Stream for LaneStream {
    type Item = Result<RecordBatch, DataFusionError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(batch) = ready!(self.received.poll_recv(cx)) {
            return Poll::Ready(Some(batch));
        }
        let Some(task) = self.task.as_mut() else {
            return Poll::Ready(None);
        };
        let ended = ready!(Pin::new(task).poll(cx));
        self.task = None;
        Poll::Ready(match ended {
            Ok(()) => None,
            Err(err) => Some(Err(DataFusionError::Internal(format!(
                "the query stopped before its end: {err}"
            )))),
        })
    }
}

impl Drop for LaneStream {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A lane task that is aborted when its waiter goes.
struct Aborting<T>(Option<JoinHandle<T>>);

impl<T> Aborting<T> {
    /// How the task ended, once it has.
    async fn finish(&mut self) -> Option<tokio::task::JoinError> {
        let task = self.0.take()?;
        task.await.err()
    }
}

impl<T> Future for Aborting<Result<T>> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(task) = self.0.as_mut() else {
            return Poll::Ready(Err(stopped(None)));
        };
        let ended = ready!(Pin::new(task).poll(cx));
        self.0 = None;
        Poll::Ready(ended.unwrap_or_else(|err| Err(stopped(Some(err)))))
    }
}

impl<T> Drop for Aborting<T> {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

fn stopped(err: Option<tokio::task::JoinError>) -> Error {
    let why = err.map_or_else(|| "its lane stopped".to_owned(), |e| e.to_string());
    Error::Execution(DataFusionError::Internal(format!(
        "the query stopped before its end: {why}"
    )))
}

struct Lanes {
    settings: LaneSettings,
    /// Lane `i`'s first half at `2 i`, its second at `2 i + 1`.
    runtimes: Vec<OnceLock<std::io::Result<Runtime>>>,
    assignment: Mutex<Assignment>,
}

#[derive(Default)]
struct Assignment {
    /// Each caller with queries running: its lane and how many.
    by_caller: HashMap<String, (usize, usize)>,
    callers_per_lane: Vec<usize>,
}

fn lanes() -> &'static Lanes {
    lanes_with(LaneSettings::default)
}

fn lanes_with(settings: impl FnOnce() -> LaneSettings) -> &'static Lanes {
    static LANES: OnceLock<Lanes> = OnceLock::new();
    LANES.get_or_init(|| {
        let settings = settings();
        Lanes {
            settings,
            runtimes: (0..settings.lanes * 2).map(|_| OnceLock::new()).collect(),
            assignment: Mutex::new(Assignment {
                by_caller: HashMap::new(),
                callers_per_lane: vec![0; settings.lanes],
            }),
        }
    })
}

impl Lanes {
    /// `caller`'s lane, taken for one query until the ticket is dropped.
    fn enter(&'static self, caller: &str) -> Result<Ticket> {
        let (lane, second) = {
            let mut assignment = self.assignment.lock().map_err(|_| poisoned())?;
            let assignment = &mut *assignment;
            match assignment.by_caller.get_mut(caller) {
                Some((lane, running)) => {
                    *running += 1;
                    (*lane, true)
                }
                None => {
                    let lane = (0..assignment.callers_per_lane.len())
                        .min_by_key(|&i| assignment.callers_per_lane[i])
                        .unwrap_or(0);
                    assignment.callers_per_lane[lane] += 1;
                    assignment.by_caller.insert(caller.to_owned(), (lane, 1));
                    (lane, false)
                }
            }
        };
        let runtime = self.runtimes[lane * 2 + usize::from(second)].get_or_init(|| {
            let name = if second {
                format!("adlake-lane-{lane}b")
            } else {
                format!("adlake-lane-{lane}")
            };
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(self.settings.threads)
                .max_blocking_threads(self.settings.threads * 4)
                .thread_name(name)
                .on_thread_start(move || {
                    if second {
                        lower_priority(SECOND_NICE);
                    }
                })
                .enable_all()
                .build()
        });
        match runtime {
            Ok(runtime) => Ok(Ticket {
                lanes: self,
                caller: caller.to_owned(),
                handle: runtime.handle().clone(),
            }),
            Err(err) => {
                self.leave(caller);
                Err(Error::Execution(DataFusionError::Internal(format!(
                    "execution lane {lane} cannot start: {err}"
                ))))
            }
        }
    }

    fn leave(&self, caller: &str) {
        let Ok(mut assignment) = self.assignment.lock() else {
            return;
        };
        let assignment = &mut *assignment;
        let Some((lane, running)) = assignment.by_caller.get_mut(caller) else {
            return;
        };
        *running -= 1;
        if *running == 0 {
            let lane = *lane;
            assignment.by_caller.remove(caller);
            assignment.callers_per_lane[lane] -= 1;
        }
    }
}

/// Lowers the calling thread's scheduling priority to nice `nice` (on
/// Linux the nice value is per thread, and `setpriority` of the process
/// with no pid sets the caller's). Failing leaves the priority as it was.
fn lower_priority(nice: i32) {
    if let Err(err) = rustix::process::setpriority_process(None, nice) {
        tracing::warn!(nice, error = %err, "cannot lower a lane thread's priority");
    }
}

fn poisoned() -> Error {
    Error::Execution(DataFusionError::Internal(
        "the lane assignment is poisoned".to_owned(),
    ))
}

/// One query's hold on its caller's lane.
struct Ticket {
    lanes: &'static Lanes,
    caller: String,
    handle: Handle,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.lanes.leave(&self.caller);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batches(n: i64) -> SendableRecordBatchStream {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let items: Vec<_> = (0..n)
            .map(|i| {
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(Int64Array::from(vec![i]))],
                )
                .map_err(DataFusionError::from)
            })
            .collect();
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(items),
        ))
    }

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn a_query_runs_in_a_lane_and_streams_every_batch() {
        let (stream, extra) = stream("lanes-a", async {
            assert!(
                thread_name().starts_with("adlake-lane-"),
                "{}",
                thread_name()
            );
            Ok((batches(5), "miss"))
        })
        .await
        .unwrap();
        assert_eq!(extra, "miss");
        let got: Vec<i64> = stream
            .map(|b| {
                b.unwrap()
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .value(0)
            })
            .collect()
            .await;
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_caller_keeps_its_lane_while_busy_and_others_take_free_ones() {
        let held = stream("lanes-busy", async { Ok((batches(3), ())) })
            .await
            .unwrap();
        let mine = run("lanes-busy", async { Ok(thread_name()) })
            .await
            .unwrap();
        let other = run("lanes-other", async { Ok(thread_name()) })
            .await
            .unwrap();
        // The busy caller's second query runs in its lane's second half, at
        // a lower priority; the other caller's first in another lane's
        // first half.
        assert!(mine.ends_with('b'), "{mine}");
        assert!(!other.ends_with('b'), "{other}");
        assert_ne!(
            mine.trim_end_matches('b'),
            other,
            "a second caller shares the busy caller's lane"
        );
        let nice = run("lanes-busy", async {
            rustix::process::getpriority_process(None).map_err(|e| Error::InvalidSql(e.to_string()))
        })
        .await
        .unwrap();
        assert_eq!(nice, SECOND_NICE);
        drop(held);
    }

    #[tokio::test]
    async fn a_start_error_is_the_callers_and_frees_the_lane() {
        let err = stream::<(), _>("lanes-err", async {
            Err(Error::InvalidSql("no such column".into()))
        })
        .await
        .err()
        .unwrap();
        assert!(matches!(err, Error::InvalidSql(_)), "{err:?}");
        let busy: usize = callers_per_lane().iter().sum();
        // Other tests may hold lanes; this caller holds none.
        let held = lanes()
            .assignment
            .lock()
            .unwrap()
            .by_caller
            .contains_key("lanes-err");
        assert!(!held, "lane still held ({busy} callers in all)");
    }

    #[tokio::test]
    async fn a_panic_is_an_error_not_a_short_answer() {
        let (mut stream, ()) = stream("lanes-panic", async {
            let items = batches(1).chain(futures::stream::once(async {
                panic!("operator bug");
            }));
            let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
            let stream: SendableRecordBatchStream =
                Box::pin(RecordBatchStreamAdapter::new(schema, items));
            Ok((stream, ()))
        })
        .await
        .unwrap();
        assert!(stream.next().await.unwrap().is_ok());
        let err = stream.next().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("stopped before its end"), "{err}");
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn dropping_the_stream_stops_the_query() {
        let (tx, rx) = oneshot::channel::<()>();
        let (stream, ()) = stream("lanes-drop", async move {
            // Dropped (and `tx` with it) when the query is stopped.
            let endless =
                futures::stream::pending::<Result<RecordBatch, DataFusionError>>().map(move |b| {
                    let _ = &tx;
                    b
                });
            let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
            let stream: SendableRecordBatchStream =
                Box::pin(RecordBatchStreamAdapter::new(schema, endless));
            Ok((stream, ()))
        })
        .await
        .unwrap();
        drop(stream);
        tokio::time::timeout(std::time::Duration::from_secs(5), rx)
            .await
            .expect("the query was not stopped")
            .unwrap_err();
    }
}
