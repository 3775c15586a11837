//! Pool jobs submitted by async tasks during one turn of the runtime, sent
//! to the pool together.
//!
//! A client that waits for each response (pipeline 1) has one request
//! ready at a time, so a pool job per request costs a worker wake-up per
//! request: a futex wake on the I/O thread and a futex wait on the worker
//! for every request, beside the wake of the I/O thread when the result
//! comes back. A [`Batcher`] queues what the tasks of one runtime turn
//! submit and hands it to the pool as one job: the first submission into
//! an empty queue spawns a flusher task that yields once before flushing.
//! Tokio defers a yielded task's wake until its worker has run the tasks
//! already ready (or polled its event sources, at least every 61 polls), so
//! every connection served in that turn has queued its work by then, and
//! one wake-up carries all of it. A queue that reaches the job weight goes
//! at once instead, so that with deep pipelines the pool does not wait
//! idle for the I/O thread to finish the turn. Each submission still has
//! its own [`Blocking`] future, and a panic fails only the submission that
//! raised it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::bridge::bridged;
use super::{Blocking, SharedQueueThreadPool, ThreadPool};

type Task = Box<dyn FnOnce() + Send + 'static>;

#[derive(Default)]
struct Queue {
    tasks: Vec<Task>,
    /// Weight of `tasks`.
    weight: usize,
}

/// A submission queue in front of a [`SharedQueueThreadPool`], flushed
/// once per turn of the Tokio worker that filled it.
///
/// Outside a Tokio runtime there is no turn to wait for: a submission goes
/// to the pool at once, as [`SharedQueueThreadPool::run`] would send it.
pub struct Batcher {
    pool: Arc<SharedQueueThreadPool>,
    /// Submissions of this turn not sent yet.
    queue: Mutex<Queue>,
    /// Once this much weight is queued it goes to the pool at once, so a
    /// busy turn still spreads over the pool's workers and overlaps the
    /// I/O thread's work.
    job_weight: usize,
    jobs: AtomicU64,
    submitted: AtomicU64,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (jobs, submitted) = self.counts();
        f.debug_struct("Batcher")
            .field("pool", &self.pool)
            .field("job_weight", &self.job_weight)
            .field("jobs", &jobs)
            .field("submitted", &submitted)
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// A batcher sending to `pool`: at the end of each turn, or as soon as
    /// `job_weight` units of weight are queued (at least one submission per
    /// job whatever its weight).
    pub fn new(pool: Arc<SharedQueueThreadPool>, job_weight: usize) -> Batcher {
        Batcher {
            pool,
            queue: Mutex::new(Queue::default()),
            job_weight: job_weight.max(1),
            jobs: AtomicU64::new(0),
            submitted: AtomicU64::new(0),
        }
    }

    /// The pool the batches go to.
    pub fn pool(&self) -> &Arc<SharedQueueThreadPool> {
        &self.pool
    }

