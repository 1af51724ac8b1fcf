//! A reusable SDK for HashiCorp Nomad task-driver plugins written in Rust.
//!
//! This crate knows nothing of IIS or of any particular driver: it owns the wire side of
//! Nomad's plugin protocol (see `shared/docs/nomad-plugin-protocol.md`).
//!
//! # Layout
//! - [`transport`]: the go-plugin side: magic cookie check, handshake line, the h2c gRPC
//!   server with go-plugin's health, broker, stdio and controller services, SIGINT handling.
//! - [`logging`]: hclog JSON lines on stderr for `tracing`, through a bounded queue and a
//!   writer thread, so logging never blocks or panics when nobody reads stderr.
//! - [`status`]: gRPC error statuses, including the `RecoverableError` detail Nomad reads to
//!   let a task's restart policy apply.
//! - [`cty`]: decoding the cty-msgpack values Nomad sends for `config {}` blocks.
//! - [`hclspec`]: a builder for the hcldec specs a plugin returns from `ConfigSchema`.
//! - [`proto`]: the go-plugin and Nomad protos (our own `.proto` files, compiled by protox).
//!
//! # Typical use
//! A driver binary checks [`transport::launched_by_nomad`], calls [`logging::init_hclog`] and
//! [`transport::ignore_sigint`], builds its `BasePlugin`/`Driver` servers with
//! [`transport::MAX_MESSAGE_SIZE`] limits, and hands them to [`transport::serve`].
//!
//! # Errors
//! Each module returns its own `thiserror` enum naming what failed (the path, port or
//! setting). Mapping a driver's errors to gRPC statuses is left to the driver, with
//! [`status`] providing the recoverable/fatal constructors. Nothing here panics on input
//! from outside; logging swallows its own I/O errors because it has nowhere to report them.

#![forbid(unsafe_code)]

pub mod cty;
pub mod hclspec;
pub mod logging;
pub mod status;
pub mod transport;

/// Generated protobuf and gRPC code. Field numbers, package, service and method names are
/// what matter on the wire; the `.proto` sources live in `proto/`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/mod.rs"));

    /// Nomad's `BasePlugin` service and its messages.
    pub use self::hashicorp::nomad::plugins::base::proto as base;
    /// Nomad's `Driver` service and its messages.
    pub use self::hashicorp::nomad::plugins::drivers::proto as drivers;
    /// The hcldec spec messages.
    pub use self::hashicorp::nomad::plugins::shared::hclspec;
    /// Shared structs: `Attribute`, `RecoverableError`.
    pub use self::hashicorp::nomad::plugins::shared::structs;
    /// go-plugin's own services (`plugin.GRPCController`, `GRPCBroker`, `GRPCStdio`).
    pub use self::plugin as goplugin;
}
