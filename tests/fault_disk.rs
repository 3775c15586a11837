//! Disk faults against KvStore: sealed segments cut at every record
//! boundary, bytes flipped in sealed and active segments, a full disk (a
//! small tmpfs the test mounts when it may) and a read-only file system.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kvs::engine::kvs::record::{Header, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use kvs::{KvStore, KvsEngine, KvsError, Options};
use tempfile::TempDir;

fn opts() -> Options {
    let mut o = Options::default();
    o.segment_max_bytes = 2048;
    o.auto_compact = false;
    o
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// Writes k0..k{n-1} and closes the store.
fn fill(dir: &Path, n: usize) {
    let s = KvStore::open_with(dir, opts()).unwrap();
    for i in 0..n {
        s.set(format!("k{i}"), format!("value-{i}")).unwrap();
    }
}

/// Offsets where records start in a segment's bytes, and its length.
fn boundaries(bytes: &[u8]) -> Vec<usize> {
    let mut at = SEGMENT_HEADER_LEN as usize;
    let mut out = vec![0, at];
    while at + RECORD_HEADER_LEN <= bytes.len() {
        let h = Header::decode(bytes[at..at + RECORD_HEADER_LEN].try_into().unwrap())
            .expect("an intact segment");
        at += h.record_len();
        out.push(at);
    }
    assert_eq!(at, bytes.len(), "records cover the segment");
    out
}

#[test]
fn a_sealed_segment_cut_at_any_record_boundary_is_refused_by_name() {
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 200);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "several sealed segments");
    for victim in [&segs[0], &segs[segs.len() / 2]] {
        let original = fs::read(victim).unwrap();
        let cuts = boundaries(&original);
        let full = original.len();
        for &cut in &cuts {
            if cut == full {
                continue;
            }
            fs::write(victim, &original[..cut]).unwrap();
            match KvStore::open_with(dir.path(), opts()) {
                Err(KvsError::Corrupt { path, .. }) => {
                    assert_eq!(&path, victim, "cut at {cut}: the error names the file")
                }
                Err(e) => panic!("cut at {cut}: wrong error {e}"),
                Ok(_) => panic!(
                    "{} cut to {cut} of {full} bytes opened: silent loss",
                    victim.display()
                ),
            }
        }
        fs::write(victim, &original).unwrap();
    }
    // Restored, everything is there.
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    for i in 0..200 {
        assert_eq!(s.get(format!("k{i}")).unwrap(), Some(format!("value-{i}")));
    }
}

#[test]
fn a_flipped_byte_anywhere_in_a_sealed_segment_is_refused() {
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 200);
    let segs = segments(dir.path());
    let victim = &segs[1];
    let original = fs::read(victim).unwrap();
    for at in (0..original.len()).step_by(3) {
        let mut bytes = original.clone();
        bytes[at] ^= 0x20;
        fs::write(victim, &bytes).unwrap();
        match KvStore::open_with(dir.path(), opts()) {
            Err(KvsError::Corrupt { path, .. }) => assert_eq!(&path, victim, "flip at {at}"),
            Err(KvsError::UnsupportedVersion { path, .. }) => assert_eq!(&path, victim),
            Err(e) => panic!("flip at {at}: wrong error {e}"),
            Ok(_) => panic!("flip at {at} of {} went unnoticed", victim.display()),
        }
    }
    fs::write(victim, &original).unwrap();
    KvStore::open_with(dir.path(), opts()).unwrap();
}

#[test]
fn a_flipped_byte_in_the_active_segment_never_yields_a_wrong_value() {
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 60);
    let p = segments(dir.path()).pop().unwrap();
    let original = fs::read(&p).unwrap();
    let cuts = boundaries(&original);
    let last_start = cuts[cuts.len() - 2];
    for at in (0..original.len()).step_by(5) {
        let mut bytes = original.clone();
        bytes[at] ^= 0x01;
        fs::write(&p, &bytes).unwrap();
        match KvStore::open_with(dir.path(), opts()) {
            Err(KvsError::Corrupt { path, .. }) => assert_eq!(path, p, "flip at {at}"),
            Err(KvsError::UnsupportedVersion { .. }) => assert!(at < 8),
            Err(e) => panic!("flip at {at}: wrong error {e}"),
            Ok(s) => {
                // Only damage in the last record may be taken for a torn
                // tail and cut; every other key is intact.
                assert!(
                    at >= last_start,
                    "flip at {at} (before the last record) opened"
                );
                for i in 0..60 {
                    let got = s.get(format!("k{i}")).unwrap();
                    assert!(
                        got.is_none() || got == Some(format!("value-{i}")),
                        "flip at {at}: k{i} = {got:?}"
                    );
                    if i < 59 {
                        assert!(got.is_some(), "flip at {at}: k{i} lost");
                    }
                }
                drop(s);
            }
        }
        fs::write(&p, &original).unwrap();
    }
}

