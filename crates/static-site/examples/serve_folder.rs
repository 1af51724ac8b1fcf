//! Serves a folder over HTTP/1.1 on 127.0.0.1, for measuring the cache hit path with a load generator
//! such as `wrk`:
//!
//! ```text
//! cargo run --release -p static-site --example serve_folder -- FOLDER PORT [WORKER_THREADS]
//! wrk -t1 -c32 -d10s http://127.0.0.1:PORT/1k.txt
//! ```
//!
//! One worker thread (the default) compares with one nginx worker process.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use static_site::{Options, StaticSite};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: serve_folder FOLDER PORT [WORKER_THREADS]";
    let folder = args.next().ok_or(usage)?;
    let port: u16 = args.next().ok_or(usage)?.parse()?;
    let threads: usize = args.next().map_or(Ok(1), |t| t.parse())?;
    let site = Arc::new(StaticSite::new(folder.into(), Options::default())?);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                let site = Arc::clone(&site);
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            let site = Arc::clone(&site);
                            async move {
                                let response = site
                                    .serve(
                                        request.method(),
                                        request.uri().path(),
                                        request.headers(),
                                    )
                                    .await;
                                Ok::<_, Infallible>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
}
