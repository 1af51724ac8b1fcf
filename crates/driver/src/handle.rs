//! One task's handle: the host it runs, its status, and the watcher that notices the host exit.
//!
//! As in Nomad's rawexec driver, one lock guards all mutable fields and callers get a snapshot.
//! The exit is published once through a watch channel: every `WaitTask`, however many and
//! whenever they come, reads the same stored result.

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use nomad_plugin::proto::drivers::{self as pb, TaskState};
use tokio::sync::watch;

use crate::events::{EventBus, TaskRef};
use crate::process::{self, ProcessIdentity};
use crate::state::DriverState;

/// How often a host that is not our child is checked for life.
pub const PID_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitOutcome {
    /// Exit code; 128 + signal when killed by a signal.
    pub exit_code: i32,
    /// The signal that killed the host, 0 when it exited by itself.
    pub signal: i32,
    /// The reason from the host's exit record, when it left one.
    pub reason: Option<String>,
}

impl ExitOutcome {
    /// Nomad's `ExitResult`.
    pub fn to_proto(&self) -> pb::ExitResult {
        pb::ExitResult {
            exit_code: self.exit_code,
            signal: self.signal,
            oom_killed: false,
        }
    }

    fn from_status(status: std::process::ExitStatus, reason: Option<String>) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Self {
                exit_code: code,
                signal: 0,
                reason,
            },
            (None, Some(sig)) => Self::killed(sig, reason),
            (None, None) => Self {
                exit_code: -1,
                signal: 0,
                reason,
            },
        }
    }

    fn killed(sig: i32, reason: Option<String>) -> Self {
        Self {
            exit_code: 128 + sig,
            signal: sig,
            reason,
        }
    }
}

/// A point-in-time copy of a handle's status.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Running or exited.
    pub state: TaskState,
    /// When the task started.
    pub started_at: SystemTime,
    /// When the host's exit was noticed.
    pub completed_at: Option<SystemTime>,
    /// The exit, once known.
    pub exit: Option<ExitOutcome>,
}

#[derive(Debug)]
struct Fields {
    completed_at: Option<SystemTime>,
    /// Host warnings already sent as task events, so each is sent once.
    warnings_seen: HashSet<String>,
}

/// A tracked task.
#[derive(Debug)]
pub struct TaskHandle {
    /// Nomad's task config as received (echoed in handles and used for event routing).
    config: pb::TaskConfig,
    /// What was persisted for recovery; never changes.
    state: DriverState,
    /// The host process.
    host: ProcessIdentity,
    /// The host's control socket.
    control: control::Client,
    /// All mutable fields, under one lock.
    fields: Mutex<Fields>,
    /// `None` while the host runs; the exit once, and forever after.
    exit: watch::Sender<Option<ExitOutcome>>,
}

