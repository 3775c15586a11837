//! What a run is asked to do: [`BenchOptions`] and the small value types
//! its command-line flags parse into.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::{KvsError, Result};

/// The largest key space: keys are `key:` and 12 decimal digits.
pub const MAX_KEYS: u64 = 1_000_000_000_000;
/// The largest value `--value-size` accepts (the kvs protocol's frames are
/// capped at 16 MiB; Redis at 512 MiB).
pub const MAX_VALUE_SIZE: usize = 8 << 20;
/// Default Zipf exponent for `--key-dist zipf`.
pub const DEFAULT_ZIPF_S: f64 = 0.99;

/// Which wire protocol the connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The kvs framed protocol (`docs/protocol.md`).
    Kvs,
    /// RESP2, as spoken by `redis-server` and compatible servers.
    Resp,
}

impl FromStr for Protocol {
    type Err = KvsError;

    fn from_str(s: &str) -> Result<Protocol> {
        match s {
            "kvs" => Ok(Protocol::Kvs),
            "resp" | "redis" => Ok(Protocol::Resp),
            _ => Err(invalid(format!(
                "unknown protocol `{s}` (expected kvs or resp)"
            ))),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Kvs => "kvs",
            Protocol::Resp => "resp",
        })
    }
}

/// How keys are drawn from the key space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Zipf with exponent `s`: key `i` (from 0) is drawn with weight
    /// `1 / (i + 1)^s`, so a few keys are hot.
    Zipf(f64),
}

impl FromStr for KeyDist {
    type Err = KvsError;

    /// `uniform`, `zipf` (exponent 0.99) or `zipf:S`.
    fn from_str(s: &str) -> Result<KeyDist> {
        match s.split_once(':') {
            None if s == "uniform" => Ok(KeyDist::Uniform),
            None if s == "zipf" => Ok(KeyDist::Zipf(DEFAULT_ZIPF_S)),
            Some(("zipf", exp)) => match exp.parse::<f64>() {
                Ok(e) if e.is_finite() && e > 0.0 => Ok(KeyDist::Zipf(e)),
                _ => Err(invalid(format!(
                    "bad Zipf exponent `{exp}` (expected a positive number)"
                ))),
            },
            _ => Err(invalid(format!(
                "unknown key distribution `{s}` (expected uniform, zipf or zipf:S)"
            ))),
        }
    }
}

impl fmt::Display for KeyDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDist::Uniform => f.write_str("uniform"),
            KeyDist::Zipf(s) => write!(f, "zipf:{s}"),
        }
    }
}

/// The mix of operations, as relative weights `GET:SET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ratio {
    /// Weight of GET.
    pub get: u32,
    /// Weight of SET.
    pub set: u32,
}

impl Default for Ratio {
    fn default() -> Ratio {
        Ratio { get: 9, set: 1 }
    }
}

impl FromStr for Ratio {
    type Err = KvsError;

    /// `GET:SET`, e.g. `9:1`, `1:0` (GET only), `0:1` (SET only).
    fn from_str(s: &str) -> Result<Ratio> {
        let bad = || invalid(format!("bad ratio `{s}` (expected GET:SET, e.g. 9:1)"));
        let (get, set) = s.split_once(':').ok_or_else(bad)?;
        let get: u32 = get.trim().parse().map_err(|_| bad())?;
        let set: u32 = set.trim().parse().map_err(|_| bad())?;
        if get.checked_add(set).is_none_or(|sum| sum == 0) {
            return Err(bad());
        }
        Ok(Ratio { get, set })
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.get, self.set)
    }
}

/// What a GET miss is followed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMiss {
    /// Nothing.
    #[default]
    Nothing,
    /// A SET of the same key, as a cache-aside (read-through) application
    /// does: the load shows the hit ratio a cache reaches by itself.
    Set,
}

impl FromStr for OnMiss {
    type Err = KvsError;

