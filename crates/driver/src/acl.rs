//! POSIX ACLs, written as the kernel's `system.posix_acl_access` / `system.posix_acl_default`
//! extended attributes: how `directory_security` gives a pool identity access to its task's
//! folders and nothing else, without the `acl` package's `setfacl`.
//!
//! The attribute format is the kernel's (`linux/posix_acl_xattr.h`): a little-endian `u32`
//! version 2, then entries of `u16 tag, u16 perm, u32 id`, sorted by tag and, for named users
//! and groups, by id; a mask entry whenever there is a named entry. Setting the access ACL also
//! sets the file's mode bits (owner = user entry, group = mask, other = other entry).
//!
//! Every call uses the `l*xattr` variants, which never follow a symbolic link in the last
//! component (the kernel refuses ACLs on links themselves); walks skip links and anything
//! that is neither a regular file nor a folder.
//!
//! This module holds `unsafe` code: the three libc calls. Each passes a NUL-terminated path
//! and attribute name that live for the whole call and a buffer pointer with its exact length;
//! the kernel writes at most that many bytes. Nothing else is unsafe.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const VERSION: u32 = 2;
const TAG_USER_OBJ: u16 = 0x01;
const TAG_USER: u16 = 0x02;
const TAG_GROUP_OBJ: u16 = 0x04;
const TAG_GROUP: u16 = 0x08;
const TAG_MASK: u16 = 0x10;
const TAG_OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;

/// Read permission bit of an entry.
pub const READ: u16 = 4;
/// Write permission bit.
pub const WRITE: u16 = 2;
/// Execute (search, for folders) permission bit.
pub const EXECUTE: u16 = 1;

/// Which of a file's two ACLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Who may access the file or folder.
    Access,
    /// What files created in a folder inherit.
    Default,
}

impl Kind {
    fn attribute(self) -> &'static str {
        match self {
            Kind::Access => "system.posix_acl_access",
            Kind::Default => "system.posix_acl_default",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// One ACL, kept in the kernel's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    entries: Vec<Entry>,
}

impl Acl {
    /// The ACL equivalent to mode bits alone.
    pub fn from_mode(mode: u32) -> Self {
        let perm = |shift: u32| ((mode >> shift) & 7) as u16;
        Self {
            entries: vec![
                Entry {
                    tag: TAG_USER_OBJ,
                    perm: perm(6),
                    id: UNDEFINED_ID,
                },
                Entry {
                    tag: TAG_GROUP_OBJ,
                    perm: perm(3),
                    id: UNDEFINED_ID,
                },
                Entry {
                    tag: TAG_OTHER,
                    perm: perm(0),
                    id: UNDEFINED_ID,
                },
            ],
        }
    }

