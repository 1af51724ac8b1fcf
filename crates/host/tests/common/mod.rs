//! Shared helpers for the host's integration tests: a site in a temporary folder, a host
//! running in-process with a guard that stops it, HTTP/1.1, h2c and TLS clients, and
//! certificate generation (rcgen and the openssl CLI).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use control::{
    ApplicationSpec, BindingKind, BindingSpec, CertificateSource, ExitRecord, HostSpec, HostStatus,
    PoolSpec, StartMode, UnavailableResponse, VirtualDirectorySpec,
};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub type TestResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A site folder: `runtime/` for the host, `app/` for the root application.
pub struct Site {
    pub dir: TempDir,
    pub spec: HostSpec,
}

pub fn pool(name: &str) -> PoolSpec {
    PoolSpec {
        name: name.into(),
        full_name: format!("nomad-test-web-{name}"),
        start_mode: StartMode::OnDemand,
        idle_timeout: Duration::ZERO,
        periodic_restart: Duration::ZERO,
        start_time_limit: Duration::from_secs(90),
        shutdown_time_limit: Duration::from_secs(5),
        disable_overlapped_recycle: false,
        service_unavailable_response: UnavailableResponse::HttpLevel,
        queue_length: 1000,
        identity: None,
    }
}

pub fn http_binding(hostname: Option<&str>) -> BindingSpec {
    BindingSpec {
        kind: BindingKind::Http,
        ip_address: "127.0.0.1".parse().unwrap(),
        port: 0,
        hostname: hostname.map(str::to_string),
        require_sni: false,
        certificate: None,
    }
}

pub fn https_binding(hostname: Option<&str>, certificate: CertificateSource) -> BindingSpec {
    BindingSpec {
        kind: BindingKind::Https,
        certificate: Some(certificate),
        ..http_binding(hostname)
    }
}

impl Site {
    /// One plain http binding on 127.0.0.1 (port 0), pool `default`, application `/` serving
    /// `app/index.html` = `root app`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("runtime");
        std::fs::create_dir(&runtime).unwrap();
        let app = dir.path().join("app");
        std::fs::create_dir(&app).unwrap();
        std::fs::write(app.join("index.html"), "root app").unwrap();
        let spec = HostSpec {
            alloc_id: "test".into(),
            task_name: "web".into(),
            site_name: "nomad-test-web".into(),
            runtime_dir: runtime,
            task_dir: dir.path().to_path_buf(),
            stdout_path: PathBuf::from("/dev/null"),
            stderr_path: PathBuf::from("/dev/null"),
            env: Default::default(),
            bindings: vec![http_binding(None)],
            pools: vec![pool("default")],
            applications: vec![ApplicationSpec {
                alias: "/".into(),
                path: app,
                pool: "default".into(),
                virtual_directories: vec![],
                process: None,
            }],
            placeholder_app_path: None,
            limits: Default::default(),
        };
        Self { dir, spec }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Writes `content` to `relative` below the site folder, creating folders.
    pub fn write(&self, relative: &str, content: impl AsRef<[u8]>) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// Adds an application at `alias` served from `folder` (below the site) by `pool`.
    pub fn add_application(&mut self, alias: &str, folder: &str, pool: &str) {
        std::fs::create_dir_all(self.path(folder)).unwrap();
        self.spec.applications.push(ApplicationSpec {
            alias: alias.into(),
            path: self.path(folder),
            pool: pool.into(),
            virtual_directories: vec![],
            process: None,
        });
    }

    /// Adds a virtual directory to application `application`.
    pub fn add_virtual_directory(&mut self, application: usize, alias: &str, folder: &str) {
        std::fs::create_dir_all(self.path(folder)).unwrap();
        let path = self.path(folder);
        self.spec.applications[application]
            .virtual_directories
            .push(VirtualDirectorySpec {
                alias: alias.into(),
                path,
            });
    }
}

/// A host running in-process; dropping it asks the host to stop.
pub struct Running {
    pub status: HostStatus,
    pub client: control::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<ExitRecord>>,
}

