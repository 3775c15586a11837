//! The requests of one connection between decoding and response: which
//! may run now, which must wait for an earlier one, and the response order.
//!
//! Requests run concurrently on the pool, but a pipelining client still
//! sees its own writes: a request that touches a key an earlier, still
//! running request writes (or writes a key one reads) is held until that
//! request has finished. Keys are compared by hash; a collision only makes
//! a request wait needlessly.

use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::FuturesOrdered;
use tracing::warn;

use crate::KvsEngine;
use crate::protocol::{Request, Response};
use crate::thread_pool::{Blocking, SharedQueueThreadPool};
use crate::{KvsError, Result};

/// Most requests one pool job executes, in order. Requests decoded from the
/// same read are grouped so that a pipelining client pays one hand-off to
/// the pool per group instead of per request; with a window of 16 and
/// groups of 8, two workers still run one connection's requests at once.
const JOB_BATCH: usize = 8;

/// The responses one entry of the response order yields.
pub(crate) enum Answer {
    One(Response),
    Many(Vec<Response>),
}

/// A place in the response order: answered on the spot (ping, protocol
/// errors) or a group of requests running on the pool with an engine clone
/// that comes back with the responses.
pub(crate) enum Pending<E> {
    Ready(Option<Response>),
    Engine {
        job: Blocking<(E, Vec<Response>)>,
        requests: usize,
    },
}

impl<E> Future for Pending<E> {
    type Output = (Option<E>, Answer);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            // `FuturesOrdered` never polls a finished future again, so the
            // fallback is unreachable; it keeps this free of `unwrap`.
            Pending::Ready(response) => Poll::Ready((
                None,
                Answer::One(response.take().unwrap_or_else(|| {
                    Response::from_error(&KvsError::Server("response polled twice".to_owned()))
                })),
            )),
            Pending::Engine { job, requests } => {
                Pin::new(job).poll(cx).map(|result| match result {
                    Ok((engine, responses)) => (Some(engine), Answer::Many(responses)),
                    Err(e) => {
                        // The job panicked: every request in it fails, and
                        // the client still gets one response per request.
                        warn!("request failed on the pool: {e}");
                        let error = Response::from_error(&e);
                        (None, Answer::Many(vec![error; *requests]))
                    }
                })
            }
        }
    }
}

/// One connection's requests in flight, in request order.
pub(crate) struct Pipeline<E> {
    /// Poll with `next()`; results come out in request order.
    pub(crate) in_flight: FuturesOrdered<Pending<E>>,
    pool: Arc<SharedQueueThreadPool>,
    /// Cloned from when `stash` is empty.
    template: E,
    /// Engine clones back from the pool: `KvStore` clones keep their own
    /// read handles, so they are reused rather than made per request.
    stash: Vec<E>,
    /// Requests accepted but not yet sent to the pool; they go as one job.
    batch: Vec<Request>,
    /// Requests in `in_flight`, counting each of a job's requests.
    running: usize,
    /// Sequence number of the next request to start, and how many
    /// responses have come out: request `s` has finished once `done > s`.
    started: u64,
    done: u64,
    /// Keys of unfinished jobs: (key hash, last sequence of its job, writes).
    touched: Vec<(u64, u64, bool)>,
    /// A request waiting for request `.1` to finish; nothing after it
    /// starts before it does.
    held: Option<(Request, u64)>,
}

impl<E: KvsEngine> Pipeline<E> {
    pub(crate) fn new(template: E, pool: Arc<SharedQueueThreadPool>) -> Pipeline<E> {
        Pipeline {
            in_flight: FuturesOrdered::new(),
            pool,
            template,
            stash: Vec::new(),
            batch: Vec::new(),
            running: 0,
            started: 0,
            done: 0,
            touched: Vec::new(),
            held: None,
        }
    }

