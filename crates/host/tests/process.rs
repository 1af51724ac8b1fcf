//! The host as a real process: `run_from_runtime_dir` reading `spec.json`, signals, exit codes
//! and `exit.json`.
//!
//! This file has its own `main` (`harness = false`): run with the environment variable
//! [`CHILD_ENV`] set to a runtime folder, the binary *is* a host process; otherwise it runs the
//! tests below, each of which starts this same binary as a host child.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use common::*;
use control::{ExitRecord, HostStatus};
use http::StatusCode;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const CHILD_ENV: &str = "NOMAD_IIS_HOST_TEST_RUNTIME_DIR";

fn main() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        std::process::exit(host::run_from_runtime_dir(Path::new(&dir)));
    }
    let tests: [(&str, fn()); 7] = [
        (
            "workers_die_with_a_killed_host",
            workers_die_with_a_killed_host,
        ),
        (
            "unread_h2_streams_leave_the_host_bounded_and_answering",
            unread_h2_streams_leave_the_host_bounded_and_answering,
        ),
        (
            "sigterm_drains_and_records_exit_0",
            sigterm_drains_and_records_exit_0,
        ),
        (
            "sighup_recycles_and_sigint_stops",
            sighup_recycles_and_sigint_stops,
        ),
        (
            "control_shutdown_ends_the_process",
            control_shutdown_ends_the_process,
        ),
        (
            "a_bad_spec_exits_2_with_a_record",
            a_bad_spec_exits_2_with_a_record,
        ),
        (
            "a_missing_spec_exits_2_with_a_record",
            a_missing_spec_exits_2_with_a_record,
        ),
    ];
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut failed = Vec::new();
    for (name, test) in tests {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let passed = std::panic::catch_unwind(test).is_ok();
        println!("test {name} ... {}", if passed { "ok" } else { "FAILED" });
        if !passed {
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        println!("failed: {failed:?}");
        std::process::exit(1);
    }
}

/// A host child process; killed and reaped if a test fails before it exits.
struct HostProcess {
    child: Child,
    runtime_dir: PathBuf,
}

