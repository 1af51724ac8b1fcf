//! Worker processes behind the host in-process, with a real worker program
//! (`programs/worker.py`, run by python3): on-demand and always-running starts, status,
//! idle timeout, periodic restart, start time limit, rapid-fail protection, the shutdown
//! limit, worker output, and no worker left when the host stops.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use control::{ApplicationKind, Command, PoolState, ProcessSpec, StartMode};
use http::StatusCode;

const WORKER_PY: &str = include_str!("programs/worker.py");

/// A site whose root application is `programs/worker.py` in `mode`.
fn worker_site(mode: &str) -> Site {
    let mut site = Site::new();
    site.write("app/worker.py", WORKER_PY);
    site.spec.applications[0].process = Some(ProcessSpec {
        command: "python3".into(),
        args: vec!["worker.py".into(), mode.into()],
        env: BTreeMap::from([("FROM_JOB".to_string(), "yes".to_string())]),
    });
    site.spec.env = BTreeMap::from([("NOMAD_TASK_NAME".to_string(), "web".to_string())]);
    site.spec.pools[0].start_time_limit = Duration::from_secs(20);
    site.spec.pools[0].shutdown_time_limit = Duration::from_secs(5);
    site
}

fn pool_status(status: &control::HostStatus) -> &control::PoolStatus {
    &status.pools[0]
}

