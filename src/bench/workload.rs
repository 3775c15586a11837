//! What each request is: the operation, the key and the value, drawn from
//! a seeded generator so a run can be repeated exactly.

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};

use super::options::{BenchOptions, KeyDist, MAX_KEYS, Ratio, Scan};
use crate::{KvsError, Result};

/// Bytes of every key: `key:` and 12 zero-padded decimal digits, the same
/// shape as `redis-benchmark -r`'s `key:__rand_int__` keys, so both tools
/// address the same preloaded keys.
pub const KEY_LEN: usize = 16;
const KEY_PREFIX: &[u8; 4] = b"key:";

/// One operation of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read a key.
    Get,
    /// Write a key.
    Set,
}

/// Why a request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Drawn from the operation mix and the key distribution.
    Mix,
    /// A GET of a one-time key, part of a periodic scan (`--scan`).
    Scan,
    /// Cache-aside (`--on-miss set`): the SET after a GET that missed.
    Fill,
}

/// The shared, immutable description of the load; each connection draws
/// from it with its own [`SmallRng`].
#[derive(Debug)]
pub struct Workload {
    keys: u64,
    zipf: Option<Zipf<f64>>,
    ratio: Ratio,
    value: String,
    scan: Option<Scan>,
    connections: u64,
}

/// One connection's stream of requests: the mix, with a scan of one-time
/// keys mixed in periodically when `--scan` asks for it.
#[derive(Debug)]
pub struct Source {
    rng: SmallRng,
    id: u64,
    /// Mix requests since the last scan ended.
    since_scan: u64,
    /// GETs left in the scan under way.
    scan_left: u64,
    /// One-time keys this connection has used so far.
    scanned: u64,
}

impl Source {
    /// The stream of connection `id`, seeded by `seed`.
    pub fn new(seed: u64, id: usize) -> Source {
        Source {
            rng: Workload::rng(seed, id),
            id: id as u64,
            since_scan: 0,
            scan_left: 0,
            scanned: 0,
        }
    }

    /// The next request: operation, key index, and why it is sent.
    pub fn next(&mut self, w: &Workload) -> (Op, u64, Kind) {
        if let Some(scan) = w.scan {
            if self.scan_left == 0 && self.since_scan >= scan.every {
                self.scan_left = scan.length;
                self.since_scan = 0;
            }
            if self.scan_left > 0 {
                self.scan_left -= 1;
                // One-time keys past the key space, interleaved so no two
                // connections use the same one; wraps only after about
                // 10^12 / connections scan GETs.
                let span = MAX_KEYS - w.keys;
                let index = w.keys + (self.scanned * w.connections + self.id) % span;
                self.scanned += 1;
                return (Op::Get, index, Kind::Scan);
            }
            self.since_scan += 1;
        }
        let op = w.next_op(&mut self.rng);
        (op, w.next_key(&mut self.rng), Kind::Mix)
    }
}

impl Workload {
    /// The workload `options` describe.
    pub fn new(options: &BenchOptions) -> Result<Workload> {
        let zipf = match options.key_dist {
            KeyDist::Uniform => None,
            KeyDist::Zipf(s) => Some(
                Zipf::new(options.keys as f64, s)
                    .map_err(|e| KvsError::InvalidInput(format!("bad Zipf parameters: {e}")))?,
            ),
        };
        Ok(Workload {
            keys: options.keys,
            zipf,
            ratio: options.ratio,
            value: make_value(options.value_size, options.seed),
            scan: options.scan,
            connections: options.connections as u64,
        })
    }

