//! Screenshots of real pages served by a small hyper server on 127.0.0.1, taken by the system Chromium.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use capture::{CaptureError, ScreenshotOptions, ScreenshotTarget, Screenshotter};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

/// The background of the test pages, and the colour of "this is the right host".
const GREEN: [u8; 3] = [0x0c, 0xc8, 0x22];
/// The colour of "wrong host".
const RED: [u8; 3] = [0xd0, 0x10, 0x10];
/// Height of the tall page in CSS pixels.
const TALL: u32 = 3000;

/// What the test server saw, and the gate that holds `/slow/*` requests.
#[derive(Default)]
struct Seen {
    /// Paths of `/slow/*` and `/hang` requests as they arrive.
    arrivals: Option<mpsc::UnboundedSender<String>>,
    /// Released permits let held `/slow/*` requests answer.
    gate: Option<Arc<Semaphore>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Told when the connection of a `/hang` request went away.
    hang_closed: Option<mpsc::UnboundedSender<()>>,
}

struct Server {
    addr: SocketAddr,
    arrivals: mpsc::UnboundedReceiver<String>,
    hang_closed: mpsc::UnboundedReceiver<()>,
    gate: Arc<Semaphore>,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn html(colour: [u8; 3], height: u32) -> String {
    let [r, g, b] = colour;
    format!(
        "<!doctype html><html style=\"margin:0;background:rgb({r},{g},{b})\">\
         <body style=\"margin:0;height:{height}px\"></body></html>"
    )
}

fn page(body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// Tells the test when a `/hang` request's future is dropped, i.e. its connection closed.
struct HangGuard(Option<mpsc::UnboundedSender<()>>);

impl Drop for HangGuard {
    fn drop(&mut self) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(());
        }
    }
}

/// In-flight accounting for `/slow/*` requests.
struct InFlight(Arc<Seen>);

impl InFlight {
    fn enter(seen: Arc<Seen>) -> Self {
        let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(seen)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    seen: Arc<Seen>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_string();
    let host = request
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if path == "/tall" {
        return Ok(page(html(GREEN, TALL)));
    }
    if let Some(expected) = path.strip_prefix("/host/") {
        // Green only when the browser asked for the mapped name (the Host header keeps the port).
        let right = host.split(':').next() == Some(expected);
        return Ok(page(html(if right { GREEN } else { RED }, 200)));
    }
    if path == "/hang" {
        let _guard = HangGuard(seen.hang_closed.clone());
        if let Some(tx) = &seen.arrivals {
            let _ = tx.send(path.clone());
        }
        std::future::pending::<()>().await;
    }
    if path.starts_with("/slow/") {
        let _in_flight = InFlight::enter(Arc::clone(&seen));
        if let Some(tx) = &seen.arrivals {
            let _ = tx.send(path);
        }
        if let Some(gate) = &seen.gate {
            gate.acquire().await.unwrap().forget();
        }
        return Ok(page(html(GREEN, 100)));
    }
    Ok(Response::builder()
        .status(404)
        .body(Full::new(Bytes::new()))
        .unwrap())
}

async fn server() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrivals_tx, arrivals) = mpsc::unbounded_channel();
    let (hang_tx, hang_closed) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let seen = Arc::new(Seen {
        arrivals: Some(arrivals_tx),
        gate: Some(Arc::clone(&gate)),
        hang_closed: Some(hang_tx),
        ..Seen::default()
    });
    let shared = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let seen = Arc::clone(&shared);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(Arc::clone(&seen), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Server {
        addr,
        arrivals,
        hang_closed,
        gate,
        seen,
        task,
    }
}

fn target(url: String) -> ScreenshotTarget {
    ScreenshotTarget {
        url,
        map_host: None,
        ignore_certificate_errors: false,
        timeout: Duration::from_secs(30),
    }
}

/// Width, height and RGB pixels of a PNG.
struct Image {
    width: u32,
    height: u32,
    channels: usize,
    data: Vec<u8>,
}

impl Image {
    fn decode(png_bytes: &[u8]) -> Self {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut data = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut data).unwrap();
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        let channels = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => panic!("unexpected PNG colour type {other:?}"),
        };
        Self {
            width: info.width,
            height: info.height,
            channels,
            data,
        }
    }

    fn rgb(&self, x: u32, y: u32) -> [u8; 3] {
        let at = (y as usize * self.width as usize + x as usize) * self.channels;
        [self.data[at], self.data[at + 1], self.data[at + 2]]
    }
}

