//! Finding an executable by name on `PATH`, then in the usual system folders: Nomad may start the plugin
//! with a reduced environment, and Debian puts `chromium` and `gcore` in `/usr/bin` anyway.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Folders searched after `PATH`.
const SYSTEM_DIRS: [&str; 4] = ["/usr/local/bin", "/usr/bin", "/bin", "/snap/bin"];

/// The first of `names` found as an executable file in `path` (a `PATH`-style list) or the system
/// folders.
pub(crate) fn find_in(names: &[&str], path: Option<&OsStr>) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    dirs.extend(SYSTEM_DIRS.iter().map(PathBuf::from));
    names.iter().find_map(|name| {
        dirs.iter()
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate))
    })
}

/// The first of `names` on this process's `PATH` or in the system folders.
pub(crate) fn find(names: &[&str]) -> Option<PathBuf> {
    find_in(names, std::env::var_os("PATH").as_deref())
}

pub(crate) fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_on_the_given_path_before_system_folders() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("sh");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_in(&["sh"], Some(dir.path().as_os_str())), Some(tool));
    }

    #[test]
    fn skips_files_that_are_not_executable() {
        let dir = tempfile::tempdir().unwrap();
        let name = "nomad-iis-not-a-tool";
        std::fs::write(dir.path().join(name), "data").unwrap();
        assert_eq!(find_in(&[name], Some(dir.path().as_os_str())), None);
    }
}
