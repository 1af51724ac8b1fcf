//! Application pools: the IIS state machine (Starting, Started, Stopping, Stopped), admission
//! of requests with in-flight counting, recycling, and the backend that answers requests.
//!
//! State rules:
//! - **start**: a Stopped or Stopping pool becomes Started (a static backend is ready at
//!   once, so Starting is never observable for it). Starting a Started pool changes nothing.
//! - **stop**: a Started pool stops admitting requests. With nothing in flight it is Stopped at
//!   once; otherwise it is Stopping until its in-flight requests finish or its
//!   `shutdown_time_limit` passes, then Stopped. A stopped pool's requests get a 503 (HttpLevel)
//!   or lose their connection (TcpLevel); requests already admitted always finish.
//! - **recycle**: a static backend builds fresh file sites (re-reading their configuration,
//!   which also empties their caches) and swaps them in; in-flight requests finish on the old
//!   ones. The state does not change. A recycle that cannot build every new site changes
//!   nothing. [`PreparedRecycle`] splits this in two so that "recycle all pools" is all or
//!   nothing as well.
//!
//! The backend is a [`PoolBackend`]. Today every pool is [`PoolBackend::Static`]; pools with
//! worker processes (started on demand, proxied to, recycled overlapped, with idle timeout and
//! rapid-fail protection) become a second variant, and the state machine above drives them
//! through the same `start`/`stop`/`recycle` entry points.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use control::{PoolSpec, PoolState, PoolStatus, UnavailableResponse};
use http::{HeaderMap, Method, Response};
use tokio::sync::Notify;

pub(crate) use static_site::Body;

/// Where one served folder sits in the spec: application index, virtual directory index.
pub(crate) type SiteKey = (usize, Option<usize>);

/// The file sites of a static pool with their keys.
type Sites = Vec<(SiteKey, static_site::StaticSite)>;

/// One pool of this host.
#[derive(Debug)]
pub(crate) struct Pool {
    /// The pool's settings, IIS defaults applied.
    spec: PoolSpec,
    /// State, counters and the stop generation; one lock so admission and stop agree.
    control: Mutex<PoolControl>,
    /// Requests admitted and not yet finished. A plain atomic: it changes twice per request,
    /// and only a stop waiting for the drain needs to hear about it.
    in_flight: AtomicUsize,
    /// Stops waiting for `in_flight` to reach zero; while there are any, the request that
    /// brings it to zero notifies `drained`.
    drain_waiters: AtomicUsize,
    drained: Notify,
    /// What answers the pool's requests.
    backend: PoolBackend,
}

#[derive(Debug)]
struct PoolControl {
    state: PoolState,
    recycles: u64,
    /// Bumped by every start and stop, so a drain that finishes late knows it is stale.
    generation: u64,
}

/// What answers a pool's requests.
#[derive(Debug)]
pub(crate) enum PoolBackend {
    /// Files served from the applications' folders by `static-site`.
    Static(StaticBackend),
}

/// The file sites of a static pool: one per application root and virtual directory.
#[derive(Debug)]
pub(crate) struct StaticBackend {
    /// Folder of every site, to build fresh sites on recycle.
    roots: Vec<(SiteKey, PathBuf, String)>,
    /// The sites serving now; replaced whole on recycle. A short list searched in order: a pool
    /// serves a few folders, and comparing two small keys beats hashing them.
    sites: RwLock<Arc<Sites>>,
}

/// Whether a request may go to the pool.
pub(crate) enum Admission {
    /// Admitted; keep the guard until the response body is finished.
    Admitted(InFlight),
    /// The pool does not take requests; answer as configured.
    Refused(UnavailableResponse),
}

/// Counts one admitted request until dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    pool: Arc<Pool>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let pool = &self.pool;
        // SeqCst on both sides (here: decrement, then read the waiters; in `wait_for_drain`:
        // register, then read the count), so either the waiter sees zero or we see the waiter.
        if pool.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && pool.drain_waiters.load(Ordering::SeqCst) > 0
        {
            pool.drained.notify_waiters();
        }
    }
}

/// New sites built for a recycle, not yet swapped in.
pub(crate) struct PreparedRecycle {
    pool: Arc<Pool>,
    sites: Sites,
}

/// A folder a static site cannot serve; names the field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {detail}")]
pub(crate) struct SiteError {
    /// Spec field of the folder, e.g. `application[0].path`.
    pub field: String,
    /// Why.
    pub detail: String,
}

impl StaticBackend {
    /// A backend for these folders: (key, folder, spec field naming the folder).
    pub fn new(roots: Vec<(SiteKey, PathBuf, String)>) -> Result<Self, SiteError> {
        let sites = build_sites(&roots)?;
        Ok(Self {
            roots,
            sites: RwLock::new(Arc::new(sites)),
        })
    }

    fn current(&self) -> Option<Arc<Sites>> {
        self.sites.read().ok().map(|s| s.clone())
    }
}

fn build_sites(roots: &[(SiteKey, PathBuf, String)]) -> Result<Sites, SiteError> {
    roots
        .iter()
        .map(|(key, root, field)| {
            static_site::StaticSite::new(root.clone(), static_site::Options::default())
                .map(|site| (*key, site))
                .map_err(|e| SiteError {
                    field: field.clone(),
                    detail: with_causes(&e),
                })
        })
        .collect()
}

/// An error's message followed by its causes, `a: b: c`, so a static-site error that keeps
/// the operating system's reason as its source still shows it.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

impl Pool {
    /// A started pool.
    pub fn new(spec: PoolSpec, backend: PoolBackend) -> Arc<Self> {
        Arc::new(Self {
            spec,
            control: Mutex::new(PoolControl {
                state: PoolState::Started,
                recycles: 0,
                generation: 0,
            }),
            in_flight: AtomicUsize::new(0),
            drain_waiters: AtomicUsize::new(0),
            drained: Notify::new(),
            backend,
        })
    }