    /// The value every SET writes.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The size of the key space.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// The random generator of connection `id`: distinct per connection,
    /// fixed by the seed.
    pub fn rng(seed: u64, id: usize) -> SmallRng {
        SmallRng::seed_from_u64(seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// The next operation of the mix.
    pub fn next_op(&self, rng: &mut SmallRng) -> Op {
        if self.ratio.set == 0 {
            Op::Get
        } else if self.ratio.get == 0 {
            Op::Set
        } else if rng.random_range(0..self.ratio.get + self.ratio.set) < self.ratio.get {
            Op::Get
        } else {
            Op::Set
        }
    }

    /// The index of the next key, in `0..keys`; under Zipf, index 0 is
    /// the hottest.
    pub fn next_key(&self, rng: &mut SmallRng) -> u64 {
        match &self.zipf {
            None => rng.random_range(0..self.keys),
            // Zipf samples are whole numbers in [1, keys] stored as f64.
            Some(zipf) => (zipf.sample(rng) as u64).clamp(1, self.keys) - 1,
        }
    }
}

/// Writes key `index` into `buf` and returns it as text.
pub fn format_key(index: u64, buf: &mut [u8; KEY_LEN]) -> &str {
    buf[..KEY_PREFIX.len()].copy_from_slice(KEY_PREFIX);
    let mut n = index;
    for slot in buf[KEY_PREFIX.len()..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // Only ASCII digits and the ASCII prefix were written.
    std::str::from_utf8(buf).unwrap_or_default()
}

/// `size` printable ASCII bytes drawn from `seed` (not one repeated byte,
/// so a compressing store gains nothing unfair).
fn make_value(size: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..size)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_a_fixed_shape() {
        let mut buf = [0; KEY_LEN];
        assert_eq!(format_key(0, &mut buf), "key:000000000000");
        assert_eq!(format_key(1234567, &mut buf), "key:000001234567");
        assert_eq!(format_key(999_999_999_999, &mut buf), "key:999999999999");
    }

    #[test]
    fn draws_stay_in_range_and_follow_the_mix() {
        for dist in [KeyDist::Uniform, KeyDist::Zipf(0.99), KeyDist::Zipf(2.0)] {
            let options = BenchOptions {
                keys: 1000,
                key_dist: dist,
                ..BenchOptions::default()
            };
            let w = Workload::new(&options).unwrap();
            let mut rng = Workload::rng(7, 3);
            let mut gets = 0;
            let mut hot = 0;
            for _ in 0..100_000 {
                let k = w.next_key(&mut rng);
                assert!(k < 1000);
                hot += usize::from(k < 10);
                gets += usize::from(w.next_op(&mut rng) == Op::Get);
            }
            assert!((88_000..92_000).contains(&gets), "{gets} GETs of 100000");
            match dist {
                // 1% of the keys get about 1% of the draws ...
                KeyDist::Uniform => assert!(hot < 2_000, "{hot}"),
                // ... or far more under Zipf.
                KeyDist::Zipf(_) => assert!(hot > 20_000, "{hot}"),
            }
        }
    }

    #[test]
    fn only_one_op_when_the_other_weighs_nothing() {
        let w = |ratio| {
            Workload::new(&BenchOptions {
                ratio,
                ..BenchOptions::default()
            })
            .unwrap()
        };
        let mut rng = Workload::rng(1, 0);
        let gets = w(Ratio { get: 1, set: 0 });
        let sets = w(Ratio { get: 0, set: 5 });
        for _ in 0..1000 {
            assert_eq!(gets.next_op(&mut rng), Op::Get);
            assert_eq!(sets.next_op(&mut rng), Op::Set);
        }
    }

    #[test]
    fn scans_are_one_time_keys_at_the_set_period() {
        let w = Workload::new(&BenchOptions {
            keys: 1000,
            connections: 3,
            key_dist: KeyDist::Zipf(0.99),
            scan: Some(Scan {
                every: 100,
                length: 20,
            }),
            ..BenchOptions::default()
        })
        .unwrap();
        let mut seen = std::collections::HashSet::new();
        for id in 0..3 {
            let mut source = Source::new(5, id);
            let kinds: Vec<(Op, u64, Kind)> = (0..1200).map(|_| source.next(&w)).collect();
            // 100 mix requests, then 20 scan GETs, and again.
            for (i, (op, key, kind)) in kinds.iter().enumerate() {
                let scanning = i % 120 >= 100;
                assert_eq!(*kind == Kind::Scan, scanning, "request {i}");
                if scanning {
                    assert_eq!(*op, Op::Get);
                    assert!(*key >= 1000);
                    assert!(seen.insert(*key), "scan key {key} used twice");
                } else {
                    assert!(*key < 1000);
                }
            }
        }
    }

    #[test]
    fn values_are_seeded() {
        let v = |size, seed| make_value(size, seed);
        assert_eq!(v(100, 1).len(), 100);
        assert_eq!(v(100, 1), v(100, 1));
        assert_ne!(v(100, 1), v(100, 2));
        assert_eq!(v(0, 1), "");
    }
}
