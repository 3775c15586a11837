//! Request scripts and raw byte sequences whose replies must be
//! identical on kvs and `redis-server`, shared by the in-process
//! comparison (`resp_compat.rs`) and the one over TCP (`resp_server.rs`).
//!
//! A script has one command a line. A line's prefix says how its reply
//! may differ: none, byte for byte; `~` an array compared unordered;
//! `≈N` an integer within N; `#` the reply's type only.

use super::{RawConn, multibulk, reply_len};

/// Splits a script line into arguments: spaces separate, `"..."` groups
/// (no escapes), `""` is an empty argument.
pub fn split(line: &str) -> Vec<Vec<u8>> {
    let mut args = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').expect("closing quote");
            args.push(quoted.as_bytes()[..end].to_vec());
            rest = quoted[end + 1..].trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            args.push(rest.as_bytes()[..end].to_vec());
            rest = rest[end..].trim_start();
        }
    }
    args
}

/// The elements of an array reply, each as bytes, sorted.
pub fn sorted_elements(reply: &[u8]) -> Vec<Vec<u8>> {
    let header_end = reply.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let mut at = header_end;
    let mut items = Vec::new();
    while at < reply.len() {
        let len = reply_len(&reply[at..]).unwrap();
        items.push(reply[at..at + len].to_vec());
        at += len;
    }
    items.sort();
    items
}

pub fn integer(reply: &[u8]) -> i64 {
    assert_eq!(reply[0], b':', "not an integer: {}", show(reply));
    std::str::from_utf8(&reply[1..reply.len() - 2])
        .unwrap()
        .parse()
        .unwrap()
}

pub fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).escape_debug().to_string()
}

/// Runs `script` (one command a line; `~`, `≈N`, `#` prefixes as in the
/// module docs) against `ours` (request bytes in, the reply's bytes out)
/// and `redis`, and asserts the replies agree.
pub fn compare(mut ours: impl FnMut(&[u8]) -> Vec<u8>, redis: &mut RawConn, script: &str) -> usize {
    let mut compared = 0;
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (mode, command) = match line.split_once(' ') {
            Some((m @ ("~" | "#"), rest)) => (m.to_owned(), rest),
            Some((m, rest)) if m.starts_with('≈') => (m.to_owned(), rest),
            _ => ("=".to_owned(), line),
        };
        let args = split(command);
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let request = multibulk(&refs);
        let ours = ours(&request);
        let theirs = redis.call(&request);
        let context = format!(
            "{command}\n  kvs:   {}\n  redis: {}",
            show(&ours),
            show(&theirs)
        );
        match mode.as_str() {
            "=" => assert_eq!(ours, theirs, "{context}"),
            "~" => assert_eq!(
                sorted_elements(&ours),
                sorted_elements(&theirs),
                "{context}"
            ),
            "#" => assert_eq!(ours[0], theirs[0], "{context}"),
            near => {
                let tolerance: i64 = near.trim_start_matches('≈').parse().unwrap();
                assert!(
                    (integer(&ours) - integer(&theirs)).abs() <= tolerance,
                    "{context}"
                );
            }
        }
        compared += 1;
    }
    compared
}

pub const STRINGS: &str = r#"
    FLUSHALL
    GET k
    SET k v
    GET k
    set k v2
    SET k v NX
    SET k v3 XX
    GET k
    SET n1 v XX
    GET n1
    SET k v NX GET
    SET k2 v NX GET
    SET k v9 XX GET
    SET k v GET
    SET k v NX XX
    SET k v XX NX
    SET k v NX NX
    SET k v EX 100
    TTL k
    ≈1000 PTTL k
    SET k v KEEPTTL
    TTL k
    SET k v
    TTL k
    SET k v EX 100 KEEPTTL
    SET k v KEEPTTL PX 100
    SET k v EX 1 PX 1
    SET k v EX 10 EX 100
    TTL k
    SET k v EX 0
    SET k v EX -1
    SET k v PX 0
    SET k v EX x
    SET k v EX 1.5
    SET k v EX 9223372036854775807
    SET k v PX 9223372036854775807
    SET k v EXAT 0
    SET k v PXAT -5
    SET k v EXAT 1
    GET k
    EXISTS k
    SET k v EX
    SET k v FOO
    SET k v EX x NX XX
    SET k
    SET
    SETEX k 100 v
    TTL k
    SETEX k 0 v
    SETEX k -1 v
    SETEX k x v
    SETEX k 100
    PSETEX k 100000 v
    TTL k
    PSETEX k -5 v
    PSETEX k 0 v
    SETNX k v
    SETNX fresh v
    GET fresh
    SETNX k
    GETDEL fresh
    GETDEL fresh
    GETDEL
    MSET a 1 b 2 c 3
    MGET a b c missing
    MGET missing
    MSET a
    MSET a 1 b
    MGET
    APPEND a xyz
    APPEND newkey abc
    GET newkey
    APPEND a
    STRLEN a
    STRLEN missing
    STRLEN
    SET empty ""
    GET empty
    STRLEN empty
    APPEND empty ""
    SET spaced "hello world"
    GET spaced
    SET unicode "héllo wörld ✓"
    GET unicode
    STRLEN unicode