/// The folder below which a running browser writes everything: the parent of its `--user-data-dir`,
/// also holding its TMPDIR (where Chromium puts shared-memory folders) and HOME.
fn browser_root(pid: u32) -> PathBuf {
    let arg = |file: &str, prefix: &str| -> PathBuf {
        let bytes = std::fs::read(format!("/proc/{pid}/{file}")).unwrap();
        bytes
            .split(|b| *b == 0)
            .filter_map(|arg| std::str::from_utf8(arg).ok())
            .find_map(|arg| arg.strip_prefix(prefix))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("browser {pid} has {prefix} in its {file}"))
    };
    let root = arg("cmdline", "--user-data-dir=")
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(arg("environ", "TMPDIR=").starts_with(&root));
    assert!(arg("environ", "HOME=").starts_with(&root));
    root
}

/// Whether a pid is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
        .is_some_and(|zombie| !zombie)
}

/// A screenshotter; dropping it (also when a test fails) kills its browser and removes the profile.
fn shooter(max_concurrent: usize) -> Screenshotter {
    Screenshotter::new(ScreenshotOptions {
        max_concurrent,
        ..ScreenshotOptions::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_page_png_is_viewport_wide_page_tall_in_the_page_colour() {
    let server = server().await;
    let shot = shooter(2);
    let png = shot
        .capture(&target(format!("http://{}/tall", server.addr)))
        .await
        .unwrap();
    let image = Image::decode(&png);
    assert_eq!(image.width, 1920);
    assert_eq!(
        image.height, TALL,
        "the whole page, beyond the 1080 px viewport"
    );
    assert_eq!(image.rgb(10, 10), GREEN);
    assert_eq!(image.rgb(1900, 1500), GREEN);
    assert_eq!(
        image.rgb(960, TALL - 5),
        GREEN,
        "below the viewport is rendered too"
    );
    shot.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapped_hostnames_reach_the_local_site_and_the_mapping_set_only_grows() {
    let server = server().await;
    let shot = shooter(2);
    let port = server.addr.port();
    let mapped = |host: &str| ScreenshotTarget {
        map_host: Some(host.to_string()),
        ..target(format!("http://{host}:{port}/host/{host}"))
    };

    let png = shot.capture(&mapped("shop.capture.test")).await.unwrap();
    assert_eq!(Image::decode(&png).rgb(5, 5), GREEN);
    let first = shot.browser_pid().await.unwrap();

    // A new name needs a browser launched with it mapped too.
    let png = shot.capture(&mapped("blog.capture.test")).await.unwrap();
    assert_eq!(Image::decode(&png).rgb(5, 5), GREEN);
    let second = shot.browser_pid().await.unwrap();
    assert_ne!(first, second);

    // Both names are mapped now: going back to the first one needs no relaunch.
    let png = shot.capture(&mapped("shop.capture.test")).await.unwrap();
    assert_eq!(Image::decode(&png).rgb(5, 5), GREEN);
    assert_eq!(shot.browser_pid().await, Some(second));

    // The replaced browser was closed once its pages were done.
    shot.shutdown().await;
    assert!(!alive(first));
    assert!(!alive(second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_is_reported_and_the_page_is_closed() {
    let mut server = server().await;
    let shot = shooter(2);
    let tall = target(format!("http://{}/tall", server.addr));
    // Launch first, so that the short timeout below is spent waiting for the page, not the browser.
    shot.capture(&tall).await.unwrap();
    let hanging = ScreenshotTarget {
        timeout: Duration::from_secs(4),
        ..target(format!("http://{}/hang", server.addr))
    };
    let started = Instant::now();
    let result = shot.capture(&hanging).await;
    assert!(matches!(result, Err(CaptureError::Timeout)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let arrival = tokio::time::timeout(Duration::from_secs(5), server.arrivals.recv()).await;
    assert_eq!(
        arrival.ok().flatten().as_deref(),
        Some("/hang"),
        "the page asked for /hang"
    );
    // Closing the page cancels its request: the server sees the connection go.
    tokio::time::timeout(Duration::from_secs(10), server.hang_closed.recv())
        .await
        .expect("the hanging request's connection is closed after the timeout");
    // The browser is still usable.
    let png = shot.capture(&tall).await.unwrap();
    assert_eq!(Image::decode(&png).rgb(5, 5), GREEN);
    shot.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_requests_with_two_permits_open_at_most_two_pages() {
    let mut server = server().await;
    let shot = shooter(2);
    let mut captures = Vec::new();
    for n in 0..3 {
        let shooter = shot.clone();
        let target = target(format!("http://{}/slow/{n}", server.addr));
        captures.push(tokio::spawn(async move { shooter.capture(&target).await }));
    }
    let mut arrived = vec![
        server.arrivals.recv().await.unwrap(),
        server.arrivals.recv().await.unwrap(),
    ];
    // With two pages held open by the server, the third request must wait for a permit.
    let third = tokio::time::timeout(Duration::from_millis(1500), server.arrivals.recv()).await;
    assert!(
        third.is_err(),
        "a third page was opened while two were busy: {third:?}"
    );
    assert_eq!(server.seen.in_flight.load(Ordering::SeqCst), 2);
    server.gate.add_permits(1);
    arrived.push(server.arrivals.recv().await.unwrap());
    server.gate.add_permits(2);
    for capture in captures {
        let png = capture.await.unwrap().unwrap();
        assert_eq!(Image::decode(&png).rgb(5, 5), GREEN);
    }
    arrived.sort();
    assert_eq!(arrived, ["/slow/0", "/slow/1", "/slow/2"]);
    assert_eq!(server.seen.max_in_flight.load(Ordering::SeqCst), 2);
    shot.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_is_reused_then_relaunched_after_it_died() {
    let server = server().await;
    let shot = shooter(2);
    let tall = target(format!("http://{}/tall", server.addr));
    assert_eq!(
        shot.browser_pid().await,
        None,
        "nothing is launched before the first capture"
    );

    let cold = Instant::now();
    shot.capture(&tall).await.unwrap();
    let cold = cold.elapsed();
    let pid = shot.browser_pid().await.unwrap();
    let killed_root = browser_root(pid);
    let warm = Instant::now();
    shot.capture(&tall).await.unwrap();
    let warm = warm.elapsed();
    assert_eq!(
        shot.browser_pid().await,
        Some(pid),
        "the second shot reuses the browser"
    );
    eprintln!("cold shot {cold:?}, warm shot {warm:?}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let png = shot.capture(&tall).await.unwrap();
    assert_eq!(Image::decode(&png).rgb(5, 5), GREEN);
    let relaunched = shot.browser_pid().await.unwrap();
    assert_ne!(relaunched, pid);
    shot.shutdown().await;
    assert!(
        !killed_root.exists(),
        "the killed browser's folder {} is removed",
        killed_root.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_browser_and_removes_its_profile() {
    let server = server().await;
    let shot = shooter(2);
    shot.capture(&target(format!("http://{}/tall", server.addr)))
        .await
        .unwrap();
    let pid = shot.browser_pid().await.unwrap();
    let root = browser_root(pid);
    assert!(root.join("profile").is_dir());
    shot.shutdown().await;
    assert!(!alive(pid), "browser {pid} still runs after shutdown");
    assert!(
        !root.exists(),
        "browser folder {} left behind",
        root.display()
    );
    assert_eq!(shot.browser_pid().await, None);
}

#[tokio::test]
async fn missing_browser_names_the_package() {
    let shot = Screenshotter::new(ScreenshotOptions {
        chromium_path: Some(PathBuf::from("/nonexistent/chromium")),
        ..ScreenshotOptions::default()
    });
    let result = shot.capture(&target("http://127.0.0.1/".to_string())).await;
    assert!(
        matches!(
            result,
            Err(CaptureError::BrowserMissing {
                package: "chromium"
            })
        ),
        "{result:?}"
    );
}

/// An https server with a fresh self-signed certificate for `name`, answering every request with a
/// green page.
async fn tls_server(name: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let certified = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A browser that rejects the certificate aborts the handshake: nothing to serve.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(page(html(GREEN, 200)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_https_is_shot_only_when_certificate_errors_are_ignored() {
    let name = "secure.capture.test";
    let (addr, server) = tls_server(name).await;
    let shot = shooter(2);
    let secure = |ignore_certificate_errors| ScreenshotTarget {
        map_host: Some(name.to_string()),
        ignore_certificate_errors,
        ..target(format!("https://{name}:{}/", addr.port()))
    };
    let strict = shot.capture(&secure(false)).await;
    assert!(
        matches!(&strict, Err(CaptureError::Failed(e)) if e.contains("CERT")),
        "{strict:?}"
    );
    let png = shot.capture(&secure(true)).await.unwrap();
    assert_eq!(Image::decode(&png).rgb(5, 5), GREEN);
    // Ignoring errors was for that request's page only.
    let strict = shot.capture(&secure(false)).await;
    assert!(
        matches!(&strict, Err(CaptureError::Failed(_))),
        "{strict:?}"
    );
    shot.shutdown().await;
    server.abort();
}
