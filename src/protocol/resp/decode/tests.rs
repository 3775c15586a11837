use super::*;

fn limits() -> Limits {
    Limits::default()
}

/// Decodes every command in `input` fed at once; the error if one comes.
fn all(input: &[u8]) -> (Vec<Vec<Bytes>>, Option<ProtocolError>) {
    let mut decoder = RespDecoder::new();
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    loop {
        match decoder.decode(&mut buf, &limits(), true) {
            Ok(Some(args)) => out.push(args),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

fn args(v: &[&str]) -> Vec<Bytes> {
    v.iter()
        .map(|s| Bytes::copy_from_slice(s.as_bytes()))
        .collect()
}

#[test]
fn multibulk_and_inline() {
    let (cmds, err) = all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n  ECHO   hi  \r\nX\n");
    assert_eq!(err, None);
    assert_eq!(
        cmds,
        vec![
            args(&["GET", "k"]),
            args(&["PING"]),
            args(&["ECHO", "hi"]),
            args(&["X"])
        ]
    );
}

#[test]
fn empty_commands_are_skipped() {
    let (cmds, err) = all(b"*0\r\n*-1\r\n*-2\r\n\r\n   \r\n*1\r\n$0\r\n\r\n");
    assert_eq!(err, None);
    assert_eq!(cmds, vec![args(&[""])]);
}

#[test]
fn incomplete_input_is_not_consumed_and_resumes() {
    let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
    let mut decoder = RespDecoder::new();
    let mut buf = BytesMut::new();
    for (i, &b) in input.iter().enumerate() {
        buf.extend_from_slice(&[b]);
        let got = decoder.decode(&mut buf, &limits(), true).unwrap();
        if i + 1 < input.len() {
            assert_eq!(got, None, "at byte {i}");
            assert_eq!(buf.len(), i + 1, "nothing consumed at byte {i}");
        } else {
            assert_eq!(got, Some(args(&["SET", "k", "hello"])));
            assert!(buf.is_empty());
        }
    }
}

#[test]
fn redis_error_texts() {
    // Each checked against redis-server 7.0.15 over a raw socket.
    let cases: &[(&[u8], &str)] = &[
        (b"*99999999999\r\n", "invalid multibulk length"),
        (b"*abc\r\n", "invalid multibulk length"),
        (b"*+1\r\n", "invalid multibulk length"),
        (b"* 1\r\n", "invalid multibulk length"),
        (b"*01\r\n", "invalid multibulk length"),
        (b"*-0\r\n", "invalid multibulk length"),
        (b"*1\r\n$-5\r\n", "invalid bulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$-0\r\n", "invalid bulk length"),
        (b"*1\r\n$04\r\n", "invalid bulk length"),
        (b"*1\r\n$abc\r\n", "invalid bulk length"),
        (b"*1\r\n$9223372036854775808\r\n", "invalid bulk length"),
        (b"*1\r\nx4\r\n", "expected '$', got 'x'"),
        (b"*2\r\n*1\r\n", "expected '$', got '*'"),
        (b"ECHO \"abc\r\n", "unbalanced quotes in request"),
        (b"ECHO \"abc\"d\r\n", "unbalanced quotes in request"),
        (b"ECHO 'ab\r\n", "unbalanced quotes in request"),
    ];
    for (input, text) in cases {
        let (_, err) = all(input);
        let err = err.unwrap_or_else(|| panic!("no error for {input:?}"));
        assert_eq!(
            err.to_string(),
            format!("Protocol error: {text}"),
            "{input:?}"
        );
        let mut out = BytesMut::new();
        err.reply().encode(&mut out);
        assert_eq!(
            &out[..],
            format!("-ERR Protocol error: {text}\r\n").as_bytes()
        );
    }
}

#[test]
fn limits_are_checked_at_the_header() {
    let small = Limits {
        max_bulk_len: 10,
        max_array_len: 3,
        max_inline_len: 16,
    };
    let mut d = RespDecoder::new();
    // The header alone is enough to refuse.
    assert_eq!(
        d.decode(&mut BytesMut::from(&b"*1\r\n$11\r\n"[..]), &small, true),
        Err(ProtocolError::InvalidBulkLength)
    );
    let mut d = RespDecoder::new();
    assert_eq!(
        d.decode(
            &mut BytesMut::from(&b"*1\r\n$10\r\n0123456789\r\n"[..]),
            &small,
            true
        ),
        Ok(Some(args(&["0123456789"])))
    );
    let mut d = RespDecoder::new();
    assert_eq!(
        d.decode(&mut BytesMut::from(&b"*4\r\n"[..]), &small, true),
        Err(ProtocolError::InvalidMultibulkLength)
    );
    let mut d = RespDecoder::new();
    assert_eq!(
        d.decode(&mut BytesMut::from(&b"*3\r\n"[..]), &small, true),
        Ok(None)
    );
    // 17 bytes without a line end: over the 16-byte inline limit.
    let mut d = RespDecoder::new();
    assert_eq!(
        d.decode(&mut BytesMut::from(&[b'A'; 17][..]), &small, true),
        Err(ProtocolError::TooBigInline)
    );
    let mut d = RespDecoder::new();
    assert_eq!(
        d.decode(&mut BytesMut::from(&[b'A'; 16][..]), &small, true),
        Ok(None)
    );
    let mut d = RespDecoder::new();
    let mut long_count = BytesMut::from(&b"*"[..]);
    long_count.extend_from_slice(&[b'1'; 17]);
    assert_eq!(
        d.decode(&mut long_count, &small, true),
        Err(ProtocolError::TooBigMultibulkCount)
    );
    let mut d = RespDecoder::new();
    let mut long_len = BytesMut::from(&b"*1\r\n$"[..]);
    long_len.extend_from_slice(&[b'1'; 17]);
    assert_eq!(
        d.decode(&mut long_len, &small, true),
        Err(ProtocolError::TooBigBulkCount)
    );
}

#[test]
fn unauthenticated_limits() {
    let mut d = RespDecoder::new();
    assert_eq!(
        d.decode(&mut BytesMut::from(&b"*11\r\n"[..]), &limits(), false),
        Err(ProtocolError::UnauthenticatedMultibulkLength)
    );
    assert_eq!(
        d.decode(&mut BytesMut::from(&b"*10\r\n"[..]), &limits(), false),
        Ok(None)
    );
    let mut d = RespDecoder::new();
    assert_eq!(
        d.decode(
            &mut BytesMut::from(&b"*1\r\n$16385\r\n"[..]),
            &limits(),
            false
        ),
        Err(ProtocolError::UnauthenticatedBulkLength)
    );
    let mut d = RespDecoder::new();
    assert_eq!(
        d.decode(
            &mut BytesMut::from(&b"*1\r\n$16384\r\n"[..]),
            &limits(),
            false
        ),
        Ok(None)
    );
}

#[test]
fn missing_crlf_after_bulk_data() {
    assert_eq!(
        all(b"*1\r\n$4\r\nPINGxx").1,
        Some(ProtocolError::MissingCrlf)
    );
    assert_eq!(
        all(b"*1\r\n$4\r\nPING\rx").1,
        Some(ProtocolError::MissingCrlf)
    );
    assert_eq!(
        all(b"*1\r\n$4\r\nPINGx").1,
        Some(ProtocolError::MissingCrlf)
    );
    assert_eq!(all(b"*1\r\n$4\r\nPING\r").1, None);
    assert_eq!(all(b"*1\rX").1, Some(ProtocolError::InvalidMultibulkLength));
}

#[test]
fn inline_quoting_as_redis() {
    let (cmds, err) = all(b"ECHO \"a\\x41\\n\" 'a\\'b' \"\" '' \"\\q\" \"\\xzz\" a\"b c\"\r\n");
    assert_eq!(err, None);
    let want: Vec<Bytes> = vec!["ECHO", "aA\n", "a'b", "", "", "q", "xzz", "ab c"]
        .into_iter()
        .map(|s| Bytes::copy_from_slice(s.as_bytes()))
        .collect();
    assert_eq!(cmds, vec![want]);
    // A tab separates; a vertical tab only does between arguments.
    assert_eq!(all(b"ECHO a\tb\n").0, vec![args(&["ECHO", "a", "b"])]);
    assert_eq!(all(b"ECHO a\x0bb\n").0, vec![args(&["ECHO", "a\x0bb"])]);
}

#[test]
fn pipelined_commands_after_an_error_are_not_decoded() {
    let (cmds, err) = all(b"*1\r\n$4\r\nPING\r\n*1\r\n$-5\r\nPING\r\n");
    assert_eq!(cmds, vec![args(&["PING"])]);
    assert_eq!(err, Some(ProtocolError::InvalidBulkLength));
}

#[test]
fn argument_table_follows_received_arguments() {
    // A command declaring a million arguments reserves a handful, not a
    // million, until they arrive.
    let mut d = RespDecoder::new();
    let mut buf = BytesMut::from(&b"*1000000\r\n$1\r\na\r\n"[..]);
    assert_eq!(d.decode(&mut buf, &limits(), true), Ok(None));
    assert_eq!(d.args.len(), 1);
    assert!(d.args.capacity() <= INITIAL_ARGS);
}

#[test]
fn argument_table_of_a_huge_command_is_given_back() {
    // The table is kept from command to command, but not at the size one
    // huge command grew it to.
    let n = KEEP_ARGS * 2;
    let mut input = format!("*{n}\r\n").into_bytes();
    for _ in 0..n {
        input.extend_from_slice(b"$1\r\na\r\n");
    }
    input.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    let mut d = RespDecoder::new();
    let mut buf = BytesMut::from(&input[..]);
    let got = d.decode_with(&mut buf, &limits(), true, |a| a.len());
    assert_eq!(got, Ok(Some(n)));
    assert!(d.args.capacity() <= KEEP_ARGS, "{}", d.args.capacity());
    let got = d.decode_with(&mut buf, &limits(), true, |a| a.concat());
    assert_eq!(got, Ok(Some(b"GETk".to_vec())));
    assert!(buf.is_empty());
}

#[test]
fn lent_arguments_are_the_decoded_ones() {
    // Up to the stack table's size and past it, multibulk and inline.
    for n in [1, STACK_ARGS - 1, STACK_ARGS, STACK_ARGS + 1, 40] {
        let words: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
        let mut input = format!("*{n}\r\n").into_bytes();
        for w in &words {
            input.extend_from_slice(format!("${}\r\n{w}\r\n", w.len()).as_bytes());
        }
        input.extend_from_slice(words.join(" ").as_bytes());
        input.extend_from_slice(b"\r\n");
        let mut d = RespDecoder::new();
        let mut buf = BytesMut::from(&input[..]);
        let owned = |a: &[&[u8]]| -> Vec<String> {
            a.iter()
                .map(|w| String::from_utf8(w.to_vec()).unwrap())
                .collect()
        };
        assert_eq!(
            d.decode_with(&mut buf, &limits(), true, owned),
            Ok(Some(words.clone()))
        );
        assert_eq!(
            d.decode_with(&mut buf, &limits(), true, owned),
            Ok(Some(words.clone()))
        );
        assert!(buf.is_empty());
    }
}

#[test]
fn reply_encoding() {
    let cases: Vec<(Reply, &[u8])> = vec![
        (Reply::ok(), b"+OK\r\n"),
        (Reply::error("ERR bad\r\nthing"), b"-ERR bad  thing\r\n"),
        (Reply::Integer(0), b":0\r\n"),
        (Reply::Integer(-42), b":-42\r\n"),
        (Reply::Integer(i64::MIN), b":-9223372036854775808\r\n"),
        (Reply::Integer(i64::MAX), b":9223372036854775807\r\n"),
        (Reply::nil(), b"$-1\r\n"),
        (Reply::bulk(&b""[..]), b"$0\r\n\r\n"),
        (Reply::bulk(&b"hello"[..]), b"$5\r\nhello\r\n"),
        (Reply::Array(None), b"*-1\r\n"),
        (Reply::array(vec![]), b"*0\r\n"),
        (
            Reply::array(vec![
                Reply::Integer(1),
                Reply::nil(),
                Reply::array(vec![Reply::bulk(&b"x"[..])]),
            ]),
            b"*3\r\n:1\r\n$-1\r\n*1\r\n$1\r\nx\r\n",
        ),
    ];
    for (reply, want) in cases {
        let mut out = BytesMut::new();
        reply.encode(&mut out);
        assert_eq!(&out[..], want, "{reply:?}");
        assert_eq!(reply.encoded_len(), want.len(), "{reply:?}");
    }
}

#[test]
fn a_trickling_line_is_searched_once() {
    // Inline: each byte is looked at once, however many reads it takes.
    let mut d = RespDecoder::new();
    let mut buf = BytesMut::new();
    for (i, &b) in b"ECHO trickle".iter().enumerate() {
        buf.extend_from_slice(&[b]);
        assert_eq!(d.decode(&mut buf, &limits(), true), Ok(None));
        assert_eq!(d.scanned, i + 1);
    }
    buf.extend_from_slice(b"\r\n");
    assert_eq!(
        d.decode(&mut buf, &limits(), true),
        Ok(Some(args(&["ECHO", "trickle"])))
    );
    assert_eq!(d.scanned, 0);
    // A count line and a length line the same way.
    for (i, &b) in b"*2\r\n$4\r\nECHO\r\n$7\r\ntrickle\r\n".iter().enumerate() {
        buf.extend_from_slice(&[b]);
        let got = d.decode(&mut buf, &limits(), true).unwrap();
        assert!(d.scanned <= i + 1);
        if got.is_some() {
            assert_eq!(got, Some(args(&["ECHO", "trickle"])));
        }
    }
    assert!(buf.is_empty());
}

#[test]
fn short_header_agrees_with_the_general_path() {
    // Every line over a small alphabet up to 6 bytes after the type byte,
    // plus long numbers: what the one-pass reader accepts, the general
    // path accepts with the same value and length.
    let alphabet = b"0190-+\r\n x";
    let mut lines: Vec<Vec<u8>> = vec![Vec::new()];
    let mut frontier = lines.clone();
    for _ in 0..6 {
        let mut next = Vec::new();
        for line in &frontier {
            for &c in alphabet {
                let mut l = line.clone();
                l.push(c);
                next.push(l);
            }
        }
        lines.extend(next.iter().cloned());
        frontier = next;
    }
    for digits in 15..=22 {
        let mut l = vec![b'9'; digits];
        l.extend_from_slice(b"\r\n");
        lines.push(l);
    }
    let mut accepted = 0;
    for line in &lines {
        let mut buf = vec![b'$'];
        buf.extend_from_slice(line);
        for max_inline_len in [3, 64 << 10] {
            let limits = Limits {
                max_inline_len,
                ..Limits::default()
            };
            let Some((n, used)) = short_header(&buf, &limits) else {
                continue;
            };
            accepted += 1;
            let mut scanned = 0;
            let general = header_line(&buf, &limits, ProtocolError::TooBigBulkCount, &mut scanned);
            let Ok(Some((body, general_used))) = general else {
                panic!(
                    "{:?}: general path {general:?}",
                    String::from_utf8_lossy(&buf)
                );
            };
            assert_eq!(
                parse_i64(body),
                Some(n),
                "{:?}",
                String::from_utf8_lossy(&buf)
            );
            assert_eq!(used, general_used);
        }
    }
    assert!(accepted > 100, "{accepted}");
}