/// Runs a command as the test's user; true when it succeeded.
fn sh(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// `None` (after printing SKIPPED) when this environment cannot mount;
    /// under CI=true that is a failure when the test runs as root.
    fn mount(size: &str, test: &str) -> Option<Tmpfs> {
        let dir = TempDir::new().unwrap();
        let path = dir.path().to_str().unwrap().to_string();
        if is_root()
            && sh(
                "mount",
                &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &path],
            )
        {
            return Some(Tmpfs { dir });
        }
        let why = if is_root() {
            "mount -t tmpfs failed (no CAP_SYS_ADMIN in this container?)"
        } else {
            "not running as root"
        };
        // Straight to stderr: the test harness captures println!.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("SKIPPED: {test}: {why}\n").as_bytes(),
        );
        if std::env::var("CI").as_deref() == Ok("true") && is_root() {
            panic!("{test}: root but cannot mount a tmpfs under CI");
        }
        None
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        sh("umount", &[self.dir.path().to_str().unwrap()]);
    }
}

#[test]
fn a_full_disk_serves_reads_refuses_writes_clearly_and_recovers() {
    let Some(fs_) = Tmpfs::mount("8m", "full disk") else {
        return;
    };
    let data = fs_.path().join("data");
    let filler = fs_.path().join("filler");
    fs::write(&filler, vec![1u8; 2 << 20]).unwrap();
    // Default options: 64 MiB segments, far more than the disk holds.
    let s = KvStore::open(&data).unwrap();
    let value = "v".repeat(1000);
    let mut written = 0;
    let err = loop {
        match s.set(format!("k{written}"), value.clone()) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 100_000, "an 8 MiB disk never filled");
    };
    assert!(
        written > 1000,
        "segments were sized to the free space ({written} writes)"
    );
    let msg = err.to_string();
    assert!(matches!(err, KvsError::ReadOnly(_)), "{msg}");
    assert!(
        msg.contains(data.to_str().unwrap()),
        "names the directory: {msg}"
    );
    assert!(msg.contains("bytes needed"), "{msg}");
    for i in (0..written).step_by(97) {
        assert_eq!(s.get(format!("k{i}")).unwrap().as_deref(), Some(&*value));
    }
    // Reopening on the full disk works and serves reads.
    drop(s);
    let s = KvStore::open(&data).unwrap();
    assert_eq!(s.get("k0".into()).unwrap().as_deref(), Some(&*value));
    assert!(matches!(
        s.set("more".into(), value.clone()),
        Err(KvsError::ReadOnly(_))
    ));
    // Space comes back: writes resume without a reopen.
    fs::remove_file(&filler).unwrap();
    s.set("more".into(), value.clone()).unwrap();
    drop(s);
    let s = KvStore::open(&data).unwrap();
    assert_eq!(s.get("more".into()).unwrap().as_deref(), Some(&*value));
    assert_eq!(s.len(), written + 1);
}

/// Opens `data` (already filled with k0..k49) while it cannot be written:
/// reads are served, writes fail with `ReadOnly` naming the directory.
fn check_read_only(data: &Path) {
    let s = KvStore::open_with(data, opts()).unwrap();
    for i in 0..50 {
        assert_eq!(s.get(format!("k{i}")).unwrap(), Some(format!("value-{i}")));
    }
    let err = s.set("new".into(), "v".into()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, KvsError::ReadOnly(_)), "{msg}");
    assert!(
        msg.contains(data.to_str().unwrap()),
        "names the directory: {msg}"
    );
    assert!(matches!(s.clear(), Err(KvsError::ReadOnly(_))));
    assert!(matches!(s.remove("k1".into()), Err(KvsError::ReadOnly(_))));
    assert_eq!(s.len(), 50);
}

#[test]
fn a_read_only_directory_serves_reads_and_refuses_writes_by_name() {
    // As root, permission bits do not stop writes: use a read-only mount.
    if is_root() {
        let Some(fs_) = Tmpfs::mount("4m", "read-only directory") else {
            return;
        };
        let data = fs_.path().join("data");
        fill(&data, 50);
        let p = fs_.path().to_str().unwrap();
        assert!(sh("mount", &["-o", "remount,ro", p]));
        check_read_only(&data);
        assert!(sh("mount", &["-o", "remount,rw", p]));
    } else {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new().unwrap();
        let data = dir.path().join("data");
        fill(&data, 50);
        for p in segments(&data).iter().chain([&data.join("LOCK")]) {
            fs::set_permissions(p, fs::Permissions::from_mode(0o444)).unwrap();
        }
        fs::set_permissions(&data, fs::Permissions::from_mode(0o555)).unwrap();
        check_read_only(&data);
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn startup_io_errors_name_the_file_and_the_operation() {
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 10);
    // The id after the newest (the manifest accepts that one: a rotation
    // that stopped before recording it), so opening the file is what fails.
    let newest = segments(dir.path()).len();
    assert_eq!(newest, 1);
    let odd = dir.path().join("00000000000000000002.log");
    fs::create_dir(&odd).unwrap();
    let msg = KvStore::open_with(dir.path(), opts())
        .err()
        .expect("refused")
        .to_string();
    assert!(msg.contains(odd.to_str().unwrap()), "{msg}");
    assert!(msg.contains("Is a directory"), "{msg}");
    assert!(
        msg.contains("read ") || msg.contains("open "),
        "names the operation: {msg}"
    );
}

#[test]
fn a_stray_segment_file_with_an_out_of_range_id_is_refused_by_name() {
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 10);
    let stray = dir.path().join("00000000004294967295.log");
    fs::write(&stray, b"").unwrap();
    let err = KvStore::open_with(dir.path(), opts())
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("00000000004294967295.log"), "{msg}");
    fs::remove_file(&stray).unwrap();
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    assert_eq!(s.get("k9".into()).unwrap().as_deref(), Some("value-9"));
}

