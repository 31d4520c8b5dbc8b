//! Query memory: one pool for the process, a share of it per query.
//!
//! Each query's operators (sorts, joins, aggregations) reserve their
//! working memory from a [`QueryPool`] of its own, which refuses past the
//! query's share and otherwise reserves from the one pool of the process
//! ([`Engine::with_memory_pool`](crate::Engine::with_memory_pool)). An
//! operator that is refused spills to disk where it can; otherwise the
//! query fails with `ResourcesExhausted` (the caller's `RESOURCE_EXHAUSTED`).
//! So neither one query nor many at once can take more than the process
//! was given, whatever their number: a per-query pool alone bounds one
//! query, and sixty-four of them sixty-four times over.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// One query's pool: at most `limit` bytes, each also reserved from the
/// process's pool when there is one.
#[derive(Debug)]
pub struct QueryPool {
    process: Option<Arc<dyn MemoryPool>>,
    limit: usize,
    used: AtomicUsize,
}

impl QueryPool {
    /// A pool of at most `limit` bytes, drawn from `process` if given.
    pub fn new(limit: usize, process: Option<Arc<dyn MemoryPool>>) -> Self {
        Self {
            process,
            limit,
            used: AtomicUsize::new(0),
        }
    }
}

impl fmt::Display for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "query pool (used {} of {} bytes)",
            self.used.load(Ordering::Relaxed),
            self.limit
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "adlake-query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        if let Some(process) = &self.process {
            process.register(consumer);
        }
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        if let Some(process) = &self.process {
            process.unregister(consumer);
        }
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        if let Some(process) = &self.process {
            process.grow(reservation, additional);
        }
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::Relaxed);
        if let Some(process) = &self.process {
            process.shrink(reservation, shrink);
        }
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                let new = used.checked_add(additional)?;
                (new <= self.limit).then_some(new)
            })
            .map_err(|used| {
                DataFusionError::ResourcesExhausted(format!(
                    "{} needs {additional} more bytes, past the query's memory share of {} bytes \
                     ({used} in use; the server's --query-memory-bytes)",
                    reservation.consumer().name(),
                    self.limit
                ))
            })?;
        if let Some(process) = &self.process
            && let Err(err) = process.try_grow(reservation, additional)
        {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the server's query memory is in use by the queries running now \
                 (--memory-pool-bytes); retry later: {}",
                err.strip_backtrace()
            )));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    use super::*;

    #[test]
    fn a_query_is_bounded_by_its_share_and_all_by_the_process_pool() {
        let process: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(100));
        let first: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(60, Some(Arc::clone(&process))));
        let second: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(60, Some(Arc::clone(&process))));
        let a = MemoryConsumer::new("sort a").register(&first);
        let b = MemoryConsumer::new("sort b").register(&second);

        a.try_grow(50).unwrap();
        // Within its own share, but only 50 of the process's 100 are left.
        let err = b.try_grow(60).unwrap_err().strip_backtrace();
        assert!(err.contains("--memory-pool-bytes"), "{err}");
        assert_eq!((second.reserved(), process.reserved()), (0, 50));
        b.try_grow(50).unwrap();
        // Past its own share of 60.
        a.shrink(10);
        let err = a.try_grow(30).unwrap_err().strip_backtrace();
        assert!(err.contains("--query-memory-bytes"), "{err}");
        assert_eq!((first.reserved(), process.reserved()), (40, 90));
        drop(a);
        drop(b);
        assert_eq!(process.reserved(), 0);
    }

    #[test]
    fn without_a_process_pool_only_the_share_bounds() {
        let pool: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(10, None));
        let r = MemoryConsumer::new("join").register(&pool);
        r.try_grow(10).unwrap();
        assert!(r.try_grow(1).is_err());
        r.grow(5);
        assert_eq!(pool.reserved(), 15);
    }
}
