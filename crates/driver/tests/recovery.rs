//! RecoverTask against processes that are not (or no longer) our site host: recovery must
//! fail cleanly and never signal a process it cannot prove is the task's host.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use driver::{DRIVER_STATE_VERSION, DriverOptions, DriverState, HostCommand, IisDriver};
use nomad_plugin::proto::drivers::{self as pb, driver_server::Driver};
use tonic::Request;

/// A process in its own session and group, killed on drop.
struct Stranger(Child);

impl Stranger {
    fn spawn() -> Self {
        let child = Command::new("/bin/sleep")
            .arg("30")
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        Self(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Field 22 of `/proc/PID/stat`: start time in clock ticks after boot.
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

/// A persisted handle whose driver state names `pid` as the host of `runtime_dir`.
fn handle_naming(pid: u32, runtime_dir: &Path) -> pb::TaskHandle {
    let task_id = "0b5c3e1e-1111-2222-3333-444455556666/web/0a1b2c3d";
    let spec = control::HostSpec {
        alloc_id: "0b5c3e1e-1111-2222-3333-444455556666".into(),
        task_name: "web".into(),
        site_name: "nomad-0b5c3e1e-1111-2222-3333-444455556666-web".into(),
        runtime_dir: runtime_dir.into(),
        task_dir: runtime_dir.into(),
        stdout_path: "/dev/null".into(),
        stderr_path: "/dev/null".into(),
        env: Default::default(),
        bindings: vec![],
        pools: vec![],
        applications: vec![],
        placeholder_app_path: None,
        limits: Default::default(),
    };
    let state = DriverState {
        version: DRIVER_STATE_VERSION,
        task_id: task_id.into(),
        host_pid: pid,
        host_start_time: start_time(pid),
        runtime_dir: runtime_dir.into(),
        spec,
        started_at: 0,
    };
    pb::TaskHandle {
        version: 1,
        config: Some(pb::TaskConfig {
            id: task_id.into(),
            name: "web".into(),
            ..Default::default()
        }),
        state: pb::TaskState::Running as i32,
        driver_state: state.to_bytes(),
    }
}

// A pid and start time that match a live process which is not a site host (as after a reboot
// that handed the pid out again at the same tick): recovery fails and leaves it alone.
#[tokio::test]
async fn a_live_process_that_is_not_the_host_is_not_killed() {
    let temp = tempfile::Builder::new()
        .prefix("drv")
        .tempdir_in("/tmp")
        .unwrap();
    let root = temp.path().join("rt");
    let runtime_dir = root.join("0b5c3e1e-web");
    std::fs::create_dir_all(&runtime_dir).unwrap();
    let mut stranger = Stranger::spawn();
    let driver = IisDriver::new(DriverOptions::new(
        &root,
        HostCommand {
            program: "/bin/false".into(),
            args: vec![],
        },
    ));
    let err = driver
        .recover_task(Request::new(pb::RecoverTaskRequest {
            task_id: String::new(),
            handle: Some(handle_naming(stranger.pid(), &runtime_dir)),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(err.message().contains("gone"), "{}", err.message());
    assert!(
        stranger.alive(),
        "recovery killed a process that is not the host"
    );
}

/// A host started by an older plugin: its command line names the runtime folder, and its control
/// socket answers a version 1 status (no `protocol`, no worker or application status).
struct OldHost {
    process: Stranger,
    socket: tokio::task::JoinHandle<()>,
}

impl OldHost {
    fn spawn(runtime_dir: &Path) -> Self {
        let child = Command::new("/bin/sh")
            .args(["-c", "sleep 30; true", "sh", "--runtime-dir"])
            .arg(runtime_dir)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        // `spawn` returns once the child has left our memory, a moment before the kernel has
        // set up its new command line (empty until then): wait for it, as a real host's is
        // long set by the time a plugin recovers it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read(format!("/proc/{pid}/cmdline")).map_or(true, |c| c.is_empty()) {
            assert!(
                std::time::Instant::now() < deadline,
                "no command line for {pid}"
            );
            std::thread::yield_now();
        }
        let listener =
            tokio::net::UnixListener::bind(runtime_dir.join(control::CONTROL_SOCKET)).unwrap();
        let socket = tokio::spawn(async move {
            use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
            while let Ok((stream, _)) = listener.accept().await {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let _ = BufReader::new(read).read_line(&mut line).await;
                let reply = format!(
                    r#"{{"reply":"ok","status":{{"pid":{pid},"site_name":"s","listening":[],"pools":[]}}}}"#
                );
                let _ = write.write_all(reply.as_bytes()).await;
                let _ = write.write_all(b"\n").await;
            }
        });
        Self {
            process: Stranger(child),
            socket,
        }
    }
}

impl Drop for OldHost {
    fn drop(&mut self) {
        self.socket.abort();
    }
}

// Hosts outlive plugin upgrades: a newer plugin re-attaches to a version 1 host and says, as a
// task event, what that host cannot report.
#[tokio::test]
async fn an_older_host_is_recovered_and_its_missing_features_are_told() {
    let temp = tempfile::Builder::new()
        .prefix("drv")
        .tempdir_in("/tmp")
        .unwrap();
    let root = temp.path().join("rt");
    let runtime_dir = root.join("0b5c3e1e-web");
    std::fs::create_dir_all(&runtime_dir).unwrap();
    let mut host = OldHost::spawn(&runtime_dir);
    let driver = IisDriver::new(DriverOptions::new(
        &root,
        HostCommand {
            program: "/bin/false".into(),
            args: vec![],
        },
    ));
    let mut events = driver.events().subscribe();
    driver
        .recover_task(Request::new(pb::RecoverTaskRequest {
            task_id: String::new(),
            handle: Some(handle_naming(host.process.pid(), &runtime_dir)),
        }))
        .await
        .unwrap();
    let mut messages = Vec::new();
    while messages.len() < 2 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv())
            .await
            .expect("an event within 10 s")
            .unwrap();
        messages.push(event.message);
    }
    assert!(
        messages[0].starts_with("re-attached to the site host"),
        "{messages:?}"
    );
    assert_eq!(
        messages[1],
        "site host speaks control protocol 1; worker, application and warning status needs 2 \
         (restart the task to get a host of this version)"
    );
    assert!(host.process.alive());
}
