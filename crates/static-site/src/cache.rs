//! The in-memory cache of small files: whole answers keyed by the request remainder as it was sent.
//!
//! Keying on the raw remainder lets a hit skip decoding and every file system call. An entry holds the
//! bytes of the file and of its precompressed siblings with their prebuilt header values, and says how it
//! stays valid:
//! - `Validation::Watched`: it depends on names in inotify-watched directories (`Dependency`); the
//!   watcher's changes remove it. A miss records the change sequence number before it sets up watches and reads the
//!   file, and an entry is only inserted if no change logged since then touches its dependencies, so a
//!   file changed while it was being read is never cached.
//! - `Validation::Revalidate`: inotify was not available; the file is checked by `stat` at most once per
//!   interval, and may be served stale for up to that long.
//!
//! The total size is bounded; when an insert does not fit, the least recently used entries go (by a
//! coarse clock that advances on inserts, so hits only read it). One `RwLock` guards the map: hits take
//! it for reading only.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use http::HeaderValue;
use nix::sys::inotify::WatchDescriptor;

use crate::CacheStats;
use crate::negotiate::Encoding;
use crate::response::Representation;
use crate::watch::Change;

/// The number of recent changes kept for checking inserts that were in flight when they happened.
const CHANGE_LOG_CAPACITY: usize = 4096;

pub(crate) type Key = Arc<str>;

/// A cached answer for one request remainder.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) content_type: HeaderValue,
    /// The file itself first, then the precompressed siblings that exist.
    pub(crate) variants: Vec<CachedVariant>,
    pub(crate) validation: Validation,
    /// The watched directories whose changes invalidate this entry (empty unless `Watched`).
    pub(crate) dependencies: Vec<Dependency>,
    /// The clock value of the last hit, for eviction.
    last_used: AtomicU64,
}

impl Entry {
    pub(crate) fn new(
        content_type: HeaderValue,
        variants: Vec<CachedVariant>,
        validation: Validation,
        dependencies: Vec<Dependency>,
    ) -> Self {
        Entry {
            content_type,
            variants,
            validation,
            dependencies,
            last_used: AtomicU64::new(0),
        }
    }

    /// Whether precompressed siblings exist, so responses must say `Vary: Accept-Encoding`.
    pub(crate) fn varies(&self) -> bool {
        self.variants.len() > 1
    }

    pub(crate) fn variant(&self, encoding: Encoding) -> Option<&CachedVariant> {
        self.variants
            .iter()
            .find(|variant| variant.representation.encoding == encoding)
    }

    fn size(&self) -> u64 {
        self.variants
            .iter()
            .map(|variant| variant.bytes.len() as u64)
            .sum()
    }
}

/// One variant's bytes and header values.
#[derive(Debug)]
pub(crate) struct CachedVariant {
    pub(crate) representation: Representation,
    pub(crate) bytes: Bytes,
}

/// How an entry stays valid.
#[derive(Debug)]
pub(crate) enum Validation {
    /// Invalidated by inotify events on its dependencies.
    Watched,
    /// Checked by `stat` when `next_check` (milliseconds on the site's clock) has passed.
    Revalidate {
        fingerprint: Fingerprint,
        next_check: AtomicU64,
    },
}

/// What identifies the files an entry was built from: for each variant, its canonical path, device,
/// inode, length and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint(pub(crate) Vec<FileIdentity>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileIdentity {
    pub(crate) path: PathBuf,
    pub(crate) device: u64,
    pub(crate) inode: u64,
    pub(crate) len: u64,
    pub(crate) modified: (i64, i64),
}

/// An entry of a watched directory whose change (creation, deletion, rename, write, attributes)
/// invalidates a cached answer: each component of the file's path, the precompressed siblings it may
/// have, and for a folder request every default document name.
///
/// Naming entries, instead of depending on "anything in the file's folder", keeps a log file written
/// next to `index.html` from flushing it again and again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Dependency {
    pub(crate) dir: WatchDescriptor,
    pub(crate) name: OsString,
}

impl Dependency {
    fn touched_by(&self, change: &Change) -> bool {
        match change {
            Change::Overflow => true,
            Change::Dir(dir) => *dir == self.dir,
            Change::Child(dir, name) => *dir == self.dir && *name == self.name,
        }
    }
}

