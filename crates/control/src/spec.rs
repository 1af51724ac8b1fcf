//! The host specification: everything a `nomad_iis host` process needs, fully resolved by the
//! driver (or by `nomad_iis run`) so the host never sees Nomad's types or raw job config.
//!
//! Serialized as JSON into `<runtime_dir>/spec.json`; it is also persisted inside the driver's
//! `driver_state`, so fields are only ever added with `#[serde(default)]`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What one site host runs: one IIS "site" with its bindings, applications and pools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSpec {
    /// Nomad allocation id (or a generated one in standalone mode).
    pub alloc_id: String,
    /// Nomad task name.
    pub task_name: String,
    /// IIS-style site name, `nomad-{allocId}-{taskName}` with invalid characters replaced.
    pub site_name: String,
    /// Private folder of this host (mode 0700): control socket, spec, exit record.
    pub runtime_dir: PathBuf,
    /// The task's folder (`<alloc>/<task>`); relative paths were already resolved against it.
    pub task_dir: PathBuf,
    /// Where the access log and worker stdout go (Nomad's stdout FIFO, a file or `/dev/null`).
    pub stdout_path: PathBuf,
    /// Where worker stderr and host errors go (Nomad's stderr FIFO, a file or `/dev/null`).
    pub stderr_path: PathBuf,
    /// Environment for worker processes (already de-duplicated case-insensitively).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Listeners. Several bindings may share one address (https with SNI).
    pub bindings: Vec<BindingSpec>,
    /// Pools that at least one application uses.
    pub pools: Vec<PoolSpec>,
    /// Applications, each under a unique alias.
    pub applications: Vec<ApplicationSpec>,
    /// Copied into an application folder that is empty when the host starts.
    #[serde(default)]
    pub placeholder_app_path: Option<PathBuf>,
    /// Resource bounds per connection and per host; absent in specs written by older plugins,
    /// which then get the defaults.
    #[serde(default)]
    pub limits: HostLimits,
}

/// Resource bounds of one site host, from the driver configuration (`limits` block).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostLimits {
    /// HTTP/2 streams a client may have open on one connection (nginx: 128).
    pub h2_max_concurrent_streams: u32,
    /// Response bytes all streaming responses of the host may hold in memory while they wait
    /// for the client (flow control, a full socket). A response that would exceed it waits;
    /// cached files are shared and do not count.
    pub response_buffer_budget: u64,
    /// Open connections per listener; further clients wait in the kernel's backlog.
    pub max_connections_per_listener: u32,
    /// HTTP/1: time to receive a request head, and the longest an idle keep-alive connection is
    /// kept (hyper runs one timer for both). IIS: `headerWait` / `connectionTimeout`.
    pub header_read_timeout: Duration,
    /// HTTP/2: an idle connection is pinged this often and closed when a ping is not answered
    /// within the same time (dead peers). IIS: `connectionTimeout`.
    pub h2_keepalive_interval: Duration,
    /// Largest request head (request line and headers), in bytes; a larger one is answered 400.
    pub max_header_size: u32,
}

impl Default for HostLimits {
    fn default() -> Self {
        Self {
            h2_max_concurrent_streams: 128,
            response_buffer_budget: 64 * 1024 * 1024,
            max_connections_per_listener: 16_384,
            header_read_timeout: Duration::from_secs(30),
            h2_keepalive_interval: Duration::from_secs(120),
            max_header_size: 64 * 1024,
        }
    }
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindingKind {
    /// Plain HTTP/1.1 and h2c (prior knowledge).
    Http,
    /// TLS with ALPN h2 and http/1.1.
    Https,
}

/// One listener binding, with its port already resolved to a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingSpec {
    /// `http` or `https`.
    pub kind: BindingKind,
    /// Address to bind; `0.0.0.0` when the job did not name one.
    pub ip_address: IpAddr,
    /// Resolved port number.
    pub port: u16,
    /// Host name this binding answers for (host header / SNI); `None` = any.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Refuse TLS handshakes without a matching SNI name.
    #[serde(default)]
    pub require_sni: bool,
    /// Certificate of an https binding.
    #[serde(default)]
    pub certificate: Option<CertificateSource>,
}

/// Where an https binding's certificate comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "source")]
pub enum CertificateSource {
    /// PEM certificate chain and PEM private key (RSA or ECDSA).
    PemFiles {
        /// Certificate chain file.
        cert_file: PathBuf,
        /// Private key file.
        key_file: PathBuf,
    },
    /// PKCS#12 file with an optional password.
    Pfx {
        /// The `.pfx`/`.p12` file.
        pfx_file: PathBuf,
        /// Its password (empty when none).
        #[serde(default)]
        password: String,
    },
    /// Generated at start: CN = hostname or `localhost`, SANs localhost, 127.0.0.1, hostname; 1 year.
    SelfSigned,
}

/// `start_mode` of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartMode {
    /// Start the worker on the first request (IIS default).
    OnDemand,
    /// Start the worker with the task.
    AlwaysRunning,
}

/// What a stopped pool answers (`service_unavailable_response`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnavailableResponse {
    /// HTTP 503 (IIS default).
    HttpLevel,
    /// Close the connection without an answer.
    TcpLevel,
}

