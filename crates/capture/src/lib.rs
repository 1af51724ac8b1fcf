//! Looking at a running site the way an operator would: a full-page screenshot taken by the system
//! Chromium, and a dump of a worker process (a full ELF core through gdb's `gcore`, or a minidump).
//!
//! Nothing here knows about tasks, pools or HTTP routes: the Management API resolves an allocation to a
//! URL (plus the binding's hostname) or to a worker pid and calls in here.
//!
//! # Layout
//! - [`screenshot`]: [`Screenshotter`], one headless Chromium started on first use and reused, a fresh
//!   browser context and page per request, at most `max_concurrent` pages at once.
//! - [`dump`](mod@dump): [`dump()`] writes a full core or a minidump of a process into a private temporary
//!   folder and hands it back as a [`DumpFile`] whose path is already unlinked, so nothing is left on
//!   disk whatever happens to the stream.
//! - `locate`: finding an executable on `PATH` (and the usual system folders, which a plugin's
//!   environment may lack).
//!
//! # Errors
//! One enum, [`CaptureError`], whose variants map onto HTTP answers: a missing Debian package (503/501
//! naming it), a timeout (504), an unknown pid (404), anything else (500 with the message).
//!
//! Nothing is downloaded, at build time or at run time: the browser is the system's `chromium`.

#![forbid(unsafe_code)]

pub mod dump;
mod locate;
pub mod screenshot;

pub use dump::{DumpFile, DumpKind, dump};
pub use screenshot::{ScreenshotOptions, ScreenshotTarget, Screenshotter};

/// Why a screenshot or a dump could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// No Chromium executable was found; `package` is the Debian package that provides one.
    #[error("no chromium browser found: install the `{package}` package")]
    BrowserMissing { package: &'static str },
    /// A tool the capture needs (gdb's `gcore`) is not installed; `package` provides it.
    #[error("tool not found: install the `{package}` package")]
    ToolMissing { package: &'static str },
    /// The capture did not finish within the requested time.
    #[error("capture timed out")]
    Timeout,
    /// No process has this pid.
    #[error("no process with pid {0}")]
    ProcessNotFound(u32),
    /// Anything else, with what went wrong.
    #[error("{0}")]
    Failed(String),
}

/// Whether `pid` names a process that has not exited (a zombie has).
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may itself contain some.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_some_and(|state| state != 'Z' && state != 'X')
}