"#;

pub const COUNTERS: &str = r#"
    FLUSHALL
    INCR n
    INCR n
    DECR n
    INCRBY n 10
    DECRBY n 3
    INCRBY n -20
    DECRBY n -5
    INCRBY n x
    INCRBY n 1.5
    INCRBY n ""
    DECRBY n 9223372036854775808
    INCR
    INCRBY n
    DECRBY n 1 2
    SET n 9223372036854775807
    INCR n
    INCRBY n 1
    DECRBY n -1
    GET n
    SET n -9223372036854775808
    DECR n
    DECRBY n 1
    INCRBY n -1
    DECRBY n -9223372036854775807
    DECRBY n -9223372036854775808
    SET f 1.5
    INCR f
    SET s abc
    INCR s
    SET z 007
    INCR z
    SET p +1
    INCR p
    SET sp " 1"
    INCR sp
    SET big 99999999999999999999
    INCR big
    SET neg0 -0
    INCR neg0
    SET ttl 5 EX 100
    INCR ttl
    TTL ttl
    GET ttl
"#;

pub const KEYS: &str = r#"
    FLUSHALL
    MSET a 1 b 2 c 3
    EXISTS a b missing a
    EXISTS missing
    EXISTS
    DEL a missing
    DEL a
    DEL
    UNLINK b c missing
    UNLINK
    DBSIZE
    DBSIZE x
    MSET a 1 b 2 c 3
    DBSIZE
    EXPIRE a 100
    TTL a
    ≈1000 PTTL a
    TTL b
    PTTL b
    TTL missing
    PTTL missing
    TTL
    EXPIRE missing 100
    EXPIRE a 100 NX
    EXPIRE b 100 NX
    TTL b
    EXPIRE c 100 XX
    TTL c
    EXPIRE b 200 XX
    TTL b
    EXPIRE b 50 GT
    EXPIRE b 300 GT
    TTL b
    EXPIRE b 400 LT
    EXPIRE b 10 LT
    TTL b
    EXPIRE c 10 GT
    EXPIRE c 10 LT
    TTL c
    PERSIST c
    EXPIRE c 10 nx
    EXPIRE a 10 NX XX
    EXPIRE a 10 NX GT
    EXPIRE a 10 GT LT
    EXPIRE a 10 FOO
    EXPIRE a 10 XX FOO
    EXPIRE a x
    EXPIRE a x FOO
    EXPIRE a 9223372036854775807
    EXPIRE a -9223372036854775808
    PEXPIRE a 9223372036854775807
    EXPIRE a
    PEXPIRE a 100000
    TTL a
    PEXPIRE missing 100
    PERSIST a
    PERSIST a
    TTL a
    PERSIST missing
    PERSIST
    EXPIRE a 0
    EXISTS a
    PEXPIRE b -1
    EXISTS b
    SET c v
    EXPIRE c -100 NX
    EXISTS c
    DBSIZE
    MSET a 1 b 2
    FLUSHDB
    DBSIZE
    MSET a 1 b 2
    FLUSHALL ASYNC
    DBSIZE
    FLUSHDB SYNC
    FLUSHDB x
    FLUSHALL SYNC x
    FLUSHDB
"#;

