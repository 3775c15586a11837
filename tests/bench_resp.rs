//! `kvs-bench --protocol resp`: against a tiny in-test RESP2 responder,
//! and against `redis-server` itself when it is installed.

mod bench_support;

use std::net::SocketAddr;
use std::process::Command;

use bench_support::{Redis, resp_responder, responder};
use kvs::bench::{self, BenchOptions, KeyDist, OnMiss, Protocol, Ratio, Scan, Stop};

fn options(addr: SocketAddr) -> BenchOptions {
    BenchOptions {
        protocol: Protocol::Resp,
        addr: addr.to_string(),
        connections: 5,
        pipeline: 8,
        stop: Stop::Requests(2000),
        keys: 300,
        ..BenchOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_responder_exact_counts_and_hits() {
    let addr = responder(|s| resp_responder(s, false)).await;
    for pipeline in [1, 8] {
        let opts = BenchOptions {
            pipeline,
            // One connection: the responder's map is per connection, so
            // preload and GETs must share it to hit.
            connections: 1,
            preload: true,
            value_size: 4096,
            ..options(addr)
        };
        let report = bench::run(&opts).await.unwrap();
        assert_eq!(report.ops, 2000, "{report}");
        assert_eq!(report.errors, 0, "{report}");
        assert_eq!(report.hits, report.get.ops, "{report}");
    }
    // Without a preload, many connections: misses, no errors.
    let report = bench::run(&options(addr)).await.unwrap();
    assert_eq!((report.ops, report.errors), (2000, 0), "{report}");
    assert_eq!(report.hits + report.misses, report.get.ops);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_error_replies_are_counted() {
    let addr = responder(|s| resp_responder(s, true)).await;
    let report = bench::run(&options(addr)).await.unwrap();
    assert_eq!(report.ops, 2000);
    assert_eq!(report.errors, 2000, "{report}");
    assert!(
        report
            .error_samples
            .iter()
            .any(|m| m == "ERR injected failure")
    );
    // The binary exits non-zero.
    let out = Command::new(env!("CARGO_BIN_EXE_kvs-bench"))
        .args(["--protocol", "resp", "--addr", &addr.to_string()])
        .args(["--requests", "50", "-c", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_redis_server() {
    let Some(redis) = Redis::start_or_skip("against_redis_server") else {
        return;
    };
    for (ratio, dist, pipeline) in [
        (Ratio { get: 9, set: 1 }, KeyDist::Uniform, 1),
        (Ratio { get: 1, set: 0 }, KeyDist::Zipf(0.99), 16),
        (Ratio { get: 0, set: 1 }, KeyDist::Uniform, 4),
    ] {
        let opts = BenchOptions {
            ratio,
            key_dist: dist,
            pipeline,
            connections: 10,
            preload: true,
            value_size: 100,
            ..options(redis.addr)
        };
        let report = bench::run(&opts).await.unwrap();
        assert_eq!(report.ops, 2000, "{report}");
        assert_eq!(report.errors, 0, "{report}");
        assert_eq!(report.hits, report.get.ops, "{report}");
    }
    // Cache-aside with scans over RESP: every miss, scan or not, is filled.
    let opts = BenchOptions {
        ratio: Ratio { get: 1, set: 0 },
        key_dist: KeyDist::Zipf(0.9),
        keys: 2000,
        connections: 2,
        pipeline: 4,
        on_miss: OnMiss::Set,
        scan: Some(Scan {
            every: 50,
            length: 5,
        }),
        ..options(redis.addr)
    };
    let report = bench::run(&opts).await.unwrap();
    assert_eq!((report.ops, report.errors), (2000, 0), "{report}");
    assert!(report.scan_misses > 0, "{report}");
    assert_eq!(report.scan_hits, 0, "{report}");
    assert_eq!(
        report.fill.ops,
        report.misses + report.scan_misses,
        "{report}"
    );
    drop(redis);
}
