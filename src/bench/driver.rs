//! One connection under load: keeps up to `pipeline` requests in flight,
//! closed loop (send as replies come back) or open loop (send on a fixed
//! schedule), and measures each reply.
//!
//! Open loop is coordinated-omission free: a request's latency always runs
//! from the time it was *due*, never from the time it was written. When
//! the server stalls and the window is full, or the client itself falls
//! behind, requests that fall due wait in the client and their waiting is
//! counted, as a user's would be; how late each went out is recorded apart
//! ([`SendLag`](super::stats::SendLag)), with the late ones that waited for a full window. Due
//! times are kept at full precision; Tokio's timer wakes the connection on
//! millisecond ticks, so a request may leave up to half a millisecond
//! early (still measured from its due time, so it gains nothing). A
//! `--duration` run stops sending at its end even when requests are still
//! due: those are counted as unsent, and the report says the schedule was
//! cut short.
//!
//! The loop uses the socket's readiness API (`try_read`/`try_write`) so a
//! full socket in one direction never blocks the other, and does no
//! per-request allocation: requests are encoded straight into the write
//! buffer and replies recognised in place in the read buffer.

use crate::net::buffer::{CHUNK, make_room};
use std::collections::VecDeque;
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::options::OnMiss;
use super::stats::{Live, Measured};
use super::wire::{Outcome, Wire};
use super::workload::{KEY_LEN, Kind, Op, Source, Workload, format_key};
use crate::{KvsError, Result};

/// Open loop: how early a request may go out. Tokio's timer fires on
/// millisecond ticks, rounding up; waking this much before the due time
/// halves the harness's own lateness, which would otherwise be counted
/// as server latency.
const TIMER_SLACK: Duration = Duration::from_micros(500);

/// What one connection is to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Connection number, from 0; seeds its random generator.
    pub id: usize,
    /// Run seed.
    pub seed: u64,
    /// Requests in flight at most.
    pub pipeline: usize,
    /// When the load starts.
    pub start: Instant,
    /// Requests due before this are warm-up: sent, not measured.
    pub measure_from: Instant,
    /// No request due at or after this is sent.
    pub deadline: Option<Instant>,
    /// Measured requests to send, then stop.
    pub quota: Option<u64>,
    /// Open loop: one request due every `interval`, the first at
    /// `start + first_offset`.
    pub interval: Option<Duration>,
    /// Offset of the first due time, so connections do not fire together.
    pub first_offset: Duration,
    /// What follows a GET miss.
    pub on_miss: OnMiss,
}

/// A request written or queued whose reply has not been read.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    op: Op,
    key: u64,
    kind: Kind,
    /// When it was sent (closed loop, fills) or due (open loop).
    since: Instant,
    measured: bool,
}

/// Drives `stream` through `plan` and returns what it measured. A broken
/// connection ends the drive early: its unanswered measured requests are
/// counted as errors and the cause is kept as an error sample.
pub async fn drive<W: Wire>(
    stream: TcpStream,
    plan: Plan,
    workload: Arc<Workload>,
    live: Arc<Live>,
) -> Measured {
    let mut conn = Conn {
        stream,
        wbuf: BytesMut::with_capacity(CHUNK),
        rbuf: BytesMut::with_capacity(CHUNK),
        queue: VecDeque::with_capacity(plan.pipeline),
        fills: VecDeque::new(),
        measured: Measured::default(),
        measure_from: plan.measure_from,
        pipeline: plan.pipeline,
        window_freed: false,
    };
    if let Err(e) = conn.run::<W>(&plan, &workload, &live).await {
        let lost: Vec<(Op, Kind)> = conn
            .queue
            .iter()
            .filter(|f| f.measured)
            .map(|f| (f.op, f.kind))
            .collect();
        for &(op, kind) in &lost {
            conn.measured.lost(op, kind);
        }
        live.add(0, lost.len() as u64 + 1);
        conn.measured.unmeasured_errors += 1;
        conn.measured
            .note_error(format!("connection {} failed: {e}", plan.id));
    }
    conn.measured
}

