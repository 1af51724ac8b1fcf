//! Access log lines, one per request, written when the response is finished (or abandoned),
//! and the response body wrapper that counts the bytes and holds the pool's in-flight guard.
//!
//! Format, the combined log format plus three fields:
//! ```text
//! 127.0.0.1 - - [02/Nov/2026:10:00:00 +0000] "GET /a?b HTTP/1.1" 200 1234 "referer" "agent" host="a.test" pool=default ms=3
//! ```
//! A request the host refused before routing (strict.rs) ends with ` reason=…` (IIS's HTTPERR
//! reasons: `Hostname`, `Verb`, `URL`, …); one hyper's parser refused is logged as
//! `"-" 400 0 "-" "-" host="-" pool=- ms=0 reason=…`, as nothing of it is known.
//! Bytes are the response body bytes sent. A request refused at TCP level (a stopped pool
//! with `service_unavailable_response = TcpLevel`) is logged with status `-`. `pool=-` means
//! no application matched. Quotes, backslashes and control characters from the client are
//! escaped so a line stays one line.
//!
//! When the log is off (the task's stdout is `/dev/null`) nothing of this is built: the
//! request handler creates no [`Entry`] and the body wrapper only counts the request in flight.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Version;
use http::request::Parts;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::log_sink::LogSink;
use crate::pool::{Body, InFlight};

/// What is known about a request before its response: everything but status and size.
#[derive(Debug)]
pub(crate) struct Entry {
    started: Instant,
    /// Formatted `remote - - [time] "request"`.
    head: String,
    /// Formatted `"referer" "agent" host="…"`, then ` pool=…` once the pool is known.
    tail: String,
    has_pool: bool,
    /// Why the host refused the request (`reason=` at the end of the line), after IIS's HTTPERR
    /// log; `None` for requests that were served.
    reason: Option<&'static str>,
}

impl Entry {
    /// Captures the request side of a log line.
    pub fn new(started: Instant, peer: SocketAddr, parts: &Parts, host: Option<&str>) -> Self {
        let target = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            // `CONNECT host:port` has an authority and no path.
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or("/");
        let mut head = String::with_capacity(64 + target.len());
        let _ = write!(head, "{} - - [", peer.ip());
        push_timestamp(&mut head);
        head.push_str("] \"");
        escape_into(&mut head, parts.method.as_str());
        head.push(' ');
        escape_into(&mut head, target);
        head.push(' ');
        head.push_str(version_name(parts.version));
        head.push('"');

        let mut tail = String::with_capacity(128);
        for name in [http::header::REFERER, http::header::USER_AGENT] {
            tail.push('"');
            match parts.headers.get(name) {
                Some(value) => escape_into(&mut tail, &String::from_utf8_lossy(value.as_bytes())),
                None => tail.push('-'),
            }
            tail.push_str("\" ");
        }
        tail.push_str("host=\"");
        escape_into(&mut tail, host.unwrap_or("-"));
        tail.push('"');
        Self {
            started,
            head,
            tail,
            has_pool: false,
            reason: None,
        }
    }

    /// Records the pool that served the request.
    pub fn set_pool(&mut self, pool: &str) {
        self.tail.push_str(" pool=");
        self.tail.push_str(pool);
        self.has_pool = true;
    }

    /// Records why the host refused the request.
    pub fn set_reason(&mut self, reason: &'static str) {
        self.reason = Some(reason);
    }

    /// Appends the finished line (without newline) to `out`.
    pub fn write_line(&self, out: &mut String, status: Option<u16>, bytes: u64) {
        out.push_str(&self.head);
        match status {
            Some(status) => {
                let _ = write!(out, " {status} {bytes} ");
            }
            None => {
                let _ = write!(out, " - {bytes} ");
            }
        }
        out.push_str(&self.tail);
        if !self.has_pool {
            out.push_str(" pool=-");
        }
        let _ = write!(out, " ms={}", self.started.elapsed().as_millis());
        if let Some(reason) = self.reason {
            out.push_str(" reason=");
            out.push_str(reason);
        }
    }

    /// The finished line.
    #[cfg(test)]
    pub fn line(&self, status: Option<u16>, bytes: u64) -> String {
        let mut line = String::new();
        self.write_line(&mut line, status, bytes);
        line
    }
}

