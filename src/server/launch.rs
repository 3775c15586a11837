//! Starting a server from settings: what `kvs-server` does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::engine::with_context;
use super::{EngineKind, ServerConfig, check_and_record_engine, run};
use crate::engine::memory::MemoryOptions;
use crate::thread_pool::{SharedQueueThreadPool, ThreadPool};
use crate::{KvStore, KvsEngine, KvsError, MemoryEngine, Options, Result, SyncMode};

/// Everything `kvs-server` is started with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Engine to serve.
    pub engine: EngineKind,
    /// Data directory: the store (kvs) and the engine record.
    pub dir: PathBuf,
    /// Durability of the kvs engine's writes.
    pub sync: SyncMode,
    /// Threads of the pool running engine calls.
    pub threads: u32,
    /// Limits and timeouts.
    pub config: ServerConfig,
    /// Memory bound and eviction policy of the memory engine; the kvs
    /// engine refuses a bound (its values are on disk).
    pub memory: MemoryOptions,
}

/// Checks the data directory, opens the engine, binds `settings.addr` and
/// runs the server until `token` is cancelled.
///
/// Fails before binding when the directory is unusable, records another
/// engine ([`KvsError::EngineMismatch`]) or is locked by another process.
pub async fn serve(mut settings: Settings, token: CancellationToken) -> Result<()> {
    settings.config.validate()?;
    describe(&mut settings);
    if settings.engine == EngineKind::Kvs && settings.memory.max_memory != 0 {
        return Err(KvsError::InvalidInput(
            "--max-memory bounds the memory engine only (the kvs engine keeps values on disk); \
             use --engine memory, or drop --max-memory"
                .to_owned(),
        ));
    }
    let dir = settings.dir.clone();
    let dir_context = |e| with_context(e, &format!("cannot use data directory {}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(dir_context)?;
    if !std::fs::metadata(&dir).map_err(dir_context)?.is_dir() {
        return Err(KvsError::InvalidInput(format!(
            "data directory {} is not a directory",
            dir.display()
        )));
    }
    std::fs::read_dir(&dir).map_err(dir_context)?;
    check_and_record_engine(&dir, settings.engine)?;
    let pool = Arc::new(SharedQueueThreadPool::new(settings.threads)?);

    match settings.engine {
        EngineKind::Kvs => {
            let options = Options {
                sync: settings.sync,
                ..Options::default()
            };
            let open_dir = dir.clone();
            let store = pool
                .run(move || KvStore::open_with(open_dir, options))
                .await??;
            start(settings, store, pool, token).await
        }
        EngineKind::Memory => {
            let engine = MemoryEngine::with_options(settings.memory);
            start(settings, engine, pool, token).await
        }
    }
}

/// What RESP `INFO` and `CONFIG GET` report of these settings.
fn describe(settings: &mut Settings) {
    let persistent = settings.engine == EngineKind::Kvs;
    let cfg = &mut settings.config;
    cfg.info.engine = settings.engine.name().to_owned();
    cfg.info.persistent = persistent;
    let fsync = match settings.sync {
        SyncMode::Always => "always",
        SyncMode::EverySec => "everysec",
        SyncMode::Never => "no",
    };
    let mut set = |name: &str, value: String| cfg.config_get.push((name.to_owned(), value));
    set(
        "appendonly",
        if persistent { "yes" } else { "no" }.to_owned(),
    );
    set("appendfsync", fsync.to_owned());
    set("maxmemory", settings.memory.max_memory.to_string());
    let policy = match settings.memory.eviction.to_string().as_str() {
        "noeviction" => "noeviction".to_owned(),
        other => format!("allkeys-{other}"),
    };
    set("maxmemory-policy", policy);
}

async fn start<E: KvsEngine>(
    settings: Settings,
    engine: E,
    pool: Arc<SharedQueueThreadPool>,
    token: CancellationToken,
) -> Result<()> {
    let listener = TcpListener::bind(settings.addr)
        .await
        .map_err(|e| with_context(e, &format!("cannot listen on {}", settings.addr)))?;
    let addr = listener.local_addr()?;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        engine = %settings.engine,
        %addr,
        dir = %settings.dir.display(),
        sync = %settings.sync,
        threads = settings.threads,
        max_memory = settings.memory.max_memory,
        eviction = %settings.memory.eviction,
        "kvs-server listening on {addr}"
    );
    run(listener, engine, pool, settings.config, token).await
}