    /// Requests accepted and not yet answered.
    pub(crate) fn len(&self) -> usize {
        self.running + self.batch.len() + usize::from(self.held.is_some())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a held request still blocks everything behind it; releases
    /// it into the next job once what it waited for has finished.
    pub(crate) fn is_blocked(&mut self) -> bool {
        match &self.held {
            Some((_, after)) if self.done > *after => {
                if let Some((request, _)) = self.held.take() {
                    self.batch.push(request);
                }
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Queues a response known without the engine.
    pub(crate) fn push_ready(&mut self, response: Response) {
        self.launch_batch();
        self.started += 1;
        self.running += 1;
        self.in_flight.push_back(Pending::Ready(Some(response)));
    }

    /// Accepts `request`: into the current batch, or held behind the
    /// earlier job it depends on. Call only when
    /// [`is_blocked`](Self::is_blocked) is false, and call
    /// [`launch_batch`](Self::launch_batch) before waiting for anything.
    pub(crate) fn submit(&mut self, request: Request) {
        if let Request::Ping = request {
            return self.push_ready(Response::Pong);
        }
        // Requests within one batch run in order, so only earlier jobs can
        // conflict.
        match self.conflict(&request) {
            Some(after) => {
                self.launch_batch();
                self.held = Some((request, after));
            }
            None => {
                self.batch.push(request);
                if self.batch.len() >= JOB_BATCH {
                    self.launch_batch();
                }
            }
        }
    }

    /// Sends the current batch to the pool as one job.
    pub(crate) fn launch_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let requests = std::mem::take(&mut self.batch);
        let count = requests.len();
        let last = self.started + count as u64 - 1;
        self.started += count as u64;
        self.running += count;
        for request in &requests {
            for_each_key(request, |hash, writes| {
                self.touched.push((hash, last, writes))
            });
        }
        let engine = self.stash.pop().unwrap_or_else(|| self.template.clone());
        let job = self.pool.run(move || {
            let responses = requests
                .into_iter()
                .map(|request| execute(&engine, request))
                .collect();
            (engine, responses)
        });
        self.in_flight.push_back(Pending::Engine {
            job,
            requests: count,
        });
    }

    /// Records that the next entry came out of `in_flight` with `answered`
    /// responses.
    pub(crate) fn finished(&mut self, engine: Option<E>, answered: usize) {
        self.done += answered as u64;
        self.running -= answered;
        if let Some(engine) = engine {
            self.stash.push(engine);
        }
        let done = self.done;
        self.touched.retain(|&(_, seq, _)| seq >= done);
    }

    /// The latest unfinished request `request` must wait for.
    fn conflict(&self, request: &Request) -> Option<u64> {
        let mut after = None;
        for_each_key(request, |hash, writes| {
            for &(h, seq, w) in &self.touched {
                if h == hash && (writes || w) {
                    after = after.max(Some(seq));
                }
            }
        });
        after
    }
}

/// Calls `f(key hash, writes)` for every key `request` touches.
fn for_each_key(request: &Request, mut f: impl FnMut(u64, bool)) {
    let hash = |key: &str| {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        h.finish()
    };
    match request {
        Request::Ping => {}
        Request::Get { key } => f(hash(key), false),
        Request::Set { key, .. } | Request::Remove { key } => f(hash(key), true),
        Request::GetMany { keys } => keys.iter().for_each(|key| f(hash(key), false)),
    }
}

/// Runs one request against the engine; on a pool thread.
fn execute<E: KvsEngine>(engine: &E, request: Request) -> Response {
    let result = match request {
        Request::Ping => Ok(Response::Pong),
        Request::Get { key } => engine.get(key).map(Response::Value),
        Request::Set {
            key,
            value,
            ttl_ms: None,
        } => engine.set(key, value).map(|()| Response::Ok),
        Request::Set {
            key,
            value,
            ttl_ms: Some(ms),
        } => engine
            .set_with_ttl(key, value, Duration::from_millis(ms))
            .map(|()| Response::Ok),
        Request::Remove { key } => engine.remove(key).map(|()| Response::Ok),
        Request::GetMany { keys } => keys
            .into_iter()
            .map(|key| engine.get(key))
            .collect::<Result<Vec<_>>>()
            .map(Response::Values),
    };
    result.unwrap_or_else(|e| {
        if !matches!(e, KvsError::KeyNotFound | KvsError::InvalidInput(_)) {
            warn!("engine error: {e}");
        }
        Response::from_error(&e)
    })
}
