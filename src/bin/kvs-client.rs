//! `kvs-client`: one command against a kvs server, through
//! [`kvs::KvsClient`].

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kvs::{DEFAULT_ADDR, KvsClient, KvsError};

/// Talk to a kvs server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Server address: HOST:PORT, IP:PORT or [IPv6]:PORT (e.g. localhost:4000,
    /// kvs:4000); names are resolved on each connection through /etc/hosts
    /// and /etc/resolv.conf.
    #[arg(long, global = true, env = "KVS_ADDR", default_value = DEFAULT_ADDR)]
    addr: String,
    /// Seconds to wait for the server before giving up.
    #[arg(long, global = true, env = "KVS_TIMEOUT", default_value_t = 10)]
    timeout: u64,
    /// Authenticate with this password first (servers started with
    /// --requirepass).
    #[arg(long, global = true, env = "KVS_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Set KEY to VALUE.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Expire the value after this many milliseconds.
        #[arg(long)]
        ttl_ms: Option<u64>,
    },
    /// Print the value of KEY, or "Key not found".
    Get {
        /// The key.
        key: String,
    },
    /// Remove KEY; fails if it is missing.
    Rm {
        /// The key.
        key: String,
    },
    /// Check that the server answers; prints PONG.
    Ping,
    /// Print the server's counters.
    Stats {
        /// Print them as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KVS_LOG_LEVEL")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kvs-client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = Duration::from_secs(cli.timeout);
    let outcome = runtime.block_on(async {
        tokio::time::timeout(
            timeout,
            execute(
                &cli.addr,
                cli.password.filter(|p| !p.is_empty()),
                cli.command,
            ),
        )
        .await
        .unwrap_or_else(|_| {
            Err(KvsError::Closed(format!(
                "no answer from {} within {}s",
                cli.addr,
                timeout.as_secs()
            )))
        })
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(KvsError::KeyNotFound) => {
            eprintln!("Key not found");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("kvs-client: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(addr: &str, password: Option<String>, command: Command) -> kvs::Result<()> {
    let mut client = KvsClient::connect(addr).await?;
    if let Some(password) = password {
        client.auth(&password).await?;
    }
    match command {
        Command::Set { key, value, ttl_ms } => match ttl_ms {
            None => client.set(&key, &value).await,
            Some(ms) => {
                client
                    .set_with_ttl(&key, &value, Duration::from_millis(ms))
                    .await
            }
        },
        Command::Get { key } => {
            match client.get(&key).await? {
                Some(value) => println!("{value}"),
                None => println!("Key not found"),
            }
            Ok(())
        }
        Command::Rm { key } => client.remove(&key).await,
        Command::Ping => {
            client.ping().await?;
            println!("PONG");
            Ok(())
        }
        Command::Stats { json } => {
            let stats = client.stats().await?;
            if json {
                let text = serde_json::to_string_pretty(&stats)
                    .map_err(|e| KvsError::Protocol(format!("cannot print stats: {e}")))?;
                println!("{text}");
            } else {
                print_stats(&stats);
            }
            Ok(())
        }
    }
}

fn print_stats(s: &kvs::server::StatsSnapshot) {
    let e = &s.engine;
    let lookups = s.hits + s.misses;
    let ratio = if lookups == 0 {
        "-".to_owned()
    } else {
        format!("{:.2}%", s.hits as f64 * 100.0 / lookups as f64)
    };
    let max = if e.max_memory == 0 {
        "unbounded".to_owned()
    } else {
        mib(e.max_memory)
    };
    println!("uptime          {} s", s.uptime_secs);
    println!(
        "connections     {} now, {} total, {} refused",
        s.connections_current, s.connections_total, s.connections_refused
    );
    println!("commands        {}", s.commands);
    println!(
        "hits / misses   {} / {} (hit ratio {ratio})",
        s.hits, s.misses
    );
    println!("keys            {}", e.keys);
    println!(
        "memory          {} used of {max} (engine), {} RSS",
        mib(e.used_memory),
        mib(s.rss_bytes)
    );
    println!("expired/evicted {} / {}", e.expired, e.evicted);
    if e.disk_bytes > 0 {
        println!(
            "disk            {} live of {} on disk",
            mib(e.live_bytes),
            mib(e.disk_bytes)
        );
    }
    println!("bytes in / out  {} / {}", s.bytes_in, s.bytes_out);
    println!("protocol errors {}", s.protocol_errors);
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}
