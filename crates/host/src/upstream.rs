//! The host's own HTTP/1.1 client to workers, for requests without a body (most of them: GET,
//! HEAD, DELETE…). Requests with a body and WebSocket handshakes go through hyper-util's pooled
//! client ([`crate::proxy`]).
//!
//! Why a second client: hyper-util's connections live in tasks of their own, so every proxied
//! request hops between the client connection's task and the upstream connection's task twice,
//! through channels, and checks a connection out of a pool behind a lock with a watch channel
//! per request. That machinery was most of the host's own CPU per proxied request (see
//! BENCHMARKS.md). Here the request is written and the response read by the task that serves
//! the client: the head with one write, the response head parsed with `httparse`, the body read
//! straight from the upstream socket as the client's connection writes it out.
//!
//! Idle connections are kept per worker address, most recently used first, at most
//! [`MAX_IDLE_PER_WORKER`] each, and closed after [`POOL_IDLE_TIMEOUT`] by a sweeper task (so
//! a retired worker is not kept waiting on our idle connections). A connection goes back only
//! after its response was read to the end with nothing left over and both sides wanted to keep
//! it; one the worker closed while idle is noticed at checkout when the close has arrived, and
//! otherwise covered by the replay rule: a request that fails on a reused connection before any
//! response byte is sent once more on a new connection (it has no body, so it can always be).
//!
//! Response framing as RFC 9112 section 6.3: no body for `HEAD`, 1xx, 204 and 304; chunked when
//! `Transfer-Encoding` ends in `chunked` (trailers are read and dropped); else `Content-Length`;
//! else until the worker closes. Interim 1xx responses (`103 Early Hints`) are skipped. A body
//! that ends early is an error, so the client's connection is aborted rather than given a
//! truncated body.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};
use hyper::body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::http1::ConnectionOptions;
use crate::proxy::POOL_IDLE_TIMEOUT;

/// Idle connections kept per worker (nginx's `keepalive` in our benchmark set-up is 64 too).
const MAX_IDLE_PER_WORKER: usize = 64;
/// Headers a worker's response may have.
const MAX_RESPONSE_HEADERS: usize = 128;
/// The largest response head accepted (hyper's client allows about 400 KiB; IIS's ANCM 64 KiB).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// The longest chunk-size line or trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;
/// Read buffer for response bytes.
const READ_CHUNK: usize = 16 * 1024;
/// A worker that does not accept within this is as good as down (both clients).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often idle connections are checked for their age.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Why a request sent here got no response.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// The worker could not be reached.
    Connect(io::Error),
    /// The connection failed while sending or before a whole response head arrived.
    Io(io::Error),
    /// The worker answered something that is not an HTTP/1 response we can forward.
    BadResponse(&'static str),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connecting: {e}"),
            Self::Io(e) => write!(f, "connection: {e}"),
            Self::BadResponse(why) => write!(f, "bad response: {why}"),
        }
    }
}

/// Kept-alive connections to workers, by worker address.
#[derive(Default)]
pub(crate) struct DirectClient {
    idle: Arc<IdleConnections>,
}

#[derive(Default)]
struct IdleConnections {
    by_worker: Mutex<HashMap<SocketAddr, Vec<IdleConnection>>>,
    sweeping: std::sync::atomic::AtomicBool,
}

struct IdleConnection {
    stream: TcpStream,
    since: Instant,
}

/// How an exchange on one connection failed.
enum ExchangeError {
    /// Closed or reset before any response byte: a reused connection the worker had closed.
    ClosedBeforeResponse(io::Error),
    Other(UpstreamError),
}

impl DirectClient {
    /// Sends a bodyless request (its head already prepared for the worker: hop-by-hop headers
    /// removed, forwarding headers added) and returns the worker's response with a body that
    /// streams from the worker's connection.
    pub(crate) async fn send(
        &self,
        parts: &http::request::Parts,
        worker: SocketAddr,
    ) -> Result<Response<crate::pool::Body>, UpstreamError> {
        let head = encode_request_head(parts);
        let no_body = parts.method == Method::HEAD;
        if let Some(stream) = self.idle.checkout(worker) {
            match exchange(stream, &head, no_body, worker, &self.idle).await {
                Ok(response) => return Ok(response),
                Err(ExchangeError::ClosedBeforeResponse(e)) => {
                    tracing::debug!(%worker, error = %e, "pooled connection closed by the worker, sending again");
                }
                Err(ExchangeError::Other(e)) => return Err(e),
            }
        }
        let stream = connect(worker).await?;
        match exchange(stream, &head, no_body, worker, &self.idle).await {
            Ok(response) => Ok(response),
            Err(ExchangeError::ClosedBeforeResponse(e)) => Err(UpstreamError::Io(e)),
            Err(ExchangeError::Other(e)) => Err(e),
        }
    }
}

