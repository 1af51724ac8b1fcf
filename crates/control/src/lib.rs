//! The contract between the Nomad driver (and later the Management API) and the per-task site
//! host: what a host is asked to run ([`HostSpec`]), the commands it takes ([`Command`]), what it
//! reports ([`HostStatus`]), the record it leaves when it exits ([`ExitRecord`]), and a small
//! async [`Client`] for its control socket.
//!
//! # Layout
//! - [`spec`]: the fully resolved host specification (ports resolved, paths absolute).
//! - [`protocol`]: commands, replies and status types; the exit record.
//! - [`client`]: the unix-socket client.
//!
//! # Wire format
//! One JSON request line, one JSON reply line, per connection (see [`protocol`]). A unix socket in
//! a 0700 folder: file permissions are the authentication, as for sozu's command socket.
//!
//! This crate must not depend on the host, on tonic or on the config decoder: the driver and the
//! Management API use it without pulling the host in.

#![forbid(unsafe_code)]

pub mod client;
pub mod protocol;
pub mod spec;

pub use client::{Client, ClientError};
pub use protocol::{Command, ExitRecord, HostStatus, PoolState, PoolStatus, Reply};
pub use spec::{
    ApplicationSpec, BindingKind, BindingSpec, CertificateSource, HostSpec, PoolSpec, StartMode,
    UnavailableResponse, VirtualDirectorySpec,
};

/// File name of the control socket inside a host's runtime folder.
pub const CONTROL_SOCKET: &str = "control.sock";
/// File name of the host spec inside a host's runtime folder.
pub const SPEC_FILE: &str = "spec.json";
/// File name of the exit record a host writes just before it exits.
pub const EXIT_RECORD: &str = "exit.json";