    /// Parses the attribute's bytes.
    pub fn parse(bytes: &[u8]) -> io::Result<Self> {
        let invalid =
            |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("ACL: {what}"));
        let (header, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| invalid("too short"))?;
        if u32::from_le_bytes(*header) != VERSION {
            return Err(invalid("unknown version"));
        }
        if rest.len() % 8 != 0 {
            return Err(invalid("truncated entry"));
        }
        let entries = rest
            .chunks_exact(8)
            .map(|c| Entry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]),
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        let mut acl = Self { entries };
        acl.sort();
        Ok(acl)
    }

    /// The attribute's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 8 * self.entries.len());
        out.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&e.id.to_le_bytes());
        }
        out
    }

    fn sort(&mut self) {
        self.entries.sort_by_key(|e| (e.tag, e.id));
    }

    /// The permissions of named user `uid`, if it has an entry.
    pub fn user(&self, uid: u32) -> Option<u16> {
        self.entries
            .iter()
            .find(|e| e.tag == TAG_USER && e.id == uid)
            .map(|e| e.perm)
    }

    /// The permissions of everybody else.
    pub fn other(&self) -> u16 {
        self.entries
            .iter()
            .find(|e| e.tag == TAG_OTHER)
            .map_or(0, |e| e.perm)
    }

    /// Gives named user `uid` exactly `perm`.
    pub fn set_user(&mut self, uid: u32, perm: u16) {
        match self
            .entries
            .iter_mut()
            .find(|e| e.tag == TAG_USER && e.id == uid)
        {
            Some(entry) => entry.perm = perm,
            None => self.entries.push(Entry {
                tag: TAG_USER,
                perm,
                id: uid,
            }),
        }
        self.recompute_mask();
    }

    /// Removes named user `uid`; whether it had an entry.
    pub fn remove_user(&mut self, uid: u32) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| !(e.tag == TAG_USER && e.id == uid));
        let removed = self.entries.len() != before;
        if removed {
            self.recompute_mask();
        }
        removed
    }

    /// Sets the permissions of everybody else.
    pub fn set_other(&mut self, perm: u16) {
        for e in &mut self.entries {
            if e.tag == TAG_OTHER {
                e.perm = perm;
            }
        }
    }

    /// Sets the permissions of the owning group.
    pub fn set_group_obj(&mut self, perm: u16) {
        for e in &mut self.entries {
            if e.tag == TAG_GROUP_OBJ {
                e.perm = perm;
            }
        }
        self.recompute_mask();
    }

    /// The base entries only (owner, group, other), as the start of a default ACL.
    fn base(&self) -> Self {
        let mut base = Self {
            entries: self
                .entries
                .iter()
                .filter(|e| matches!(e.tag, TAG_USER_OBJ | TAG_GROUP_OBJ | TAG_OTHER))
                .copied()
                .collect(),
        };
        // A mask limited the owning group's effective rights; keep that limit.
        if let Some(mask) = self.entries.iter().find(|e| e.tag == TAG_MASK) {
            for e in &mut base.entries {
                if e.tag == TAG_GROUP_OBJ {
                    e.perm &= mask.perm;
                }
            }
        }
        base
    }

    /// As `setfacl` does: the mask is the union of the group class (owning group, named users
    /// and groups) when there are named entries, and absent otherwise.
    fn recompute_mask(&mut self) {
        self.entries.retain(|e| e.tag != TAG_MASK);
        let named = self
            .entries
            .iter()
            .any(|e| matches!(e.tag, TAG_USER | TAG_GROUP));
        if named {
            let perm = self
                .entries
                .iter()
                .filter(|e| matches!(e.tag, TAG_USER | TAG_GROUP | TAG_GROUP_OBJ))
                .fold(0, |acc, e| acc | e.perm);
            self.entries.push(Entry {
                tag: TAG_MASK,
                perm,
                id: UNDEFINED_ID,
            });
        }
        self.sort();
    }
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// Reads `path`'s ACL of `kind`; `None` when it has none (only its mode bits).
pub fn read(path: &Path, kind: Kind) -> io::Result<Option<Acl>> {
    let c_path = c_string(path.as_os_str().as_bytes())?;
    let c_name = c_string(kind.attribute().as_bytes())?;
    // 4 + 8 × 32 entries; a larger ACL is retried with the size the kernel reports.
    let mut buffer = vec![0u8; 260];
    loop {
        // SAFETY: both strings are NUL-terminated and outlive the call; the buffer pointer is
        // valid for `buffer.len()` bytes, which is the size passed.
        #[allow(unsafe_code)]
        let n = unsafe {
            libc::lgetxattr(
                c_path.as_ptr(),
                c_name.as_ptr(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        };
        if n >= 0 {
            buffer.truncate(n as usize);
            return Acl::parse(&buffer).map(Some);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) => return Ok(None),
            Some(libc::ERANGE) if buffer.len() < 1 << 20 => {
                let len = buffer.len() * 4;
                buffer.resize(len, 0);
            }
            _ => return Err(err),
        }
    }
}

/// Writes `acl` as `path`'s ACL of `kind`.
pub fn write(path: &Path, kind: Kind, acl: &Acl) -> io::Result<()> {
    let c_path = c_string(path.as_os_str().as_bytes())?;
    let c_name = c_string(kind.attribute().as_bytes())?;
    let bytes = acl.to_bytes();
    // SAFETY: both strings are NUL-terminated and outlive the call; the value pointer is valid
    // for `bytes.len()` bytes, which is the size passed.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The access ACL of `path`, from its attribute or its mode bits.
pub fn access(path: &Path, meta: &fs::Metadata) -> io::Result<Acl> {
    Ok(read(path, Kind::Access)?.unwrap_or_else(|| Acl::from_mode(meta.permissions().mode())))
}

/// A failed ACL change, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct AclError {
    /// The file or folder.
    pub path: PathBuf,
    /// Cause (`EOPNOTSUPP` when the filesystem has no ACL support).
    pub source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> AclError + '_ {
    move |source| AclError {
        path: path.to_owned(),
        source,
    }
}

/// Calls `visit` for `root` and, when `recursive`, every folder and regular file below it
/// (symbolic links and special files are skipped, never followed). A missing root is no error.
fn walk(
    root: &Path,
    recursive: bool,
    mut visit: impl FnMut(&Path, &fs::Metadata) -> Result<(), AclError>,
) -> Result<(), AclError> {
    let meta = match fs::symlink_metadata(root) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(at(root)(e)),
    };
    let mut stack = vec![(root.to_path_buf(), meta)];
    while let Some((path, meta)) = stack.pop() {
        let kind = meta.file_type();
        if !(kind.is_dir() || kind.is_file()) {
            continue;
        }
        visit(&path, &meta)?;
        if recursive && kind.is_dir() {
            for entry in fs::read_dir(&path).map_err(at(&path))? {
                let entry = entry.map_err(at(&path))?;
                let child = entry.path();
                match fs::symlink_metadata(&child) {
                    Ok(meta) => stack.push((child, meta)),
                    // Removed while we walk: nothing left to protect.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(at(&child)(e)),
                }
            }
        }
    }
    Ok(())
}