async fn connect(worker: SocketAddr) -> Result<TcpStream, UpstreamError> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(worker)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
        Err(_) => {
            return Err(UpstreamError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                "the worker did not accept in time",
            )));
        }
    };
    // Heads and small bodies go out at once.
    stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
    Ok(stream)
}

/// The request line and headers, in one buffer for one write.
fn encode_request_head(parts: &http::request::Parts) -> Vec<u8> {
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let size = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + target.len()
        + 64;
    let mut head = Vec::with_capacity(size);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    // A POST or PUT without a body still says so (RFC 9110, 8.6), as hyper's client does.
    let says_length = parts.headers.contains_key(CONTENT_LENGTH);
    if !says_length && matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
        head.extend_from_slice(b"content-length: 0\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The connection was closed or reset by the other side: what a worker's close of an idle
/// kept-alive connection looks like to a request written on it.
pub(crate) fn is_closed_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

/// Writes the head on `stream` and reads the response head.
async fn exchange(
    mut stream: TcpStream,
    head: &[u8],
    head_request: bool,
    worker: SocketAddr,
    idle: &Arc<IdleConnections>,
) -> Result<Response<crate::pool::Body>, ExchangeError> {
    if let Err(e) = stream.write_all(head).await {
        return Err(if is_closed_connection(&e) {
            ExchangeError::ClosedBeforeResponse(e)
        } else {
            ExchangeError::Other(UpstreamError::Io(e))
        });
    }
    let mut buf = BytesMut::new();
    let mut got_bytes = false;
    loop {
        if !buf.is_empty() {
            match parse_response_head(&mut buf, head_request).map_err(ExchangeError::Other)? {
                Some(head) => return Ok(head.into_response(stream, buf, worker, idle)),
                None if buf.len() > MAX_RESPONSE_HEAD => {
                    return Err(ExchangeError::Other(UpstreamError::BadResponse(
                        "response head too large",
                    )));
                }
                None => {}
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK.max(buf.len()));
        }
        let read = tokio::io::AsyncReadExt::read_buf(&mut stream, &mut buf).await;
        match read {
            Ok(0) if !got_bytes => {
                return Err(ExchangeError::ClosedBeforeResponse(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before a response",
                )));
            }
            Ok(0) => {
                return Err(ExchangeError::Other(UpstreamError::BadResponse(
                    "closed in the middle of the response head",
                )));
            }
            Ok(_) => got_bytes = true,
            Err(e) if !got_bytes && is_closed_connection(&e) => {
                return Err(ExchangeError::ClosedBeforeResponse(e));
            }
            Err(e) => return Err(ExchangeError::Other(UpstreamError::Io(e))),
        }
    }
}

/// A parsed final response head and how its body is framed.
struct ResponseHead {
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

/// Parses one response head at the start of `buf`, skipping interim 1xx responses; `None` when
/// more bytes are needed. The head's bytes are taken out of `buf`.
fn parse_response_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, UpstreamError> {
    loop {
        let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut parsed = httparse::Response::new(&mut slots);
        let length = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(UpstreamError::BadResponse("too many response headers"));
            }
            Err(_) => return Err(UpstreamError::BadResponse("malformed response head")),
        };
        let code = parsed.code.unwrap_or(0);
        let status = StatusCode::from_u16(code)
            .map_err(|_| UpstreamError::BadResponse("invalid status code"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(UpstreamError::BadResponse(
                "101 to a request without Upgrade",
            ));
        }
        if status.is_informational() {
            buf.advance(length);
            if buf.is_empty() {
                return Ok(None);
            }
            continue;
        }
        let http11 = parsed.version == Some(1);
        let mut headers = HeaderMap::with_capacity(parsed.headers.len());
        for header in parsed.headers.iter() {
            let name = HeaderName::from_bytes(header.name.as_bytes())
                .map_err(|_| UpstreamError::BadResponse("invalid header name"))?;
            let value = HeaderValue::from_bytes(header.value)
                .map_err(|_| UpstreamError::BadResponse("invalid header value"))?;
            headers.append(name, value);
        }
        buf.advance(length);
        let mut keep_alive = connection_keeps_alive(&headers, http11);
        let framing = if head_request
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Length(0)
        } else if let Some(chunked) = transfer_coding_is_chunked(&headers) {
            // Transfer-Encoding overrides Content-Length, which must not be forwarded then.
            headers.remove(CONTENT_LENGTH);
            if chunked {
                Framing::Chunked(ChunkState::Size)
            } else {
                keep_alive = false;
                Framing::UntilClose
            }
        } else if let Some(length) = content_length(&headers)? {
            Framing::Length(length)
        } else {
            keep_alive = false;
            Framing::UntilClose
        };
        return Ok(Some(ResponseHead {
            status,
            headers,
            framing,
            keep_alive,
        }));
    }
}

