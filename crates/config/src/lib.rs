//! Task and driver configuration of `nomad_iis`: types, defaults, decoding from cty msgpack,
//! validation, naming rules, and resolution into the host's [`control::HostSpec`].
//!
//! Pure: no I/O, no processes. It knows the original nomad-iis schema (see
//! `shared/docs/reference-nomad-iis.md`) and nothing of gRPC, sockets or the host's internals.
//!
//! # Layout
//! - [`task`]: [`TaskConfig`] and its blocks, the task spec, decoding.
//! - [`driver`]: [`DriverConfig`], the agent-side plugin configuration.
//! - [`validate`]: structural rules and node policy; [`Notice`]s for options without effect.
//! - [`resolve`](mod@resolve): [`ResolveContext`] + [`resolve()`](fn@resolve) → [`control::HostSpec`].
//! - [`identity`]: the account each pool's workers run as ([`WorkerAccount`]), before lookup.
//! - [`duration`]: the original's duration syntax.
//! - [`naming`]: site and pool names (`nomad-{allocId}-{taskName}[-{pool}]`).
//! - [`env`](mod@env): the workers' environment (case-insensitive de-duplication, temp folders).
//! - [`error`]: [`ConfigError`] and [`Notice`].
//! - [`windows_path`]: Windows paths (`C:\…`, `\\server\share`) refused with advice for Linux.
//!
//! # Errors
//! Every failure is a [`ConfigError`] `{ path, message }` displayed as `path: message`, the
//! path naming the field as the user wrote it (`binding[0].port`, `application[1].alias`).
//! Decoding and validation stop at the first error.
//!
//! # Example
//! ```
//! use config::{DriverConfig, ResolveContext, TaskConfig, resolve};
//!
//! let body = serde_json::json!({
//!     "application": {"path": "local"},
//!     "binding": {"type": "http", "port": "web"},
//! });
//! let task = TaskConfig::from_json(&body).unwrap();
//! let notices = task.validate(&DriverConfig::default()).unwrap();
//! assert!(notices.is_empty());
//! let ctx = ResolveContext {
//!     alloc_id: "a1".into(),
//!     task_name: "site".into(),
//!     task_dir: "/alloc/site".into(),
//!     ports: [("web".to_owned(), 25001)].into(),
//!     ..ResolveContext::default()
//! };
//! let spec = resolve(&task, &ctx).unwrap();
//! assert_eq!(spec.site_name, "nomad-a1-site");
//! assert_eq!(spec.bindings[0].port, 25001);
//! ```

#![forbid(unsafe_code)]

pub mod driver;
pub mod duration;
pub mod env;
pub mod error;
pub mod identity;
pub mod naming;
pub mod resolve;
pub mod task;
pub mod validate;
pub mod windows_path;

pub use driver::{DriverConfig, ProcdumpConfig};
pub use duration::parse_duration;
pub use env::{dedupe_env, task_env};
pub use error::{ConfigError, Notice};
pub use identity::{PoolIdentity, WorkerAccount};
pub use naming::{pool_full_name, sanitize_name, site_name};
pub use resolve::{ResolveContext, resolve};
pub use task::{
    ApplicationConfig, BindingConfig, CertificateConfig, Extension, Identity, ManagedPipelineMode,
    ManagedRuntimeVersion, PoolConfig, PortRef, ProcessConfig, ServiceAutoStartProvider,
    TaskConfig, VirtualDirectoryConfig,
};
pub use validate::normalize_alias;