fn alive(pid: u32) -> bool {
    // A zombie is dead for our purposes: its worker is no longer serving.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Waits until the pool reports a running worker and returns its pid.
async fn running_worker(host: &Running) -> u32 {
    for _ in 0..400 {
        let status = host.client.status().await.unwrap();
        if let Some(pid) = pool_status(&status).worker_pids.first() {
            return *pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no worker came up");
}

async fn wait_gone(pid: u32) -> bool {
    eventually(400, || async move { !alive(pid) }).await
}

#[tokio::test]
async fn an_on_demand_worker_starts_on_the_first_request() {
    let site = worker_site("serve");
    let host = start(site.spec.clone()).await;
    let before = pool_status(&host.status).clone();
    assert!(before.worker_pids.is_empty(), "{before:?}");
    assert!(!before.is_static);
    assert_eq!(host.status.applications[0].kind, ApplicationKind::Process);
    assert_eq!(host.status.protocol, control::PROTOCOL_VERSION);

    // The first request waits for the worker.
    let _ = get(host.addr(0), "localhost", "/pid").await.unwrap();
    let status = host.client.status().await.unwrap();
    let pool = pool_status(&status);
    assert_eq!(pool.worker_pids.len(), 1, "{pool:?}");
    assert_eq!(pool.worker_starts, 1);
    assert_eq!(pool.worker_failures, 0);
    let worker = &pool.workers[0];
    assert_eq!(worker.application, "/");
    assert!(alive(worker.pid));

    // The worker got the task's environment, the job's and PORT; it runs in the app folder.
    let environment = worker_environment(worker.pid);
    assert_eq!(
        environment.get("NOMAD_TASK_NAME").map(String::as_str),
        Some("web")
    );
    assert_eq!(environment.get("FROM_JOB").map(String::as_str), Some("yes"));
    assert_eq!(environment.get("PORT"), Some(&worker.port.to_string()));
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", worker.pid)).unwrap();
    assert_eq!(cwd, site.path("app"));

    let pid = worker.pid;
    assert_eq!(host.stop().await.code, 0);
    assert!(wait_gone(pid).await, "worker {pid} outlived its host");
}

/// The environment of a running process, from `/proc`.
fn worker_environment(pid: u32) -> BTreeMap<String, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0)
        .filter_map(|entry| {
            let text = String::from_utf8_lossy(entry);
            text.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[tokio::test]
async fn an_always_running_pool_starts_its_worker_with_the_host() {
    let mut site = worker_site("serve");
    site.spec.pools[0].start_mode = StartMode::AlwaysRunning;
    let host = start(site.spec.clone()).await;
    let pid = running_worker(&host).await;
    assert!(alive(pid));

    // Stopping the pool stops the worker; starting it starts a new one.
    host.client
        .send(&Command::StopPool { pool: None })
        .await
        .unwrap();
    assert!(wait_gone(pid).await, "stopping the pool left worker {pid}");
    let client = host.client.clone();
    assert!(
        eventually(200, || async {
            pool_status(&client.status().await.unwrap()).state == PoolState::Stopped
        })
        .await
    );
    let status = host
        .client
        .send(&Command::StartPool { pool: None })
        .await
        .unwrap();
    assert_eq!(pool_status(&status).state, PoolState::Started);
    let again = pool_status(&status).worker_pids[0];
    assert_ne!(again, pid);
    assert_eq!(host.stop().await.code, 0);
    assert!(wait_gone(again).await);
}

#[tokio::test]
async fn a_crashed_always_running_worker_is_started_again() {
    let mut site = worker_site("serve");
    site.spec.pools[0].start_mode = StartMode::AlwaysRunning;
    let host = start(site.spec.clone()).await;
    let pid = running_worker(&host).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let client = host.client.clone();
    assert!(
        eventually(400, || async {
            let status = client.status().await.unwrap();
            let pool = pool_status(&status);
            pool.worker_pids.first().is_some_and(|p| *p != pid) && pool.worker_failures == 1
        })
        .await,
        "no new worker after the crash"
    );
    let status = host.client.status().await.unwrap();
    let last = pool_status(&status).last_worker_exit.clone().unwrap();
    assert_eq!(
        last,
        format!("worker {pid} of / was killed by signal SIGKILL")
    );
}

#[tokio::test]
async fn an_idle_worker_is_stopped_and_the_next_request_starts_one() {
    let mut site = worker_site("serve");
    site.spec.pools[0].idle_timeout = Duration::from_secs(1);
    let host = start(site.spec.clone()).await;
    let _ = get(host.addr(0), "localhost", "/").await.unwrap();
    let pid = running_worker(&host).await;
    assert!(wait_gone(pid).await, "the idle worker kept running");
    let status = host.client.status().await.unwrap();
    assert_eq!(pool_status(&status).state, PoolState::Started);
    assert!(pool_status(&status).worker_pids.is_empty());
    assert_eq!(
        pool_status(&status).worker_failures,
        0,
        "an idle stop is no failure"
    );

    let _ = get(host.addr(0), "localhost", "/").await.unwrap();
    let again = running_worker(&host).await;
    assert_ne!(again, pid);
}

#[tokio::test]
async fn periodic_restart_recycles_the_worker() {
    let mut site = worker_site("serve");
    site.spec.pools[0].start_mode = StartMode::AlwaysRunning;
    site.spec.pools[0].periodic_restart = Duration::from_secs(1);
    let host = start(site.spec.clone()).await;
    let pid = running_worker(&host).await;
    let client = host.client.clone();
    assert!(
        eventually(400, || async {
            let status = client.status().await.unwrap();
            let pool = pool_status(&status);
            pool.recycles >= 1 && pool.worker_pids.first().is_some_and(|p| *p != pid)
        })
        .await,
        "no periodic restart"
    );
    assert!(wait_gone(pid).await, "the recycled worker kept running");
    assert_eq!(
        pool_status(&host.client.status().await.unwrap()).worker_failures,
        0
    );
}

#[tokio::test]
async fn a_worker_that_never_listens_is_killed_at_the_start_time_limit() {
    let mut site = worker_site("never-listen");
    site.spec.pools[0].start_time_limit = Duration::from_millis(700);
    let host = start(site.spec.clone()).await;
    let started = std::time::Instant::now();
    let (code, _) = get(host.addr(0), "localhost", "/").await.unwrap();
    assert_eq!(code, StatusCode::BAD_GATEWAY);
    // Three attempts (startupRetryCount 2), each cut at the limit.
    assert!(
        started.elapsed() >= Duration::from_millis(2100),
        "{:?}",
        started.elapsed()
    );
    let status = host.client.status().await.unwrap();
    let pool = pool_status(&status);
    assert_eq!(
        (pool.worker_starts, pool.worker_failures),
        (3, 3),
        "{pool:?}"
    );
    assert!(pool.worker_pids.is_empty());
    let last = pool.last_worker_exit.clone().unwrap();
    assert!(last.contains("did not accept connections"), "{last}");
    assert!(last.contains("(start time limit); killed"), "{last}");
    // SIGKILL takes effect a moment after it is sent.
    assert!(
        eventually(200, || async { pool_never_left_a_python_child() }).await,
        "a worker killed at the start time limit is still running"
    );
}

/// No python3 child of this test process is still running (zombies aside).
fn pool_never_left_a_python_child() -> bool {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let fields: Vec<&str> = stat
                    .rsplit_once(')')
                    .map(|(_, r)| r.split_whitespace().collect())
                    .unwrap_or_default();
                fields.get(1) == Some(&me.as_str()) && fields.first() != Some(&"Z")
            })
        })
        .all(|pid| {
            !std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .contains("never-listen")
        })
}