    /// Short name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Settings.
    pub fn spec(&self) -> &PoolSpec {
        &self.spec
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolControl> {
        // A panic while holding this lock leaves plain data behind; keep serving with it.
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a request if the pool is Started.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let control = self.lock();
        if control.state == PoolState::Started {
            // Under the control lock, so a stop sees every admitted request.
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            Admission::Admitted(InFlight { pool: self.clone() })
        } else {
            Admission::Refused(self.spec.service_unavailable_response)
        }
    }

    /// Starts the pool; see the module documentation.
    pub fn start(&self) {
        let mut control = self.lock();
        if control.state != PoolState::Started {
            control.generation += 1;
            control.state = PoolState::Started;
        }
    }

    /// Stops the pool; see the module documentation. Must run inside a tokio runtime.
    pub fn stop(self: &Arc<Self>) {
        let mut control = self.lock();
        if matches!(control.state, PoolState::Stopped | PoolState::Stopping) {
            return;
        }
        control.generation += 1;
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            control.state = PoolState::Stopped;
            return;
        }
        control.state = PoolState::Stopping;
        let generation = control.generation;
        let pool = self.clone();
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(pool.spec.shutdown_time_limit, pool.wait_for_drain()).await;
            let mut control = pool.lock();
            if control.generation == generation && control.state == PoolState::Stopping {
                control.state = PoolState::Stopped;
            }
        });
    }

    /// Returns when no request is in flight.
    async fn wait_for_drain(&self) {
        /// Unregisters the waiter also when the wait is cancelled (timed out).
        struct Registered<'a>(&'a AtomicUsize);
        impl Drop for Registered<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.drain_waiters.fetch_add(1, Ordering::SeqCst);
        let _registered = Registered(&self.drain_waiters);
        loop {
            // Created before the count is read, so a notification in between is not lost.
            let notified = self.drained.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Builds what a recycle needs without changing anything.
    pub fn prepare_recycle(self: &Arc<Self>) -> Result<PreparedRecycle, SiteError> {
        match &self.backend {
            PoolBackend::Static(backend) => Ok(PreparedRecycle {
                pool: self.clone(),
                sites: build_sites(&backend.roots)?,
            }),
        }
    }

    /// This pool's status.
    pub fn status(&self) -> PoolStatus {
        let control = self.lock();
        PoolStatus {
            name: self.spec.name.clone(),
            full_name: self.spec.full_name.clone(),
            state: control.state,
            worker_pids: Vec::new(),
            recycles: control.recycles,
            workers: Vec::new(),
            worker_starts: 0,
            worker_failures: 0,
            last_worker_exit: None,
            is_static: true,
        }
    }

    /// Answers an admitted request for the site at `key`.
    pub async fn serve(
        &self,
        key: SiteKey,
        method: &Method,
        remainder: &str,
        headers: &HeaderMap,
    ) -> Option<Response<Body>> {
        match &self.backend {
            PoolBackend::Static(backend) => {
                let sites = backend.current()?;
                let (_, site) = sites.iter().find(|(site_key, _)| *site_key == key)?;
                Some(site.serve(method, remainder, headers).await)
            }
        }
    }
}

impl PreparedRecycle {
    /// Swaps the new sites in; the old ones are flushed so requests still holding them do not
    /// keep stale content alive longer than they must.
    pub fn commit(self) {
        match &self.pool.backend {
            PoolBackend::Static(backend) => {
                let fresh = Arc::new(self.sites);
                let old = match backend.sites.write() {
                    Ok(mut sites) => std::mem::replace(&mut *sites, fresh),
                    Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), fresh),
                };
                for (_, site) in old.iter() {
                    site.flush_cache();
                }
            }
        }
        self.pool.lock().recycles += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn static_pool(root: &std::path::Path) -> Arc<Pool> {
        let spec = crate::test_support::pool_spec(UnavailableResponse::TcpLevel);
        let backend =
            StaticBackend::new(vec![((0, None), root.to_path_buf(), "app".into())]).unwrap();
        Pool::new(spec, PoolBackend::Static(backend))
    }

    /// Lets spawned tasks of the current-thread runtime run.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stop_waits_for_in_flight_requests_then_stops() {
        let dir = tempfile::tempdir().unwrap();
        let pool = static_pool(dir.path());
        let Admission::Admitted(guard) = pool.admit() else {
            panic!("a started pool refused a request");
        };
        pool.stop();
        assert_eq!(pool.status().state, PoolState::Stopping);
        assert!(matches!(
            pool.admit(),
            Admission::Refused(UnavailableResponse::TcpLevel)
        ));
        drop(guard);
        settle().await;
        assert_eq!(pool.status().state, PoolState::Stopped);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_start_during_the_drain_is_not_undone_when_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let pool = static_pool(dir.path());
        let Admission::Admitted(guard) = pool.admit() else {
            panic!("a started pool refused a request");
        };
        pool.stop();
        pool.start();
        assert_eq!(pool.status().state, PoolState::Started);
        drop(guard);
        settle().await;
        assert_eq!(pool.status().state, PoolState::Started);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stop_without_requests_in_flight_is_immediate() {
        let dir = tempfile::tempdir().unwrap();
        let pool = static_pool(dir.path());
        pool.stop();
        assert_eq!(pool.status().state, PoolState::Stopped);
        pool.stop();
        assert_eq!(pool.status().state, PoolState::Stopped);
        pool.start();
        assert!(matches!(pool.admit(), Admission::Admitted(_)));
    }
}
