//! Starting a site host and waiting until it is ready: the one way the driver, standalone mode
//! and the tests do it.
//!
//! A host is *ready* when its control socket answers `status` (it binds that socket last, so an
//! answer means every listener is up). A host that exits first is not ready, and the reason is
//! the one in its `exit.json` (see [`crate::files`]), or its wait status when it left none.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use crate::client::Client;
use crate::files::read_exit_record;
use crate::protocol::{ExitRecord, HostStatus};

/// Nomad's plugin magic-cookie variable. A host must not inherit it: a process that has it could
/// be taken for a plugin instance.
pub const PLUGIN_COOKIE_VAR: &str = "NOMAD_PLUGIN_MAGIC_COOKIE";

/// Longest pause between two readiness probes; the first ones come after a millisecond, as a
/// host is usually ready within a few.
const MAX_PROBE_PAUSE: Duration = Duration::from_millis(50);

/// Why a host did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The program could not be started.
    #[error("cannot start the site host {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The host exited before it was ready.
    #[error("{}", exited_message(*.status, .record.as_ref()))]
    Exited {
        /// Its wait status.
        status: ExitStatus,
        /// The record it left, if any.
        record: Option<ExitRecord>,
    },
    /// The control socket did not answer in time (the host was then killed).
    #[error("site host did not become ready within {within:?}")]
    NotReady {
        /// The time limit.
        within: Duration,
    },
    /// Asking whether the host still runs failed.
    #[error("waiting for the site host: {0}")]
    Wait(io::Error),
}

fn exited_message(status: ExitStatus, record: Option<&ExitRecord>) -> String {
    match record {
        Some(record) => record.reason.clone(),
        None => format!("site host exited before it was ready ({status})"),
    }
}

impl LaunchError {
    /// The host's exit code ([`crate::exit_code`]) when it exited: from its record, else from
    /// its wait status.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Self::Exited { status, record } => record.as_ref().map(|r| r.code).or(status.code()),
            _ => None,
        }
    }
}

/// `program args… --runtime-dir DIR` with stdin on `/dev/null`, without the plugin cookie, and
/// killed when the handle is dropped. Callers set stdout/stderr, the working folder, whether the
/// host outlives its handle (`kill_on_drop(false)`), and what runs before `exec`.
pub fn host_command(
    program: &Path,
    args: &[OsString],
    runtime_dir: &Path,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .arg("--runtime-dir")
        .arg(runtime_dir)
        .env_remove(PLUGIN_COOKIE_VAR)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Starts `command` (a host for `runtime_dir`) and waits at most `within` until it is ready.
///
/// On any failure the child is killed and reaped before this returns. `sweep` is called with its
/// pid first (after the kill, before the reaping, while the pid cannot have been reused), so a
/// caller that started the host as a process-group leader can end the workers with it.
pub async fn spawn_ready(
    command: &mut tokio::process::Command,
    runtime_dir: &Path,
    within: Duration,
    sweep: impl FnOnce(u32),
) -> Result<(tokio::process::Child, HostStatus), LaunchError> {
    let mut child = command.spawn().map_err(|source| LaunchError::Spawn {
        program: PathBuf::from(command.as_std().get_program()),
        source,
    })?;
    let pid = child.id();
    match wait_ready(runtime_dir, within, || child.try_wait()).await {
        Ok(status) => Ok((child, status)),
        Err(error) => {
            let _ = child.start_kill();
            if let Some(pid) = pid {
                sweep(pid);
            }
            let _ = child.wait().await;
            Err(error)
        }
    }
}

/// Waits at most `within` until the host of `runtime_dir` answers `status` on its control
/// socket. `exited` says whether the host process has exited (`Child::try_wait` of either std
/// or tokio); it is asked before every probe. The host is not killed here.
pub async fn wait_ready(
    runtime_dir: &Path,
    within: Duration,
    mut exited: impl FnMut() -> io::Result<Option<ExitStatus>>,
) -> Result<HostStatus, LaunchError> {
    let deadline = tokio::time::Instant::now() + within;
    let client = Client::new(runtime_dir.join(crate::CONTROL_SOCKET))
        .with_timeout(Duration::from_secs(2).min(within.max(Duration::from_millis(100))));
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = exited().map_err(LaunchError::Wait)? {
            return Err(LaunchError::Exited {
                status,
                record: read_exit_record(runtime_dir),
            });
        }
        if client.socket().exists()
            && let Ok(status) = client.status().await
        {
            return Ok(status);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(LaunchError::NotReady { within });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PROBE_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{PROTOCOL_VERSION, Reply};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    fn sh(script: &str, dir: &Path) -> tokio::process::Command {
        // `sh -c SCRIPT sh --runtime-dir DIR`: the folder is `$2`.
        host_command(
            Path::new("/bin/sh"),
            &["-c".into(), script.into(), "sh".into()],
            dir,
        )
    }

    #[tokio::test]
    async fn a_host_that_exits_first_is_reported_with_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(
            r#"printf '{"code":2,"reason":"binding[0].certificate: bad"}'"#,
            r#" > "$2/exit.json"; exit 2"#
        );
        let mut swept = None;
        let err = spawn_ready(
            &mut sh(script, dir.path()),
            dir.path(),
            Duration::from_secs(30),
            |pid| swept = Some(pid),
        )
        .await
        .unwrap_err();
        assert!(swept.is_some());
        assert_eq!(err.exit_code(), Some(crate::exit_code::CONFIG));
        assert_eq!(err.to_string(), "binding[0].certificate: bad");
        // A host that leaves no record is reported by its wait status.
        let other = tempfile::tempdir().unwrap();
        let silent = spawn_ready(
            &mut sh("exit 5", other.path()),
            other.path(),
            Duration::from_secs(30),
            |_| {},
        )
        .await
        .unwrap_err();
        assert_eq!(silent.exit_code(), Some(5));
        assert!(
            silent.to_string().contains("exited before it was ready"),
            "{silent}"
        );
    }

    #[tokio::test]
    async fn a_host_that_never_answers_is_killed_after_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut swept = None;
        let err = spawn_ready(
            &mut sh("exec sleep 30", dir.path()),
            dir.path(),
            Duration::from_millis(200),
            |pid| swept = Some(pid),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, LaunchError::NotReady { .. }), "{err}");
        // Swept, then killed and reaped: the pid names no process any more.
        let pid = swept.expect("the sweep was not called");
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[tokio::test]
    async fn a_host_is_ready_when_its_socket_answers_status() {
        let dir = tempfile::tempdir().unwrap();
        let listener =
            tokio::net::UnixListener::bind(dir.path().join(crate::CONTROL_SOCKET)).unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            BufReader::new(read).read_line(&mut line).await.unwrap();
            assert_eq!(line.trim(), r#"{"command":"status"}"#);
            let status = HostStatus {
                pid: 1,
                site_name: "s".into(),
                listening: vec!["127.0.0.1:1".into()],
                pools: Vec::new(),
                dropped_log_lines: 0,
                protocol: PROTOCOL_VERSION,
                applications: Vec::new(),
                warnings: Vec::new(),
            };
            let mut reply = serde_json::to_vec(&Reply::Ok { status }).unwrap();
            reply.push(b'\n');
            write.write_all(&reply).await.unwrap();
        });
        let (mut child, status) = spawn_ready(
            &mut sh("exec sleep 30", dir.path()),
            dir.path(),
            Duration::from_secs(30),
            |_| panic!("a ready host is not swept"),
        )
        .await
        .unwrap();
        assert_eq!(status.listening, vec!["127.0.0.1:1"]);
        server.await.unwrap();
        child.kill().await.unwrap();
    }
}
