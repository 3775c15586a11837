//! RESP request decoding: kvs's `RespDecoder` against the `redis-protocol`
//! crate on the same bytes, in one run (compare the two lines).
//!
//! - `pipeline`: 64 pipelined `SET key value(100 B)` commands in one buffer,
//!   decoded into argument lists (what a `-P 16..64` client sends).
//! - `trickle`: one `SET` with a 1 MiB value arriving in 16 KiB reads; the
//!   decoder is asked after every read, as a connection asks it.
//! - `commands`: the whole per-command path without the network: decode,
//!   `dispatch`, `execute` on a `MemoryEngine`, encode the reply, for 64
//!   pipelined `SET`s and 64 `GET`s (no peer: a baseline for the server's
//!   own overhead).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kvs::protocol::resp::{Limits, RespDecoder};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;

fn set_command(key: &str, value: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
        key.len(),
        value.len()
    )
    .into_bytes();
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    out
}

/// The arguments of one request as `redis-protocol` decodes it.
fn crate_args(frame: BytesFrame) -> Vec<Bytes> {
    match frame {
        BytesFrame::Array(items) => items
            .into_iter()
            .map(|f| match f {
                BytesFrame::BulkString(b) => b,
                other => panic!("not a bulk string: {other:?}"),
            })
            .collect(),
        other => panic!("not an array: {other:?}"),
    }
}

fn ours_all(buf: &mut BytesMut, decoder: &mut RespDecoder, limits: &Limits) -> usize {
    let mut n = 0;
    while let Some(len) = decoder
        .decode_with(buf, limits, true, |args| black_box(args).len())
        .unwrap()
    {
        n += len;
    }
    n
}

fn crate_all(buf: &mut BytesMut) -> usize {
    let mut n = 0;
    while let Some((frame, _, _)) = decode_bytes_mut(buf).unwrap() {
        n += black_box(crate_args(frame)).len();
    }
    n
}

fn pipeline(c: &mut Criterion) {
    let value = vec![b'x'; 100];
    let input: Vec<u8> = (0..64)
        .flat_map(|i| set_command(&format!("key:{i:08}"), &value))
        .collect();
    let limits = Limits::default();
    let mut group = c.benchmark_group("resp/pipeline");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("kvs", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&input[..]);
            let mut decoder = RespDecoder::new();
            assert_eq!(ours_all(&mut buf, &mut decoder, &limits), 64 * 3);
        })
    });
    group.bench_function("redis-protocol", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&input[..]);
            assert_eq!(crate_all(&mut buf), 64 * 3);
        })
    });
    group.finish();
}

fn trickle(c: &mut Criterion) {
    let input = set_command("big", &vec![b'v'; 1 << 20]);
    let limits = Limits::default();
    let mut group = c.benchmark_group("resp/trickle");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("kvs", |b| {
        b.iter(|| {
            let mut buf = BytesMut::with_capacity(input.len());
            let mut decoder = RespDecoder::new();
            let mut n = 0;
            for chunk in input.chunks(16 << 10) {
                buf.extend_from_slice(chunk);
                n += ours_all(&mut buf, &mut decoder, &limits);
            }
            assert_eq!(n, 3);
        })
    });
    group.bench_function("redis-protocol", |b| {
        b.iter(|| {
            let mut buf = BytesMut::with_capacity(input.len());
            let mut n = 0;
            for chunk in input.chunks(16 << 10) {
                buf.extend_from_slice(chunk);
                n += crate_all(&mut buf);
            }
            assert_eq!(n, 3);
        })
    });
    group.finish();
}

fn commands(c: &mut Criterion) {
    use kvs::MemoryEngine;
    use kvs::command::{ServerContext, Session, Step, dispatch_args};

    let engine = MemoryEngine::new();
    let ctx = ServerContext::new(Box::new(Default::default));
    let mut session = Session::new(&ctx);
    let limits = Limits::default();
    let value = vec![b'x'; 100];
    let sets: Vec<u8> = (0..64)
        .flat_map(|i| set_command(&format!("key:{i:08}"), &value))
        .collect();
    let gets: Vec<u8> = (0..64)
        .flat_map(|i| {
            let key = format!("key:{i:08}");
            format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).into_bytes()
        })
        .collect();
    let run = |input: &[u8], session: &mut Session| {
        let mut buf = BytesMut::from(input);
        let mut out = BytesMut::new();
        let mut decoder = RespDecoder::new();
        while let Some(step) = decoder
            .decode_with(&mut buf, &limits, true, |args| {
                dispatch_args(args, session, &ctx)
            })
            .unwrap()
        {
            match step {
                Step::Engine(cmd) => cmd.execute(&engine, &ctx, 16 << 20).reply.encode(&mut out),
                Step::Reply(r) | Step::Close(r) => r.encode(&mut out),
            }
        }
        black_box(out.len())
    };
    run(&sets, &mut session);
    let mut group = c.benchmark_group("resp/commands");
    group.throughput(Throughput::Elements(64));
    group.bench_function("set", |b| b.iter(|| run(&sets, &mut session)));
    group.bench_function("get", |b| b.iter(|| run(&gets, &mut session)));
    group.finish();
}

criterion_group!(benches, pipeline, trickle, commands);
criterion_main!(benches);
