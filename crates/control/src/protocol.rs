//! Commands, replies and status of the host's control API, and the exit record.
//!
//! Wire: the client connects to `control.sock`, writes one [`Command`] as a JSON line, reads one
//! [`Reply`] as a JSON line, and the connection ends. A failed command changes nothing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Version of the control protocol this crate speaks. A host reports its own in
/// [`HostStatus::protocol`]; hosts from before versioning report nothing and read as 1.
/// Version 2 added worker processes, application status, warnings and per-pool counters.
///
/// Hosts outlive plugin upgrades, so a newer client must drive an older host. The rules:
/// - a field added to a status or reply type has `#[serde(default)]` (an older host leaves it
///   out) and the version that brought it is written beside it;
/// - a field added to a command is optional and means "as before" when absent (an older host
///   ignores fields it does not know);
/// - anything else new is a new [`Command`] whose [`Command::min_protocol`] names its version;
///   [`HostStatus::require`] and the client's [`Unsupported`] error say what an older host
///   cannot do instead of failing on a decode error;
/// - every change bumps this constant.
pub const PROTOCOL_VERSION: u32 = 2;

/// What an older host cannot do: it speaks `host` and `what` needs `needs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "site host speaks control protocol {host}; {what} needs {needs} (restart the task to get a \
     host of this version)"
)]
pub struct Unsupported {
    /// The host's protocol version.
    pub host: u32,
    /// The version the feature needs.
    pub needs: u32,
    /// The feature, e.g. `` `recycle_pool` `` or `application status`.
    pub what: String,
}

fn protocol_v1() -> u32 {
    1
}

/// A request to the host. Pool-scoped verbs act on every pool when `pool` is `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "command")]
pub enum Command {
    /// Report the host's and pools' state.
    Status,
    /// Start a stopped pool (or all).
    StartPool {
        /// Short pool name; `None` = all pools.
        pool: Option<String>,
    },
    /// Stop a pool (or all); the task keeps running and answers 503 / drops connections.
    StopPool {
        /// Short pool name; `None` = all pools.
        pool: Option<String>,
    },
    /// Recycle a pool (or all): new worker first unless overlapped recycle is disabled; a static
    /// pool flushes its file cache.
    RecyclePool {
        /// Short pool name; `None` = all pools.
        pool: Option<String>,
    },
    /// Stop accepting, drain in-flight requests for at most `grace`, stop workers, exit.
    Shutdown {
        /// Drain time limit (the driver passes min(Nomad's timeout, shutdown_time_limit)).
        grace: Duration,
    },
}

impl Command {
    /// The command's name on the wire (`status`, `recycle_pool`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::StartPool { .. } => "start_pool",
            Self::StopPool { .. } => "stop_pool",
            Self::RecyclePool { .. } => "recycle_pool",
            Self::Shutdown { .. } => "shutdown",
        }
    }

    /// The first protocol version whose hosts understand this command. Every command of today
    /// was in version 1; a command added later returns its version here.
    pub fn min_protocol(&self) -> u32 {
        match self {
            Self::Status
            | Self::StartPool { .. }
            | Self::StopPool { .. }
            | Self::RecyclePool { .. }
            | Self::Shutdown { .. } => 1,
        }
    }

    /// Whether a host answering `message` to this command did not understand it at all (an
    /// older host does not know the command), rather than refusing it.
    pub fn not_understood(message: &str) -> bool {
        message.starts_with(BAD_COMMAND)
    }
}

/// How a host starts its error message for a request line it cannot decode (an unknown command
/// included): `bad command: …`. Part of the protocol since version 1.
pub const BAD_COMMAND: &str = "bad command";

/// The host's answer to one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reply")]
pub enum Reply {
    /// The command was carried out; the host's state afterwards.
    Ok {
        /// Status after the command.
        status: HostStatus,
    },
    /// The command failed and changed nothing.
    Error {
        /// Lowercase message naming the object, e.g. `unknown pool "api"`.
        message: String,
    },
}

/// The state of a pool, as IIS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolState {
    /// Being started.
    Starting,
    /// Serving.
    Started,
    /// Draining before stop.
    Stopping,
    /// Stopped: answers 503 or drops connections.
    Stopped,
}

/// One pool's status. Fields after `recycles` came with protocol version 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Short pool name.
    pub name: String,
    /// IIS-style full name.
    pub full_name: String,
    /// Current state.
    pub state: PoolState,
    /// Pids of its running worker processes (empty for static pools).
    pub worker_pids: Vec<u32>,
    /// How many times it was recycled since the host started.
    pub recycles: u64,
    /// Its running workers, one per process application while started.
    #[serde(default)]
    pub workers: Vec<WorkerStatus>,
    /// Worker processes started since the host started.
    #[serde(default)]
    pub worker_starts: u64,
    /// Worker failures (crash, start time limit) since the host started; rapid-fail protection
    /// counts the recent ones.
    #[serde(default)]
    pub worker_failures: u64,
    /// The last worker exit, e.g. `worker 1234 of /api exited with code 3`.
    #[serde(default)]
    pub last_worker_exit: Option<String>,
    /// `true` for a pool that serves only static files (its process is the host itself).
    #[serde(default)]
    pub is_static: bool,
}

impl PoolStatus {
    /// Whether at least one worker process runs (IIS's `isWorkerProcessRunning`).
    pub fn is_worker_running(&self) -> bool {
        !self.worker_pids.is_empty()
    }
}

/// One running worker process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Its pid.
    pub pid: u32,
    /// Alias of the application it serves.
    pub application: String,
    /// Loopback port it listens on.
    pub port: u16,
    /// When it was started, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
}

