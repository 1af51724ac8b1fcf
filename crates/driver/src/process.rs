//! The operating-system side of a site host process: spawning it detached, recognising it again
//! by pid and start time, and signalling it or its process group.
//!
//! This is the only module of the crate with `unsafe` code: `CommandExt::pre_exec` is `unsafe`
//! because the closure runs in the forked child before `exec`, where only async-signal-safe calls
//! are allowed. Ours calls `setsid(2)` and nothing else, which is async-signal-safe, allocates
//! nothing and touches no lock.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// How to start a site host: `program args… --runtime-dir DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCommand {
    /// The executable (normally the plugin's own binary).
    pub program: PathBuf,
    /// Arguments placed before `--runtime-dir DIR` (normally `["host"]`).
    pub args: Vec<OsString>,
}

/// Where Linux shows the running binary. Executing it runs the very file this process runs,
/// even after that file was replaced or deleted on disk (an upgrade before the agent restarts),
/// so hosts always match the plugin that starts them.
const SELF_EXE: &str = "/proc/self/exe";

impl HostCommand {
    /// The plugin binary's own `host` subcommand: through `/proc/self/exe` where procfs has it,
    /// else `current_exe()`.
    pub fn current_exe() -> io::Result<Self> {
        let program = if Path::new(SELF_EXE).exists() {
            PathBuf::from(SELF_EXE)
        } else {
            std::env::current_exe()?
        };
        Ok(Self {
            program,
            args: vec![OsString::from("host")],
        })
    }
}

/// A process recognised by pid *and* start time (clock ticks after boot, field 22 of
/// `/proc/PID/stat`), because pids are reused, above all after a reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks after boot.
    pub start_time: u64,
}

impl ProcessIdentity {
    /// Reads the identity of a live process; `None` when it is gone or a zombie.
    pub fn of(pid: u32) -> Option<Self> {
        let stat = read_stat(pid)?;
        if stat.state == 'Z' || stat.state == 'X' {
            return None;
        }
        Some(Self {
            pid,
            start_time: stat.starttime,
        })
    }

    /// Whether this very process still runs (not a zombie, same start time).
    pub fn is_alive(&self) -> bool {
        Self::of(self.pid).is_some_and(|now| now.start_time == self.start_time)
    }

    /// Whether this process was started with `runtime_dir` as one of its arguments, as every
    /// site host is (`… --runtime-dir DIR`). Pid and start time alone can match a stranger
    /// after a reboot; this tells a host from it before anything is sent to its group.
    pub fn is_host_of(&self, runtime_dir: &Path) -> bool {
        let Ok(pid) = i32::try_from(self.pid) else {
            return false;
        };
        let Ok(arguments) = procfs::process::Process::new(pid).and_then(|p| p.cmdline()) else {
            return false;
        };
        let wanted = runtime_dir.as_os_str();
        self.is_alive()
            && arguments
                .iter()
                .any(|argument| std::ffi::OsStr::new(argument) == wanted)
    }

    /// Sends `sig` to this process if it is still the same process.
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        if !self.is_alive() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("process {} is gone", self.pid),
            ));
        }
        signal::kill(to_pid(self.pid)?, sig).map_err(io::Error::from)
    }

    /// Sends SIGKILL to the process group this process leads (the host and its workers), if it
    /// is still the same process.
    pub fn kill_group(&self) -> io::Result<()> {
        if !self.is_alive() {
            return Ok(());
        }
        kill_group_now(self.pid)
    }
}

/// Sends SIGKILL to process group `pgid` without checking who leads it. Only for the moment right
/// after its leader exited, to sweep workers left behind: a pid is not handed out again while a
/// process group of that id still has members, so this cannot hit a stranger's group then.
pub fn kill_group_now(pgid: u32) -> io::Result<()> {
    match signal::killpg(to_pid(pgid)?, Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

fn to_pid(pid: u32) -> io::Result<Pid> {
    // Pid 0 and values above i32::MAX would address process groups or every process.
    match i32::try_from(pid) {
        Ok(p) if p > 0 => Ok(Pid::from_raw(p)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid pid {pid}"),
        )),
    }
}

fn read_stat(pid: u32) -> Option<procfs::process::Stat> {
    let pid = i32::try_from(pid).ok().filter(|p| *p > 0)?;
    procfs::process::Process::new(pid).ok()?.stat().ok()
}

/// The command that starts `command … --runtime-dir runtime_dir` detached from the plugin: in
/// its own session and process group (so a signal to the plugin's group, or the agent's terminal
/// going away, never reaches it), stdin/stdout/stderr on `/dev/null` (the plugin's stdout carries
/// the go-plugin handshake), and with the plugin's environment minus Nomad's magic cookie.
///
/// Built on [`control::launch::host_command`]; start it with [`control::launch::spawn_ready`].
/// The child must be waited for (the plugin is its parent and reaps it).
pub fn host_command(command: &HostCommand, runtime_dir: &Path) -> tokio::process::Command {
    let mut cmd = control::launch::host_command(&command.program, &command.args, runtime_dir);
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/")
        // A host outlives the plugin; dropping the handle must never kill it.
        .kill_on_drop(false);
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the child between fork and exec and only calls setsid(2),
    // which is async-signal-safe and does not allocate.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            Ok(())
        });
    }
    cmd
}

/// Parses a signal name as Nomad passes it (`SIGINT`, also `INT` or `sigint`).
pub fn parse_signal(name: &str) -> Option<Signal> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<Signal>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reap(Option<tokio::process::Child>);
    impl Drop for Reap {
        fn drop(&mut self) {
            if let Some(child) = self.0.as_mut() {
                if let Some(pid) = child.id() {
                    let _ = kill_group_now(pid);
                }
                let _ = child.start_kill();
            }
        }
    }

    #[tokio::test]
    async fn spawned_host_leads_its_own_session_and_group_and_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let command = HostCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "sleep 30".into(), "sh".into()],
        };
        let child = host_command(&command, dir.path()).spawn().unwrap();
        let mut guard = Reap(Some(child));
        let pid = guard.0.as_ref().unwrap().id().unwrap();
        let stat = read_stat(pid).unwrap();
        assert_eq!(stat.session, pid as i32);
        assert_eq!(stat.pgrp, pid as i32);
        let identity = ProcessIdentity::of(pid).unwrap();
        assert!(identity.is_alive());
        // A host is told apart from a stranger with the same pid by its runtime folder.
        assert!(identity.is_host_of(dir.path()));
        assert!(!identity.is_host_of(&dir.path().join("other")));
        let me = ProcessIdentity::of(std::process::id()).unwrap();
        assert!(!me.is_host_of(dir.path()));
        identity.kill_group().unwrap();
        let status = guard.0.as_mut().unwrap().wait().await.unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
        assert!(!identity.is_alive());
        assert!(!identity.is_host_of(dir.path()));
        guard.0 = None;
    }

    #[test]
    fn hosts_do_not_inherit_the_plugin_cookie() {
        assert_eq!(
            control::launch::PLUGIN_COOKIE_VAR,
            nomad_plugin::transport::MAGIC_COOKIE_KEY
        );
    }

    #[test]
    fn a_stale_identity_is_not_alive() {
        let me = ProcessIdentity::of(std::process::id()).unwrap();
        assert!(me.is_alive());
        let stale = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!stale.is_alive());
        assert!(stale.signal(Signal::SIGTERM).is_err());
    }

    #[test]
    fn signal_names_parse_like_nomad_sends_them() {
        assert_eq!(parse_signal("SIGINT"), Some(Signal::SIGINT));
        assert_eq!(parse_signal("term"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("SIGBOGUS"), None);
    }
}