/// How a grant applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// `READ`, `READ | WRITE`, … Folders also get search permission; files get execute only
    /// when somebody may already execute them (as `setfacl`'s `X`).
    pub perm: u16,
    /// Also every folder and file below.
    pub recursive: bool,
    /// Make the root root's alone before the grant (not below it): owner `root:root` (Nomad
    /// hands task folders to `nobody`, which would keep owner rights), and no rights for the
    /// owning group or others.
    pub close: bool,
}

/// Gives `uid` the grant's rights on `root` (and below), in the access ACL of each and, for
/// folders, in the default ACL their new files inherit.
pub fn grant(root: &Path, uid: u32, grant: Grant) -> Result<(), AclError> {
    walk(root, grant.recursive, |path, meta| {
        let is_dir = meta.is_dir();
        let perm = if is_dir || meta.mode() & 0o111 != 0 {
            grant.perm | EXECUTE
        } else {
            grant.perm & !EXECUTE
        };
        let closing = grant.close && path == root;
        if closing && (meta.uid() != 0 || meta.gid() != 0) {
            std::os::unix::fs::lchown(path, Some(0), Some(0)).map_err(at(path))?;
        }
        let mut acl = access(path, meta).map_err(at(path))?;
        if closing {
            acl.set_other(0);
            acl.set_group_obj(0);
        }
        acl.set_user(uid, perm);
        write(path, Kind::Access, &acl).map_err(at(path))?;
        if is_dir {
            let mut default = match read(path, Kind::Default).map_err(at(path))? {
                Some(default) => default,
                None => acl.base(),
            };
            default.set_user(uid, grant.perm | EXECUTE);
            write(path, Kind::Default, &default).map_err(at(path))?;
        }
        Ok(())
    })
}

/// Lets `uid` pass through `dir` (search permission) unless everybody already may.
pub fn allow_traverse(dir: &Path, uid: u32) -> Result<(), AclError> {
    walk(dir, false, |path, meta| {
        if !meta.is_dir() || meta.mode() & 0o001 != 0 {
            return Ok(());
        }
        let mut acl = access(path, meta).map_err(at(path))?;
        let current = acl.user(uid).unwrap_or(0);
        if current & EXECUTE == 0 {
            acl.set_user(uid, current | EXECUTE);
            write(path, Kind::Access, &acl).map_err(at(path))?;
        }
        Ok(())
    })
}

