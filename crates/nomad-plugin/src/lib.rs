//! A reusable SDK for HashiCorp Nomad task-driver plugins written in Rust.
//!
//! This crate knows nothing of IIS or of any particular driver: it owns the wire side of
//! Nomad's plugin protocol (see `shared/docs/nomad-plugin-protocol.md`).
//!
//! # Layout
//! - [`proto`]: the go-plugin and Nomad protos (our own `.proto` files, compiled by protox).
//! - [`hclspec`]: a builder for the hcldec specs a plugin returns from `ConfigSchema`.
//!
//! # Errors
//! Library functions return concrete error types naming what failed; gRPC status mapping is
//! left to the driver that uses the SDK.

#![forbid(unsafe_code)]

pub mod cty;
pub mod hcldec;
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
