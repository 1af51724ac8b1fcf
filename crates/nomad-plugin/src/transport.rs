//! The go-plugin side of a Nomad plugin: magic cookie, handshake line and the gRPC server.
//!
//! Nomad launches a plugin binary with a magic cookie in its environment, reads the first line
//! of its stdout (the handshake, naming the socket to dial) and then talks plaintext HTTP/2 gRPC
//! to that socket. Besides the plugin's own services (added by the caller as
//! [`tonic::service::Routes`]), go-plugin expects four housekeeping services, all served here:
//!
//! - `grpc.health.v1.Health`: service `"plugin"` reports SERVING.
//! - `plugin.GRPCBroker/StartStream`: accepted and left idle until the client closes it.
//! - `plugin.GRPCStdio/StreamStdio`: accepted and left idle; nothing is ever sent.
//! - `plugin.GRPCController/Shutdown`: answered, then [`serve`] returns within
//!   [`SHUTDOWN_GRACE`] even if other streams are still open.
//!
//! The listener is bound before the handshake line is printed, because Nomad dials as soon as it
//! has read the line. It keeps accepting connections for its whole life, because a Nomad agent
//! that restarted while the plugin survived reattaches by dialing the same address again.

use std::ffi::OsStr;
use std::future::Future;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Routes;
use tonic::{Request, Response, Status, Streaming};
use tonic_health::ServingStatus;
use tracing::{debug, info, warn};

use crate::proto::goplugin::grpc_broker_server::{GrpcBroker, GrpcBrokerServer};
use crate::proto::goplugin::grpc_controller_server::{GrpcController, GrpcControllerServer};
use crate::proto::goplugin::grpc_stdio_server::{GrpcStdio, GrpcStdioServer};
use crate::proto::goplugin::{ConnInfo, Empty, StdioData};

/// The environment variable in which Nomad passes the magic cookie.
pub const MAGIC_COOKIE_KEY: &str = "NOMAD_PLUGIN_MAGIC_COOKIE";

/// The magic cookie value every Nomad version sets for its plugins.
pub const MAGIC_COOKIE_VALUE: &str =
    "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255";

/// The environment variable listing the app protocol versions the client accepts.
pub const PROTOCOL_VERSIONS_ENV: &str = "PLUGIN_PROTOCOL_VERSIONS";

/// go-plugin's own protocol version, the first field of the handshake line.
pub const CORE_PROTOCOL_VERSION: u32 = 1;

/// The Nomad plugin API version, the second field of the handshake line.
pub const APP_PROTOCOL_VERSION: u32 = 2;

/// The largest gRPC message accepted or sent, matching the Go client's `MaxInt32` limits.
///
/// Tonic's default decode limit is 4 MiB, which Nomad exceeds with large task configs; callers
/// apply this to their own servers with `max_decoding_message_size`/`max_encoding_message_size`.
pub const MAX_MESSAGE_SIZE: usize = i32::MAX as usize;

/// The name under which the health service reports the plugin as SERVING.
pub const HEALTH_SERVICE_NAME: &str = "plugin";

/// How long [`serve`] lets open requests finish after a shutdown before closing connections.
///
/// Nomad kills the plugin 2 s after `GRPCController.Shutdown`, and long-lived streams such as
/// `Fingerprint` never finish on their own, so this is kept well below that.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// The longest unix socket path the kernel accepts (`sun_path` is 108 bytes with its NUL).
const MAX_UNIX_SOCKET_PATH: usize = 107;

/// The socket's file name inside its private folder.
const SOCKET_FILE_NAME: &str = "plugin.sock";

/// How long to pause after a failed `accept`, so that running out of file descriptors does
/// not turn the accept loop into a busy loop.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Where the plugin listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A fresh socket in a new private (mode 0700) folder created under `dir`, or under the
    /// system temp folder when `dir` is `None`. The folder is removed when [`serve`] returns.
    Unix {
        /// The parent of the private socket folder.
        dir: Option<PathBuf>,
    },
    /// `127.0.0.1:port`; port 0 picks a free port.
    Tcp {
        /// The port to bind, or 0 for any free port.
        port: u16,
    },
}

impl Default for Listen {
    /// A unix socket under the system temp folder, as go-plugin does on Linux.
    fn default() -> Self {
        Listen::Unix { dir: None }
    }
}

