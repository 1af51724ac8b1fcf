//! Listeners and connections: binding, the accept loops, TLS handshakes, HTTP/1.1 and HTTP/2
//! (h2c with prior knowledge on plain listeners, ALPN over TLS), the request handler, and the
//! graceful drain at shutdown.
//!
//! A plain connection whose first bytes cannot start the HTTP/2 preface (every HTTP/1 client)
//! is served by hyper's HTTP/1 connection directly on the socket; TLS connections and those
//! that may be h2c go through hyper-util's auto builder, which wraps the socket to replay the
//! bytes it read to decide.
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
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use control::{BindingKind, HostLimits, UnavailableResponse};

use crate::access_log::{Entry, ResponseBody};
use crate::error::{StartupError, describe_io};
use crate::host::HostState;
use crate::http1::{self, RequestBody};
use crate::plan::ListenerPlan;
use crate::pool::{Admission, Body, NoWorker};
use crate::proxy::ForwardInfo;
use crate::router::Miss;
use crate::strict::{self, Guarded};

/// Pending connections the kernel queues per listener.
const BACKLOG: u32 = 1024;
/// A TLS client gets this long to finish its handshake.
const TLS_HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

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
    /// HTTP/1.1 and HTTP/2 (detected, or chosen by ALPN), for TLS and for plain connections
    /// whose first bytes could be the HTTP/2 preface.
    auto: Arc<auto::Builder<TokioExecutor>>,
    /// HTTP/1.1 only, for plain connections whose first bytes cannot be the HTTP/2 preface:
    /// hyper's HTTP/1 connection straight on the socket, without the auto builder's replay
    /// wrapper around every read and write.
    http1: Arc<hyper::server::conn::http1::Builder>,
    /// Limits of the host's own HTTP/1 loop.
    http1_settings: crate::http1::Settings,
    /// How long a client may take to send its first bytes (and an HTTP/1 request head).
    header_read_timeout: Duration,
    /// The listener's parking lot for idle HTTP/1 connections (set by its accept loop).
    lot: Option<crate::park::Lot<Parked>>,
}

/// What a parked connection keeps besides its socket: its connection slot. Its context is
/// made anew when it resumes (the peer address from the socket, the rest from the listener).
type Parked = Option<OwnedSemaphorePermit>;

/// How long an HTTP/1 connection served by the own loop stays idle in its task before it is
/// parked (`park.rs`): long enough that a client sending request after request never parks.
const PARK_AFTER: Duration = Duration::from_secs(2);

/// The grace before parking: [`PARK_AFTER`], or `NOMAD_IIS_HTTP1_PARK_AFTER_MS` (0: never
/// park), or a test's choice.
fn park_after() -> Option<Duration> {
    #[cfg(test)]
    if let Some(chosen) = tests::PARK_AFTER.with(|p| p.get()) {
        return Some(chosen);
    }
    match std::env::var("NOMAD_IIS_HTTP1_PARK_AFTER_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms)),
        None => Some(PARK_AFTER),
    }
}

