//! The Management API: an HTTP API over the `iis` tasks running on this node — push an
//! application as a zip, start/stop/recycle pools, read status, read and write the task folder,
//! take screenshots and process dumps. It sees tasks only through a
//! [`control::TaskRegistry`] (the driver's, or standalone mode's) and talks to site hosts only
//! through the control socket.
//!
//! # Layout
//! - [`routes`]: the route table, the one source of the router and the OpenAPI document.
//! - [`api`]: the request pipeline (auth → capability → task → operation), status, pools,
//!   debug, screenshot and dump routes.
//! - [`upload`]: streamed uploads and the stop–swap–start of an application folder.
//! - [`fs`]: the task folder routes and their confinement.
//! - [`archive`]: zip validation and extraction; folders as zip streams.
//! - [`auth`]: API key, HS256 tokens, scopes and capabilities.
//! - [`secret`]: secrets that never print, read from a value, a file or the environment.
//! - [`capture`]: the seam to the screenshot and dump engines.
//! - [`openapi`]: the OpenAPI 3 document.
//! - [`server`]: listening, TLS, shutdown.
//! - [`error`]: [`ApiError`], the JSON error body.
//!
//! # Errors
//! Every route failure is an [`ApiError`] with its status and a lowercase message naming the
//! object; set-up failures are [`ServeError`] and [`SecretError`].

#![forbid(unsafe_code)]

pub mod api;
pub mod archive;
pub mod auth;
pub mod capture;
pub mod error;
pub mod fs;
pub mod openapi;
pub mod routes;
pub mod secret;
pub mod server;
pub mod upload;

pub use api::{Api, DumpOptIn, Limits};
pub use auth::{Capability, Credentials};
pub use capture::{
    CaptureBackend, CaptureFailure, DumpKind, DumpStream, NoCapture, ScreenshotRequest,
};
pub use error::ApiError;
pub use secret::{Secret, SecretError, SecretSource};
pub use server::{Bound, ServeError, Settings, TlsFiles};
