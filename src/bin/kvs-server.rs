//! `kvs-server`: serves a kvs engine over TCP. All logic lives in
//! [`kvs::server`]; this parses arguments, starts logging and handles
//! signals.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kvs::engine::memory::{EvictionPolicy, MemoryOptions, parse_size};
use kvs::server::{EngineKind, ServerConfig, Settings};
use kvs::{DEFAULT_ADDR, SyncMode};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Serve a kvs key-value store over TCP.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Address to listen on: IP:PORT, [IPv6]:PORT or HOST:PORT (a name is
    /// resolved through /etc/hosts and /etc/resolv.conf; the first address
    /// is used).
    #[arg(long, env = "KVS_ADDR", default_value = DEFAULT_ADDR)]
    addr: String,
    /// Storage engine: kvs (persistent) or memory (cache only).
    #[arg(long, env = "KVS_ENGINE", default_value = "kvs")]
    engine: EngineKind,
    /// Data directory [default: the current directory].
    #[arg(long, env = "KVS_DIR")]
    dir: Option<PathBuf>,
    /// When writes reach the disk: always, every-sec or never.
    #[arg(long, env = "KVS_SYNC", default_value = "every-sec")]
    sync: SyncMode,
    /// Threads running engine calls [default: the number of CPUs].
    #[arg(long, env = "KVS_THREADS")]
    threads: Option<u32>,
    /// Threads running the network side (the async runtime) [default: half
    /// the CPUs, at least 1]. Engine calls run on the --threads pool.
    #[arg(long, env = "KVS_IO_THREADS")]
    io_threads: Option<usize>,
    /// Connections served at once; more are refused with an error.
    #[arg(long, env = "KVS_MAX_CONNECTIONS", default_value_t = ServerConfig::default().max_connections)]
    max_connections: usize,
    /// Seconds a connection may stay idle between requests.
    #[arg(long, env = "KVS_IDLE_TIMEOUT", default_value_t = ServerConfig::default().idle_timeout.as_secs())]
    idle_timeout: u64,
    /// Memory bound of the memory engine: bytes, or with kb/mb/gb
    /// (e.g. 512mb, 2gb); 0 for none. Refused with the kvs engine.
    #[arg(long, env = "KVS_MAX_MEMORY", value_parser = parse_max_memory, default_value = "0")]
    max_memory: u64,
    /// What the memory engine does at --max-memory: noeviction (refuse
    /// writes), lru, sieve or s3fifo.
    #[arg(long, env = "KVS_EVICTION", default_value_t = EvictionPolicy::DEFAULT)]
    eviction: EvictionPolicy,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, env = "KVS_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

fn parse_max_memory(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match EnvFilter::try_new(&cli.log_level) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("kvs-server: invalid --log-level `{}`: {e}", cli.log_level);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvs-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = match cli.dir {
        Some(dir) => dir,
        None => std::env::current_dir()?,
    };
    let threads = match cli.threads {
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
    };
    let mut config = ServerConfig::default();
    config.max_connections = cli.max_connections;
    config.idle_timeout = Duration::from_secs(cli.idle_timeout);
    let mut settings = Settings {
        // Replaced by the resolved address inside the runtime, below.
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        engine: cli.engine,
        dir,
        sync: cli.sync,
        threads,
        config,
        memory: MemoryOptions {
            max_memory: cli.max_memory,
            eviction: cli.eviction,
        },
    };

    // NOTE: on 2 cores one I/O thread beside the engine pool served 1.4x to
    // 1.8x the requests of two (GET and SET, 50 connections, kvs-bench):
    // every request already crosses to a pool thread and back, and more
    // runnable threads than cores turn each crossing into a context switch.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let io_threads = cli.io_threads.unwrap_or((cpus / 2).max(1));
    if io_threads == 0 {
        anyhow::bail!("--io-threads must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(io_threads)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        settings.addr = *kvs::net::resolve(&cli.addr).await?.first().ok_or_else(|| {
            kvs::KvsError::InvalidInput(format!("`{}` names no address", cli.addr))
        })?;
        let token = CancellationToken::new();
        watch_signals(token.clone())?;
        kvs::server::serve(settings, token).await
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(result?)
}

/// Cancels `token` on the first SIGINT or SIGTERM (as PID 1 in a container
/// SIGTERM has no default action, so it must be handled); a second signal
/// exits at once.
fn watch_signals(token: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!("{name} received, shutting down (again to exit at once)");
        token.cancel();
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        eprintln!("kvs-server: second signal, exiting without a clean shutdown");
        std::process::exit(130);
    });
    Ok(())
}
