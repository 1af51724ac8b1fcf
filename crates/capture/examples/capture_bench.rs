//! Benchmark of the capture crate, run by `bench/capture.sh`: screenshot latency on a cold browser
//! (a new screenshotter each time, so the launch is included) and on a warm one, and dump time and size
//! (full and mini) of a python3 process holding ~200 MB of touched memory. Prints a markdown table of
//! medians.
//!
//! `capture_bench [rounds]` (default 7).

use std::convert::Infallible;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use capture::{DumpKind, ScreenshotOptions, ScreenshotTarget, Screenshotter, dump};
use http_body_util::Full;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpListener;

/// A page with some text and a tall body, like a small site's home page.
const PAGE: &str = "<!doctype html><html><head><title>bench</title></head>\
<body style=\"font-family:sans-serif;background:#f4f4f4\"><h1>Capture benchmark</h1>\
<p>A paragraph of text to lay out and paint.</p><div style=\"height:2400px;background:linear-gradient(#fff,#39c)\"></div>\
</body></html>";

/// Holds ~200 MB of distinct, touched memory, then waits for stdin to close.
const BIG_PROCESS: &str = "import sys
block = bytes(range(256)) * (200 * 4096)
print('ready', flush=True)
sys.stdin.read()
";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(7);
    let url = serve().await?;
    let target = ScreenshotTarget {
        url,
        map_host: None,
        ignore_certificate_errors: false,
        timeout: Duration::from_secs(60),
    };

    let mut cold = Vec::new();
    let mut png_size = 0;
    for _ in 0..rounds {
        let shooter = Screenshotter::new(ScreenshotOptions::default());
        let started = Instant::now();
        png_size = shooter.capture(&target).await?.len();
        cold.push(started.elapsed());
        shooter.shutdown().await;
    }

    let shooter = Screenshotter::new(ScreenshotOptions::default());
    shooter.capture(&target).await?;
    let mut warm = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        shooter.capture(&target).await?;
        warm.push(started.elapsed());
    }
    shooter.shutdown().await;

    let mut child = tokio::process::Command::new("python3")
        .args(["-c", BIG_PROCESS])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("python3 exited")?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    if stdout.next_line().await?.as_deref() != Some("ready") {
        return Err("python3 did not get ready".into());
    }
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS")?;

    let mut rows = Vec::new();
    for kind in [DumpKind::Full, DumpKind::Mini] {
        let mut written = Vec::new();
        let mut streamed = Vec::new();
        let mut size = 0;
        for _ in 0..rounds {
            let started = Instant::now();
            let file = dump(pid, kind).await?;
            written.push(started.elapsed());
            size = file.len();
            let mut stream = file.into_stream();
            let mut sink = tokio::io::sink();
            tokio::io::copy(&mut stream, &mut sink).await?;
            streamed.push(started.elapsed());
        }
        rows.push((kind, median(&mut written), median(&mut streamed), size));
    }
    // The target must have survived every dump.
    if child.try_wait()?.is_some() {
        return Err("the dumped process died".into());
    }
    let mut rest = String::new();
    drop(child.stdin.take());
    stdout.into_inner().read_to_string(&mut rest).await?;
    child.wait().await?;

    println!("| measure | median of {rounds} |");
    println!("|---|---|");
    println!(
        "| screenshot, cold (launch + page + full-page PNG of {png_size} bytes, 1920 px wide) | {} |",
        ms(median(&mut cold))
    );
    println!(
        "| screenshot, warm (browser reused) | {} |",
        ms(median(&mut warm))
    );
    for (kind, written, streamed, size) in rows {
        println!(
            "| {kind:?} dump of a {} MB RSS python3: written / written + streamed, size | {} / {}, {:.1} MB ({size} bytes) |",
            rss_kib / 1024,
            ms(written),
            ms(streamed),
            size as f64 / 1e6
        );
    }
    Ok(())
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// Serves `PAGE` on 127.0.0.1; returns its URL.
async fn serve() -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        PAGE.as_bytes(),
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(url)
}
