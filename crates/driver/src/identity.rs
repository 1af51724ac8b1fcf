//! Pool identities on the node: which uid and gid each pool's workers run as
//! (`control::PoolSpec::identity`), the allocation of dynamic ids for
//! `ApplicationPoolIdentity`, and `directory_security`'s ACLs on the task's folders.
//!
//! # Mapping (see [`config::identity`])
//! Nomad's task `user` wins; else `ApplicationPoolIdentity` → a dynamic id, `LocalService` and
//! `NetworkService` → `nobody`, `LocalSystem` → root, `SpecificUser` → the named user. The
//! node's allow-lists were checked by `TaskConfig::validate`. A plugin that does not run as
//! root cannot switch users: every pool gets `None` and a task event says so.
//!
//! # Dynamic ids
//! Like systemd's `DynamicUser`, IIS's per-pool virtual account becomes a uid (and the gid of
//! the same number) from [`DYNAMIC_IDS`] that has no passwd or group entry, is not one of
//! systemd's own dynamic users (`/run/systemd/dynamic-uid/<uid>`), and owns no running
//! process. It is unique among this plugin's running tasks: each allocation is a record file
//! `<runtime root>/identities/<uid>.json` naming the task's runtime folder and pool, created
//! under an exclusive `flock` on `<runtime root>/identities/.lock`. The records live beside the
//! hosts' runtime folders, so they survive plugin restarts (and vanish with them at reboot,
//! when every task is gone too). The first candidate is a hash of the runtime folder and pool,
//! so a task tends to get the same id again and a released id is rarely handed out soon;
//! collisions probe the next id. An allocation is released when the task's runtime folder is
//! removed (DestroyTask, a failed start, a recovery that finds the host gone); a record whose
//! runtime folder no longer exists is stale and reclaimed by the next allocation. Releasing
//! takes the id's ACL entries away again, so a later task given the same id cannot use them.
//! Only one runtime root per node is supported: two plugins with different roots do not see
//! each other's records.
//!
//! # directory_security
//! Each identity other than root gets, through POSIX ACLs ([`crate::acl`]):
//! read on the task folder itself, `secrets` and the application and virtual-directory
//! folders inside the allocation folder; read and write on the task's `local` and `tmp` and on
//! the allocation's `alloc/data` (applied last, so an application folder inside `local` stays
//! writable, as the original grants full control of `local`); search permission on folders
//! between those and the allocation folder. The task folder, `local`, `tmp`, `secrets` and
//! `alloc/data` are closed first: Nomad creates them 0777 and, as root, hands them to `nobody`;
//! they become `root:root` with no rights for the owning group or others, so another task's
//! workers (`nobody` included) cannot even enter them. Folders outside the allocation folder are left as they are
//! (a task event says so), and nothing above the allocation folder is touched. `nobody` and
//! named users may be shared by several tasks; their entries stay until Nomad removes the
//! allocation folder.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::RangeInclusive;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use config::{PoolIdentity, TaskConfig, WorkerAccount};
use control::{HostSpec, WorkerIdentity};
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Group, Uid, User};
use serde::{Deserialize, Serialize};

use crate::acl::{self, AclError, Grant};

/// Ids handed out for `ApplicationPoolIdentity`: systemd's range for dynamic users, which
/// distributions keep free of passwd entries.
pub const DYNAMIC_IDS: RangeInclusive<u32> = 61184..=65519;

/// Where systemd keeps the lock files of its own dynamic users.
const SYSTEMD_DYNAMIC_UIDS: &str = "/run/systemd/dynamic-uid";
/// Used for `nobody` when the node's passwd has no such entry.
const NOBODY_ID: u32 = 65534;
/// The folder of allocation records under the runtime root.
const RECORDS_DIR: &str = "identities";
const LOCK_FILE: &str = ".lock";

/// Why identities could not be assigned.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The job names a user the node does not have.
    #[error("{field}: no user {name:?} on this node")]
    UnknownUser {
        /// The field naming the user (`user`, `application_pool[1].username`).
        field: String,
        /// The user.
        name: String,
    },
    /// Every dynamic id is taken.
    #[error("{field}: no free id for ApplicationPoolIdentity left in {first}-{last}")]
    Exhausted {
        /// The pool's identity field.
        field: String,
        /// First id of the range.
        first: u32,
        /// Last id of the range.
        last: u32,
    },
    /// The allocation records could not be read or written.
    #[error("identity records {path}: {source}")]
    Store {
        /// The file or folder.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The user database could not be read.
    #[error("{field}: looking up {name:?}: {source}")]
    Lookup {
        /// The field naming the user.
        field: String,
        /// The user.
        name: String,
        /// Cause.
        source: nix::Error,
    },
    /// The task configuration does not say which account a pool needs.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// An ACL could not be set.
    #[error(
        "directory_security: {0} (the filesystem needs POSIX ACL support, or set directory_security = false)"
    )]
    Acl(#[from] AclError),
}

