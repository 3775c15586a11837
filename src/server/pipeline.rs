//! The requests of one connection between decoding and response: which
//! may run now, which must wait for an earlier one, and the response order.
//!
//! Requests run concurrently on the pool, but a pipelining client still
//! sees its own writes: a request that touches a key an earlier, still
//! running request writes (or writes a key one reads) is held until that
//! request has finished. Keys are compared by hash; a collision only makes
//! a request wait needlessly.
//!
//! The pipeline owns its futures: the connection loop awaits
//! [`Pipeline::next_finished`] for the next output in request order and
//! never sees the jobs themselves. Only the oldest entry is ever polled:
//! answers leave in request order, so a later job finishing first needs
//! no wake-up, and a queue of plain futures needs no allocation per entry
//! (as `FuturesOrdered` makes).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt;
use tracing::warn;

use super::job::{Charged, Job, JobContext, Outputs};
use crate::KvsEngine;
use crate::command::Scope;
use crate::thread_pool::{Batcher, Blocking};

/// A place in the response order: answered on the spot (ping, protocol
/// errors) or a group of requests running on the pool with an engine clone
/// and the emptied request vector, which come back with the outputs `T`
/// to be used again.
enum Pending<R, T> {
    Ready(Option<T>),
    Engine {
        job: Blocking<(R, T)>,
        requests: usize,
        failed: fn(usize) -> T,
    },
}

impl<R, T> Unpin for Pending<R, T> {}

impl<R, T: Default> Future for Pending<R, T> {
    type Output = (Option<R>, T);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            // A finished entry is removed at once and never polled again,
            // so the slot is always full here.
            Pending::Ready(outputs) => Poll::Ready((None, outputs.take().unwrap_or_default())),
            Pending::Engine {
                job,
                requests,
                failed,
            } => Pin::new(job).poll(cx).map(|result| match result {
                Ok((reuse, outputs)) => (Some(reuse), outputs),
                Err(e) => {
                    // The job panicked: every request in it fails, and the
                    // client still gets one response per request.
                    warn!("request failed on the pool: {e}");
                    (None, failed(*requests))
                }
            }),
        }
    }
}

/// What a finished job hands back for the next one: its engine clone and
/// its request vector, empty with its capacity kept.
struct Reuse<E, J> {
    engine: E,
    jobs: Vec<J>,
}

/// A place in one pipeline's response order, and what it yields.
type Entry<E, J> = Pending<Reuse<E, J>, Outputs<<J as Job>::Output>>;
type Finished<E, J> = (Option<Reuse<E, J>>, Outputs<<J as Job>::Output>);

/// Encoded bytes an emptied [`Outputs`] keeps for the next job; a larger
/// buffer (a large value went through it) is let go. Small, because a
/// connection keeps up to [`SPARES`] of them while it is open.
const KEEP_BYTES: usize = 8 * 1024;

/// Spare vectors kept per kind; more than a window's worth are never in
/// use at once.
const SPARES: usize = 8;

