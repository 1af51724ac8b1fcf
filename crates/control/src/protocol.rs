//! Commands, replies and status of the host's control API, and the exit record.
//!
//! Wire: the client connects to `control.sock`, writes one [`Command`] as a JSON line, reads one
//! [`Reply`] as a JSON line, and the connection ends. A failed command changes nothing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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
