//! The configuration error and the notices validation produces.

use std::fmt;

use nomad_plugin::cty::{DecodeError, FieldError};

/// A configuration problem at a field path, e.g. `binding[0].port: unknown port label "web"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{message}", .path, if .path.is_empty() { "" } else { ": " })]
pub struct ConfigError {
    /// Field path using HCL block names and indices (`application[1].alias`); empty when the
    /// problem concerns the configuration as a whole.
    pub path: String,
    /// Lowercase description without a trailing period.
    pub message: String,
}

impl ConfigError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl From<FieldError> for ConfigError {
    fn from(e: FieldError) -> Self {
        Self::new(e.path, e.message)
    }
}

impl From<DecodeError> for ConfigError {
    fn from(e: DecodeError) -> Self {
        Self::new("", e.to_string())
    }
}

/// Something accepted but worth telling the operator, typically a Windows-only option that
/// has no effect on Linux. The driver turns notices into task events and log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Field path of the option, e.g. `application_pool[0].managed_pipeline_mode`.
    pub field_path: String,
    /// What happens (or does not), e.g. `has no effect on Linux`.
    pub message: String,
}

impl Notice {
    /// A notice about `field_path`.
    pub fn new(field_path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field_path: field_path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field_path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field_path, self.message)
        }
    }
}
