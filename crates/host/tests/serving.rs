//! The host in-process over real sockets: HTTP/1.1 and h2c, routing by host and alias, pool
//! states, recycle, control errors, start-up failures with their exit codes, the shutdown
//! drain, and the access log through FIFOs.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use control::{
    BindingKind, CertificateSource, ClientError, Command, PoolState, UnavailableResponse,
};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn pool_state(status: &control::HostStatus, name: &str) -> PoolState {
    status.pools.iter().find(|p| p.name == name).unwrap().state
}

#[tokio::test]
async fn content_is_served_over_http1_and_h2c() {
    let site = Site::new();
    let host = start(site.spec.clone()).await;
    let addr = host.addr(0);
    assert_eq!(host.status.listening.len(), 1);
    assert_ne!(addr.port(), 0);

    let (status, body) = get(addr, "localhost", "/").await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "root app"));
    let (status, _) = get(addr, "localhost", "/missing.html").await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);

    let stream = TcpStream::connect(addr).await.unwrap();
    let (status, body) = send_h2(stream, "localhost", "/index.html").await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "root app"));

    assert_eq!(host.stop().await.code, 0);
}

#[tokio::test]
async fn requests_are_routed_by_host_header() {
    let mut site = Site::new();
    site.spec.bindings = vec![http_binding(Some("a.test")), http_binding(Some("*.w.test"))];
    let host = start(site.spec.clone()).await;
    assert_eq!(host.status.listening.len(), 1, "both bindings share port 0");
    let addr = host.addr(0);
    let port = addr.port();

    for name in [format!("A.Test:{port}"), "a.test".into(), "x.w.test".into()] {
        let (status, body) = get(addr, &name, "/").await.unwrap();
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "root app"),
            "{name}"
        );
    }
    for name in ["b.test", "w.test", "127.0.0.1"] {
        let (status, _) = get(addr, name, "/").await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{name}");
    }
    // HTTP/2 carries the host in :authority.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (status, _) = send_h2(stream, &format!("a.test:{port}"), "/")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let stream = TcpStream::connect(addr).await.unwrap();
    let (status, _) = send_h2(stream, "c.test", "/").await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn longest_alias_and_virtual_directories_win() {
    let mut site = Site::new();
    site.add_application("/api", "api", "default");
    site.add_virtual_directory(0, "/img", "images");
    site.add_virtual_directory(1, "/docs", "api-docs");
    site.write("api/index.html", "api app");
    site.write("api/x.txt", "api x");
    site.write("app/apix.txt", "root apix");
    site.write("images/logo.txt", "logo");
    site.write("api-docs/readme.txt", "api docs");
    site.write("app/docs/readme.txt", "root docs");
    let host = start(site.spec.clone()).await;
    let addr = host.addr(0);

    let cases = [
        ("/api/", "api app"),
        ("/API/x.txt", "api x"),
        ("/apix.txt", "root apix"),
        ("/img/logo.txt", "logo"),
        ("/api/docs/readme.txt", "api docs"),
        ("/docs/readme.txt", "root docs"),
        ("/", "root app"),
    ];
    for (path, expected) in cases {
        let (status, body) = get(addr, "localhost", path).await.unwrap();
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, expected),
            "{path}"
        );
    }
}

#[tokio::test]
async fn an_application_without_a_root_leaves_other_paths_unanswered() {
    let mut site = Site::new();
    site.spec.applications[0].alias = "/shop".into();
    let host = start(site.spec.clone()).await;
    let (status, body) = get(host.addr(0), "localhost", "/shop/").await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "root app"));
    let (status, _) = get(host.addr(0), "localhost", "/").await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
}

fn site_with_two_pools() -> Site {
    let mut site = Site::new();
    let mut api = pool("api");
    api.service_unavailable_response = UnavailableResponse::TcpLevel;
    site.spec.pools.push(api);
    site.add_application("/api", "api", "api");
    site.write("api/index.html", "api app");
    site
}

