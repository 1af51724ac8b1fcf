//! Listeners and connections: binding, the accept loops, TLS handshakes, HTTP/1.1 and HTTP/2
//! (h2c with prior knowledge on plain listeners, ALPN over TLS) via hyper-util's auto builder,
//! the request handler, and the graceful drain at shutdown.
//!
//! Every accepted socket gets `TCP_NODELAY` (without it small responses wait for delayed ACKs
//! and a keep-alive connection manages a few dozen requests a second).
//!
//! Shutdown is two tokens and a tracker: `stop_accepting` ends the accept loops (closing the
//! listening sockets), `graceful` asks every connection to finish its in-flight requests and
//! close (HTTP/2 sends GOAWAY), and `abort` drops the connections still open when the grace
//! period is over. The tracker knows when the last connection task is gone.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use control::{BindingKind, UnavailableResponse};

use crate::access_log::{Entry, ResponseBody};
use crate::error::{StartupError, describe_io};
use crate::host::HostState;
use crate::plan::ListenerPlan;
use crate::pool::{Admission, Body};
use crate::router::Miss;

/// Pending connections the kernel queues per listener.
const BACKLOG: u32 = 1024;
/// A TLS client gets this long to finish its handshake.
const TLS_HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// An HTTP/1 client gets this long to send its request headers.
const HEADER_READ_LIMIT: Duration = Duration::from_secs(30);

/// A bound listener, not yet accepting.
pub(crate) struct BoundListener {
    /// The socket.
    pub listener: TcpListener,
    /// The address the kernel gave it (the real port when the spec asked for 0).
    pub local: SocketAddr,
    /// TLS acceptor for https listeners.
    pub tls: Option<TlsAcceptor>,
}

/// Binds one listener; the error names its bindings and the address.
pub(crate) fn bind(
    plan: &ListenerPlan,
    tls: Option<TlsAcceptor>,
) -> Result<BoundListener, StartupError> {
    let failed = |e: io::Error| {
        let reason = if e.kind() == io::ErrorKind::AddrInUse {
            "address already in use: another task or program uses it".to_string()
        } else {
            describe_io(&e)
        };
        StartupError::Bind {
            bindings: plan.binding_names(),
            address: plan.address,
            reason,
        }
    };
    let socket = if plan.address.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(failed)?;
    // Lets a restarted task bind its port while old connections sit in TIME_WAIT; it does not
    // let two listeners share a port.
    socket.set_reuseaddr(true).map_err(failed)?;
    socket.bind(plan.address).map_err(failed)?;
    let listener = socket.listen(BACKLOG).map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    debug_assert!(plan.kind == BindingKind::Https || tls.is_none());
    Ok(BoundListener {
        listener,
        local,
        tls,
    })
}

/// The shared connection machinery of one host.
#[derive(Clone)]
pub(crate) struct Connections {
    /// Tracks every connection task, to wait for the drain.
    pub tracker: TaskTracker,
    /// Cancelled when listeners must stop accepting.
    pub stop_accepting: CancellationToken,
    /// Cancelled when connections must finish in-flight requests and close.
    pub graceful: CancellationToken,
    /// Cancelled when the grace period is over: connections are dropped.
    pub abort: CancellationToken,
    /// HTTP protocol settings, shared by all connections.
    builder: Arc<auto::Builder<TokioExecutor>>,
}

impl Connections {
    pub fn new() -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_LIMIT);
        builder.http2().timer(TokioTimer::new());
        Self {
            tracker: TaskTracker::new(),
            stop_accepting: CancellationToken::new(),
            graceful: CancellationToken::new(),
            abort: CancellationToken::new(),
            builder: Arc::new(builder),
        }
    }
}

