//! `kvs-bench` against the kvs server in-process: exact request counts,
//! open loop, the JSON output of the binary, and error handling (a server
//! that answers errors, one that hangs up).

mod bench_support;
mod server_support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use bench_support::{kvs_error_responder, responder};
use kvs::MemoryEngine;
use kvs::bench::{self, BenchOptions, KeyDist, Protocol, Ratio, Stop};
use kvs::server::ServerConfig;
use server_support::TestServer;

fn options(addr: SocketAddr) -> BenchOptions {
    BenchOptions {
        protocol: Protocol::Kvs,
        addr: addr.to_string(),
        connections: 7,
        pipeline: 4,
        stop: Stop::Requests(1000),
        keys: 500,
        ..BenchOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_request_count_is_exact() {
    let server = TestServer::start(MemoryEngine::new(), ServerConfig::default()).await;
    for (connections, pipeline, requests, dist) in [
        (7, 4, 1000, KeyDist::Uniform),
        (3, 1, 10, KeyDist::Zipf(0.99)),
        // Fewer requests than connections: some send none.
        (5, 16, 3, KeyDist::Uniform),
    ] {
        let opts = BenchOptions {
            connections,
            pipeline,
            stop: Stop::Requests(requests),
            key_dist: dist,
            preload: true,
            ..options(server.addr)
        };
        let report = bench::run(&opts).await.unwrap();
        let context = format!("{opts:?}\n{report}");
        assert_eq!(report.ops, requests, "{context}");
        assert_eq!(report.get.ops + report.set.ops, requests, "{context}");
        assert_eq!(report.all.ops, requests, "{context}");
        assert_eq!(report.errors, 0, "{context}");
        // Preloaded: every GET hits.
        assert_eq!(report.hits, report.get.ops, "{context}");
        assert_eq!(report.misses, 0, "{context}");
        assert_eq!(report.preload.as_ref().unwrap().keys, 500);
        assert!(report.all.p50_us > 0.0 && report.all.max_us >= report.all.p99_us);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mix_warmup_and_misses() {
    let server = TestServer::start(MemoryEngine::new(), ServerConfig::default()).await;
    // SET only, after a warm-up that is not counted.
    let opts = BenchOptions {
        ratio: Ratio { get: 0, set: 1 },
        warmup: Duration::from_millis(200),
        stop: Stop::Requests(300),
        ..options(server.addr)
    };
    let report = bench::run(&opts).await.unwrap();
    assert_eq!((report.ops, report.set.ops, report.get.ops), (300, 300, 0));
    assert_eq!(report.errors, 0);
    // GET only on keys never written: all misses, and misses are not
    // errors.
    let opts = BenchOptions {
        ratio: Ratio { get: 1, set: 0 },
        keys: 1_000_000,
        seed: 9,
        ..options(server.addr)
    };
    let report = bench::run(&opts).await.unwrap();
    assert_eq!((report.ops, report.get.ops), (1000, 1000));
    assert_eq!(report.errors, 0);
    assert!(report.misses > 900, "{report}");
    assert_eq!(report.hits + report.misses, 1000);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_and_open_loop() {
    let server = TestServer::start(MemoryEngine::new(), ServerConfig::default()).await;
    let opts = BenchOptions {
        stop: Stop::Duration(Duration::from_millis(300)),
        ..options(server.addr)
    };
    let report = bench::run(&opts).await.unwrap();
    assert!(report.ops > 0 && report.errors == 0, "{report}");
    assert!(
        (0.29..5.0).contains(&report.elapsed_secs),
        "elapsed {}",
        report.elapsed_secs
    );
    // Open loop at 2000 req/s: 400 requests take about 0.2 s, not less.
    let opts = BenchOptions {
        rate: Some(2000.0),
        connections: 4,
        stop: Stop::Requests(400),
        ..options(server.addr)
    };
    let report = bench::run(&opts).await.unwrap();
    assert_eq!(report.ops, 400, "{report}");
    assert_eq!(report.errors, 0);
    assert!(
        (0.18..5.0).contains(&report.elapsed_secs),
        "open loop ran too fast: {report}"
    );
    server.stop().await;
}

fn kvs_bench(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kvs-bench"))
        .args(args)
        .output()
        .unwrap()
}

fn args(addr: SocketAddr, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--addr".to_owned(), addr.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_writes_json_with_every_field() {
    let server = TestServer::start(MemoryEngine::new(), ServerConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let argv = args(
        server.addr,
        &[
            "--requests",
            "2000",
            "-c",
            "4",
            "-P",
            "8",
            "--key-dist",
            "zipf:1.1",
            "--keys",
            "1000",
            "-d",
            "64",
            "--preload",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    let out = tokio::task::spawn_blocking(move || kvs_bench(&argv))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2000 requests"), "{stdout}");
    // Stderr is not a terminal here: no progress line.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("req/s"));

    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["protocol"], "kvs");
    assert_eq!(doc["ops"], 2000);
    assert_eq!(doc["errors"], 0);
    assert_eq!(doc["connections"], 4);
    assert_eq!(doc["pipeline"], 8);
    assert_eq!(doc["ratio"], "9:1");
    assert_eq!(doc["key_dist"], "zipf:1.1");
    assert_eq!(doc["value_size"], 64);
    assert_eq!(doc["requests"], 2000);
    assert_eq!(doc["preload"]["keys"], 1000);
    assert!(doc["rate"].is_null());
    // Closed loop: no schedule to keep, no warnings.
    assert!(doc["schedule"].is_null());
    assert_eq!(doc["warnings"], serde_json::json!([]));
    // Preloaded: every GET hits.
    assert_eq!(doc["hit_ratio"], 1.0);
    assert_eq!(doc["on_miss"], "none");
    assert!(doc["kbytes_per_sec"].as_f64().unwrap() > 0.0);
    assert!(doc["bytes_out"].as_u64().unwrap() > 2000 * 16);
    assert!(doc["bytes_in"].as_u64().unwrap() > 0);
    assert!(doc["throughput"].as_f64().unwrap() > 0.0);
    assert_eq!(
        doc["hits"].as_u64().unwrap() + doc["misses"].as_u64().unwrap(),
        doc["get"]["ops"].as_u64().unwrap()
    );
    for op in ["get", "set", "all"] {
        for field in [
            "ops",
            "throughput",
            "errors",
            "mean_us",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
        ] {
            assert!(doc[op][field].is_number(), "{op}.{field} in {doc}");
        }
        let p = |f: &str| doc[op][f].as_f64().unwrap();
        assert!(p("p50_us") <= p("p90_us") && p("p90_us") <= p("p99_us"));
        assert!(p("p99_us") <= p("p999_us") && p("p999_us") <= p("max_us") * 1.001);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_responses_fail_the_run() {
    let addr = responder(|s| kvs_error_responder(s, None)).await;
    // Library: every request is counted, as an error.
    let report = bench::run(&options(addr)).await.unwrap();
    assert_eq!(report.ops, 1000);
    assert_eq!(report.errors, 1000, "{report}");
    assert_eq!(report.get.errors + report.set.errors, 1000);
    assert!(
        report.error_samples[0].contains("injected failure"),
        "{report}"
    );

    // Binary: exit 1, or 0 with --allow-errors.
    let argv = args(addr, &["--requests", "100", "-c", "2"]);
    let mut allowed = argv.clone();
    allowed.push("--allow-errors".into());
    let (failed, allowed) =
        tokio::task::spawn_blocking(move || (kvs_bench(&argv), kvs_bench(&allowed)))
            .await
            .unwrap();
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    assert!(String::from_utf8_lossy(&failed.stderr).contains("100 requests failed"));
    assert!(String::from_utf8_lossy(&failed.stdout).contains("injected failure"));
    assert_eq!(allowed.status.code(), Some(0), "{allowed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_hangs_up_is_an_error() {
    // Answers 10 requests per connection, then closes.
    let addr = responder(|s| kvs_error_responder(s, Some(10))).await;
    let opts = BenchOptions {
        connections: 2,
        pipeline: 4,
        ..options(addr)
    };
    let report = tokio::time::timeout(Duration::from_secs(20), bench::run(&opts))
        .await
        .expect("the run must end when its connections fail")
        .unwrap();
    assert!(report.ops < 1000, "{report}");
    assert!(report.errors >= report.ops, "{report}");
    assert!(
        report
            .error_samples
            .iter()
            .any(|m| m.contains("failed") && m.contains("closed")),
        "{report}"
    );

    // Nothing listening: the run cannot start.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = bench::run(&options(closed)).await.unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
}
