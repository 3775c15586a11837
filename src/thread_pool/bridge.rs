//! Awaiting a blocking call that runs on a [`ThreadPool`].
//!
//! The job sends its result through a Tokio oneshot channel; the
//! [`Blocking`] future is the receiving end. Both failure modes become
//! values instead of a hang: a panic in the closure is caught inside the job
//! and sent as [`KvsError::TaskPanicked`], and a job the pool dropped
//! without running drops its sender, which the future reports as
//! [`KvsError::Closed`].

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use super::{ThreadPool, panic_message};
use crate::{KvsError, Result};

/// The result of [`spawn_blocking`]: resolves once the job has run.
///
/// `Unpin`, so it can be polled through `&mut` or stored in a struct without
/// pinning. Dropping it does not cancel the job, which still runs; its
/// result is discarded.
#[derive(Debug)]
#[must_use = "the job runs either way, but its result and any panic are only seen by awaiting"]
pub struct Blocking<T> {
    receiver: oneshot::Receiver<Result<T>>,
}

impl<T> Future for Blocking<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver).poll(cx).map(|received| {
            received.unwrap_or_else(|_| {
                Err(KvsError::Closed(
                    "thread pool dropped the job before it ran".to_owned(),
                ))
            })
        })
    }
}

/// Runs `f` on `pool` and returns a future of its return value.
///
/// Costs one boxed job (inside the pool) and one oneshot channel per call.
/// A panic in `f` resolves the future with [`KvsError::TaskPanicked`]
/// carrying the panic message; a job the pool drops unrun resolves it with
/// [`KvsError::Closed`].
pub fn spawn_blocking<P, F, T>(pool: &P, f: F) -> Blocking<T>
where
    P: ThreadPool,
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (job, blocking) = bridged(f);
    pool.spawn(job);
    blocking
}

/// `f` wrapped as a pool job that catches its panic and sends its result,
/// and the future that receives it; the job is the caller's to queue.
pub(crate) fn bridged<F, T>(f: F) -> (impl FnOnce() + Send + 'static, Blocking<T>)
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (sender, receiver) = oneshot::channel();
    let job = move || {
        // Caught here, not left to the worker, so the caller gets the panic
        // as an error value. `AssertUnwindSafe`: `f` is consumed by the
        // call, so nothing observes it half-run.
        let result = panic::catch_unwind(AssertUnwindSafe(f))
            .map_err(|payload| KvsError::TaskPanicked(panic_message(&*payload)));
        // The receiver is gone if the caller stopped waiting (a timed-out or
        // disconnected request); the result has nowhere to go.
        let _ = sender.send(result);
    };
    (job, Blocking { receiver })
}
