//! HTTP/1.1 strictness over real sockets with raw request bytes: what RFC 9112 and nginx refuse
//! is refused (no `Host`, two `Host`s, a `Host` with a space, `CONNECT`, an overlong method or
//! target, an absurd `Content-Length`, an oversized head), the connection is closed after the
//! error, and every refused request — also those hyper refuses before the host's service runs —
//! gets an access-log line with its status and reason.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The whole answer to `request` and whether the server closed the connection after it (read
/// until EOF, or until nothing more came for a while on a connection kept open).
async fn exchange(addr: SocketAddr, request: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // A refused head may be answered before the client finished sending it; the rest then hits
    // a closed socket, which is no failure of the test.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        // Once a complete answer is in, a connection kept open stays silent: waiting a little
        // for EOF tells the two apart. Before that, the full timeout applies.
        let complete = answer.windows(4).any(|w| w == b"\r\n\r\n");
        let wait = if complete {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        };
        match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => {
                assert!(complete, "no answer within 10 s");
                break false;
            }
        }
    };
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or_default()
}

/// A host whose access log is a regular file; returns it with the log's path.
async fn logged_host(site: &mut Site) -> (Running, std::path::PathBuf) {
    let log = site.path("access.log");
    site.spec.stdout_path = log.clone();
    (start(site.spec.clone()).await, log)
}

/// Waits until the access log holds a line containing every one of `parts`.
async fn logged(log: &std::path::Path, parts: &[&str]) -> String {
    let mut text = String::new();
    let found = eventually(200, || {
        text = std::fs::read_to_string(log).unwrap_or_default();
        let hit = text
            .lines()
            .any(|line| parts.iter().all(|p| line.contains(p)));
        async move { hit }
    })
    .await;
    assert!(found, "no line with {parts:?} in the access log:\n{text}");
    text
}

#[tokio::test]
async fn host_header_problems_answer_400_and_close() {
    let mut site = Site::new();
    let (host, log) = logged_host(&mut site).await;
    let addr = host.addr(0);

    let cases: [(&str, &[u8]); 3] = [
        ("no host", b"GET /index.html HTTP/1.1\r\n\r\n"),
        (
            "two hosts",
            b"GET /index.html HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ),
        (
            "host with a space",
            b"GET /index.html HTTP/1.1\r\nHost: a b\r\n\r\n",
        ),
    ];
    for (name, request) in cases {
        let (answer, closed) = exchange(addr, request).await;
        assert_eq!(status_line(&answer), "HTTP/1.1 400 Bad Request", "{name}");
        assert!(closed, "{name}: connection left open");
    }
    logged(
        &log,
        &["\"GET /index.html HTTP/1.1\" 400 ", "reason=Hostname"],
    )
    .await;

    // HTTP/1.0 may omit Host; a good request keeps its connection.
    let (answer, _) = exchange(addr, b"GET /index.html HTTP/1.0\r\n\r\n").await;
    assert!(status_line(&answer).ends_with(" 200 OK"), "{answer}");
    let (answer, closed) = exchange(addr, b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(status_line(&answer), "HTTP/1.1 200 OK");
    assert!(!closed, "a good request lost its keep-alive connection");
    host.stop().await;
}

#[tokio::test]
async fn connect_and_overlong_methods_and_targets_are_errors_that_close() {
    let mut site = Site::new();
    let (host, log) = logged_host(&mut site).await;
    let addr = host.addr(0);

    let (answer, closed) = exchange(
        addr,
        b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
    )
    .await;
    assert_eq!(status_line(&answer), "HTTP/1.1 400 Bad Request");
    assert!(
        !answer.to_ascii_lowercase().contains("location:"),
        "{answer}"
    );
    assert!(closed);

    let long_method = format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", "A".repeat(10_000));
    let (answer, closed) = exchange(addr, long_method.as_bytes()).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 400 Bad Request");
    assert!(closed, "an overlong method left the connection open");

    // Over our limit but under hyper's: the host's own 414.
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    let (answer, closed) = exchange(addr, long_target.as_bytes()).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 414 URI Too Long");
    assert!(closed);
    // Over hyper's limit: hyper's own 414, logged all the same.
    let huge_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(70_000));
    let (answer, closed) = exchange(addr, huge_target.as_bytes()).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 414 URI Too Long");
    assert!(closed);

    logged(
        &log,
        &["\"CONNECT evil.example:443 HTTP/1.1\" 400 ", "reason=Verb"],
    )
    .await;
    logged(&log, &["\"AAAAAAAA", " 400 ", "reason=Verb"]).await;
    logged(&log, &["\"GET /aaaa", " 414 ", "reason=URL"]).await;
    logged(&log, &["\"-\" 414 0 ", "reason=URL"]).await;
    host.stop().await;
}

#[tokio::test]
async fn what_hyper_refuses_is_400_and_logged() {
    let mut site = Site::new();
    let (host, log) = logged_host(&mut site).await;
    let addr = host.addr(0);

    let absurd =
        b"POST /index.html HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n";
    let (answer, closed) = exchange(addr, absurd).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 400 Bad Request", "{answer}");
    assert!(closed);

    let overflow =
        b"POST /index.html HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n";
    let (answer, closed) = exchange(addr, overflow).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 400 Bad Request", "{answer}");
    assert!(closed);

    let huge_head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(1 << 20)
    );
    let (answer, closed) = exchange(addr, huge_head.as_bytes()).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 400 Bad Request", "{answer}");
    assert!(closed);

    let (answer, closed) = exchange(addr, b"GET / HTTP/1.1\r\nHost a\r\n\r\n").await;
    assert_eq!(status_line(&answer), "HTTP/1.1 400 Bad Request", "{answer}");
    assert!(closed);

    // The line is written when hyper's connection ends, which may be just after the client saw
    // the connection close.
    let mut text = String::new();
    let four = eventually(200, || {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        let refused = text.lines().filter(|l| l.contains("\"-\" 400 0 ")).count();
        async move { refused == 4 }
    })
    .await;
    assert!(four, "{text}");
    assert_eq!(text.matches("reason=RequestLength").count(), 2, "{text}");
    assert_eq!(text.matches("reason=Header").count(), 2, "{text}");
    host.stop().await;
}

#[tokio::test]
async fn refused_requests_are_not_logged_when_the_log_is_off() {
    let site = Site::new();
    assert_eq!(site.spec.stdout_path, std::path::Path::new("/dev/null"));
    let host = start(site.spec.clone()).await;
    let (answer, _) = exchange(host.addr(0), b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(status_line(&answer), "HTTP/1.1 400 Bad Request");
    assert!(!site.path("access.log").exists());
    host.stop().await;
}

#[tokio::test]
async fn both_framings_are_refused_in_either_order() {
    let mut site = Site::new();
    let (host, log) = logged_host(&mut site).await;
    let addr = host.addr(0);
    for raw in [
        &b"POST /index.html HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"POST /index.html HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    ] {
        let (answer, closed) = exchange(addr, raw).await;
        assert_eq!(status_line(&answer), "HTTP/1.1 400 Bad Request", "{answer}");
        assert!(closed);
        assert!(!answer.contains("HTTP/1.1 404"), "{answer}");
    }
    logged(&log, &["\"-\" 400 0 ", "reason=Header"]).await;
    host.stop().await;
}
