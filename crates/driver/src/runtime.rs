//! The hosts' runtime folders: `<runtime root>/<alloc_id>-<task name>`, mode 0700, holding the
//! control socket, the spec and the exit record.
//!
//! A unix socket path must fit in 108 bytes (`sun_path`); we keep `…/control.sock` under
//! [`MAX_SOCKET_PATH`] and otherwise fall back to a fixed-length name hashed from the alloc id and
//! task name. Names with characters other than `[A-Za-z0-9._-]` also use the hashed form, so two
//! task names can never map to one folder.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Longest control-socket path we accept, in bytes (the kernel's limit is 107 plus a NUL).
pub const MAX_SOCKET_PATH: usize = 99;

/// Why a runtime folder could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeDirError {
    /// Even the hashed name is too long: the root itself is.
    #[error("runtime root {root}: too long for a unix socket path (keep it under 60 bytes)")]
    RootTooLong {
        /// The configured root.
        root: PathBuf,
    },
    /// A filesystem operation failed.
    #[error("runtime folder {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

/// The runtime folder of task `task_name` of allocation `alloc_id` under `root`.
pub fn runtime_dir_for(
    root: &Path,
    alloc_id: &str,
    task_name: &str,
) -> Result<PathBuf, RuntimeDirError> {
    let plain = format!("{alloc_id}-{task_name}");
    let safe = !plain.is_empty()
        && plain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !plain.starts_with('.');
    if safe {
        let dir = root.join(&plain);
        if fits(&dir) {
            return Ok(dir);
        }
    }
    let dir = root.join(format!(
        "t-{:016x}",
        fnv1a64(format!("{alloc_id}/{task_name}").as_bytes())
    ));
    if fits(&dir) {
        Ok(dir)
    } else {
        Err(RuntimeDirError::RootTooLong { root: root.into() })
    }
}

fn fits(dir: &Path) -> bool {
    dir.join(control::CONTROL_SOCKET).as_os_str().len() <= MAX_SOCKET_PATH
}

/// FNV-1a, 64 bit: stable across Rust versions and platforms, unlike `DefaultHasher`.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Creates `root` (if needed) and makes sure it is writable, by writing and removing a probe file.
pub fn check_root(root: &Path) -> Result<(), RuntimeDirError> {
    let io = |source| RuntimeDirError::Io {
        path: root.into(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(io)?;
    let probe = root.join(format!(".probe-{}", std::process::id()));
    fs::write(&probe, b"").map_err(io)?;
    fs::remove_file(&probe).map_err(io)
}

/// Creates `dir` afresh with mode 0700, removing whatever an earlier attempt left there.
pub fn create_fresh(root: &Path, dir: &Path) -> Result<(), RuntimeDirError> {
    check_root(root)?;
    let io = |source| RuntimeDirError::Io {
        path: dir.into(),
        source,
    };
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    fs::DirBuilder::new().mode(0o700).create(dir).map_err(io)?;
    // The umask may have narrowed the mode further, never widened it; set it exactly.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)
}

/// Removes a runtime folder. A folder directly under `root` is removed with its contents; any
/// other path (it came from persisted state and the root may have changed since) only loses the
/// files a host puts there, so a damaged state can never make us delete a stranger's folder.
pub fn remove(root: &Path, dir: &Path) -> io::Result<()> {
    if dir.parent() == Some(root) && dir.file_name().is_some() {
        return match fs::remove_dir_all(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    for name in control::files::RUNTIME_FILES {
        match fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `spec` as the host's `spec.json` ([`control::files::write_spec`]).
pub fn write_spec(dir: &Path, spec: &control::HostSpec) -> Result<(), RuntimeDirError> {
    control::files::write_spec(dir, spec).map_err(|e| match e {
        control::FileError::Io { path, source } => RuntimeDirError::Io { path, source },
        control::FileError::Invalid { path, detail, .. } => RuntimeDirError::Io {
            path,
            source: io::Error::other(detail),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_readable_and_long_ones_hashed() {
        let root = Path::new("/run/nomad_iis");
        let alloc = "5b9f3c1e-8a0d-4f7e-9c2b-1d3e5f7a9b0c";
        let dir = runtime_dir_for(root, alloc, "web").unwrap();
        assert_eq!(dir, root.join(format!("{alloc}-web")));
        let long = runtime_dir_for(root, alloc, &"x".repeat(80)).unwrap();
        assert!(
            long.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("t-")
        );
        assert!(long.join("control.sock").as_os_str().len() <= MAX_SOCKET_PATH);
        assert_ne!(long, runtime_dir_for(root, alloc, &"y".repeat(80)).unwrap());
        let odd = runtime_dir_for(root, alloc, "my task").unwrap();
        assert!(odd.file_name().unwrap().to_str().unwrap().starts_with("t-"));
        assert!(runtime_dir_for(&PathBuf::from("/".repeat(90)), alloc, "web").is_err());
    }

    #[test]
    fn fresh_folders_are_private_and_removal_stays_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("rt");
        let dir = root.join("a-web");
        create_fresh(&root, &dir).unwrap();
        fs::write(dir.join("leftover"), b"x").unwrap();
        create_fresh(&root, &dir).unwrap();
        assert!(!dir.join("leftover").exists());
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        write_spec(&dir, &crate::test_support::host_spec(&dir, vec![])).unwrap();
        remove(&root, &dir).unwrap();
        assert!(!dir.exists());
        remove(&root, &dir).unwrap();

        // A folder outside the root keeps anything that is not the host's.
        let outside = tmp.path().join("elsewhere");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("precious"), b"x").unwrap();
        fs::write(outside.join(control::SPEC_FILE), b"{}").unwrap();
        assert!(remove(&root, &outside).is_err());
        assert!(outside.join("precious").exists());
        assert!(!outside.join(control::SPEC_FILE).exists());
    }

    #[test]
    fn an_unwritable_root_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        let err = check_root(&file.join("sub")).unwrap_err();
        assert!(err.to_string().contains("sub"), "{err}");
    }
}
