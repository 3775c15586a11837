//! A pool that is not a pool: every job gets a fresh OS thread.
//!
//! Kept as the baseline the shared-queue pool is measured against, and for
//! callers that spawn so rarely that idle workers would be waste.

use std::thread;

use super::{ThreadPool, check_threads};
use crate::Result;

/// Runs each job on a new, detached thread.
///
/// `threads` only has to be non-zero; nothing bounds how many jobs run at
/// once. A panicking job ends its own thread and nothing else.
#[derive(Debug, Clone, Copy)]
pub struct NaiveThreadPool {
    _private: (),
}

impl ThreadPool for NaiveThreadPool {
    fn new(threads: u32) -> Result<Self> {
        // Validated for the same contract as every pool, even though the
        // count is not used: swapping pools must not change what is legal.
        check_threads(threads)?;
        Ok(NaiveThreadPool { _private: () })
    }

    fn spawn<F>(&self, job: F)
    where
        F: FnOnce() + Send + 'static,
    {
        // `thread::spawn` would panic when the OS refuses a thread; the
        // builder hands the error back (and drops the job, which a bridged
        // caller sees as `Closed`), so a thread limit degrades a request,
        // not the caller.
        if let Err(e) = thread::Builder::new()
            .name("kvs-naive".to_owned())
            .spawn(job)
        {
            tracing::error!(error = %e, "could not start a thread; job dropped");
        }
    }
}
