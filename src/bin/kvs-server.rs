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
    /// Connections served at once; more are refused with an error
    /// [default: 1024, less when the open-file limit is lower].
    #[arg(long, env = "KVS_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Seconds a connection may stay idle between requests (at most a year).
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
    /// Require clients to authenticate with this password (RESP `AUTH`,
    /// native `Auth`). Prefer --requirepass-file: a flag shows in `ps`.
    #[arg(long, env = "KVS_REQUIREPASS", hide_env_values = true)]
    requirepass: Option<String>,
    /// Read the password from this file (a Docker secret); trailing
    /// newlines are ignored.
    #[arg(long, env = "KVS_REQUIREPASS_FILE")]
    requirepass_file: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, env = "KVS_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

/// Limits glibc to one malloc arena (per-thread caches stay). With one
/// arena per engine thread, entries allocated on one thread and evicted on
/// another leave free space in arenas that other threads do not reuse: a
/// memory engine filled to its --max-memory then held 1.17x the bound in
/// RSS instead of about 1.03x in one thread (tests/memory_server.rs,
/// BENCHMARKS.md). Called first thing, before any thread exists.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn parse_max_memory(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    one_malloc_arena();
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

/// Makes glibc serve allocations of 1 MiB and more with their own
/// mappings, returned to the OS when freed. By default the threshold grows
/// with the largest block freed, so after a few large requests their
/// buffers come from the heap and the process keeps that memory forever.
fn return_large_buffers_to_the_os() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    return_large_buffers_to_the_os();
    let dir = match cli.dir {
        Some(dir) => dir,
        None => std::env::current_dir()?,
    };
    let threads = match cli.threads {
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
    };
    let mut config = ServerConfig::default();
    config.max_connections = connection_cap(cli.max_connections);
    if cli.idle_timeout > kvs::server::MAX_TIMEOUT.as_secs() {
        anyhow::bail!(
            "--idle-timeout {} is over the maximum of {} seconds",
            cli.idle_timeout,
            kvs::server::MAX_TIMEOUT.as_secs()
        );
    }
    config.idle_timeout = Duration::from_secs(cli.idle_timeout);
    let password = match (cli.requirepass, cli.requirepass_file) {
        // An empty password means none, as Redis's `requirepass ""` (and
        // an unset compose variable); a non-empty one wins over the file.
        (Some(p), _) if !p.is_empty() => Some(p),
        (_, Some(path)) => Some(
            std::fs::read_to_string(&path)
                .map_err(|e| {
                    anyhow::anyhow!("cannot read --requirepass-file {}: {e}", path.display())
                })?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        ),
        (_, None) => None,
    };
    config.password = match password {
        Some(p) => {
            Some(kvs::server::Password::new(p).map_err(|e| anyhow::anyhow!("--requirepass: {e}"))?)
        }
        None => None,
    };
    config.validate()?;
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
        if settings.config.password.is_none() && !settings.addr.ip().is_loopback() {
            tracing::warn!(
                addr = %settings.addr,
                "listening on a non-loopback address without a password: anyone who can reach it can read and write every key (set --requirepass or KVS_REQUIREPASS_FILE)"
            );
        }
        let token = CancellationToken::new();
        watch_signals(token.clone())?;
        kvs::server::serve(settings, token).await
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(result?)
}

/// Descriptors kept for everything but client connections (listener,
/// segment files and maps, logging, the runtime).
const RESERVED_FDS: u64 = 64;

/// The connection cap: the flag, or 1024; either way a warning when the
/// open-file limit cannot hold that many (at the limit `accept` fails, and
/// clients would hang instead of being refused with an error).
fn connection_cap(flag: Option<usize>) -> usize {
    let default = ServerConfig::default().max_connections;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct it is given.
    let fits = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        usize::try_from(limit.rlim_cur.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX)
    } else {
        usize::MAX
    };
    match flag {
        Some(n) => {
            if n > fits {
                tracing::warn!(
                    "--max-connections {n} is over what the open-file limit ({}) allows ({fits}): raise `ulimit -n`",
                    limit.rlim_cur
                );
            }
            n
        }
        None => default.min(fits.max(1)),
    }
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
