//! Thread pools for blocking engine calls, and the bridge that lets async
//! code await them.
//!
//! The server never runs an engine call on a Tokio worker (a `get` may read
//! the disk, a `set` may fsync); it hands the call to a pool through
//! [`spawn_blocking`] (or [`SharedQueueThreadPool::run`]) and awaits the
//! returned [`Blocking`] future.
//!
//! - [`NaiveThreadPool`]: one OS thread per job; a baseline.
//! - [`SharedQueueThreadPool`]: a fixed set of workers pulling from one
//!   queue; what the server uses.
//! - [`Batcher`]: a submission queue in front of the shared-queue pool
//!   that sends what async tasks submit in one runtime turn as one job.

use std::any::Any;

use crate::Result;

mod batch;
mod bridge;
mod naive;
mod shared_queue;

pub use batch::Batcher;
pub use bridge::{Blocking, spawn_blocking};
pub use naive::NaiveThreadPool;
pub use shared_queue::SharedQueueThreadPool;

/// A pool that runs `'static` jobs on threads it owns.
pub trait ThreadPool {
    /// Creates a pool of `threads` threads.
    ///
    /// `threads == 0` is [`KvsError::InvalidInput`](crate::KvsError::InvalidInput):
    /// a pool that can never run a job would hang every caller instead.
    fn new(threads: u32) -> Result<Self>
    where
        Self: Sized;

    /// Queues `job` to run on one of the pool's threads.
    ///
    /// There is no result: a job that must report back carries its own
    /// channel (that is what [`spawn_blocking`] does). A pool that cannot
    /// run the job drops it, which such a channel observes as closed.
    fn spawn<F>(&self, job: F)
    where
        F: FnOnce() + Send + 'static;
}

/// The message of a panic payload, for logs and
/// [`KvsError::TaskPanicked`](crate::KvsError::TaskPanicked).
///
/// `panic!("literal")` carries a `&'static str`, `panic!("{x}")` a `String`;
/// `std::panic::panic_any` can carry anything else, which has no text.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Rejects the one thread count no pool can honour.
fn check_threads(threads: u32) -> Result<()> {
    if threads == 0 {
        return Err(crate::KvsError::InvalidInput(
            "a thread pool needs at least one thread".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::panic;

    use super::*;

    #[test]
    fn panic_message_reads_str_and_string_payloads() {
        let s = panic::catch_unwind(|| panic!("static text")).unwrap_err();
        assert_eq!(panic_message(&*s), "static text");

        let n = 7;
        let s = panic::catch_unwind(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(panic_message(&*s), "formatted 7");

        let s = panic::catch_unwind(|| panic::panic_any(42_u8)).unwrap_err();
        assert_eq!(panic_message(&*s), "non-string panic payload");
    }

    #[test]
    fn zero_threads_is_invalid_input() {
        assert!(matches!(
            check_threads(0),
            Err(crate::KvsError::InvalidInput(_))
        ));
        assert!(check_threads(1).is_ok());
    }
}
