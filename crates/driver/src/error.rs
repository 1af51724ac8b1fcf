//! The driver's errors and the one place they become gRPC statuses.
//!
//! Nomad ignores `StartTaskResponse.result`: a failure must be an error status. Whether Nomad's
//! restart policy may retry it is decided by a `RecoverableError{recoverable: true}` detail in the
//! status (see `nomad_plugin::status`). Transient failures (a port in use, a host that did not
//! become ready, an I/O error) are recoverable; a bad job config is not, since retrying cannot
//! fix it.

use std::path::PathBuf;

use tonic::{Code, Status};

use nomad_plugin::status::{fatal, recoverable};

/// Everything that can go wrong in a driver RPC.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A required request field is missing or malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The task's or driver's configuration is invalid (message = field path: problem).
    #[error("{0}")]
    InvalidConfig(String),
    /// The task id is not tracked by this plugin process.
    #[error("task {0:?} is not known to this plugin")]
    UnknownTask(String),
    /// StartTask for an id that is already tracked.
    #[error("task {0:?} was already started")]
    AlreadyStarted(String),
    /// DestroyTask without force on a running task.
    #[error("task {0:?} is still running: stop it first or destroy it with force")]
    StillRunning(String),
    /// An action that needs a running task.
    #[error("task {0:?} is not running")]
    NotRunning(String),
    /// `enabled = false` in the driver config.
    #[error("the iis driver is disabled on this node (plugin config enabled = false)")]
    Disabled,
    /// SignalTask with a signal we do not map.
    #[error(
        "unsupported signal {0:?} (supported: START, STOP, RECYCLE, SIGHUP, SIGINT, SIGTERM, SIGKILL)"
    )]
    UnsupportedSignal(String),
    /// The host rejected its configuration at start (exit code 2): retrying cannot help.
    #[error("site host rejected its configuration: {0}")]
    HostConfig(String),
    /// The host failed in a way a retry may fix (port in use, timeout, crash at start).
    #[error("{0}")]
    HostStart(String),
    /// On recovery: the host is no longer there (or no longer answers).
    #[error("site host of task {task_id:?} is gone: {detail}")]
    HostGone {
        /// The task.
        task_id: String,
        /// What was found.
        detail: String,
    },
    /// The host refused or did not answer a control command.
    #[error("site host of task {task_id:?}: {source}")]
    Control {
        /// The task.
        task_id: String,
        /// Cause.
        source: control::ClientError,
    },
    /// Persisted state could not be read.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The runtime folder could not be prepared.
    #[error(transparent)]
    RuntimeDir(#[from] crate::runtime::RuntimeDirError),
    /// Spawning or signalling the host failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The file or program.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A pool identity could not be assigned (unknown user, no free id, ACLs).
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// The RPC is not offered by this driver.
    #[error("{0} is not supported by the iis driver")]
    Unsupported(&'static str),
}

impl From<DriverError> for Status {
    fn from(err: DriverError) -> Self {
        let message = err.to_string();
        match err {
            DriverError::BadRequest(_)
            | DriverError::InvalidConfig(_)
            | DriverError::UnsupportedSignal(_)
            | DriverError::HostConfig(_)
            | DriverError::State(_) => fatal(Code::InvalidArgument, message),
            DriverError::UnknownTask(_) => fatal(Code::NotFound, message),
            DriverError::HostGone { .. } => fatal(Code::NotFound, message),
            DriverError::AlreadyStarted(_) => fatal(Code::AlreadyExists, message),
            DriverError::StillRunning(_) | DriverError::NotRunning(_) | DriverError::Disabled => {
                fatal(Code::FailedPrecondition, message)
            }
            DriverError::Unsupported(_) => fatal(Code::Unimplemented, message),
            // Transient: attach RecoverableError so Nomad's restart policy applies.
            DriverError::HostStart(_) => recoverable(Code::Unavailable, message),
            DriverError::Control { .. } => recoverable(Code::Unavailable, message),
            DriverError::RuntimeDir(_) | DriverError::Io { .. } => {
                recoverable(Code::Internal, message)
            }
            DriverError::Identity(e) if e.is_transient() => recoverable(Code::Internal, message),
            DriverError::Identity(_) => fatal(Code::InvalidArgument, message),
        }
    }
}
