//! Commands, replies and status of the host's control API, and the exit record.
//!
//! Wire: the client connects to `control.sock`, writes one [`Command`] as a JSON line, reads one
//! [`Reply`] as a JSON line, and the connection ends. A failed command changes nothing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Version of the control protocol this crate speaks. A host reports its own in
/// [`HostStatus::protocol`]; hosts from before versioning report nothing and read as 1.
/// Version 2 added worker processes, application status, warnings and per-pool counters.
pub const PROTOCOL_VERSION: u32 = 2;

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

/// One pool's status.
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

/// The host's status.
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

/// Written as `exit.json` into the runtime folder just before the host exits, so a waiter that is
/// not the host's parent (a restarted plugin) learns the exit code and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Process exit code.
    pub code: i32,
    /// Why the host exited, e.g. `stopped by control command` or a start-up failure naming the field.
    pub reason: String,
}