#[tokio::test]
async fn a_crash_loop_trips_rapid_fail_protection_and_ends_the_host() {
    let site = worker_site("crash");
    let host = start(site.spec.clone()).await;
    // Three failed attempts for the first request, two more for the second: five in all.
    let (code, _) = get(host.addr(0), "localhost", "/").await.unwrap();
    assert_eq!(code, StatusCode::BAD_GATEWAY);
    let _ = get(host.addr(0), "localhost", "/").await;
    let record = tokio::time::timeout(Duration::from_secs(30), host.finished())
        .await
        .expect("the host kept running after rapid-fail protection tripped");
    assert_eq!(record.code, control::exit_code::POOL_FAILED);
    assert!(
        record
            .reason
            .starts_with("pool default stopped by rapid-fail protection: worker "),
        "{}",
        record.reason
    );
    assert!(
        record.reason.contains("of / exited with code 3"),
        "{}",
        record.reason
    );
}

#[tokio::test]
async fn a_worker_that_ignores_sigterm_is_killed_after_the_shutdown_limit() {
    let mut site = worker_site("stubborn");
    site.spec.pools[0].start_mode = StartMode::AlwaysRunning;
    site.spec.pools[0].shutdown_time_limit = Duration::from_secs(1);
    site.spec.stdout_path = site.path("stdout.log");
    let host = start(site.spec.clone()).await;
    let pid = running_worker(&host).await;
    let started = std::time::Instant::now();
    host.client
        .send(&Command::StopPool { pool: None })
        .await
        .unwrap();
    assert!(
        wait_gone(pid).await,
        "worker {pid} survived the shutdown limit"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let client = host.client.clone();
    assert!(
        eventually(200, || async {
            pool_status(&client.status().await.unwrap()).state == PoolState::Stopped
        })
        .await
    );
    let stdout_file = site.path("stdout.log");
    assert!(
        eventually(200, || async {
            std::fs::read_to_string(&stdout_file).is_ok_and(|t| t.contains("ignoring SIGTERM"))
        })
        .await,
        "the worker never saw SIGTERM"
    );
}

#[tokio::test]
async fn worker_output_goes_to_the_task_logs_line_by_line() {
    let mut site = worker_site("serve");
    site.spec.pools[0].start_mode = StartMode::AlwaysRunning;
    site.spec.stdout_path = site.path("stdout.log");
    site.spec.stderr_path = site.path("stderr.log");
    let host = start(site.spec.clone()).await;
    let pid = running_worker(&host).await;
    let (out, err) = (site.path("stdout.log"), site.path("stderr.log"));
    assert!(
        eventually(200, || async {
            std::fs::read_to_string(&out)
                .is_ok_and(|t| t.contains(&format!("worker {pid} starting in mode serve\n")))
                && std::fs::read_to_string(&err)
                    .is_ok_and(|t| t.contains(&format!("worker {pid} says hello on stderr\n")))
        })
        .await,
        "worker output missing"
    );
    assert_eq!(host.stop().await.code, 0);
    let notices = std::fs::read_to_string(site.path("stderr.log")).unwrap();
    assert!(
        notices.contains(&format!("pool default: worker {pid} of / started on port")),
        "{notices}"
    );
}

#[tokio::test]
async fn several_pools_keep_serving_while_one_is_stopped() {
    let mut site = worker_site("serve");
    site.spec.pools[0].start_mode = StartMode::AlwaysRunning;
    site.spec.pools.push(pool("api"));
    site.spec.pools[1].start_mode = StartMode::AlwaysRunning;
    site.add_application("/api", "api", "api");
    site.write("api/worker.py", WORKER_PY);
    site.spec.applications[1].process = site.spec.applications[0].process.clone();
    let host = start(site.spec.clone()).await;
    let client = host.client.clone();
    assert!(
        eventually(400, || async {
            let status = client.status().await.unwrap();
            status.pools.iter().all(|p| p.worker_pids.len() == 1)
        })
        .await
    );
    let status = host.client.status().await.unwrap();
    let api_pid = status.pools[1].worker_pids[0];
    let root_pid = status.pools[0].worker_pids[0];
    host.client
        .send(&Command::StopPool {
            pool: Some("default".into()),
        })
        .await
        .unwrap();
    assert!(wait_gone(root_pid).await);
    assert!(alive(api_pid), "stopping one pool stopped another's worker");
    let status = host.client.status().await.unwrap();
    assert_eq!(status.pools[1].worker_pids, vec![api_pid]);
    assert_eq!(status.pools[1].state, PoolState::Started);
}

// === through the proxy ===

/// A kept-alive HTTP/1.1 connection to the host.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
}

