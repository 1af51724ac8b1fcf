//! The host's own HTTP/1.1 connection loop for plain connections, built so that an idle
//! keep-alive connection holds no buffer at all.
//!
//! Between requests a connection is its socket, a few words of state and a wait for the
//! socket to become readable. Only then is a read buffer taken (a small one, grown up to the
//! largest request head allowed); it is given back as soon as no unparsed bytes are left.
//! Request heads are parsed with `httparse`; the headers and target of the `http::Request`
//! share the buffer the head was read into, and the response is written straight to the
//! socket: status line and headers in one small allocation, the body frame by frame.
//!
//! This loop serves the requests that need nothing more: no request body (no
//! `Content-Length` other than `0`, no `Transfer-Encoding`), no `Upgrade`, no `Expect`, not
//! `CONNECT`. When a request needs more, the connection is handed to hyper's HTTP/1
//! connection for the rest of its life ([`Ending::Handover`]): hyper is given the socket
//! behind [`Replay`], which first replays the bytes this loop read and did not consume, so a
//! WebSocket handshake, a streamed upload or a `100-continue` work exactly as before. A head with
//! both `Content-Length` and `Transfer-Encoding` is refused here with 400 (RFC 9112, 6.3; nginx
//! too) rather than handed over: hyper would drop the length and read chunks.
//!
//! What the loop does as RFC 9112 and hyper (which served these connections before) do:
//! - keep-alive: HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
//!   `Connection: keep-alive`, answered with the same header; an HTTP/1.0 client gets an
//!   HTTP/1.0 status line;
//! - response framing: the response's `Content-Length`, or the body's exact size, or chunked
//!   (HTTP/1.1) / close-delimited (HTTP/1.0); no body for `HEAD`, 204 and 304; `Date` added;
//! - pipelining: bytes after a request head are kept and parsed once its response is out;
//! - one timer, the header read timeout, for both an idle keep-alive connection and a request
//!   head (as hyper's); a head larger than the limit is answered 400, a request line longer
//!   than the limit 414 (the access log gets a line with the reason, as for hyper's refusals);
//! - a body that fails or does not match its declared length ends the connection at once, so
//!   a client never takes a truncated body for a whole one;
//! - graceful shutdown: an idle connection (or one still receiving a head) closes at once; a
//!   request in flight is answered with `Connection: close` and the connection closes.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::access_log::ResponseBody;

/// Headers a request may have (hyper's default limit too); more is answered 400.
const MAX_HEADERS: usize = 100;
/// The first read buffer a readable connection borrows; doubled while a head does not fit.
const FIRST_BUFFER: usize = 4096;
/// The longest request target `http::Uri` accepts.
const MAX_URI: usize = u16::MAX as usize - 1;
/// After an error answer, how long the rest of what the client sends is read and dropped, so
/// that closing the socket does not reset the connection before the client has read the answer.
const LINGER: Duration = Duration::from_secs(1);
/// And how many bytes at most.
const LINGER_BYTES: usize = 1 << 20;

/// The options of one `Connection` header value that decide whether a connection stays open
/// (other tokens, the names of hop-by-hop headers, are not looked at here).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionOptions {
    pub close: bool,
    pub keep_alive: bool,
}

impl ConnectionOptions {
    pub(crate) fn of(value: &[u8]) -> Self {
        let mut says = Self::default();
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            says.close |= token.eq_ignore_ascii_case(b"close");
            says.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
        says
    }
}

/// A request body: none (requests this loop serves itself) or hyper's.
#[derive(Debug)]
pub(crate) enum RequestBody {
    /// No body.
    Empty,
    /// The body of a request hyper parsed.
    Hyper(Incoming),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Hyper(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Hyper(body) => body.size_hint(),
        }
    }
}

/// The limits the loop applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Longest wait for a complete request head, idle time before it included.
    pub header_read_timeout: Duration,
    /// Largest request head, in bytes.
    pub max_head: usize,
    /// How long a connection waits idle (no unparsed bytes, no request in flight) before it
    /// leaves its task for the parking lot ([`Ending::Park`]); `None`: never.
    pub park_after: Option<Duration>,
}

/// A request refused before it reached the service: the status answered, the reason logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    pub status: StatusCode,
    pub reason: &'static str,
}

const fn refused(status: StatusCode, reason: &'static str) -> Refused {
    Refused { status, reason }
}

