//! `KvsClient`: the async client.

/// Async client for a kvs server.
pub struct KvsClient {}