impl Connection {
    async fn open(addr: std::net::SocketAddr) -> Connection {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        Connection { sender }
    }

    /// One request; `Err` for a transport failure.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, http::HeaderMap, bytes::Bytes), String> {
        use http_body_util::BodyExt;
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "site.test")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((parts.status, parts.headers, body))
    }
}

async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, http::HeaderMap, String) {
    let (status, headers, body) = Connection::open(addr)
        .await
        .send(method, path, body)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn requests_reach_the_worker_with_their_full_path() {
    let mut site = Site::new();
    site.add_application("/api", "api", "default");
    site.write("api/worker.py", WORKER_PY);
    site.spec.applications[1].process = Some(ProcessSpec {
        command: "python3".into(),
        args: vec!["worker.py".into()],
        env: BTreeMap::new(),
    });
    let host = start(site.spec.clone()).await;
    let (status, _, body) = request(host.addr(0), "GET", "/api/a/path?q=1", vec![]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "/api/a/path?q=1"));
    // `/api` itself goes to the worker too (no folder redirect), and static files still work.
    let (status, _, body) = request(host.addr(0), "GET", "/api", vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.ends_with("path /api"), "{body}");
    let (status, _, body) = request(host.addr(0), "GET", "/index.html", vec![]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "root app"));
    let (_, _, headers) = request(host.addr(0), "GET", "/api/headers", vec![]).await;
    let headers: serde_json::Value = serde_json::from_str(&headers).unwrap();
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "site.test");
    assert!(headers.get("ms-aspnetcore-token").is_none());
}

#[tokio::test]
async fn a_recycle_under_load_fails_no_request_and_brings_a_new_worker() {
    let mut site = worker_site("serve");
    site.spec.pools[0].start_mode = StartMode::AlwaysRunning;
    let host = start(site.spec.clone()).await;
    let addr = host.addr(0);
    let first = running_worker(&host).await;
    // Connections opened before the recycle and left idle through it.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut connection = Connection::open(addr).await;
        let (status, _, _) = connection.send("GET", "/pid", vec![]).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        idle.push(connection);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for n in 0..8 {
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut connection = Connection::open(addr).await;
            let (mut done, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let result = if n % 2 == 0 {
                    connection.send("GET", "/pid", vec![]).await
                } else {
                    connection.send("POST", "/echo", vec![b'p'; 3000]).await
                };
                match result {
                    Ok((StatusCode::OK, _, _)) => done += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (done, failed)
        }));
    }
    for _ in 0..3 {
        host.client
            .send(&Command::RecyclePool { pool: None })
            .await
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut done, mut failed) = (0, Vec::new());
    for client in clients {
        let (d, f) = client.await.unwrap();
        done += d;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} failed of {}: {:?}",
        failed.len(),
        done,
        &failed[..failed.len().min(5)]
    );
    assert!(done > 20, "only {done} requests during the recycles");
    for connection in &mut idle {
        let (status, _, body) = connection
            .send("POST", "/echo", b"after".to_vec())
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body:?}");
    }
    let status = host.client.status().await.unwrap();
    let pool = pool_status(&status);
    assert_eq!(pool.recycles, 3);
    assert_eq!(pool.worker_failures, 0);
    let last = pool.worker_pids[0];
    assert_ne!(last, first);
    assert!(wait_gone(first).await, "the first worker kept running");
    let (_, _, body) = request(addr, "GET", "/pid", vec![]).await;
    assert_eq!(body, last.to_string());
}

