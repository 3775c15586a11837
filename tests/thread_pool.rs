//! Thread pools and the async bridge, through the public API only.
//!
//! Every wait is bounded (`recv_timeout`, `wait_timeout`, `tokio::time::timeout`)
//! so a broken pool fails a test instead of hanging it, and no test sleeps to
//! synchronise.

use std::collections::HashSet;
use std::panic;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread;
use std::time::Duration;

use kvs::KvsError;
use kvs::thread_pool::{
    Blocking, NaiveThreadPool, SharedQueueThreadPool, ThreadPool, spawn_blocking,
};

/// Long enough for a loaded CI machine, short enough to fail a broken pool.
const WAIT: Duration = Duration::from_secs(20);

/// Marks panics the tests cause on purpose.
const INTENTIONAL: &str = "intentional test panic";

/// Keeps hundreds of intentional panics out of the test output; any other
/// panic still reaches the default hook.
fn quiet_intentional_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let text = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            if !text.is_some_and(|t| t.contains(INTENTIONAL)) {
                default(info);
            }
        }));
    });
}

/// Counts finished jobs and signals once when the `total`-th one finishes.
struct Countdown {
    done: AtomicUsize,
    total: usize,
    finished: Mutex<mpsc::Sender<()>>,
}

impl Countdown {
    fn new(total: usize) -> (Arc<Self>, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        let countdown = Countdown {
            done: AtomicUsize::new(0),
            total,
            finished: Mutex::new(tx),
        };
        (Arc::new(countdown), rx)
    }

    fn job_done(&self) {
        if self.done.fetch_add(1, Ordering::AcqRel) + 1 == self.total {
            self.finished.lock().unwrap().send(()).unwrap();
        }
    }

    fn count(&self) -> usize {
        self.done.load(Ordering::Acquire)
    }
}

/// Spawns `jobs` counting jobs on `pool` and waits (bounded) until all ran.
fn run_counted(pool: &impl ThreadPool, jobs: usize) -> Arc<Countdown> {
    let (countdown, finished) = Countdown::new(jobs);
    for _ in 0..jobs {
        let countdown = Arc::clone(&countdown);
        pool.spawn(move || countdown.job_done());
    }
    finished
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("only {} of {jobs} jobs ran", countdown.count()));
    countdown
}

/// A barrier whose waiters give up after a timeout, so a test whose jobs can
/// never all meet fails instead of leaving workers blocked forever (which
/// would also hang the pool's `drop`).
struct Rendezvous {
    arrived: Mutex<usize>,
    all_here: Condvar,
    size: usize,
}

impl Rendezvous {
    fn new(size: usize) -> Arc<Self> {
        Arc::new(Rendezvous {
            arrived: Mutex::new(0),
            all_here: Condvar::new(),
            size,
        })
    }

    /// True if all `size` parties arrived within `timeout`.
    fn arrive_and_wait(&self, timeout: Duration) -> bool {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.all_here.notify_all();
        let (arrived, _) = self
            .all_here
            .wait_timeout_while(arrived, timeout, |n| *n < self.size)
            .unwrap();
        *arrived >= self.size
    }
}

/// A pool that drops every job unrun, standing in for a pool that has shut
/// down or lost its workers.
struct DroppingPool;

impl ThreadPool for DroppingPool {
    fn new(_threads: u32) -> kvs::Result<Self> {
        Ok(DroppingPool)
    }

    fn spawn<F>(&self, job: F)
    where
        F: FnOnce() + Send + 'static,
    {
        drop(job);
    }
}

#[test]
fn zero_threads_is_invalid_input() {
    assert!(matches!(
        SharedQueueThreadPool::new(0),
        Err(KvsError::InvalidInput(_))
    ));
    assert!(matches!(
        NaiveThreadPool::new(0),
        Err(KvsError::InvalidInput(_))
    ));
}