fn connection_keeps_alive(headers: &HeaderMap, http11: bool) -> bool {
    let (mut close, mut keep) = (false, false);
    for value in headers.get_all(CONNECTION) {
        let says = ConnectionOptions::of(value.as_bytes());
        close |= says.close;
        keep |= says.keep_alive;
    }
    !close && (http11 || keep)
}

/// `Some(true)` when `Transfer-Encoding` ends in `chunked`, `Some(false)` for other codings.
fn transfer_coding_is_chunked(headers: &HeaderMap) -> Option<bool> {
    let last = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|t| !t.is_empty())?;
    Some(last.eq_ignore_ascii_case("chunked"))
}

/// The declared body length; several headers must agree.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, UpstreamError> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value
            .to_str()
            .map_err(|_| UpstreamError::BadResponse("invalid Content-Length"))?
            .split(',')
        {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UpstreamError::BadResponse("invalid Content-Length"));
            }
            let parsed: u64 = part
                .parse()
                .map_err(|_| UpstreamError::BadResponse("invalid Content-Length"))?;
            if length.is_some_and(|l| l != parsed) {
                return Err(UpstreamError::BadResponse("conflicting Content-Length"));
            }
            length = Some(parsed);
        }
    }
    Ok(length)
}

impl ResponseHead {
    fn into_response(
        self,
        stream: TcpStream,
        leftover: BytesMut,
        worker: SocketAddr,
        idle: &Arc<IdleConnections>,
    ) -> Response<crate::pool::Body> {
        let mut body = UpstreamBody {
            stream: Some(stream),
            buf: leftover,
            framing: self.framing,
            keep_alive: self.keep_alive,
            worker,
            idle: Arc::downgrade(idle),
        };
        if matches!(body.framing, Framing::Length(0)) {
            body.finish();
        }
        let mut response = Response::new(http_body_util::BodyExt::boxed_unsync(body));
        *response.status_mut() = self.status;
        *response.version_mut() = Version::HTTP_11;
        *response.headers_mut() = self.headers;
        response
    }
}

/// How the rest of a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(ChunkState),
    /// Everything until the worker closes.
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk: this many data bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one; bytes of trailers seen.
    Trailers(usize),
    Done,
}

/// A response body read from the worker's connection by whoever polls it.
struct UpstreamBody {
    /// `None` once the body has ended (the connection went back or was closed).
    stream: Option<TcpStream>,
    /// Bytes read and not yet given out.
    buf: BytesMut,
    framing: Framing,
    keep_alive: bool,
    worker: SocketAddr,
    idle: Weak<IdleConnections>,
}

impl UpstreamBody {
    /// The body ended as framed: the connection goes back when it can carry another request.
    fn finish(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        if self.keep_alive
            && self.buf.is_empty()
            && let Some(idle) = self.idle.upgrade()
        {
            IdleConnections::checkin(&idle, self.worker, stream);
        }
        self.framing = Framing::Length(0);
    }