/// One connection's requests in flight, in request order.
pub(crate) struct Pipeline<E, J: Job> {
    /// Entries in request order; only the front one is polled.
    in_flight: VecDeque<Entry<E, J>>,
    batcher: Arc<Batcher>,
    ctx: Arc<JobContext>,
    /// Cloned from when `stash` is empty.
    template: E,
    /// Engine clones back from the pool: `KvStore` clones keep their own
    /// read handles, so they are reused rather than made per request.
    stash: Vec<E>,
    /// Emptied request and output vectors, kept so that a batch costs no
    /// allocation for them.
    spare_jobs: Vec<Vec<J>>,
    spare_outputs: Vec<Outputs<J::Output>>,
    /// Requests accepted but not yet sent to the pool; they go as one job.
    ///
    /// A batch holds whatever the connection decoded before it next waits
    /// (up to its whole window): one hand-off to the pool per read, not per
    /// request. One rule splits it: a read never joins a batch that holds a
    /// write, so reads behind a slow write still run beside it rather than
    /// after it on the same worker.
    batch: Vec<J>,
    /// Whether `batch` holds a write.
    batch_writes: bool,
    /// The key hashes of every request in `batch` (and whether each
    /// writes): taken once per request when it is submitted, used again
    /// when its batch launches.
    batch_keys: Vec<(u64, bool)>,
    /// The key hashes of the `held` request.
    held_keys: Vec<(u64, bool)>,
    /// Where `submit` takes a request's key hashes; empty between calls.
    scratch: Vec<(u64, bool)>,
    /// Keys are hashed with a key of this pipeline's own, so a client
    /// cannot choose keys that collide in `touched`, which therefore need
    /// not hash them again.
    hasher: RandomState,
    /// Requests in `in_flight`, counting each of a job's requests.
    running: usize,
    /// Sequence number of the next request to start, and how many
    /// responses have come out: request `s` has finished once `done > s`.
    started: u64,
    done: u64,
    /// Keys of unfinished jobs, by hash: the last job that touched each
    /// and the last that wrote it. Checking a request costs one lookup per
    /// key, whatever is in flight.
    touched: HashMap<u64, Touch, BuildHasherDefault<Prehashed>>,
    /// The last job that read / wrote the whole keyspace (`SCAN`,
    /// `FLUSHDB`) and the last that touched / wrote any key at all.
    all_read: Option<u64>,
    all_write: Option<u64>,
    any_touch: Option<u64>,
    any_write: Option<u64>,
    /// A request waiting for request `.1` to finish; nothing after it
    /// starts before it does.
    held: Option<(J, u64)>,
}