#[tokio::test]
async fn a_stopped_http_level_pool_answers_503_until_started() {
    let site = site_with_two_pools();
    let host = start(site.spec.clone()).await;
    let addr = host.addr(0);

    let status = host
        .client
        .send(&Command::StopPool {
            pool: Some("default".into()),
        })
        .await
        .unwrap();
    assert_eq!(pool_state(&status, "default"), PoolState::Stopped);
    assert_eq!(pool_state(&status, "api"), PoolState::Started);

    let (code, _) = get(addr, "localhost", "/").await.unwrap();
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    let (code, body) = get(addr, "localhost", "/api/").await.unwrap();
    assert_eq!((code, body.as_str()), (StatusCode::OK, "api app"));

    let status = host
        .client
        .send(&Command::StartPool { pool: None })
        .await
        .unwrap();
    assert!(status.pools.iter().all(|p| p.state == PoolState::Started));
    let (code, body) = get(addr, "localhost", "/").await.unwrap();
    assert_eq!((code, body.as_str()), (StatusCode::OK, "root app"));
}

#[tokio::test]
async fn a_stopped_tcp_level_pool_closes_the_connection_without_an_answer() {
    let site = site_with_two_pools();
    let host = start(site.spec.clone()).await;
    let addr = host.addr(0);
    host.client
        .send(&Command::StopPool {
            pool: Some("api".into()),
        })
        .await
        .unwrap();

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /api/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer).await;
    assert!(
        answer.is_empty(),
        "expected no answer, got {:?}",
        String::from_utf8_lossy(&answer)
    );
    // A reset is as good as a close: either way the client gets no response.
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    }
    let (code, _) = get(addr, "localhost", "/").await.unwrap();
    assert_eq!(code, StatusCode::OK, "the other pool still serves");

    host.client
        .send(&Command::StartPool {
            pool: Some("api".into()),
        })
        .await
        .unwrap();
    let (code, body) = get(addr, "localhost", "/api/").await.unwrap();
    assert_eq!((code, body.as_str()), (StatusCode::OK, "api app"));
}

/// A file big enough that loopback socket buffers cannot hold it, so its response stays in
/// flight until the test reads it.
const BIG: usize = 48 * 1024 * 1024;

async fn start_big_download(addr: std::net::SocketAddr) -> http::Response<hyper::body::Incoming> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get("/big.bin")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response
}

#[tokio::test]
async fn stopping_a_pool_lets_in_flight_requests_finish() {
    let site = Site::new();
    site.write("app/big.bin", vec![7u8; BIG]);
    let host = start(site.spec.clone()).await;
    let addr = host.addr(0);

    let download = start_big_download(addr).await;
    let status = host
        .client
        .send(&Command::StopPool { pool: None })
        .await
        .unwrap();
    assert_eq!(pool_state(&status, "default"), PoolState::Stopping);
    let (code, _) = get(addr, "localhost", "/").await.unwrap();
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);

    let body = download.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), BIG);
    let client = host.client.clone();
    assert!(
        eventually(200, || async {
            let status = client.status().await.unwrap();
            pool_state(&status, "default") == PoolState::Stopped
        })
        .await,
        "pool never reached Stopped"
    );
}

#[tokio::test]
async fn recycling_serves_changed_files_and_counts() {
    let site = Site::new();
    site.write("app/data.txt", "v1");
    let host = start(site.spec.clone()).await;
    let addr = host.addr(0);
    let (_, body) = get(addr, "localhost", "/data.txt").await.unwrap();
    assert_eq!(body, "v1");

    site.write("app/data.txt", "v2");
    let status = host
        .client
        .send(&Command::RecyclePool {
            pool: Some("default".into()),
        })
        .await
        .unwrap();
    assert_eq!(status.pools[0].recycles, 1);
    assert_eq!(status.pools[0].state, PoolState::Started);
    let (_, body) = get(addr, "localhost", "/data.txt").await.unwrap();
    assert_eq!(body, "v2");
}