impl HostProcess {
    fn spawn(runtime_dir: &Path) -> Self {
        let child = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, runtime_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Self {
            child,
            runtime_dir: runtime_dir.to_path_buf(),
        }
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    fn wait(&mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }

    fn exit_record(&self) -> ExitRecord {
        control::files::read_exit_record(&self.runtime_dir).expect("the host left no exit record")
    }

    fn client(&self) -> control::Client {
        control::Client::new(self.runtime_dir.join(control::CONTROL_SOCKET))
    }

    /// Waits until the control socket answers: the host is ready.
    async fn ready(&mut self) -> HostStatus {
        let child = &mut self.child;
        control::launch::wait_ready(&self.runtime_dir, Duration::from_secs(30), || {
            child.try_wait()
        })
        .await
        .unwrap_or_else(|e| panic!("the host did not become ready: {e}"))
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn write_spec(site: &Site) {
    control::files::write_spec(&site.spec.runtime_dir, &site.spec).unwrap();
}

fn sigterm_drains_and_records_exit_0() {
    let site = Site::new();
    write_spec(&site);
    let mut host = HostProcess::spawn(&site.spec.runtime_dir);
    runtime().block_on(async {
        let status = host.ready().await;
        assert_eq!(status.pid, host.child.id());
        let addr = status.listening[0].parse().unwrap();
        let (code, body) = get(addr, "localhost", "/").await.unwrap();
        assert_eq!((code, body.as_str()), (StatusCode::OK, "root app"));
    });
    host.signal(Signal::SIGTERM);
    assert_eq!(host.wait().code(), Some(0));
    let record = host.exit_record();
    assert_eq!(record.code, 0);
    assert_eq!(record.reason, "stopped by signal SIGTERM");
    assert!(!site.spec.runtime_dir.join(control::CONTROL_SOCKET).exists());
}

fn sighup_recycles_and_sigint_stops() {
    let site = Site::new();
    write_spec(&site);
    let mut host = HostProcess::spawn(&site.spec.runtime_dir);
    runtime().block_on(async {
        host.ready().await;
        host.signal(Signal::SIGHUP);
        let client = host.client();
        let recycled = eventually(200, || async {
            client.status().await.unwrap().pools[0].recycles == 1
        })
        .await;
        assert!(recycled, "SIGHUP did not recycle");
    });
    host.signal(Signal::SIGINT);
    assert_eq!(host.wait().code(), Some(0));
    assert_eq!(host.exit_record().reason, "stopped by signal SIGINT");
}

fn control_shutdown_ends_the_process() {
    let site = Site::new();
    write_spec(&site);
    let mut host = HostProcess::spawn(&site.spec.runtime_dir);
    runtime().block_on(async {
        host.ready().await;
        host.client()
            .send(&control::Command::Shutdown {
                grace: Duration::from_secs(5),
            })
            .await
            .unwrap();
    });
    assert_eq!(host.wait().code(), Some(0));
    assert_eq!(host.exit_record().reason, "stopped by control command");
}

/// `(VmRSS in KiB, open descriptors)` of a process.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (rss, fds)
}

/// An HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The CI-sized form of the attack in bench/attacks.py (`h2-unread`): 20 h2c connections x 200
/// streams `GET /big.bin` (1 MiB) whose client never reads. The host must stay under 256 MiB
/// and a few descriptors per connection, and answer a normal GET within a second throughout.
fn unread_h2_streams_leave_the_host_bounded_and_answering() {
    use tokio::io::AsyncWriteExt;
    let site = Site::new();
    site.write("app/big.bin", vec![7u8; 1 << 20]);
    write_spec(&site);
    let mut host = HostProcess::spawn(&site.spec.runtime_dir);
    let pid = host.child.id();
    runtime().block_on(async {
        let status = host.ready().await;
        let addr: std::net::SocketAddr = status.listening[0].parse().unwrap();
        // :method GET, :scheme http, then :path and :authority as literals without indexing.
        let mut block = vec![0x82, 0x86, 0x04, 8];
        block.extend_from_slice(b"/big.bin");
        block.extend_from_slice(&[0x01, 9]);
        block.extend_from_slice(b"localhost");
        let mut attackers = Vec::new();
        for _ in 0..20 {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            bytes.extend(h2_frame(4, 0, 0, &[]));
            for i in 0..200u32 {
                bytes.extend(h2_frame(1, 0x5, 2 * i + 1, &block));
            }
            stream.write_all(&bytes).await.unwrap();
            attackers.push(stream);
        }
        let (mut peak_rss, mut peak_fds) = (0, 0);
        for _ in 0..10 {
            let started = std::time::Instant::now();
            let answered = tokio::time::timeout(
                Duration::from_secs(1),
                get(addr, "localhost", "/index.html"),
            )
            .await;
            let (code, _) = answered
                .expect("a normal GET took more than 1 s during the attack")
                .unwrap();
            assert_eq!(code, StatusCode::OK);
            let (rss, fds) = rss_and_fds(pid);
            (peak_rss, peak_fds) = (peak_rss.max(rss), peak_fds.max(fds));
            tokio::time::sleep(Duration::from_millis(200).saturating_sub(started.elapsed())).await;
        }
        assert!(peak_rss < 256 * 1024, "RSS {peak_rss} KiB");
        // 20 attacking connections, the GET's, one shared big.bin, listeners, logs, inotify.
        assert!(peak_fds < 100, "{peak_fds} descriptors");
        drop(attackers);
    });
    host.signal(Signal::SIGTERM);
    assert_eq!(host.wait().code(), Some(0));
}

fn a_bad_spec_exits_2_with_a_record() {
    let site = Site::new();
    let spec_file = site.spec.runtime_dir.join(control::SPEC_FILE);
    std::fs::write(&spec_file, "{\"alloc_id\": 7}").unwrap();
    let mut host = HostProcess::spawn(&site.spec.runtime_dir);
    assert_eq!(host.wait().code(), Some(2));
    let record = host.exit_record();
    assert_eq!(record.code, 2);
    assert!(
        record
            .reason
            .starts_with(&format!("host spec {} is not valid: ", spec_file.display())),
        "{}",
        record.reason
    );
}

fn a_missing_spec_exits_2_with_a_record() {
    let site = Site::new();
    let mut host = HostProcess::spawn(&site.spec.runtime_dir);
    assert_eq!(host.wait().code(), Some(2));
    let record = host.exit_record();
    assert_eq!(
        record.reason,
        format!(
            "cannot read host spec {}: No such file or directory",
            site.spec.runtime_dir.join(control::SPEC_FILE).display()
        )
    );
}

/// Whether `pid` runs (a zombie does not count).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

fn workers_die_with_a_killed_host() {
    let mut site = Site::new();
    site.write("app/worker.py", include_str!("programs/worker.py"));
    site.spec.applications[0].process = Some(control::ProcessSpec {
        command: "python3".into(),
        args: vec!["worker.py".into()],
        env: Default::default(),
    });
    site.spec.pools[0].start_mode = control::StartMode::AlwaysRunning;
    write_spec(&site);
    let mut host = HostProcess::spawn(&site.spec.runtime_dir);
    let worker = runtime().block_on(async {
        host.ready().await;
        let client = host.client();
        for _ in 0..400 {
            let status = client.status().await.unwrap();
            if let Some(pid) = status.pools[0].worker_pids.first() {
                return *pid;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no worker came up");
    });
    assert!(running(worker));
    host.signal(Signal::SIGKILL);
    host.wait();
    let gone = (0..400).any(|_| {
        if running(worker) {
            std::thread::sleep(Duration::from_millis(25));
            false
        } else {
            true
        }
    });
    if !gone {
        let _ = kill(Pid::from_raw(worker as i32), Signal::SIGKILL);
    }
    assert!(gone, "worker {worker} outlived its host's kill -9");
}
