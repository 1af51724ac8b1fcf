//! The Nomad task driver `iis`: it runs each task's site in a detached `nomad_iis host` process
//! and speaks Nomad's `BasePlugin` and `Driver` gRPC services. It knows nothing of HTTP serving
//! (the host does that) nor of the go-plugin transport (the binary wires [`IisDriver::routes`]
//! into `nomad_plugin::transport`).
//!
//! # Layout (split as Nomad's own rawexec driver)
//! - [`driver`]: constants, options, the service impls — one method per RPC.
//! - [`handle`]: one task's handle: status snapshot, exit watch, the watcher of its host.
//! - [`state`]: the map of tracked tasks and the persisted [`DriverState`].
//! - [`process`]: spawning the host detached and signalling it (the only `unsafe`: `pre_exec`).
//! - [`runtime`]: the hosts' private runtime folders.
//! - [`identity`]: the uid/gid each pool's workers run as, dynamic ids, `directory_security`.
//! - [`acl`]: POSIX ACLs as extended attributes (`unsafe`: three libc calls).
//! - [`stats`]: CPU and memory from procfs.
//! - [`events`]: the task-event broadcast.
//! - [`fingerprint`]: node attributes and health.
//! - [`registry`]: the tasks as the Management API sees them ([`control::TaskRegistry`]).
//! - [`error`]: [`DriverError`] and its mapping to gRPC statuses (recoverable or not).
//! - `test_support` (unit tests only): builders of host specs and driver states.
//!
//! # Errors
//! Every RPC returns a [`DriverError`], turned into a `tonic::Status` in one place
//! (`error.rs`). Transient failures carry Nomad's `RecoverableError` detail so the restart policy
//! applies; configuration errors do not. Nothing here panics on input from Nomad, the host or
//! the filesystem.

#![deny(unsafe_code)]

// lgetxattr/lsetxattr are unsafe; see the module doc for why our use is sound.
#[allow(unsafe_code)]
pub mod acl;
pub mod driver;
pub mod error;
pub mod events;
pub mod fingerprint;
pub mod handle;
pub mod identity;
// `pre_exec` is unsafe; see the module doc for why our use is sound.
#[allow(unsafe_code)]
pub mod process;
pub mod registry;
pub mod runtime;
pub mod state;
pub mod stats;
#[cfg(test)]
mod test_support;

pub use driver::{
    DriverOptions, HANDLE_VERSION, IisDriver, ManagementApi, PLUGIN_API_VERSION, PLUGIN_NAME,
};
pub use error::DriverError;
pub use process::HostCommand;
pub use registry::DriverRegistry;
pub use state::{DRIVER_STATE_VERSION, DriverState};
