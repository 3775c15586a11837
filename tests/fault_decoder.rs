//! Fuzzing the log record decoder (proptest, bounded for CI): the header
//! decoder on arbitrary bytes, encode/decode round trips with every
//! single-byte change caught, and whole segments of random bytes opened as
//! a store (an error or a consistent store, never a panic or a wrong value).

use std::fs;

use kvs::engine::kvs::record::{
    self, Header, Kind, MAX_KEY_LEN, MAX_VALUE_LEN, RECORD_HEADER_LEN, crc_ok,
};
use kvs::{KvStore, KvsEngine, Options};
use proptest::prelude::*;
use tempfile::TempDir;

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn header_decode_never_panics_and_bounds_lengths(bytes in proptest::array::uniform21(any::<u8>())) {
        if let Ok(h) = Header::decode(&bytes) {
            prop_assert!(h.key_len <= MAX_KEY_LEN && h.value_len <= MAX_VALUE_LEN);
            prop_assert!(h.kind != Kind::Tombstone || h.value_len == 0);
        }
    }

    #[test]
    fn records_round_trip_and_any_changed_byte_is_caught(
        kind in prop_oneof![Just(Kind::Put), Just(Kind::Tombstone)],
        key in proptest::collection::vec(any::<u8>(), 0..64),
        value in proptest::collection::vec(any::<u8>(), 0..256),
        expires_at in any::<u64>(),
        flip_at in any::<usize>(),
        flip in 1u8..=255,
    ) {
        let value = if kind == Kind::Tombstone { Vec::new() } else { value };
        let mut buf = Vec::new();
        let n = record::encode(&mut buf, kind, &key, &value, expires_at);
        prop_assert_eq!(n, buf.len());
        let h = Header::decode(buf[..RECORD_HEADER_LEN].try_into().unwrap()).unwrap();
        prop_assert_eq!((h.kind, h.key_len, h.value_len, h.expires_at), (kind, key.len(), value.len(), expires_at));
        prop_assert!(crc_ok(&buf, h.crc));
        let at = flip_at % buf.len();
        buf[at] ^= flip;
        let caught = match Header::decode(buf[..RECORD_HEADER_LEN].try_into().unwrap()) {
            Err(_) => true,
            Ok(h2) => h2.record_len() != buf.len() || !crc_ok(&buf, h2.crc),
        };
        prop_assert!(caught, "change at {} went unnoticed", at);
    }
}

proptest! {
    #![proptest_config(cases(48))]

    /// A newest segment of valid records followed by random bytes: the
    /// store opens with every record before the damage (a torn tail is
    /// cut) or refuses with Corrupt; it never panics or returns a value
    /// that was not written.
    #[test]
    fn random_tails_on_a_segment_open_safely(
        n in 1usize..20,
        tail in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let dir = TempDir::new().unwrap();
        let mut o = Options::default();
        o.auto_compact = false;
        {
            let s = KvStore::open_with(dir.path(), o.clone()).unwrap();
            for i in 0..n {
                s.set(format!("k{i}"), format!("v{i}")).unwrap();
            }
        }
        let seg = fs::read_dir(dir.path()).unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "log"))
            .unwrap();
        let mut bytes = fs::read(&seg).unwrap();
        bytes.extend_from_slice(&tail);
        fs::write(&seg, &bytes).unwrap();
        if let Ok(s) = KvStore::open_with(dir.path(), o) {
            for i in 0..n {
                prop_assert_eq!(s.get(format!("k{i}")).unwrap(), Some(format!("v{i}")));
            }
            prop_assert_eq!(s.len(), n as u64);
        }
    }
}
