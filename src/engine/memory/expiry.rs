//! Active expiry: a background thread that removes expired keys nobody
//! reads, so the memory they hold comes back within a few ticks (a removed
//! item is freed when its last handle goes, and the policy queues' handles
//! go at the tick after removals pause, [`Policy::tick`](super::policy::Policy::tick)).
//!
//! Each stripe keeps its keys with a deadline ordered by deadline, so a
//! sweep visits only keys that are due: unlike Redis's sampling, no expired
//! key survives more than one tick after its deadline.

use std::sync::Weak;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::store::Store;
use crate::engine::now_ms;

/// Time between sweeps (Redis samples 10 times a second too).
pub const TICK: Duration = Duration::from_millis(100);

/// Keys removed from one stripe per sweep at most, so a stripe lock is
/// never held for long; the rest wait for the next tick.
const PER_STRIPE: usize = 2_000;

/// Starts the sweeper. It holds the store only weakly and exits at the
/// first tick after the last engine handle is dropped.
pub fn spawn(store: Weak<Store>) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("kvs-expiry".to_owned())
        .spawn(move || {
            loop {
                thread::sleep(TICK);
                let Some(store) = store.upgrade() else {
                    return;
                };
                sweep(&store, now_ms());
                // Frees the items removed (here or by deletes) that only the
                // policy queues still hold, once removals pause.
                store.policy.tick();
            }
        })
}

/// Removes keys due at `now`; returns how many.
pub fn sweep(store: &Store, now: u64) -> usize {
    (0..store.stripe_count())
        .map(|i| store.sweep_stripe(i, now, PER_STRIPE))
        .sum()
}
