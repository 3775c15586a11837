//! A fixed set of workers pulling jobs from one shared queue.
//!
//! The queue is a std `mpsc` channel whose receiver sits behind a `Mutex`:
//! std has no stable multi-consumer channel, and the mutex is held only by
//! the one worker currently waiting in `recv`, so it adds a futex hand-off
//! per job and no spinning. Closing the sender is the shutdown signal: `recv`
//! keeps returning queued jobs and fails only once the queue is empty, so
//! workers drain the queue and then exit by themselves.

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
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
    /// `None` only inside `drop`, where taking it closes the queue.
    sender: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    threads: u32,
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
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        // Built before the workers so that a failed spawn below returns
        // through `Drop`, which closes the queue and joins the workers
        // already started instead of leaking them.
        let mut pool = SharedQueueThreadPool {
            sender: Some(sender),
            workers: Vec::with_capacity(threads as usize),
            threads,
        };
        for id in 0..threads {
            let receiver = Arc::clone(&receiver);
            let handle = thread::Builder::new()
                .name(format!("kvs-worker-{id}"))
                .spawn(move || worker_loop(&receiver))?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    fn spawn<F>(&self, job: F)
    where
        F: FnOnce() + Send + 'static,
    {
        let Some(sender) = &self.sender else {
            // Unreachable: the sender is taken only in `drop`, and `spawn`
            // cannot be called on a pool that is being dropped.
            return;
        };
        // Fails only if every receiver is gone, i.e. every worker has exited,
        // which catching panics rules out short of a worker being killed by
        // something other than a job's panic. The job (and any reply channel
        // it owns) is dropped with the error, so a bridged caller sees
        // `Closed` rather than waiting forever.
        if sender.send(Box::new(job)).is_err() {
            tracing::error!("thread pool has no workers left; job dropped");
        }
    }
}

/// Takes jobs until the queue is closed and empty.
///
/// NOTE: an idle worker blocks in `recv` at once. It used to yield its core
/// up to 200 times first, to take the next job without a futex wake; under
/// load that yielding was the largest single cost of the server (a quarter
/// of its CPU time in `sched_yield` and the context switches it causes,
/// about four calls per request at pipeline 1; BENCHMARKS.md, "Per-request
/// cost"). The channel wakes a worker only when one is blocked, so a busy
/// pool takes queued jobs without any system call.
fn worker_loop(receiver: &Mutex<Receiver<Job>>) {
    loop {
        // The guard lives only for this statement: the lock is released
        // before the job runs, so other workers can take the next job.
        // Poisoning would need a panic while the lock is held, and only
        // `recv` runs under it; recovering the guard is still correct, as a
        // `Receiver` has no invariant a panic could break.
        let next = receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        // Queue closed and drained: the pool is being dropped.
        let Ok(job) = next else { return };
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
        // Closing the queue is the only shutdown signal: workers blocked in
        // `recv` wake, drain what is queued, and exit.
        drop(self.sender.take());
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
