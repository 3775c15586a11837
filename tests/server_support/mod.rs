//! Shared by the server test files: an in-process server, an engine that
//! can hold requests inside it, and raw frame helpers.
#![allow(dead_code)] // each test file uses a different subset

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use kvs::engine::{EngineStats, Entry, Update};
use kvs::protocol::{FrameCodec, Response, decode_message};
use kvs::server::ServerConfig;
use kvs::thread_pool::{SharedQueueThreadPool, ThreadPool};
use kvs::{KvsClient, KvsEngine, MemoryEngine};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

/// A server running in this process on 127.0.0.1:0.
pub struct TestServer {
    pub addr: SocketAddr,
    pub token: CancellationToken,
    handle: JoinHandle<kvs::Result<()>>,
}

impl TestServer {
    pub async fn start<E: KvsEngine>(engine: E, config: ServerConfig) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Arc::new(<SharedQueueThreadPool as ThreadPool>::new(10).unwrap());
        let token = CancellationToken::new();
        let handle = tokio::spawn(kvs::server::run(
            listener,
            engine,
            pool,
            config,
            token.clone(),
        ));
        TestServer {
            addr,
            token,
            handle,
        }
    }

    pub async fn client(&self) -> KvsClient {
        KvsClient::connect(self.addr).await.unwrap()
    }

    /// Cancels the token and waits (bounded) for `run` to return `Ok`.
    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("server did not shut down within 10 s")
            .unwrap()
            .unwrap();
    }
}

/// A frame around `payload`, built by hand.
pub fn raw_frame(payload: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf.to_vec()
}

/// The next response on a raw socket; `None` if it closes first
/// (bounded wait).
pub async fn read_response(s: &mut TcpStream) -> Option<Response> {
    let mut codec = FrameCodec::new(1 << 24);
    let mut buf = BytesMut::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(frame) = codec.decode(&mut buf).unwrap() {
                return Some(decode_message(&frame).unwrap());
            }
            match s.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("no response within 10 s")
}

/// A memory engine whose `set` can be held at a gate, counting the calls
/// that entered; `set` of [`GatedEngine::PANIC_KEY`] panics.
#[derive(Clone, Default)]
pub struct GatedEngine {
    inner: MemoryEngine,
    state: Arc<GateState>,
}

#[derive(Default)]
struct GateState {
    closed: Mutex<bool>,
    changed: Condvar,
    entered: AtomicUsize,
    gets: AtomicUsize,
}

impl GatedEngine {
    pub const PANIC_KEY: &'static str = "panic!";
    /// `get` of this key fails as a damaged segment would.
    pub const CORRUPT_KEY: &'static str = "corrupt!";

    pub fn new() -> GatedEngine {
        GatedEngine::default()
    }

    pub fn close_gate(&self) {
        *self.state.closed.lock().unwrap() = true;
    }

    pub fn open_gate(&self) {
        *self.state.closed.lock().unwrap() = false;
        self.state.changed.notify_all();
    }

    pub fn gets(&self) -> usize {
        self.state.gets.load(Ordering::SeqCst)
    }

    /// Waits until `n` sets have entered the engine (bounded).
    pub async fn wait_entered(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while self.state.entered.load(Ordering::SeqCst) < n {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("requests never reached the engine");
    }

    pub fn inner_get(&self, key: &str) -> Option<String> {
        self.inner.get(key.to_owned()).unwrap()
    }
}

impl GatedEngine {
    /// What a set goes through before the inner engine: the panic key,
    /// the count, the gate.
    fn enter_set(&self, key: &str) {
        if key == GatedEngine::PANIC_KEY {
            panic!("test engine asked to panic");
        }
        self.state.entered.fetch_add(1, Ordering::SeqCst);
        let mut closed = self.state.closed.lock().unwrap();
        while *closed {
            closed = self.state.changed.wait(closed).unwrap();
        }
    }

    /// What a get goes through before the inner engine.
    fn enter_get(&self, key: &str) -> kvs::Result<()> {
        if key == GatedEngine::CORRUPT_KEY {
            return Err(kvs::KvsError::Corrupt {
                path: "/srv/secret/data/00000000000000000007.log".into(),
                offset: 257,
                reason: "checksum mismatch".to_owned(),
            });
        }
        self.state.gets.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl KvsEngine for GatedEngine {
    fn set(&self, key: String, value: String) -> kvs::Result<()> {
        self.enter_set(&key);
        self.inner.set(key, value)
    }

    fn set_from(&self, key: &str, value: &str, expires_at: u64) -> kvs::Result<()> {
        self.enter_set(key);
        self.inner.set_from(key, value, expires_at)
    }

    fn get(&self, key: String) -> kvs::Result<Option<String>> {
        self.enter_get(&key)?;
        self.inner.get(key)
    }

    fn get_with(&self, key: &str, f: &mut dyn FnMut(&[u8])) -> kvs::Result<bool> {
        self.enter_get(key)?;
        self.inner.get_with(key, f)
    }

    fn remove(&self, key: String) -> kvs::Result<()> {
        self.inner.remove(key)
    }

    fn set_expiring(&self, key: String, value: String, expires_at: u64) -> kvs::Result<()> {
        self.inner.set_expiring(key, value, expires_at)
    }

    fn get_entry(&self, key: &str) -> kvs::Result<Option<Entry>> {
        self.enter_get(key)?;
        self.inner.get_entry(key)
    }

    fn update<R>(
        &self,
        key: String,
        f: impl FnOnce(Option<Entry>) -> (Update, R),
    ) -> kvs::Result<R> {
        self.inner.update(key, f)
    }

    fn scan(&self, after: Option<&str>, limit: usize) -> kvs::Result<Vec<String>> {
        self.inner.scan(after, limit)
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn clear(&self) -> kvs::Result<()> {
        self.inner.clear()
    }

    fn flush(&self) -> kvs::Result<()> {
        Ok(())
    }

    fn stats(&self) -> EngineStats {
        self.inner.stats()
    }
}