/// What serves an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationKind {
    /// Static files.
    Static,
    /// A worker from `web.config`'s `<aspNetCore>` (ASP.NET Core Module, out of process).
    AspNetCore,
    /// A worker from `web.config`'s `<httpPlatform>` (HttpPlatformHandler).
    HttpPlatform,
    /// A worker from the job's `process {}` block.
    Process,
}

/// One application of the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationStatus {
    /// Normalised alias.
    pub alias: String,
    /// Short pool name.
    pub pool: String,
    /// Absolute folder.
    pub path: std::path::PathBuf,
    /// What serves it.
    pub kind: ApplicationKind,
}

/// The host's status. Fields after `dropped_log_lines` came with protocol version 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    /// Pid of the host process.
    pub pid: u32,
    /// Site name.
    pub site_name: String,
    /// Addresses actually bound, `ip:port`.
    pub listening: Vec<String>,
    /// Every pool.
    pub pools: Vec<PoolStatus>,
    /// Access-log lines dropped because nobody read the stdout FIFO.
    #[serde(default)]
    pub dropped_log_lines: u64,
    /// The control protocol version of the host ([`PROTOCOL_VERSION`]; 1 for older hosts).
    #[serde(default = "protocol_v1")]
    pub protocol: u32,
    /// Its applications (empty from a version 1 host).
    #[serde(default)]
    pub applications: Vec<ApplicationStatus>,
    /// Things the operator should know that did not stop the host, e.g.
    /// `application[0]: hostingModel="inprocess" runs out of process on Linux`. The driver
    /// turns each into a task event once.
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl HostStatus {
    /// Fails with [`Unsupported`] when this host speaks a protocol older than `needs`, naming
    /// `what` cannot be had (e.g. `application status` from a version 1 host, whose status simply
    /// leaves the field out).
    pub fn require(&self, needs: u32, what: impl Into<String>) -> Result<(), Unsupported> {
        if self.protocol >= needs {
            Ok(())
        } else {
            Err(Unsupported {
                host: self.protocol,
                needs,
                what: what.into(),
            })
        }
    }

    /// What a host of this status cannot report that this crate knows about, one line each,
    /// empty for a host of the current version.
    pub fn missing_features(&self) -> Vec<Unsupported> {
        [(2, "worker, application and warning status")]
            .into_iter()
            .filter_map(|(needs, what)| self.require(needs, what).err())
            .collect()
    }
}

/// Written as `exit.json` into the runtime folder just before the host exits, so a waiter that is
/// not the host's parent (a restarted plugin) learns the exit code and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Process exit code.
    pub code: i32,
    /// Why the host exited, e.g. `stopped by control command` or a start-up failure naming the field.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status exactly as a version 1 host wrote it (before `protocol` existed).
    const V1_STATUS: &str = r#"{"pid":4242,"site_name":"nomad-a-web","listening":["0.0.0.0:8080"],
        "pools":[{"name":"default","full_name":"nomad-a-web","state":"Started",
        "worker_pids":[4243],"recycles":1}]}"#;

    #[test]
    fn a_version_1_status_decodes_with_safe_defaults() {
        let status: HostStatus = serde_json::from_str(V1_STATUS).unwrap();
        assert_eq!(status.protocol, 1);
        assert_eq!(status.pid, 4242);
        assert_eq!(status.dropped_log_lines, 0);
        assert!(status.applications.is_empty() && status.warnings.is_empty());
        let pool = &status.pools[0];
        assert_eq!(pool.worker_pids, vec![4243]);
        assert!(pool.workers.is_empty());
        assert_eq!((pool.worker_starts, pool.worker_failures), (0, 0));
        assert!(pool.last_worker_exit.is_none() && !pool.is_static);
        let reply: Reply =
            serde_json::from_str(&format!(r#"{{"reply":"ok","status":{V1_STATUS}}}"#)).unwrap();
        assert!(matches!(reply, Reply::Ok { status } if status.protocol == 1));
    }

    #[test]
    fn an_older_host_is_told_apart_and_named_in_the_error() {
        let old: HostStatus = serde_json::from_str(V1_STATUS).unwrap();
        let err = old.require(2, "application status").unwrap_err();
        assert_eq!(
            err.to_string(),
            "site host speaks control protocol 1; application status needs 2 (restart the task \
             to get a host of this version)"
        );
        assert_eq!(old.missing_features().len(), 1);
        let current = HostStatus {
            protocol: PROTOCOL_VERSION,
            ..old
        };
        assert!(current.require(2, "application status").is_ok());
        assert!(current.missing_features().is_empty());
    }

    #[test]
    fn commands_keep_their_version_1_wire_form() {
        for (command, wire) in [
            (Command::Status, r#"{"command":"status"}"#),
            (
                Command::RecyclePool { pool: None },
                r#"{"command":"recycle_pool","pool":null}"#,
            ),
            (
                Command::Shutdown {
                    grace: Duration::from_secs(5),
                },
                r#"{"command":"shutdown","grace":{"secs":5,"nanos":0}}"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&command).unwrap(), wire);
            assert_eq!(command.min_protocol(), 1);
            assert!(wire.contains(command.name()));
        }
        // What a host answers for a command it does not know.
        let unknown = serde_json::from_str::<Command>(r#"{"command":"capture_dump"}"#)
            .map(|_| ())
            .unwrap_err();
        assert!(Command::not_understood(&format!(
            "{BAD_COMMAND}: {unknown}"
        )));
        assert!(!Command::not_understood("unknown pool \"api\""));
    }
}