#[tokio::test]
async fn a_recycle_that_cannot_rebuild_a_site_changes_nothing() {
    let mut site = site_with_two_pools();
    site.add_virtual_directory(1, "/files", "api-files");
    let host = start(site.spec.clone()).await;
    std::fs::remove_dir(site.path("api-files")).unwrap();

    let error = host
        .client
        .send(&Command::RecyclePool { pool: None })
        .await
        .unwrap_err();
    let ClientError::Refused(message) = error else {
        panic!("expected a refusal, got {error:?}");
    };
    assert!(
        message.starts_with("cannot recycle: application[1].virtual_directory[0].path:"),
        "{message}"
    );
    let status = host.client.status().await.unwrap();
    assert!(status.pools.iter().all(|p| p.recycles == 0));
    let (code, body) = get(host.addr(0), "localhost", "/api/").await.unwrap();
    assert_eq!((code, body.as_str()), (StatusCode::OK, "api app"));
}

#[tokio::test]
async fn control_errors_change_nothing() {
    let site = site_with_two_pools();
    let host = start(site.spec.clone()).await;
    for command in [
        Command::StopPool {
            pool: Some("nope".into()),
        },
        Command::StartPool {
            pool: Some("nope".into()),
        },
        Command::RecyclePool {
            pool: Some("nope".into()),
        },
    ] {
        match host.client.send(&command).await {
            Err(ClientError::Refused(message)) => assert_eq!(message, "unknown pool \"nope\""),
            other => panic!("{command:?}: expected a refusal, got {other:?}"),
        }
    }
    let status = host.client.status().await.unwrap();
    assert!(status.pools.iter().all(|p| p.state == PoolState::Started));
    assert!(status.pools.iter().all(|p| p.recycles == 0));

    // Not a command at all: the host answers with an error line and keeps running.
    let socket = site.spec.runtime_dir.join(control::CONTROL_SOCKET);
    let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    stream
        .write_all(b"{\"command\":\"dance\"}\n")
        .await
        .unwrap();
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).await.unwrap();
    let reply: control::Reply = serde_json::from_str(&reply).unwrap();
    assert!(
        matches!(&reply, control::Reply::Error { message } if message.starts_with("bad command")),
        "{reply:?}"
    );
    assert!(host.client.status().await.is_ok());
}

#[tokio::test]
async fn control_socket_is_private_and_status_is_complete() {
    use std::os::unix::fs::PermissionsExt;
    let site = site_with_two_pools();
    let host = start(site.spec.clone()).await;
    let socket = site.spec.runtime_dir.join(control::CONTROL_SOCKET);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let status = &host.status;
    assert_eq!(status.pid, std::process::id());
    assert_eq!(status.site_name, "nomad-test-web");
    let names: Vec<_> = status.pools.iter().map(|p| p.full_name.as_str()).collect();
    assert_eq!(names, ["nomad-test-web-default", "nomad-test-web-api"]);
    assert!(status.pools.iter().all(|p| p.worker_pids.is_empty()));
}

#[tokio::test]
async fn a_missing_key_file_exits_2_naming_the_binding() {
    let mut site = Site::new();
    let (cert_file, _, _) = ecdsa_pem(site.dir.path(), "site", "localhost");
    let key_file = site.path("nope/key.pem");
    site.spec.bindings.push(https_binding(
        None,
        CertificateSource::PemFiles {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
        },
    ));
    site.spec.bindings[1].ip_address = "127.0.0.2".parse().unwrap();
    let record = host::run(site.spec.clone(), std::future::pending()).await;
    assert_eq!(record.code, 2);
    assert_eq!(
        record.reason,
        format!(
            "binding[1].certificate: cannot read key file {}: No such file or directory",
            key_file.display()
        )
    );
    assert!(!site.spec.runtime_dir.join(control::CONTROL_SOCKET).exists());
}

#[tokio::test]
async fn a_port_in_use_exits_3_naming_the_address() {
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = occupied.local_addr().unwrap().port();
    let mut site = Site::new();
    site.spec.bindings[0].port = port;
    let record = host::run(site.spec.clone(), std::future::pending()).await;
    assert_eq!(record.code, 3);
    assert_eq!(
        record.reason,
        format!(
            "binding[0]: cannot listen on 127.0.0.1:{port}: address already in use: another \
             task or program uses it"
        )
    );
}