/// The cache of one site.
#[derive(Debug)]
pub(crate) struct Cache {
    state: RwLock<State>,
    /// Requests answered from memory, counted outside the lock.
    hits: StripedCounter,
    /// Requests that had to go to the file system.
    misses: AtomicU64,
    /// The eviction clock; advanced by inserts and read by hits.
    clock: AtomicU64,
    max_total: u64,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<Key, Arc<Entry>>,
    /// The sum of the entries' sizes.
    bytes: u64,
    /// Which entries depend on each name in each watched directory.
    index: HashMap<WatchDescriptor, HashMap<OsString, HashSet<Key>>>,
    /// Recent changes with their sequence numbers, for checking in-flight inserts.
    changes: VecDeque<(u64, Change)>,
    /// The sequence number the next change gets.
    next_sequence: u64,
}

impl Cache {
    pub(crate) fn new(max_total: u64) -> Self {
        Cache {
            state: RwLock::new(State::default()),
            hits: StripedCounter::default(),
            misses: AtomicU64::new(0),
            clock: AtomicU64::new(0),
            max_total,
        }
    }

    /// Runs `answer` on the entry under `key`, if any, without counting a hit or miss (the caller knows
    /// which it turned out to be).
    ///
    /// `answer` runs under the read lock, so a hit needs no reference count of its own on the entry: on
    /// a hot file every such count is a cache line bouncing between cores.
    pub(crate) fn with_entry<R>(
        &self,
        key: &str,
        answer: impl FnOnce(&Arc<Entry>) -> R,
    ) -> Option<R> {
        let state = self.read();
        let entry = state.entries.get(key)?;
        let now = self.clock.load(Ordering::Relaxed);
        // Skipping the store when nothing changes keeps a hot entry's cache line shared between cores.
        if entry.last_used.load(Ordering::Relaxed) != now {
            entry.last_used.store(now, Ordering::Relaxed);
        }
        Some(answer(entry))
    }

