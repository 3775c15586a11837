//! Reaching a server: the read-buffer policy every connection shares
//! ([`buffer`]), host names resolved without glibc's NSS
//! ([`resolve`]), and naming the protocol of a peer that turns out not to
//! speak kvs's ([`identify`]).
//!
//! Shared by [`KvsClient`](crate::KvsClient), `kvs-bench` and the
//! binaries' `--addr` flags.

pub mod buffer;
pub mod identify;
pub mod resolve;

pub use identify::{describe_foreign, probe};
pub use resolve::{connect, resolve};