/// How a connection left the loop.
pub(crate) enum Ending {
    /// Closed (by either side, a timeout, an error or a shutdown).
    Closed,
    /// A request this loop does not serve: hyper takes the connection over.
    Handover(Replay<TcpStream>),
    /// Idle for [`Settings::park_after`]: the connection goes to the parking lot
    /// (`park.rs`) until it is readable, with the deadline of its keep-alive wait.
    Park(TcpStream, tokio::time::Instant),
}

/// The outcome of parsing what has been read so far.
#[derive(Debug)]
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A request this loop serves; its head has been taken out of the buffer.
    Request(Box<Request<RequestBody>>, bool),
    /// A request for hyper; nothing was taken out of the buffer.
    Handover,
    /// A malformed or oversized head.
    Refused(Refused),
}

/// Serves `stream` until it closes or needs hyper. `service` answers each request; an `Err`
/// from it drops the connection without an answer. `refused` is told about each request
/// refused here (for the access log). On `graceful` an idle connection closes and a request in
/// flight is finished; on `abort` (the end of the grace period) the connection is dropped.
#[cfg(test)]
pub(crate) async fn serve<S, F, E>(
    stream: TcpStream,
    settings: Settings,
    graceful: &CancellationToken,
    abort: &CancellationToken,
    service: S,
    refused: impl Fn(Refused),
) -> Ending
where
    S: Fn(Request<RequestBody>) -> F,
    F: Future<Output = Result<Response<ResponseBody>, E>>,
{
    serve_from(stream, settings, None, graceful, abort, service, refused).await
}

/// [`serve`] for a connection coming back from the parking lot: `resumed` is the deadline of
/// the keep-alive wait it was parked in (the first wait does not start a new one).
pub(crate) async fn serve_from<S, F, E>(
    mut stream: TcpStream,
    settings: Settings,
    mut resumed: Option<tokio::time::Instant>,
    graceful: &CancellationToken,
    abort: &CancellationToken,
    service: S,
    refused: impl Fn(Refused),
) -> Ending
where
    S: Fn(Request<RequestBody>) -> F,
    F: Future<Output = Result<Response<ResponseBody>, E>>,
{
    // Empty: no allocation while the connection waits.
    let mut buffered = BytesMut::new();
    loop {
        if graceful.is_cancelled() {
            return Ending::Closed;
        }
        let now = tokio::time::Instant::now();
        let deadline = resumed
            .take()
            .unwrap_or_else(|| now + settings.header_read_timeout);
        // Only a connection with nothing buffered parks (`next_head` keeps what it read in
        // `buffered`, so stopping it at the park time loses nothing).
        let mut park_at = settings
            .park_after
            .map(|after| now + after)
            .filter(|at| *at < deadline && buffered.is_empty());
        let parsed = loop {
            let until = park_at.unwrap_or(deadline);
            let read = tokio::select! {
                biased;
                read = tokio::time::timeout_at(until, next_head(&stream, &mut buffered, settings.max_head)) => read,
                // No request in flight: nothing to finish.
                _ = graceful.cancelled() => return Ending::Closed,
            };
            match read {
                Ok(read) => break read,
                Err(_) if park_at.take().is_some() => {
                    if buffered.is_empty() {
                        return Ending::Park(stream, deadline);
                    }
                }
                Err(_) => return Ending::Closed,
            }
        };
        let (request, keep_alive) = match parsed {
            // Closed by the client, or a read error.
            Ok(None) | Err(_) => return Ending::Closed,
            Ok(Some(Parsed::Request(request, keep_alive))) => (request, keep_alive),
            Ok(Some(Parsed::Handover)) => {
                return Ending::Handover(Replay::new(buffered, stream));
            }
            Ok(Some(Parsed::Refused(refusal))) => {
                refused(refusal);
                answer_refused(&mut stream, refusal).await;
                return Ending::Closed;
            }
            Ok(Some(Parsed::Partial)) => return Ending::Closed,
        };
        if buffered.is_empty() {
            // Gives the read buffer back (the request's head still shares it until it is done).
            buffered = BytesMut::new();
        }
        let exchange = Exchange {
            version: request.version(),
            head: request.method() == Method::HEAD,
            keep_alive,
        };
        // Boxed: the service's and the writer's state exist only while a request is in
        // flight, not in every idle connection's task.
        // `abort` is awaited here only: an idle connection has already closed on `graceful`,
        // which always comes first.
        let served = Box::pin(async {
            let work = async {
                let response = service(*request).await.ok()?;
                Some(write_response(&mut stream, response, exchange, graceful).await)
            };
            tokio::select! {
                biased;
                served = work => served,
                _ = abort.cancelled() => None,
            }
        })
        .await;
        match served {
            Some(Ok(true)) => {}
            Some(Ok(false)) => {
                linger(&mut stream).await;
                return Ending::Closed;
            }
            // The service dropped the request, or the body or the socket failed: no answer,
            // or a truncated one, ends the connection without ceremony.
            None | Some(Err(_)) => return Ending::Closed,
        }
    }
}

