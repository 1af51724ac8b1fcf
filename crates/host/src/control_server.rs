//! The control server on `<runtime_dir>/control.sock`: one JSON [`Command`] line in, one JSON
//! [`Reply`] line out, per connection (the wire format of the `control` crate).
//!
//! Commands: `Status`; `StartPool`, `StopPool`, `RecyclePool` (one pool, or all for `None`;
//! an unknown pool is an error that changes nothing); `Shutdown { grace }`, answered with `Ok`
//! before the drain starts. The socket is created with mode 0600 inside the host's private
//! 0700 folder: file permissions are the authentication. It keeps answering during the drain
//! and is removed when the host exits.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use control::{Command, Reply};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{StartupError, describe_io};
use crate::host::HostState;

/// Longest command line accepted; commands are a few dozen bytes.
const MAX_COMMAND_BYTES: u64 = 64 * 1024;
/// A client gets this long to send its command.
const READ_LIMIT: Duration = Duration::from_secs(10);
/// At exit, answers still in progress get this long.
const FINAL_ANSWERS_LIMIT: Duration = Duration::from_secs(1);

/// Binds the socket, replacing a stale one left by an earlier host, and restricts it to the
/// owner.
pub(crate) fn bind(path: &Path) -> Result<UnixListener, StartupError> {
    let failed = |e: std::io::Error| {
        StartupError::other(
            format!("cannot create control socket {}", path.display()),
            describe_io(&e),
        )
    };
    if let Some(folder) = path.parent()
        && !folder.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .map_err(failed)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e)),
    }
    let listener = UnixListener::bind(path).map_err(failed)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    Ok(listener)
}

/// Answers connections until `stop`, then lets answers already being written finish (a
/// `Shutdown` reply must reach its client before the process exits).
pub(crate) async fn serve(listener: UnixListener, state: Arc<HostState>, stop: CancellationToken) {
    let answers = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let state = state.clone();
                answers.spawn(async move {
                    if let Err(e) = answer(stream, &state).await {
                        tracing::debug!(error = %e, "control connection failed");
                    }
                });
            }
            Err(e) => {
                state.notice(format!("control socket accept failed: {e}"));
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    drop(listener);
    answers.close();
    // Bounded: a client that connected but never sends a command must not hold the exit up.
    let _ = tokio::time::timeout(FINAL_ANSWERS_LIMIT, answers.wait()).await;
}

async fn answer(stream: UnixStream, state: &HostState) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_COMMAND_BYTES));
    let mut line = String::new();
    let reply = match tokio::time::timeout(READ_LIMIT, reader.read_line(&mut line)).await {
        Err(_) => Reply::Error {
            message: "no command received in time".into(),
        },
        Ok(Err(e)) => Reply::Error {
            message: format!("cannot read command: {e}"),
        },
        Ok(Ok(_)) => match serde_json::from_str::<Command>(line.trim()) {
            Ok(command) => state.apply(&command).await,
            Err(e) => Reply::Error {
                message: format!("{}: {e}", control::protocol::BAD_COMMAND),
            },
        },
    };
    let mut out = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}
