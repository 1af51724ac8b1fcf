//! HTTP/1.1 strictness as RFC 9112 and nginx read it, for requests hyper accepts but a strict
//! server refuses, and an access-log line for the requests hyper refuses itself.
//!
//! Refused before routing, with `400 Bad Request` unless said otherwise, and for HTTP/1 with
//! `Connection: close` (nginx closes the connection after every 400 and 414 too):
//! - an HTTP/1.1 request without `Host` (RFC 9112, section 3.2), any request with more than one
//!   `Host`, or a `Host` that is not `host[:port]` (a space, a slash, an empty port…);
//! - over HTTP/2, a `Host` that names another host than `:authority` (RFC 9113, 8.3.1);
//! - `CONNECT`: the host is no forward proxy (nginx answers it 400 as well);
//! - a request target in a form its method cannot have: `*` other than with `OPTIONS`, an
//!   authority alone (`GET example.com:80`), an absolute URI whose scheme is not http(s);
//! - an HTTP/1 request with both `Transfer-Encoding` and `Content-Length` (RFC 9112, 6.3);
//! - a method longer than [`MAX_METHOD`] bytes (no registered method has more than 17);
//! - a target longer than [`MAX_TARGET`] bytes: `414 URI Too Long`, as nginx does past its 8 KiB
//!   request line buffer.
//!
//! Requests hyper's HTTP/1 parser refuses never reach the service: hyper answers them itself
//! (400, 414, or 431 for a head that is too large) and ends the connection with an error.
//! [`log_connection_error`] turns that error into an access-log line, and [`Guarded`] — a thin
//! wrapper around the connection's IO — rewrites hyper's `431 Request Header Fields Too Large`
//! into `400 Bad Request`, which is what nginx and HTTP.sys answer for an oversized head, and
//! what RFC 9110 (8.6) asks for a `Content-Length` the server cannot represent (hyper reports
//! `Content-Length: 18446744073709551615` as "too large").
//!
//! Rejected requests are logged with a `reason=` field named after the reasons IIS writes in its
//! HTTPERR log (`Hostname`, `Verb`, `URL`, `Header`, `RequestLength`, `BadRequest`).

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode, Version, header};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::access_log::{Entry, ResponseBody};
use crate::host::HostState;

/// The longest method accepted, in bytes.
pub(crate) const MAX_METHOD: usize = 32;
/// The longest request target accepted, in bytes (nginx: its 8 KiB request line buffer).
pub(crate) const MAX_TARGET: usize = 8192;

/// Why a request is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// The status answered.
    pub status: StatusCode,
    /// The reason logged, after IIS's HTTPERR log.
    pub reason: &'static str,
}

const fn bad(reason: &'static str) -> Rejection {
    Rejection {
        status: StatusCode::BAD_REQUEST,
        reason,
    }
}

/// Checks a request before routing; `Err` says how to refuse it.
pub(crate) fn check(parts: &Parts) -> Result<(), Rejection> {
    if parts.method.as_str().len() > MAX_METHOD {
        return Err(bad("Verb"));
    }
    if parts.method == Method::CONNECT {
        return Err(bad("Verb"));
    }
    let target_len = parts.uri.path_and_query().map_or(0, |p| p.as_str().len())
        + parts.uri.authority().map_or(0, |a| a.as_str().len());
    if target_len > MAX_TARGET {
        return Err(Rejection {
            status: StatusCode::URI_TOO_LONG,
            reason: "URL",
        });
    }
    check_target_form(parts)?;
    if parts.version < Version::HTTP_2
        && parts.headers.contains_key(header::TRANSFER_ENCODING)
        && parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        // Both framings: a smuggling attempt or a broken intermediary (RFC 9112, 6.3); hyper
        // would go by Transfer-Encoding, nginx refuses.
        return Err(bad("Header"));
    }
    check_host(parts)
}

fn check_target_form(parts: &Parts) -> Result<(), Rejection> {
    let uri = &parts.uri;
    if let Some(scheme) = uri.scheme_str()
        && !scheme.eq_ignore_ascii_case("http")
        && !scheme.eq_ignore_ascii_case("https")
    {
        return Err(bad("URL"));
    }
    if parts.version < Version::HTTP_2 {
        // http::Uri reads `*` as a path and `example.com:80` as an authority without a path.
        if uri.path() == "*" && parts.method != Method::OPTIONS {
            return Err(bad("URL"));
        }
        if uri.scheme().is_none() && uri.authority().is_some() {
            return Err(bad("URL"));
        }
    }
    Ok(())
}

fn check_host(parts: &Parts) -> Result<(), Rejection> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("Hostname"));
    }
    match first {
        None if parts.version == Version::HTTP_11 => Err(bad("Hostname")),
        None => Ok(()),
        Some(value) => {
            if !valid_host(value.as_bytes()) {
                return Err(bad("Hostname"));
            }
            if parts.version >= Version::HTTP_2
                && let Some(authority) = parts.uri.authority()
                && !authority
                    .as_str()
                    .as_bytes()
                    .eq_ignore_ascii_case(value.as_bytes())
            {
                return Err(bad("Hostname"));
            }
            Ok(())
        }
    }
}