impl<E: KvsEngine, J: Job> Pipeline<E, J> {
    pub(crate) fn new(template: E, batcher: Arc<Batcher>, ctx: Arc<JobContext>) -> Pipeline<E, J> {
        Pipeline {
            in_flight: VecDeque::new(),
            batcher,
            ctx,
            template,
            stash: Vec::new(),
            spare_jobs: Vec::new(),
            spare_outputs: Vec::new(),
            batch: Vec::new(),
            batch_writes: false,
            batch_keys: Vec::new(),
            held_keys: Vec::new(),
            scratch: Vec::new(),
            hasher: RandomState::new(),
            running: 0,
            started: 0,
            done: 0,
            touched: HashMap::default(),
            all_read: None,
            all_write: None,
            any_touch: None,
            any_write: None,
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

    /// Whether anything is on the pool or answered and not yet taken.
    pub(crate) fn is_running(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Whether a held request still blocks everything behind it; releases
    /// it into the next job once what it waited for has finished.
    pub(crate) fn is_blocked(&mut self) -> bool {
        match &self.held {
            Some((_, after)) if self.done > *after => {
                if let Some((job, _)) = self.held.take() {
                    self.batch_writes |= writes(&job, &self.held_keys);
                    self.batch.push(job);
                    self.batch_keys.append(&mut self.held_keys);
                }
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Queues an output known without the engine.
    pub(crate) fn push_ready(&mut self, output: J::Output) {
        self.launch_batch();
        self.started += 1;
        self.running += 1;
        let mut outputs = self.spare_outputs.pop().unwrap_or_default();
        outputs.list.push(output.into());
        self.in_flight.push_back(Pending::Ready(Some(outputs)));
    }

    /// Accepts `job`: into the current batch, or held behind the earlier
    /// job it depends on. Call only when [`is_blocked`](Self::is_blocked)
    /// is false, and call [`launch_batch`](Self::launch_batch) before
    /// waiting for anything.
    pub(crate) fn submit(&mut self, job: J) {
        let mut keys = std::mem::take(&mut self.scratch);
        self.key_hashes(&job, &mut keys);
        let writes = writes(&job, &keys);
        // A read starts a new batch after a write (see `batch`). Launched
        // before the conflict check, so the write is among the jobs the
        // read may have to wait for.
        if self.batch_writes && !writes {
            self.launch_batch();
        }
        // Requests within one batch run in order, so only earlier jobs can
        // conflict.
        match self.conflict(job.scope(), &keys) {
            Some(after) => {
                self.launch_batch();
                self.held = Some((job, after));
                std::mem::swap(&mut self.held_keys, &mut keys);
            }
            None => {
                self.batch_writes |= writes;
                self.batch.push(job);
                self.batch_keys.append(&mut keys);
            }
        }
        keys.clear();
        self.scratch = keys;
    }

    /// Appends the hash of each key `job` touches, and whether it writes
    /// it, to `out`.
    fn key_hashes(&self, job: &J, out: &mut Vec<(u64, bool)>) {
        let hasher = &self.hasher;
        job.for_each_key(&mut |key, writes| out.push((hasher.hash_one(key), writes)));
    }

    /// Sends the current batch to the pool, in one job with the batches
    /// other connections send in this turn of the I/O thread (see
    /// [`Batcher`]), or in a job of its own when it may hold the worker
    /// long: a whole-keyspace command, or calls the engine says may wait
    /// ([`KvsEngine::shares_pool_jobs`]).
    pub(crate) fn launch_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let next = self.spare_jobs.pop().unwrap_or_default();
        let mut jobs = std::mem::replace(&mut self.batch, next);
        let alone = !self.template.shares_pool_jobs(self.batch_writes);
        self.batch_writes = false;
        let count = jobs.len();
        let last = self.started + count as u64 - 1;
        self.started += count as u64;
        self.running += count;
        let mut whole_keyspace = false;
        for job in &jobs {
            match job.scope() {
                Scope::Keys => {}
                Scope::ReadsAll => {
                    whole_keyspace = true;
                    self.all_read = Some(last);
                    self.any_touch = Some(last);
                }
                Scope::WritesAll => {
                    whole_keyspace = true;
                    self.all_write = Some(last);
                    self.any_touch = Some(last);
                    self.any_write = Some(last);
                }
            }
        }
        // Every request of the batch is `last` to the map.
        for (key, writes) in self.batch_keys.drain(..) {
            let touch = self.touched.entry(key).or_default();
            touch.last = last;
            self.any_touch = Some(last);
            if writes {
                touch.last_write = Some(last);
                self.any_write = Some(last);
            }
        }
        let engine = self.stash.pop().unwrap_or_else(|| self.template.clone());
        let mut outputs = self.spare_outputs.pop().unwrap_or_default();
        let ctx = Arc::clone(&self.ctx);
        let run = move || {
            if jobs.len() > 1 {
                jobs.iter().for_each(|job| job.prefetch(&engine));
            }
            let Outputs { list, bytes } = &mut outputs;
            for job in jobs.drain(..) {
                let mark = bytes.len();
                let (charged, refused) = ctx.replies.charge::<J>(job.run(&engine, &ctx, bytes));
                if refused {
                    // The refused reply may already be encoded in `bytes`:
                    // let it go now, not when the connection takes these
                    // outputs (it may not read for a long time).
                    bytes.truncate(mark);
                    bytes.shrink_to(mark.max(KEEP_BYTES));
                }
                list.push(charged);
            }
            (Reuse { engine, jobs }, outputs)
        };
        let job = if alone || whole_keyspace {
            self.batcher.pool().run(run)
        } else {
            self.batcher.run(count, run)
        };
        self.in_flight.push_back(Pending::Engine {
            job,
            requests: count,
            failed: failed::<J>,
        });
    }

    /// The outputs of the next entry in request order, once it has
    /// finished; `None` when nothing is in flight.
    pub(crate) async fn next_finished(&mut self) -> Option<Outputs<J::Output>> {
        let (engine, outputs) = std::future::poll_fn(|cx| self.poll_front(cx)).await?;
        self.finished(engine, outputs.list.len());
        Some(outputs)
    }

    /// Like [`next_finished`](Self::next_finished), without waiting.
    pub(crate) fn try_next_finished(&mut self) -> Option<Outputs<J::Output>> {
        let (engine, outputs) = std::future::poll_fn(|cx| self.poll_front(cx)).now_or_never()??;
        self.finished(engine, outputs.list.len());
        Some(outputs)
    }

    /// Polls the oldest entry; removes it once it has finished.
    fn poll_front(&mut self, cx: &mut Context<'_>) -> Poll<Option<Finished<E, J>>> {
        let Some(front) = self.in_flight.front_mut() else {
            return Poll::Ready(None);
        };
        let done = std::task::ready!(Pin::new(front).poll(cx));
        self.in_flight.pop_front();
        Poll::Ready(Some(done))
    }

    /// Takes back outputs the caller has emptied.
    pub(crate) fn recycle(&mut self, mut outputs: Outputs<J::Output>) {
        debug_assert!(outputs.list.is_empty());
        if self.spare_outputs.len() < SPARES && outputs.list.capacity() > 0 {
            if outputs.bytes.capacity() > KEEP_BYTES {
                outputs.bytes = Vec::new();
            }
            outputs.bytes.clear();
            self.spare_outputs.push(outputs);
        }
    }

    fn finished(&mut self, reuse: Option<Reuse<E, J>>, answered: usize) {
        self.done += answered as u64;
        self.running -= answered;
        if let Some(Reuse { engine, jobs }) = reuse {
            self.stash.push(engine);
            if self.spare_jobs.len() < SPARES {
                self.spare_jobs.push(jobs);
            }
        }
        let done = self.done;
        if self.running == 0 {
            self.touched.clear();
        } else if self.touched.len() > TOUCHED_TRIM {
            self.touched.retain(|_, t| t.last >= done);
        }
    }

    /// The latest unfinished request a request with `scope` and `keys`
    /// (from [`key_hashes`](Self::key_hashes)) must wait for.
    fn conflict(&self, scope: Scope, keys: &[(u64, bool)]) -> Option<u64> {
        let mut after = None;
        match scope {
            Scope::Keys => {}
            // A whole-keyspace command waits for every earlier write (a
            // read) or every earlier request with keys (a write).
            Scope::ReadsAll => after = self.any_write,
            Scope::WritesAll => after = self.any_touch,
        }
        for &(key, writes) in keys {
            // Every key waits for a whole-keyspace write; a write also for
            // a whole-keyspace read.
            after = after.max(self.all_write);
            if writes {
                after = after.max(self.all_read);
            }
            if let Some(t) = self.touched.get(&key) {
                after = after.max(if writes { Some(t.last) } else { t.last_write });
            }
        }
        // Finished already: nothing to wait for.
        after.filter(|&seq| seq >= self.done)
    }
}

/// Whether `job`, whose key hashes are `keys`, may write.
fn writes<J: Job>(job: &J, keys: &[(u64, bool)]) -> bool {
    job.scope() == Scope::WritesAll || keys.iter().any(|&(_, w)| w)
}

/// The last unfinished jobs that touched and wrote one key.
#[derive(Default, Clone, Copy)]
struct Touch {
    last: u64,
    last_write: Option<u64>,
}

/// The outputs of `n` requests whose job panicked, uncharged.
fn failed<J: Job>(n: usize) -> Outputs<J::Output> {
    Outputs {
        list: J::failed(n).into_iter().map(Charged::from).collect(),
        bytes: Vec::new(),
    }
}

/// Past this many keys in flight, finished ones are dropped from the map
/// as jobs finish (below it, only when the pipeline empties).
const TOUCHED_TRIM: usize = 4096;

/// The hasher of `touched`, whose keys are already hashes made with the
/// pipeline's own random key: it passes them on instead of hashing again.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    /// Only `u64`s are hashed (through `write_u64`); this exists for the
    /// trait and mixes whatever it is given.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::MemoryEngine;
    use crate::server::{ServerConfig, ServerStats};
    use crate::thread_pool::{SharedQueueThreadPool, ThreadPool};

    /// A job on one key that records when it ran; `job(0, ..)` style ids.
    struct Probe {
        id: u32,
        key: &'static str,
        writes: bool,
        scope: Scope,
        log: Arc<Mutex<Vec<u32>>>,
    }

    impl Job for Probe {
        type Output = u32;

        fn for_each_key(&self, f: &mut dyn FnMut(&[u8], bool)) {
            f(self.key.as_bytes(), self.writes);
        }

        fn scope(&self) -> Scope {
            self.scope
        }

        fn run<E: KvsEngine>(self, _: &E, _: &JobContext, _: &mut Vec<u8>) -> u32 {
            self.log.lock().unwrap().push(self.id);
            self.id
        }

        fn failed(n: usize) -> Vec<u32> {
            vec![u32::MAX; n]
        }

        fn output_len(_: &u32) -> usize {
            4
        }

        fn refused(_: usize) -> u32 {
            u32::MAX - 1
        }
    }

    impl<E: KvsEngine, J: Job> Pipeline<E, J> {
        /// What `submit` would find `job` waiting for.
        fn conflict_of(&self, job: &J) -> Option<u64> {
            let mut keys = Vec::new();
            self.key_hashes(job, &mut keys);
            self.conflict(job.scope(), &keys)
        }
    }

    fn batcher() -> Arc<Batcher> {
        let pool = Arc::new(<SharedQueueThreadPool as ThreadPool>::new(4).unwrap());
        Arc::new(Batcher::new(pool, 64))
    }

    fn context() -> Arc<JobContext> {
        Arc::new(JobContext {
            config: ServerConfig::default(),
            stats: Arc::new(ServerStats::default()),
            connection: 1,
            commands: Arc::new(crate::command::ServerContext::new(Box::new(
                crate::server::StatsSnapshot::default,
            ))),
            replies: Arc::new(super::super::job::ReplyBudget::new(1 << 20)),
        })
    }

    fn pipeline() -> Pipeline<MemoryEngine, Probe> {
        Pipeline::new(MemoryEngine::new(), batcher(), context())
    }

    fn probe(log: &Arc<Mutex<Vec<u32>>>, id: u32, key: &'static str, writes: bool) -> Probe {
        Probe {
            id,
            key,
            writes,
            scope: Scope::Keys,
            log: Arc::clone(log),
        }
    }

    async fn next(p: &mut Pipeline<MemoryEngine, Probe>) -> Option<Vec<u32>> {
        let outputs = p.next_finished().await?;
        Some(outputs.list.into_iter().map(|c| c.output).collect())
    }

    async fn drain(p: &mut Pipeline<MemoryEngine, Probe>) -> Vec<u32> {
        let mut out = Vec::new();
        loop {
            while !p.is_blocked() && p.held.is_none() && !p.batch.is_empty() {
                p.launch_batch();
            }
            p.launch_batch();
            match p.next_finished().await {
                Some(outputs) => out.extend(outputs.list.into_iter().map(|c| c.output)),
                None => break,
            }
        }
        out
    }

    /// A job whose output is the bytes it wrote into its job's bytes.
    struct Writes(usize);

    impl Job for Writes {
        type Output = usize;

        fn for_each_key(&self, _: &mut dyn FnMut(&[u8], bool)) {}

        fn run<E: KvsEngine>(self, _: &E, _: &JobContext, bytes: &mut Vec<u8>) -> usize {
            bytes.resize(bytes.len() + self.0, 7);
            self.0
        }

        fn failed(n: usize) -> Vec<usize> {
            vec![usize::MAX; n]
        }

        fn output_len(output: &usize) -> usize {
            *output
        }

        fn refused(_: usize) -> usize {
            0
        }
    }

    /// A reply refused by the reply budget after it was encoded into the
    /// job's bytes lets those bytes go at once: a client that does not
    /// read must not make the server hold refused replies.
    #[tokio::test]
    async fn a_refused_reply_lets_its_bytes_go_at_once() {
        // The budget (1 MiB, `context`) cannot hold a 4 MiB reply.
        let mut p: Pipeline<MemoryEngine, Writes> =
            Pipeline::new(MemoryEngine::new(), batcher(), context());
        for len in [100, 4 << 20, 200] {
            p.submit(Writes(len));
        }
        p.launch_batch();
        let outputs = p.next_finished().await.unwrap();
        let lens: Vec<usize> = outputs.list.iter().map(|c| c.output).collect();
        assert_eq!(lens, [100, 0, 200], "refused in the middle, in order");
        assert_eq!(outputs.bytes.len(), 300, "only the replies kept");
        assert!(
            outputs.bytes.capacity() < 64 << 10,
            "{} bytes still held",
            outputs.bytes.capacity()
        );
    }

    #[tokio::test]
    async fn outputs_come_back_in_request_order() {
        let log = Arc::default();
        let mut p = pipeline();
        for id in 0..40 {
            let key = ["a", "b", "c", "d"][id as usize % 4];
            p.submit(probe(&log, id, key, false));
            if id % 3 == 0 {
                p.push_ready(1000 + id);
            }
        }
        let out = drain(&mut p).await;
        let mut expected = Vec::new();
        for id in 0..40 {
            expected.push(id);
            if id % 3 == 0 {
                expected.push(1000 + id);
            }
        }
        assert_eq!(out, expected);
        assert!(p.is_empty());
    }

    #[tokio::test]
    async fn a_read_after_a_write_of_its_key_waits_for_the_write() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut p = pipeline();
        p.submit(probe(&log, 0, "k", true));
        p.launch_batch();
        // Different key: not held. Same key: held behind the write.
        assert!(p.conflict_of(&probe(&log, 9, "other", false)).is_none());
        assert_eq!(p.conflict_of(&probe(&log, 9, "k", false)), Some(0));
        p.submit(probe(&log, 1, "k", false));
        assert!(p.is_blocked());
        assert_eq!(next(&mut p).await, Some(vec![0]));
        assert!(!p.is_blocked(), "released once the write finished");
        p.launch_batch();
        assert_eq!(next(&mut p).await, Some(vec![1]));
        assert_eq!(*log.lock().unwrap(), vec![0, 1]);
    }

    #[tokio::test]
    async fn a_batch_takes_every_ready_read_and_a_read_after_a_write_starts_a_new_one() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut p = pipeline();
        for id in 0..20 {
            p.submit(probe(&log, id, "r", false));
        }
        assert_eq!((p.batch.len(), p.in_flight.len()), (20, 0), "one batch");
        p.submit(probe(&log, 20, "w", true));
        assert_eq!(p.batch.len(), 21, "a write joins the reads before it");
        p.submit(probe(&log, 21, "other", false));
        // The reads and the write went as one job; the read after the
        // write waits in a new batch instead of behind it on one worker.
        assert_eq!((p.batch.len(), p.in_flight.len()), (1, 1));
        assert_eq!(drain(&mut p).await, (0..22).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_read_after_a_write_of_its_key_in_the_same_batch_waits_for_it() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut p = pipeline();
        p.submit(probe(&log, 0, "k", true));
        p.submit(probe(&log, 1, "k", false));
        assert!(p.is_blocked(), "held behind the write");
        assert_eq!(drain(&mut p).await, vec![0, 1]);
        assert_eq!(*log.lock().unwrap(), vec![0, 1]);
    }

    #[tokio::test]
    async fn a_released_request_keeps_its_keys() {
        // The key hashes taken when a request is held go with it into the
        // batch it is released into.
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut p = pipeline();
        p.submit(probe(&log, 0, "k", true));
        p.submit(probe(&log, 1, "k", false));
        assert!(p.is_blocked());
        assert_eq!(next(&mut p).await, Some(vec![0]));
        assert!(!p.is_blocked());
        p.launch_batch();
        assert_eq!(p.conflict_of(&probe(&log, 2, "k", true)), Some(1));
        assert_eq!(p.conflict_of(&probe(&log, 3, "other", true)), None);
        assert_eq!(next(&mut p).await, Some(vec![1]));
    }

    #[tokio::test]
    async fn reads_of_one_key_do_not_wait_for_each_other() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut p = pipeline();
        p.submit(probe(&log, 0, "k", false));
        p.launch_batch();
        assert!(p.conflict_of(&probe(&log, 1, "k", false)).is_none());
        // A write waits for an earlier read of its key.
        assert_eq!(p.conflict_of(&probe(&log, 2, "k", true)), Some(0));
        assert_eq!(drain(&mut p).await, vec![0]);
    }

    #[tokio::test]
    async fn whole_keyspace_commands_order_against_everything() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut p = pipeline();
        p.submit(probe(&log, 0, "a", false));
        p.launch_batch();
        let mut flush = probe(&log, 1, "", false);
        flush.scope = Scope::WritesAll;
        // A flush waits even for an earlier read.
        assert_eq!(p.conflict_of(&flush), Some(0));
        let mut scan = probe(&log, 2, "", false);
        scan.scope = Scope::ReadsAll;
        // A scan does not wait for reads...
        assert!(p.conflict_of(&scan).is_none());
        p.submit(flush);
        assert!(p.is_blocked());
        assert_eq!(next(&mut p).await, Some(vec![0]));
        assert!(!p.is_blocked());
        p.launch_batch();
        // ...and every key waits for a running flush.
        assert_eq!(p.conflict_of(&probe(&log, 3, "zzz", false)), Some(1));
        assert_eq!(p.conflict_of(&scan), Some(1));
        assert_eq!(next(&mut p).await, Some(vec![1]));
    }

    /// A real engine call: `SET key value` (answers `None`) or `GET key`.
    struct Op {
        key: String,
        value: Option<String>,
    }

    impl Job for Op {
        type Output = Option<String>;

        fn for_each_key(&self, f: &mut dyn FnMut(&[u8], bool)) {
            f(self.key.as_bytes(), self.value.is_some());
        }

        fn run<E: KvsEngine>(self, engine: &E, _: &JobContext, _: &mut Vec<u8>) -> Option<String> {
            match self.value {
                Some(value) => {
                    engine.set(self.key, value).unwrap();
                    None
                }
                None => engine.get(self.key).unwrap(),
            }
        }

        fn failed(n: usize) -> Vec<Option<String>> {
            vec![Some("failed".to_owned()); n]
        }

        fn output_len(_: &Option<String>) -> usize {
            8
        }

        fn refused(_: usize) -> Option<String> {
            Some("refused".to_owned())
        }
    }

    /// One connection's loop in miniature: up to `window` requests in
    /// flight, every output collected in order.
    async fn serve(
        mut p: Pipeline<MemoryEngine, Op>,
        ops: Vec<Op>,
        window: usize,
    ) -> Vec<Option<String>> {
        let mut ops = ops.into_iter().peekable();
        let mut out = Vec::new();
        loop {
            while ops.peek().is_some() && !p.is_blocked() && p.len() < window {
                p.submit(ops.next().unwrap());
            }
            let _ = p.is_blocked();
            p.launch_batch();
            match p.next_finished().await {
                Some(outputs) => out.extend(outputs.list.into_iter().map(|c| c.output)),
                None if ops.peek().is_none() && p.is_empty() => return out,
                None => {}
            }
        }
    }

    #[tokio::test]
    async fn connections_sharing_pool_jobs_keep_their_order_and_their_writes() {
        let batcher = batcher();
        let engine = MemoryEngine::new();
        let mut tasks = Vec::new();
        for conn in 0..20 {
            // Each connection writes then reads its own key and a key all
            // of them share, and must read back its own write of its key.
            let mut ops = Vec::new();
            let mut expected = Vec::new();
            for i in 0..50 {
                let value = format!("{conn}-{i}");
                ops.push(Op {
                    key: format!("own{conn}"),
                    value: Some(value.clone()),
                });
                expected.push(None);
                ops.push(Op {
                    key: format!("own{conn}"),
                    value: None,
                });
                expected.push(Some(value.clone()));
                ops.push(Op {
                    key: "shared".to_owned(),
                    value: Some(value.clone()),
                });
                expected.push(None);
            }
            let p = Pipeline::new(engine.clone(), Arc::clone(&batcher), context());
            let window = [1, 4, 16][conn % 3];
            tasks.push(tokio::spawn(async move {
                assert_eq!(serve(p, ops, window).await, expected, "connection {conn}");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (jobs, batches) = batcher.counts();
        assert!(
            jobs < batches,
            "batches of different connections shared pool jobs ({jobs} jobs for {batches} batches)"
        );
        assert!(engine.get("shared".to_owned()).unwrap().is_some());
    }
}
