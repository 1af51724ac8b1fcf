//! An async client for a host's control socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::protocol::{Command, HostStatus, Reply};

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
    timeout: Duration,
}

impl Client {
    /// A client for the socket at `socket`, with a 10 s limit per call.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Changes the per-call time limit (shutdown with a long drain needs more).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one command and returns the host's status after it.
    pub async fn send(&self, command: &Command) -> Result<HostStatus, ClientError> {
        let timeout = self.timeout;
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
