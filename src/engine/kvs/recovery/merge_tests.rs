//! Unit tests of [`merge`](super::merge): which record of a key wins when
//! several segments hold it.

use super::*;

/// One record: key, segment-local offset (to tell records apart), kind,
/// expiry.
type Rec = (&'static str, u64, Kind, u64);

fn seg(id: SegmentId, cleared: bool, recs: &[Rec]) -> Scanned {
    let mut records: Vec<(String, Loc, Kind)> = recs
        .iter()
        .map(|&(k, offset, kind, expires_at)| {
            let loc = Loc {
                seg: id,
                len: 30,
                offset,
                expires_at,
            };
            (k.to_string(), loc, kind)
        })
        .collect();
    records.sort_by(|a, b| a.0.cmp(&b.0));
    let list = keyed(records);
    Scanned {
        id,
        records: list.records,
        keys: list.keys,
        cleared,
        end: ScanEnd::Clean { len: 0 },
        version: 2,
        sealed: true,
        crc: 0,
        hinted: false,
    }
}

/// Runs the merge; returns (key, segment, offset) in emit order.
fn run(segs: Vec<Scanned>) -> Vec<(String, SegmentId, u64)> {
    let mut out = Vec::new();
    merge(&segs, |k, loc| {
        out.push((k.to_owned(), loc.seg, loc.offset))
    });
    out
}

fn expect(v: &[(&str, SegmentId, u64)]) -> Vec<(String, SegmentId, u64)> {
    v.iter().map(|&(k, s, o)| (k.to_string(), s, o)).collect()
}

fn keyed(records: Vec<(String, Loc, Kind)>) -> hint::Keyed {
    hint::Keyed::from_latest(hint::Latest {
        records,
        cleared: false,
        open: false,
    })
}

const P: Kind = Kind::Put;
const T: Kind = Kind::Tombstone;

#[test]
fn newest_segment_wins_among_equal_keys() {
    let out = run(vec![
        seg(
            1,
            false,
            &[("a", 10, P, 0), ("b", 11, P, 0), ("c", 12, P, 0)],
        ),
        seg(2, false, &[("b", 20, P, 0)]),
        seg(3, false, &[("a", 30, P, 0), ("b", 31, P, 0)]),
    ]);
    assert_eq!(out, expect(&[("a", 3, 30), ("b", 3, 31), ("c", 1, 12)]));
}

#[test]
fn a_tombstone_hides_older_puts_and_a_newer_put_beats_it() {
    let out = run(vec![
        seg(
            1,
            false,
            &[("a", 10, P, 0), ("b", 11, P, 0), ("c", 12, P, 0)],
        ),
        seg(2, false, &[("a", 20, T, 0), ("b", 21, T, 0)]),
        seg(3, false, &[("b", 30, P, 0), ("d", 31, T, 0)]),
    ]);
    assert_eq!(out, expect(&[("b", 3, 30), ("c", 1, 12)]));
}

#[test]
fn expired_puts_are_skipped_and_do_not_resurrect_older_ones() {
    let past = now_ms() - 1000;
    let future = now_ms() + 3_600_000;
    let out = run(vec![
        seg(1, false, &[("a", 10, P, 0), ("b", 11, P, 0)]),
        seg(
            2,
            false,
            &[("a", 20, P, past), ("b", 21, P, future), ("c", 22, P, past)],
        ),
    ]);
    // `a`'s newest put has expired: the older, never-expiring one is
    // shadowed all the same (the key was overwritten, then expired).
    assert_eq!(out, expect(&[("b", 2, 21)]));
}

#[test]
fn a_clear_kills_every_older_segment() {
    let out = run(vec![
        seg(1, false, &[("a", 10, P, 0), ("b", 11, P, 0)]),
        seg(2, false, &[("c", 20, P, 0)]),
        // Records after the clear in its own segment survive (scan_one
        // keeps only those).
        seg(3, true, &[("d", 30, P, 0)]),
        seg(4, false, &[("e", 40, P, 0)]),
    ]);
    assert_eq!(out, expect(&[("d", 3, 30), ("e", 4, 40)]));
    // The newest clear counts.
    let out = run(vec![
        seg(1, true, &[("a", 10, P, 0)]),
        seg(2, true, &[]),
        seg(3, false, &[("b", 30, P, 0)]),
    ]);
    assert_eq!(out, expect(&[("b", 3, 30)]));
}

#[test]
fn lists_of_different_lengths_merge_in_key_order() {
    let many: Vec<Rec> = vec![
        ("k00", 1, P, 0),
        ("k01", 2, P, 0),
        ("k02", 3, P, 0),
        ("k03", 4, P, 0),
        ("k04", 5, P, 0),
        ("k05", 6, P, 0),
    ];
    let out = run(vec![
        seg(1, false, &many),
        seg(2, false, &[("k03", 20, P, 0)]),
        seg(3, false, &[]),
        seg(
            4,
            false,
            &[("a", 40, P, 0), ("k05", 41, T, 0), ("z", 42, P, 0)],
        ),
    ]);
    assert_eq!(
        out,
        expect(&[
            ("a", 4, 40),
            ("k00", 1, 1),
            ("k01", 1, 2),
            ("k02", 1, 3),
            ("k03", 2, 20),
            ("k04", 1, 5),
            ("z", 4, 42),
        ])
    );
}

#[test]
fn empty_inputs_emit_nothing() {
    assert!(run(vec![]).is_empty());
    assert!(run(vec![seg(1, false, &[]), seg(2, false, &[])]).is_empty());
    assert!(run(vec![seg(1, false, &[("a", 1, T, 0)])]).is_empty());
    assert_eq!(
        run(vec![seg(1, false, &[]), seg(2, false, &[("a", 1, P, 0)])]),
        expect(&[("a", 2, 1)])
    );
}

#[test]
fn random_lists_merge_like_a_map_of_the_newest_record_per_key() {
    // Seeded xorshift: 300 cases of 0 to 40 segments (a winner tree over
    // non-powers of two, one list, none) with overlapping keys.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for case in 0..300 {
        let segs = next(41) as SegmentId;
        let mut scanned = Vec::new();
        let mut model = std::collections::BTreeMap::new();
        for id in 1..=segs {
            let mut records: Vec<(String, Loc, Kind)> = Vec::new();
            for k in 0..60u64 {
                if next(3) != 0 {
                    continue;
                }
                let kind = if next(4) == 0 {
                    Kind::Tombstone
                } else {
                    Kind::Put
                };
                let loc = Loc {
                    seg: id,
                    len: 30,
                    offset: k,
                    expires_at: 0,
                };
                let key = format!("key{k:02}");
                model.insert(key.clone(), (kind, id));
                records.push((key, loc, kind));
            }
            let list = keyed(records);
            scanned.push(Scanned {
                id,
                records: list.records,
                keys: list.keys,
                cleared: false,
                end: ScanEnd::Clean { len: 0 },
                version: 2,
                sealed: true,
                crc: 0,
                hinted: false,
            });
        }
        let want: Vec<(String, SegmentId, u64)> = model
            .into_iter()
            .filter(|(_, (kind, _))| *kind == Kind::Put)
            .map(|(k, (_, id))| {
                let off = k[3..].parse().unwrap();
                (k, id, off)
            })
            .collect();
        assert_eq!(run(scanned), want, "case {case} with {segs} segments");
    }
}
