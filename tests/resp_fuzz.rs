//! Property tests of the RESP decoder: arbitrary bytes fed in arbitrary
//! pieces never panic and never yield more than the limits allow, and
//! encoded commands (multibulk and inline) decode to what was encoded.
//!
//! CI runs the default number of cases; `PROPTEST_CASES=100000 cargo test
//! --test resp_fuzz` runs a longer fuzz.

mod resp_support;

use bytes::{Bytes, BytesMut};
use kvs::protocol::resp::{Limits, ProtocolError, RespDecoder};
use proptest::prelude::*;

const SMALL: Limits = Limits {
    max_bulk_len: 64,
    max_array_len: 8,
    max_inline_len: 128,
};

/// Feeds `input` in pieces cut at `cuts`; every command until the first
/// error (or the end), and the error.
fn feed(input: &[u8], cuts: &[usize], limits: &Limits) -> (Vec<Vec<Bytes>>, Option<ProtocolError>) {
    let mut decoder = RespDecoder::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.push(input.len());
    cuts.sort_unstable();
    for cut in cuts {
        buf.extend_from_slice(&input[at..cut.max(at)]);
        at = cut.max(at);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf, limits, true) {
                Ok(Some(args)) => {
                    assert!(!args.is_empty());
                    assert!(args.len() <= limits.max_array_len.max(1 + limits.max_inline_len / 2));
                    for a in &args {
                        assert!(a.len() <= limits.max_bulk_len.max(limits.max_inline_len));
                    }
                    assert!(buf.len() < before, "a command consumed nothing");
                    out.push(args);
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn multibulk(cmd: &[Vec<u8>]) -> Vec<u8> {
    let args: Vec<&[u8]> = cmd.iter().map(Vec::as_slice).collect();
    resp_support::multibulk(&args)
}

/// An inline line quoting every argument with `"` and `\xHH` escapes.
fn inline(cmd: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for a in cmd {
        out.extend_from_slice(b" \"");
        for &b in a {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
        out.extend_from_slice(b"\" ");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn command() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6)
}

proptest! {
    #[test]
    fn random_bytes_never_panic(
        input in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        feed(&input, &cuts, &SMALL);
    }

    #[test]
    fn resp_shaped_noise_never_panics(
        pieces in prop::collection::vec(
            prop::sample::select(vec![
                &b"*"[..], b"$", b"\r\n", b"\r", b"\n", b"-1", b"0", b"3", b"10", b"99999999999999999999",
                b"abc", b" ", b"\"", b"'", b"\\x4", b"PING", b"-",
            ]),
            0..60,
        ),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let input: Vec<u8> = pieces.concat();
        feed(&input, &cuts, &SMALL);
    }

    #[test]
    fn multibulk_round_trips(
        cmds in prop::collection::vec(command(), 1..5),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let input: Vec<u8> = cmds.iter().flat_map(|c| multibulk(c)).collect();
        let (got, err) = feed(&input, &cuts, &Limits::default());
        prop_assert_eq!(err, None);
        let want: Vec<Vec<Bytes>> = cmds.iter().map(|c| c.iter().map(|a| Bytes::copy_from_slice(a)).collect()).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn inline_round_trips(
        cmds in prop::collection::vec(command(), 1..5),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let input: Vec<u8> = cmds.iter().flat_map(|c| inline(c)).collect();
        let (got, err) = feed(&input, &cuts, &Limits::default());
        prop_assert_eq!(err, None);
        let want: Vec<Vec<Bytes>> = cmds.iter().map(|c| c.iter().map(|a| Bytes::copy_from_slice(a)).collect()).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn over_limit_lengths_fail_at_the_header(len in 65usize..1_000_000_000, count in 9usize..1_000_000_000) {
        // Only the header is sent: the refusal cannot depend on the data.
        let (_, err) = feed(format!("*1\r\n${len}\r\n").as_bytes(), &[], &SMALL);
        prop_assert_eq!(err, Some(ProtocolError::InvalidBulkLength));
        let (_, err) = feed(format!("*{count}\r\n").as_bytes(), &[], &SMALL);
        prop_assert_eq!(err, Some(ProtocolError::InvalidMultibulkLength));
    }
}

/// Command names the dispatcher knows, and some it does not.
const NAMES: &[&str] = &[
    "GET", "SET", "SETEX", "PSETEX", "SETNX", "GETDEL", "MGET", "MSET", "APPEND", "STRLEN", "INCR",
    "DECR", "INCRBY", "DECRBY", "DEL", "UNLINK", "EXISTS", "EXPIRE", "PEXPIRE", "TTL", "PTTL",
    "PERSIST", "DBSIZE", "FLUSHDB", "SCAN", "KEYS", "PING", "ECHO", "QUIT", "AUTH", "HELLO",
    "SELECT", "CLIENT", "COMMAND", "CONFIG", "INFO", "TIME", "NOSUCH", "",
];

/// Arguments that steer into options and edge values.
const WORDS: &[&str] = &[
    "k",
    "v",
    "0",
    "1",
    "-1",
    "2",
    "3",
    "10",
    "NX",
    "XX",
    "GT",
    "LT",
    "GET",
    "EX",
    "PX",
    "EXAT",
    "PXAT",
    "KEEPTTL",
    "MATCH",
    "COUNT",
    "TYPE",
    "*",
    "?",
    "[",
    "\\",
    "AUTH",
    "SETNAME",
    "default",
    "GETNAME",
    "ID",
    "SETINFO",
    "lib-name",
    "INFO",
    "DOCS",
    "LIST",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "",
    "string",
    "ASYNC",
    "SYNC",
    "all",
    "keyspace",
];

fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(WORDS).prop_map(|w| w.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..12),
    ]
}

proptest! {
    /// Any command with any arguments, run the way a connection runs it
    /// (dispatch, then execute on the engine), never panics and always
    /// answers one well-formed reply; with and without a password.
    #[test]
    fn commands_never_panic(
        cmds in prop::collection::vec(
            (prop::sample::select(NAMES), prop::collection::vec(arg(), 0..6)),
            1..12,
        ),
        password in any::<bool>(),
    ) {
        use kvs::command::{ServerContext, Session, Step, dispatch};
        let engine = kvs::MemoryEngine::new();
        let mut ctx = ServerContext::new(Box::new(Default::default));
        if password {
            ctx.requirepass = Some("p".into());
        }
        let mut session = Session::new(&ctx);
        for (name, rest) in cmds {
            let args: Vec<Bytes> = std::iter::once(Bytes::from(name.as_bytes()))
                .chain(rest.into_iter().map(Bytes::from))
                .collect();
            let reply = match dispatch(args, &mut session, &ctx) {
                Step::Reply(r) | Step::Close(r) => r,
                Step::Engine(cmd) => cmd.execute(&engine, &ctx, 1 << 20).reply,
            };
            let mut out = BytesMut::new();
            reply.encode(&mut out);
            prop_assert_eq!(out.len(), reply.encoded_len());
        }
    }
}
