//! Request round trips through an in-process `kvs::server::run` over
//! `KvStore`, against an echo server speaking the same frames (decode the
//! request, answer a fixed response of the right shape, no engine, no
//! pool): the protocol's ceiling on this machine. 1 and 50 connections,
//! one request in flight per connection or a window of 16.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kvs::protocol::{
    DEFAULT_MAX_FRAME_LEN, FrameCodec, Request, Response, decode_message, encode_frame,
};
use kvs::server::ServerConfig;
use kvs::thread_pool::{SharedQueueThreadPool, ThreadPool};
use kvs::{KvStore, KvsClient, KvsEngine};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

const KEYS: usize = 10_000;
const VALUE_LEN: usize = 100;

#[derive(Clone, Copy)]
enum Op {
    Get,
    Set,
}

fn key(i: usize) -> String {
    format!("key{:08}", i % KEYS)
}

/// The echo server: same framing and payload decoding as kvs, a canned
/// answer per request.
async fn echo_server(listener: TcpListener) {
    let value = "v".repeat(VALUE_LEN);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        stream.set_nodelay(true).unwrap();
        let value = value.clone();
        tokio::spawn(async move {
            let mut codec = FrameCodec::new(DEFAULT_MAX_FRAME_LEN);
            let mut rbuf = BytesMut::with_capacity(8192);
            let mut wbuf = BytesMut::with_capacity(8192);
            loop {
                rbuf.reserve(4096);
                match stream.read_buf(&mut rbuf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                while let Ok(Some(frame)) = codec.decode(&mut rbuf) {
                    let response = match decode_message::<Request>(&frame) {
                        Ok(Request::Get { .. }) => Response::Value(Some(value.clone())),
                        Ok(Request::Ping) => Response::Pong,
                        Ok(_) => Response::Ok,
                        Err(e) => Response::from_error(&e),
                    };
                    encode_frame(&response, DEFAULT_MAX_FRAME_LEN, &mut wbuf).unwrap();
                }
                if stream.write_all_buf(&mut wbuf).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// `iters` requests spread over `clients`, each keeping up to `depth` in
/// flight; returns the wall time.
async fn drive(
    clients: &mut Vec<KvsClient>,
    iters: u64,
    depth: usize,
    op: Op,
    value: &Arc<String>,
) -> Duration {
    let per = (iters as usize).div_ceil(clients.len());
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .drain(..)
        .enumerate()
        .map(|(ci, mut c)| {
            let value = value.clone();
            tokio::spawn(async move {
                let (mut sent, mut received) = (0, 0);
                while received < per {
                    while sent < per && sent - received < depth {
                        let k = key(ci * 7919 + sent);
                        let request = match op {
                            Op::Get => Request::Get { key: k.as_str() },
                            Op::Set => Request::Set {
                                key: k.as_str(),
                                value: value.as_str(),
                                ttl_ms: None,
                            },
                        };
                        c.queue(&request).unwrap();
                        sent += 1;
                    }
                    // Take every response that has arrived, then refill
                    // the window in one write.
                    let mut next = Some(c.recv().await.unwrap());
                    while let Some(response) = next {
                        if let Response::Error { message, .. } = response {
                            panic!("{message}");
                        }
                        received += 1;
                        next = c.try_recv().unwrap();
                    }
                }
                c
            })
        })
        .collect();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let value = Arc::new("v".repeat(VALUE_LEN));
    let token = CancellationToken::new();

    let (kvs_addr, echo_addr): (SocketAddr, SocketAddr) = rt.block_on(async {
        let store = KvStore::open(dir.path()).unwrap();
        for i in 0..KEYS {
            store.set(key(i), value.to_string()).unwrap();
        }
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
        let pool = Arc::new(<SharedQueueThreadPool as ThreadPool>::new(threads).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let kvs_addr = listener.local_addr().unwrap();
        tokio::spawn(kvs::server::run(
            listener,
            store,
            pool,
            ServerConfig::default(),
            token.clone(),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = listener.local_addr().unwrap();
        tokio::spawn(echo_server(listener));
        (kvs_addr, echo_addr)
    });

    for (op, op_name) in [(Op::Get, "get"), (Op::Set, "set")] {
        let mut group = c.benchmark_group(format!("network_{op_name}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .throughput(Throughput::Elements(1));
        for conns in [1usize, 50] {
            for depth in [1usize, 16] {
                for (server, addr) in [("kvs", kvs_addr), ("echo", echo_addr)] {
                    let mut clients = rt.block_on(async {
                        let mut v = Vec::new();
                        for _ in 0..conns {
                            v.push(KvsClient::connect(addr).await.unwrap());
                        }
                        v
                    });
                    let id = format!("{server}/conns{conns}/depth{depth}");
                    group.bench_function(id, |b| {
                        b.iter_custom(|iters| {
                            rt.block_on(drive(&mut clients, iters, depth, op, &value))
                        })
                    });
                }
            }
        }
        group.finish();
    }
    token.cancel();
}

criterion_group!(benches, bench);
criterion_main!(benches);
