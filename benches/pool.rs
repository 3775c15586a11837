//! Dispatch cost of the thread pools: 10k tiny jobs (one atomic increment
//! each), timed from the first spawn until the last job has finished.
//!
//! Peers in the same run, all with `THREADS` threads: rayon's `spawn`, and
//! Tokio's `spawn_blocking` on a multi-thread runtime. The bridged variant is
//! what the server pays per engine call: `pool.run(..)` awaited from Tokio.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use criterion::{Criterion, criterion_group, criterion_main};
use kvs::thread_pool::{SharedQueueThreadPool, ThreadPool};

const JOBS: usize = 10_000;
/// The bench machine has 2 cores; more threads would only measure
/// oversubscription.
const THREADS: u32 = 2;

/// Spawns `JOBS` increments through `spawn` and waits until the last one
/// has run; the job that brings the count to `JOBS` sends the signal.
fn run_batch(spawn: impl Fn(Box<dyn FnOnce() + Send + 'static>)) {
    let counter = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    for _ in 0..JOBS {
        let counter = Arc::clone(&counter);
        let done_tx = done_tx.clone();
        spawn(Box::new(move || {
            if counter.fetch_add(1, Ordering::AcqRel) + 1 == JOBS {
                let _ = done_tx.send(());
            }
        }));
    }
    done_rx.recv().expect("a pool dropped a job");
}

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("dispatch_10k_jobs_{THREADS}_threads"));

    let pool = SharedQueueThreadPool::new(THREADS).expect("start pool");
    group.bench_function("shared_queue", |b| {
        b.iter(|| run_batch(|job| pool.spawn(job)))
    });

    let rayon_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS as usize)
        .build()
        .expect("start rayon pool");
    group.bench_function("rayon_spawn", |b| {
        b.iter(|| run_batch(|job| rayon_pool.spawn(job)))
    });

    // Worker and blocking threads both capped at THREADS, so the blocking
    // pool has the same number of threads as the others.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS as usize)
        .max_blocking_threads(THREADS as usize)
        .build()
        .expect("start tokio runtime");
    group.bench_function("tokio_spawn_blocking", |b| {
        let _entered = runtime.enter();
        b.iter(|| {
            run_batch(|job| {
                drop(tokio::task::spawn_blocking(job));
            })
        })
    });

    group.bench_function("shared_queue_bridge_awaited", |b| {
        b.iter(|| {
            let counter = Arc::new(AtomicUsize::new(0));
            let calls: Vec<_> = (0..JOBS)
                .map(|_| {
                    let counter = Arc::clone(&counter);
                    pool.run(move || counter.fetch_add(1, Ordering::AcqRel))
                })
                .collect();
            let results = runtime.block_on(futures::future::join_all(calls));
            black_box(results);
            assert_eq!(counter.load(Ordering::Acquire), JOBS);
        })
    });

    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