/// Errors of the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The private socket folder could not be created.
    #[error("cannot create a private socket folder under {dir}: {source}")]
    SocketDir {
        /// The parent folder.
        dir: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The socket path would not fit into `sun_path`.
    #[error("unix socket path {path} is {len} bytes long, the limit is {MAX_UNIX_SOCKET_PATH}")]
    SocketPathTooLong {
        /// The rejected path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// Binding the unix socket failed.
    #[error("cannot listen on unix socket {path}: {source}")]
    BindUnix {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Binding the TCP listener failed.
    #[error("cannot listen on tcp 127.0.0.1:{port}: {source}")]
    BindTcp {
        /// The requested port.
        port: u16,
        /// The underlying error.
        source: io::Error,
    },
    /// The function needs to run inside a tokio runtime.
    #[error("{what} must be called inside a tokio runtime")]
    NoRuntime {
        /// The function that was called.
        what: &'static str,
    },
    /// Installing the SIGINT handler failed.
    #[error("cannot install a SIGINT handler: {source}")]
    SignalHandler {
        /// The underlying error.
        source: io::Error,
    },
}

/// Reports whether the process was started by Nomad: the magic cookie is present and correct.
pub fn launched_by_nomad() -> bool {
    cookie_matches(std::env::var_os(MAGIC_COOKIE_KEY).as_deref())
}

/// Reports whether a magic cookie value (as read from the environment) is Nomad's.
pub fn cookie_matches(value: Option<&OsStr>) -> bool {
    value == Some(OsStr::new(MAGIC_COOKIE_VALUE))
}

/// The text to print on stderr (before exiting with status 1) when the binary was not started
/// by Nomad, typically because a person ran it by hand.
pub fn not_launched_by_nomad_message(binary: &str, driver_name: &str) -> String {
    format!(
        "{binary} is a Nomad task-driver plugin (driver \"{driver_name}\"); the Nomad agent starts it, \
         people do not.\nTo use it, copy it into the agent's plugin_dir and add a \
         plugin \"{binary}\" {{ ... }} block to the client configuration."
    )
}

/// Formats the go-plugin handshake line (without a line break) for a listener.
///
/// `network` is `unix` or `tcp`; `address` is the socket path or `127.0.0.1:port`.
pub fn handshake_line(network: &str, address: &str) -> String {
    format!("{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|{network}|{address}|grpc")
}

/// Serves the plugin until `GRPCController.Shutdown` is called or `shutdown` completes.
///
/// Binds `listen`, prints the handshake line on stdout and serves the go-plugin housekeeping
/// services plus `routes`. See [`serve_with`] for the details.
pub async fn serve(
    listen: Listen,
    routes: Routes,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TransportError> {
    serve_with(listen, routes, shutdown, print_handshake).await
}

/// Like [`serve`], but hands the handshake line (without a line break) to `handshake_out`
/// instead of printing it, so tests can capture it.
///
/// `handshake_out` is called once the listener is bound and the health status is set, so the
/// address is connectable and healthy from the moment the line is seen. `routes` must not
/// contain the housekeeping services listed in the [module docs](self); adding the same
/// service twice is a programming error that panics when the routes are merged.
///
/// On shutdown the listener is closed at once, open requests get [`SHUTDOWN_GRACE`] to finish,
/// then every connection is closed and, for a unix socket, its folder removed.
pub async fn serve_with(
    listen: Listen,
    routes: Routes,
    shutdown: impl Future<Output = ()>,
    handshake_out: impl FnOnce(&str),
) -> Result<(), TransportError> {
    let listener = BoundListener::bind(&listen)?;
    let (network, address) = listener.handshake_address();

    // Every connection and idle housekeeping stream watches this flag; the controller's
    // Shutdown handler and the caller's `shutdown` future both set it.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = std::sync::Arc::new(stop_tx);

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status(HEALTH_SERVICE_NAME, ServingStatus::Serving)
        .await;
    let routes = routes
        .add_service(health_service)
        .add_service(GrpcControllerServer::new(Controller {
            stop: stop_tx.clone(),
        }))
        .add_service(GrpcBrokerServer::new(Broker {
            stop: stop_rx.clone(),
        }))
        .add_service(GrpcStdioServer::new(Stdio {
            stop: stop_rx.clone(),
        }))
        .prepare();

    warn_about_protocol_versions(std::env::var(PROTOCOL_VERSIONS_ENV).ok().as_deref());
    info!(network, address = %address, "plugin listening");
    handshake_out(&handshake_line(network, &address));

    let mut connections = JoinSet::new();
    let mut stop_wait = stop_rx.clone();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                info!("shutting down: the caller's shutdown signal completed");
                break;
            }
            () = wait_for_stop(&mut stop_wait) => {
                info!("shutting down: the plugin client asked for it");
                break;
            }
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                if let Err(err) = finished
                    && err.is_panic()
                {
                    warn!(error = %err, "a plugin connection task panicked");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok(Accepted::Unix(stream)) => {
                    connections.spawn(serve_connection(stream, routes.clone(), stop_rx.clone()));
                }
                Ok(Accepted::Tcp(stream)) => {
                    connections.spawn(serve_connection(stream, routes.clone(), stop_rx.clone()));
                }
                Err(err) => {
                    warn!(error = %err, "accepting a plugin connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }

    // Stop accepting first, so a client dialing now fails fast instead of hanging.
    let socket_folder = listener.close();
    stop_tx.send_replace(true);
    health_reporter
        .set_service_status(HEALTH_SERVICE_NAME, ServingStatus::NotServing)
        .await;
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!(
            open = connections.len(),
            "closing plugin connections that are still open after the grace period"
        );
    }
    connections.shutdown().await;
    if let Some(folder) = socket_folder {
        let path = folder.path().to_path_buf();
        if let Err(err) = folder.close() {
            warn!(path = %path.display(), error = %err, "cannot remove the plugin socket folder");
        }
    }
    Ok(())
}

/// Makes the process ignore SIGINT, as go-plugin servers do: a Ctrl-C in the agent's terminal
/// reaches the whole process group, and the agent wants to stop its plugins itself.
///
/// A tokio signal handler swallows the signal for the rest of the process's life. Unlike
/// `SIG_IGN` it is not inherited by child processes, which keep the default SIGINT behaviour.
/// Must be called inside a tokio runtime.
pub fn ignore_sigint() -> Result<(), TransportError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| TransportError::NoRuntime {
        what: "ignore_sigint",
    })?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|source| TransportError::SignalHandler { source })?;
    runtime.spawn(async move {
        while sigint.recv().await.is_some() {
            debug!("ignoring SIGINT; the plugin stops when its client tells it to");
        }
    });
    Ok(())
}

/// Writes the handshake line to stdout and flushes it; the only stdout output a plugin makes.
fn print_handshake(line: &str) {
    let mut stdout = io::stdout().lock();
    if let Err(err) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        warn!(error = %err, "cannot write the handshake line to stdout");
    }
}

