//! Secrets (the API key, the JWT secret) as a type that never prints its value, and where they
//! come from: the command line, a file, or an environment variable (the last two keep them out
//! of `ps`).

use std::fmt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq as _;

/// A secret value. `Debug` and `Display` print `[redacted]`; comparison is constant-time.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value. Empty values are refused by [`SecretSource::load`], not here.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the few places that must use it (HMAC keys).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` equals the secret, in time that does not depend on where they differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        // Lengths may leak; contents do not.
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a secret is read from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Given on the command line (visible in `ps`).
    Value(Secret),
    /// The first line of a file (trailing whitespace removed).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Value([redacted])"),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Env(name) => f.debug_tuple("Env").field(name).finish(),
        }
    }
}

/// A secret that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("{what}: cannot read {path}: {source}")]
    File {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The environment variable is unset or not UTF-8.
    #[error("{what}: environment variable {name} is not set")]
    Env {
        /// Which setting.
        what: &'static str,
        /// The variable.
        name: String,
    },
    /// The value is empty.
    #[error("{what}: empty")]
    Empty {
        /// Which setting.
        what: &'static str,
    },
    /// More than one source was given.
    #[error("{what}: give only one of the value, a file or an environment variable")]
    Ambiguous {
        /// Which setting.
        what: &'static str,
    },
}

impl SecretSource {
    /// Picks at most one source from the three forms of a setting (`what` names it in errors,
    /// e.g. `--management-api-key`).
    pub fn pick(
        what: &'static str,
        value: Option<String>,
        file: Option<PathBuf>,
        env: Option<String>,
    ) -> Result<Option<Self>, SecretError> {
        match (value, file, env) {
            (None, None, None) => Ok(None),
            (Some(v), None, None) => Ok(Some(Self::Value(Secret::new(v)))),
            (None, Some(f), None) => Ok(Some(Self::File(f))),
            (None, None, Some(e)) => Ok(Some(Self::Env(e))),
            _ => Err(SecretError::Ambiguous { what }),
        }
    }

    /// Reads the secret.
    pub fn load(&self, what: &'static str) -> Result<Secret, SecretError> {
        let value = match self {
            Self::Value(secret) => secret.0.clone(),
            Self::File(path) => read_first_line(path).map_err(|source| SecretError::File {
                what,
                path: path.clone(),
                source,
            })?,
            Self::Env(name) => std::env::var(name).map_err(|_| SecretError::Env {
                what,
                name: name.clone(),
            })?,
        };
        let value = value.trim_end().to_owned();
        if value.is_empty() {
            return Err(SecretError::Empty { what });
        }
        Ok(Secret(value))
    }
}

fn read_first_line(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(!format!("{secret}").contains("hunter2"));
        let source = SecretSource::Value(secret);
        assert!(!format!("{source:?}").contains("hunter2"));
    }

    #[test]
    fn sources_load_and_empty_or_double_sources_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("key");
        std::fs::write(&file, "s3cret\n").unwrap();
        let source = SecretSource::pick("--k", None, Some(file.clone()), None)
            .unwrap()
            .unwrap();
        assert!(source.load("--k").unwrap().matches(b"s3cret"));
        assert!(!source.load("--k").unwrap().matches(b"s3cre"));
        let err = SecretSource::pick("--k", Some("a".into()), Some(file), None).unwrap_err();
        assert!(err.to_string().contains("--k"));
        std::fs::write(tmp.path().join("empty"), "\n").unwrap();
        let empty = SecretSource::File(tmp.path().join("empty"))
            .load("--k")
            .unwrap_err();
        assert!(matches!(empty, SecretError::Empty { .. }));
        let missing = SecretSource::Env("SURELY_UNSET_VARIABLE_42".into())
            .load("--k")
            .unwrap_err();
        assert!(missing.to_string().contains("SURELY_UNSET_VARIABLE_42"));
    }
}