/// `uri-host [":" port]` (RFC 9110, 7.2; RFC 3986, 3.2.2): a registered name of unreserved,
/// percent-encoded and sub-delimiter characters, an IPv4 address, or a bracketed IP literal.
/// Empty is allowed (RFC 9112, 3.2: a target without authority).
fn valid_host(value: &[u8]) -> bool {
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        return match &value[end + 1..] {
            [] => true,
            [b':', port @ ..] => valid_port(port),
            _ => false,
        };
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        }
    };
    let name_ok = host.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
    });
    let port_ok = port.is_none_or(valid_port);
    name_ok && port_ok && !(host.is_empty() && port.is_some())
}

fn valid_port(port: &[u8]) -> bool {
    !port.is_empty() && port.len() <= 5 && port.iter().all(u8::is_ascii_digit)
}

/// The response to a refused request, with its access-log line when the log is on.
pub(crate) fn reject(
    state: &HostState,
    peer: SocketAddr,
    parts: &Parts,
    rejection: Rejection,
) -> Response<ResponseBody> {
    let entry = state.access_log.is_enabled().then(|| {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let mut entry = Entry::new(Instant::now(), peer, parts, host);
        entry.set_reason(rejection.reason);
        entry
    });
    let status = rejection.status;
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if parts.version < Version::HTTP_2 {
        // hyper closes an HTTP/1 connection after a response that says so.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let (head, body) = response.into_parts();
    let body = ResponseBody::new(body, status.as_u16(), entry, &state.access_log, None);
    Response::from_parts(head, body)
}

/// The status hyper answered a request it could not parse with (after [`Guarded`]'s rewrite),
/// and the reason to log; `None` for errors that are no refused request (a closed connection,
/// a timeout, an HTTP/2 protocol error).
pub(crate) fn refused_by_hyper(
    error: &(dyn std::error::Error + 'static),
) -> Option<(u16, &'static str)> {
    let error = error.downcast_ref::<hyper::Error>()?;
    if !error.is_parse() || error.is_parse_version_h2() {
        return None;
    }
    // hyper names the kind only in its message.
    let text = error.to_string();
    Some(if text.contains("URI too long") {
        (414, "URL")
    } else if error.is_parse_too_large() {
        (400, "RequestLength")
    } else if text.contains("method") {
        (400, "Verb")
    } else if text.contains("header") || text.contains("content-length") {
        (400, "Header")
    } else if text.contains("URI") {
        (400, "URL")
    } else {
        (400, "BadRequest")
    })
}

/// Writes the access-log line for a connection that ended with `error`, when it is a request
/// hyper refused and the log is on.
pub(crate) fn log_connection_error(
    state: &HostState,
    peer: SocketAddr,
    started: Instant,
    error: &(dyn std::error::Error + 'static),
) {
    let Some((status, reason)) = refused_by_hyper(error) else {
        return;
    };
    if !state.access_log.is_enabled() {
        return;
    }
    state.access_log.write_with(|out| {
        crate::access_log::write_refused_line(out, peer, started, status, reason)
    });
}

/// hyper's whole answer to a head it found too large.
const HYPER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n";
const ANSWER_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\n";

/// The connection's IO, as hyper sees it: reads pass through; a write that is exactly hyper's own
/// 431 answer (a status line, a few headers, the blank line, nothing else — a response body can
/// never be that whole write) goes out as a 400 with the same headers.
#[derive(Debug)]
pub(crate) struct Guarded<S> {
    inner: S,
    /// The replacement still to write, and the length of the write it stands for.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            pending: None,
        }
    }

    /// The replacement for `write`, when it is hyper's 431 answer.
    fn replacement(write: &[u8]) -> Option<Vec<u8>> {
        if write.len() > 512 || !write.starts_with(HYPER_431) || !write.ends_with(b"\r\n\r\n") {
            return None;
        }
        let headers = &write[HYPER_431.len()..];
        if headers.windows(4).position(|w| w == b"\r\n\r\n") != Some(headers.len() - 4)
            && headers != b"\r\n"
        {
            return None;
        }
        let mut out = Vec::with_capacity(ANSWER_400.len() + headers.len());
        out.extend_from_slice(ANSWER_400);
        out.extend_from_slice(headers);
        Some(out)
    }
}

impl<S: AsyncWrite + Unpin> Guarded<S> {
    /// Writes the pending replacement; `Ready(Ok(n))` with the length it stands for when done.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((bytes, written, stands_for)) = &mut self.pending {
            if *written == bytes.len() {
                let n = *stands_for;
                self.pending = None;
                return Poll::Ready(Ok(n));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => {
                    self.pending = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(0))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            if !buf.starts_with(b"HTTP/1.1 431") {
                return Pin::new(&mut this.inner).poll_write(cx, buf);
            }
            match Self::replacement(buf) {
                Some(bytes) => this.pending = Some((bytes, 0, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        this.poll_pending(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            let first = bufs.iter().find(|b| !b.is_empty());
            let single = bufs.iter().filter(|b| !b.is_empty()).count() == 1;
            match first {
                Some(first) if single && first.starts_with(b"HTTP/1.1 431") => {
                    match Self::replacement(first) {
                        Some(bytes) => this.pending = Some((bytes, 0, first.len())),
                        None => return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
                    }
                }
                _ => return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            }
        }
        this.poll_pending(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending.is_some() {
            std::task::ready!(this.poll_pending(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending.is_some() {
            std::task::ready!(this.poll_pending(cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(raw: &[(&str, &str)], method: &str, uri: &str, version: Version) -> Parts {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(uri)
            .version(version);
        for (name, value) in raw {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn hosts_are_checked_as_rfc_9112_asks() {
        let ok = |headers: &[(&str, &str)]| {
            check(&parts(headers, "GET", "/", Version::HTTP_11)).map_err(|r| r.reason)
        };
        assert_eq!(ok(&[("host", "a.test")]), Ok(()));
        assert_eq!(ok(&[("host", "a.test:8080")]), Ok(()));
        assert_eq!(ok(&[("host", "[::1]:80")]), Ok(()));
        assert_eq!(ok(&[("host", "10.0.0.1")]), Ok(()));
        assert_eq!(ok(&[("host", "")]), Ok(()));
        assert_eq!(ok(&[]), Err("Hostname"));
        assert_eq!(
            ok(&[("host", "a.test"), ("host", "a.test")]),
            Err("Hostname")
        );
        for bad in [
            "a test",
            "a.test/x",
            "a.test:",
            "a.test:80x",
            "[::1",
            "[zz]",
            "a@b",
            ":80",
        ] {
            assert_eq!(ok(&[("host", bad)]), Err("Hostname"), "{bad}");
        }
        // HTTP/1.0 needs no Host.
        assert_eq!(check(&parts(&[], "GET", "/", Version::HTTP_10)), Ok(()));
    }

    #[test]
    fn over_http2_host_must_agree_with_authority() {
        let h2 = |host: &str| {
            check(&parts(
                &[("host", host)],
                "GET",
                "http://a.test/",
                Version::HTTP_2,
            ))
            .map_err(|r| r.reason)
        };
        assert_eq!(h2("A.test"), Ok(()));
        assert_eq!(h2("b.test"), Err("Hostname"));
        let none = parts(&[], "GET", "http://a.test/", Version::HTTP_2);
        assert_eq!(check(&none), Ok(()));
    }

    #[test]
    fn methods_and_targets_are_checked() {
        let host = [("host", "a.test")];
        let reason = |method: &str, uri: &str| {
            check(&parts(&host, method, uri, Version::HTTP_11))
                .map_err(|r| (r.status.as_u16(), r.reason))
        };
        assert_eq!(reason("CONNECT", "a.test:443"), Err((400, "Verb")));
        assert_eq!(reason(&"A".repeat(33), "/"), Err((400, "Verb")));
        assert_eq!(reason(&"A".repeat(32), "/"), Ok(()));
        assert_eq!(
            reason("GET", &format!("/{}", "a".repeat(MAX_TARGET))),
            Err((414, "URL"))
        );
        assert_eq!(reason("GET", "*"), Err((400, "URL")));
        assert_eq!(reason("OPTIONS", "*"), Ok(()));
        assert_eq!(reason("GET", "a.test:80"), Err((400, "URL")));
        assert_eq!(reason("GET", "ftp://a.test/x"), Err((400, "URL")));
        assert_eq!(reason("GET", "HTTP://a.test/x"), Ok(()));
        let both = parts(
            &[
                ("host", "a"),
                ("content-length", "4"),
                ("transfer-encoding", "chunked"),
            ],
            "POST",
            "/",
            Version::HTTP_11,
        );
        assert_eq!(check(&both).map_err(|r| r.reason), Err("Header"));
    }

    #[test]
    fn only_hypers_whole_431_answer_is_rewritten() {
        let answer = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Fri, 04 Dec 2026 22:00:00 GMT\r\n\r\n";
        let rewritten = Guarded::<()>::replacement(answer).unwrap();
        assert!(rewritten.starts_with(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"));
        assert!(rewritten.ends_with(b"GMT\r\n\r\n"));
        // A head with a body after it, or a body that merely starts so, is left alone.
        let mut with_body = answer.to_vec();
        with_body.extend_from_slice(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n");
        assert!(Guarded::<()>::replacement(&with_body).is_none());
        assert!(
            Guarded::<()>::replacement(b"HTTP/1.1 431 Request Header Fields Too Large\r\nx")
                .is_none()
        );
    }
}
