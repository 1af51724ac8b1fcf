//! Access log lines, one per request, written when the response is finished (or abandoned).
//!
//! Format, the combined log format plus three fields:
//! ```text
//! 127.0.0.1 - - [02/Nov/2026:10:00:00 +0000] "GET /a?b HTTP/1.1" 200 1234 "referer" "agent" host="a.test" pool=default ms=3
//! ```
//! Bytes are the response body bytes sent. A request refused at TCP level (a stopped pool
//! with `service_unavailable_response = TcpLevel`) is logged with status `-`. `pool=-` means
//! no application matched. Quotes, backslashes and control characters from the client are
//! escaped so a line stays one line.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
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
    /// Formatted `"referer" "agent" host="…"`.
    tail: String,
    pool: Option<String>,
}

impl Entry {
    /// Captures the request side of a log line.
    pub fn new(started: Instant, peer: SocketAddr, parts: &Parts, host: Option<&str>) -> Self {
        let target = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let head = format!(
            "{} - - [{}] \"{} {} {:?}\"",
            peer.ip(),
            timestamp(),
            escape(parts.method.as_str()),
            escape(target),
            parts.version
        );
        let header = |name: http::header::HeaderName| {
            parts
                .headers
                .get(name)
                .map(|v| escape(&String::from_utf8_lossy(v.as_bytes())))
                .unwrap_or_else(|| "-".to_string())
        };
        let tail = format!(
            "\"{}\" \"{}\" host=\"{}\"",
            header(http::header::REFERER),
            header(http::header::USER_AGENT),
            escape(host.unwrap_or("-"))
        );
        Self {
            started,
            head,
            tail,
            pool: None,
        }
    }

    /// Records the pool that served the request.
    pub fn set_pool(&mut self, pool: &str) {
        self.pool = Some(pool.to_string());
    }

    /// The finished line.
    pub fn line(&self, status: Option<u16>, bytes: u64) -> String {
        let status = status.map_or_else(|| "-".to_string(), |s| s.to_string());
        format!(
            "{} {} {} {} pool={} ms={}",
            self.head,
            status,
            bytes,
            self.tail,
            self.pool.as_deref().unwrap_or("-"),
            self.started.elapsed().as_millis()
        )
    }
}

fn timestamp() -> String {
    let format = time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
    );
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_else(|_| "-".to_string())
}

/// Escapes what would break a quoted field or the line.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A response body that counts what it sends and writes the access log line when dropped,
/// which is when the response is complete or the connection went away. It also holds the
/// pool's in-flight guard, so a request counts until its last byte is out.
pub(crate) struct LoggedBody {
    inner: Body,
    sent: u64,
    status: u16,
    entry: Entry,
    log: Arc<LogSink>,
    _in_flight: Option<InFlight>,
}

impl LoggedBody {
    /// Wraps `inner`, the body of a response with `status`.
    pub fn new(
        inner: Body,
        status: u16,
        entry: Entry,
        log: Arc<LogSink>,
        in_flight: Option<InFlight>,
    ) -> Self {
        Self {
            inner,
            sent: 0,
            status,
            entry,
            log,
            _in_flight: in_flight,
        }
    }
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.sent += data.len() as u64;
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

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.log
            .write_line(self.entry.line(Some(self.status), self.sent));
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
}