impl TaskHandle {
    /// A handle for a running host.
    pub fn new(config: pb::TaskConfig, state: DriverState) -> Arc<Self> {
        let host = ProcessIdentity {
            pid: state.host_pid,
            start_time: state.host_start_time,
        };
        // Per-command deadlines from the task's own pool limits: a recycle waits for new workers.
        let control = control::Client::new(state.runtime_dir.join(control::CONTROL_SOCKET))
            .for_spec(&state.spec);
        let (exit, _) = watch::channel(None);
        Arc::new(Self {
            config,
            state,
            host,
            control,
            fields: Mutex::new(Fields {
                completed_at: None,
                warnings_seen: HashSet::new(),
            }),
            exit,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Fields> {
        self.fields.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Nomad's task id.
    pub fn id(&self) -> &str {
        &self.state.task_id
    }

    /// The task config Nomad sent.
    pub fn config(&self) -> &pb::TaskConfig {
        &self.config
    }

    /// The persisted state.
    pub fn driver_state(&self) -> &DriverState {
        &self.state
    }

    /// The host process.
    pub fn host(&self) -> ProcessIdentity {
        self.host
    }

    /// A client for the host's control socket.
    pub fn control(&self) -> &control::Client {
        &self.control
    }

    /// Which task events about this task are routed to.
    pub fn task_ref(&self) -> TaskRef {
        TaskRef {
            task_id: self.state.task_id.clone(),
            alloc_id: if self.config.alloc_id.is_empty() {
                self.state.spec.alloc_id.clone()
            } else {
                self.config.alloc_id.clone()
            },
            task_name: if self.config.name.is_empty() {
                self.state.spec.task_name.clone()
            } else {
                self.config.name.clone()
            },
        }
    }

    /// The host warnings (`HostStatus::warnings`) not seen before, in order; they count as
    /// seen from now on.
    pub fn unseen_warnings(&self, warnings: &[String]) -> Vec<String> {
        let mut fields = self.lock();
        warnings
            .iter()
            .filter(|w| fields.warnings_seen.insert((*w).clone()))
            .cloned()
            .collect()
    }

    /// Whether the host still runs (as far as the watcher knows).
    pub fn is_running(&self) -> bool {
        self.exit.borrow().is_none()
    }

    /// The exit, once known.
    pub fn exit_outcome(&self) -> Option<ExitOutcome> {
        self.exit.borrow().clone()
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> Snapshot {
        let exit = self.exit_outcome();
        let completed_at = self.lock().completed_at;
        Snapshot {
            state: if exit.is_some() {
                TaskState::Exited
            } else {
                TaskState::Running
            },
            started_at: SystemTime::UNIX_EPOCH
                + Duration::from_nanos(u64::try_from(self.state.started_at).unwrap_or(0)),
            completed_at,
            exit,
        }
    }

    /// Waits until the host has exited and returns how. Returns at once after the exit.
    pub async fn wait(&self) -> ExitOutcome {
        let mut rx = self.exit.subscribe();
        loop {
            if let Some(outcome) = rx.borrow_and_update().clone() {
                return outcome;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`, so this is unreachable; report the
                // host as killed rather than hang.
                return ExitOutcome::killed(9, None);
            }
        }
    }

    /// Waits for the exit at most `limit`; whether it exited.
    pub async fn wait_for(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.wait()).await.is_ok()
    }

    fn record_exit(&self, outcome: ExitOutcome, events: &EventBus) {
        self.lock().completed_at = Some(SystemTime::now());
        // Workers should die with their host; anything left in its group is swept now, while
        // the group id cannot have been reused yet.
        if let Err(e) = process::kill_group_now(self.host.pid) {
            tracing::warn!(pid = self.host.pid, error = %e, "could not sweep the host's process group");
        }
        let message = match (&outcome.reason, outcome.signal) {
            (Some(reason), _) if outcome.exit_code == control::exit_code::POOL_FAILED => {
                format!(
                    "rapid-fail protection stopped an application pool, so the task failed: {reason}"
                )
            }
            (Some(reason), _) => {
                format!("site host exited with code {}: {reason}", outcome.exit_code)
            }
            (None, 0) => format!("site host exited with code {}", outcome.exit_code),
            (None, sig) => format!("site host was killed by signal {sig}"),
        };
        events.emit(&self.task_ref(), message);
        self.exit.send_replace(Some(outcome));
    }

    fn read_exit_record(&self) -> Option<control::ExitRecord> {
        control::files::read_exit_record(&self.state.runtime_dir)
    }

    /// Watches a host this plugin spawned: reaps it and records its real wait status.
    pub fn spawn_child_watcher(
        self: &Arc<Self>,
        mut child: tokio::process::Child,
        events: EventBus,
    ) {
        let handle = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = match child.wait().await {
                Ok(status) => {
                    let reason = handle.read_exit_record().map(|r| r.reason);
                    ExitOutcome::from_status(status, reason)
                }
                Err(e) => {
                    // Waiting itself failed (should not happen for our own child): fall back to
                    // watching the pid so the exit is still noticed.
                    tracing::warn!(pid = handle.host.pid, error = %e, "waiting for the host failed");
                    handle.poll_until_gone().await
                }
            };
            handle.record_exit(outcome, &events);
        });
    }

    /// Watches a host this plugin did not spawn (after a recovery): polls its pid and start
    /// time, then reads its exit record; with none it was killed (signal 9).
    pub fn spawn_pid_watcher(self: &Arc<Self>, events: EventBus) {
        let handle = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = handle.poll_until_gone().await;
            handle.record_exit(outcome, &events);
        });
    }

    async fn poll_until_gone(&self) -> ExitOutcome {
        while self.host.is_alive() {
            tokio::time::sleep(PID_POLL_INTERVAL).await;
        }
        match self.read_exit_record() {
            Some(record) => ExitOutcome {
                exit_code: record.code,
                signal: 0,
                reason: Some(record.reason),
            },
            None => ExitOutcome::killed(9, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{HostCommand, host_command};

    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = process::kill_group_now(self.0);
        }
    }

    fn shell(script: &str) -> HostCommand {
        HostCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into(), "sh".into()],
        }
    }

    /// The handle of the live process `pid`, as if it were the host running in `dir`.
    fn handle_of(pid: u32, dir: &std::path::Path) -> (Arc<TaskHandle>, ProcessIdentity) {
        let identity = ProcessIdentity::of(pid).unwrap();
        let state = crate::test_support::driver_state(pid, identity.start_time, dir, vec![]);
        (TaskHandle::new(pb::TaskConfig::default(), state), identity)
    }

    /// Starts `script` as a stand-in host in `dir`, watched as a child of this process; the
    /// guard kills its group.
    fn watched_child(
        script: &str,
        dir: &std::path::Path,
        events: EventBus,
    ) -> (Arc<TaskHandle>, ProcessIdentity, KillOnDrop) {
        let child = host_command(&shell(script), dir).spawn().unwrap();
        let pid = child.id().unwrap();
        let guard = KillOnDrop(pid);
        let (handle, identity) = handle_of(pid, dir);
        handle.spawn_child_watcher(child, events);
        (handle, identity, guard)
    }

    #[tokio::test]
    async fn child_exit_code_reaches_every_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            "sleep 0.3; echo '{{\"code\":2,\"reason\":\"bad cert\"}}' > {}/exit.json; exit 2",
            dir.path().display()
        );
        let bus = EventBus::new();
        let mut events = bus.subscribe();
        let (handle, _, _guard) = watched_child(&script, dir.path(), bus);
        let (a, b) = tokio::join!(handle.wait(), handle.wait());
        assert_eq!(a, b);
        assert_eq!(a.exit_code, 2);
        assert_eq!(a.reason.as_deref(), Some("bad cert"));
        assert_eq!(handle.wait().await, a);
        assert_eq!(handle.snapshot().state, TaskState::Exited);
        assert!(handle.snapshot().completed_at.is_some());
        let event = events.recv().await.unwrap();
        assert!(event.message.contains("bad cert"), "{}", event.message);
    }

    #[tokio::test]
    async fn killed_child_reports_the_signal() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, identity, _guard) = watched_child("sleep 30", dir.path(), EventBus::new());
        assert!(handle.is_running());
        assert!(!handle.wait_for(Duration::from_millis(50)).await);
        identity.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
        let outcome = handle.wait().await;
        assert_eq!((outcome.exit_code, outcome.signal), (143, 15));
    }

    /// Runs `background` as a grandchild this process is not the parent of (`sh` starts it in
    /// the background and exits, so it is reparented away); its pid and a guard for its group.
    async fn orphan(background: &str, dir: &std::path::Path) -> (u32, KillOnDrop) {
        let pid_file = dir.join("pid");
        let script = format!("{background} & echo $! > {}", pid_file.display());
        let mut child = host_command(&shell(&script), dir).spawn().unwrap();
        let guard = KillOnDrop(child.id().unwrap());
        child.wait().await.unwrap();
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        (pid, guard)
    }

    #[tokio::test]
    async fn watched_pid_without_record_counts_as_killed() {
        let dir = tempfile::tempdir().unwrap();
        let (pid, _guard) = orphan("sleep 30", dir.path()).await;
        let (handle, _) = handle_of(pid, dir.path());
        handle.spawn_pid_watcher(EventBus::new());
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let outcome = handle.wait().await;
        assert_eq!((outcome.exit_code, outcome.signal), (137, 9));
    }

    #[tokio::test]
    async fn watched_pid_with_a_record_reports_its_code_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join(control::EXIT_RECORD);
        let background = format!(
            "(sleep 0.5; echo '{{\"code\":4,\"reason\":\"pool api stopped\"}}' > {}; exit 4)",
            record.display()
        );
        let (pid, _guard) = orphan(&background, dir.path()).await;
        let (handle, _) = handle_of(pid, dir.path());
        let bus = EventBus::new();
        let mut events = bus.subscribe();
        handle.spawn_pid_watcher(bus);
        let outcome = handle.wait().await;
        assert_eq!(
            outcome,
            ExitOutcome {
                exit_code: 4,
                signal: 0,
                reason: Some("pool api stopped".into()),
            }
        );
        let event = events.recv().await.unwrap();
        assert!(
            event.message.contains("pool api stopped"),
            "{}",
            event.message
        );
        assert!(
            event.message.starts_with("rapid-fail protection"),
            "{}",
            event.message
        );
    }

    #[test]
    fn each_warning_is_new_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::test_support::driver_state(1, 0, dir.path(), vec![]);
        let handle = TaskHandle::new(pb::TaskConfig::default(), state);
        let first = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(handle.unseen_warnings(&first), first);
        assert!(handle.unseen_warnings(&first).is_empty());
        let later = vec!["b".to_owned(), "c".to_owned(), "c".to_owned()];
        assert_eq!(handle.unseen_warnings(&later), vec!["c".to_owned()]);
    }
}