#[tokio::test]
async fn a_recycle_without_overlap_makes_requests_wait_for_the_new_worker() {
    let mut site = worker_site("slow-start");
    site.spec.pools[0].disable_overlapped_recycle = true;
    let host = start(site.spec.clone()).await;
    let addr = host.addr(0);
    let (_, _, before) = request(addr, "GET", "/pid", vec![]).await;
    let client = host.client.clone();
    let recycle =
        tokio::spawn(async move { client.send(&Command::RecyclePool { pool: None }).await });
    let client = host.client.clone();
    assert!(
        eventually(200, || async {
            pool_status(&client.status().await.unwrap())
                .worker_pids
                .is_empty()
        })
        .await,
        "the old worker was not stopped first"
    );
    // This request arrives while no worker runs; it waits instead of failing.
    let (status, _, after) = request(addr, "GET", "/pid", vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(after, before);
    recycle.await.unwrap().unwrap();
}

#[tokio::test]
async fn websocket_messages_are_echoed_through_the_host() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let site = worker_site("serve");
    let host = start(site.spec.clone()).await;
    let mut stream = tokio::net::TcpStream::connect(host.addr(0)).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: site.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    for message in [&b"hello"[..], &b"second message"[..]] {
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | message.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(message.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        stream.write_all(&frame).await.unwrap();
        let mut answer = vec![0u8; 2 + message.len()];
        stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer[0], 0x81);
        assert_eq!(&answer[2..], message);
    }
}

#[tokio::test]
async fn a_worker_crashing_mid_request_gives_502_and_the_next_request_a_new_worker() {
    let site = worker_site("serve");
    let host = start(site.spec.clone()).await;
    let addr = host.addr(0);
    let (_, _, first) = request(addr, "GET", "/pid", vec![]).await;
    let result = Connection::open(addr)
        .await
        .send("GET", "/crash", vec![])
        .await;
    // Headers may already have been sent: then the body is cut instead.
    match result {
        Ok((status, _, _)) => assert_eq!(status, StatusCode::BAD_GATEWAY),
        Err(error) => assert!(!error.is_empty()),
    }
    // The host learns of the exit from the kernel a moment after the connection broke; a
    // request in that window still goes to the dying worker and gets a 502, as with IIS.
    let client = host.client.clone();
    assert!(
        eventually(200, || async {
            pool_status(&client.status().await.unwrap()).worker_failures == 1
        })
        .await,
        "the crash was not counted"
    );
    let (status, _, second) = request(addr, "GET", "/pid", vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(first, second);
    let status = host.client.status().await.unwrap();
    assert_eq!(pool_status(&status).worker_failures, 1);
    assert_eq!(
        pool_status(&status).last_worker_exit.as_deref(),
        Some(format!("worker {first} of / exited with code 7").as_str())
    );
}

/// An `<httpPlatform>` web.config starting `worker.py` with `extra` attributes.
fn http_platform_config(extra: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <system.webServer>
    <handlers>
      <add name="httpPlatformHandler" path="*" verb="*" modules="httpPlatformHandler" resourceType="Unspecified" />
    </handlers>
    <httpPlatform processPath="python3" arguments=".\worker.py serve" {extra}>
      <environmentVariables>
        <environmentVariable name="FROM_WEB_CONFIG" value="port %HTTP_PLATFORM_PORT%" />
      </environmentVariables>
    </httpPlatform>
  </system.webServer>
</configuration>
"#
    )
}

#[tokio::test]
async fn a_slow_worker_gets_504_after_the_request_timeout() {
    let site = Site::new();
    site.write("app/worker.py", WORKER_PY);
    site.write(
        "app/web.config",
        http_platform_config(r#"requestTimeout="00:00:01""#),
    );
    let host = start(site.spec.clone()).await;
    assert_eq!(
        host.status.applications[0].kind,
        ApplicationKind::HttpPlatform
    );
    let (status, _, _) = request(host.addr(0), "GET", "/slow?s=5", vec![]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let (status, _, body) = request(host.addr(0), "GET", "/slow?s=0.1", vec![]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "slow done"));
    // HttpPlatformHandler's variables, and web.config's own with the port substituted.
    let (_, _, env) = request(host.addr(0), "GET", "/env", vec![]).await;
    let env: serde_json::Value = serde_json::from_str(&env).unwrap();
    let port = env["HTTP_PLATFORM_PORT"].as_str().unwrap().to_string();
    assert_eq!(env["PORT"], port.as_str());
    assert_eq!(env["FROM_WEB_CONFIG"], format!("port {port}").as_str());
    assert_eq!(env["HTTP_PLATFORM_APPL_PATH"], "/");
}

#[tokio::test]
async fn fifty_megabytes_go_up_and_down() {
    let site = worker_site("serve");
    let host = start(site.spec.clone()).await;
    let addr = host.addr(0);
    let upload: Vec<u8> = (0..50 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let expected = sha256_hex(&upload);
    let (status, _, body) = request(addr, "POST", "/echo", upload).await;
    assert_eq!(status, StatusCode::OK);
    let fields: Vec<&str> = body.split(' ').collect();
    assert_eq!(fields[0], (50 * 1024 * 1024).to_string());
    assert_eq!(fields[1], expected);
    let n = 50 * 1024 * 1024;
    let (status, _, body) = Connection::open(addr)
        .await
        .send("GET", &format!("/big?n={n}"), vec![])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), n);
}