    /// The next data from `buf`, if the framing gives one; `Ok(None)` when more bytes are needed
    /// or the body is complete (then `self.stream` is `None`).
    fn take_data(&mut self) -> Result<Option<Bytes>, io::Error> {
        loop {
            match self.framing {
                Framing::Length(0) => {
                    self.finish();
                    return Ok(None);
                }
                Framing::Length(left) => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    let take = (self.buf.len() as u64).min(left) as usize;
                    let data = self.buf.split_to(take).freeze();
                    self.framing = Framing::Length(left - take as u64);
                    if left == take as u64 {
                        self.finish();
                    }
                    return Ok(Some(data));
                }
                Framing::UntilClose => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(self.buf.split().freeze()));
                }
                Framing::Chunked(state) => match self.chunk_step(state)? {
                    ChunkStep::Data(data) => return Ok(Some(data)),
                    ChunkStep::NeedMore => return Ok(None),
                    ChunkStep::Continue => {}
                },
            }
        }
    }

    fn chunk_step(&mut self, state: ChunkState) -> Result<ChunkStep, io::Error> {
        let bad = |why: &'static str| io::Error::new(io::ErrorKind::InvalidData, why);
        match state {
            ChunkState::Size => {
                let Some(end) = self.buf.iter().position(|&b| b == b'\n') else {
                    if self.buf.len() > MAX_CHUNK_LINE {
                        return Err(bad("chunk-size line too long"));
                    }
                    return Ok(ChunkStep::NeedMore);
                };
                let line = self.buf.split_to(end + 1);
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let digits = line
                    .split(|&b| b == b';')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii();
                if digits.is_empty()
                    || digits.len() > 15
                    || !digits.iter().all(u8::is_ascii_hexdigit)
                {
                    return Err(bad("invalid chunk size"));
                }
                let size = digits.iter().fold(0u64, |acc, &d| {
                    acc * 16 + u64::from((d as char).to_digit(16).unwrap_or(0))
                });
                self.framing = Framing::Chunked(if size == 0 {
                    ChunkState::Trailers(0)
                } else {
                    ChunkState::Data(size)
                });
                Ok(ChunkStep::Continue)
            }
            ChunkState::Data(left) => {
                if self.buf.is_empty() {
                    return Ok(ChunkStep::NeedMore);
                }
                let take = (self.buf.len() as u64).min(left) as usize;
                let data = self.buf.split_to(take).freeze();
                self.framing = Framing::Chunked(if left == take as u64 {
                    ChunkState::DataEnd
                } else {
                    ChunkState::Data(left - take as u64)
                });
                Ok(ChunkStep::Data(data))
            }
            ChunkState::DataEnd => {
                let ending = match self.buf.first() {
                    None => return Ok(ChunkStep::NeedMore),
                    Some(b'\n') => 1,
                    Some(b'\r') => match self.buf.get(1) {
                        None => return Ok(ChunkStep::NeedMore),
                        Some(b'\n') => 2,
                        Some(_) => return Err(bad("chunk data longer than its size")),
                    },
                    Some(_) => return Err(bad("chunk data longer than its size")),
                };
                self.buf.advance(ending);
                self.framing = Framing::Chunked(ChunkState::Size);
                Ok(ChunkStep::Continue)
            }
            ChunkState::Trailers(seen) => {
                let Some(end) = self.buf.iter().position(|&b| b == b'\n') else {
                    if seen + self.buf.len() > MAX_TRAILERS {
                        return Err(bad("trailers too long"));
                    }
                    return Ok(ChunkStep::NeedMore);
                };
                let line = self.buf.split_to(end + 1);
                if seen + line.len() > MAX_TRAILERS {
                    return Err(bad("trailers too long"));
                }
                let empty = line.as_ref() == b"\n" || line.as_ref() == b"\r\n";
                self.framing = Framing::Chunked(if empty {
                    ChunkState::Done
                } else {
                    ChunkState::Trailers(seen + line.len())
                });
                Ok(ChunkStep::Continue)
            }
            ChunkState::Done => {
                self.finish();
                Ok(ChunkStep::NeedMore)
            }
        }
    }
}