/// Reads until `buffered` holds a request head (or something that cannot be one). `None`
/// when the client closed the connection.
async fn next_head(
    stream: &TcpStream,
    buffered: &mut BytesMut,
    max_head: usize,
) -> io::Result<Option<Parsed>> {
    // Bytes kept from before (pipelined) are parsed at once; after that only when a read
    // brought a line end (a head cannot end without one) or filled the buffer, so a head
    // trickling in byte by byte is not parsed again for every byte.
    let mut check = !buffered.is_empty();
    loop {
        if check {
            match parse(buffered, max_head) {
                Parsed::Partial if buffered.len() >= max_head => {
                    return Ok(Some(Parsed::Refused(oversized(buffered, max_head))));
                }
                Parsed::Partial => {}
                parsed => return Ok(Some(parsed)),
            }
        }
        stream.readable().await?;
        if buffered.capacity() == buffered.len() {
            // Borrow a buffer now that there is something to read; double it when full.
            let more = if buffered.is_empty() {
                FIRST_BUFFER
            } else {
                buffered.len()
            };
            buffered.reserve(more.min(max_head + 1 - buffered.len().min(max_head)));
        }
        let before = buffered.len();
        match stream.try_read_buf(buffered) {
            Ok(0) => return Ok(None),
            Ok(_) => {
                check = buffered[before..].contains(&b'\n') || buffered.len() >= max_head;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                check = false;
                if buffered.is_empty() {
                    *buffered = BytesMut::new();
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Why a head that does not fit in `max_head` bytes is refused: 414 when its request target
/// alone is too long (nginx does the same), 400 for a too long method, else 400 for the head.
fn oversized(buffered: &[u8], max_head: usize) -> Refused {
    let line_end = buffered.iter().position(|&b| b == b'\n');
    let line = &buffered[..line_end.unwrap_or(buffered.len()).min(max_head)];
    match line.iter().position(|&b| b == b' ') {
        None => refused(StatusCode::BAD_REQUEST, "Verb"),
        Some(space) if line_end.is_none() && !line[space + 1..].contains(&b' ') => {
            refused(StatusCode::URI_TOO_LONG, "URL")
        }
        Some(_) => refused(StatusCode::BAD_REQUEST, "RequestLength"),
    }
}

/// Offset of `part` in `base`; `part` is a sub-slice of `base`.
fn offset(base: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - base.as_ptr() as usize
}

/// Parses the head at the start of `buffered`. A request this loop serves is taken out of it.
fn parse(buffered: &mut BytesMut, max_head: usize) -> Parsed {
    let bad = |reason| Parsed::Refused(refused(StatusCode::BAD_REQUEST, reason));
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let base: &[u8] = buffered;
    let len = match request.parse(base) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::Token) if request.method.is_none() => return bad("Verb"),
        Err(httparse::Error::Token) => return bad("URL"),
        Err(httparse::Error::HeaderName | httparse::Error::HeaderValue) => return bad("Header"),
        Err(httparse::Error::TooManyHeaders) => return bad("RequestLength"),
        Err(_) => return bad("BadRequest"),
    };
    let (Some(method), Some(path), Some(minor)) = (request.method, request.path, request.version)
    else {
        return bad("BadRequest");
    };
    if path.len() > MAX_URI {
        return Parsed::Refused(refused(StatusCode::URI_TOO_LONG, "URL"));
    }
    if len > max_head {
        return bad("RequestLength");
    }
    let version = if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return bad("Verb");
    };
    if method == Method::CONNECT {
        return Parsed::Handover;
    }
    let mut keep_alive = version == Version::HTTP_11;
    let mut close = false;
    let (mut length, mut chunked, mut handover) = (false, false, false);
    for h in request.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            length = true;
            handover |= h.value != b"0";
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
            handover = true;
        } else if name.eq_ignore_ascii_case(b"upgrade") || name.eq_ignore_ascii_case(b"expect") {
            handover = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            let says = ConnectionOptions::of(h.value);
            close |= says.close;
            keep_alive |= says.keep_alive;
        }
    }
    if length && chunked {
        // Both framings: a smuggling attempt or a broken intermediary (RFC 9112, 6.3). Refused
        // here, as nginx does: hyper would drop the Content-Length and go by the chunks.
        return bad("Header");
    }
    if handover {
        return Parsed::Handover;
    }
    let path_range = offset(base, path.as_bytes())..offset(base, path.as_bytes()) + path.len();
    let count = request.headers.len();
    let mut ranges = [(0usize, 0usize, 0usize, 0usize); MAX_HEADERS];
    for (range, h) in ranges.iter_mut().zip(request.headers.iter()) {
        let name = offset(base, h.name.as_bytes());
        let value = offset(base, h.value);
        *range = (name, name + h.name.len(), value, value + h.value.len());
    }

    let head = buffered.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path_range)) else {
        return bad("URL");
    };
    let mut map = HeaderMap::with_capacity(count);
    for &(name_start, name_end, value_start, value_end) in &ranges[..count] {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&head[name_start..name_end]),
            HeaderValue::from_maybe_shared(head.slice(value_start..value_end)),
        ) else {
            return bad("Header");
        };
        map.append(name, value);
    }
    let mut request = Request::new(RequestBody::Empty);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    Parsed::Request(Box::new(request), keep_alive && !close)
}

