//! The process-wide inotify watcher that keeps cached files honest.
//!
//! One inotify instance serves every `StaticSite` in the process: the kernel allows only 128 instances
//! per user by default, and all site hosts on a node usually run as the same user. Cached entries depend
//! on watched directories; an event in one of them invalidates the entries that depend on it.
//!
//! Events are not read by a background thread but by whoever serves a request, just before it looks in
//! the cache (`Watcher::sync`). The kernel queues an event before the write that caused it returns, so a
//! request that starts after a change completed always sees the change: no window in which a stale file
//! is served. The price is one non-blocking `read` on the inotify descriptor per request, which answers
//! `EAGAIN` when nothing happened. When nobody asks for a while the queue may overflow; overflow flushes
//! every cache, which is correct, only slower.

use std::ffi::OsString;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

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

    /// Reads every queued event and applies it to the registered caches.
    pub(crate) fn sync(&self) {
        let mut state = self.lock();
        loop {
            let events = match state.inotify.read_events() {
                Ok(events) if events.is_empty() => return,
                Ok(events) => events,
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    // We cannot tell what we missed, so trust nothing cached.
                    tracing::warn!(error = %errno, "cannot read inotify events, flushing static file caches");
                    state.dispatch(&[Change::Overflow]);
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
            state.dispatch(&changes);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent across a panic (the descriptor and a list), so poison is harmless.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
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
