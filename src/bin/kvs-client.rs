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
        tokio::time::timeout(timeout, execute(&cli.addr, cli.command))
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

async fn execute(addr: &str, command: Command) -> kvs::Result<()> {
    let mut client = KvsClient::connect(addr).await?;
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
    }
}
