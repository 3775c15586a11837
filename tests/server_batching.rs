//! The requests of many connections share pool jobs (one per turn of the
//! I/O thread); each connection still gets its answers in its own order,
//! and reads its own writes of a key.

mod server_support;

use kvs::protocol::{ErrorKind, Request, Response};
use kvs::server::ServerConfig;
use kvs::{KvStore, KvsEngine, MemoryEngine, Options, SyncMode};
use server_support::TestServer;

/// Rounds of `SET own`, `GET own`, `DEL own`, `GET own`, `SET shared`,
/// `GET own2` per connection: pipelined (all rounds at once) on even
/// connections, one request at a time on odd ones.
async fn many_connections_keep_their_order(server: &TestServer, connections: usize, rounds: usize) {
    let mut tasks = Vec::new();
    for conn in 0..connections {
        let mut client = server.client().await;
        tasks.push(tokio::spawn(async move {
            let own = format!("own-{conn}");
            let own2 = format!("own2-{conn}");
            let values: Vec<String> = (0..rounds).map(|r| format!("{conn}:{r}")).collect();
            let mut requests = Vec::new();
            let mut expected = Vec::new();
            for value in &values {
                requests.push(Request::Set {
                    key: own.as_str(),
                    value: value.as_str(),
                    ttl_ms: None,
                });
                expected.push(Response::Ok);
                requests.push(Request::Get { key: own.as_str() });
                expected.push(Response::Value(Some(value.clone())));
                requests.push(Request::Remove { key: own.as_str() });
                expected.push(Response::Ok);
                requests.push(Request::Get { key: own.as_str() });
                expected.push(Response::Value(None));
                requests.push(Request::Set {
                    key: "shared",
                    value: value.as_str(),
                    ttl_ms: None,
                });
                expected.push(Response::Ok);
                requests.push(Request::Set {
                    key: own2.as_str(),
                    value: value.as_str(),
                    ttl_ms: None,
                });
                expected.push(Response::Ok);
                requests.push(Request::Get { key: own2.as_str() });
                expected.push(Response::Value(Some(value.clone())));
            }
            let got = if conn % 2 == 0 {
                client.pipeline(&requests).await.unwrap()
            } else {
                let mut got = Vec::new();
                for request in &requests {
                    got.extend(
                        client
                            .pipeline(std::slice::from_ref(request))
                            .await
                            .unwrap(),
                    );
                }
                got
            };
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                assert_eq!(g, e, "connection {conn}, request {i}");
            }
            assert_eq!(got.len(), expected.len(), "connection {conn}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Removing a key nobody wrote is still an error, not a lost request.
    let mut client = server.client().await;
    let missing = client
        .pipeline(&[Request::Remove { key: "never" }])
        .await
        .unwrap();
    assert!(matches!(
        &missing[..],
        [Response::Error {
            kind: ErrorKind::KeyNotFound,
            ..
        }]
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_sharing_pool_jobs_keep_order_on_the_memory_engine() {
    let server = TestServer::start(MemoryEngine::new(), ServerConfig::default()).await;
    many_connections_keep_their_order(&server, 40, 60).await;
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn connections_sharing_pool_jobs_keep_order_on_one_io_thread() {
    let server = TestServer::start(MemoryEngine::new(), ServerConfig::default()).await;
    many_connections_keep_their_order(&server, 40, 60).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_wait_for_the_disk_keep_order_in_jobs_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::default();
    options.sync = SyncMode::Always;
    let store = KvStore::open_with(dir.path(), options).unwrap();
    // Under --sync always a write waits for an fsync: kept out of shared
    // jobs, where reads still go.
    assert!(!store.shares_pool_jobs(true));
    assert!(store.shares_pool_jobs(false));
    let server = TestServer::start(store.clone(), ServerConfig::default()).await;
    many_connections_keep_their_order(&server, 16, 10).await;
    server.stop().await;
    assert!(store.get("shared".to_owned()).unwrap().is_some());
}
