//! The site behind a real hyper server on 127.0.0.1:0, mounted at the alias `/static`, asked by a real
//! hyper client over keep-alive connections.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::TestSite;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use static_site::{Body, Options, StaticSite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

const ALIAS: &str = "/static";

/// A server task; dropping it aborts the accept loop, which drops (and so aborts) every connection.
struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn route(site: &StaticSite, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    match path.strip_prefix(ALIAS) {
        Some(remainder) if remainder.is_empty() || remainder.starts_with('/') => {
            site.serve(request.method(), remainder, request.headers())
                .await
        }
        _ => {
            let mut response = Response::new(empty());
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

async fn start(site: Arc<StaticSite>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            stream.set_nodelay(true).expect("TCP_NODELAY");
            let site = Arc::clone(&site);
            connections.spawn(async move {
                let service = service_fn(move |request| {
                    let site = Arc::clone(&site);
                    async move { Ok::<_, Infallible>(route(&site, request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Server { addr, task }
}

/// A keep-alive client connection; its driver task is aborted on drop.
struct Client {
    sender: SendRequest<Empty<Bytes>>,
    connection: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        Client { sender, connection }
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "test.local");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::new()).expect("request");
        self.sender.ready().await.expect("connection ready");
        let response = self.sender.send_request(request).await.expect("response");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (parts.status, parts.headers, body)
    }
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("<missing>")
}

#[tokio::test]
async fn files_are_served_over_http_keep_alive() {
    let options = Options {
        cache_max_file_size: 64 * 1024,
        ..Options::default()
    };
    let site = TestSite::with_options(options.clone());
    site.write("index.html", "<h1>home</h1>");
    site.write("kb.txt", vec![b'k'; 1024]);
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 253) as u8).collect();
    site.write("big.bin", &big);
    // The server gets its own site on the same folder, as the host would hold one.
    let served = StaticSite::new(site.root(), options).expect("site");
    let server = start(Arc::new(served)).await;
    let mut client = Client::connect(server.addr).await;

    for _ in 0..3 {
        let (status, headers, body) = client.send(Method::GET, "/static/kb.txt", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), 1024);
        assert_eq!(header(&headers, "content-length"), "1024");
        assert_ne!(header(&headers, "date"), "<missing>", "hyper adds Date");
    }

    let (status, headers, body) = client.send(Method::HEAD, "/static/kb.txt", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, "content-length"),
        "1024",
        "HEAD keeps the length"
    );
    assert!(body.is_empty());

    let (status, headers, _) = client.send(Method::GET, "/static", &[]).await;
    assert_eq!(status, StatusCode::OK, "an empty remainder is the root");
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");

    let (status, headers, body) = client.send(Method::GET, "/static/big.bin", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-length"), big.len().to_string());
    assert!(body == big, "streamed body differs");

    let (status, headers, body) = client
        .send(
            Method::GET,
            "/static/big.bin",
            &[("range", "bytes=1000000-1999999")],
        )
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&headers, "content-range"),
        format!("bytes 1000000-1999999/{}", big.len())
    );
    assert!(body == big[1_000_000..2_000_000]);

    // The connection is still usable after a streamed body.
    let (status, headers, _) = client.send(Method::GET, "/static/kb.txt", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let etag = header(&headers, "etag").to_owned();
    let (status, _, body) = client
        .send(Method::GET, "/static/kb.txt", &[("if-none-match", &etag)])
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());

    site.write("kb.txt", "changed");
    site.settle().await;
    let (_, _, body) = client.send(Method::GET, "/static/kb.txt", &[]).await;
    assert_eq!(&body[..], b"changed");

    let (status, _, _) = client.send(Method::GET, "/static/%2e%2e/secret", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, headers, _) = client.send(Method::POST, "/static/kb.txt", &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&headers, "allow"), "GET, HEAD");
}
