//! Start-up errors of the host and the exit code each one maps to.
//!
//! Exit codes are part of the contract with the driver, which reports them to Nomad:
//! [`EXIT_OK`] graceful stop, [`EXIT_FAILURE`] anything unexpected, [`EXIT_CONFIG`] a bad spec
//! or certificate, [`EXIT_BIND`] a listen address that could not be bound.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use control::ExitRecord;

/// Graceful stop: control `Shutdown`, SIGTERM, SIGINT or the caller's shutdown future.
pub const EXIT_OK: i32 = control::exit_code::OK;
/// Anything that is neither a configuration nor a bind problem.
pub const EXIT_FAILURE: i32 = control::exit_code::FAILURE;
/// The spec, a certificate or an application folder is unusable.
pub const EXIT_CONFIG: i32 = control::exit_code::CONFIG;
/// A listen address could not be bound.
pub const EXIT_BIND: i32 = control::exit_code::BIND;

/// Why a host could not start. The message names the field, file or address at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// `spec.json` could not be read.
    #[error("cannot read host spec {path}: {reason}")]
    SpecUnreadable {
        /// The spec file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// `spec.json` is not a valid [`control::HostSpec`].
    #[error("host spec {path} is not valid: {detail}")]
    SpecInvalid {
        /// The spec file.
        path: PathBuf,
        /// What the decoder reported.
        detail: String,
    },
    /// A field of the spec (or a file it names) is unusable, e.g.
    /// `binding[1].certificate: cannot read key file /x/key.pem: No such file or directory`.
    #[error("{field}: {detail}")]
    Invalid {
        /// Path of the field in the spec, e.g. `binding[1].certificate`.
        field: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A listener could not be bound.
    #[error("{bindings}: cannot listen on {address}: {reason}")]
    Bind {
        /// The bindings that share the address, e.g. `binding[0], binding[2]`.
        bindings: String,
        /// The address.
        address: SocketAddr,
        /// Why, in words an operator understands.
        reason: String,
    },
    /// Anything else: the runtime folder, the control socket, a thread.
    #[error("{context}: {reason}")]
    Other {
        /// What the host was doing.
        context: String,
        /// The cause.
        reason: String,
    },
}

impl StartupError {
    /// Shorthand for [`StartupError::Invalid`].
    pub(crate) fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// Shorthand for [`StartupError::Other`].
    pub(crate) fn other(context: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Other {
            context: context.into(),
            reason: reason.to_string(),
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::SpecUnreadable { .. } | Self::SpecInvalid { .. } | Self::Invalid { .. } => {
                EXIT_CONFIG
            }
            Self::Bind { .. } => EXIT_BIND,
            Self::Other { .. } => EXIT_FAILURE,
        }
    }

    /// The exit record the host leaves behind for this error.
    pub fn to_exit_record(&self) -> ExitRecord {
        ExitRecord {
            code: self.exit_code(),
            reason: self.to_string(),
        }
    }
}

/// The operating system's description of an I/O error without the `(os error N)` suffix, so
/// messages read `No such file or directory` as operators know them.
pub(crate) fn describe_io(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_described_without_the_os_error_suffix() {
        let error = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(describe_io(&error), "No such file or directory");
        let custom = io::Error::other("odd");
        assert_eq!(describe_io(&custom), "odd");
    }

    #[test]
    fn exit_codes_follow_the_error_kind() {
        assert_eq!(
            StartupError::invalid("binding[0]", "bad").exit_code(),
            EXIT_CONFIG
        );
        let bind = StartupError::Bind {
            bindings: "binding[0]".into(),
            address: SocketAddr::from(([127, 0, 0, 1], 80)),
            reason: "in use".into(),
        };
        assert_eq!(bind.exit_code(), EXIT_BIND);
        assert_eq!(
            bind.to_string(),
            "binding[0]: cannot listen on 127.0.0.1:80: in use"
        );
        assert_eq!(StartupError::other("x", "y").exit_code(), EXIT_FAILURE);
    }
}
