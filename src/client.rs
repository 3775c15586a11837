//! `KvsClient`: the async client used by `kvs-client`, the tests and the
//! load tester.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use crate::protocol::{
    DEFAULT_MAX_FRAME_LEN, FrameCodec, Request, Response, decode_message, encode_frame,
};
use crate::{KvsError, Result};

use crate::net::buffer::{CHUNK, make_room};
/// How long the first reply on a connection may take before a second
/// connection asks the server what protocol it speaks (a Redis server
/// answers a kvs frame with silence). Far above a kvs server's reply time,
/// so a healthy server is never probed.
const PROBE_AFTER: Duration = Duration::from_secs(1);
/// How long that probe waits for an answer.
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// An async connection to a kvs server.
///
/// The simple methods ([`get`](Self::get), [`set`](Self::set), ...) send one
/// request and wait for its answer. For pipelining, [`queue`](Self::queue)
/// any number of requests and [`recv`](Self::recv) their responses, which
/// come back in the same order; `recv` keeps sending what is queued while
/// it waits, so a deep pipeline cannot deadlock against a server that stops
/// reading until its responses are read. Requests are encoded straight into
/// the connection's write buffer: nothing is allocated per request beyond
/// the buffers' growth and the values returned.
///
/// After an error other than an error response (I/O, a protocol
/// violation) the connection's state is unknown: drop it.
#[derive(Debug)]
pub struct KvsClient {
    stream: TcpStream,
    codec: FrameCodec,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Requests queued or sent whose responses have not been received.
    pending: usize,
    /// The address as the caller gave it, for errors.
    addr: String,
    /// A whole kvs frame has arrived: the peer speaks kvs, and the
    /// first-reply checks are done.
    verified: bool,
}

impl KvsClient {
    /// Connects to the server at `addr`: `IP:PORT`, `[IPv6]:PORT` or
    /// `HOST:PORT` (a `SocketAddr` works too). A host name is resolved on
    /// every call, through `/etc/hosts` and the DNS servers of
    /// `/etc/resolv.conf` ([`crate::net::resolve`]), and each of its
    /// addresses is tried in turn.
    pub async fn connect(addr: impl ToString) -> Result<KvsClient> {
        let addr = addr.to_string();
        let stream = crate::net::connect(&addr).await?;
        Ok(KvsClient {
            stream,
            codec: FrameCodec::new(DEFAULT_MAX_FRAME_LEN),
            rbuf: BytesMut::with_capacity(CHUNK),
            wbuf: BytesMut::with_capacity(CHUNK),
            pending: 0,
            addr,
            verified: false,
        })
    }