/// What the response writer needs to know about its request.
#[derive(Debug, Clone, Copy)]
struct Exchange {
    version: Version,
    head: bool,
    keep_alive: bool,
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// Writes `response`; `Ok(true)` when the connection stays open for the next request.
async fn write_response(
    stream: &mut TcpStream,
    response: Response<ResponseBody>,
    exchange: Exchange,
    graceful: &CancellationToken,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let no_body = exchange.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let may_have_length = !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED);
    let body_ended = body.is_end_stream();
    let mut keep_alive = exchange.keep_alive && !graceful.is_cancelled();

    let mut head = Vec::with_capacity(128 + parts.headers.len() * 32);
    head.extend_from_slice(if exchange.version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    head.extend_from_slice(b"\r\n");

    let mut framing = None;
    let mut wrote_date = false;
    let mut connection_keep_alive = false;
    for (name, value) in &parts.headers {
        if *name == header::TRANSFER_ENCODING {
            // The framing is this writer's to choose.
            continue;
        }
        if *name == header::CONTENT_LENGTH {
            if framing.is_some() || !may_have_length || (body_ended && !exchange.head) {
                continue;
            }
            let Some(length) = std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            else {
                return Err(io::Error::other("invalid content-length in a response"));
            };
            framing = Some(Framing::Length(length));
        } else if *name == header::CONNECTION {
            let says = ConnectionOptions::of(value.as_bytes());
            keep_alive &= !says.close;
            connection_keep_alive |= says.keep_alive;
        } else if *name == header::DATE {
            wrote_date = true;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let framing = match framing {
        Some(framing) => framing,
        None => match body.size_hint().exact() {
            _ if body_ended => {
                if may_have_length && !exchange.head {
                    head.extend_from_slice(b"content-length: 0\r\n");
                }
                Framing::Length(0)
            }
            Some(length) => {
                if may_have_length && (length > 0 || !exchange.head) {
                    head.extend_from_slice(b"content-length: ");
                    head.extend_from_slice(length.to_string().as_bytes());
                    head.extend_from_slice(b"\r\n");
                }
                Framing::Length(length)
            }
            None if no_body => Framing::Length(0),
            None if exchange.version == Version::HTTP_10 => Framing::UntilClose,
            None => {
                head.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
        },
    };
    let framing = if no_body { Framing::Length(0) } else { framing };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    if exchange.version == Version::HTTP_10 {
        if keep_alive && !connection_keep_alive {
            head.extend_from_slice(b"connection: keep-alive\r\n");
        }
    } else if !keep_alive {
        head.extend_from_slice(b"connection: close\r\n");
    }
    if !wrote_date {
        head.extend_from_slice(b"date: ");
        date::extend(&mut head);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");

    if no_body {
        drop(body);
        stream.write_all(&head).await?;
        return Ok(keep_alive);
    }
    // `pending` is what goes out before the next data: the head, chunk sizes and ends.
    let mut pending = head;
    let mut left = match framing {
        Framing::Length(length) => length,
        _ => u64::MAX,
    };
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            // Trailers: not sent.
            continue;
        };
        if data.is_empty() {
            continue;
        }
        match framing {
            Framing::Length(_) => {
                left = left
                    .checked_sub(data.len() as u64)
                    .ok_or_else(|| io::Error::other("response body longer than its length"))?;
            }
            Framing::Chunked => {
                pending.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            }
            Framing::UntilClose => {}
        }
        write_two(stream, &pending, &data).await?;
        pending.clear();
        if framing == Framing::Chunked {
            pending.extend_from_slice(b"\r\n");
        }
    }
    match framing {
        Framing::Length(_) if left != 0 => {
            return Err(io::Error::other("response body shorter than its length"));
        }
        Framing::Chunked => pending.extend_from_slice(b"0\r\n\r\n"),
        _ => {}
    }
    if !pending.is_empty() {
        stream.write_all(&pending).await?;
    }
    // The access-log line is written as the body is dropped: once the last byte is out.
    drop(body);
    Ok(keep_alive)
}

/// Writes `first` then `second`, in one system call when the socket takes both.
async fn write_two(stream: &mut TcpStream, first: &[u8], second: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < first.len() {
        let slices = [IoSlice::new(&first[done..]), IoSlice::new(second)];
        let n = stream.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    let written_of_second = done - first.len();
    stream.write_all(&second[written_of_second..]).await
}

/// Answers a refused request and closes.
async fn answer_refused(stream: &mut TcpStream, refusal: Refused) {
    let mut answer = Vec::with_capacity(128);
    answer.extend_from_slice(b"HTTP/1.1 ");
    answer.extend_from_slice(refusal.status.as_str().as_bytes());
    answer.push(b' ');
    answer.extend_from_slice(refusal.status.canonical_reason().unwrap_or("").as_bytes());
    answer.extend_from_slice(b"\r\nconnection: close\r\ncontent-length: 0\r\ndate: ");
    date::extend(&mut answer);
    answer.extend_from_slice(b"\r\n\r\n");
    if stream.write_all(&answer).await.is_ok() {
        linger(stream).await;
    }
}

/// Closes our side and reads what the client still sends for a moment, so the client gets
/// the answer before the connection goes (closing with unread bytes resets it).
async fn linger(stream: &mut TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut scratch = vec![0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut scratch) {
                Ok(0) => return,
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// The `Date` header's value, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }

    pub(super) fn extend(out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let second = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        CACHED.with(|cached| {
            let mut cached = cached.borrow_mut();
            if cached.0 != second {
                *cached = (second, httpdate::fmt_http_date(now));
            }
            out.extend_from_slice(cached.1.as_bytes());
        });
    }
}

/// A socket that first yields `prefix` (bytes already read from it), then reads on from the
/// socket; writes go straight through.
#[derive(Debug)]
pub(crate) struct Replay<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Replay<S> {
    pub fn new(prefix: BytesMut, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                this.prefix = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &[u8]) -> (Parsed, usize) {
        let mut buffered = BytesMut::from(raw);
        let parsed = parse(&mut buffered, 64 * 1024);
        (parsed, buffered.len())
    }

    use std::convert::Infallible;
    use std::sync::Arc;

    use http_body_util::{Full, StreamBody};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use crate::log_sink::LogSink;

    /// A connected pair: (the server's side, the client's side).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let client = client.unwrap();
        client.set_nodelay(true).unwrap();
        (accepted.unwrap().0, client)
    }

    fn sink() -> Arc<LogSink> {
        Arc::new(LogSink::open(std::path::Path::new("/dev/null"), "test").unwrap())
    }

    /// `/fixed`: "hello" with a known length; `/stream`: "ab" and "cd" with no length; `/none`:
    /// 204. Every response names the request's target in `x-target`.
    async fn answer(request: Request<RequestBody>) -> Result<Response<ResponseBody>, Infallible> {
        let target = request.uri().to_string();
        let (status, body): (StatusCode, crate::pool::Body) = match request.uri().path() {
            "/stream" => {
                let frames = ["ab", "cd"]
                    .into_iter()
                    .map(|s| Ok::<_, io::Error>(Frame::data(Bytes::from(s))));
                (
                    StatusCode::OK,
                    StreamBody::new(futures::stream::iter(frames)).boxed_unsync(),
                )
            }
            "/none" => (
                StatusCode::NO_CONTENT,
                Full::new(Bytes::new())
                    .map_err(|n| match n {})
                    .boxed_unsync(),
            ),
            _ => (
                StatusCode::OK,
                Full::new(Bytes::from("hello"))
                    .map_err(|n| match n {})
                    .boxed_unsync(),
            ),
        };
        let mut response = Response::new(ResponseBody::new(
            body,
            status.as_u16(),
            None,
            &sink(),
            None,
        ));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert("x-target", HeaderValue::from_str(&target).unwrap());
        Ok(response)
    }

    const SETTINGS: Settings = Settings {
        header_read_timeout: Duration::from_secs(30),
        max_head: 8192,
        park_after: None,
    };

    /// Serves the server side of a new pair with [`answer`]; returns the client side.
    fn start(
        settings: Settings,
        graceful: CancellationToken,
    ) -> (
        tokio::task::JoinHandle<Ending>,
        tokio::sync::oneshot::Receiver<TcpStream>,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let (server, client) = pair().await;
            let _ = tx.send(client);
            serve(
                server,
                settings,
                &graceful,
                &CancellationToken::new(),
                answer,
                |_| {},
            )
            .await
        });
        (task, rx)
    }

    /// One response read from `client`: its head and body. `head_request` says the body is
    /// absent whatever the headers say; `leftover` holds bytes read past the response.
    async fn response(
        client: &mut TcpStream,
        leftover: &mut Vec<u8>,
        head_request: bool,
    ) -> (String, Vec<u8>) {
        async fn more(client: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
            let mut chunk = [0u8; 4096];
            let n = client.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            n
        }
        let end = loop {
            if let Some(end) = leftover.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            assert_ne!(
                more(client, leftover).await,
                0,
                "closed before a response head"
            );
        };
        let head = String::from_utf8(leftover.drain(..end).collect()).unwrap();
        let lower = head.to_ascii_lowercase();
        let status = &head[9..12];
        let mut body = Vec::new();
        if head_request || status == "204" || status == "304" {
        } else if let Some(length) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
        {
            let length: usize = length.trim().parse().unwrap();
            while leftover.len() < length {
                assert_ne!(more(client, leftover).await, 0, "closed inside a body");
            }
            body = leftover.drain(..length).collect();
        } else if lower.contains("transfer-encoding: chunked") {
            loop {
                let line_end = loop {
                    if let Some(p) = leftover.windows(2).position(|w| w == b"\r\n") {
                        break p;
                    }
                    assert_ne!(more(client, leftover).await, 0);
                };
                let size =
                    usize::from_str_radix(std::str::from_utf8(&leftover[..line_end]).unwrap(), 16)
                        .unwrap();
                while leftover.len() < line_end + 2 + size + 2 {
                    assert_ne!(more(client, leftover).await, 0);
                }
                let chunk: Vec<u8> = leftover.drain(..line_end + 2 + size + 2).collect();
                body.extend_from_slice(&chunk[line_end + 2..line_end + 2 + size]);
                if size == 0 {
                    break;
                }
            }
        } else {
            // Delimited by the close.
            while more(client, leftover).await != 0 {}
            body = std::mem::take(leftover);
        }
        (head, body)
    }

    /// Whether the server closed `client` (EOF) with nothing more sent.
    async fn closed(client: &mut TcpStream) -> bool {
        let mut chunk = [0u8; 64];
        matches!(client.read(&mut chunk).await, Ok(0) | Err(_))
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order() {
        let (task, client) = start(SETTINGS, CancellationToken::new());
        let mut client = client.await.unwrap();
        client
            .write_all(
                b"GET /fixed?1 HTTP/1.1\r\nHost: a\r\n\r\nGET /stream HTTP/1.1\r\nHost: a\r\n\r\n\
                  GET /none HTTP/1.1\r\nHost: a\r\n\r\nGET /fixed?4 HTTP/1.1\r\nHost: a\r\n\r\n",
            )
            .await
            .unwrap();
        let mut left = Vec::new();
        let (head, body) = response(&mut client, &mut left, false).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("x-target: /fixed?1\r\n") && head.contains("content-length: 5\r\n"));
        assert!(head.contains("\r\ndate: "), "{head}");
        assert_eq!(body, b"hello");
        let (head, body) = response(&mut client, &mut left, false).await;
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
        assert_eq!(body, b"abcd");
        let (head, _) = response(&mut client, &mut left, false).await;
        assert!(head.starts_with("HTTP/1.1 204 No Content\r\n"), "{head}");
        assert!(!head.contains("content-length") && !head.contains("transfer-encoding"));
        let (head, body) = response(&mut client, &mut left, false).await;
        assert!(head.contains("x-target: /fixed?4\r\n"), "{head}");
        assert_eq!(body, b"hello");
        assert!(left.is_empty());
        drop(client);
        assert!(matches!(task.await.unwrap(), Ending::Closed));
    }

    #[tokio::test]
    async fn head_gets_the_length_but_no_body() {
        let (_task, client) = start(SETTINGS, CancellationToken::new());
        let mut client = client.await.unwrap();
        client
            .write_all(b"HEAD /fixed HTTP/1.1\r\nHost: a\r\n\r\nHEAD /stream HTTP/1.1\r\nHost: a\r\n\r\nGET /fixed HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut left = Vec::new();
        let (head, _) = response(&mut client, &mut left, true).await;
        assert!(head.contains("content-length: 5\r\n"), "{head}");
        let (head, _) = response(&mut client, &mut left, true).await;
        assert!(!head.contains("transfer-encoding"), "{head}");
        // Had either HEAD been given a body, this would read it as the next response.
        let (head, body) = response(&mut client, &mut left, false).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(body, b"hello");
    }

    #[tokio::test]
    async fn http_1_0_keeps_the_connection_only_when_asked() {
        let (task, client) = start(SETTINGS, CancellationToken::new());
        let mut client = client.await.unwrap();
        client
            .write_all(b"GET /fixed HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let mut left = Vec::new();
        let (head, body) = response(&mut client, &mut left, false).await;
        assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
        assert!(head.contains("connection: keep-alive\r\n"), "{head}");
        assert_eq!(body, b"hello");
        // Without the header: answered, then closed; a body of unknown length is delimited by
        // the close (no chunked encoding in HTTP/1.0).
        client
            .write_all(b"GET /stream HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = response(&mut client, &mut left, false).await;
        assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
        assert!(
            !head.contains("chunked") && !head.contains("keep-alive"),
            "{head}"
        );
        assert_eq!(body, b"abcd");
        assert!(matches!(task.await.unwrap(), Ending::Closed));

        let (task, client) = start(SETTINGS, CancellationToken::new());
        let mut client = client.await.unwrap();
        client
            .write_all(b"GET /fixed HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = response(&mut client, &mut left, false).await;
        assert!(!head.contains("keep-alive"), "{head}");
        assert_eq!(body, b"hello");
        assert!(closed(&mut client).await);
        assert!(matches!(task.await.unwrap(), Ending::Closed));
    }

    #[tokio::test]
    async fn connection_close_is_honoured_and_said() {
        let (task, client) = start(SETTINGS, CancellationToken::new());
        let mut client = client.await.unwrap();
        client
            .write_all(b"GET /fixed HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut left = Vec::new();
        let (head, body) = response(&mut client, &mut left, false).await;
        assert!(head.contains("connection: close\r\n"), "{head}");
        assert_eq!(body, b"hello");
        assert!(closed(&mut client).await);
        assert!(matches!(task.await.unwrap(), Ending::Closed));
    }

    #[tokio::test]
    async fn a_head_split_across_many_small_writes_is_put_together() {
        let (_task, client) = start(SETTINGS, CancellationToken::new());
        let mut client = client.await.unwrap();
        let request = b"GET /fixed?split HTTP/1.1\r\nHost: a\r\nUser-Agent: slow\r\n\r\n";
        let mut left = Vec::new();
        for byte in request {
            client.write_all(&[*byte]).await.unwrap();
            client.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
        let (head, body) = response(&mut client, &mut left, false).await;
        assert!(head.contains("x-target: /fixed?split\r\n"), "{head}");
        assert_eq!(body, b"hello");
    }

    #[tokio::test]
    async fn a_request_with_a_body_hands_the_connection_over_with_its_bytes() {
        let (task, client) = start(SETTINGS, CancellationToken::new());
        let mut client = client.await.unwrap();
        let post = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        let mut both = b"GET /fixed HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        both.extend_from_slice(post);
        client.write_all(&both).await.unwrap();
        let mut left = Vec::new();
        let (_, body) = response(&mut client, &mut left, false).await;
        assert_eq!(body, b"hello");
        let Ending::Handover(mut replay) = task.await.unwrap() else {
            panic!("not handed over");
        };
        // The new owner reads the whole POST, then what the client sends next.
        client.write_all(b"more").await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < post.len() + 4 {
            let mut chunk = [0u8; 7];
            let n = replay.read(&mut chunk).await.unwrap();
            assert_ne!(n, 0);
            seen.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(&seen[..post.len()], post);
        assert_eq!(&seen[post.len()..], b"more");
    }

    #[tokio::test]
    async fn graceful_shutdown_closes_an_idle_connection_at_once() {
        let graceful = CancellationToken::new();
        let (task, client) = start(SETTINGS, graceful.clone());
        let mut client = client.await.unwrap();
        client
            .write_all(b"GET /fixed HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut left = Vec::new();
        let (_, body) = response(&mut client, &mut left, false).await;
        assert_eq!(body, b"hello");
        graceful.cancel();
        // Far below the 30 s idle limit: the shutdown, not the timer, closed it.
        let ending = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("an idle connection held the shutdown");
        assert!(matches!(ending.unwrap(), Ending::Closed));
        assert!(closed(&mut client).await);
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_header_read_timeout() {
        let settings = Settings {
            header_read_timeout: Duration::from_millis(200),
            ..SETTINGS
        };
        let (task, client) = start(settings, CancellationToken::new());
        let mut client = client.await.unwrap();
        client.write_all(b"GET /fixed HTTP/1.1\r\n").await.unwrap();
        assert!(closed(&mut client).await);
        assert!(matches!(task.await.unwrap(), Ending::Closed));
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused_and_reported() {
        let reported = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (server, mut client) = pair().await;
        let seen = reported.clone();
        let task = tokio::spawn(async move {
            let settings = Settings {
                max_head: 256,
                ..SETTINGS
            };
            serve(
                server,
                settings,
                &CancellationToken::new(),
                &CancellationToken::new(),
                answer,
                move |r| seen.lock().unwrap().push(r),
            )
            .await
        });
        let request = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(1000));
        client.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 414 URI Too Long\r\n"),
            "{answer}"
        );
        assert!(matches!(task.await.unwrap(), Ending::Closed));
        assert_eq!(
            *reported.lock().unwrap(),
            [refused(StatusCode::URI_TOO_LONG, "URL")]
        );
    }

    #[test]
    fn an_idle_connection_task_is_small() {
        // The state of a connection's loop between requests (what every idle keep-alive
        // connection holds besides its socket); the service's state is boxed separately.
        let graceful = CancellationToken::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (server, _client) = pair().await;
            let future = serve(server, SETTINGS, &graceful, &graceful, answer, |_| {});
            let size = std::mem::size_of_val(&future);
            println!("idle loop state: {size} bytes");
            assert!(size < 1024, "{size} bytes");
        });
    }

    #[test]
    fn a_simple_request_is_taken_out_of_the_buffer_and_the_rest_kept() {
        let raw = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-A: 2\r\n\r\nGET /next";
        let (parsed, left) = parsed(raw);
        let Parsed::Request(request, keep_alive) = parsed else {
            panic!("{parsed:?}");
        };
        assert!(keep_alive);
        assert_eq!(left, b"GET /next".len());
        assert_eq!(request.uri(), "/a?b=1");
        assert_eq!(request.version(), Version::HTTP_11);
        let values: Vec<_> = request.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let keep = |raw: &[u8]| match parsed(raw).0 {
            Parsed::Request(_, keep_alive) => keep_alive,
            other => panic!("{other:?}"),
        };
        assert!(!keep(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(keep(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!keep(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        ));
        assert!(!keep(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n"
        ));
        assert!(keep(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn requests_with_a_body_or_an_upgrade_go_to_hyper_untouched() {
        for raw in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        ] {
            let (parsed, left) = parsed(raw);
            assert!(matches!(parsed, Parsed::Handover), "{parsed:?}");
            assert_eq!(left, raw.len());
        }
        // A zero length is no body.
        let (parsed, _) = parsed(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(parsed, Parsed::Request(..)));
    }

    #[test]
    fn malformed_and_oversized_heads_are_refused_with_a_reason() {
        let reason = |raw: &[u8]| match parsed(raw).0 {
            Parsed::Refused(r) => (r.status.as_u16(), r.reason),
            other => panic!("{other:?}"),
        };
        assert_eq!(reason(b"G(T / HTTP/1.1\r\n\r\n"), (400, "Verb"));
        assert_eq!(reason(b"GET / HTTP/1.1\r\nHost a\r\n\r\n"), (400, "Header"));
        assert_eq!(reason(b"GET / HTTP/3.0\r\n\r\n"), (400, "BadRequest"));
        for both in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
        ] {
            assert_eq!(reason(both), (400, "Header"));
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(reason(raw.as_bytes()), (400, "RequestLength"));

        let target = format!("GET /{}", "a".repeat(100));
        assert_eq!(
            oversized(target.as_bytes(), 64),
            refused(StatusCode::URI_TOO_LONG, "URL")
        );
        assert_eq!(oversized(&[b'A'; 100], 64).reason, "Verb");
        let headers = format!("GET / HTTP/1.1\r\nX: {}", "b".repeat(100));
        assert_eq!(oversized(headers.as_bytes(), 64).reason, "RequestLength");
    }
}