    #[cfg(test)]
    pub(crate) fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.with_entry(key, Arc::clone)
    }

    pub(crate) fn record_hit(&self) {
        self.hits.add_one();
    }

    pub(crate) fn record_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// The sequence number of the next change; take it before watching and reading for an insert.
    pub(crate) fn change_sequence(&self) -> u64 {
        self.read().next_sequence
    }

    /// Inserts `entry` under `key` unless it is too big, or (when watched) a change since
    /// `since_sequence` touched its dependencies. Returns whether it was inserted.
    pub(crate) fn insert(&self, key: &str, entry: Arc<Entry>, since_sequence: u64) -> bool {
        let size = entry.size();
        if size > self.max_total {
            return false;
        }
        let mut state = self.write();
        if matches!(entry.validation, Validation::Watched)
            && state.changed_since(since_sequence, &entry.dependencies)
        {
            return false;
        }
        state.remove(key);
        if state.bytes + size > self.max_total {
            // Evict down to seven eighths of the budget so a full cache does not evict on every insert.
            let target = (self.max_total - self.max_total / 8).min(self.max_total - size);
            state.evict_to(target);
        }
        let key: Key = Arc::from(key);
        entry.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed) + 1,
            Ordering::Relaxed,
        );
        for dependency in &entry.dependencies {
            state
                .index
                .entry(dependency.dir)
                .or_default()
                .entry(dependency.name.clone())
                .or_default()
                .insert(key.clone());
        }
        state.bytes += size;
        state.entries.insert(key, entry);
        true
    }

    /// Removes the entry under `key` if it is still `stale` (and not a newer one).
    pub(crate) fn remove_if_same(&self, key: &str, stale: &Arc<Entry>) {
        let mut state = self.write();
        if state
            .entries
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, stale))
        {
            state.remove(key);
        }
    }

    /// Applies changes read by the watcher: logs them and drops the entries they touch.
    pub(crate) fn apply(&self, changes: &[Change]) {
        let mut state = self.write();
        for change in changes {
            state.log(change.clone());
            let doomed: Vec<Key> = match change {
                Change::Overflow => state.entries.keys().cloned().collect(),
                Change::Dir(dir) => state
                    .index
                    .get(dir)
                    .map(|names| names.values().flatten().cloned().collect())
                    .unwrap_or_default(),
                Change::Child(dir, name) => state
                    .index
                    .get(dir)
                    .and_then(|names| names.get(name))
                    .map(|keys| keys.iter().cloned().collect())
                    .unwrap_or_default(),
            };
            for key in doomed {
                state.remove(&key);
            }
        }
    }

    /// Drops every entry; inserts in flight are refused as after an overflow.
    pub(crate) fn flush(&self) {
        let mut state = self.write();
        state.entries.clear();
        state.index.clear();
        state.bytes = 0;
        state.log(Change::Overflow);
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let state = self.read();
        CacheStats {
            entries: state.entries.len(),
            bytes: state.bytes,
            hits: self.hits.sum(),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // Every mutation leaves the state consistent before anything that could panic, so poison is
        // harmless here.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A counter split over cache lines, each thread adding to its own, so counting hits on two cores
/// does not make them fight over one line.
#[derive(Debug, Default)]
struct StripedCounter {
    stripes: [PaddedCounter; STRIPES],
}

const STRIPES: usize = 16;

#[derive(Debug, Default)]
#[repr(align(128))]
struct PaddedCounter(AtomicU64);

impl StripedCounter {
    fn add_one(&self) {
        static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
        }
        let stripe = STRIPE.with(|stripe| *stripe);
        self.stripes[stripe].0.fetch_add(1, Ordering::Relaxed);
    }

    fn sum(&self) -> u64 {
        self.stripes
            .iter()
            .map(|stripe| stripe.0.load(Ordering::Relaxed))
            .sum()
    }
}

impl State {
    fn log(&mut self, change: Change) {
        if self.changes.len() == CHANGE_LOG_CAPACITY {
            self.changes.pop_front();
        }
        self.changes.push_back((self.next_sequence, change));
        self.next_sequence += 1;
    }

    /// Whether a change with a sequence number at or after `since` touches one of `dependencies`; also
    /// true when such changes were already dropped from the log.
    fn changed_since(&self, since: u64, dependencies: &[Dependency]) -> bool {
        if self.next_sequence <= since {
            return false;
        }
        match self.changes.front() {
            Some((oldest, _)) if *oldest <= since => {}
            _ => return true,
        }
        self.changes
            .iter()
            .filter(|(sequence, _)| *sequence >= since)
            .any(|(_, change)| {
                dependencies
                    .iter()
                    .any(|dependency| dependency.touched_by(change))
            })
    }

    fn remove(&mut self, key: &str) {
        let Some((key, entry)) = self.entries.remove_entry(key) else {
            return;
        };
        self.bytes -= entry.size();
        for dependency in &entry.dependencies {
            let MapEntry::Occupied(mut names) = self.index.entry(dependency.dir) else {
                continue;
            };
            if let MapEntry::Occupied(mut keys) = names.get_mut().entry(dependency.name.clone()) {
                keys.get_mut().remove(&key);
                if keys.get().is_empty() {
                    keys.remove();
                }
            }
            if names.get().is_empty() {
                names.remove();
            }
        }
    }

    fn evict_to(&mut self, target: u64) {
        let mut by_age: Vec<(u64, Key)> = self
            .entries
            .iter()
            .map(|(key, entry)| (entry.last_used.load(Ordering::Relaxed), key.clone()))
            .collect();
        by_age.sort_unstable_by_key(|(last_used, _)| *last_used);
        for (_, key) in by_age {
            if self.bytes <= target {
                break;
            }
            self.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::Watcher;

    /// Real watch descriptors for two real directories (the type has no public constructor).
    struct Dirs {
        _temp: tempfile::TempDir,
        a: WatchDescriptor,
        b: WatchDescriptor,
    }

    fn dirs() -> Dirs {
        let temp = tempfile::tempdir().unwrap();
        std::fs::create_dir(temp.path().join("a")).unwrap();
        std::fs::create_dir(temp.path().join("b")).unwrap();
        let watcher = Watcher::new().unwrap();
        let a = watcher.watch(&temp.path().join("a")).unwrap();
        let b = watcher.watch(&temp.path().join("b")).unwrap();
        Dirs { _temp: temp, a, b }
    }

    fn entry(size: usize, dependencies: Vec<Dependency>) -> Arc<Entry> {
        let metadata = std::fs::metadata("/").unwrap();
        Arc::new(Entry::new(
            HeaderValue::from_static("text/plain"),
            vec![CachedVariant {
                representation: Representation::new(&metadata, size as u64, Encoding::Identity),
                bytes: Bytes::from(vec![b'x'; size]),
            }],
            Validation::Watched,
            dependencies,
        ))
    }

    fn child(dir: WatchDescriptor, name: &str) -> Dependency {
        Dependency {
            dir,
            name: name.into(),
        }
    }

    #[test]
    fn changes_remove_exactly_the_dependent_entries() {
        let dirs = dirs();
        let cache = Cache::new(1 << 20);
        let x = vec![child(dirs.a, "x"), child(dirs.b, "a")];
        assert!(cache.insert("/a/x", entry(1, x), 0));
        assert!(cache.insert("/b/y", entry(1, vec![child(dirs.b, "y")]), 0));
        assert!(cache.insert("/c", entry(1, vec![child(dirs.b, "c")]), 0));

        cache.apply(&[Change::Child(dirs.b, "unrelated".into())]);
        assert_eq!(
            cache.stats().entries,
            3,
            "an unrelated name touches nothing"
        );

        cache.apply(&[Change::Child(dirs.b, "y".into())]);
        assert!(cache.get("/b/y").is_none());
        cache.apply(&[Change::Child(dirs.b, "a".into())]);
        assert!(
            cache.get("/a/x").is_none(),
            "its folder was renamed or replaced"
        );
        assert!(cache.get("/c").is_some());

        cache.apply(&[Change::Dir(dirs.b)]);
        assert!(cache.get("/c").is_none(), "the folder itself changed");
        assert_eq!(cache.stats().entries, 0);
        assert_eq!(cache.stats().bytes, 0);
        assert!(cache.read().index.is_empty(), "the index is cleaned up");
    }

    #[test]
    fn inserts_raced_by_a_change_are_refused() {
        let dirs = dirs();
        let cache = Cache::new(1 << 20);
        let since = cache.change_sequence();
        cache.apply(&[Change::Child(dirs.a, "other".into())]);
        assert!(
            cache.insert("/b/y", entry(1, vec![child(dirs.b, "y")]), since),
            "a change elsewhere does not matter"
        );
        assert!(
            !cache.insert("/a/x", entry(1, vec![child(dirs.a, "other")]), since),
            "a change of a dependency while the file was read does"
        );
        let since = cache.change_sequence();
        assert!(cache.insert("/a/x", entry(1, vec![child(dirs.a, "other")]), since));

        let since = cache.change_sequence();
        cache.flush();
        assert!(!cache.insert("/b/y", entry(1, vec![child(dirs.b, "y")]), since));
    }

    #[test]
    fn a_lost_change_log_refuses_inserts() {
        let dirs = dirs();
        let cache = Cache::new(1 << 20);
        let since = cache.change_sequence();
        let noise: Vec<Change> = (0..=CHANGE_LOG_CAPACITY)
            .map(|i| Change::Child(dirs.b, i.to_string().into()))
            .collect();
        cache.apply(&noise);
        assert!(!cache.insert("/a/x", entry(1, vec![child(dirs.a, "x")]), since));
    }

    #[test]
    fn the_least_recently_used_entries_are_evicted() {
        let dirs = dirs();
        let cache = Cache::new(100);
        for name in ["/1", "/2", "/3"] {
            assert!(cache.insert(name, entry(30, vec![child(dirs.a, "x")]), 0));
        }
        assert!(cache.get("/1").is_some());
        assert!(cache.insert("/4", entry(30, vec![child(dirs.a, "x")]), 0));
        assert!(cache.get("/2").is_none(), "the oldest unused entry went");
        assert!(cache.get("/1").is_some());
        assert!(cache.stats().bytes <= 100);
        assert!(
            !cache.insert("/big", entry(101, vec![]), 0),
            "larger than the whole budget"
        );
    }
}
