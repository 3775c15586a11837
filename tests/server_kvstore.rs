//! The server in-process over a real `KvStore`: expiry, and shutdown
//! keeping every acknowledged write.

mod server_support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvs::server::ServerConfig;
use kvs::{KvStore, KvsClient, KvsEngine, KvsError, Options, SyncMode};
use server_support::TestServer;

fn open(dir: &std::path::Path) -> KvStore {
    let mut options = Options::default();
    options.sync = SyncMode::Never;
    KvStore::open_with(dir, options).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expires_values() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(open(dir.path()), ServerConfig::default()).await;
    let mut c = server.client().await;
    c.set_with_ttl("short", "v", Duration::from_millis(200))
        .await
        .unwrap();
    c.set_with_ttl("long", "v", Duration::from_secs(3600))
        .await
        .unwrap();
    c.set("forever", "v").await.unwrap();
    assert_eq!(c.get("short").await.unwrap().as_deref(), Some("v"));
    let start = Instant::now();
    while c.get("short").await.unwrap().is_some() {
        assert!(start.elapsed() < Duration::from_secs(5), "never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(start.elapsed() >= Duration::from_millis(150));
    assert_eq!(c.get("long").await.unwrap().as_deref(), Some("v"));
    assert_eq!(c.get("forever").await.unwrap().as_deref(), Some("v"));
    server.stop().await;
}

/// Writers pipeline sets until the server goes; every set that was
/// acknowledged is in the store reopened after `run` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(open(dir.path()), ServerConfig::default()).await;
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (addr, acked) = (server.addr, acked.clone());
        writers.push(tokio::spawn(async move {
            let mut c = KvsClient::connect(addr).await.unwrap();
            let mut next = 0u64;
            'outer: loop {
                let keys: Vec<String> = (next..next + 8).map(|i| format!("w{w}-{i}")).collect();
                for k in &keys {
                    let req = kvs::protocol::Request::Set {
                        key: k.as_str(),
                        value: k.as_str(),
                        ttl_ms: None,
                    };
                    c.queue(&req).unwrap();
                }
                for k in keys {
                    match c.recv().await {
                        Ok(kvs::protocol::Response::Ok) => {
                            acked.lock().unwrap().insert(k);
                        }
                        Ok(other) => panic!("unexpected {other:?}"),
                        Err(_) => break 'outer,
                    }
                }
                next += 8;
            }
        }));
    }
    let start = Instant::now();
    while acked.lock().unwrap().len() < 2000 {
        assert!(start.elapsed() < Duration::from_secs(30), "writers stalled");
        tokio::task::yield_now().await;
    }
    let addr = server.addr;
    server.stop().await;
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let store = open(dir.path());
    for k in &acked {
        assert_eq!(store.get(k.clone()).unwrap().as_ref(), Some(k), "lost {k}");
    }
    // The listener is gone.
    assert!(matches!(
        KvsClient::connect(addr).await,
        Err(KvsError::Io(_))
    ));
}