#[test]
fn a_compactor_panic_is_counted_and_does_not_stop_later_compactions() {
    let dir = TempDir::new().unwrap();
    let mut o = opts();
    o.fail_point = Some(kvs::engine::kvs::FailPoint::Panic);
    let s = KvStore::open_with(dir.path(), o).unwrap();
    s.set("k".into(), "v".into()).unwrap();
    for round in 1..=2 {
        match s.compact() {
            Err(KvsError::TaskPanicked(_)) => {}
            other => panic!("round {round}: {other:?}"),
        }
        assert_eq!(s.stats().compaction_failures, round);
    }
    assert_eq!(s.get("k".into()).unwrap().as_deref(), Some("v"));
}

/// A copy of the data files of `from` (not its lock) in a new directory.
fn copy_store(from: &Path) -> TempDir {
    let to = TempDir::new().unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().is_some_and(|n| n != "LOCK") {
            fs::copy(&p, to.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    to
}

/// A whole segment deleted (the oldest, one in the middle, the newest) is
/// refused on open with an error naming it: the manifest lists every live
/// segment. Before it, the keys of a deleted sealed segment were silently
/// gone (issue 10, finding 4).
#[test]
fn a_deleted_segment_is_refused_by_name() {
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 200);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "several segments");
    for victim in [&segs[0], &segs[segs.len() / 2], &segs[segs.len() - 1]] {
        let copy = copy_store(dir.path());
        let name = victim.file_name().unwrap();
        fs::remove_file(copy.path().join(name)).unwrap();
        let msg = KvStore::open_with(copy.path(), opts())
            .err()
            .unwrap_or_else(|| panic!("opened without {name:?}"))
            .to_string();
        assert!(msg.contains(name.to_str().unwrap()), "{msg}");
        assert!(msg.contains("missing"), "{msg}");
    }
    // The untouched store still opens whole.
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    assert_eq!(s.len(), 200);
}

/// A store written before kvs kept a manifest opens, gets one, and is
/// checked from then on; a damaged manifest is refused by name.
#[test]
fn a_store_without_a_manifest_gets_one_and_a_damaged_one_is_refused() {
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 200);
    let manifest = dir.path().join("MANIFEST");
    fs::remove_file(&manifest).unwrap();
    drop(KvStore::open_with(dir.path(), opts()).unwrap());
    assert!(manifest.exists(), "open wrote a manifest");

    let copy = copy_store(dir.path());
    let segs = segments(copy.path());
    fs::remove_file(&segs[1]).unwrap();
    let msg = KvStore::open_with(copy.path(), opts())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        msg.contains(segs[1].file_name().unwrap().to_str().unwrap()),
        "{msg}"
    );

    let mut bytes = fs::read(&manifest).unwrap();
    bytes[8] ^= 1;
    fs::write(&manifest, &bytes).unwrap();
    let msg = KvStore::open_with(dir.path(), opts())
        .err()
        .expect("refused")
        .to_string();
    assert!(msg.contains("MANIFEST"), "{msg}");
    assert!(msg.contains("checksum"), "{msg}");
}

/// After a compaction and a clear the manifest follows the live segments:
/// reopening finds nothing missing, and a segment deleted afterwards is
/// still caught.
#[test]
fn the_manifest_follows_compaction_and_clear() {
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 200);
    {
        let s = KvStore::open_with(dir.path(), opts()).unwrap();
        for i in 0..100 {
            s.set(format!("k{i}"), "again".to_string()).unwrap();
        }
        s.compact().unwrap();
        for i in 200..300 {
            s.set(format!("k{i}"), format!("value-{i}")).unwrap();
        }
    }
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    assert_eq!(s.len(), 300);
    assert_eq!(s.get("k5".into()).unwrap().as_deref(), Some("again"));
    s.clear().unwrap();
    s.set("after".into(), "clear".into()).unwrap();
    drop(s);
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    assert_eq!(s.len(), 1);
    for i in 0..300 {
        s.set(format!("n{i}"), format!("value-{i}")).unwrap();
    }
    drop(s);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "{segs:?}");
    fs::remove_file(&segs[1]).unwrap();
    assert!(KvStore::open_with(dir.path(), opts()).is_err());
}
