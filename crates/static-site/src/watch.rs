//! The process-wide inotify watcher that keeps cached files honest.
//!
//! One inotify instance serves every `StaticSite` in the process: the kernel allows only 128 instances
//! per user by default, and all site hosts on a node usually run as the same user. Cached entries depend
//! on watched directories; an event in one of them invalidates the entries that depend on it.
//!
//! Events are not read by a background thread but by the requests themselves, just before they look in
//! the cache (`Watcher::sync_if_due`), at most once per `CHANGE_VISIBLE_AFTER` (100 µs) per process. The
//! kernel queues an event before the write that caused it returns, so a request that starts at least
//! that long after a change completed always sees it, however the threads are scheduled. A background
//! reader could not promise that: it runs when the scheduler lets it. Reading on every request would
//! make the window zero, but costs one `read` system call per hit (measured: about 3 % of a loopback
//! server's CPU); the throttle keeps that to at most 10,000 reads a second.
//!
//! When nobody asks for a while the queue may overflow; overflow flushes every cache, which is correct,
//! only slower.

use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::CHANGE_VISIBLE_AFTER;
use crate::cache::Cache;

/// What changed, as far as the cache needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// Events were lost: nothing cached can be trusted.
    Overflow,
    /// The watched directory itself changed (moved, deleted, its attributes) or its watch ended.
    Dir(WatchDescriptor),
    /// An entry of the watched directory was created, deleted, moved, written or had its attributes set.
    Child(WatchDescriptor, OsString),
}

/// The events that can make a cached answer wrong. Reads (`IN_ACCESS`, `IN_OPEN`, `IN_CLOSE_NOWRITE`)
/// are left out, so serving files never wakes us.
fn watch_mask() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

/// An inotify instance and the caches its events go to.
#[derive(Debug)]
pub(crate) struct Watcher {
    /// One lock for the descriptor and the cache list: whoever drains the queue must also apply what it
    /// read before anyone else may trust the caches, so reading and applying happen under one lock.
    state: Mutex<State>,
    /// The origin of `last_sync`.
    epoch: Instant,
    /// When (nanoseconds after `epoch`) the last completed drain started reading. Published after the
    /// drain applied its changes, so a reader that sees a recent value may trust the caches.
    last_sync: AtomicU64,
}

#[derive(Debug)]
struct State {
    inotify: Inotify,
    /// Weak, so a dropped site's cache goes away; dead ones are pruned as events arrive.
    caches: Vec<Weak<Cache>>,
}

impl Watcher {
    /// The process-wide watcher, or `None` when inotify cannot be set up (its failure is logged once and
    /// every site then revalidates cached files by `stat`).
    pub(crate) fn global() -> Option<Arc<Watcher>> {
        static GLOBAL: OnceLock<Option<Arc<Watcher>>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| match Watcher::new() {
                Ok(watcher) => Some(Arc::new(watcher)),
                Err(errno) => {
                    tracing::warn!(
                        error = %errno,
                        "cannot set up inotify, cached static files are revalidated by stat once a second instead"
                    );
                    None
                }
            })
            .clone()
    }

    pub(crate) fn new() -> nix::Result<Watcher> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        Ok(Watcher {
            state: Mutex::new(State {
                inotify,
                caches: Vec::new(),
            }),
            epoch: Instant::now(),
            last_sync: AtomicU64::new(0),
        })
    }

    /// Sends this watcher's events to `cache` from now on.
    pub(crate) fn register(&self, cache: &Arc<Cache>) {
        self.lock().caches.push(Arc::downgrade(cache));
    }

    /// Watches directory `dir` (following symlinks); watching one directory twice yields the same
    /// descriptor.
    pub(crate) fn watch(&self, dir: &Path) -> nix::Result<WatchDescriptor> {
        self.lock().inotify.add_watch(dir, watch_mask())
    }

    /// Drains the queue unless a drain that started less than `CHANGE_VISIBLE_AFTER` ago completed.
    pub(crate) fn sync_if_due(&self) {
        let now = self.now();
        let interval = u64::try_from(CHANGE_VISIBLE_AFTER.as_nanos()).unwrap_or(u64::MAX);
        if now.saturating_sub(self.last_sync.load(Ordering::Acquire)) >= interval {
            self.sync();
        }
    }

    /// Reads every queued event and applies it to the registered caches.
    pub(crate) fn sync(&self) {
        let mut state = self.lock();
        let started = self.now();
        state.drain();
        self.last_sync.fetch_max(started, Ordering::Release);
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent across a panic (the descriptor and a list), so poison is harmless.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn drain(&mut self) {
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) if events.is_empty() => return,
                Ok(events) => events,
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    // We cannot tell what we missed, so trust nothing cached.
                    tracing::warn!(error = %errno, "cannot read inotify events, flushing static file caches");
                    self.dispatch(&[Change::Overflow]);
                    return;
                }
            };
            let changes: Vec<Change> = events
                .into_iter()
                .map(|event| {
                    if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                        Change::Overflow
                    } else {
                        match event.name {
                            Some(name) => Change::Child(event.wd, name),
                            None => Change::Dir(event.wd),
                        }
                    }
                })
                .collect();
            self.dispatch(&changes);
        }
    }

    fn dispatch(&mut self, changes: &[Change]) {
        self.caches.retain(|cache| match cache.upgrade() {
            Some(cache) => {
                cache.apply(changes);
                true
            }
            None => false,
        });
    }
}