#[test]
fn pool_is_shareable_and_bridge_future_is_unpin() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_unpin<T: Unpin>() {}
    assert_send_sync::<SharedQueueThreadPool>();
    assert_send_sync::<NaiveThreadPool>();
    assert_unpin::<Blocking<String>>();
}

#[test]
fn shared_queue_runs_thousands_of_jobs() {
    const JOBS: usize = 10_000;
    let pool = SharedQueueThreadPool::new(4).unwrap();
    assert_eq!(pool.threads(), 4);
    let countdown = run_counted(&pool, JOBS);
    assert_eq!(countdown.count(), JOBS);
}

#[test]
fn workers_are_named_and_exactly_threads_of_them_run_jobs() {
    const THREADS: u32 = 3;
    let pool = SharedQueueThreadPool::new(THREADS).unwrap();
    // Every worker has to hold one of these jobs at the same time for the
    // rendezvous to complete, so all of them report their names.
    let rendezvous = Rendezvous::new(THREADS as usize);
    let (tx, rx) = mpsc::channel();
    for _ in 0..THREADS {
        let rendezvous = Arc::clone(&rendezvous);
        let tx = tx.clone();
        pool.spawn(move || {
            let met = rendezvous.arrive_and_wait(WAIT);
            let name = thread::current().name().map(str::to_owned);
            tx.send((met, name)).unwrap();
        });
    }
    let mut names = HashSet::new();
    for _ in 0..THREADS {
        let (met, name) = rx.recv_timeout(WAIT).expect("a job never ran");
        assert!(met, "fewer than {THREADS} workers ran jobs at once");
        names.insert(name.expect("worker thread has no name"));
    }
    let expected: HashSet<String> = (0..THREADS).map(|i| format!("kvs-worker-{i}")).collect();
    assert_eq!(names, expected);
}

#[test]
fn panicking_jobs_do_not_reduce_the_workers() {
    quiet_intentional_panics();
    const THREADS: u32 = 4;
    const PANICS: usize = 500;
    let pool = SharedQueueThreadPool::new(THREADS).unwrap();

    let panicked = Arc::new(AtomicUsize::new(0));
    for _ in 0..PANICS {
        let panicked = Arc::clone(&panicked);
        pool.spawn(move || {
            panicked.fetch_add(1, Ordering::AcqRel);
            panic!("{INTENTIONAL}");
        });
    }

    // Queued behind the panics (FIFO). They can only all meet if `THREADS`
    // workers are alive to hold them at once: a pool that lost even one
    // worker leaves the rest timing out.
    let rendezvous = Rendezvous::new(THREADS as usize);
    let (tx, rx) = mpsc::channel();
    for _ in 0..THREADS {
        let rendezvous = Arc::clone(&rendezvous);
        let tx = tx.clone();
        pool.spawn(move || tx.send(rendezvous.arrive_and_wait(WAIT)).unwrap());
    }
    drop(tx);
    for i in 0..THREADS {
        let met = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("blocking job {i} never reported: {e}"));
        assert!(met, "not all {THREADS} workers survived the panics");
    }
    // Every panicking job was dequeued before the last rendezvous job, and
    // no worker is still inside one.
    assert_eq!(panicked.load(Ordering::Acquire), PANICS);
}

#[test]
fn drop_runs_queued_jobs_then_returns() {
    const JOBS: usize = 100;
    let pool = SharedQueueThreadPool::new(2).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..JOBS {
        let ran = Arc::clone(&ran);
        pool.spawn(move || {
            // Slow enough that most jobs are still queued when the pool is
            // dropped; this is the work, not synchronisation.
            thread::sleep(Duration::from_millis(2));
            ran.fetch_add(1, Ordering::AcqRel);
        });
    }
    // Dropped on another thread so that a `drop` that never returns (a
    // worker that does not exit) fails the test instead of hanging it.
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        drop(pool);
        tx.send(()).unwrap();
    });
    rx.recv_timeout(WAIT)
        .expect("dropping the pool did not return");
    // `drop` joined the workers, so every queued job has already run.
    assert_eq!(ran.load(Ordering::Acquire), JOBS);
}