#[tokio::test]
async fn mixing_http_and_https_on_one_address_exits_2() {
    let mut site = Site::new();
    site.spec
        .bindings
        .push(https_binding(None, CertificateSource::SelfSigned));
    let record = host::run(site.spec.clone(), std::future::pending()).await;
    assert_eq!(record.code, 2);
    assert!(
        record
            .reason
            .starts_with("binding[1]: https on 127.0.0.1:0 clashes with binding[0]"),
        "{}",
        record.reason
    );
    assert_eq!(site.spec.bindings[1].kind, BindingKind::Https);
}

#[tokio::test]
async fn shutdown_answers_first_then_drains_in_flight_requests() {
    let site = Site::new();
    site.write("app/big.bin", vec![9u8; BIG]);
    let host = start(site.spec.clone()).await;
    let addr = host.addr(0);
    let download = start_big_download(addr).await;

    let status = host
        .client
        .send(&Command::Shutdown {
            grace: Duration::from_secs(60),
        })
        .await
        .unwrap();
    assert_eq!(status.listening, vec![addr.to_string()]);
    assert!(
        eventually(200, || async { TcpStream::connect(addr).await.is_err() }).await,
        "the listener still accepts after Shutdown"
    );

    let body = download.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), BIG, "the in-flight response was cut");
    let record = host.finished().await;
    assert_eq!(record.code, 0);
    assert_eq!(record.reason, "stopped by control command");
    assert!(!site.spec.runtime_dir.join(control::CONTROL_SOCKET).exists());
}

#[tokio::test]
async fn shutdown_cuts_what_is_left_after_the_grace() {
    let site = Site::new();
    site.write("app/big.bin", vec![9u8; BIG]);
    let host = start(site.spec.clone()).await;
    let download = start_big_download(host.addr(0)).await;
    host.client
        .send(&Command::Shutdown {
            grace: Duration::ZERO,
        })
        .await
        .unwrap();
    let record = host.finished().await;
    assert_eq!(record.code, 0);
    let body = download.into_body().collect().await;
    assert!(body.is_err(), "the download survived a zero grace");
}

#[tokio::test]
async fn empty_application_folders_get_the_placeholder() {
    let mut site = Site::new();
    site.write("placeholder/index.html", "coming soon");
    site.spec.placeholder_app_path = Some(site.path("placeholder"));
    site.add_application("/new", "fresh", "default");
    site.spec.applications[1].path = site.path("not/yet/there");
    let host = start(site.spec.clone()).await;
    let (code, body) = get(host.addr(0), "localhost", "/new/").await.unwrap();
    assert_eq!((code, body.as_str()), (StatusCode::OK, "coming soon"));
    let (_, body) = get(host.addr(0), "localhost", "/").await.unwrap();
    assert_eq!(body, "root app", "a folder with content keeps it");
}

fn make_fifo(path: &std::path::Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// Opens the FIFO's read end. Opened read-write (Linux), so it never sees end-of-file while
/// the host has no write end open.
fn fifo_reader(
    path: &std::path::Path,
) -> tokio::io::Lines<BufReader<tokio::net::unix::pipe::Receiver>> {
    let receiver = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .unwrap();
    BufReader::new(receiver).lines()
}

#[tokio::test]
async fn access_log_lines_reach_a_fifo_with_a_reader() {
    let mut site = Site::new();
    let fifo = site.path("stdout.fifo");
    make_fifo(&fifo);
    site.spec.stdout_path = fifo.clone();
    let mut lines = fifo_reader(&fifo);
    let host = start(site.spec.clone()).await;
    let (code, _) = get(host.addr(0), "a.test", "/index.html?x=1")
        .await
        .unwrap();
    assert_eq!(code, StatusCode::OK);
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("no access log line")
        .unwrap()
        .unwrap();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains(
            "\"GET /index.html?x=1 HTTP/1.1\" 200 8 \"-\" \"-\" host=\"a.test\" pool=default ms="
        ),
        "{line}"
    );
    assert_eq!(host.client.status().await.unwrap().dropped_log_lines, 0);
}

