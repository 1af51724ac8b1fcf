//! Process-wide bounds for streamed responses: the response buffer budget and shared descriptors.
//!
//! - [`set_response_buffer_budget`]: the bytes of file chunks that all streaming responses of the
//!   process may hold at once (read, not yet written to a socket). The site host sets it once at start
//!   from its limits; without it, streaming is unbounded (one chunk per response).
//! - [`share`]: every response streaming the same file (device and inode) reads through one descriptor,
//!   so ten thousand stalled downloads of one file hold one descriptor, not ten thousand.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use tokio::sync::Semaphore;

static BUDGET: OnceLock<Arc<Semaphore>> = OnceLock::new();

/// Sets the response buffer budget in bytes; the first call wins (one host per process). Returns
/// whether this call set it.
pub fn set_response_buffer_budget(bytes: u64) -> bool {
    let permits = usize::try_from(bytes)
        .unwrap_or(usize::MAX)
        .clamp(1, Semaphore::MAX_PERMITS);
    BUDGET.set(Arc::new(Semaphore::new(permits))).is_ok()
}

/// Bytes of the budget free right now; `None` without a budget.
pub fn response_buffer_available() -> Option<usize> {
    BUDGET.get().map(|budget| budget.available_permits())
}

pub(crate) fn response_buffer() -> Option<Arc<Semaphore>> {
    BUDGET.get().cloned()
}

type OpenFiles = HashMap<(u64, u64), Weak<File>>;

static OPEN: OnceLock<Mutex<OpenFiles>> = OnceLock::new();

/// The shared descriptor for the file `file` is open on: an existing one when some response streams
/// the same file already (then `file` is closed), else `file` itself, now shared.
pub(crate) fn share(file: File) -> Arc<File> {
    let Ok(metadata) = file.metadata() else {
        return Arc::new(file);
    };
    let key = (metadata.dev(), metadata.ino());
    let open = OPEN.get_or_init(|| Mutex::new(HashMap::new()));
    let mut open = open.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(existing) = open.get(&key).and_then(Weak::upgrade) {
        return existing;
    }
    // Forget files nobody streams any more once they are half the map.
    if open.len() >= 64 {
        let dead = open.values().filter(|w| w.strong_count() == 0).count();
        if dead * 2 >= open.len() {
            open.retain(|_, w| w.strong_count() > 0);
        }
    }
    let shared = Arc::new(file);
    open.insert(key, Arc::downgrade(&shared));
    shared
}

/// Descriptors [`share`] keeps open right now.
pub fn shared_descriptors() -> usize {
    OPEN.get().map_or(0, |open| {
        open.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    })
}
