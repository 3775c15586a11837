//! Shared by the RESP-over-TCP test files: a real kvs server in this
//! process on 127.0.0.1:0, on either engine, driven from plain threads
//! (raw sockets, child processes) or from async code through
//! [`KvsServer::block_on`]; and the check that a peer tool is installed.
#![allow(dead_code)] // each test file uses a different subset

use std::future::Future;
use std::net::SocketAddr;

use std::sync::Arc;
use std::time::Duration;

use kvs::server::{Password, ServerConfig};
use kvs::thread_pool::{SharedQueueThreadPool, ThreadPool};
use kvs::{KvStore, KvsEngine, MemoryEngine};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::resp_support::RawConn;

/// Which engine a server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Memory,
    /// A `KvStore` in a fresh temporary directory.
    KvStore,
}

pub const ENGINES: [Engine; 2] = [Engine::Memory, Engine::KvStore];

/// `kvs::server::run` in this process, with its own Tokio runtime, shut
/// down (and checked to shut down cleanly) on drop.
pub struct KvsServer {
    pub addr: SocketAddr,
    pub engine: Engine,
    token: CancellationToken,
    handle: Option<JoinHandle<kvs::Result<()>>>,
    // Dropped after the server stops (fields drop in declaration order
    // after `Drop::drop`, which stops it).
    rt: Runtime,
    _dir: Option<tempfile::TempDir>,
}

impl KvsServer {
    /// A server with default limits.
    pub fn start(engine: Engine) -> KvsServer {
        KvsServer::with_config(engine, ServerConfig::default())
    }

    /// A server whose clients must authenticate with `password`.
    pub fn with_password(engine: Engine, password: &str) -> KvsServer {
        let mut config = ServerConfig::default();
        config.password = Some(Password::new(password.to_owned()).unwrap());
        KvsServer::with_config(engine, config)
    }

    pub fn with_config(engine: Engine, config: ServerConfig) -> KvsServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (dir, handle, addr, token) = match engine {
            Engine::Memory => {
                let (h, a, t) = spawn(&rt, MemoryEngine::new(), config);
                (None, h, a, t)
            }
            Engine::KvStore => {
                let dir = tempfile::tempdir().unwrap();
                let store = KvStore::open(dir.path()).unwrap();
                let (h, a, t) = spawn(&rt, store, config);
                (Some(dir), h, a, t)
            }
        };
        KvsServer {
            addr,
            engine,
            token,
            handle: Some(handle),
            rt,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn connect(&self) -> RawConn {
        RawConn::connect(self.addr).expect("connect to kvs")
    }

    /// Runs `f` (a client, say) on the server's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Stops the server and asserts that `run` returned `Ok` in time.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        self.token.cancel();
        let result = self
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(15), handle).await });
        if !std::thread::panicking() {
            result
                .expect("server did not shut down within 15 s")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for KvsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn spawn<E: KvsEngine>(
    rt: &Runtime,
    engine: E,
    config: ServerConfig,
) -> (JoinHandle<kvs::Result<()>>, SocketAddr, CancellationToken) {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Arc::new(<SharedQueueThreadPool as ThreadPool>::new(4).unwrap());
        let token = CancellationToken::new();
        let handle = tokio::spawn(kvs::server::run(
            listener,
            engine,
            pool,
            config,
            token.clone(),
        ));
        (handle, addr, token)
    })
}

/// A `redis` crate multiplexed connection to `addr`. Its default
/// timeouts (1 s to connect, 500 ms per reply) are for production
/// servers; a debug build on a loaded CI machine gets 30 s.
pub async fn redis_connect(addr: SocketAddr) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(30)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}
