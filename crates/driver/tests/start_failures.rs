//! StartTask failure paths that the real site host rarely takes, played with stand-in hosts
//! (small shell scripts): a host that never becomes ready, one that reports its address in
//! use, one that rejects its config, one that crashes without a record. Each must give the
//! right gRPC status (recoverable or not) and leave no process and no runtime folder behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use driver::{DriverOptions, HostCommand, IisDriver};
use nomad_plugin::proto::drivers::{self as pb, driver_server::Driver};
use tonic::Request;

mod common;

/// Owns the temp folder; kills whatever stand-in host still runs under it on drop.
struct Scene {
    temp: tempfile::TempDir,
}

impl Scene {
    fn new() -> Self {
        Self {
            temp: tempfile::Builder::new()
                .prefix("drv")
                .tempdir_in("/tmp")
                .unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        self.temp.path().join("rt")
    }

    /// Live processes whose command line names this scene's runtime root.
    fn hosts(&self) -> Vec<i32> {
        let root = self.root().display().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let state =
                    std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                String::from_utf8_lossy(&cmdline).contains(&root)
                    && !state
                        .rsplit_once(')')
                        .is_some_and(|(_, s)| s.trim_start().starts_with('Z'))
            })
            .collect()
    }

    fn driver(&self, script: &str, ready_timeout: Duration) -> IisDriver {
        let command = HostCommand {
            program: "/bin/sh".into(),
            // `$2` is the runtime folder (`--runtime-dir DIR` is appended).
            args: vec!["-c".into(), script.into(), "host".into()],
        };
        let mut options = DriverOptions::new(self.root(), command);
        options.host_ready_timeout = ready_timeout;
        IisDriver::new(options)
    }

    fn task(&self) -> pb::TaskConfig {
        let alloc_dir = self.temp.path().join("alloc");
        std::fs::create_dir_all(alloc_dir.join("web/local")).unwrap();
        let msgpack = common::encode_hcl(
            &config::TaskConfig::spec(),
            r#"
            application { path = "local" }
            binding {
              type = "http"
              port = "http"
            }
            "#,
        );
        pb::TaskConfig {
            id: "0b5c3e1e-1111-2222-3333-444455556666/web/0a1b2c3d".into(),
            name: "web".into(),
            alloc_id: "0b5c3e1e-1111-2222-3333-444455556666".into(),
            alloc_dir: alloc_dir.display().to_string(),
            msgpack_driver_config: msgpack,
            resources: Some(pb::Resources {
                ports: vec![pb::PortMapping {
                    label: "http".into(),
                    value: 18080,
                    to: 0,
                    host_ip: "127.0.0.1".into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn runtime_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        for pid in self.hosts() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn exit_record(code: i32, reason: &str) -> String {
    format!(r#"printf '{{"code":{code},"reason":"{reason}"}}' > "$2/exit.json"; exit {code}"#)
}

async fn start(driver: &IisDriver, task: pb::TaskConfig) -> Result<pb::TaskHandle, tonic::Status> {
    driver
        .start_task(Request::new(pb::StartTaskRequest { task: Some(task) }))
        .await
        .map(|r| r.into_inner().handle.unwrap_or_default())
}

fn assert_nothing_left(scene: &Scene) {
    assert!(scene.hosts().is_empty(), "stand-in host still runs");
    assert!(
        scene.runtime_dirs().is_empty(),
        "{:?}",
        scene.runtime_dirs()
    );
}

#[tokio::test]
async fn a_host_that_never_gets_ready_is_killed_and_the_error_is_recoverable() {
    let scene = Scene::new();
    let driver = scene.driver("sleep 60", Duration::from_millis(800));
    let err = start(&driver, scene.task()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.message().contains("did not become ready"),
        "{}",
        err.message()
    );
    assert!(nomad_plugin::status::is_recoverable(&err));
    assert_nothing_left(&scene);
}

#[tokio::test]
async fn address_in_use_is_recoverable_and_names_the_port() {
    let scene = Scene::new();
    let script = exit_record(3, "cannot bind 0.0.0.0:18080: address in use");
    let driver = scene.driver(&script, Duration::from_secs(10));
    let err = start(&driver, scene.task()).await.unwrap_err();
    assert!(err.message().contains("0.0.0.0:18080"), "{}", err.message());
    assert!(nomad_plugin::status::is_recoverable(&err));
    assert_nothing_left(&scene);
}

#[tokio::test]
async fn a_rejected_config_is_fatal() {
    let scene = Scene::new();
    let script = exit_record(2, "binding[0].certificate: cannot read x.pem");
    let driver = scene.driver(&script, Duration::from_secs(10));
    let err = start(&driver, scene.task()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("binding[0].certificate"),
        "{}",
        err.message()
    );
    assert!(!nomad_plugin::status::is_recoverable(&err));
    assert_nothing_left(&scene);
}

#[tokio::test]
async fn a_crash_without_a_record_is_recoverable() {
    let scene = Scene::new();
    let driver = scene.driver("kill -SEGV $$", Duration::from_secs(10));
    let err = start(&driver, scene.task()).await.unwrap_err();
    assert!(
        err.message().contains("exited before it was ready"),
        "{}",
        err.message()
    );
    assert!(nomad_plugin::status::is_recoverable(&err));
    assert_nothing_left(&scene);
}

#[tokio::test]
async fn a_missing_host_binary_is_recoverable() {
    let scene = Scene::new();
    let mut options = DriverOptions::new(
        scene.root(),
        HostCommand {
            program: Path::new("/nonexistent/nomad_iis").into(),
            args: vec!["host".into()],
        },
    );
    options.host_ready_timeout = Duration::from_secs(1);
    let driver = IisDriver::new(options);
    let err = start(&driver, scene.task()).await.unwrap_err();
    assert!(
        err.message().contains("/nonexistent/nomad_iis"),
        "{}",
        err.message()
    );
    assert!(nomad_plugin::status::is_recoverable(&err));
    assert_nothing_left(&scene);
}

#[tokio::test]
async fn a_bad_task_config_is_invalid_argument_before_anything_starts() {
    let scene = Scene::new();
    let driver = scene.driver("exit 0", Duration::from_secs(1));
    let mut task = scene.task();
    task.msgpack_driver_config = vec![0x81, 0xa1, b'x', 0xc3];
    let err = start(&driver, task).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(!nomad_plugin::status::is_recoverable(&err));
    assert_nothing_left(&scene);
    let err = driver
        .wait_task(Request::new(pb::WaitTaskRequest {
            task_id: "nope".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}