impl Connections {
    pub fn new(limits: &HostLimits) -> Self {
        let mut auto = auto::Builder::new(TokioExecutor::new());
        let mut http1 = hyper::server::conn::http1::Builder::new();
        crate::limits::configure_http1(&mut http1, limits);
        crate::limits::configure_auto(&mut auto, limits);
        Self {
            tracker: TaskTracker::new(),
            stop_accepting: CancellationToken::new(),
            graceful: CancellationToken::new(),
            abort: CancellationToken::new(),
            auto: Arc::new(auto),
            http1: Arc::new(http1),
            http1_settings: crate::http1::Settings {
                header_read_timeout: limits.header_read_timeout,
                max_head: crate::limits::header_buffer(limits),
                park_after: park_after(),
            },
            header_read_timeout: limits.header_read_timeout,
            lot: None,
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
    let mut admission = crate::limits::Admission::new(&state.spec.limits);
    // One reference per connection task rather than a copy of every token and builder.
    let mut mine = connections.clone();
    let pending = match crate::park::lot(connections.graceful.clone()) {
        Ok((lot, pending)) => {
            mine.lot = Some(lot);
            Some(pending)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no parking lot for idle connections");
            mine.http1_settings.park_after = None;
            None
        }
    };
    let shared = Arc::new(mine);
    if let Some(pending) = pending {
        // Ends on `graceful`, closing what is parked; until then it holds the listener's
        // machinery to resume connections with.
        let (again, state) = (shared.clone(), state.clone());
        connections
            .tracker
            .spawn(pending.run(move |stream, deadline, slot: Parked| {
                let Ok(peer) = stream.peer_addr() else {
                    return;
                };
                let context = Arc::new(ConnectionContext {
                    state: state.clone(),
                    listener: index,
                    peer,
                });
                again.tracker.spawn(serve_connection(
                    context,
                    again.clone(),
                    stream,
                    None,
                    slot,
                    Some(deadline),
                ));
            }));
    }
    loop {
        // At the connection limit, wait for a connection to close before accepting: further
        // clients wait in the kernel's backlog.
        let slot = tokio::select! {
            _ = connections.stop_accepting.cancelled() => break,
            slot = admission.slot() => slot,
        };
        let accepted = tokio::select! {
            _ = connections.stop_accepting.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                admission.accepted();
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                }
                let context = Arc::new(ConnectionContext {
                    state: state.clone(),
                    listener: index,
                    peer,
                });
                let (connections2, tls) = (shared.clone(), tls.clone());
                connections.tracker.spawn(serve_connection(
                    context,
                    connections2,
                    stream,
                    tls,
                    slot,
                    None,
                ));
            }
            Err(e) => {
                // Out of file descriptors and similar: keep serving the connections there are,
                // pause accepting (longer while it lasts), report once per episode.
                let (pause, report) = admission.failed();
                if report {
                    state.notice(format!(
                        "accept on {local} failed: {e}; pausing accepts while it lasts"
                    ));
                }
                tokio::select! {
                    _ = connections.stop_accepting.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// What a request handler knows about its connection. One per connection, so the reference
/// count a request takes is not shared with requests on other cores.
#[derive(Debug)]
struct ConnectionContext {
    state: Arc<HostState>,
    listener: usize,
    peer: SocketAddr,
}

/// The HTTP/2 connection preface a client sends first (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How a plain connection's first bytes say it must be served.
enum FirstBytes {
    /// Not the start of the HTTP/2 preface: HTTP/1.
    Http1,
    /// The preface or part of it: let the auto builder decide.
    Undecided,
    /// Closed, silent for the header read limit, or a shutdown came first.
    Nothing,
}

/// Peeks at the first bytes of a plain connection without consuming them.
async fn first_bytes(stream: &tokio::net::TcpStream, connections: &Connections) -> FirstBytes {
    let mut start = [0u8; H2_PREFACE.len()];
    let peeked = tokio::select! {
        _ = connections.graceful.cancelled() => return FirstBytes::Nothing,
        peeked = tokio::time::timeout(connections.header_read_timeout, stream.peek(&mut start)) => peeked,
    };
    match peeked {
        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => FirstBytes::Nothing,
        Ok(Ok(n)) if start[..n] != H2_PREFACE[..n] => FirstBytes::Http1,
        Ok(Ok(_)) => FirstBytes::Undecided,
    }
}

async fn serve_connection(
    context: Arc<ConnectionContext>,
    connections: Arc<Connections>,
    stream: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    slot: Option<OwnedSemaphorePermit>,
    resumed: Option<tokio::time::Instant>,
) {
    let peer = context.peer;
    // Kept for the access-log line of a request refused before the service (strict.rs).
    let (state, started) = (context.state.clone(), Instant::now());
    let ended = match tls {
        None => match if resumed.is_some() {
            // Back from the parking lot: known to be HTTP/1.
            FirstBytes::Http1
        } else {
            first_bytes(&stream, &connections).await
        } {
            FirstBytes::Http1 => {
                // The host's own loop; the state of a request in flight, and hyper's
                // connection after a handover, are boxed so an idle connection stays small.
                let own = http1::serve_from(
                    stream,
                    connections.http1_settings,
                    resumed,
                    &connections.graceful,
                    &connections.abort,
                    |request| handle(context.clone(), request),
                    |refused: http1::Refused| {
                        if state.access_log.is_enabled() {
                            state.access_log.write_with(|out| {
                                crate::access_log::write_refused_line(
                                    out,
                                    peer,
                                    started,
                                    refused.status.as_u16(),
                                    refused.reason,
                                )
                            });
                        }
                    },
                );
                match own.await {
                    http1::Ending::Closed => None,
                    http1::Ending::Handover(io) => {
                        Box::pin(serve_http1_with_hyper(&connections, context, io)).await
                    }
                    http1::Ending::Park(stream, deadline) => {
                        match &connections.lot {
                            Some(lot) => lot.park(stream, deadline, slot),
                            None => drop(stream),
                        }
                        return;
                    }
                }
            }
            FirstBytes::Undecided => {
                let io = TokioIo::new(Guarded::new(stream));
                Box::pin(serve_auto(&connections, context, io)).await
            }
            FirstBytes::Nothing => None,
        },
        Some(acceptor) => Box::pin(serve_tls(&connections, context, stream, acceptor)).await,
    };
    if let Some(Err(error)) = ended {
        strict::log_connection_error(&state, peer, started, error.as_ref());
    }
}

/// What a connection served by hyper ended with: `None` when it was dropped at the end of
/// the grace period (or never got going).
type HyperEnding = Option<Result<(), Box<dyn std::error::Error + Send + Sync>>>;

/// hyper's HTTP/1 connection, for the rest of a connection the host's own loop handed over.
async fn serve_http1_with_hyper(
    connections: &Connections,
    context: Arc<ConnectionContext>,
    io: http1::Replay<tokio::net::TcpStream>,
) -> HyperEnding {
    let service = service_fn(move |request: Request<Incoming>| {
        handle(context.clone(), request.map(RequestBody::Hyper))
    });
    // With upgrades: a WebSocket handshake forwarded to a worker continues as a tunnel.
    let connection = connections
        .http1
        .serve_connection(TokioIo::new(Guarded::new(io)), service)
        .with_upgrades();
    drive(connections, connection, |c| c.graceful_shutdown())
        .await
        .map(|r| r.map_err(Into::into))
}

/// hyper-util's auto builder (HTTP/1.1 or HTTP/2) on `io`.
async fn serve_auto<I>(
    connections: &Connections,
    context: Arc<ConnectionContext>,
    io: TokioIo<I>,
) -> HyperEnding
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        handle(context.clone(), request.map(RequestBody::Hyper))
    });
    let connection = connections.auto.serve_connection_with_upgrades(io, service);
    drive(connections, connection, |c| c.graceful_shutdown()).await
}

/// A TLS connection: the handshake, then the auto builder (ALPN chooses the protocol).
async fn serve_tls(
    connections: &Connections,
    context: Arc<ConnectionContext>,
    stream: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
) -> HyperEnding {
    let peer = context.peer;
    let handshake = tokio::select! {
        _ = connections.graceful.cancelled() => return None,
        done = tokio::time::timeout(TLS_HANDSHAKE_LIMIT, acceptor.accept(stream)) => done,
    };
    match handshake {
        Ok(Ok(stream)) => {
            serve_auto(connections, context, TokioIo::new(Guarded::new(stream))).await
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "tls handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "tls handshake timed out");
            None
        }
    }
}

/// Serves one connection until it closes: on `graceful` it is asked to finish its in-flight
/// requests and close; on `abort` it is dropped (`None`).
async fn drive<C: Future>(
    connections: &Connections,
    connection: C,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
) -> Option<C::Output> {
    tokio::pin!(connection);
    // Made once, not on every wake-up of the connection.
    let graceful = connections.graceful.cancelled();
    let abort = connections.abort.cancelled();
    tokio::pin!(graceful, abort);
    let mut graceful_shutdown = Some(graceful_shutdown);
    loop {
        tokio::select! {
            biased;
            ended = connection.as_mut() => return Some(ended),
            _ = &mut graceful, if graceful_shutdown.is_some() => {
                if let Some(shutdown) = graceful_shutdown.take() {
                    shutdown(connection.as_mut());
                }
            }
            _ = &mut abort => return None,
        }
    }
}

/// A stopped TcpLevel pool's answer: no answer. For HTTP/1 hyper closes the connection; for
/// HTTP/2 it resets the stream, leaving the connection's other requests alone.
#[derive(Debug, thiserror::Error)]
#[error("pool {0} is stopped; connection dropped")]
struct Dropped(String);

async fn handle(
    context: Arc<ConnectionContext>,
    request: Request<RequestBody>,
) -> Result<Response<ResponseBody>, Dropped> {
    let state = &context.state;
    let (parts, body) = request.into_parts();
    if let Err(rejection) = strict::check(&parts) {
        return Ok(strict::reject(state, context.peer, &parts, rejection));
    }
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
        .then(|| Entry::new(Instant::now(), context.peer, &parts, host));
    let target = match state.router.route(context.listener, host, parts.uri.path()) {
        Ok(target) => target,
        Err(Miss::UnknownHost | Miss::NoApplication) => {
            return Ok(finish(state, plain(StatusCode::NOT_FOUND), entry, None));
        }
    };
    let pool = state.pool_of(target.application);
    if let Some(entry) = &mut entry {
        entry.set_pool(pool.name());
    }
    let mut in_flight = match pool.admit() {
        Admission::Admitted(guard) => guard,
        Admission::Refused(UnavailableResponse::HttpLevel) => {
            return Ok(finish(
                state,
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
    if pool.is_worker_application(target.application) {
        // The whole request goes to the worker: full path (alias included), body streamed.
        let application = target.application;
        let info = ForwardInfo {
            peer: context.peer,
            scheme: if state.listener_tls[context.listener] {
                "https"
            } else {
                "http"
            },
            host: host.map(str::to_owned),
        };
        let lease = match pool.worker_for(application).await {
            Ok(lease) => lease,
            Err(NoWorker::QueueFull | NoWorker::Stopped) => {
                let response = plain(StatusCode::SERVICE_UNAVAILABLE);
                return Ok(finish(state, response, entry, Some(in_flight)));
            }
            Err(NoWorker::StartFailed) => {
                let response = plain(StatusCode::BAD_GATEWAY);
                return Ok(finish(state, response, entry, Some(in_flight)));
            }
        };
        let request = Request::from_parts(parts, body);
        let response = state
            .proxy
            .0
            .forward(request, &lease.worker().target, &info)
            .await;
        // The worker is not stopped by a recycle before this response is complete.
        in_flight.hold(lease);
        return Ok(finish(state, response, entry, Some(in_flight)));
    }
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
        return Ok(finish(state, response, entry, Some(in_flight)));
    }
    let key = (target.application, target.virtual_directory);
    let response = pool
        .serve_static(key, &parts.method, target.remainder, &parts.headers)
        .await
        .unwrap_or_else(|| plain(StatusCode::INTERNAL_SERVER_ERROR));
    Ok(finish(state, response, entry, Some(in_flight)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Host;
    use control::{ApplicationSpec, BindingSpec, HostSpec};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    thread_local! {
        /// The grace before parking for hosts started on this thread.
        pub(super) static PARK_AFTER: std::cell::Cell<Option<Duration>> =
            const { std::cell::Cell::new(None) };
    }

    /// Waits until `n` connections are parked on this thread.
    async fn parked(n: usize) {
        while crate::park::PARKED.with(|p| p.get()) != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Reads responses on `stream` until `n` bodies `hello` arrived; returns their status lines.
    async fn responses(stream: &mut tokio::net::TcpStream, n: usize) -> Vec<String> {
        let mut answer = Vec::new();
        let mut chunk = [0u8; 1024];
        while answer.windows(5).filter(|w| *w == b"hello").count() < n {
            let read = stream.read(&mut chunk).await.unwrap();
            assert_ne!(read, 0, "closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&chunk[..read]);
        }
        let text = String::from_utf8_lossy(&answer).to_string();
        // A status line follows the previous body directly.
        text.match_indices("HTTP/1.1 ")
            .map(|(at, _)| text[at..].lines().next().unwrap_or_default().to_string())
            .collect()
    }

    const GET: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n";

    async fn parking_host(dir: &std::path::Path, limits: HostLimits) -> (Host, SocketAddr) {
        PARK_AFTER.with(|p| p.set(Some(Duration::from_millis(50))));
        let host = Host::start(HostSpec {
            limits,
            ..spec(dir)
        })
        .await
        .unwrap();
        let addr = host.handle().status().listening[0].parse().unwrap();
        (host, addr)
    }

    async fn closed_by_host(stream: &mut tokio::net::TcpStream) {
        let mut chunk = [0u8; 64];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    #[tokio::test]
    async fn an_idle_connection_parks_and_its_next_requests_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let (host, addr) = parking_host(dir.path(), HostLimits::default()).await;
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(GET).await.unwrap();
        assert_eq!(responses(&mut client, 1).await, ["HTTP/1.1 200 OK"]);
        parked(1).await;
        client.write_all(GET).await.unwrap();
        assert_eq!(responses(&mut client, 1).await, ["HTTP/1.1 200 OK"]);
        parked(1).await;
        // Two pipelined requests arriving at a parked connection.
        let two = [GET, GET].concat();
        client.write_all(&two).await.unwrap();
        assert_eq!(
            responses(&mut client, 2).await,
            ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]
        );
        parked(1).await;
        host.handle().request_shutdown(Duration::ZERO, "test over");
        assert_eq!(host.wait().await.code, 0);
        parked(0).await;
    }

    #[tokio::test]
    async fn a_parked_connection_closed_by_the_client_frees_its_slot() {
        let dir = tempfile::tempdir().unwrap();
        let limits = HostLimits {
            max_connections_per_listener: 1,
            ..HostLimits::default()
        };
        let (host, addr) = parking_host(dir.path(), limits).await;
        let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
        first.write_all(GET).await.unwrap();
        assert_eq!(responses(&mut first, 1).await, ["HTTP/1.1 200 OK"]);
        parked(1).await;
        drop(first);
        parked(0).await;
        // With a limit of one, this is only accepted once the parked connection's slot is free.
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        second.write_all(GET).await.unwrap();
        assert_eq!(responses(&mut second, 1).await, ["HTTP/1.1 200 OK"]);
        host.handle().request_shutdown(Duration::ZERO, "test over");
        assert_eq!(host.wait().await.code, 0);
    }

    #[tokio::test]
    async fn graceful_shutdown_closes_parked_connections_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (host, addr) = parking_host(dir.path(), HostLimits::default()).await;
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(GET).await.unwrap();
        assert_eq!(responses(&mut client, 1).await, ["HTTP/1.1 200 OK"]);
        parked(1).await;
        host.handle()
            .request_shutdown(Duration::from_secs(600), "test over");
        // Well below the idle timeout, which would otherwise end the wait.
        let record =
            tokio::time::timeout(HostLimits::default().header_read_timeout / 2, host.wait())
                .await
                .expect("a parked connection held the drain");
        assert_eq!(record.code, 0);
        closed_by_host(&mut client).await;
        parked(0).await;
    }

    #[tokio::test]
    async fn the_idle_timeout_closes_a_parked_connection() {
        let dir = tempfile::tempdir().unwrap();
        let limits = HostLimits {
            header_read_timeout: Duration::from_millis(600),
            ..HostLimits::default()
        };
        let (host, addr) = parking_host(dir.path(), limits).await;
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(GET).await.unwrap();
        assert_eq!(responses(&mut client, 1).await, ["HTTP/1.1 200 OK"]);
        parked(1).await;
        closed_by_host(&mut client).await;
        parked(0).await;
        host.handle().request_shutdown(Duration::ZERO, "test over");
        assert_eq!(host.wait().await.code, 0);
    }

    fn spec(dir: &std::path::Path) -> HostSpec {
        std::fs::create_dir_all(dir.join("app")).unwrap();
        std::fs::write(dir.join("app/index.html"), "hello").unwrap();
        HostSpec {
            site_name: "nomad-a-t".into(),
            runtime_dir: dir.to_path_buf(),
            task_dir: dir.to_path_buf(),
            stdout_path: "/dev/null".into(),
            stderr_path: dir.join("stderr.log"),
            bindings: vec![BindingSpec {
                kind: BindingKind::Http,
                ip_address: [127, 0, 0, 1].into(),
                port: 0,
                hostname: None,
                require_sni: false,
                certificate: None,
            }],
            pools: vec![crate::test_support::pool_spec(
                UnavailableResponse::HttpLevel,
            )],
            applications: vec![ApplicationSpec {
                alias: "/".into(),
                path: dir.join("app"),
                pool: "default".into(),
                virtual_directories: vec![],
                process: None,
            }],
            ..crate::test_support::host_spec()
        }
    }

    /// Sends raw bytes and returns the status line of the answer.
    async fn status_line(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0u8; 1024];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert_ne!(n, 0, "closed without an answer");
            answer.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&answer);
        text.lines().next().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn requests_whose_first_byte_could_start_the_h2_preface_are_still_http1() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::start(spec(dir.path())).await.unwrap();
        let addr: SocketAddr = host.handle().status().listening[0].parse().unwrap();

        // `G` cannot start the preface: hyper's HTTP/1 connection directly.
        let get = status_line(addr, b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(get, "HTTP/1.1 200 OK");
        // `P` can: the auto builder reads on and finds HTTP/1.
        let post = b"POST /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            status_line(addr, post).await,
            "HTTP/1.1 405 Method Not Allowed"
        );

        host.handle().request_shutdown(Duration::ZERO, "test over");
        assert_eq!(host.wait().await.code, 0);
    }

    #[tokio::test]
    async fn a_connection_that_never_sends_does_not_hold_up_the_drain() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::start(spec(dir.path())).await.unwrap();
        let addr: SocketAddr = host.handle().status().listening[0].parse().unwrap();
        let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Served once, so the host has surely accepted the silent connection before.
        let get = status_line(addr, b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(get, "HTTP/1.1 200 OK");

        host.handle()
            .request_shutdown(Duration::from_secs(600), "test over");
        // Well below the header read limit, which would otherwise end the wait.
        let record =
            tokio::time::timeout(HostLimits::default().header_read_timeout / 2, host.wait())
                .await
                .expect("a silent connection held the drain");
        assert_eq!(record.code, 0);
        let notices = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
        assert!(!notices.contains("grace of"), "{notices}");
        drop(silent);
    }
}