/// Takes every entry of `uid` away from `root` (and below), access and default ACLs alike.
pub fn revoke(root: &Path, uid: u32, recursive: bool) -> Result<(), AclError> {
    walk(root, recursive, |path, meta| {
        if let Some(mut acl) = read(path, Kind::Access).map_err(at(path))?
            && acl.remove_user(uid)
        {
            write(path, Kind::Access, &acl).map_err(at(path))?;
        }
        if meta.is_dir()
            && let Some(mut acl) = read(path, Kind::Default).map_err(at(path))?
            && acl.remove_user(uid)
        {
            write(path, Kind::Default, &acl).map_err(at(path))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_in_kernel_order() {
        let mut acl = Acl::from_mode(0o754);
        acl.set_user(61300, READ | EXECUTE);
        acl.set_user(1000, READ);
        let bytes = acl.to_bytes();
        // version, then user_obj, user 1000, user 61300, group_obj, mask, other.
        let tags: Vec<u16> = bytes[4..]
            .chunks_exact(8)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(tags, vec![1, 2, 2, 4, 0x10, 0x20]);
        let parsed = Acl::parse(&bytes).unwrap();
        assert_eq!(parsed, acl);
        assert_eq!(parsed.user(1000), Some(READ));
        assert_eq!(parsed.other(), 4);
        // The mask is the union of the group class: group r-x, users r-x and r--.
        assert_eq!(
            parsed
                .entries
                .iter()
                .find(|e| e.tag == TAG_MASK)
                .unwrap()
                .perm,
            5
        );
        let mut removed = parsed.clone();
        assert!(removed.remove_user(1000));
        assert!(removed.remove_user(61300));
        assert!(!removed.remove_user(61300));
        assert_eq!(removed, Acl::from_mode(0o754));
        assert!(Acl::parse(&[2, 0, 0, 0, 1]).is_err());
        assert!(Acl::parse(&[3, 0, 0, 0]).is_err());
    }

    #[test]
    fn grants_and_revocations_reach_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("local");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/file.txt"), b"x").unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
        let outside = dir.path().join("outside.txt");
        fs::write(&outside, b"not ours").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        grant(
            &root,
            61999,
            Grant {
                perm: READ | WRITE,
                recursive: true,
                close: true,
            },
        )
        .unwrap();
        let meta = fs::metadata(&root).unwrap();
        assert_eq!(meta.mode() & 0o007, 0, "other lost every right on the root");
        let acl = read(&root, Kind::Access).unwrap().unwrap();
        assert_eq!(
            acl.entries
                .iter()
                .find(|e| e.tag == TAG_GROUP_OBJ)
                .unwrap()
                .perm,
            0,
            "the owning group too"
        );
        let file_acl = read(&root.join("sub/file.txt"), Kind::Access)
            .unwrap()
            .unwrap();
        assert_eq!(file_acl.user(61999), Some(READ | WRITE));
        let default = read(&root.join("sub"), Kind::Default).unwrap().unwrap();
        assert_eq!(default.user(61999), Some(READ | WRITE | EXECUTE));
        // The link's target is untouched.
        assert_eq!(read(&outside, Kind::Access).unwrap(), None);
        // A file created later inherits the entry.
        fs::write(root.join("sub/new.txt"), b"y").unwrap();
        let new_acl = read(&root.join("sub/new.txt"), Kind::Access)
            .unwrap()
            .unwrap();
        assert!(new_acl.user(61999).is_some());

        revoke(&root, 61999, true).unwrap();
        for path in [root.clone(), root.join("sub"), root.join("sub/file.txt")] {
            let acl = read(&path, Kind::Access).unwrap();
            assert_eq!(acl.and_then(|a| a.user(61999)), None, "{}", path.display());
        }
        let default = read(&root.join("sub"), Kind::Default).unwrap().unwrap();
        assert_eq!(default.user(61999), None);
        // Missing roots are nothing to do.
        revoke(&root.join("gone"), 61999, true).unwrap();
    }

    #[test]
    fn traverse_only_where_others_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        let closed = dir.path().join("closed");
        fs::create_dir(&open).unwrap();
        fs::create_dir(&closed).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&closed, fs::Permissions::from_mode(0o750)).unwrap();
        allow_traverse(&open, 61998).unwrap();
        allow_traverse(&closed, 61998).unwrap();
        assert_eq!(read(&open, Kind::Access).unwrap(), None);
        let acl = read(&closed, Kind::Access).unwrap().unwrap();
        assert_eq!(acl.user(61998), Some(EXECUTE));
        assert_eq!(fs::metadata(&closed).unwrap().mode() & 0o007, 0);
    }
}