impl IdentityError {
    /// Whether retrying later can help (a full range, a busy disk) rather than a fix of the job
    /// or the node (an unknown user, a filesystem without ACL support).
    pub fn is_transient(&self) -> bool {
        match self {
            IdentityError::UnknownUser { .. } | IdentityError::Config(_) => false,
            IdentityError::Acl(e) => e.source.raw_os_error() != Some(libc::EOPNOTSUPP),
            _ => true,
        }
    }
}

/// What the plugin process may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// Running as root: workers can be given any identity.
    Root,
    /// Running as this uid: workers run as it too.
    User(u32),
}

impl Privilege {
    /// This process's.
    pub fn current() -> Self {
        let euid = nix::unistd::geteuid();
        if euid.is_root() {
            Privilege::Root
        } else {
            Privilege::User(euid.as_raw())
        }
    }
}

/// One folder an identity got rights on, kept to take them back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// The folder (or file).
    pub path: PathBuf,
    /// Whether everything below was granted too.
    pub recursive: bool,
}

/// One dynamic id's allocation record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The owning task's runtime folder.
    pub runtime_dir: PathBuf,
    /// Its pool.
    pub pool: String,
    /// Folders the id got ACL entries on.
    #[serde(default)]
    pub grants: Vec<GrantRecord>,
}

/// Hands out dynamic ids from records under the runtime root (see the module doc).
#[derive(Debug, Clone)]
pub struct Allocator {
    dir: PathBuf,
    range: RangeInclusive<u32>,
}

impl Allocator {
    /// The allocator of the plugin whose runtime root is `runtime_root`.
    pub fn new(runtime_root: &Path) -> Self {
        Self::with_range(runtime_root, DYNAMIC_IDS)
    }

    /// An allocator over another range (tests use small ones to force collisions).
    pub fn with_range(runtime_root: &Path, range: RangeInclusive<u32>) -> Self {
        Self {
            dir: runtime_root.join(RECORDS_DIR),
            range,
        }
    }

