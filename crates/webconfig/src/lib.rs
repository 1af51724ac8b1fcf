//! STUB of the `webconfig` crate written on branch `proxy`: the interface only, so the host's
//! worker code compiles before that branch is merged. Replaced whole by the real crate.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which IIS module a web.config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Module {
    /// `<aspNetCore>`.
    AspNetCore,
    /// `<httpPlatform>`.
    HttpPlatform,
}

/// A worker definition read from web.config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerDefinition {
    pub module: Module,
    pub process_path: String,
    pub arguments: String,
    pub env: Vec<(String, String)>,
    pub stdout_log_enabled: bool,
    pub stdout_log_file: String,
    pub startup_time_limit: Duration,
    pub shutdown_time_limit: Duration,
    pub request_timeout: Duration,
    pub rapid_fails_per_minute: u32,
    pub startup_retry_count: u32,
    pub inprocess: bool,
}

/// A resolved command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// A web.config problem.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WebConfigError(String);

/// Stub: never finds a worker.
pub fn parse(_xml: &str) -> Result<Option<WorkerDefinition>, WebConfigError> {
    Ok(None)
}

/// Stub.
pub fn resolve_command(
    def: &WorkerDefinition,
    app_dir: &Path,
    _port: u16,
) -> Result<ResolvedCommand, WebConfigError> {
    Ok(ResolvedCommand {
        program: app_dir.join(&def.process_path),
        args: Vec::new(),
    })
}