enum ChunkStep {
    Data(Bytes),
    NeedMore,
    Continue,
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            match this.take_data() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) => {}
                Err(e) => {
                    this.stream = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            let Some(stream) = this.stream.as_ref() else {
                return Poll::Ready(None);
            };
            if let Err(e) = ready!(stream.poll_read_ready(cx)) {
                this.stream = None;
                return Poll::Ready(Some(Err(e)));
            }
            if this.buf.capacity() - this.buf.len() < 1024 {
                this.buf.reserve(READ_CHUNK);
            }
            match stream.try_read_buf(&mut this.buf) {
                Ok(0) => {
                    this.stream = None;
                    if this.framing == Framing::UntilClose {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the worker closed the connection in the middle of the body",
                    ))));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    this.stream = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        (self.stream.is_none() && self.buf.is_empty()) || matches!(self.framing, Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

impl IdleConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<IdleConnection>>> {
        self.by_worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection to `worker` that is still fresh and open.
    fn checkout(&self, worker: SocketAddr) -> Option<TcpStream> {
        let mut by_worker = self.lock();
        let idle = by_worker.get_mut(&worker)?;
        while let Some(candidate) = idle.pop() {
            if candidate.since.elapsed() >= POOL_IDLE_TIMEOUT {
                continue;
            }
            // Readable while idle means the worker closed it (or sent something unasked).
            match candidate.stream.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(candidate.stream),
                _ => continue,
            }
        }
        None
    }

    fn checkin(this: &Arc<Self>, worker: SocketAddr, stream: TcpStream) {
        {
            let mut by_worker = this.lock();
            let idle = by_worker.entry(worker).or_default();
            if idle.len() >= MAX_IDLE_PER_WORKER {
                return;
            }
            idle.push(IdleConnection {
                stream,
                since: Instant::now(),
            });
        }
        if !this
            .sweeping
            .swap(true, std::sync::atomic::Ordering::AcqRel)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(sweep(Arc::downgrade(this)));
        }
    }
}

