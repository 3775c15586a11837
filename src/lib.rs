//! kvs: a networked key-value cache and store.
//!
//! - [`KvStore`]: a Bitcask-style, crash-safe, append-only log engine with a
//!   lock-free read path ([`engine`]).
//! - [`MemoryEngine`]: the same interface, in memory only (cache use).
//! - [`thread_pool`]: the pools that run blocking engine calls, and the async
//!   bridge the server uses to await them.
//! - [`server`], [`KvsClient`], [`protocol`]: the network service.
//! - `bench`: the load generator behind `kvs-bench` (feature `bench`, on by
//!   default).
//! - [`net`]: host names resolved without NSS, and naming a peer that does
//!   not speak kvs.
#![warn(missing_docs)]

#[cfg(feature = "bench")]
pub mod bench;
mod client;
pub mod command;
pub mod engine;
mod error;
pub mod net;
pub mod protocol;
pub mod server;
pub mod thread_pool;

pub use client::KvsClient;
pub use engine::KvsEngine;
pub use engine::kvs::{KvStore, Options, SyncMode};
pub use engine::memory::MemoryEngine;
pub use error::{KvsError, Result};

/// The address `kvs-server` listens on and `kvs-client` talks to by default.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4000";