    fn from_str(s: &str) -> Result<OnMiss> {
        match s {
            "none" | "nothing" => Ok(OnMiss::Nothing),
            "set" => Ok(OnMiss::Set),
            _ => Err(invalid(format!(
                "unknown --on-miss action `{s}` (expected set or none)"
            ))),
        }
    }
}

impl fmt::Display for OnMiss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnMiss::Nothing => "none",
            OnMiss::Set => "set",
        })
    }
}

/// Periodic one-time scans (`--scan EVERY:LENGTH`): after every `every`
/// requests of the mix, a connection reads `length` keys it never read
/// before and never will again, as a batch job scanning a table does. A
/// cache policy that lets them push out the hot keys loses hit ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Mix requests between two scans, per connection.
    pub every: u64,
    /// GETs per scan.
    pub length: u64,
}

impl FromStr for Scan {
    type Err = KvsError;

    fn from_str(s: &str) -> Result<Scan> {
        let bad = || {
            invalid(format!(
                "bad scan `{s}` (expected EVERY:LENGTH, e.g. 10000:1000)"
            ))
        };
        let (every, length) = s.split_once(':').ok_or_else(bad)?;
        let every: u64 = every.trim().parse().map_err(|_| bad())?;
        let length: u64 = length.trim().parse().map_err(|_| bad())?;
        if every == 0 || length == 0 {
            return Err(bad());
        }
        Ok(Scan { every, length })
    }
}

impl fmt::Display for Scan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.every, self.length)
    }
}

/// When the measured part of a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After exactly this many measured requests (warm-up requests not
    /// counted), spread over the connections.
    Requests(u64),
    /// No new request is sent this long after the warm-up ends; the ones
    /// in flight are still awaited and measured.
    Duration(Duration),
}

/// Everything a run is asked to do. `Default` gives the documented CLI
/// defaults against [`crate::DEFAULT_ADDR`].
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Protocol the server speaks.
    pub protocol: Protocol,
    /// Server address: `HOST:PORT`, `IP:PORT` or `[IPv6]:PORT`, resolved
    /// for every connection opened ([`crate::net::resolve`]).
    pub addr: String,
    /// Connections opened, each driven by its own task.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// When the measured part ends.
    pub stop: Stop,
    /// Load applied but not measured before the measured part.
    pub warmup: Duration,
    /// GET:SET mix.
    pub ratio: Ratio,
    /// Key space: keys `key:000000000000` up to `keys - 1`.
    pub keys: u64,
    /// How keys are drawn.
    pub key_dist: KeyDist,
    /// Bytes of every value written.
    pub value_size: usize,
    /// Write every key of the key space once before the run.
    pub preload: bool,
    /// Seed of every random choice (keys, operations, value bytes).
    pub seed: u64,
    /// Open loop: total requests per second, sent on a fixed schedule and
    /// measured from the time each was due. `None` is closed loop: each
    /// connection sends as fast as its responses come back.
    pub rate: Option<f64>,
    /// Worker threads of the client runtime built by
    /// [`run_blocking`](super::run_blocking); 1 runs everything on one
    /// thread, like `redis-benchmark`, so the server keeps the other cores.
    pub threads: usize,
    /// Print a live progress line on stderr once a second.
    pub progress: bool,
    /// What follows a GET miss (cache-aside with [`OnMiss::Set`]).
    pub on_miss: OnMiss,
    /// Periodic one-time scans mixed into the load.
    pub scan: Option<Scan>,
    /// Password every connection authenticates with before the load.
    pub password: Option<String>,
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        BenchOptions {
            protocol: Protocol::Kvs,
            addr: crate::DEFAULT_ADDR.to_owned(),
            connections: 50,
            pipeline: 1,
            stop: Stop::Duration(Duration::from_secs(10)),
            warmup: Duration::ZERO,
            ratio: Ratio::default(),
            keys: 100_000,
            key_dist: KeyDist::Uniform,
            value_size: 100,
            preload: false,
            seed: 42,
            rate: None,
            threads: 1,
            progress: false,
            on_miss: OnMiss::Nothing,
            scan: None,
            password: None,
        }
    }
}

