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

use crate::protocol::{Command, HostStatus, Reply, Unsupported};
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
    /// The host is older than the command: it speaks an earlier control protocol.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
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

    /// Sends one command and returns the host's status after it. A host too old for the
    /// command answers [`ClientError::Unsupported`], naming both versions.
    pub async fn send(&self, command: &Command) -> Result<HostStatus, ClientError> {
        match self.send_once(command).await {
            Err(ClientError::Refused(message))
                if command.min_protocol() > 1 && Command::not_understood(&message) =>
            {
                // Learn which version the host speaks; a status is understood by every host.
                let host = self.send_once(&Command::Status).await.map(|s| s.protocol);
                Err(refusal(command, message, host.ok()))
            }
            other => other,
        }
    }

    async fn send_once(&self, command: &Command) -> Result<HostStatus, ClientError> {
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

/// The error for `command` refused with `message` by a host speaking `host` (when known).
fn refusal(command: &Command, message: String, host: Option<u32>) -> ClientError {
    match host {
        Some(host) if host < command.min_protocol() => ClientError::Unsupported(Unsupported {
            host,
            needs: command.min_protocol(),
            what: format!("`{}`", command.name()),
        }),
        _ => ClientError::Refused(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_host_that_does_not_know_a_command_is_named() {
        // Every command of today is version 1; this stands in for a later one.
        let command = Command::Status;
        let err = refusal(&command, "bad command: unknown variant".into(), Some(0));
        assert!(
            matches!(&err, ClientError::Unsupported(u) if u.host == 0 && u.needs == 1),
            "{err}"
        );
        assert!(err.to_string().contains("`status` needs 1"), "{err}");
        let refused = refusal(&command, "unknown pool \"api\"".into(), Some(2));
        assert_eq!(refused.to_string(), "unknown pool \"api\"");
        assert!(matches!(
            refusal(&command, "bad command: x".into(), None),
            ClientError::Refused(_)
        ));
    }

    /// A host answering one JSON reply per connection, as a version 1 host does.
    async fn fake_host(dir: &Path, reply: &'static str) -> tokio::task::JoinHandle<()> {
        let listener = tokio::net::UnixListener::bind(dir.join("control.sock")).unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let _ = BufReader::new(read).read_line(&mut line).await;
                let _ = write.write_all(reply.as_bytes()).await;
                let _ = write.write_all(b"\n").await;
            }
        })
    }

    #[tokio::test]
    async fn a_version_1_host_answers_status() {
        let dir = tempfile::tempdir().unwrap();
        let host = fake_host(
            dir.path(),
            r#"{"reply":"ok","status":{"pid":7,"site_name":"s","listening":[],"pools":[]}}"#,
        )
        .await;
        let status = Client::new(dir.path().join("control.sock"))
            .status()
            .await
            .unwrap();
        assert_eq!((status.pid, status.protocol), (7, 1));
        assert!(status.require(2, "application status").is_err());
        host.abort();
    }

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
