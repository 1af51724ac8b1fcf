//! The seam to the screenshot and dump engines (crate `capture`): what the routes ask of them
//! and how their failures become statuses. The binary plugs the engines in; without them both
//! routes answer 501.

use std::pin::Pin;
use std::time::Duration;

use futures::future::BoxFuture;
use http::StatusCode;
use tokio::io::AsyncRead;

use crate::error::ApiError;

/// A page to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreenshotRequest {
    /// The URL the browser loads.
    pub url: String,
    /// A host name the browser must resolve to 127.0.0.1.
    pub map_host: Option<String>,
    /// Accept the site's certificate whatever it is (https bindings, often self-signed).
    pub ignore_certificate_errors: bool,
    /// Time limit.
    pub timeout: Duration,
}

/// The kind of dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpKind {
    /// All memory, as an ELF core.
    Full,
    /// A minidump.
    Mini,
}

/// A dump ready to stream; its file is gone once the reader is dropped.
pub struct DumpStream {
    /// Its length in bytes.
    pub len: u64,
    /// Its contents.
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
}

/// Why a capture failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureFailure {
    /// No browser installed.
    #[error("no Chromium on this machine: install the Debian package {package}")]
    BrowserMissing {
        /// The package to install.
        package: String,
    },
    /// No dump tool installed.
    #[error("the dump tool is missing: install the Debian package {package}")]
    ToolMissing {
        /// The package to install.
        package: String,
    },
    /// The capture took too long.
    #[error("timed out")]
    Timeout,
    /// The process to dump is gone (a worker that just exited).
    #[error("process {0} is gone")]
    NoProcess(u32),
    /// This build has no capture engine.
    #[error("{0} is not available in this build")]
    NotBuilt(&'static str),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

impl From<CaptureFailure> for ApiError {
    fn from(failure: CaptureFailure) -> Self {
        let status = match &failure {
            CaptureFailure::BrowserMissing { .. } => StatusCode::SERVICE_UNAVAILABLE,
            CaptureFailure::ToolMissing { .. } | CaptureFailure::NotBuilt(_) => {
                StatusCode::NOT_IMPLEMENTED
            }
            CaptureFailure::Timeout => StatusCode::GATEWAY_TIMEOUT,
            CaptureFailure::NoProcess(_) => StatusCode::CONFLICT,
            CaptureFailure::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, failure.to_string())
    }
}

/// The engines.
pub trait CaptureBackend: Send + Sync + 'static {
    /// A PNG of the page.
    fn screenshot(
        &self,
        request: ScreenshotRequest,
    ) -> BoxFuture<'_, Result<Vec<u8>, CaptureFailure>>;
    /// A dump of process `pid`; the process keeps running.
    fn dump(&self, pid: u32, kind: DumpKind) -> BoxFuture<'_, Result<DumpStream, CaptureFailure>>;
    /// Releases what the engines hold (the screenshot browser); called once when the plugin or
    /// `nomad_iis run` stops, so no browser process outlives it.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// No engines: both routes answer 501.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCapture;

impl CaptureBackend for NoCapture {
    fn screenshot(&self, _: ScreenshotRequest) -> BoxFuture<'_, Result<Vec<u8>, CaptureFailure>> {
        Box::pin(async { Err(CaptureFailure::NotBuilt("screenshots")) })
    }
    fn dump(&self, _: u32, _: DumpKind) -> BoxFuture<'_, Result<DumpStream, CaptureFailure>> {
        Box::pin(async { Err(CaptureFailure::NotBuilt("process dumps")) })
    }
}
