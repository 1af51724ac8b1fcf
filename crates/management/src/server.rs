//! Listening: the address rules (open mode only on loopback), optional TLS (rustls with the
//! ring provider, as the site host uses), TCP_NODELAY on every connection, and a shutdown
//! future that stops accepting and ends the connections.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

use crate::auth::Credentials;

/// PEM files of the API's own certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Why the API cannot listen.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Open mode on a non-loopback address.
    #[error(
        "--management-api-address {0}: without an API key or JWT secret the API only listens on a loopback address"
    )]
    OpenOnNetwork(IpAddr),
    /// The address cannot be bound.
    #[error("management API on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The certificate or key cannot be used.
    #[error("management API TLS: {0}")]
    Tls(String),
}

/// Where to listen: `address` wins; otherwise all interfaces when secured, loopback when open.
pub fn listen_address(
    address: Option<IpAddr>,
    port: u16,
    credentials: &Credentials,
) -> Result<SocketAddr, ServeError> {
    let ip = match address {
        Some(ip) if !credentials.secured() && !ip.is_loopback() => {
            return Err(ServeError::OpenOnNetwork(ip));
        }
        Some(ip) => ip,
        None if credentials.secured() => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Binds `addr`, retrying for up to `patience` while it is in use (a plugin that was just
/// replaced may still hold it for a moment).
pub async fn bind(addr: SocketAddr, patience: Duration) -> Result<TcpListener, ServeError> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(source) => return Err(ServeError::Bind { addr, source }),
        }
    }
}

/// A rustls server config from PEM files.
pub fn tls_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|e| ServeError::Tls(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "{}: no certificate",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| ServeError::Tls(format!("{}: {e}", files.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(format!("{}: {e}", files.key.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, _peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors and the like: wait a little instead of spinning.
                tracing::warn!(error = %e, "management API accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            match acceptor {
                None => connection(stream, router).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    if let Ok(Ok(tls)) = handshake.await {
                        connection(tls, router).await;
                    }
                }
            }
        });
    }
    connections.abort_all();
}

async fn connection<S>(stream: S, router: Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "management API connection ended with an error");
    }
}

/// For tests: whether a plain TCP connection to `addr` succeeds.
pub async fn reachable(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).await.is_ok()
}

/// Everything needed to serve the API, from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--management-api-address`.
    pub address: Option<IpAddr>,
    /// `--management-api-port` (0 binds any free port: tests only; the flags treat 0 as off).
    pub port: u16,
    /// API key and JWT secret.
    pub credentials: Credentials,
    /// `--management-api-tls-cert` / `-key`.
    pub tls: Option<TlsFiles>,
    /// Upload and extraction limits.
    pub limits: crate::api::Limits,
}

/// A bound listener, ready to serve.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    addr: SocketAddr,
}

impl Settings {
    /// Loads the TLS files and binds (waiting up to `patience` for a busy port). Warns when the
    /// API is open (no key, no secret).
    pub async fn bind(&self, patience: Duration) -> Result<Bound, ServeError> {
        let addr = listen_address(self.address, self.port, &self.credentials)?;
        let tls = self.tls.as_ref().map(tls_config).transpose()?;
        let listener = bind(addr, patience).await?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        if !self.credentials.secured() {
            tracing::warn!(
                %addr,
                "the management API has no API key and no JWT secret: anyone on this machine may use it; it listens on loopback only"
            );
        }
        Ok(Bound {
            listener,
            tls,
            addr,
        })
    }
}

impl Bound {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves `api` until `shutdown` completes.
    pub async fn serve(self, api: Arc<crate::Api>, shutdown: impl Future<Output = ()>) {
        tracing::info!(addr = %self.addr, tls = self.tls.is_some(), "management API listening");
        serve(self.listener, api.router(), self.tls, shutdown).await;
    }
}
