//! Hint files: an open that reads them must build the same store as one
//! that scans every segment; a damaged hint is ignored; a damaged segment
//! is still refused when its hint is fine.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use kvs::{KvStore, KvsEngine, KvsError, Options};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tempfile::TempDir;

fn opts() -> Options {
    let mut o = Options::default();
    o.segment_max_bytes = 16 << 10;
    o.auto_compact = false;
    o
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// Random sets (some expiring in the past or far future), removes, a
/// clear and a compaction along the way; returns the model.
fn fill(dir: &Path, seed: u64) -> BTreeMap<String, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = BTreeMap::new();
    let s = KvStore::open_with(dir, opts()).unwrap();
    let now = kvs::engine::now_ms();
    for step in 0..3000 {
        let key = format!("k{}", rng.random_range(0..400));
        match rng.random_range(0..10) {
            0..=5 => {
                let v = "v".repeat(rng.random_range(0..80)) + &step.to_string();
                s.set(key.clone(), v.clone()).unwrap();
                model.insert(key, v);
            }
            6 => {
                let v = format!("far{step}");
                s.set_expiring(key.clone(), v.clone(), now + 3_600_000)
                    .unwrap();
                model.insert(key, v);
            }
            7 => {
                s.set_expiring(key.clone(), "gone".into(), now - 1).unwrap();
                model.remove(&key);
            }
            _ => {
                let _ = s.remove(key.clone());
                model.remove(&key);
            }
        }
        if step == 1000 {
            s.clear().unwrap();
            model.clear();
        }
        if step == 2000 {
            s.compact().unwrap();
        }
    }
    s.write_hints().unwrap();
    model
}

fn check(dir: &Path, model: &BTreeMap<String, String>, seed: u64) {
    let s = KvStore::open_with(dir, opts()).unwrap();
    let keys = s.scan(None, usize::MAX).unwrap();
    let want: Vec<&String> = model.keys().collect();
    assert_eq!(keys.iter().collect::<Vec<_>>(), want, "seed {seed}");
    for (k, v) in model {
        assert_eq!(
            s.get(k.clone()).unwrap().as_ref(),
            Some(v),
            "seed {seed} key {k}"
        );
    }
}

fn seed() -> u64 {
    std::env::var("KVS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x4b56_5348)
}

#[test]
fn open_with_hints_equals_open_without() {
    let seed = seed();
    let dir = TempDir::new().unwrap();
    let model = fill(dir.path(), seed);
    let hints = files(dir.path(), "hint");
    // Every segment has one: the sealed ones (the compaction output too)
    // from the background thread, the newest from the clean close.
    assert_eq!(hints.len(), files(dir.path(), "log").len(), "seed {seed}");
    assert!(hints.len() >= 3, "seed {seed}: {hints:?}");
    check(dir.path(), &model, seed);
    for h in &hints {
        fs::remove_file(h).unwrap();
    }
    check(dir.path(), &model, seed);
}

#[test]
fn a_corrupt_or_truncated_hint_falls_back_to_scanning() {
    let seed = seed();
    let dir = TempDir::new().unwrap();
    let model = fill(dir.path(), seed);
    let hints = files(dir.path(), "hint");
    assert!(hints.len() >= 3);
    // One with a flipped byte in its entries, one cut short, one empty.
    let mut b = fs::read(&hints[0]).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    fs::write(&hints[0], &b).unwrap();
    let b = fs::read(&hints[1]).unwrap();
    fs::write(&hints[1], &b[..b.len() - 7]).unwrap();
    fs::write(&hints[2], b"").unwrap();
    check(dir.path(), &model, seed);
}

#[test]
fn a_damaged_segment_is_refused_even_when_its_hint_is_fine() {
    let seed = seed();
    let dir = TempDir::new().unwrap();
    fill(dir.path(), seed);
    let hints = files(dir.path(), "hint");
    let seg = hints[0].with_extension("log");
    let mut b = fs::read(&seg).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x01;
    fs::write(&seg, &b).unwrap();
    match KvStore::open_with(dir.path(), opts()) {
        Err(KvsError::Corrupt { path, .. }) => assert_eq!(path, seg),
        Err(e) => panic!("seed {seed}: expected Corrupt, got {e}"),
        Ok(_) => panic!("seed {seed}: a damaged sealed segment opened"),
    }
}