/// Logs when the client does not list our app protocol version; we answer with it anyway,
/// since it is the only one Nomad has ever used.
fn warn_about_protocol_versions(versions: Option<&str>) {
    let Some(versions) = versions else {
        return;
    };
    let ours = APP_PROTOCOL_VERSION.to_string();
    if !versions.split(',').any(|v| v.trim() == ours) {
        warn!(
            offered = versions,
            using = APP_PROTOCOL_VERSION,
            "the plugin client does not offer our protocol version"
        );
    }
}

// === impl BoundListener ===

/// A bound listener and what must be cleaned up with it.
enum BoundListener {
    Unix {
        listener: UnixListener,
        path: PathBuf,
        /// The private folder holding the socket; removed on close.
        folder: tempfile::TempDir,
    },
    Tcp {
        listener: TcpListener,
        address: std::net::SocketAddr,
    },
}

impl BoundListener {
    /// Binds synchronously, so nothing can dial before the handshake line exists.
    fn bind(listen: &Listen) -> Result<Self, TransportError> {
        match listen {
            Listen::Unix { dir } => {
                let parent = dir.clone().unwrap_or_else(std::env::temp_dir);
                let folder = tempfile::Builder::new()
                    .prefix("nomad-plugin-")
                    .permissions(std::fs::Permissions::from_mode(0o700))
                    .tempdir_in(&parent)
                    .map_err(|source| TransportError::SocketDir {
                        dir: parent.clone(),
                        source,
                    })?;
                let path = folder.path().join(SOCKET_FILE_NAME);
                check_socket_path(&path)?;
                let listener =
                    UnixListener::bind(&path).map_err(|source| TransportError::BindUnix {
                        path: path.clone(),
                        source,
                    })?;
                Ok(BoundListener::Unix {
                    listener,
                    path,
                    folder,
                })
            }
            Listen::Tcp { port } => {
                let bind_err = |source| TransportError::BindTcp {
                    port: *port,
                    source,
                };
                let std_listener =
                    std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, *port))
                        .map_err(bind_err)?;
                std_listener.set_nonblocking(true).map_err(bind_err)?;
                let address = std_listener.local_addr().map_err(bind_err)?;
                let listener = TcpListener::from_std(std_listener).map_err(bind_err)?;
                Ok(BoundListener::Tcp { listener, address })
            }
        }
    }

    /// The network name and address for the handshake line.
    fn handshake_address(&self) -> (&'static str, String) {
        match self {
            BoundListener::Unix { path, .. } => ("unix", path.display().to_string()),
            BoundListener::Tcp { address, .. } => ("tcp", address.to_string()),
        }
    }

    /// Accepts one connection.
    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            BoundListener::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                Ok(Accepted::Unix(stream))
            }
            BoundListener::Tcp { listener, .. } => {
                let (stream, peer) = listener.accept().await?;
                // Small gRPC frames must not wait for Nagle's algorithm.
                if let Err(err) = stream.set_nodelay(true) {
                    debug!(%peer, error = %err, "cannot set TCP_NODELAY");
                }
                Ok(Accepted::Tcp(stream))
            }
        }
    }

    /// Closes the listening socket and hands back the socket folder to remove.
    fn close(self) -> Option<tempfile::TempDir> {
        match self {
            BoundListener::Unix { folder, .. } => Some(folder),
            BoundListener::Tcp { .. } => None,
        }
    }
}

