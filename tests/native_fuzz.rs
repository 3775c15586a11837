//! Fuzzing the native protocol's decoders (proptest; bounded case counts
//! so CI runs it in seconds; `PROPTEST_CASES=100000` for a long run).
//!
//! Properties: any byte stream, cut into any reads, never panics the frame
//! codec or the message decoder; a frame declaring more than the limit is
//! refused from its 4 header bytes alone, with nothing reserved for it;
//! every request round-trips through encode and decode.

use bytes::BytesMut;
use kvs::KvsError;
use kvs::protocol::{FrameCodec, Request, Response, decode_message, encode_frame};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

const LIMIT: usize = 4096;

fn request() -> impl Strategy<Value = Request<String>> {
    let s = || ".{0,40}";
    prop_oneof![
        Just(Request::Ping),
        s().prop_map(|key| Request::Get { key }),
        (s(), s(), proptest::option::of(any::<u64>()))
            .prop_map(|(key, value, ttl_ms)| Request::Set { key, value, ttl_ms }),
        s().prop_map(|key| Request::Remove { key }),
        proptest::collection::vec(s(), 0..20).prop_map(|keys| Request::GetMany { keys }),
        s().prop_map(|password| Request::Auth { password }),
        Just(Request::Stats),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_streams_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        cuts in proptest::collection::vec(1usize..64, 1..64),
    ) {
        let mut codec = FrameCodec::new(LIMIT);
        let mut buf = BytesMut::new();
        let mut rest = &bytes[..];
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cut.next().unwrap()).min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        prop_assert!(frame.len() <= LIMIT);
                        let _ = decode_message::<Request>(&frame);
                        let _ = decode_message::<Response>(&frame);
                    }
                    Ok(None) => {
                        // Memory follows what arrived, never what a header declared.
                        prop_assert!(buf.capacity() <= bytes.len().max(64) * 2 + 64);
                        break;
                    }
                    Err(e) => {
                        prop_assert!(matches!(e, KvsError::Limit(_)), "{e:?}");
                        return Ok(());
                    }
                }
            }
        }
    }

    #[test]
    fn oversized_headers_are_refused_at_once(declared in (LIMIT as u32 + 1)..=u32::MAX) {
        let mut codec = FrameCodec::new(LIMIT);
        let mut buf = BytesMut::from(&declared.to_be_bytes()[..]);
        prop_assert!(matches!(codec.decode(&mut buf), Err(KvsError::Limit(_))));
        prop_assert!(buf.capacity() < 64);
    }

    #[test]
    fn requests_round_trip(req in request()) {
        let mut buf = BytesMut::new();
        encode_frame(&req, 1 << 20, &mut buf).unwrap();
        let mut codec = FrameCodec::new(1 << 20);
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decode_message::<Request>(&frame).unwrap(), req);
    }

    #[test]
    fn truncated_or_extended_payloads_are_errors_not_panics(
        req in request(),
        cut in 0usize..64,
        extra in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut buf = BytesMut::new();
        encode_frame(&req, 1 << 20, &mut buf).unwrap();
        let payload = &buf[4..];
        let short = &payload[..payload.len().saturating_sub(cut)];
        let _ = decode_message::<Request>(short);
        let mut long = payload.to_vec();
        long.extend_from_slice(&extra);
        let decoded = decode_message::<Request>(&long);
        if !extra.is_empty() {
            prop_assert!(decoded.is_err(), "trailing bytes accepted");
        }
    }
}