pub const SCANS: &str = r#"
    FLUSHALL
    MSET user:1 a user:2 b user:10 c admin:1 d u e "[x]" f "a*b" g hello h hallo i hxllo j hllo k heeeello l
    ~ KEYS *
    ~ KEYS user:*
    ~ KEYS user:?
    ~ KEYS user:1*
    ~ KEYS *:1
    ~ KEYS h?llo
    ~ KEYS h*llo
    ~ KEYS h[ae]llo
    ~ KEYS h[^e]llo
    ~ KEYS h[a-b]llo
    ~ KEYS h[b-a]llo
    ~ KEYS \[x\]
    ~ KEYS [[]x]
    ~ KEYS a\*b
    ~ KEYS a*b
    ~ KEYS nothing*
    ~ KEYS h[
    ~ KEYS h[a
    ~ KEYS **llo
    ~ KEYS *l*l*
    ~ KEYS u
    KEYS
    KEYS a b
    SCAN x
    SCAN 0 COUNT 0
    SCAN 0 COUNT -1
    SCAN 0 COUNT x
    SCAN 0 FOO 1
    SCAN 0 MATCH
    SCAN 0 COUNT
    SCAN 18446744073709551616
    SCAN
"#;

pub const CONNECTION: &str = r#"
    PING
    PING hello
    ping ""
    PING a b
    ECHO hello
    ECHO ""
    ECHO
    ECHO a b
    SELECT 0
    SELECT 1
    SELECT -1
    SELECT x
    SELECT
    CLIENT GETNAME
    CLIENT SETNAME myname
    CLIENT GETNAME
    CLIENT SETNAME "bad name"
    CLIENT SETNAME ""
    CLIENT GETNAME
    CLIENT SETNAME
    CLIENT SETNAME a b
    CLIENT GETNAME x
    CLIENT ID x
    # CLIENT ID
    CLIENT FOO
    CLIENT
    HELLO 4
    HELLO 1
    HELLO x
    HELLO 2 AUTH a
    HELLO 2 FOO
    HELLO 2 SETNAME
    HELLO 2 SETNAME "bad name"
    AUTH x
    AUTH a b c
    AUTH
    AUTH bob x
    CONFIG GET save
    CONFIG GET appendonly
    CONFIG GET maxmemory
    CONFIG GET maxmemory-policy
    CONFIG GET databases
    CONFIG GET timeout
    CONFIG GET no-such-thing
    CONFIG GET SAVE
    CONFIG GET
    CONFIG FOO
    CONFIG
    COMMAND FOO
    COMMAND COUNT x
    # COMMAND COUNT
    # COMMAND
    # COMMAND DOCS
    # COMMAND INFO get
    TIME x
    # TIME
    # INFO
    # INFO keyspace
    INFO nosuchsection
    NOSUCHCOMMAND
    NOSUCHCOMMAND a "b c" d
    nosuch ""
    FOO aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa b
    FOO aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa b c
"#;

pub const AUTH: &str = r#"
    GET a
    SET a b
    PING
    ECHO x
    CLIENT ID
    SELECT 0
    NOSUCH a
    GET
    HELLO
    HELLO 2
    HELLO 3
    HELLO 2 AUTH default wrong
    AUTH wrong
    AUTH default wrong
    AUTH bob sekret
    AUTH a b c
    GET a
    AUTH sekret
    GET a
    AUTH wrong
    GET a
    AUTH default sekret
    PING
"#;

pub const AUTH_HELLO: &str = r#"
    GET a
    # HELLO 2 AUTH default sekret
    GET a
"#;

/// Raw request bytes whose whole answer (up to the close after a protocol
/// error) must match.
pub const RAW: &[&[u8]] = &[
    b"PING\r\n",
    b"PING\n",
    b"  PING   hello  \r\n",
    b"\r\n\r\nPING\r\n",
    b"ECHO \"a\\x41\\n\"\r\n",
    b"ECHO 'a\\'b'\r\n",
    b"ECHO \"\" ''\r\n",
    b"ECHO \"\"\r\n",
    b"ECHO a\"b c\"\r\n",
    b"ECHO \"\\q\"\r\n",
    b"ECHO \"\\xzz\"\r\n",
    b"ECHO a\tb\r\n",
    b"*0\r\n*-1\r\nPING\r\n",
    b"*1\r\n$0\r\n\r\n",
    b"*99999999999\r\n",
    b"*2147483648\r\n",
    b"*abc\r\n",
    b"*+1\r\n",
    b"* 1\r\n",
    b"*01\r\n",
    b"*-0\r\n",
    b"*1\r\n$-5\r\n",
    b"*1\r\n$-1\r\n",
    b"*1\r\n$-0\r\n",
    b"*1\r\n$04\r\n",
    b"*1\r\n$abc\r\n",
    b"*1\r\n$536870913\r\n",
    b"*1\r\n$9223372036854775808\r\n",
    b"*1\r\nx4\r\nPING\r\n",
    b"*2\r\n*1\r\n",
    b"ECHO \"abc\r\n",
    b"ECHO \"abc\"d\r\n",
    b"ECHO 'ab\r\n",
    b"*1\r\n$4\r\nPING\r\n*1\r\n$-5\r\nPING\r\n",
    b"PING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\nGET k\r\nQUIT\r\nPING\r\n",
];

/// The exact-reply lines of `script` as one pipelined buffer, each line
/// as an inline command (`inline`) or a multibulk one.
pub fn pipelined(script: &str, inline: bool) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut n = 0;
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with(['~', '#', '≈']) {
            continue;
        }
        if inline {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        } else {
            let args = split(line);
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            out.extend(multibulk(&refs));
        }
        n += 1;
    }
    (out, n)
}