struct Conn {
    stream: TcpStream,
    wbuf: BytesMut,
    rbuf: BytesMut,
    queue: VecDeque<InFlight>,
    /// Cache-aside: keys whose GET missed, to be SET before anything else.
    fills: VecDeque<u64>,
    measured: Measured,
    measure_from: Instant,
    pipeline: usize,
    /// The last read freed a slot of a full window: late requests sent
    /// next were held back by the window, not by this client.
    window_freed: bool,
}

impl Conn {
    async fn run<W: Wire>(&mut self, plan: &Plan, workload: &Workload, live: &Live) -> Result<()> {
        let mut source = Source::new(plan.seed, plan.id);
        let mut key = [0u8; KEY_LEN];
        let mut next_due = plan.start + plan.first_offset;
        let mut measured_sent = 0u64;
        let mut done = false;
        loop {
            let now = Instant::now();
            // Fills go out even after the last scheduled request, as the
            // application would still make them.
            self.send_fills::<W>(workload, plan.pipeline, now, &mut key)?;
            if !done {
                while self.queue.len() < plan.pipeline {
                    let since = match plan.interval {
                        None => now,
                        Some(_) if next_due > now + TIMER_SLACK => break,
                        // Due now or overdue (or up to TIMER_SLACK early,
                        // since the timer only wakes on whole
                        // milliseconds): measured from the due time,
                        // whatever the lateness.
                        Some(_) => next_due,
                    };
                    if let Some(deadline) = plan.deadline {
                        if since >= deadline {
                            done = true;
                            break;
                        }
                        if now >= deadline {
                            // Still behind at the end: the rest of the
                            // schedule is cut, and counted.
                            if let Some(interval) = plan.interval {
                                self.measured.send.unsent +=
                                    unsent(next_due, deadline, interval, plan.measure_from);
                            }
                            done = true;
                            break;
                        }
                    }
                    let measured = since >= plan.measure_from;
                    if measured {
                        if plan.quota.is_some_and(|q| measured_sent >= q) {
                            done = true;
                            break;
                        }
                        measured_sent += 1;
                        if plan.interval.is_some() {
                            let waited = self.window_freed;
                            self.measured
                                .send
                                .record(now.saturating_duration_since(since), waited);
                        }
                    }
                    let (op, index, kind) = source.next(workload);
                    W::encode(
                        op,
                        format_key(index, &mut key),
                        workload.value(),
                        &mut self.wbuf,
                    )?;
                    self.queue.push_back(InFlight {
                        op,
                        key: index,
                        kind,
                        since,
                        measured,
                    });
                    if let Some(interval) = plan.interval {
                        next_due += interval;
                    }
                }
                self.window_freed = false;
            }
            if self.queue.is_empty() {
                if done {
                    return Ok(());
                }
                // Open loop, nothing due yet.
                tokio::time::sleep_until(wake_at(next_due)).await;
                continue;
            }
            if !self.wbuf.is_empty() {
                match self.stream.try_write(&self.wbuf) {
                    Ok(n) => {
                        self.wbuf.advance(n);
                        if Instant::now() >= self.measure_from {
                            self.measured.bytes_out += n as u64;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let may_send = plan.interval.is_some() && !done && self.queue.len() < plan.pipeline;
            tokio::select! {
                biased;
                ready = self.stream.readable() => {
                    ready?;
                    self.read_replies::<W>(live, plan.on_miss)?;
                }
                ready = self.stream.writable(), if !self.wbuf.is_empty() => ready?,
                () = tokio::time::sleep_until(wake_at(next_due)), if may_send => {}
            }
        }
    }

    /// Queues the cache-aside SETs waiting in `fills`, as far as the
    /// window allows. They are not on the schedule: each is measured from
    /// when it is sent, as the application would issue it.
    fn send_fills<W: Wire>(
        &mut self,
        workload: &Workload,
        pipeline: usize,
        now: Instant,
        key: &mut [u8; KEY_LEN],
    ) -> Result<()> {
        while self.queue.len() < pipeline {
            let Some(index) = self.fills.pop_front() else {
                break;
            };
            W::encode(
                Op::Set,
                format_key(index, key),
                workload.value(),
                &mut self.wbuf,
            )?;
            let measured = now >= self.measure_from;
            self.queue.push_back(InFlight {
                op: Op::Set,
                key: index,
                kind: Kind::Fill,
                since: now,
                measured,
            });
        }
        Ok(())
    }

    /// Reads what has arrived and accounts for every whole reply in it.
    fn read_replies<W: Wire>(&mut self, live: &Live, on_miss: OnMiss) -> Result<()> {
        make_room(&mut self.rbuf);
        let read = match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => {
                return Err(KvsError::Closed(
                    "the server closed the connection".to_owned(),
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let now = Instant::now();
        if now >= self.measure_from {
            self.measured.bytes_in += read as u64;
        }
        let was_full = self.queue.len() >= self.pipeline;
        let (mut consumed, mut ops, mut errors) = (0, 0, 0);
        while let Some(&InFlight {
            op,
            key,
            kind,
            since,
            measured,
        }) = self.queue.front()
        {
            let Some((outcome, len)) = W::parse(op, &self.rbuf[consumed..])? else {
                break;
            };
            consumed += len;
            self.queue.pop_front();
            let is_error = matches!(outcome, Outcome::Error(_));
            errors += u64::from(is_error);
            if on_miss == OnMiss::Set && outcome == Outcome::Miss {
                self.fills.push_back(key);
            }
            if measured {
                ops += 1;
                self.measured.last_reply = Some(now);
                self.measured
                    .record(op, kind, outcome, now.saturating_duration_since(since));
            } else if let Outcome::Error(message) = outcome {
                self.measured.unmeasured_errors += 1;
                self.measured.note_error(message);
            }
        }
        self.rbuf.advance(consumed);
        self.window_freed = was_full && self.queue.len() < self.pipeline;
        live.add(ops, errors);
        if self.queue.is_empty() && !self.rbuf.is_empty() {
            return Err(KvsError::Protocol(
                "the server sent a reply to no request".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Measured requests due from `next_due` up to `deadline`, one every
/// `interval`: what a cut schedule did not send.
fn unsent(next_due: Instant, deadline: Instant, interval: Duration, measure_from: Instant) -> u64 {
    let from = next_due.max(measure_from);
    if from >= deadline || interval.is_zero() {
        return 0;
    }
    let left = deadline.duration_since(from).as_secs_f64() / interval.as_secs_f64();
    left.ceil() as u64
}

/// When to wake for a request due at `due`.
fn wake_at(due: Instant) -> tokio::time::Instant {
    due.checked_sub(TIMER_SLACK).unwrap_or(due).into()
}

/// Writes keys `range` with `value`, `depth` requests at a time, on
/// `stream`. Returns the number of error replies and the first error
/// message; a broken connection is `Err`.
pub async fn preload<W: Wire>(
    stream: &mut TcpStream,
    range: std::ops::Range<u64>,
    depth: usize,
    value: &str,
) -> Result<(u64, Option<String>)> {
    let mut wbuf = BytesMut::with_capacity(CHUNK);
    let mut rbuf = BytesMut::with_capacity(CHUNK);
    let mut key = [0u8; KEY_LEN];
    let (mut errors, mut first_error) = (0, None);
    let mut next = range.start;
    while next < range.end {
        let batch = (range.end - next).min(depth as u64);
        for index in next..next + batch {
            W::encode(Op::Set, format_key(index, &mut key), value, &mut wbuf)?;
        }
        next += batch;
        // Replies to SETs are a few bytes each: the server's socket buffer
        // holds all of a batch's replies while this write completes.
        stream.write_all_buf(&mut wbuf).await?;
        let mut left = batch;
        while left > 0 {
            let mut consumed = 0;
            while left > 0 {
                let Some((outcome, len)) = W::parse(Op::Set, &rbuf[consumed..])? else {
                    break;
                };
                consumed += len;
                left -= 1;
                if let Outcome::Error(message) = outcome {
                    errors += 1;
                    first_error.get_or_insert(message);
                }
            }
            rbuf.advance(consumed);
            make_room(&mut rbuf);
            if left > 0 && stream.read_buf(&mut rbuf).await? == 0 {
                return Err(KvsError::Closed(
                    "the server closed the connection during preload".to_owned(),
                ));
            }
        }
    }
    Ok((errors, first_error))
}