/// Accepts connections on listener number `index` until `stop_accepting`.
pub(crate) async fn accept_loop(
    state: Arc<HostState>,
    connections: Connections,
    index: usize,
    bound: BoundListener,
) {
    let BoundListener {
        listener,
        local,
        tls,
    } = bound;
    loop {
        let accepted = tokio::select! {
            _ = connections.stop_accepting.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                }
                let info = Arc::new(ConnectionInfo {
                    listener: index,
                    peer,
                });
                let (state, connections2, tls) = (state.clone(), connections.clone(), tls.clone());
                connections.tracker.spawn(async move {
                    serve_connection(state, connections2, info, stream, tls).await;
                });
            }
            Err(e) => {
                // Out of file descriptors and similar: report, pause, keep the listener.
                state.notice(format!("accept on {local} failed: {e}"));
                tokio::select! {
                    _ = connections.stop_accepting.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

/// What a request handler knows about its connection.
#[derive(Debug)]
struct ConnectionInfo {
    listener: usize,
    peer: SocketAddr,
}

async fn serve_connection(
    state: Arc<HostState>,
    connections: Connections,
    info: Arc<ConnectionInfo>,
    stream: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
) {
    match tls {
        None => drive(state, connections, info, stream).await,
        Some(acceptor) => {
            let handshake = tokio::select! {
                _ = connections.graceful.cancelled() => return,
                done = tokio::time::timeout(TLS_HANDSHAKE_LIMIT, acceptor.accept(stream)) => done,
            };
            match handshake {
                Ok(Ok(stream)) => drive(state, connections, info, stream).await,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %info.peer, error = %e, "tls handshake failed")
                }
                Err(_) => tracing::debug!(peer = %info.peer, "tls handshake timed out"),
            }
        }
    }
}

/// Serves HTTP on one connection until it closes, draining on `graceful`, dropping on `abort`.
async fn drive<I>(state: Arc<HostState>, connections: Connections, info: Arc<ConnectionInfo>, io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| handle(state.clone(), info.clone(), request));
    let connection = connections
        .builder
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => break,
            _ = connections.graceful.cancelled(), if !draining => {
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = connections.abort.cancelled() => break,
        }
    }
}

/// A stopped TcpLevel pool's answer: no answer. For HTTP/1 hyper closes the connection; for
/// HTTP/2 it resets the stream, leaving the connection's other requests alone.
#[derive(Debug, thiserror::Error)]
#[error("pool {0} is stopped; connection dropped")]
struct Dropped(String);

async fn handle(
    state: Arc<HostState>,
    info: Arc<ConnectionInfo>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Dropped> {
    let started = Instant::now();
    let (parts, _body) = request.into_parts();
    let host = parts.uri.host().or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    // With the access log off (stdout is /dev/null) no line is prepared at all.
    let mut entry = state
        .access_log
        .is_enabled()
        .then(|| Entry::new(started, info.peer, &parts, host));
    let target = match state.router.route(info.listener, host, parts.uri.path()) {
        Ok(target) => target,
        Err(Miss::UnknownHost | Miss::NoApplication) => {
            return Ok(finish(&state, plain(StatusCode::NOT_FOUND), entry, None));
        }
    };
    let pool = state.pool_of(target.application);
    if let Some(entry) = &mut entry {
        entry.set_pool(pool.name());
    }
    let in_flight = match pool.admit() {
        Admission::Admitted(guard) => guard,
        Admission::Refused(UnavailableResponse::HttpLevel) => {
            return Ok(finish(
                &state,
                plain(StatusCode::SERVICE_UNAVAILABLE),
                entry,
                None,
            ));
        }
        Admission::Refused(UnavailableResponse::TcpLevel) => {
            if let Some(entry) = &entry {
                state
                    .access_log
                    .write_with(|out| entry.write_line(out, None, 0));
            }
            return Err(Dropped(pool.name().to_string()));
        }
    };
    if target.remainder.is_empty() {
        // `/alias` → `/alias/`, as IIS does for a folder, so that relative links in the
        // application's pages resolve below its alias.
        let mut location = format!("{}/", parts.uri.path());
        if let Some(query) = parts.uri.query() {
            location.push('?');
            location.push_str(query);
        }
        let mut response = plain(StatusCode::MOVED_PERMANENTLY);
        if let Ok(value) = http::HeaderValue::from_str(&location) {
            response.headers_mut().insert(http::header::LOCATION, value);
        }
        return Ok(finish(&state, response, entry, Some(in_flight)));
    }
    let key = (target.application, target.virtual_directory);
    let response = pool
        .serve(key, &parts.method, target.remainder, &parts.headers)
        .await
        .unwrap_or_else(|| plain(StatusCode::INTERNAL_SERVER_ERROR));
    Ok(finish(&state, response, entry, Some(in_flight)))
}

fn finish(
    state: &HostState,
    response: Response<Body>,
    entry: Option<Entry>,
    in_flight: Option<crate::pool::InFlight>,
) -> Response<ResponseBody> {
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let body = ResponseBody::new(body, status, entry, &state.access_log, in_flight);
    Response::from_parts(parts, body)
}

/// A short plain-text response for statuses the host answers itself.
fn plain(status: StatusCode) -> Response<Body> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
