//! Measures the time from `StartTask` to the first `200` answered by the task's site, through
//! the plugin exactly as Nomad drives it (cookie, handshake, gRPC over the unix socket, cty
//! msgpack config), and the site host's idle RSS. Used by `bench/run.sh`; prints one line of
//! `key=value` figures.
//!
//! ```sh
//! cargo run --release -p nomad_iis --example startup_latency -- target/release/nomad_iis 15
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nomad_plugin::proto::base::{SetConfigRequest, base_plugin_client::BasePluginClient};
use nomad_plugin::proto::drivers::{self as pb, driver_client::DriverClient};
use tonic::transport::Endpoint;

const COOKIE: (&str, &str) = (
    "NOMAD_PLUGIN_MAGIC_COOKIE",
    "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255",
);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let binary = PathBuf::from(
        args.next()
            .ok_or("usage: startup_latency BINARY [ROUNDS]")?,
    );
    let rounds: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(15);

    let work = tempfile::tempdir()?;
    let site = work.path().join("alloc/web/local/site");
    std::fs::create_dir_all(&site)?;
    std::fs::write(site.join("index.html"), "hello")?;
    let runtime = work.path().join("rt");

    let mut plugin = Command::new(&binary)
        .arg(format!("--runtime-dir={}", runtime.display()))
        .env(COOKIE.0, COOKIE.1)
        .env("PLUGIN_PROTOCOL_VERSIONS", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(plugin.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let socket = PathBuf::from(line.trim().split('|').nth(3).ok_or("bad handshake")?);
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await?;
    let mut base = BasePluginClient::new(channel.clone());
    let mut driver = DriverClient::new(channel);
    base.set_config(SetConfigRequest {
        plugin_api_version: "0.1.0".into(),
        ..Default::default()
    })
    .await?;

    let mut latencies = Vec::new();
    let mut idle_rss_kib = Vec::new();
    for round in 0..rounds {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = serde_json::json!({
            "application": [{ "path": site.display().to_string() }],
            "binding": [{ "type": "http", "port": "http" }],
        });
        let value = nomad_plugin::hclspec::decode_json(&config::TaskConfig::spec(), &config)?;
        let alloc_id = format!("00000000-0000-4000-8000-{round:012}");
        let task = pb::TaskConfig {
            id: format!("{alloc_id}/web/0000abcd"),
            name: "web".into(),
            alloc_id: alloc_id.clone(),
            msgpack_driver_config: nomad_plugin::cty::encode(&value),
            alloc_dir: work.path().join("alloc").display().to_string(),
            stdout_path: "/dev/null".into(),
            stderr_path: "/dev/null".into(),
            resources: Some(pb::Resources {
                ports: vec![pb::PortMapping {
                    label: "http".into(),
                    value: i32::from(port),
                    to: i32::from(port),
                    host_ip: "127.0.0.1".into(),
                }],
                ..Default::default()
            }),
            env: HashMap::new(),
            ..Default::default()
        };
        let started = Instant::now();
        driver
            .start_task(pb::StartTaskRequest {
                task: Some(task.clone()),
            })
            .await?;
        while !answers_200(port) {
            if started.elapsed() > Duration::from_secs(30) {
                return Err("no 200 within 30 s".into());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        latencies.push(started.elapsed());
        if let Some(rss) = host_rss_kib(&runtime) {
            idle_rss_kib.push(rss);
        }
        driver
            .stop_task(pb::StopTaskRequest {
                task_id: task.id.clone(),
                timeout: Some(prost_types::Duration {
                    seconds: 5,
                    nanos: 0,
                }),
                signal: String::new(),
            })
            .await?;
        driver
            .destroy_task(pb::DestroyTaskRequest {
                task_id: task.id,
                force: true,
            })
            .await?;
    }
    let _ = plugin.kill();
    let _ = plugin.wait();

    latencies.sort();
    idle_rss_kib.sort_unstable();
    let median = latencies[latencies.len() / 2];
    println!(
        "start_to_first_200_ms_median={:.1} min={:.1} max={:.1} rounds={} host_idle_rss_kib_median={}",
        median.as_secs_f64() * 1e3,
        latencies[0].as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3,
        latencies.len(),
        idle_rss_kib
            .get(idle_rss_kib.len() / 2)
            .copied()
            .unwrap_or(0),
    );
    Ok(())
}

fn answers_200(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
}

/// VmRSS of the one host running under `runtime` (found by its command line).
fn host_rss_kib(runtime: &Path) -> Option<u64> {
    let needle = runtime.display().to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(" host ") && cmdline.contains(&needle) {
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            return status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok());
        }
    }
    None
}
