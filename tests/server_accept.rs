//! Accept errors (EMFILE) make the accept loop back off instead of spinning,
//! and the server serves again once descriptors free up. A test binary of its
//! own: it lowers this process's descriptor limit.

mod server_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use kvs::MemoryEngine;
use kvs::server::ServerConfig;
use server_support::TestServer;

/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Counts the `accept failed` warnings: one per attempt.
struct AcceptFailures(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AcceptFailures {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn set_fd_limit(soft: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = soft.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_back_off_and_the_server_recovers() {
    let failures = Arc::new(AtomicUsize::new(0));
    tracing_subscriber::registry()
        .with(AcceptFailures(failures.clone()))
        .init();
    let server = TestServer::start(MemoryEngine::new(), ServerConfig::default()).await;
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    set_fd_limit(open + 16);

    // Each connection costs two descriptors here (client and accepted end):
    // connect until the client side runs out too; by then accept has been
    // failing with EMFILE for a while.
    let mut held = Vec::new();
    for _ in 0..64 {
        match std::net::TcpStream::connect(server.addr) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    assert!(held.len() < 64, "the descriptor limit was never reached");

    // With connections waiting and accept failing, a spinning loop would
    // burn a whole core; the back-off (5 ms doubling to 1 s) uses next to
    // nothing.
    let before = cpu_time();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_time() - before;
    assert!(
        used < Duration::from_millis(300),
        "accept loop used {used:?} of CPU in 1 s"
    );
    // 5 ms doubling to 1 s is about 9 attempts in the first 1.3 s; retrying
    // at once (or every timer tick) would be hundreds.
    let attempts = failures.load(Ordering::Relaxed);
    assert!((1..=20).contains(&attempts), "{attempts} failed accepts");

    // Free the descriptors: the server accepts again (within its longest
    // back-off) and serves a new client.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(2), async {
            let mut c = kvs::KvsClient::connect(server.addr).await?;
            c.ping().await
        })
        .await;
        if let Ok(Ok(())) = attempt {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server did not recover: {attempt:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}