/// Resolves once the stop flag is set, or once its sender is gone (which also means stop).
async fn wait_for_stop(stop: &mut watch::Receiver<bool>) {
    // The returned guard is dropped here, so callers never hold it across an await.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// An accepted connection of either network.
enum Accepted {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

/// Rejects socket paths the kernel would refuse, with an error naming the path.
fn check_socket_path(path: &Path) -> Result<(), TransportError> {
    let len = path.as_os_str().len();
    if len > MAX_UNIX_SOCKET_PATH {
        return Err(TransportError::SocketPathTooLong {
            path: path.to_path_buf(),
            len,
        });
    }
    Ok(())
}

/// Serves one h2c connection until the client closes it, or gracefully stops it (GOAWAY, then
/// let open requests finish) once `stop` is set.
async fn serve_connection<IO>(io: IO, routes: Routes, mut stop: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new()).http2_only();
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(routes));
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = wait_for_stop(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        debug!(error = %err, "plugin connection ended with an error");
    }
}

// === go-plugin housekeeping services ===

/// `plugin.GRPCController`: its only call asks the plugin to exit.
struct Controller {
    /// Set to stop the accept loop; shared with [`serve_with`].
    stop: std::sync::Arc<watch::Sender<bool>>,
}

#[tonic::async_trait]
impl GrpcController for Controller {
    async fn shutdown(&self, _request: Request<Empty>) -> Result<Response<Empty>, Status> {
        // The reply still goes out: connections shut down gracefully, letting open calls finish.
        self.stop.send_replace(true);
        Ok(Response::new(Empty {}))
    }
}

/// `plugin.GRPCBroker`: Nomad opens the stream and never uses it, so it is kept idle.
struct Broker {
    /// Ends the idle streams when the server stops.
    stop: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl GrpcBroker for Broker {
    type StartStreamStream = ReceiverStream<Result<ConnInfo, Status>>;

    async fn start_stream(
        &self,
        request: Request<Streaming<ConnInfo>>,
    ) -> Result<Response<Self::StartStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (outbound, response) = mpsc::channel(1);
        let mut stop = self.stop.clone();
        // Dropping `outbound` ends the response stream: when the client closes its side,
        // the stream breaks, or the server stops.
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    message = inbound.message() => match message {
                        Ok(Some(info)) => {
                            debug!(service_id = info.service_id, "ignoring a broker connection offer");
                        }
                        Ok(None) | Err(_) => break,
                    },
                    () = wait_for_stop(&mut stop) => break,
                    () = outbound.closed() => break,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(response)))
    }
}

/// `plugin.GRPCStdio`: the stream stays open and silent, since plugin output goes to stderr.
struct Stdio {
    /// Ends the idle streams when the server stops.
    stop: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl GrpcStdio for Stdio {
    type StreamStdioStream = ReceiverStream<Result<StdioData, Status>>;

    async fn stream_stdio(
        &self,
        _request: Request<()>,
    ) -> Result<Response<Self::StreamStdioStream>, Status> {
        let (outbound, response) = mpsc::channel(1);
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = wait_for_stop(&mut stop) => {}
                () = outbound.closed() => {}
            }
        });
        Ok(Response::new(ReceiverStream::new(response)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_must_be_present_and_equal() {
        assert!(cookie_matches(Some(OsStr::new(MAGIC_COOKIE_VALUE))));
        assert!(!cookie_matches(None));
        assert!(!cookie_matches(Some(OsStr::new(""))));
        assert!(!cookie_matches(Some(OsStr::new("e4327c2e"))));
    }

    #[test]
    fn handshake_line_has_five_fields() {
        assert_eq!(
            handshake_line("unix", "/tmp/x/plugin.sock"),
            "1|2|unix|/tmp/x/plugin.sock|grpc"
        );
        assert_eq!(
            handshake_line("tcp", "127.0.0.1:10000"),
            "1|2|tcp|127.0.0.1:10000|grpc"
        );
    }

    #[test]
    fn too_long_socket_paths_are_rejected() {
        let long = PathBuf::from(format!("/{}", "a".repeat(200)));
        assert!(matches!(
            check_socket_path(&long),
            Err(TransportError::SocketPathTooLong { len: 201, .. })
        ));
        assert!(check_socket_path(Path::new("/tmp/plugin.sock")).is_ok());
    }

    #[test]
    fn message_mentions_binary_and_driver() {
        let text = not_launched_by_nomad_message("nomad_iis", "iis");
        assert!(text.contains("nomad_iis"));
        assert!(text.contains("\"iis\""));
    }
}
