//! The files of a host's runtime folder, read and written in one place: the spec the host is
//! started with (`spec.json`) and the record it leaves when it exits (`exit.json`).
//!
//! Both are written atomically (a temporary file, then a rename), so a reader never sees half of
//! one; the spec with mode 0600 because it may name certificate passwords.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::protocol::ExitRecord;
use crate::spec::HostSpec;
use crate::{EXIT_RECORD, SPEC_FILE};

/// A runtime-folder file that could not be read, decoded or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The file is not JSON of the expected shape.
    #[error("{path}: not a valid {what}: {detail}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What it should hold (`host spec`, `exit record`).
        what: &'static str,
        /// The decoder's message.
        detail: String,
    },
}

impl FileError {
    /// The file concerned.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. } | Self::Invalid { path, .. } => path,
        }
    }
}

/// Every file a host's runtime folder may hold: the control socket, the spec, the exit record,
/// and the temporary files they are written through.
pub const RUNTIME_FILES: [&str; 5] = [
    crate::CONTROL_SOCKET,
    SPEC_FILE,
    EXIT_RECORD,
    "spec.json.partial",
    "exit.json.partial",
];

/// `DIR/spec.json`.
pub fn spec_path(dir: &Path) -> PathBuf {
    dir.join(SPEC_FILE)
}

/// `DIR/exit.json`.
pub fn exit_record_path(dir: &Path) -> PathBuf {
    dir.join(EXIT_RECORD)
}

/// Reads and decodes `DIR/spec.json`. It is not [checked](HostSpec::check) here.
pub fn read_spec(dir: &Path) -> Result<HostSpec, FileError> {
    let path = spec_path(dir);
    let bytes = fs::read(&path).map_err(|source| FileError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| FileError::Invalid {
        path,
        what: "host spec",
        detail: e.to_string(),
    })
}

/// Writes `spec` as `DIR/spec.json` (mode 0600), replacing an earlier one.
pub fn write_spec(dir: &Path, spec: &HostSpec) -> Result<(), FileError> {
    let json = serde_json::to_vec_pretty(spec).map_err(|e| FileError::Io {
        path: spec_path(dir),
        source: io::Error::other(e),
    })?;
    write_atomically(&spec_path(dir), &json)
}

/// The exit record a host left in `dir`, if it left a readable one.
pub fn read_exit_record(dir: &Path) -> Option<ExitRecord> {
    let bytes = fs::read(exit_record_path(dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes `DIR/exit.json`.
pub fn write_exit_record(dir: &Path, record: &ExitRecord) -> Result<(), FileError> {
    let json = serde_json::to_vec(record).map_err(|e| FileError::Io {
        path: exit_record_path(dir),
        source: io::Error::other(e),
    })?;
    write_atomically(&exit_record_path(dir), &json)
}

/// Writes `bytes` to `path.partial` (mode 0600), syncs it and renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let io = |source| FileError::Io {
        path: path.to_owned(),
        source,
    };
    match fs::remove_file(&partial) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&partial, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn temporary_files_are_listed_as_runtime_files() {
        for name in [SPEC_FILE, EXIT_RECORD] {
            let partial = format!("{name}.partial");
            assert!(RUNTIME_FILES.contains(&partial.as_str()), "{partial}");
        }
    }

    #[test]
    fn exit_records_round_trip_and_a_missing_one_reads_as_none() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(read_exit_record(dir).is_none());
        let record = ExitRecord {
            code: crate::exit_code::CONFIG,
            reason: "binding[1].hostname: taken".into(),
        };
        write_exit_record(dir, &record).unwrap();
        assert_eq!(read_exit_record(dir), Some(record));
        fs::write(exit_record_path(dir), b"{\"code\":").unwrap();
        assert!(read_exit_record(dir).is_none());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn specs_are_private_and_replaced_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let err = read_spec(dir).unwrap_err();
        assert!(matches!(err, FileError::Io { .. }), "{err}");
        let mut spec = crate::spec::tests::minimal_spec();
        write_spec(dir, &spec).unwrap();
        spec.site_name = "second".into();
        write_spec(dir, &spec).unwrap();
        assert_eq!(read_spec(dir).unwrap(), spec);
        let mode = fs::metadata(spec_path(dir)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::write(spec_path(dir), b"{}").unwrap();
        let err = read_spec(dir).unwrap_err().to_string();
        assert!(err.contains("not a valid host spec"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }
}