/// Appends the line (without newline) for a request refused before it could be read (hyper's
/// parser refused it): nothing of it is known but the client.
pub(crate) fn write_refused_line(
    out: &mut String,
    peer: SocketAddr,
    started: Instant,
    status: u16,
    reason: &str,
) {
    let _ = write!(out, "{} - - [", peer.ip());
    push_timestamp(out);
    let _ = write!(
        out,
        "] \"-\" {status} 0 \"-\" \"-\" host=\"-\" pool=- ms={} reason={reason}",
        started.elapsed().as_millis()
    );
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// Appends the current time as `02/Nov/2026:10:00:00 +0000`. The text changes once a second,
/// so each thread formats it once a second and copies it otherwise.
fn push_timestamp(out: &mut String) {
    thread_local! {
        static LAST: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != now {
            let format = time::macros::format_description!(
                "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
            );
            last.1 = i64::try_from(now)
                .ok()
                .and_then(|seconds| time::OffsetDateTime::from_unix_timestamp(seconds).ok())
                .and_then(|time| time.format(&format).ok())
                .unwrap_or_else(|| "-".to_string());
            last.0 = now;
        }
        out.push_str(&last.1);
    });
}

/// Appends `text`, escaping what would break a quoted field or the line.
fn escape_into(out: &mut String, text: &str) {
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// The body of every response the host sends: the handler's body, plus the pool's in-flight
/// guard (so a request counts until its last byte is out) and, when the access log is on, the
/// line written when the body is dropped — when the response is complete or the connection
/// went away.
pub(crate) struct ResponseBody {
    inner: Body,
    log: Option<PendingLine>,
    _in_flight: Option<InFlight>,
}

struct PendingLine {
    sent: u64,
    status: u16,
    entry: Entry,
    sink: Arc<LogSink>,
}

impl ResponseBody {
    /// Wraps `inner`, the body of a response with `status`; logs it when `entry` is given.
    pub fn new(
        inner: Body,
        status: u16,
        entry: Option<Entry>,
        sink: &Arc<LogSink>,
        in_flight: Option<InFlight>,
    ) -> Self {
        Self {
            inner,
            log: entry.map(|entry| PendingLine {
                sent: 0,
                status,
                entry,
                sink: sink.clone(),
            }),
            _in_flight: in_flight,
        }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(log) = &mut this.log
            && let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            log.sent += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(log) = &self.log {
            log.sink
                .write_with(|out| log.entry.write_line(out, Some(log.status), log.sent));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_escape_client_text_and_name_the_pool() {
        let request = http::Request::builder()
            .uri("/a%20b?x=1")
            .header("user-agent", "agent \"7\"\t")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let mut entry = Entry::new(
            Instant::now(),
            "10.0.0.1:5555".parse().unwrap(),
            &parts,
            Some("a.test"),
        );
        let no_pool = entry.line(Some(404), 0);
        assert!(no_pool.contains("host=\"a.test\" pool=- ms="), "{no_pool}");
        entry.set_pool("default");
        let line = entry.line(Some(200), 12);
        assert!(line.starts_with("10.0.0.1 - - ["), "{line}");
        assert!(
            line.contains("] \"GET /a%20b?x=1 HTTP/1.1\" 200 12 \"-\" \"agent \\\"7\\\"\\x09\" host=\"a.test\" pool=default ms="),
            "{line}"
        );
        let dropped = entry.line(None, 0);
        assert!(dropped.contains("\" - 0 \""), "{dropped}");
    }

    #[test]
    fn timestamps_are_formatted_as_in_the_combined_format() {
        let mut text = String::new();
        push_timestamp(&mut text);
        let again_at = text.len();
        push_timestamp(&mut text);
        let (first, second) = text.split_at(again_at);
        for stamp in [first, second] {
            // 02/Nov/2026:10:00:00 +0000
            assert_eq!(stamp.len(), 26, "{stamp}");
            assert_eq!(&stamp[2..3], "/");
            assert_eq!(&stamp[6..7], "/");
            assert!(stamp.ends_with(" +0000"), "{stamp}");
        }
    }
}
