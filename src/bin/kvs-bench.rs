//! `kvs-bench`: load-tests a kvs server, or any Redis-protocol server with
//! the same workload. All logic lives in [`kvs::bench`]; this parses
//! arguments, runs it, prints the table and sets the exit status.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kvs::DEFAULT_ADDR;
use kvs::bench::{BenchOptions, KeyDist, OnMiss, Protocol, Ratio, Scan, Stop};

/// Load-test a kvs server (or a Redis server, with --protocol resp).
///
/// Flags follow redis-benchmark and memtier_benchmark where they mean the
/// same: -c connections, -P pipeline, -n requests, -d value size in BYTES
/// (not a duration: that is --duration / --test-time), -r key space,
/// --csv. One deliberate difference: --ratio is GET:SET (memtier's is
/// SET:GET).
///
/// With --rate (open loop) every latency runs from the request's intended
/// send time, however late the client or a full window made it (no
/// coordinated omission); the report says how many requests went out late,
/// and warns when the achieved rate is under 95% of --rate or the
/// schedule was cut short.
///
/// Exits 1 when any request failed (unless --allow-errors), 2 on bad
/// arguments or when the run could not start, 3 with --strict when an
/// open-loop run did not keep its schedule.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Protocol the server speaks: kvs or resp (Redis).
    #[arg(long, default_value = "kvs")]
    protocol: Protocol,
    /// Server address: HOST:PORT, IP:PORT or [IPv6]:PORT (e.g. kvs:4000);
    /// names are resolved for each connection (/etc/hosts, /etc/resolv.conf).
    #[arg(long, default_value = DEFAULT_ADDR)]
    addr: String,
    /// Connections, each with its own stream of requests.
    #[arg(short, long, default_value_t = 50)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(short = 'P', long, default_value_t = 1)]
    pipeline: usize,
    /// Measured requests in total, then stop [default: --duration 10].
    #[arg(short = 'n', long, conflicts_with = "duration")]
    requests: Option<u64>,
    /// Seconds of measured load [memtier: --test-time]. (No short flag: -d
    /// is the value size, as in redis-benchmark and memtier_benchmark.)
    #[arg(long, visible_alias = "test-time")]
    duration: Option<f64>,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Operation mix GET:SET, e.g. 9:1, 1:0 (GET only), 0:1 (SET only).
    #[arg(long, default_value = "9:1")]
    ratio: Ratio,
    /// Key space: keys key:000000000000 .. key:(N-1) [redis-benchmark: -r].
    #[arg(
        short = 'r',
        long,
        visible_alias = "keyspace",
        default_value_t = 100_000
    )]
    keys: u64,
    /// Key distribution: uniform, zipf (exponent 0.99) or zipf:S (key i drawn
    /// with weight 1/(i+1)^S).
    #[arg(long, default_value = "uniform")]
    key_dist: KeyDist,
    /// Value size in bytes [redis-benchmark and memtier: -d / --data-size].
    #[arg(short = 'd', long, visible_alias = "data-size", default_value_t = 100)]
    value_size: usize,
    /// What follows a GET miss: none, or set (cache-aside: SET the key, as
    /// a read-through application does; the fills are reported apart).
    #[arg(long, default_value = "none")]
    on_miss: OnMiss,
    /// Periodic one-time scans, EVERY:LENGTH: after every EVERY requests a
    /// connection GETs LENGTH keys outside the key space, each once (scan
    /// resistance of a cache). Not counted in the hit ratio.
    #[arg(long)]
    scan: Option<Scan>,
    /// Authenticate every connection with this password first (servers
    /// started with --requirepass; redis-benchmark's -a).
    #[arg(short = 'a', long, env = "KVS_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Write every key once before the run (so GETs hit).
    #[arg(long)]
    preload: bool,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Open loop: requests per second in total, latency measured from
    /// each request's due time [default: closed loop].
    #[arg(long)]
    rate: Option<f64>,
    /// Client runtime threads (1 keeps the harness off the server's cores).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print the figures as CSV (one row per operation) instead of the
    /// table.
    #[arg(long)]
    csv: bool,
    /// Exit 3 when an open-loop run did not keep its schedule (achieved
    /// rate under 95% of --rate, or requests left unsent at the end).
    #[arg(long)]
    strict: bool,
    /// Exit 0 even when requests failed.
    #[arg(long)]
    allow_errors: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let secs = |s: f64, flag: &str| {
        Duration::try_from_secs_f64(s).map_err(|_| format!("{flag} must be a non-negative number"))
    };
    let stop = match (cli.requests, cli.duration) {
        (Some(n), _) => Ok(Stop::Requests(n)),
        (None, Some(d)) => secs(d, "--duration").map(Stop::Duration),
        (None, None) => Ok(Stop::Duration(Duration::from_secs(10))),
    };
    let (stop, warmup) = match (stop, secs(cli.warmup, "--warmup")) {
        (Ok(stop), Ok(warmup)) => (stop, warmup),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("kvs-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let options = BenchOptions {
        protocol: cli.protocol,
        addr: cli.addr,
        connections: cli.connections,
        pipeline: cli.pipeline,
        stop,
        warmup,
        ratio: cli.ratio,
        keys: cli.keys,
        key_dist: cli.key_dist,
        value_size: cli.value_size,
        preload: cli.preload,
        seed: cli.seed,
        rate: cli.rate,
        threads: cli.threads,
        progress: std::io::stderr().is_terminal(),
        on_miss: cli.on_miss,
        scan: cli.scan,
        // Empty means none (an unset compose variable).
        password: cli.password.filter(|p| !p.is_empty()),
    };

    let report = match kvs::bench::run_blocking(&options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("kvs-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.csv {
        print!("{}", report.to_csv());
    } else {
        print!("{report}");
    }
    for warning in &report.warnings {
        eprintln!("kvs-bench: WARNING: {warning}");
    }
    if let Some(path) = &cli.json
        && let Err(e) = std::fs::write(path, report.to_json() + "\n")
    {
        eprintln!("kvs-bench: cannot write {}: {e}", path.display());
        return ExitCode::from(2);
    }
    if cli.strict && report.schedule.as_ref().is_some_and(|s| !s.kept) {
        eprintln!("kvs-bench: --strict: the open-loop schedule was not kept");
        return ExitCode::from(3);
    }
    if report.errors > 0 && !cli.allow_errors {
        eprintln!(
            "kvs-bench: {} requests failed (--allow-errors to exit 0 anyway)",
            report.errors
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
