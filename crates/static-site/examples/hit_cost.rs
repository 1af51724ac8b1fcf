//! Measures the cost of one cache hit of `StaticSite::serve`, in process (no sockets), so changes to
//! the hit path can be compared without network noise:
//!
//! ```text
//! cargo run --release -p static-site --example hit_cost -- FOLDER /1k.txt
//! ```

use std::time::Instant;

use http::{HeaderMap, HeaderValue, Method};
use http_body_util::BodyExt;
use static_site::{Options, StaticSite};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: hit_cost FOLDER REMAINDER";
    let folder = args.next().ok_or(usage)?;
    let remainder = args.next().ok_or(usage)?;
    let site = StaticSite::new(folder.into(), Options::default())?;
    let mut headers = HeaderMap::new();
    headers.insert(
        "accept-encoding",
        HeaderValue::from_static("gzip, deflate, br"),
    );
    headers.insert("user-agent", HeaderValue::from_static("hit_cost"));
    let rounds = 2_000_000u32;
    for round in 0..3 {
        let started = Instant::now();
        let mut bytes = 0usize;
        for _ in 0..rounds {
            let response = site.serve(&Method::GET, &remainder, &headers).await;
            // Polls the body as hyper would (one frame for a cached file).
            bytes += response.into_body().frame().await.map_or(0, |frame| {
                frame
                    .ok()
                    .and_then(|f| f.into_data().ok())
                    .map_or(0, |d| d.len())
            });
        }
        let elapsed = started.elapsed();
        println!(
            "round {round}: {:.0} ns per hit ({bytes} bytes), {:?}",
            elapsed.as_nanos() as f64 / f64::from(rounds),
            site.cache_stats()
        );
    }
    Ok(())
}