/// Closes idle connections older than [`POOL_IDLE_TIMEOUT`] until the client is dropped.
async fn sweep(idle: Weak<IdleConnections>) {
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        let Some(idle) = idle.upgrade() else { return };
        let mut by_worker = idle.lock();
        by_worker.retain(|_, connections| {
            connections.retain(|c| c.since.elapsed() < POOL_IDLE_TIMEOUT);
            !connections.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::body::Body as _;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn parts(method: Method, target: &str) -> http::request::Parts {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = method;
        parts.uri = target.parse().unwrap();
        parts
            .headers
            .insert(http::header::HOST, HeaderValue::from_static("site.test"));
        parts
    }

    /// A worker that answers each request (one per read of a whole head) with the next of
    /// `answers` on the same connection, then closes. Returns its address and a count of
    /// connections accepted.
    async fn scripted_worker(
        answers: Vec<&'static [u8]>,
    ) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    for answer in answers {
                        // An empty answer: read the request, then close without answering.
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 4096];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => seen.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                        seen.drain(..end + 4);
                        if answer.is_empty() {
                            return;
                        }
                        stream.write_all(answer).await.unwrap();
                    }
                });
            }
        });
        (addr, accepted)
    }

    async fn body_text(response: Response<crate::pool::Body>) -> Result<String, io::Error> {
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn accepted(counter: &std::sync::atomic::AtomicUsize) -> usize {
        counter.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn chunked_bodies_with_extensions_and_trailers_are_decoded_and_the_connection_reused() {
        let answer: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: yes\r\n\r\n";
        let (worker, connections) = scripted_worker(vec![answer, answer]).await;
        let client = DirectClient::default();
        for _ in 0..2 {
            let response = client.send(&parts(Method::GET, "/"), worker).await.unwrap();
            assert_eq!(response.status(), 200);
            assert!(!response.headers().contains_key(CONTENT_LENGTH));
            assert_eq!(body_text(response).await.unwrap(), "hello, world");
        }
        assert_eq!(accepted(&connections), 1, "the connection was kept alive");
    }

    #[tokio::test]
    async fn interim_responses_are_skipped_and_head_and_204_have_no_body() {
        let (worker, connections) = scripted_worker(vec![
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ])
        .await;
        let client = DirectClient::default();
        let first = client.send(&parts(Method::GET, "/"), worker).await.unwrap();
        assert_eq!(first.status(), 200);
        assert_eq!(body_text(first).await.unwrap(), "ok");
        let head = client
            .send(&parts(Method::HEAD, "/"), worker)
            .await
            .unwrap();
        assert_eq!(head.headers()[CONTENT_LENGTH], "1000");
        assert!(head.body().is_end_stream());
        assert_eq!(body_text(head).await.unwrap(), "");
        let empty = client
            .send(&parts(Method::DELETE, "/x"), worker)
            .await
            .unwrap();
        assert_eq!(empty.status(), 204);
        assert_eq!(body_text(empty).await.unwrap(), "");
        assert_eq!(accepted(&connections), 1);
    }

    #[tokio::test]
    async fn a_body_delimited_by_close_is_read_to_the_end_and_not_reused() {
        let (worker, connections) =
            scripted_worker(vec![b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nall of it"]).await;
        let client = DirectClient::default();
        let response = client.send(&parts(Method::GET, "/"), worker).await.unwrap();
        assert_eq!(response.version(), Version::HTTP_11);
        assert_eq!(body_text(response).await.unwrap(), "all of it");
        assert!(client.idle.lock().get(&worker).is_none_or(Vec::is_empty));
        assert_eq!(accepted(&connections), 1);
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_not_a_shorter_body() {
        let (worker, _) = scripted_worker(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",
        ])
        .await;
        let client = DirectClient::default();
        let response = client.send(&parts(Method::GET, "/"), worker).await.unwrap();
        assert!(body_text(response).await.is_err());

        let (worker, _) = scripted_worker(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        ])
        .await;
        let response = client.send(&parts(Method::GET, "/"), worker).await.unwrap();
        assert!(body_text(response).await.is_err());
    }

    #[tokio::test]
    async fn bad_heads_and_framing_are_errors() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            let (worker, _) = scripted_worker(vec![answer]).await;
            let result = DirectClient::default()
                .send(&parts(Method::GET, "/"), worker)
                .await;
            assert!(
                matches!(result, Err(UpstreamError::BadResponse(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(answer),
                result.map(|r| r.status())
            );
        }
        let (worker, _) = scripted_worker(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ])
        .await;
        let response = DirectClient::default()
            .send(&parts(Method::GET, "/"), worker)
            .await
            .unwrap();
        assert!(body_text(response).await.is_err());
    }

    // A retired worker must not be kept waiting on our idle connections: they are closed after
    // the idle timeout even when no request goes to that worker again.
    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let worker = listener.local_addr().unwrap();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 1024];
                let n = stream.read(&mut chunk).await.unwrap();
                head.extend_from_slice(&chunk[..n]);
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
            let answered = Instant::now();
            // The next read ends when the client closes the kept-alive connection.
            let _ = stream.read(&mut [0u8; 16]).await;
            let _ = closed_tx.send(answered.elapsed());
        });
        let client = DirectClient::default();
        let response = client.send(&parts(Method::GET, "/"), worker).await.unwrap();
        assert_eq!(body_text(response).await.unwrap(), "ok");
        assert_eq!(client.idle.lock().get(&worker).map(Vec::len), Some(1));
        let idle_for = tokio::time::timeout(POOL_IDLE_TIMEOUT * 3, closed_rx)
            .await
            .expect("the idle connection was never closed")
            .unwrap();
        assert!(idle_for >= POOL_IDLE_TIMEOUT, "closed after {idle_for:?}");
        assert!(client.idle.lock().get(&worker).is_none());
    }

    #[tokio::test]
    async fn endless_trailers_are_an_error() {
        let mut answer =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n".to_vec();
        for i in 0..20_000 {
            answer.extend_from_slice(format!("x-t{i}: v\r\n").as_bytes());
        }
        answer.extend_from_slice(b"\r\n");
        let (worker, _) = scripted_worker(vec![Box::leak(answer.into_boxed_slice())]).await;
        let response = DirectClient::default()
            .send(&parts(Method::GET, "/"), worker)
            .await
            .unwrap();
        let error = body_text(response).await.unwrap_err();
        assert!(error.to_string().contains("trailers too long"), "{error}");
    }

    #[tokio::test]
    async fn a_request_on_a_connection_the_worker_closed_is_sent_again_on_a_new_one() {
        // One answer per connection; the next request is read and the connection closed with no
        // answer, as when a worker closes an idle connection just as we reuse it.
        let (worker, connections) =
            scripted_worker(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b""]).await;
        let client = DirectClient::default();
        for _ in 0..3 {
            let response = client.send(&parts(Method::GET, "/"), worker).await.unwrap();
            assert_eq!(body_text(response).await.unwrap(), "ok");
        }
        assert_eq!(accepted(&connections), 3);
    }

    #[test]
    fn the_head_is_the_request_line_and_headers_with_a_length_for_empty_posts() {
        let mut post = parts(Method::POST, "http://127.0.0.1:1/app/x?y=1");
        post.headers
            .insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let head = String::from_utf8(encode_request_head(&post)).unwrap();
        assert_eq!(
            head,
            "POST /app/x?y=1 HTTP/1.1\r\nhost: site.test\r\nx-forwarded-for: 10.0.0.1\r\ncontent-length: 0\r\n\r\n"
        );
        let get = String::from_utf8(encode_request_head(&parts(Method::GET, "/"))).unwrap();
        assert_eq!(get, "GET / HTTP/1.1\r\nhost: site.test\r\n\r\n");
    }
}
