//! Shared by the test files that run real binaries as child processes: a
//! `kvs-server` child found through its "listening on" log line and killed
//! by its PID when dropped, the resident memory of a child, and the check
//! that an outside tool (redis-cli, nutcracker, ...) is installed.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

pub const SERVER: &str = env!("CARGO_BIN_EXE_kvs-server");

/// How long a child may take to log its address: a debug build on a
/// loaded 2-core machine, opening a data directory.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `kvs-server --addr 127.0.0.1:0 --log-level info`, with every `KVS_*`
/// variable of the test's own environment removed so that only what the
/// test adds (arguments after these, `.env(...)`) configures it.
pub fn server_command() -> Command {
    let mut cmd = Command::new(SERVER);
    cmd.args(["--addr", "127.0.0.1:0", "--log-level", "info"]);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KVS_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// A running `kvs-server` child. Dropping it kills the child (by PID,
/// through `Child`) if it still runs.
pub struct ServerChild {
    pub child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl ServerChild {
    /// Spawns `cmd` (usually from [`server_command`]) and waits for the
    /// address it logs. Panics with the log if the child exits first or
    /// does not log an address within 30 s.
    pub fn spawn(mut cmd: Command) -> ServerChild {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                if !sent && let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(Some(addr));
                    sent = true;
                }
            }
            if !sent {
                let _ = tx.send(None);
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(addr)) => ServerChild {
                child,
                addr: addr.parse().unwrap(),
                log,
            },
            other => {
                let _ = child.kill();
                let _ = child.wait();
                let why = match other {
                    Ok(_) => "exited",
                    Err(_) => "logged no address within 30 s",
                };
                panic!("kvs-server {why}:\n{}", log.lock().unwrap());
            }
        }
    }

    /// Everything the child logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident bytes of the child.
    pub fn rss(&self) -> u64 {
        rss_of(self.pid())
    }

    /// Sends `signal` to the child by its PID.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions; the PID is our
        // own child's, not yet reaped (we hold its `Child`).
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits (at most `limit`) for the child to exit; its exit code, `None`
    /// if a signal ended it. Panics with the log if it does not exit.
    pub fn wait_exit(mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                start.elapsed() < limit,
                "kvs-server did not exit within {limit:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Resident bytes of process `pid` (`/proc/PID/statm`, second field, in
/// pages).
pub fn rss_of(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page
}

/// Whether `tool` runs (`tool --version`); if not, prints `SKIPPED: ...`
/// and returns false, or panics under `CI=true`, where `.ci/run` installs
/// the Debian `package` that has it.
pub fn tool_installed(test: &str, tool: &str, package: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: {tool} is not installed (CI installs {package})");
        }
        // Straight to stderr: the test harness captures println! and
        // eprintln!, and a skip must show in a plain `cargo test`.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("SKIPPED: {test}: {tool} is not installed\n").as_bytes(),
        );
    }
    found
}