/// One application pool with IIS defaults already applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolSpec {
    /// Short name from the job (`default` when implied).
    pub name: String,
    /// IIS-style full name, `nomad-{allocId}-{taskName}[-{pool}]`.
    pub full_name: String,
    /// When the worker starts.
    pub start_mode: StartMode,
    /// Stop an idle worker after this long; zero = never.
    pub idle_timeout: Duration,
    /// Recycle after this long; zero = never.
    pub periodic_restart: Duration,
    /// A worker must accept connections within this.
    pub start_time_limit: Duration,
    /// In-flight requests get this long to finish on stop/recycle.
    pub shutdown_time_limit: Duration,
    /// Stop before starting the new worker on recycle.
    pub disable_overlapped_recycle: bool,
    /// 503 or connection close when stopped.
    pub service_unavailable_response: UnavailableResponse,
    /// Requests that may wait for a worker.
    pub queue_length: u32,
    /// The user and group the pool's worker processes run as; `None` = the host's own user
    /// (the plugin is not root, or no identity applies). Resolved by the driver.
    #[serde(default)]
    pub identity: Option<WorkerIdentity>,
}

/// The Unix identity of a pool's workers, resolved from the job's `identity` by the driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerIdentity {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// What the job asked for and how it was mapped, for status and logs, e.g.
    /// `ApplicationPoolIdentity (uid 61234)` or `SpecificUser www-data`.
    pub description: String,
}

/// A worker process named explicitly by the job's `process {}` block (this project's
/// extension); without it, the application folder's `web.config` decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Program: a path relative to the application folder (`./app`), absolute, or a bare name
    /// looked up on the PATH.
    pub command: String,
    /// Arguments; `%PORT%`, `%HTTP_PLATFORM_PORT%` and `%ASPNETCORE_PORT%` are replaced by the
    /// worker's port.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment, over the task's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// An application under a path alias, served by one pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplicationSpec {
    /// Normalised alias: `/` or `/segment[/segment…]`, no trailing slash.
    pub alias: String,
    /// Absolute application folder.
    pub path: PathBuf,
    /// Short pool name (matches a [`PoolSpec::name`]).
    pub pool: String,
    /// Folders mapped below this application.
    #[serde(default)]
    pub virtual_directories: Vec<VirtualDirectorySpec>,
    /// An explicit worker process (the job's `process {}` block). `None`: a worker when the
    /// folder's `web.config` has `<aspNetCore>` or `<httpPlatform>`, else static files.
    #[serde(default)]
    pub process: Option<ProcessSpec>,
}

/// A folder mapped at `alias` below its application's alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VirtualDirectorySpec {
    /// Normalised alias relative to the application (`/img`).
    pub alias: String,
    /// Absolute folder.
    pub path: PathBuf,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pool(name: &str) -> PoolSpec {
        PoolSpec {
            name: name.into(),
            full_name: format!("nomad-a-t-{name}"),
            start_mode: StartMode::OnDemand,
            idle_timeout: Duration::ZERO,
            periodic_restart: Duration::ZERO,
            start_time_limit: Duration::from_secs(90),
            shutdown_time_limit: Duration::from_secs(90),
            disable_overlapped_recycle: false,
            service_unavailable_response: UnavailableResponse::HttpLevel,
            queue_length: 1000,
            identity: None,
        }
    }

    pub(crate) fn binding(
        kind: BindingKind,
        ip: [u8; 4],
        port: u16,
        hostname: Option<&str>,
    ) -> BindingSpec {
        BindingSpec {
            kind,
            ip_address: IpAddr::from(ip),
            port,
            hostname: hostname.map(str::to_owned),
            require_sni: false,
            certificate: (kind == BindingKind::Https).then_some(CertificateSource::SelfSigned),
        }
    }

    /// One static application on the default pool, one http binding.
    pub(crate) fn minimal_spec() -> HostSpec {
        HostSpec {
            alloc_id: "a".into(),
            task_name: "t".into(),
            site_name: "nomad-a-t".into(),
            runtime_dir: PathBuf::from("/tmp/a-t"),
            task_dir: PathBuf::from("/tmp/t"),
            stdout_path: PathBuf::from("/dev/null"),
            stderr_path: PathBuf::from("/dev/null"),
            env: BTreeMap::new(),
            bindings: vec![binding(BindingKind::Http, [127, 0, 0, 1], 0, None)],
            pools: vec![pool("default")],
            applications: vec![ApplicationSpec {
                alias: "/".into(),
                path: PathBuf::from("/tmp/t/site"),
                pool: "default".into(),
                virtual_directories: Vec::new(),
                process: None,
            }],
            placeholder_app_path: None,
            limits: HostLimits::default(),
        }
    }

    #[test]
    fn a_spec_from_an_older_plugin_gets_default_limits() {
        let mut json = serde_json::to_value(minimal_spec()).unwrap();
        let object = json.as_object_mut().unwrap();
        object.remove("limits");
        object.remove("env");
        object.remove("placeholder_app_path");
        let spec: HostSpec = serde_json::from_value(json).unwrap();
        assert_eq!(spec.limits, HostLimits::default());
        assert_eq!(spec, minimal_spec());
    }
}
