//! A fixed set of workers pulling jobs from one shared queue.
//!
//! The queue is a `VecDeque` under a std `Mutex`, with a `Condvar` for
//! idle workers and a count of them, so that a job wakes at most one
//! worker and only when one is idle. (It was a std `mpsc` receiver behind
//! a mutex: the worker waiting in `recv` held the mutex, so every job woke
//! two workers, the one that took it and, through the mutex, the next
//! one to wait: two context switches per job instead of one;
//! BENCHMARKS.md, "Per-request cost".) Closing the queue is the shutdown
//! signal: workers keep taking queued jobs and exit once it is empty.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use super::{Blocking, ThreadPool, check_threads, panic_message, spawn_blocking};
use crate::Result;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A pool of `threads` named workers (`kvs-worker-0`, `kvs-worker-1`, ...)
/// sharing one FIFO queue.
///
/// A panicking job is caught and logged; its worker goes on with the next
/// job, so the pool never shrinks. Dropping the pool closes the queue, waits
/// for the jobs already queued to run, and joins every worker.
///
/// The pool is `Send + Sync`: share it behind an `Arc` and call
/// [`spawn`](ThreadPool::spawn) or [`run`](Self::run) from any thread or task.
#[derive(Debug)]
pub struct SharedQueueThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: u32,
}

/// What the pool and its workers share.
#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a job is queued for an idle worker, and (to all) on
    /// close.
    work: Condvar,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Workers waiting on `work`.
    idle: usize,
    /// Set by `drop`: workers exit once `jobs` is empty.
    closed: bool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("jobs", &self.jobs.len())
            .field("idle", &self.idle)
            .field("closed", &self.closed)
            .finish()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Only queue operations run under the lock (jobs run outside it),
        // and none of them can leave the queue half-changed: recovering a
        // poisoned guard is correct.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SharedQueueThreadPool {
    /// The number of worker threads, fixed at creation.
    pub fn threads(&self) -> u32 {
        self.threads
    }

    /// Runs `f` on the pool and returns a future of its result; shorthand
    /// for [`spawn_blocking`]`(self, f)`.
    ///
    /// A panic in `f` resolves to
    /// [`KvsError::TaskPanicked`](crate::KvsError::TaskPanicked).
    pub fn run<F, T>(&self, f: F) -> Blocking<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        spawn_blocking(self, f)
    }
}

impl ThreadPool for SharedQueueThreadPool {
    fn new(threads: u32) -> Result<Self> {
        check_threads(threads)?;
        // Built before the workers so that a failed spawn below returns
        // through `Drop`, which closes the queue and joins the workers
        // already started instead of leaking them.
        let mut pool = SharedQueueThreadPool {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                work: Condvar::new(),
            }),
            workers: Vec::with_capacity(threads as usize),
            threads,
        };
        for id in 0..threads {
            let shared = Arc::clone(&pool.shared);
            let handle = thread::Builder::new()
                .name(format!("kvs-worker-{id}"))
                .spawn(move || worker_loop(&shared))?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    fn spawn<F>(&self, job: F)
    where
        F: FnOnce() + Send + 'static,
    {
        let wake = {
            let mut queue = self.shared.lock();
            if queue.closed {
                // Unreachable: the queue is closed only in `drop`, and
                // `spawn` cannot be called on a pool that is being dropped.
                // The job (and any reply channel it owns) is dropped, so a
                // bridged caller sees `Closed` rather than waiting forever.
                tracing::error!("thread pool is closed; job dropped");
                return;
            }
            queue.jobs.push_back(Box::new(job));
            queue.idle > 0
        };
        // A busy pool takes the job when a worker finishes its current
        // one, without any system call.
        if wake {
            self.shared.work.notify_one();
        }
    }
}

/// Takes jobs until the queue is closed and empty.
///
/// NOTE: an idle worker waits on the condvar at once. It used to yield its core
/// up to 200 times first, to take the next job without a futex wake; under
/// load that yielding was the largest single cost of the server (a quarter
/// of its CPU time in `sched_yield` and the context switches it causes,
/// about four calls per request at pipeline 1; BENCHMARKS.md, "Per-request
/// cost"). A job wakes a worker only when one is idle, so a busy pool
/// takes queued jobs without any system call.
fn worker_loop(shared: &Shared) {
    loop {
        let job = {
            let mut queue = shared.lock();
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                // Closed and drained: the pool is being dropped.
                if queue.closed {
                    return;
                }
                queue.idle += 1;
                queue = shared
                    .work
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
                queue.idle -= 1;
            }
        };
        // Catch rather than respawn: the worker keeps its name and its place
        // in `workers` (so `drop` joins exactly the threads it started),
        // there is no window with one worker fewer, and no thread creation,
        // which could itself fail, on the panic path. The cost is that a
        // job's thread-local state outlives its panic; jobs here keep none.
        // `AssertUnwindSafe`: the job is consumed by the call, so nothing
        // observes it half-run; shared state it touched is guarded by its
        // own locks (and their poisoning), not by this pool.
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(job)) {
            tracing::error!(
                worker = thread::current().name().unwrap_or("kvs-worker"),
                panic = %panic_message(&*payload),
                "job panicked; worker continues"
            );
            // A payload whose own `Drop` panics would otherwise unwind out
            // of the loop and kill the worker after all.
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
        }
    }
}

impl Drop for SharedQueueThreadPool {
    fn drop(&mut self) {
        // Closing the queue is the only shutdown signal: idle workers wake,
        // drain what is queued, and exit.
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
        let current = thread::current().id();
        for worker in self.workers.drain(..) {
            // A job may hold the last handle to the pool, so `drop` can run
            // on a worker; joining itself would fail, and that worker exits
            // on its own once its job returns and it sees the closed queue.
            if worker.thread().id() == current {
                continue;
            }
            if worker.join().is_err() {
                // Unreachable while `worker_loop` catches every job panic;
                // logged rather than re-raised because panicking in `drop`
                // during an unwind would abort.
                tracing::error!("a pool worker panicked outside a job");
            }
        }
    }
}