    fn store_error(path: &Path) -> impl FnOnce(io::Error) -> IdentityError + '_ {
        move |source| IdentityError::Store {
            path: path.to_owned(),
            source,
        }
    }

    /// Takes the allocation lock, creating the records folder (0700) when needed. The last
    /// release removes the folder, lock file included, so a lock taken on a file that was
    /// removed meanwhile is retried on the new one.
    fn lock(&self) -> Result<Flock<File>, IdentityError> {
        let path = self.dir.join(LOCK_FILE);
        loop {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(Self::store_error(&self.dir))?;
            let file = match fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => file,
                // The folder went away between creating and opening: start again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Self::store_error(&path)(e)),
            };
            let locked = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| Self::store_error(&path)(io::Error::from(e)))?;
            let held = locked.metadata().map_err(Self::store_error(&path))?;
            match fs::metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok(locked),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Self::store_error(&path)(e)),
            }
        }
    }

    /// Removes the records folder once no record is left (called with the lock held), so a
    /// node without tasks keeps nothing beside the runtime folders.
    fn remove_if_empty(&self) {
        let empty = matches!(self.records(), Ok(records) if records.is_empty());
        if empty {
            let _ = fs::remove_file(self.dir.join(LOCK_FILE));
            let _ = fs::remove_dir(&self.dir);
        }
    }

    fn record_path(&self, uid: u32) -> PathBuf {
        self.dir.join(format!("{uid}.json"))
    }

    /// Every record. Unreadable ones are kept as taken (with an empty owner), so a damaged
    /// file can never hand its id to a second task.
    fn records(&self) -> Result<BTreeMap<u32, Option<Allocation>>, IdentityError> {
        let mut out = BTreeMap::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Self::store_error(&self.dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(Self::store_error(&self.dir))?;
            let name = entry.file_name();
            let Some(uid) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let record = fs::read(entry.path())
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Allocation>(&bytes).ok());
            if record.is_none() {
                tracing::warn!(path = %entry.path().display(), "unreadable identity record; its id stays taken");
            }
            out.insert(uid, record);
        }
        Ok(out)
    }

    fn write_record(&self, uid: u32, record: &Allocation) -> Result<(), IdentityError> {
        let path = self.record_path(uid);
        let staging = self.dir.join(format!(".{uid}.tmp"));
        let json = serde_json::to_vec(record)
            .map_err(|e| Self::store_error(&path)(io::Error::other(e)))?;
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&staging)
            .map_err(Self::store_error(&staging))?;
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .map_err(Self::store_error(&staging))?;
        fs::rename(&staging, &path).map_err(Self::store_error(&path))
    }

    /// Takes an id's ACL entries back and forgets its record.
    fn drop_record(&self, uid: u32, record: &Allocation) {
        revoke_grants(uid, &record.grants);
        if let Err(e) = fs::remove_file(self.record_path(uid))
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(uid, error = %e, "could not remove an identity record");
        }
    }

    /// The id of `pool` of the task in `runtime_dir`: its existing allocation, or a free id.
    /// `field` names the pool's identity in errors.
    pub fn allocate(
        &self,
        runtime_dir: &Path,
        pool: &str,
        field: &str,
    ) -> Result<u32, IdentityError> {
        let _lock = self.lock()?;
        let records = self.records()?;
        if let Some((uid, _)) = records.iter().find(|(_, r)| {
            r.as_ref()
                .is_some_and(|r| r.runtime_dir == runtime_dir && r.pool == pool)
        }) {
            return Ok(*uid);
        }
        let first = *self.range.start();
        let last = *self.range.end();
        let size = u64::from(last.saturating_sub(first)) + 1;
        let key = format!("{}\0{pool}", runtime_dir.display());
        let start = crate::runtime::fnv1a64(key.as_bytes()) % size;
        let busy = process_owners();
        for step in 0..size {
            let offset = u32::try_from((start + step) % size).unwrap_or(0);
            let uid = first + offset;
            match records.get(&uid) {
                Some(None) => continue,
                Some(Some(record)) if record.runtime_dir.exists() => continue,
                Some(Some(stale)) => {
                    tracing::info!(uid, runtime_dir = %stale.runtime_dir.display(), "reclaiming the id of a task that is gone");
                    self.drop_record(uid, stale);
                }
                None => {}
            }
            if !id_is_unused(uid, &busy) {
                continue;
            }
            self.write_record(
                uid,
                &Allocation {
                    runtime_dir: runtime_dir.to_owned(),
                    pool: pool.to_owned(),
                    grants: Vec::new(),
                },
            )?;
            return Ok(uid);
        }
        Err(IdentityError::Exhausted {
            field: field.to_owned(),
            first,
            last,
        })
    }

    /// Remembers the folders `uid` got ACL entries on, to take them back on release.
    pub fn add_grants(&self, uid: u32, grants: &[GrantRecord]) -> Result<(), IdentityError> {
        let _lock = self.lock()?;
        let Some(Some(mut record)) = self.records()?.remove(&uid) else {
            return Ok(());
        };
        for grant in grants {
            if !record.grants.contains(grant) {
                record.grants.push(grant.clone());
            }
        }
        self.write_record(uid, &record)
    }

    /// Releases every id of the task in `runtime_dir`, taking their ACL entries back; the ids
    /// released. Failures are logged: a release must never fail a stop or destroy.
    pub fn release(&self, runtime_dir: &Path) -> Vec<u32> {
        if !self.dir.exists() {
            return Vec::new();
        }
        let lock = match self.lock() {
            Ok(lock) => lock,
            Err(e) => {
                tracing::warn!(error = %e, "could not release identities");
                return Vec::new();
            }
        };
        let records = match self.records() {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(error = %e, "could not release identities");
                return Vec::new();
            }
        };
        let mut released = Vec::new();
        for (uid, record) in records {
            if let Some(record) = record.filter(|r| r.runtime_dir == runtime_dir) {
                self.drop_record(uid, &record);
                released.push(uid);
            }
        }
        self.remove_if_empty();
        drop(lock);
        released
    }

    /// Every current allocation by id (unreadable records left out).
    pub fn allocations(&self) -> Result<BTreeMap<u32, Allocation>, IdentityError> {
        if !self.dir.exists() {
            return Ok(BTreeMap::new());
        }
        let _lock = self.lock()?;
        Ok(self
            .records()?
            .into_iter()
            .filter_map(|(uid, r)| Some((uid, r?)))
            .collect())
    }
}

fn revoke_grants(uid: u32, grants: &[GrantRecord]) {
    for grant in grants {
        if let Err(e) = acl::revoke(&grant.path, uid, grant.recursive) {
            tracing::warn!(uid, error = %e, "could not take back an ACL entry");
        }
    }
}

/// Uids that own a running process (the owner of `/proc/<pid>`, its effective uid).
fn process_owners() -> HashSet<u32> {
    let Ok(processes) = procfs::process::all_processes() else {
        return HashSet::new();
    };
    processes
        .filter_map(Result::ok)
        .filter_map(|p| p.uid().ok())
        .collect()
}

/// Whether nobody else uses `id` as uid or gid.
fn id_is_unused(id: u32, process_owners: &HashSet<u32>) -> bool {
    // A failed lookup counts as "exists": never hand out an id we could not check.
    let no_user = matches!(User::from_uid(Uid::from_raw(id)), Ok(None));
    let no_group = matches!(Group::from_gid(Gid::from_raw(id)), Ok(None));
    no_user
        && no_group
        && !Path::new(SYSTEMD_DYNAMIC_UIDS)
            .join(id.to_string())
            .exists()
        && !process_owners.contains(&id)
}