    /// Queues `f`, of `weight` (for a server, the requests it answers), to
    /// run on the pool in this turn's job, and returns a future of its
    /// result. A panic in `f` resolves it with
    /// [`KvsError::TaskPanicked`](crate::KvsError::TaskPanicked).
    pub fn run<F, T>(self: &Arc<Self>, weight: usize, f: F) -> Blocking<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (task, blocking) = bridged(f);
        self.submitted.fetch_add(1, Ordering::Relaxed);
        let (first, full) = {
            let mut queue = self.lock();
            queue.tasks.push(Box::new(task));
            queue.weight += weight;
            if queue.weight >= self.job_weight {
                // A full job goes at once rather than at the end of the
                // turn, so the pool works while the I/O thread is still
                // reading the turn's other connections.
                queue.weight = 0;
                (false, Some(std::mem::take(&mut queue.tasks)))
            } else {
                (queue.tasks.len() == 1, None)
            }
        };
        if let Some(tasks) = full {
            self.send(tasks);
        }
        // Exactly one flusher is pending while the queue is not empty: the
        // one spawned by the submission that found it empty.
        if first {
            let flush = FlushOnDrop(Arc::clone(self));
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                // If the runtime drops the task unpolled (shutting down),
                // dropping `flush` still sends the queue.
                runtime.spawn(async move {
                    tokio::task::yield_now().await;
                    drop(flush);
                });
            }
        }
        blocking
    }

    /// Pool jobs sent so far, and submissions they carried.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.jobs.load(Ordering::Relaxed),
            self.submitted.load(Ordering::Relaxed),
        )
    }

    /// Sends everything queued to the pool.
    fn flush(&self) {
        let tasks = {
            let mut queue = self.lock();
            queue.weight = 0;
            std::mem::take(&mut queue.tasks)
        };
        if !tasks.is_empty() {
            self.send(tasks);
        }
    }

    fn send(&self, tasks: Vec<Task>) {
        self.jobs.fetch_add(1, Ordering::Relaxed);
        // Each task catches its own panic (see `bridged`), so one failing
        // submission never keeps the others of its job from running.
        self.pool
            .spawn(move || tasks.into_iter().for_each(|task| task()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Only pushes and a `take` run under the lock; neither can leave
        // the vector inconsistent if a panic poisoned it.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Flushes its batcher when dropped: after the flusher's yield, or when
/// the runtime drops the flusher without running it.
struct FlushOnDrop(Arc<Batcher>);

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.0.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn batcher(threads: u32, job_weight: usize) -> Arc<Batcher> {
        let pool = Arc::new(<SharedQueueThreadPool as ThreadPool>::new(threads).unwrap());
        Arc::new(Batcher::new(pool, job_weight))
    }

    #[tokio::test]
    async fn submissions_of_one_turn_share_one_pool_job() {
        let b = batcher(2, 1000);
        let ran = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (b, ran) = (Arc::clone(&b), Arc::clone(&ran));
            tasks.push(tokio::spawn(async move {
                let out = b
                    .run(1, move || {
                        ran.fetch_add(1, Ordering::Relaxed);
                        i * 2
                    })
                    .await
                    .unwrap();
                assert_eq!(out, i * 2);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(ran.load(Ordering::Relaxed), 20);
        assert_eq!(b.counts(), (1, 20), "20 submissions of one turn, one job");
    }

    #[tokio::test]
    async fn a_full_job_goes_before_the_end_of_the_turn() {
        let b = batcher(2, 8);
        let futures: Vec<_> = (0..9).map(|i| b.run(4, move || i)).collect();
        assert_eq!(b.counts(), (4, 9), "sent at once: four jobs of two");
        for (i, f) in futures.into_iter().enumerate() {
            assert_eq!(f.await.unwrap(), i);
        }
        assert_eq!(b.counts(), (5, 9), "the ninth at the end of the turn");
    }

    #[tokio::test]
    async fn a_panic_fails_only_its_own_submission() {
        let b = batcher(1, 1000);
        let ok1 = b.run(1, || 1);
        let bad = b.run(1, || -> i32 { panic!("boom") });
        let ok2 = b.run(1, || 2);
        assert_eq!(ok1.await.unwrap(), 1);
        assert!(matches!(
            bad.await,
            Err(crate::KvsError::TaskPanicked(m)) if m == "boom"
        ));
        assert_eq!(ok2.await.unwrap(), 2);
        assert_eq!(b.counts(), (1, 3));
    }

    #[tokio::test]
    async fn later_turns_get_their_own_jobs() {
        let b = batcher(1, 1000);
        for i in 0..3 {
            assert_eq!(b.run(1, move || i).await.unwrap(), i);
        }
        assert_eq!(b.counts(), (3, 3));
    }

    #[test]
    fn outside_a_runtime_a_submission_goes_at_once() {
        let b = batcher(1, 1000);
        let f = b.run(1, || 7);
        assert_eq!(futures::executor::block_on(f).unwrap(), 7);
        assert_eq!(b.counts(), (1, 1));
    }
}