impl BenchOptions {
    /// Rejects options a run cannot honour.
    pub fn validate(&self) -> Result<()> {
        if self.connections == 0 {
            return Err(invalid("--connections must be at least 1"));
        }
        if self.pipeline == 0 {
            return Err(invalid("--pipeline must be at least 1"));
        }
        if self.keys == 0 || self.keys > MAX_KEYS {
            return Err(invalid(format!("--keys must be between 1 and {MAX_KEYS}")));
        }
        if self.value_size > MAX_VALUE_SIZE {
            return Err(invalid(format!(
                "--value-size must be at most {MAX_VALUE_SIZE}"
            )));
        }
        if self.threads == 0 {
            return Err(invalid("--threads must be at least 1"));
        }
        match self.stop {
            Stop::Requests(0) => return Err(invalid("--requests must be at least 1")),
            Stop::Duration(d) if d.is_zero() => {
                return Err(invalid("--duration must be positive"));
            }
            _ => {}
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(invalid("--rate must be a positive number"));
        }
        if self.scan.is_some() && self.keys >= MAX_KEYS / 2 {
            return Err(invalid(format!(
                "--scan needs one-time keys past the key space: --keys must be under {}",
                MAX_KEYS / 2
            )));
        }
        if let KeyDist::Zipf(s) = self.key_dist
            && !(s.is_finite() && s > 0.0)
        {
            return Err(invalid("the Zipf exponent must be positive"));
        }
        Ok(())
    }
}

fn invalid(message: impl Into<String>) -> KvsError {
    KvsError::InvalidInput(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_flags() {
        assert_eq!("9:1".parse::<Ratio>().unwrap(), Ratio { get: 9, set: 1 });
        assert_eq!("0:1".parse::<Ratio>().unwrap(), Ratio { get: 0, set: 1 });
        for bad in ["0:0", "9", "a:b", "1:-1", ""] {
            assert!(bad.parse::<Ratio>().is_err(), "{bad}");
        }
        assert_eq!("uniform".parse::<KeyDist>().unwrap(), KeyDist::Uniform);
        assert_eq!(
            "zipf".parse::<KeyDist>().unwrap(),
            KeyDist::Zipf(DEFAULT_ZIPF_S)
        );
        assert_eq!("zipf:1.2".parse::<KeyDist>().unwrap(), KeyDist::Zipf(1.2));
        for bad in ["zipf:0", "zipf:-1", "zipf:x", "normal", "uniform:1"] {
            assert!(bad.parse::<KeyDist>().is_err(), "{bad}");
        }
        assert_eq!("resp".parse::<Protocol>().unwrap(), Protocol::Resp);
        assert!("http".parse::<Protocol>().is_err());
    }

    #[test]
    fn validate_edges() {
        assert!(BenchOptions::default().validate().is_ok());
        let with = |f: fn(&mut BenchOptions)| {
            let mut o = BenchOptions::default();
            f(&mut o);
            o.validate()
        };
        assert!(with(|o| o.connections = 0).is_err());
        assert!(with(|o| o.pipeline = 0).is_err());
        assert!(with(|o| o.keys = 0).is_err());
        assert!(with(|o| o.keys = MAX_KEYS).is_ok());
        assert!(with(|o| o.keys = MAX_KEYS + 1).is_err());
        assert!(with(|o| o.value_size = MAX_VALUE_SIZE).is_ok());
        assert!(with(|o| o.value_size = MAX_VALUE_SIZE + 1).is_err());
        assert!(with(|o| o.value_size = 0).is_ok());
        assert!(with(|o| o.stop = Stop::Requests(0)).is_err());
        assert!(with(|o| o.stop = Stop::Duration(Duration::ZERO)).is_err());
        assert!(with(|o| o.rate = Some(0.0)).is_err());
        assert!(with(|o| o.rate = Some(f64::NAN)).is_err());
        assert!(with(|o| o.threads = 0).is_err());
    }
}