/// A published ASP.NET Core application as `dotnet publish` lays it out for a self-contained
/// Linux app: `processPath=".\MyApp.exe"` where only `MyApp` exists (here a shell script
/// that runs the test worker).
fn published_aspnetcore_site(attributes: &str) -> Site {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    site.write("app/worker.py", WORKER_PY);
    site.write("app/MyApp", "#!/bin/sh\nexec python3 worker.py serve\n");
    std::fs::set_permissions(
        site.path("app/MyApp"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    site.write(
        "app/web.config",
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <location path="." inheritInChildApplications="false">
    <system.webServer>
      <handlers>
        <add name="aspNetCore" path="*" verb="*" modules="AspNetCoreModuleV2" resourceType="Unspecified" />
      </handlers>
      <aspNetCore processPath=".\MyApp.exe" stdoutLogFile=".\logs\stdout" {attributes}>
        <environmentVariables>
          <environmentVariable name="ASPNETCORE_ENVIRONMENT" value="Staging" />
        </environmentVariables>
      </aspNetCore>
    </system.webServer>
  </location>
</configuration>
"#
        ),
    );
    site
}

#[tokio::test]
async fn a_published_aspnetcore_app_gets_the_module_variables_and_the_token() {
    let mut site = published_aspnetcore_site(r#"stdoutLogEnabled="true" hostingModel="inprocess""#);
    site.spec.applications[0].alias = "/shop".into();
    let host = start(site.spec.clone()).await;
    assert_eq!(
        host.status.applications[0].kind,
        ApplicationKind::AspNetCore
    );
    assert!(
        host.status
            .warnings
            .iter()
            .any(|w| w.contains("hostingModel=\"inprocess\" runs out of process")),
        "{:?}",
        host.status.warnings
    );
    let (status, _, env) = request(host.addr(0), "GET", "/shop/env", vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let env: serde_json::Value = serde_json::from_str(&env).unwrap();
    let port = env["ASPNETCORE_PORT"].as_str().unwrap().to_string();
    assert_eq!(env["PORT"], port.as_str());
    assert_eq!(env["ASPNETCORE_APPL_PATH"], "/shop");
    assert_eq!(
        env["ASPNETCORE_IIS_PHYSICAL_PATH"],
        format!("{}/", site.path("app").display()).as_str()
    );
    assert_eq!(env["ASPNETCORE_IIS_HTTPAUTH"], "anonymous;");
    assert_eq!(env["ASPNETCORE_IIS_WEBSOCKETS_SUPPORTED"], "true");
    assert_eq!(env["ASPNETCORE_ENVIRONMENT"], "Staging");
    assert!(
        env["ASPNETCORE_HOSTINGSTARTUPASSEMBLIES"]
            .as_str()
            .unwrap()
            .contains("Microsoft.AspNetCore.Server.IISIntegration")
    );
    let token = env["ASPNETCORE_TOKEN"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 32);
    let (_, _, headers) = request(host.addr(0), "GET", "/shop/headers", vec![]).await;
    let headers: serde_json::Value = serde_json::from_str(&headers).unwrap();
    assert_eq!(headers["ms-aspnetcore-token"], token.as_str());

    // stdoutLogEnabled: the worker's output also goes to logs/stdout_<time>_<pid>.log.
    let pid = pool_status(&host.client.status().await.unwrap()).worker_pids[0];
    let logs = site.path("app/logs");
    let found = eventually(200, || async {
        std::fs::read_dir(&logs).is_ok_and(|entries| {
            entries.filter_map(|e| e.ok()).any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("stdout_")
                    && name.ends_with(&format!("_{pid}.log"))
                    && std::fs::read_to_string(e.path())
                        .is_ok_and(|t| t.contains("starting in mode serve"))
            })
        })
    })
    .await;
    assert!(found, "no stdout log for worker {pid}");
}

#[tokio::test]
async fn a_process_block_and_a_web_config_worker_at_once_exit_2() {
    let mut site = published_aspnetcore_site("");
    site.spec.applications[0].process = Some(ProcessSpec {
        command: "python3".into(),
        args: vec![],
        env: BTreeMap::new(),
    });
    let record = host::run(site.spec.clone(), std::future::pending()).await;
    assert_eq!(record.code, control::exit_code::CONFIG);
    assert!(
        record.reason.starts_with("application[0].process: "),
        "{}",
        record.reason
    );
}

#[tokio::test]
async fn a_development_web_config_exits_2_with_a_clear_message() {
    let site = Site::new();
    site.write(
        "app/web.config",
        r#"<configuration><system.webServer>
<aspNetCore processPath="%LAUNCHER_PATH%" arguments="%LAUNCHER_ARGS%" hostingModel="InProcess" />
</system.webServer></configuration>"#,
    );
    let record = host::run(site.spec.clone(), std::future::pending()).await;
    assert_eq!(record.code, control::exit_code::CONFIG);
    assert!(
        record.reason.starts_with("application[0].path: "),
        "{}",
        record.reason
    );
    assert!(record.reason.contains("LAUNCHER_PATH"), "{}", record.reason);
}

#[tokio::test]
async fn an_uploaded_web_config_turns_a_static_app_into_a_worker_at_recycle() {
    let site = Site::new();
    let host = start(site.spec.clone()).await;
    assert_eq!(host.status.applications[0].kind, ApplicationKind::Static);
    let (_, _, body) = request(host.addr(0), "GET", "/index.html", vec![]).await;
    assert_eq!(body, "root app");
    site.write("app/worker.py", WORKER_PY);
    site.write("app/web.config", http_platform_config(""));
    let status = host
        .client
        .send(&Command::RecyclePool { pool: None })
        .await
        .unwrap();
    assert_eq!(status.applications[0].kind, ApplicationKind::HttpPlatform);
    assert!(!status.pools[0].is_static);
    let (status, _, body) = request(host.addr(0), "GET", "/index.html", vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("worker "), "{body}");
}

#[tokio::test]
async fn workers_run_as_the_pool_identity_when_the_host_is_root() {
    use std::os::unix::fs::PermissionsExt;
    let mut site = worker_site("serve");
    site.spec.pools[0].start_mode = StartMode::AlwaysRunning;
    site.spec.pools[0].identity = Some(control::WorkerIdentity {
        uid: 65534,
        gid: 65534,
        description: "LocalService (nobody)".into(),
    });
    // The identity must reach its application folder.
    std::fs::set_permissions(site.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = start(site.spec.clone()).await;
    let pid = running_worker(&host).await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    if nix::unistd::geteuid().is_root() {
        assert_eq!(field("Uid:"), "65534 65534 65534 65534");
        assert_eq!(field("Gid:"), "65534 65534 65534 65534");
        assert_eq!(field("Groups:"), "", "supplementary groups were kept");
    } else {
        // Without root the host cannot switch users: workers run as the host's own.
        let me = nix::unistd::geteuid().as_raw().to_string();
        assert_eq!(field("Uid:").split(' ').next(), Some(me.as_str()));
    }
}

#[tokio::test]
async fn requests_beyond_the_queue_length_get_503_while_the_worker_starts() {
    let mut site = worker_site("slow-start");
    site.spec.pools[0].queue_length = 2;
    let host = start(site.spec.clone()).await;
    let addr = host.addr(0);
    let waiting: Vec<_> = (0..5)
        .map(|_| tokio::spawn(async move { request(addr, "GET", "/pid", vec![]).await.0 }))
        .collect();
    let mut codes = Vec::new();
    for request in waiting {
        codes.push(request.await.unwrap());
    }
    let ok = codes.iter().filter(|c| **c == StatusCode::OK).count();
    let refused = codes
        .iter()
        .filter(|c| **c == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!((ok, refused), (2, 3), "{codes:?}");
    assert_eq!(
        pool_status(&host.client.status().await.unwrap()).worker_starts,
        1
    );
}

#[tokio::test]
async fn a_static_pool_restarts_periodically_and_serves_changed_files() {
    let mut site = Site::new();
    site.spec.pools[0].periodic_restart = Duration::from_millis(500);
    site.write("app/data.txt", "v1");
    let host = start(site.spec.clone()).await;
    let (_, _, body) = request(host.addr(0), "GET", "/data.txt", vec![]).await;
    assert_eq!(body, "v1");
    let recycles = pool_status(&host.client.status().await.unwrap()).recycles;
    site.write("app/data.txt", "v2");
    let client = host.client.clone();
    assert!(
        eventually(200, || async {
            pool_status(&client.status().await.unwrap()).recycles > recycles
        })
        .await,
        "no periodic restart of a static pool"
    );
    let (_, _, body) = request(host.addr(0), "GET", "/data.txt", vec![]).await;
    assert_eq!(body, "v2");
    assert!(pool_status(&host.client.status().await.unwrap()).is_static);
}

#[tokio::test]
async fn a_recycle_with_a_broken_web_config_changes_nothing() {
    let site = Site::new();
    site.write("app/worker.py", WORKER_PY);
    site.write("app/web.config", http_platform_config(""));
    let host = start(site.spec.clone()).await;
    let (_, _, before) = request(host.addr(0), "GET", "/pid", vec![]).await;
    site.write("app/web.config", "<configuration><system.webServer>");
    let error = host
        .client
        .send(&Command::RecyclePool { pool: None })
        .await
        .unwrap_err();
    let control::ClientError::Refused(message) = error else {
        panic!("expected a refusal, got {error:?}");
    };
    assert!(
        message.starts_with("cannot recycle: application[0].path: "),
        "{message}"
    );
    assert!(message.contains("web.config"), "{message}");
    let (status, _, after) = request(host.addr(0), "GET", "/pid", vec![]).await;
    assert_eq!((status, after), (StatusCode::OK, before));
    assert_eq!(
        pool_status(&host.client.status().await.unwrap()).recycles,
        0
    );
}

/// Reads one response from a raw connection: the head, and a body framed by `Content-Length`
/// or chunked.
async fn raw_response(stream: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if let Some(length) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        body = vec![0u8; length.trim().parse().unwrap()];
        stream.read_exact(&mut body).await.unwrap();
    } else if lower.contains("transfer-encoding: chunked") {
        while !body.ends_with(b"\r\n0\r\n\r\n") && !body.starts_with(b"0\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(stream.read(&mut byte).await.unwrap(), 1);
            body.push(byte[0]);
        }
    }
    (head, body)
}

#[tokio::test]
async fn a_connection_the_own_loop_served_hands_uploads_and_websockets_to_hyper() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let site = worker_site("serve");
    let host = start(site.spec.clone()).await;

    // GET (the host's own loop), a POST with a body (handed over to hyper, with the bytes
    // already read), then a GET on the same connection (hyper, for the rest of its life).
    let mut stream = tokio::net::TcpStream::connect(host.addr(0)).await.unwrap();
    stream
        .write_all(b"GET /pid HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .unwrap();
    let (head, pid) = raw_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let upload = vec![7u8; 300_000];
    let post = format!(
        "POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: {}\r\n\r\n",
        upload.len()
    );
    let mut bytes = post.into_bytes();
    bytes.extend_from_slice(&upload);
    bytes.extend_from_slice(b"GET /pid HTTP/1.1\r\nHost: site.test\r\n\r\n");
    stream.write_all(&bytes).await.unwrap();
    let (head, echoed) = raw_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let echoed = String::from_utf8_lossy(&echoed).into_owned();
    assert!(echoed.contains("300000"), "{echoed}");
    assert!(echoed.contains(&sha256_hex(&upload)), "{echoed}");
    let (head, again) = raw_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(again, pid);

    // GET, then a WebSocket handshake on the same connection: the tunnel works.
    let mut stream = tokio::net::TcpStream::connect(host.addr(0)).await.unwrap();
    stream
        .write_all(b"GET /pid HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = raw_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: site.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, _) = raw_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let message = b"through the handover";
    let mask = [9u8, 8, 7, 6];
    let mut frame = vec![0x81, 0x80 | message.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(message.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).await.unwrap();
    let mut answer = vec![0u8; 2 + message.len()];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer[2..], message);
}
