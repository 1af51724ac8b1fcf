//! The contract between the Nomad driver (and the Management API, and `nomad_iis run`) and the
//! per-task site host: what a host is asked to run ([`HostSpec`]) and the rules it must satisfy
//! ([`HostSpec::check`]), the commands it takes ([`Command`]), what it reports ([`HostStatus`]),
//! its exit codes ([`exit_code`]) and the record it leaves when it exits ([`ExitRecord`]), the
//! files of its runtime folder ([`files`]), and — with the `client` feature — an async client
//! for its control socket and the one way to start a host and wait until it is ready
//! ([`launch`]).
//!
//! # Layout
//! - [`spec`]: the fully resolved host specification (ports resolved, paths absolute).
//! - [`check`]: [`HostSpec::check`], alias and host-name normalisation.
//! - [`protocol`]: commands, replies and status types, protocol versioning; the exit record.
//! - [`files`]: reading and writing `spec.json` and `exit.json`.
//! - [`client`] (feature `client`): the unix-socket client.
//! - [`launch`] (feature `client`): spawn a host and wait until it is ready.
//!
//! # Wire format
//! One JSON request line, one JSON reply line, per connection (see [`protocol`]). A unix socket in
//! a 0700 folder: file permissions are the authentication, as for sozu's command socket.
//!
//! This crate must not depend on the host, on tonic or on the config decoder: the driver and the
//! Management API use it without pulling the host in.

#![forbid(unsafe_code)]

pub mod check;
#[cfg(feature = "client")]
pub mod client;
pub mod files;
#[cfg(feature = "client")]
pub mod launch;
pub mod protocol;
pub mod registry;
pub mod spec;

pub use check::{SpecError, alias_key, normalize_alias, normalize_hostname};
#[cfg(feature = "client")]
pub use client::{Client, ClientError};
pub use files::FileError;
pub use protocol::{
    ApplicationKind, ApplicationStatus, Command, ExitRecord, HostStatus, PROTOCOL_VERSION,
    PoolState, PoolStatus, Reply, Unsupported, WorkerStatus,
};
pub use registry::{RegisteredTask, TaskRegistry};
pub use spec::{
    ApplicationSpec, BindingKind, BindingSpec, CertificateSource, HostLimits, HostSpec, PoolSpec,
    ProcessSpec, StartMode, UnavailableResponse, VirtualDirectorySpec, WorkerIdentity,
};

/// Exit codes of a site host, part of the contract: the driver and standalone mode report them.
pub mod exit_code {
    /// Graceful stop: control `Shutdown`, SIGTERM, SIGINT or the caller's shutdown future.
    pub const OK: i32 = 0;
    /// Anything that is neither a configuration nor a bind problem.
    pub const FAILURE: i32 = 1;
    /// The spec, a certificate, an application folder or its `web.config` is unusable.
    pub const CONFIG: i32 = 2;
    /// A listen address could not be bound.
    pub const BIND: i32 = 3;
    /// Rapid-fail protection stopped a pool; the reason names the pool and its last worker exit.
    pub const POOL_FAILED: i32 = 4;
}

/// How long a caller waits for the reply to `command` from a host running `spec`: a recycle or
/// start may wait for workers to start (`start_time_limit`) and old ones to stop
/// (`shutdown_time_limit`); a shutdown drains for its grace.
pub fn command_deadline(command: &Command, spec: &HostSpec) -> std::time::Duration {
    use std::time::Duration;
    let base = Duration::from_secs(10);
    let longest =
        |f: fn(&PoolSpec) -> Duration| spec.pools.iter().map(f).max().unwrap_or(Duration::ZERO);
    match command {
        Command::Status => base,
        Command::StartPool { .. } => base + longest(|p| p.start_time_limit),
        Command::StopPool { .. } => base + longest(|p| p.shutdown_time_limit),
        Command::RecyclePool { .. } => {
            base + longest(|p| p.start_time_limit) + longest(|p| p.shutdown_time_limit)
        }
        Command::Shutdown { grace } => base + *grace,
    }
}

/// File name of the control socket inside a host's runtime folder.
pub const CONTROL_SOCKET: &str = "control.sock";
/// File name of the host spec inside a host's runtime folder.
pub const SPEC_FILE: &str = "spec.json";
/// File name of the exit record a host writes just before it exits.
pub const EXIT_RECORD: &str = "exit.json";
