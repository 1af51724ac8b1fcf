//! An async client for a host's control socket.
//!
//! Each command gets its own deadline: a status answers at once, but a start or recycle waits
//! for workers to start and old ones to stop. With the host's spec known
//! ([`Client::for_spec`]) the deadline is [`crate::command_deadline`]; without it, the same
//! rule with IIS's default limits (90 s each). [`Client::with_timeout`] sets one limit for
//! every command instead.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use std::sync::Arc;

use crate::protocol::{Command, HostStatus, Reply};
use crate::spec::HostSpec;

/// Failure talking to a host.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached or the connection broke.
    #[error("control socket {path}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// No reply within the time limit.
    #[error("control socket {path}: no reply within {timeout:?}")]
    Timeout {
        /// Socket path.
        path: PathBuf,
        /// The limit.
        timeout: Duration,
    },
    /// The reply was not valid JSON of the expected shape.
    #[error("control socket {path}: bad reply: {detail}")]
    BadReply {
        /// Socket path.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The host refused the command.
    #[error("{0}")]
    Refused(String),
}

/// A client for one host's control socket. Cheap to clone; each call opens a connection.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    /// One limit for every command, when set.
    timeout: Option<Duration>,
    /// The host's limits, for per-command deadlines.
    limits: Option<Arc<DeadlineLimits>>,
}

/// The parts of a spec that deadlines depend on.
#[derive(Debug)]
struct DeadlineLimits(HostSpec);

/// Start and shutdown limits assumed for a host whose spec the client does not know (IIS's
/// defaults).
const DEFAULT_POOL_LIMIT: Duration = Duration::from_secs(90);

impl Client {
    /// A client for the socket at `socket`, with per-command deadlines for IIS's default
    /// limits (10 s for a status).
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: None,
            limits: None,
        }
    }

    /// Per-command deadlines from the spec the host runs ([`crate::command_deadline`]).
    pub fn for_spec(mut self, spec: &HostSpec) -> Self {
        let mut limits = spec.clone();
        // Only the pools' limits matter; the rest is dropped to keep clones cheap.
        limits.applications.clear();
        limits.bindings.clear();
        limits.env.clear();
        self.limits = Some(Arc::new(DeadlineLimits(limits)));
        self
    }

    /// One time limit for every command instead of per-command deadlines.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How long `command` may take before [`ClientError::Timeout`].
    pub fn deadline(&self, command: &Command) -> Duration {
        if let Some(timeout) = self.timeout {
            return timeout;
        }
        match &self.limits {
            Some(limits) => crate::command_deadline(command, &limits.0),
            None => {
                let base = Duration::from_secs(10);
                match command {
                    Command::Status => base,
                    Command::StartPool { .. } | Command::StopPool { .. } => {
                        base + DEFAULT_POOL_LIMIT
                    }
                    Command::RecyclePool { .. } => base + 2 * DEFAULT_POOL_LIMIT,
                    Command::Shutdown { grace } => base + *grace,
                }
            }
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one command and returns the host's status after it.
    pub async fn send(&self, command: &Command) -> Result<HostStatus, ClientError> {
        let timeout = self.deadline(command);
        match tokio::time::timeout(timeout, self.exchange(command)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                path: self.socket.clone(),
                timeout,
            }),
        }
    }

    /// Shorthand for [`Command::Status`].
    pub async fn status(&self) -> Result<HostStatus, ClientError> {
        self.send(&Command::Status).await
    }

    async fn exchange(&self, command: &Command) -> Result<HostStatus, ClientError> {
        let io = |source| ClientError::Io {
            path: self.socket.clone(),
            source,
        };
        let mut stream = UnixStream::connect(&self.socket).await.map_err(io)?;
        let mut line = serde_json::to_vec(command).map_err(|e| ClientError::BadReply {
            path: self.socket.clone(),
            detail: e.to_string(),
        })?;
        line.push(b'\n');
        stream.write_all(&line).await.map_err(io)?;
        let mut reader = BufReader::new(stream);
        let mut reply = String::new();
        reader.read_line(&mut reply).await.map_err(io)?;
        if reply.is_empty() {
            return Err(ClientError::BadReply {
                path: self.socket.clone(),
                detail: "connection closed without a reply".into(),
            });
        }
        match serde_json::from_str::<Reply>(&reply) {
            Ok(Reply::Ok { status }) => Ok(status),
            Ok(Reply::Error { message }) => Err(ClientError::Refused(message)),
            Err(e) => Err(ClientError::BadReply {
                path: self.socket.clone(),
                detail: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_the_command() {
        let client = Client::new("/x.sock");
        assert_eq!(client.deadline(&Command::Status), Duration::from_secs(10));
        assert_eq!(
            client.deadline(&Command::RecyclePool { pool: None }),
            Duration::from_secs(190)
        );
        let fixed = client.clone().with_timeout(Duration::from_secs(2));
        assert_eq!(
            fixed.deadline(&Command::RecyclePool { pool: None }),
            Duration::from_secs(2)
        );
    }
}
