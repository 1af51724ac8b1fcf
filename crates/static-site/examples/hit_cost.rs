//! Measures the cost of one cache hit of `StaticSite::serve`, in process (no sockets), so changes to
//! the hit path can be compared without network noise. With THREADS > 1 the threads hit the same
//! file at once, which shows contention on the cache's shared state:
//!
//! ```text
//! cargo run --release -p static-site --example hit_cost -- FOLDER /1k.txt [THREADS]
//! ```

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Method};
use http_body_util::BodyExt;
use static_site::{Options, StaticSite};

const ROUNDS: u32 = 1_000_000;

async fn hit_loop(site: Arc<StaticSite>, remainder: String) -> usize {
    let mut headers = HeaderMap::new();
    headers.insert(
        "accept-encoding",
        HeaderValue::from_static("gzip, deflate, br"),
    );
    headers.insert("user-agent", HeaderValue::from_static("hit_cost"));
    let mut bytes = 0;
    for _ in 0..ROUNDS {
        let response = site.serve(&Method::GET, &remainder, &headers).await;
        // Polls the body as hyper would (one frame for a cached file).
        if let Some(Ok(frame)) = response.into_body().frame().await {
            bytes += frame.into_data().map_or(0, |data| data.len());
        }
    }
    bytes
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: hit_cost FOLDER REMAINDER [THREADS]";
    let folder = args.next().ok_or(usage)?;
    let remainder = args.next().ok_or(usage)?;
    let threads: usize = args.next().map_or(Ok(1), |t| t.parse())?;
    let site = Arc::new(StaticSite::new(folder.into(), Options::default())?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .build()?;
    for round in 0..3 {
        let started = Instant::now();
        let bytes: usize = runtime.block_on(async {
            let tasks: Vec<_> = (0..threads)
                .map(|_| tokio::spawn(hit_loop(Arc::clone(&site), remainder.clone())))
                .collect();
            let mut total = 0;
            for task in tasks {
                total += task.await.unwrap_or(0);
            }
            total
        });
        let elapsed = started.elapsed();
        let hits = f64::from(ROUNDS) * threads as f64;
        println!(
            "round {round}: {:.0} ns per hit per thread, {:.0} hits/s in all ({bytes} bytes)",
            elapsed.as_nanos() as f64 * threads as f64 / hits,
            hits / elapsed.as_secs_f64(),
        );
    }
    println!("{:?}", site.cache_stats());
    Ok(())
}
