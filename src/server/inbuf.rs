//! A connection's read buffer, under a server-wide budget of bytes.
//!
//! Every connection may buffer [`FREE_BYTES`] of request input without
//! asking anyone. Past that, each growth of its buffer first takes permits
//! (one per byte) from a semaphore shared by all connections, so the bytes
//! held for partial requests across the server stay under
//! [`ServerConfig::input_budget`](super::ServerConfig::input_budget) plus
//! the free allowances. A connection that cannot get budget waits (its
//! frame timeout still runs, so a budget held by stalled peers is freed
//! when they time out). When the buffer empties, a large one is dropped and
//! its permits returned.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{KvsError, Result};

pub(crate) use crate::net::buffer::CHUNK;

/// Bytes a connection buffers without taking budget.
pub(crate) const FREE_BYTES: usize = 64 * 1024;

/// A read buffer that grows only with budget.
pub(crate) struct InBuf {
    buf: BytesMut,
    budget: Arc<Semaphore>,
    /// Budget held for the capacity past `FREE_BYTES`.
    held: Option<OwnedSemaphorePermit>,
    /// The budget's size.
    total: usize,
}

impl InBuf {
    pub(crate) fn new(budget: Arc<Semaphore>, total: usize) -> InBuf {
        InBuf {
            buf: BytesMut::with_capacity(CHUNK),
            budget,
            held: None,
            total,
        }
    }

    pub(crate) fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Reads once from `rd` into the buffer, growing it first (with budget)
    /// when less than half a chunk is free. Returns the bytes read; 0 at end
    /// of stream.
    pub(crate) async fn read_from<R: AsyncReadExt + Unpin>(&mut self, rd: &mut R) -> Result<usize> {
        if let Some(target) = crate::net::buffer::next_capacity(&self.buf) {
            self.reserve_budget(target).await?;
            self.buf.reserve(target - self.buf.len());
        }
        Ok(rd.read_buf(&mut self.buf).await?)
    }

    /// Takes budget so that a capacity of `target` bytes is covered.
    async fn reserve_budget(&mut self, target: usize) -> Result<()> {
        let need = target.saturating_sub(FREE_BYTES);
        let have = self.held.as_ref().map_or(0, |p| p.num_permits());
        if need <= have {
            return Ok(());
        }
        // A request larger than the whole budget could never get it, and
        // would hold every permit released meanwhile (the semaphore is
        // fair): refuse it now.
        if need > self.total {
            return Err(KvsError::Limit(format!(
                "request needs {need} bytes of buffer, over the server's input budget of {} bytes",
                self.total
            )));
        }
        let more = u32::try_from(need - have)
            .map_err(|_| KvsError::Limit("request too large to buffer".to_owned()))?;
        let permit = Arc::clone(&self.budget)
            .acquire_many_owned(more)
            .await
            .map_err(|_| KvsError::Closed("server shutting down".to_owned()))?;
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        Ok(())
    }

    /// Called when the buffer has been consumed: a buffer that grew past
    /// the free allowance is replaced by a small one, and the budget is
    /// returned whatever the capacity (after a large request is split off,
    /// the buffer keeps only its small tail), so idle connections pin
    /// neither memory nor budget.
    pub(crate) fn shrink_if_empty(&mut self) {
        if self.buf.is_empty() {
            if self.buf.capacity() > FREE_BYTES {
                self.buf = BytesMut::with_capacity(CHUNK);
            }
            self.held = None;
        }
    }

    /// Drops whatever is buffered (a stream that cannot be resynchronised).
    pub(crate) fn discard(&mut self) {
        self.buf = BytesMut::new();
        self.held = None;
    }
}
