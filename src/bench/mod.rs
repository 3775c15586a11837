//! Load generator behind `kvs-bench`: drives a kvs server (native
//! protocol) or any RESP2 server (`redis-server`) with the same workload,
//! so the two can be compared on the same machine in the same run.
//!
//! - [`options`]: what a run does ([`BenchOptions`]).
//! - [`workload`]: seeded operation, key and value generation.
//! - [`wire`], [`kvs_wire`], [`resp`]: request encoding and reply
//!   recognition per protocol, without per-request allocation.
//! - [`driver`]: one connection under closed- or open-loop load, latency
//!   measured from the send time or, open loop, from the due time.
//! - [`stats`], [`report`]: HDR histograms, counters, the table, JSON and
//!   CSV.
//! - [`verdict`]: whether an open-loop run kept its schedule, and the
//!   warnings when it did not.
//!
//! The harness is deliberately lean (one client thread by default, like
//! `redis-benchmark`), since the server is the thing measured.

pub mod driver;
pub mod kvs_wire;
pub mod options;
pub mod report;
pub mod resp;
pub mod stats;
pub mod verdict;
pub mod wire;
pub mod workload;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use options::{BenchOptions, KeyDist, OnMiss, Protocol, Ratio, Scan, Stop};
pub use report::{OpSummary, PreloadSummary, Report};

use driver::Plan;
use kvs_wire::KvsWire;
use resp::RespWire;
use stats::{Live, Measured};
use wire::Wire;
use workload::Workload;

use crate::{KvsError, Result};

/// Requests in flight per connection while preloading.
const PRELOAD_DEPTH: usize = 32;
/// How long the pre-flight PING may take.
const PREFLIGHT_WAIT: Duration = Duration::from_secs(5);
/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Builds a Tokio runtime with `options.threads` workers (a single-thread
/// runtime for 1) and runs [`run`] on it.
pub fn run_blocking(options: &BenchOptions) -> Result<Report> {
    options.validate()?;
    let runtime = if options.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(run(options))
}

/// Runs the benchmark on the current Tokio runtime (`options.threads` is
/// not used here) and returns its report. `Err` when the options are
/// invalid, a connection cannot be opened or the preload fails; errors
/// during the measured run are counted in the report instead.
pub async fn run(options: &BenchOptions) -> Result<Report> {
    options.validate()?;
    let workload = Arc::new(Workload::new(options)?);
    match options.protocol {
        Protocol::Kvs => run_with::<KvsWire>(options, workload).await,
        Protocol::Resp => run_with::<RespWire>(options, workload).await,
    }
}

async fn run_with<W: Wire>(options: &BenchOptions, workload: Arc<Workload>) -> Result<Report> {
    preflight(options).await?;
    let mut streams = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        let mut stream = crate::net::connect(&options.addr).await?;
        if let Some(password) = &options.password {
            authenticate(&mut stream, options.protocol, password).await?;
        }
        streams.push(stream);
    }

    let preload = if options.preload {
        Some(preload_all::<W>(&mut streams, &workload).await?)
    } else {
        None
    };

    let start = Instant::now();
    let measure_from = start + options.warmup;
    let (deadline, requests) = match options.stop {
        Stop::Duration(d) => (Some(measure_from + d), None),
        Stop::Requests(n) => (None, Some(n)),
    };
    let n = options.connections;
    // Each connection sends `rate / n` requests per second.
    let interval = options
        .rate
        .map(|rate| Duration::from_secs_f64(n as f64 / rate));
    let live = Arc::new(Live::default());
    let progress = options
        .progress
        .then(|| tokio::spawn(show_progress(live.clone(), measure_from)));

    let mut tasks = Vec::with_capacity(n);
    for (id, stream) in streams.into_iter().enumerate() {
        let plan = Plan {
            id,
            seed: options.seed,
            pipeline: options.pipeline,
            start,
            measure_from,
            deadline,
            // An exact split: the first `N % n` connections take one more.
            quota: requests.map(|r| r / n as u64 + u64::from((id as u64) < r % n as u64)),
            interval,
            first_offset: interval.map_or(Duration::ZERO, |i| i.mul_f64(id as f64 / n as f64)),
            on_miss: options.on_miss,
        };
        let task = driver::drive::<W>(stream, plan, workload.clone(), live.clone());
        tasks.push(tokio::spawn(task));
    }
    let mut total = Measured::default();
    for task in tasks {
        let measured = task
            .await
            .map_err(|e| KvsError::TaskPanicked(format!("a connection task failed: {e}")))?;
        total.merge(&measured);
    }
    if let Some(progress) = progress {
        progress.abort();
        eprint!("\r\x1b[2K");
    }
    let elapsed = total.last_reply.map_or(Duration::ZERO, |end| {
        end.saturating_duration_since(measure_from)
    });
    Ok(Report::new(options, &total, elapsed, preload))
}