/// A user's uid and primary gid from the node's user database.
fn lookup_user(name: &str, field: &str) -> Result<(u32, u32), IdentityError> {
    match User::from_name(name) {
        Ok(Some(user)) => Ok((user.uid.as_raw(), user.gid.as_raw())),
        Ok(None) => Err(IdentityError::UnknownUser {
            field: field.to_owned(),
            name: name.to_owned(),
        }),
        Err(source) => Err(IdentityError::Lookup {
            field: field.to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}

/// What [`assign`] needs besides the spec.
#[derive(Debug, Clone)]
pub struct AssignContext<'a> {
    /// The node's dynamic-id allocator.
    pub allocator: &'a Allocator,
    /// The task's configuration (for each pool's identity).
    pub task: &'a TaskConfig,
    /// Nomad's `TaskConfig.user`; empty when the job sets none.
    pub task_user: &'a str,
    /// The driver config's `directory_security`.
    pub directory_security: bool,
    /// What this plugin process may do.
    pub privilege: Privilege,
}

/// Fills `spec.pools[].identity` and applies `directory_security`; returns task events to
/// send once the task runs. On error, the caller releases what was allocated with
/// [`Allocator::release`] of the spec's runtime folder.
pub fn assign(ctx: &AssignContext<'_>, spec: &mut HostSpec) -> Result<Vec<String>, IdentityError> {
    let mut events = Vec::new();
    if let Privilege::User(uid) = ctx.privilege {
        for pool in &mut spec.pools {
            pool.identity = None;
        }
        events.push(format!(
            "pool identities are not applied: the plugin does not run as root, so workers run \
             as its own user (uid {uid})"
        ));
        return Ok(events);
    }
    let requested = ctx.task.pool_identities(ctx.task_user)?;
    let mut dynamic = HashSet::new();
    for pool in &mut spec.pools {
        let Some(request) = requested.iter().find(|r| r.pool == pool.name) else {
            continue;
        };
        let (uid, gid) = account_ids(ctx.allocator, &spec.runtime_dir, request)?;
        if request.account == WorkerAccount::Dynamic {
            dynamic.insert(uid);
        }
        let description = request.describe(uid);
        events.push(format!(
            "application pool {} runs as {description}",
            pool.name
        ));
        pool.identity = Some(WorkerIdentity {
            uid,
            gid,
            description,
        });
    }
    if ctx.directory_security {
        let plan = folder_plan(spec);
        for outside in &plan.outside {
            events.push(format!(
                "directory_security: {} is outside the allocation folder and keeps its \
                 permissions; the pool identities need read access there",
                outside.display()
            ));
        }
        if let Some(blocked) = plan.unsearchable_ancestor() {
            events.push(format!(
                "directory_security: {} is not searchable by other users, so pool identities \
                 cannot reach the task's folders (give it o+x)",
                blocked.display()
            ));
        }
        let mut uids: Vec<u32> = spec
            .pools
            .iter()
            .filter_map(|p| p.identity.as_ref().map(|i| i.uid))
            .filter(|uid| *uid != 0)
            .collect();
        uids.sort_unstable();
        uids.dedup();
        for uid in uids {
            let grants = plan.apply(uid)?;
            if dynamic.contains(&uid) {
                ctx.allocator.add_grants(uid, &grants)?;
            }
        }
    }
    Ok(events)
}

fn account_ids(
    allocator: &Allocator,
    runtime_dir: &Path,
    request: &PoolIdentity,
) -> Result<(u32, u32), IdentityError> {
    match &request.account {
        WorkerAccount::Dynamic => {
            let uid = allocator.allocate(runtime_dir, &request.pool, &request.field)?;
            Ok((uid, uid))
        }
        WorkerAccount::Nobody => match User::from_name("nobody") {
            Ok(Some(user)) => Ok((user.uid.as_raw(), user.gid.as_raw())),
            _ => Ok((NOBODY_ID, NOBODY_ID)),
        },
        WorkerAccount::Root => Ok((0, 0)),
        WorkerAccount::User(name) | WorkerAccount::TaskUser(name) => {
            lookup_user(name, &request.field)
        }
    }
}

/// The folders `directory_security` grants, in order (reads first, then writes, so a write
/// grant wins where they overlap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderPlan {
    /// The allocation folder (`<alloc_dir>`, the task folder's parent).
    pub alloc_dir: PathBuf,
    /// Folders and how they are granted.
    pub grants: Vec<(PathBuf, Grant)>,
    /// Application folders outside the allocation folder: left alone.
    pub outside: Vec<PathBuf>,
}

const READ_ONLY: u16 = acl::READ;
const READ_WRITE: u16 = acl::READ | acl::WRITE;

/// `path` without `.` and `..` components, or `None` when `..` would climb above its root.
fn lexically_normal(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// Which folders of `spec`'s task the pool identities get rights on.
pub fn folder_plan(spec: &HostSpec) -> FolderPlan {
    let task_dir = lexically_normal(&spec.task_dir).unwrap_or_else(|| spec.task_dir.clone());
    let alloc_dir = task_dir
        .parent()
        .map_or_else(|| task_dir.clone(), Path::to_path_buf);
    let read = |recursive, close| Grant {
        perm: READ_ONLY,
        recursive,
        close,
    };
    let write = Grant {
        perm: READ_WRITE,
        recursive: true,
        close: true,
    };
    let mut grants = vec![
        (task_dir.clone(), read(false, true)),
        (task_dir.join("secrets"), read(true, true)),
    ];
    let mut outside = Vec::new();
    let folders = spec.applications.iter().flat_map(|app| {
        std::iter::once(&app.path).chain(app.virtual_directories.iter().map(|d| &d.path))
    });
    for folder in folders {
        match lexically_normal(folder) {
            Some(normal) if normal.starts_with(&alloc_dir) && normal != alloc_dir => {
                if !grants.iter().any(|(p, _)| *p == normal) {
                    grants.push((normal, read(true, false)));
                }
            }
            _ => {
                if !outside.contains(folder) {
                    outside.push(folder.clone());
                }
            }
        }
    }
    grants.push((task_dir.join("local"), write));
    grants.push((task_dir.join("tmp"), write));
    grants.push((alloc_dir.join("alloc").join("data"), write));
    FolderPlan {
        alloc_dir,
        grants,
        outside,
    }
}

impl FolderPlan {
    /// Grants `uid` every folder of the plan, plus search permission on the folders between
    /// them and the allocation folder; what it touched, to take back later.
    pub fn apply(&self, uid: u32) -> Result<Vec<GrantRecord>, AclError> {
        let mut touched = Vec::new();
        for (path, grant) in &self.grants {
            for ancestor in path.ancestors().skip(1) {
                if !ancestor.starts_with(&self.alloc_dir) {
                    break;
                }
                acl::allow_traverse(ancestor, uid)?;
                let record = GrantRecord {
                    path: ancestor.to_owned(),
                    recursive: false,
                };
                if !touched.contains(&record) {
                    touched.push(record);
                }
            }
            acl::grant(path, uid, *grant)?;
            touched.push(GrantRecord {
                path: path.clone(),
                recursive: grant.recursive,
            });
        }
        Ok(touched)
    }

    /// The first folder above the allocation folder that other users cannot search, if any.
    pub fn unsearchable_ancestor(&self) -> Option<PathBuf> {
        self.alloc_dir
            .ancestors()
            .filter_map(|dir| Some((dir, fs::metadata(dir).ok()?)))
            .find(|(_, meta)| meta.mode() & 0o001 == 0)
            .map(|(dir, _)| dir.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::acl::Kind;

    /// A runtime folder that exists, as StartTask creates it before allocating.
    fn runtime_dir(root: &Path, name: &str) -> PathBuf {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn free_range(len: u32) -> RangeInclusive<u32> {
        // Ids around 3.9 billion: far from every real account on a test machine.
        let first = 3_900_000_000 + (std::process::id() % 1000) * 100;
        first..=first + len - 1
    }

    #[test]
    fn allocations_are_stable_unique_and_probe_past_collisions() {
        let root = tempfile::tempdir().unwrap();
        let allocator = Allocator::with_range(root.path(), free_range(3));
        let a = runtime_dir(root.path(), "a-web");
        let b = runtime_dir(root.path(), "b-web");
        let a1 = allocator.allocate(&a, "default", "f").unwrap();
        assert_eq!(allocator.allocate(&a, "default", "f").unwrap(), a1);
        let a2 = allocator.allocate(&a, "api", "f").unwrap();
        let b1 = allocator.allocate(&b, "default", "f").unwrap();
        let mut all = vec![a1, a2, b1];
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 3, "three pools, three ids");
        let err = allocator
            .allocate(&b, "more", "application_pool[3].identity")
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("application_pool[3].identity: no free id"),
            "{err}"
        );
        assert_eq!(allocator.release(&a), {
            let mut ids = vec![a1, a2];
            ids.sort_unstable();
            ids
        });
        assert!(allocator.allocate(&b, "more", "f").is_ok());
        allocator.release(&b);
        assert!(
            !root.path().join(RECORDS_DIR).exists(),
            "the last release removes the records folder"
        );
        assert!(allocator.release(&b).is_empty());
        assert!(!root.path().join(RECORDS_DIR).exists());
    }

    #[test]
    fn allocations_survive_a_restart_and_stale_ones_are_reclaimed() {
        let root = tempfile::tempdir().unwrap();
        let range = free_range(1);
        let a = runtime_dir(root.path(), "a-web");
        let uid = Allocator::with_range(root.path(), range.clone())
            .allocate(&a, "default", "f")
            .unwrap();
        // A new plugin process: a new allocator over the same records.
        let restarted = Allocator::with_range(root.path(), range.clone());
        assert_eq!(restarted.allocate(&a, "default", "f").unwrap(), uid);
        let b = runtime_dir(root.path(), "b-web");
        assert!(restarted.allocate(&b, "default", "f").is_err());
        // Task a's runtime folder vanished (the host is gone): its id is reclaimed.
        fs::remove_dir(&a).unwrap();
        assert_eq!(restarted.allocate(&b, "default", "f").unwrap(), uid);
        let records = restarted.allocations().unwrap();
        assert_eq!(records[&uid].runtime_dir, b);
        // Unreadable records keep their id taken.
        fs::write(root.path().join("identities/7.json"), b"garbage").unwrap();
        let tiny = Allocator::with_range(root.path(), 7..=7);
        assert!(tiny.allocate(&b, "x", "f").is_err());
    }

    #[test]
    fn ids_of_real_accounts_and_running_processes_are_skipped() {
        let root = tempfile::tempdir().unwrap();
        let a = runtime_dir(root.path(), "a-web");
        // 0 is root in every passwd.
        assert!(
            Allocator::with_range(root.path(), 0..=0)
                .allocate(&a, "default", "f")
                .is_err()
        );
        // This test's own uid owns a running process (this one).
        let me = nix::unistd::geteuid().as_raw();
        let busy = process_owners();
        assert!(busy.contains(&me));
        assert!(!id_is_unused(me, &busy));
    }

    fn spec_in(alloc_dir: &Path) -> HostSpec {
        let task_dir = alloc_dir.join("web");
        let mut spec = crate::test_support::host_spec(&task_dir, vec![]);
        spec.task_dir = task_dir.clone();
        spec.applications = vec![
            control::ApplicationSpec {
                alias: "/".into(),
                path: task_dir.join("local/site"),
                pool: "default".into(),
                virtual_directories: vec![control::VirtualDirectorySpec {
                    alias: "/img".into(),
                    path: PathBuf::from("/srv/images"),
                }],
                process: None,
            },
            control::ApplicationSpec {
                alias: "/shared".into(),
                path: alloc_dir.join("alloc/data/shared/../app"),
                pool: "default".into(),
                virtual_directories: vec![],
                process: None,
            },
        ];
        spec
    }

    #[test]
    fn the_plan_reads_first_writes_last_and_leaves_outside_folders() {
        let alloc = Path::new("/var/nomad/alloc/a1");
        let plan = folder_plan(&spec_in(alloc));
        let paths: Vec<(String, u16, bool, bool)> = plan
            .grants
            .iter()
            .map(|(p, g)| (p.display().to_string(), g.perm, g.recursive, g.close))
            .collect();
        let a = "/var/nomad/alloc/a1";
        assert_eq!(
            paths,
            vec![
                (format!("{a}/web"), 4, false, true),
                (format!("{a}/web/secrets"), 4, true, true),
                (format!("{a}/web/local/site"), 4, true, false),
                (format!("{a}/alloc/data/app"), 4, true, false),
                (format!("{a}/web/local"), 6, true, true),
                (format!("{a}/web/tmp"), 6, true, true),
                (format!("{a}/alloc/data"), 6, true, true),
            ]
        );
        assert_eq!(plan.outside, vec![PathBuf::from("/srv/images")]);
        assert_eq!(plan.alloc_dir, alloc);
    }

    /// A Nomad-like allocation folder: everything 0777 as Nomad creates it.
    fn nomad_alloc_dir(base: &Path) -> PathBuf {
        let alloc = base.join("alloc-1");
        for dir in [
            "web/local/site",
            "web/tmp",
            "web/secrets",
            "alloc/data",
            "alloc/logs",
        ] {
            fs::create_dir_all(alloc.join(dir)).unwrap();
        }
        fs::write(alloc.join("web/local/site/index.html"), b"hi").unwrap();
        for dir in [
            "web",
            "web/local",
            "web/tmp",
            "web/secrets",
            "alloc",
            "alloc/data",
        ] {
            // As Nomad's dropDirPermissions: 0777 and, when root, owned by nobody.
            fs::set_permissions(alloc.join(dir), fs::Permissions::from_mode(0o777)).unwrap();
            if nix::unistd::geteuid().is_root()
                && let Ok(Some(nobody)) = User::from_name("nobody")
            {
                nix::unistd::chown(&alloc.join(dir), Some(nobody.uid), Some(nobody.gid)).unwrap();
            }
        }
        fs::set_permissions(&alloc, fs::Permissions::from_mode(0o755)).unwrap();
        alloc
    }

    fn pool(name: &str) -> control::PoolSpec {
        crate::test_support::pool(name)
    }

    #[test]
    fn assign_maps_allocates_and_secures_then_release_takes_it_back() {
        let base = tempfile::tempdir().unwrap();
        let alloc = nomad_alloc_dir(base.path());
        let root = base.path().join("rt");
        let allocator = Allocator::with_range(&root, free_range(10));
        let mut spec = spec_in(&alloc);
        spec.runtime_dir = runtime_dir(&root, "alloc-1-web");
        spec.pools = vec![pool("default"), pool("net")];
        let mut net = config::PoolConfig::named("net");
        net.identity = config::Identity::NetworkService;
        let task = TaskConfig {
            application_pools: vec![net],
            applications: vec![
                config::ApplicationConfig::at("local/site"),
                config::ApplicationConfig {
                    alias: "api".into(),
                    application_pool: "net".into(),
                    ..config::ApplicationConfig::at("local/api")
                },
            ],
            ..TaskConfig::default()
        };
        let ctx = AssignContext {
            allocator: &allocator,
            task: &task,
            task_user: "",
            directory_security: true,
            privilege: Privilege::Root,
        };
        let events = assign(&ctx, &mut spec).unwrap();
        let default = spec.pools[0].identity.clone().unwrap();
        assert!(free_range(10).contains(&default.uid));
        assert_eq!(default.gid, default.uid);
        assert_eq!(
            default.description,
            format!("ApplicationPoolIdentity (uid {})", default.uid)
        );
        let nobody = spec.pools[1].identity.clone().unwrap();
        let expected_nobody = User::from_name("nobody")
            .unwrap()
            .map_or(NOBODY_ID, |u| u.uid.as_raw());
        assert_eq!(nobody.uid, expected_nobody);
        assert!(
            events.iter().any(|e| e.contains("/srv/images")),
            "{events:?}"
        );
        assert!(
            events
                .iter()
                .any(|e| e == &format!("application pool default runs as {}", default.description)),
            "{events:?}"
        );

        // Others lost access to the task folder; the identity has its entries.
        let task_dir = alloc.join("web");
        assert_eq!(fs::metadata(&task_dir).unwrap().mode() & 0o007, 0);
        assert_eq!(
            fs::metadata(alloc.join("alloc/data")).unwrap().mode() & 0o007,
            0
        );
        let user = |path: &Path| {
            acl::read(path, Kind::Access)
                .unwrap()
                .and_then(|a| a.user(default.uid))
        };
        assert_eq!(user(&task_dir), Some(acl::READ | acl::EXECUTE));
        assert_eq!(user(&alloc.join("web/local/site/index.html")), Some(6));
        assert_eq!(user(&alloc.join("alloc/data")), Some(7));
        assert_eq!(user(&alloc.join("alloc/logs")), None);
        let record = &allocator.allocations().unwrap()[&default.uid];
        assert!(record.grants.iter().any(|g| g.path == task_dir));

        // Assigning again (a retried StartTask) keeps the same id.
        let mut again = spec.clone();
        assign(&ctx, &mut again).unwrap();
        assert_eq!(again.pools[0].identity, spec.pools[0].identity);

        assert_eq!(allocator.release(&spec.runtime_dir), vec![default.uid]);
        assert_eq!(user(&task_dir), None);
        assert_eq!(user(&alloc.join("web/local/site/index.html")), None);
        assert_eq!(user(&alloc.join("alloc/data")), None);
        assert!(allocator.allocations().unwrap().is_empty());
    }

    #[test]
    fn task_user_wins_unknown_users_are_named_and_unprivileged_plugins_apply_nothing() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("rt");
        let allocator = Allocator::with_range(&root, free_range(2));
        let task = TaskConfig {
            applications: vec![config::ApplicationConfig::at("local")],
            ..TaskConfig::default()
        };
        let mut spec = spec_in(base.path());
        spec.runtime_dir = runtime_dir(&root, "t");
        spec.pools = vec![pool("default")];
        let ctx = |task_user, privilege| AssignContext {
            allocator: &allocator,
            task: &task,
            task_user,
            directory_security: false,
            privilege,
        };
        assign(&ctx("root", Privilege::Root), &mut spec).unwrap();
        let identity = spec.pools[0].identity.clone().unwrap();
        assert_eq!((identity.uid, identity.gid), (0, 0));
        assert_eq!(identity.description, "task user root (uid 0)");
        assert!(allocator.allocations().unwrap().is_empty());

        let err = assign(&ctx("no-such-user-x1", Privilege::Root), &mut spec).unwrap_err();
        assert_eq!(
            err.to_string(),
            "user: no user \"no-such-user-x1\" on this node"
        );
        assert!(!err.is_transient());

        let events = assign(&ctx("", Privilege::User(1000)), &mut spec).unwrap();
        assert_eq!(spec.pools[0].identity, None);
        assert!(events[0].contains("not applied"), "{events:?}");
        assert!(allocator.allocations().unwrap().is_empty());
    }

    /// Runs `script` with `sh` as `identity`; its exit status and stderr.
    fn run_as(identity: &WorkerIdentity, script: &str) -> (bool, String) {
        use std::os::unix::process::CommandExt;
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .uid(identity.uid)
            .gid(identity.gid)
            .current_dir("/")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Real processes as the allocated ids: a task's identity reads its application and writes
    /// its `tmp`, `local` and `alloc/data`, and gets EACCES on another task's folders.
    #[test]
    fn a_worker_identity_reaches_its_folders_and_no_other_tasks() {
        let base = tempfile::tempdir().unwrap();
        // tempdir makes 0700 folders; Nomad's data folder is searchable by everyone.
        fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let root = base.path().join("rt");
        let allocator = Allocator::with_range(&root, DYNAMIC_IDS);
        let task = TaskConfig {
            applications: vec![config::ApplicationConfig::at("local/site")],
            ..TaskConfig::default()
        };
        let privilege = Privilege::current();
        let mut specs = Vec::new();
        for name in ["one", "two"] {
            let alloc = nomad_alloc_dir(&base.path().join(name));
            fs::set_permissions(alloc.parent().unwrap(), fs::Permissions::from_mode(0o755))
                .unwrap();
            let mut spec = spec_in(&alloc);
            spec.applications.truncate(1);
            spec.applications[0].virtual_directories.clear();
            spec.runtime_dir = runtime_dir(&root, name);
            spec.pools = vec![pool("default")];
            let ctx = AssignContext {
                allocator: &allocator,
                task: &task,
                task_user: "",
                directory_security: true,
                privilege,
            };
            let events = assign(&ctx, &mut spec).unwrap();
            assert!(
                !events.iter().any(|e| e.contains("not searchable")),
                "{events:?}"
            );
            specs.push((alloc, spec));
        }
        let Privilege::Root = privilege else {
            // Without root there is nobody to switch to: the pools run as the plugin.
            assert!(specs.iter().all(|(_, s)| s.pools[0].identity.is_none()));
            return;
        };
        let (one, spec_one) = &specs[0];
        let (two, spec_two) = &specs[1];
        let me = spec_one.pools[0].identity.clone().unwrap();
        let other = spec_two.pools[0].identity.clone().unwrap();
        assert_ne!(me.uid, other.uid);
        assert!(DYNAMIC_IDS.contains(&me.uid));

        let own = [
            format!("cat {}/web/local/site/index.html", one.display()),
            format!("echo x > {}/web/tmp/scratch", one.display()),
            format!("echo x > {}/web/local/state", one.display()),
            format!("echo x > {}/alloc/data/shared", one.display()),
            format!("ls {}/web/secrets", one.display()),
        ];
        for script in &own {
            let (ok, stderr) = run_as(&me, script);
            assert!(ok, "{script}: {stderr}");
        }
        let foreign = [
            format!("cat {}/web/local/site/index.html", two.display()),
            format!("ls {}/web", two.display()),
            format!("echo x > {}/web/tmp/intruder", two.display()),
            format!("ls {}/alloc/data", two.display()),
        ];
        // `nobody` (a LocalService/NetworkService pool of another task) owned these folders
        // before: it is shut out too.
        let nobody = User::from_name("nobody").unwrap().unwrap();
        let nobody = WorkerIdentity {
            uid: nobody.uid.as_raw(),
            gid: nobody.gid.as_raw(),
            description: "nobody".into(),
        };
        for identity in [&me, &nobody] {
            for script in &foreign {
                let (ok, stderr) = run_as(identity, script);
                assert!(!ok, "{script} succeeded as {}", identity.uid);
                assert!(stderr.contains("Permission denied"), "{script}: {stderr}");
            }
        }
        assert_eq!(fs::metadata(two.join("web")).unwrap().uid(), 0);
        // Files the worker created are its own; root's later files stay readable through the
        // inherited default ACL.
        let scratch = fs::metadata(one.join("web/tmp/scratch")).unwrap();
        assert_eq!((scratch.uid(), scratch.gid()), (me.uid, me.gid));
        fs::write(one.join("web/local/site/later.html"), b"later").unwrap();
        let (ok, stderr) = run_as(
            &me,
            &format!("cat {}/web/local/site/later.html", one.display()),
        );
        assert!(ok, "{stderr}");

        // Once released, the id has no way in any more.
        allocator.release(&spec_one.runtime_dir);
        let (ok, _) = run_as(&me, &own[0]);
        assert!(!ok, "a released id still reads the task's files");
        allocator.release(&spec_two.runtime_dir);
    }
}