/// Starts `host::run` and waits until its control socket answers (which means ready).
pub async fn start(spec: HostSpec) -> Running {
    let client = control::Client::new(spec.runtime_dir.join(control::CONTROL_SOCKET));
    let (stop, stopped) = oneshot::channel::<()>();
    let mut task = tokio::spawn(host::run(spec, async move {
        let _ = stopped.await;
    }));
    for _ in 0..3000 {
        if task.is_finished() {
            let record = (&mut task).await.unwrap();
            panic!("host exited during start-up: {record:?}");
        }
        if let Ok(status) = client.status().await {
            return Running {
                status,
                client,
                stop: Some(stop),
                task: Some(task),
            };
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("host did not answer on its control socket");
}

impl Running {
    /// The address of listener `index`.
    pub fn addr(&self, index: usize) -> SocketAddr {
        self.status.listening[index].parse().unwrap()
    }

    /// Stops the host through the `run` shutdown future and returns its exit record.
    pub async fn stop(mut self) -> ExitRecord {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.finished().await
    }

    /// Waits for the host to exit on its own (e.g. after a control `Shutdown`).
    pub async fn finished(mut self) -> ExitRecord {
        let task = self.task.take().unwrap();
        task.await.unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One GET over HTTP/1.1 with an explicit `Host` header.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> TestResult<(StatusCode, String)> {
    let stream = TcpStream::connect(addr).await?;
    send_h1(stream, host, path).await
}

/// One GET over HTTP/1.1 on an existing connection.
pub async fn send_h1<I>(io: I, host: &str, path: &str) -> TestResult<(StatusCode, String)>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    assert_eq!(response.version(), Version::HTTP_11);
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One GET over HTTP/2 (h2c with prior knowledge on plain TCP, or over a TLS stream).
pub async fn send_h2<I>(io: I, authority: &str, path: &str) -> TestResult<(StatusCode, String)>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
    tokio::spawn(connection);
    let request = Request::get(format!("http://{authority}{path}")).body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    assert_eq!(response.version(), Version::HTTP_2);
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Accepts any server certificate and remembers the one it was shown.
#[derive(Debug)]
pub struct AcceptAny {
    pub seen: Mutex<Option<CertificateDer<'static>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A finished TLS handshake: the stream, the certificate the server showed, the ALPN result.
pub struct TlsConnection {
    pub stream: tokio_rustls::client::TlsStream<TcpStream>,
    pub certificate: CertificateDer<'static>,
    pub alpn: Option<Vec<u8>>,
}

/// Connects with TLS, sending SNI `server_name` (none when `None`), offering `alpn`.
pub async fn tls_connect(
    addr: SocketAddr,
    server_name: Option<&str>,
    alpn: &[&[u8]],
) -> TestResult<TlsConnection> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AcceptAny {
        seen: Mutex::new(None),
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = match server_name {
        Some(name) => ServerName::try_from(name.to_string())?,
        // An IP address as server name makes rustls send no SNI at all.
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = TcpStream::connect(addr).await?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let alpn = stream.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    let certificate = verifier
        .seen
        .lock()
        .unwrap()
        .clone()
        .ok_or("no certificate seen")?;
    Ok(TlsConnection {
        stream,
        certificate,
        alpn,
    })
}

/// An ECDSA P-256 certificate for `name` written as PEM (PKCS#8 key) to `dir/{stem}.crt|.key`;
/// returns the certificate DER to compare with what a server shows.
pub fn ecdsa_pem(dir: &Path, stem: &str, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_file = dir.join(format!("{stem}.crt"));
    let key_file = dir.join(format!("{stem}.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (cert_file, key_file, cert.der().to_vec())
}

/// Runs the openssl CLI and fails the test with its stderr when it fails.
pub fn openssl(args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The DER of the first certificate in a PEM file.
pub fn pem_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// Polls `check` until it holds, at most `attempts` times, 50 ms apart.
pub async fn eventually<F, Fut>(attempts: usize, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..attempts {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