/// Sends the password on a fresh connection and waits for it to be
/// accepted: native `Auth`, RESP `AUTH`.
async fn authenticate(stream: &mut TcpStream, protocol: Protocol, password: &str) -> Result<()> {
    let mut out = bytes::BytesMut::new();
    match protocol {
        Protocol::Kvs => {
            let request = crate::protocol::Request::Auth { password };
            crate::protocol::encode_frame(
                &request,
                crate::protocol::DEFAULT_MAX_FRAME_LEN,
                &mut out,
            )?;
        }
        Protocol::Resp => {
            out.extend_from_slice(
                format!("*2\r\n$4\r\nAUTH\r\n${}\r\n", password.len()).as_bytes(),
            );
            out.extend_from_slice(password.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    tokio::time::timeout(PREFLIGHT_WAIT, async {
        stream.write_all(&out).await?;
        let mut buf = bytes::BytesMut::with_capacity(256);
        loop {
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(KvsError::Closed(
                    "the server closed the connection during AUTH".to_owned(),
                ));
            }
            match protocol {
                Protocol::Kvs => {
                    let mut codec =
                        crate::protocol::FrameCodec::new(crate::protocol::DEFAULT_MAX_FRAME_LEN);
                    let mut view = buf.clone();
                    if let Some(frame) = tokio_util::codec::Decoder::decode(&mut codec, &mut view)?
                    {
                        return crate::protocol::decode_message::<crate::protocol::Response>(
                            &frame,
                        )?
                        .into_result()
                        .map(drop);
                    }
                }
                Protocol::Resp => {
                    if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                        let line = String::from_utf8_lossy(&buf[..end]).trim_end().to_owned();
                        return match line.as_str() {
                            "+OK" => Ok(()),
                            _ => Err(KvsError::Auth(line.trim_start_matches('-').to_owned())),
                        };
                    }
                }
            }
        }
    })
    .await
    .map_err(|_| {
        KvsError::Closed(format!(
            "no answer to AUTH within {}s",
            PREFLIGHT_WAIT.as_secs()
        ))
    })?
}

/// One ping in the chosen protocol before the load starts, so a server
/// that speaks another protocol (or does not answer) is named at once
/// instead of showing up as frame errors or a run that never ends.
async fn preflight(options: &BenchOptions) -> Result<()> {
    let addr = &options.addr;
    let silent = || {
        KvsError::Closed(format!(
            "no answer to a {} PING from {addr} within {}s",
            options.protocol,
            PREFLIGHT_WAIT.as_secs()
        ))
    };
    match options.protocol {
        Protocol::Kvs => {
            // Any kvs response will do, an error response too: those show
            // up again, counted, in the run.
            let mut client = crate::KvsClient::connect(addr).await?;
            client.queue(&crate::protocol::Request::<&str>::Ping)?;
            client.flush().await?;
            tokio::time::timeout(PREFLIGHT_WAIT, client.recv())
                .await
                .map_err(|_| silent())?
                .map(drop)
        }
        Protocol::Resp => {
            let mut stream = crate::net::connect(addr).await?;
            let reply = tokio::time::timeout(PREFLIGHT_WAIT, async {
                stream.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
                let mut buf = Vec::with_capacity(256);
                while !buf.contains(&b'\n') && buf.len() < 256 {
                    if stream.read_buf(&mut buf).await? == 0 {
                        break;
                    }
                }
                Ok::<_, KvsError>(buf)
            })
            .await
            .map_err(|_| silent())??;
            resp_ping_reply(addr, &reply)
        }
    }
}

/// Judges the reply to a RESP `PING`: any RESP reply will do (an error such
/// as `-NOAUTH` shows up again, counted, in the run).
fn resp_ping_reply(addr: &str, reply: &[u8]) -> Result<()> {
    match reply.first() {
        None => Err(KvsError::Closed(format!(
            "the server at {addr} closed the connection without answering a RESP PING"
        ))),
        Some(b'+' | b'-') => Ok(()),
        // A kvs frame header: the length's high byte is 0.
        Some(0) => Err(KvsError::Protocol(format!(
            "the server at {addr} answered in kvs's native protocol, not RESP \
             (use --protocol kvs)"
        ))),
        Some(_) => Err(KvsError::Protocol(
            crate::net::describe_foreign(addr, reply).unwrap_or_else(|| {
                format!("the server at {addr} answered a RESP PING with something else")
            }),
        )),
    }
}

/// Writes the whole key space once, split over the connections.
async fn preload_all<W: Wire>(
    streams: &mut [TcpStream],
    workload: &Workload,
) -> Result<PreloadSummary> {
    let started = Instant::now();
    let keys = workload.keys();
    let n = streams.len() as u64;
    let per = keys.div_ceil(n);
    let jobs = streams.iter_mut().enumerate().map(|(i, stream)| {
        let from = (i as u64 * per).min(keys);
        let to = (from + per).min(keys);
        driver::preload::<W>(stream, from..to, PRELOAD_DEPTH, workload.value())
    });
    let mut errors = 0;
    let mut first_error = None;
    for result in futures::future::join_all(jobs).await {
        let (e, first) = result?;
        errors += e;
        first_error = first_error.or(first);
    }
    if let Some(message) = first_error {
        return Err(KvsError::Server(format!(
            "preload: {errors} SETs failed, the first with: {message}"
        )));
    }
    Ok(PreloadSummary {
        keys,
        secs: started.elapsed().as_secs_f64(),
        errors,
    })
}

/// Redraws one line on stderr every second until aborted.
async fn show_progress(live: Arc<Live>, measure_from: Instant) {
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let mut last = (Instant::now(), 0u64);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let ops = live.ops.load(Ordering::Relaxed);
        let errors = live.errors.load(Ordering::Relaxed);
        let secs = now.saturating_duration_since(last.0).as_secs_f64();
        let current = if secs > 0.0 {
            (ops - last.1) as f64 / secs
        } else {
            0.0
        };
        last = (now, ops);
        let (elapsed, phase) = if now < measure_from {
            let left = measure_from.duration_since(now).as_secs_f64();
            (0.0, format!(" (warm-up, {left:.1} s left)"))
        } else {
            let elapsed = now.duration_since(measure_from).as_secs_f64();
            (elapsed, String::new())
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{elapsed:6.1} s  {ops:>10} req  {current:>9.0} req/s  {errors} errors{phase}"
        );
        let _ = err.flush();
    }
}