#[test]
fn dropping_the_last_handle_inside_a_job_does_not_deadlock() {
    let pool = Arc::new(SharedQueueThreadPool::new(2).unwrap());
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    let in_job = Arc::clone(&pool);
    pool.spawn(move || {
        go_rx.recv_timeout(WAIT).unwrap();
        // The test thread has released its handle: this is the last one, so
        // the pool's `drop` runs here, on one of its own workers.
        drop(in_job);
        done_tx.send(()).unwrap();
    });
    drop(pool);
    go_tx.send(()).unwrap();
    done_rx
        .recv_timeout(WAIT)
        .expect("dropping the pool from its own worker did not return");
}

#[test]
fn naive_pool_runs_jobs() {
    const JOBS: usize = 200;
    let pool = NaiveThreadPool::new(8).unwrap();
    run_counted(&pool, JOBS);
}

#[tokio::test]
async fn bridge_returns_values() {
    let pool = SharedQueueThreadPool::new(2).unwrap();
    let value = tokio::time::timeout(WAIT, pool.run(|| 6 * 7))
        .await
        .expect("bridged job never resolved")
        .unwrap();
    assert_eq!(value, 42);

    let naive = NaiveThreadPool::new(1).unwrap();
    let text = tokio::time::timeout(WAIT, spawn_blocking(&naive, || "naive".to_owned()))
        .await
        .expect("bridged job never resolved")
        .unwrap();
    assert_eq!(text, "naive");
}

#[tokio::test]
async fn bridge_turns_panics_into_task_panicked() {
    quiet_intentional_panics();
    let pool = SharedQueueThreadPool::new(2).unwrap();

    let literal = pool.run(|| -> u32 { panic!("intentional test panic: literal") });
    match tokio::time::timeout(WAIT, literal).await.expect("hung") {
        Err(KvsError::TaskPanicked(msg)) => assert_eq!(msg, "intentional test panic: literal"),
        other => panic!("expected TaskPanicked, got {other:?}"),
    }

    let n = 3;
    let formatted = pool.run(move || -> u32 { panic!("{INTENTIONAL} #{n}") });
    match tokio::time::timeout(WAIT, formatted).await.expect("hung") {
        Err(KvsError::TaskPanicked(msg)) => assert_eq!(msg, format!("{INTENTIONAL} #3")),
        other => panic!("expected TaskPanicked, got {other:?}"),
    }

    // The bridge caught the panic inside the job: the pool still serves.
    let after = tokio::time::timeout(WAIT, pool.run(|| 1))
        .await
        .expect("hung");
    assert_eq!(after.unwrap(), 1);
}

#[tokio::test]
async fn bridge_reports_a_dropped_job_as_closed() {
    let pool = DroppingPool::new(1).unwrap();
    let result = tokio::time::timeout(WAIT, spawn_blocking(&pool, || 1))
        .await
        .expect("a dropped job must resolve, not hang");
    assert!(matches!(result, Err(KvsError::Closed(_))), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_bridged_calls_all_resolve() {
    const CALLS: u64 = 2_000;
    let pool = Arc::new(SharedQueueThreadPool::new(4).unwrap());
    // One Tokio task per call, as the server has one per connection.
    let tasks: Vec<_> = (0..CALLS)
        .map(|i| {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.run(move || i * 2).await })
        })
        .collect();
    let all = async {
        let mut sum = 0;
        for (i, task) in (0..CALLS).zip(tasks) {
            let doubled = task.await.unwrap().unwrap();
            assert_eq!(doubled, i * 2);
            sum += doubled;
        }
        sum
    };
    let sum = tokio::time::timeout(WAIT, all)
        .await
        .expect("not every bridged call resolved");
    assert_eq!(sum, CALLS * (CALLS - 1));
}