    /// Checks that the server answers.
    pub async fn ping(&mut self) -> Result<()> {
        match self.call(&Request::<&str>::Ping).await? {
            Response::Pong => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// The value of `key`, or `None` when it is missing.
    pub async fn get(&mut self, key: &str) -> Result<Option<String>> {
        match self.call(&Request::Get { key }).await? {
            Response::Value(value) => Ok(value),
            other => Err(unexpected(&other)),
        }
    }

    /// The values of `keys`, in order, in one round trip.
    pub async fn get_many(&mut self, keys: &[&str]) -> Result<Vec<Option<String>>> {
        let request = Request::GetMany {
            keys: keys.to_vec(),
        };
        match self.call(&request).await? {
            Response::Values(values) if values.len() == keys.len() => Ok(values),
            other => Err(unexpected(&other)),
        }
    }

    /// Sets `key` to `value`.
    pub async fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let request = Request::Set {
            key,
            value,
            ttl_ms: None,
        };
        expect_ok(self.call(&request).await?)
    }

    /// Sets `key` to `value`, expiring after `ttl` (whole milliseconds,
    /// rounded up; at least one).
    pub async fn set_with_ttl(&mut self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        let request = Request::Set {
            key,
            value,
            ttl_ms: Some(ttl_millis(ttl)?),
        };
        expect_ok(self.call(&request).await?)
    }

    /// Removes `key`; [`KvsError::KeyNotFound`] when it is missing.
    pub async fn remove(&mut self, key: &str) -> Result<()> {
        expect_ok(self.call(&Request::Remove { key }).await?)
    }

    /// Authenticates with the server's password.
    pub async fn auth(&mut self, password: &str) -> Result<()> {
        expect_ok(self.call(&Request::Auth { password }).await?)
    }

    /// The server's counters.
    pub async fn stats(&mut self) -> Result<crate::server::StatsSnapshot> {
        match self.call(&Request::<&str>::Stats).await? {
            Response::Stats(stats) => Ok(stats),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends `requests` pipelined and returns their responses in order.
    /// Error responses are returned as values, one per request.
    pub async fn pipeline(&mut self, requests: &[Request<&str>]) -> Result<Vec<Response>> {
        for request in requests {
            self.queue(request)?;
        }
        let mut responses = Vec::with_capacity(requests.len());
        for _ in requests {
            responses.push(self.recv().await?);
        }
        Ok(responses)
    }

    /// Encodes `request` into the write buffer; nothing is sent until
    /// [`flush`](Self::flush) or [`recv`](Self::recv). A request larger
    /// than the maximum frame is [`KvsError::Limit`] and is not queued.
    pub fn queue<S: serde::Serialize>(&mut self, request: &Request<S>) -> Result<()> {
        encode_frame(request, self.codec.max_frame_len(), &mut self.wbuf)?;
        self.pending += 1;
        Ok(())
    }

    /// Sends every queued request.
    pub async fn flush(&mut self) -> Result<()> {
        self.stream.write_all_buf(&mut self.wbuf).await?;
        Ok(())
    }

    /// Requests queued or sent whose responses have not been received yet.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// The next response, in request order, as it came (an error response
    /// is `Ok(Response::Error { .. })`). Sends queued requests while
    /// waiting.
    pub async fn recv(&mut self) -> Result<Response> {
        if self.pending == 0 {
            return Err(KvsError::InvalidInput(
                "recv without a request waiting for its response".to_owned(),
            ));
        }
        let mut probed = self.verified;
        loop {
            if let Some(frame) = self.decode_frame()? {
                self.pending -= 1;
                return decode_message(&frame);
            }
            make_room(&mut self.rbuf);
            let read = if !probed && self.rbuf.is_empty() && self.wbuf.is_empty() {
                // The first reply: if it is slow, ask what the peer speaks.
                tokio::select! {
                    read = self.stream.read_buf(&mut self.rbuf) => read?,
                    () = tokio::time::sleep(PROBE_AFTER) => {
                        probed = true;
                        let peer = self.stream.peer_addr()?;
                        if let Some(foreign) = crate::net::probe(peer, &self.addr, PROBE_WAIT).await {
                            return Err(KvsError::Protocol(foreign));
                        }
                        continue;
                    }
                }
            } else if self.wbuf.is_empty() {
                self.stream.read_buf(&mut self.rbuf).await?
            } else {
                let (mut rd, mut wr) = self.stream.split();
                tokio::select! {
                    read = rd.read_buf(&mut self.rbuf) => read?,
                    written = wr.write_buf(&mut self.wbuf) => {
                        if written? == 0 {
                            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
                        }
                        continue;
                    }
                }
            };
            if read == 0 {
                if !self.verified
                    && let Some(foreign) = crate::net::describe_foreign(&self.addr, &self.rbuf)
                {
                    return Err(KvsError::Protocol(foreign));
                }
                return Err(KvsError::Closed(if self.rbuf.is_empty() {
                    "the server closed the connection".to_owned()
                } else {
                    "the server closed the connection mid-response".to_owned()
                }));
            }
        }
    }

    /// The next response if it has already arrived, without waiting or any
    /// I/O: `Ok(None)` when none is buffered. Lets a pipelining caller
    /// collect every response that came in one read before refilling its
    /// window, so its next write carries several requests.
    pub fn try_recv(&mut self) -> Result<Option<Response>> {
        if self.pending == 0 {
            return Ok(None);
        }
        match self.decode_frame()? {
            Some(frame) => {
                self.pending -= 1;
                decode_message(&frame).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The next whole frame in the read buffer. Until the first one has
    /// arrived, bytes that cannot start a kvs frame are reported as what
    /// they look like (RESP, HTTP, ...) rather than as a bad frame.
    fn decode_frame(&mut self) -> Result<Option<BytesMut>> {
        if !self.verified
            && let Some(foreign) = crate::net::describe_foreign(&self.addr, &self.rbuf)
        {
            return Err(KvsError::Protocol(foreign));
        }
        let frame = self.codec.decode(&mut self.rbuf)?;
        self.verified |= frame.is_some();
        Ok(frame)
    }

    /// One request, one response; an error response becomes `Err`.
    ///
    /// Refused while pipelined requests wait for their responses: the next
    /// response to arrive would be theirs, not this request's.
    async fn call<S: serde::Serialize>(&mut self, request: &Request<S>) -> Result<Response> {
        if self.pending > 0 {
            return Err(KvsError::InvalidInput(format!(
                "{} queued request(s) still wait for their responses: recv them before a call",
                self.pending
            )));
        }
        self.queue(request)?;
        self.flush().await?;
        self.recv().await?.into_result()
    }
}

fn ttl_millis(ttl: Duration) -> Result<u64> {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return Err(KvsError::InvalidInput("a TTL must be positive".to_owned()));
    }
    u64::try_from(ms).map_err(|_| KvsError::InvalidInput("TTL too long".to_owned()))
}

fn expect_ok(response: Response) -> Result<()> {
    match response {
        Response::Ok => Ok(()),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(response: &Response) -> KvsError {
    KvsError::Protocol(format!("unexpected response {response:?}"))
}