#[tokio::test]
async fn without_a_fifo_reader_serving_continues_and_drops_are_counted() {
    let mut site = Site::new();
    let fifo = site.path("stdout.fifo");
    make_fifo(&fifo);
    site.spec.stdout_path = fifo.clone();
    let host = start(site.spec.clone()).await;
    let addr = host.addr(0);
    for _ in 0..5 {
        let (code, _) = get(addr, "localhost", "/").await.unwrap();
        assert_eq!(code, StatusCode::OK);
    }
    let client = host.client.clone();
    assert!(
        eventually(200, || async {
            client.status().await.unwrap().dropped_log_lines >= 5
        })
        .await,
        "drops were not counted"
    );

    // A reader returns: the host reopens the FIFO within about a second.
    let mut lines = fifo_reader(&fifo);
    let mut arrived = None;
    for _ in 0..100 {
        get(addr, "localhost", "/again.html").await.unwrap();
        if let Ok(line) = tokio::time::timeout(Duration::from_millis(200), lines.next_line()).await
        {
            arrived = line.unwrap();
            break;
        }
    }
    let line = arrived.expect("the host never reopened the FIFO");
    assert!(line.contains("GET /again.html"), "{line}");
}

#[tokio::test]
async fn notices_go_to_the_stderr_file() {
    let mut site = Site::new();
    site.spec.stderr_path = site.path("stderr.log");
    let host = start(site.spec.clone()).await;
    host.client
        .send(&Command::StopPool { pool: None })
        .await
        .unwrap();
    assert_eq!(host.stop().await.code, 0);
    let text = std::fs::read_to_string(site.path("stderr.log")).unwrap();
    assert!(
        text.contains("nomad_iis host: site nomad-test-web started, listening on 127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("pool default stopped"), "{text}");
    assert!(
        text.contains("stopped: stopped by shutdown request"),
        "{text}"
    );
}

#[tokio::test]
async fn a_classic_aspnet_folder_is_served_filtered_with_a_warning() {
    // The original's sample app as Visual Studio publishes a .NET Framework MVC site.
    let site = Site::new();
    site.write(
        "app/web.config",
        r#"<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <system.web>
    <compilation debug="true" targetFramework="4.8" />
    <httpRuntime targetFramework="4.8" />
  </system.web>
</configuration>
"#,
    );
    site.write("app/Global.asax", r#"<%@ Application Codebehind="Global.asax.cs" Inherits="AspNetSampleApp.MvcApplication" Language="C#" %>"#);
    site.write("app/bin/AspNetSampleApp.dll", b"MZ\x90\x00");
    site.write("app/App_Data/db.mdf", b"data");
    site.write(
        "app/Views/Home/Index.cshtml",
        "@{ ViewBag.Title = \"Home\"; }",
    );
    site.write("app/Content/site.css", "body { color: black }");
    let host = start(site.spec.clone()).await;
    assert!(
        host.status
            .warnings
            .iter()
            .any(|w| w.starts_with("application[0].path: ")
                && w.contains("classic ASP.NET")
                && w.contains("Global.asax")
                && w.contains("bin/*.dll")),
        "{:?}",
        host.status.warnings
    );
    let addr = host.addr(0);
    for hidden in [
        "/web.config",
        "/Global.asax",
        "/bin/AspNetSampleApp.dll",
        "/BIN/AspNetSampleApp.dll",
        "/App_Data/db.mdf",
        "/views/home/index.CSHTML",
    ] {
        let (status, _) = get(addr, "localhost", hidden).await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{hidden}");
    }
    let (status, body) = get(addr, "localhost", "/Content/site.css").await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "body { color: black }")
    );
    assert_eq!(host.stop().await.code, 0);
}
