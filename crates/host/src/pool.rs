//! Application pools: the IIS state machine (Starting, Started, Stopping, Stopped), admission
//! of requests with in-flight counting, and what answers them — static files, or one worker
//! process per process application, reached through the reverse proxy.
//!
//! State rules:
//! - **start**: a Stopped or Stopping pool becomes Started. An AlwaysRunning pool with workers
//!   is Starting until they accept connections (or failed to). Starting a Started pool
//!   changes nothing.
//! - **stop**: a Started pool stops admitting requests. It is Stopping until its in-flight
//!   requests finish (at most `shutdown_time_limit`) and its workers stopped (SIGTERM, SIGKILL
//!   after the shutdown limit), then Stopped; with nothing in flight and no worker, at once.
//!   A stopped pool's requests get a 503 (HttpLevel) or lose their connection (TcpLevel);
//!   requests already admitted always finish. A start during the drain wins.
//! - **recycle**: fresh file sites (re-reading their configuration, which also empties their
//!   caches) are swapped in, and every application's worker configuration (`web.config`) is
//!   read again — a recycle after an upload picks up the new application. A recycle that
//!   cannot build every new site or read every configuration changes nothing
//!   ([`PreparedRecycle`] splits it in two so "recycle all pools" is all or nothing as well).
//!   Workers: **overlapped** by default (the new worker accepts connections before new
//!   requests switch to it; in-flight requests finish on the old one, which is then stopped);
//!   with `disable_overlapped_recycle` the old worker drains and stops first while new
//!   requests wait for the new one.
//!
//! Workers (see `worker`):
//! - **OnDemand** pools start an application's worker on its first request; AlwaysRunning
//!   pools when the pool starts, and again right after a crash. Requests waiting for a
//!   worker count against `queue_length`; beyond it they get a 503. A crashed worker is
//!   restarted by the next request.
//! - A start makes up to `1 + startupRetryCount` attempts; each failed attempt and each
//!   crash counts as a **failure**. Rapid-fail protection: 5 failures within 5 minutes (IIS),
//!   or more than the module's `rapidFailsPerMinute` within a minute, stop the pool for good
//!   and send [`PoolEvent::RapidFail`]: the host exits with
//!   `control::exit_code::POOL_FAILED`.
//! - `idle_timeout` stops the workers of a pool without requests for that long (the pool
//!   stays Started); `periodic_restart` recycles.
//! - Every worker start, exit and failure is told to the host as a [`PoolEvent`].

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use control::{HostSpec, PoolSpec, PoolState, PoolStatus, StartMode, UnavailableResponse};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use http::{HeaderMap, Method, Response};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

pub(crate) use static_site::Body;

use crate::worker::{ConfigError, OutputSinks, Spawner, Worker, WorkerConfig, WorkerLease};

/// Where one served folder sits in the spec: application index, virtual directory index.
pub(crate) type SiteKey = (usize, Option<usize>);

/// The file sites of a static pool with their keys.
type Sites = Vec<(SiteKey, static_site::StaticSite)>;

/// IIS's rapid-fail protection: this many failures…
const RAPID_FAIL_COUNT: usize = 5;
/// …within this interval stop the pool.
const RAPID_FAIL_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// What a pool tells the host.
#[derive(Debug, Clone)]
pub(crate) enum PoolEvent {
    /// Something an operator should read in the task's stderr (a worker started or stopped).
    Notice(String),
    /// A worker exited without being asked to, or a start attempt failed.
    WorkerFailed {
        /// Short pool name.
        pool: String,
        /// How, e.g. `worker 12 of /api exited with code 3`.
        text: String,
    },
    /// Rapid-fail protection stopped the pool; the host must exit.
    RapidFail {
        /// Short pool name.
        pool: String,
        /// The last worker exit or failed start.
        last_exit: String,
    },
}

/// What every pool needs from the host.
#[derive(Debug, Clone)]
pub(crate) struct PoolContext {
    /// Where worker output goes.
    pub sinks: OutputSinks,
    /// What starts worker processes.
    pub spawner: Spawner,
    /// Where events go.
    pub events: mpsc::UnboundedSender<PoolEvent>,
}

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
    /// Requests waiting for a worker to start; bounded by `queue_length`.
    queued: AtomicUsize,
    /// Milliseconds after `created` of the last admission or finished request (idle timeout).
    last_activity: AtomicU64,
    created: Instant,
    /// Serialises start, recycle and idle stops of this pool (requests never take it).
    operations: tokio::sync::Mutex<()>,
    /// Files served from the applications' folders by `static-site`.
    statics: StaticBackend,
    /// One per application of the pool: its worker, when its configuration names one.
    apps: Vec<AppWorkers>,
    /// Worker output and events.
    context: PoolContext,
}

/// Lock order: a slot's lock (`AppWorkers::slot`) may be held while taking `Pool::control`,
/// never the other way round.
#[derive(Debug)]
struct PoolControl {
    state: PoolState,
    recycles: u64,
    /// Bumped by every start and stop, so a drain that finishes late knows it is stale.
    generation: u64,
    worker_starts: u64,
    worker_failures: u64,
    last_worker_exit: Option<String>,
    /// Failure times within the rapid-fail interval.
    recent_failures: VecDeque<Instant>,
    /// Rapid-fail protection stopped the pool; nothing starts it again.
    tripped: bool,
}

/// The worker side of one application.
#[derive(Debug)]
struct AppWorkers {
    /// Index of the application in the spec.
    application: usize,
    /// Fast check on the request path: whether `config` is set.
    is_worker: AtomicBool,
    /// The configuration new workers start with; `None` = static files.
    config: Mutex<Option<Arc<WorkerConfig>>>,
    slot: Mutex<Slot>,
}

type StartFuture = Shared<BoxFuture<'static, Result<(), Arc<str>>>>;

#[derive(Debug, Default)]
struct Slot {
    /// The worker new requests go to.
    current: Option<Arc<Worker>>,
    /// A start (or a non-overlapped recycle) in progress; waiting requests share it.
    starting: Option<StartFuture>,
    /// Identifies `starting`, so only its own task clears it.
    start_serial: u64,
    /// Bumped when the slot's workers are stopped: a start that finishes under an older epoch
    /// kills its worker instead of installing it.
    epoch: u64,
}

/// The file sites of a pool: one per application root and virtual directory.
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

/// Why a worker request gets no worker.
#[derive(Debug)]
pub(crate) enum NoWorker {
    /// `queue_length` requests already wait: 503.
    QueueFull,
    /// The pool stopped while the request waited: 503.
    Stopped,
    /// The worker could not be started: 502 (IIS's 502.5).
    StartFailed,
}

/// Counts one admitted request until dropped (and, for a worker request, its worker lease).
#[derive(Debug)]
pub(crate) struct InFlight {
    pool: Arc<Pool>,
    lease: Option<WorkerLease>,
}

impl InFlight {
    /// Keeps `lease` until the response is finished.
    pub fn hold(&mut self, lease: WorkerLease) {
        self.lease = Some(lease);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.lease = None;
        let pool = &self.pool;
        pool.touch();
        // SeqCst on both sides (here: decrement, then read the waiters; in `wait_for_drain`:
        // register, then read the count), so either the waiter sees zero or we see the waiter.
        if pool.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && pool.drain_waiters.load(Ordering::SeqCst) > 0
        {
            pool.drained.notify_waiters();
        }
    }
}

/// A waiting request's place in the queue.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a recycle needs, built without changing anything.
pub(crate) struct PreparedRecycle {
    pool: Arc<Pool>,
    sites: Sites,
    /// New worker configuration per application of the pool (same order as `apps`).
    configs: Vec<Option<Arc<WorkerConfig>>>,
    /// Warnings the new configurations bring.
    pub warnings: Vec<String>,
}

/// A folder a static site cannot serve, or a worker configuration that cannot be read;
/// names the field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {detail}")]
pub(crate) struct SiteError {
    /// Spec field, e.g. `application[0].path`.
    pub field: String,
    /// Why.
    pub detail: String,
}

impl From<ConfigError> for SiteError {
    fn from(e: ConfigError) -> Self {
        Self {
            field: e.field,
            detail: e.detail,
        }
    }
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

/// Worker configurations of a pool's applications (`None`: static files) and their warnings.
pub(crate) type WorkerConfigs = (Vec<Option<Arc<WorkerConfig>>>, Vec<String>);

/// The worker configurations of `applications`, and the warnings they bring.
pub(crate) fn load_worker_configs(
    spec: &HostSpec,
    applications: &[usize],
) -> Result<WorkerConfigs, ConfigError> {
    let mut configs = Vec::with_capacity(applications.len());
    let mut warnings = Vec::new();
    for &index in applications {
        match WorkerConfig::load(spec, index)? {
            Some((config, mut more)) => {
                configs.push(Some(Arc::new(config)));
                warnings.append(&mut more);
            }
            None => {
                // Served as static files: say so when the folder is an app IIS would have run
                // with the .NET Framework, which does not exist here.
                let field = format!("application[{index}].path");
                warnings.extend(static_site::filter::classic_aspnet_warning(
                    &field,
                    &spec.applications[index].path,
                ));
                configs.push(None);
            }
        }
    }
    Ok((configs, warnings))
}

impl AppWorkers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn config(&self) -> Option<Arc<WorkerConfig>> {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_config(&self, config: Option<Arc<WorkerConfig>>) {
        self.is_worker.store(config.is_some(), Ordering::SeqCst);
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// The running worker, if any.
    fn running(&self) -> Option<Arc<Worker>> {
        self.lock().current.clone().filter(|w| !w.has_exited())
    }
}

impl Pool {
    /// A started pool serving `statics`, with the worker configurations of its applications
    /// (`(application index, configuration)`). AlwaysRunning workers start with
    /// [`Pool::start_workers`].
    pub fn new(
        spec: PoolSpec,
        statics: StaticBackend,
        apps: Vec<(usize, Option<Arc<WorkerConfig>>)>,
        context: PoolContext,
    ) -> Arc<Self> {
        let apps = apps
            .into_iter()
            .map(|(application, config)| AppWorkers {
                application,
                is_worker: AtomicBool::new(config.is_some()),
                config: Mutex::new(config),
                slot: Mutex::new(Slot::default()),
            })
            .collect();
        Arc::new(Self {
            spec,
            control: Mutex::new(PoolControl {
                state: PoolState::Started,
                recycles: 0,
                generation: 0,
                worker_starts: 0,
                worker_failures: 0,
                last_worker_exit: None,
                recent_failures: VecDeque::new(),
                tripped: false,
            }),
            in_flight: AtomicUsize::new(0),
            drain_waiters: AtomicUsize::new(0),
            drained: Notify::new(),
            queued: AtomicUsize::new(0),
            last_activity: AtomicU64::new(0),
            created: Instant::now(),
            operations: tokio::sync::Mutex::new(()),
            statics,
            apps,
            context,
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

    /// Indices of its applications.
    pub fn applications(&self) -> impl Iterator<Item = usize> + '_ {
        self.apps.iter().map(|a| a.application)
    }

    /// The worker configuration of application `application`, if it is a worker application.
    pub fn worker_config(&self, application: usize) -> Option<Arc<WorkerConfig>> {
        self.app(application).and_then(|a| a.config())
    }

    fn app(&self, application: usize) -> Option<&AppWorkers> {
        self.apps.iter().find(|a| a.application == application)
    }

    /// Whether requests for `application` go to a worker.
    pub fn is_worker_application(&self, application: usize) -> bool {
        self.app(application)
            .is_some_and(|a| a.is_worker.load(Ordering::Relaxed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolControl> {
        // A panic while holding this lock leaves plain data behind; keep serving with it.
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        // Only the idle timer reads it: spare the static hot path a clock read per request.
        if self.spec.idle_timeout.is_zero() {
            return;
        }
        let now = self.created.elapsed().as_millis() as u64;
        self.last_activity.store(now, Ordering::Relaxed);
    }

    fn send(&self, event: PoolEvent) {
        let _ = self.context.events.send(event);
    }

    /// Admits a request if the pool is Started (or Starting: it then waits for its worker).
    pub fn admit(self: &Arc<Self>) -> Admission {
        let control = self.lock();
        if matches!(control.state, PoolState::Started | PoolState::Starting) {
            // Under the control lock, so a stop sees every admitted request.
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            drop(control);
            self.touch();
            Admission::Admitted(InFlight {
                pool: self.clone(),
                lease: None,
            })
        } else {
            Admission::Refused(self.spec.service_unavailable_response)
        }
    }

    /// Whether workers may be started now.
    fn accepts_starts(&self) -> bool {
        let control = self.lock();
        !control.tripped && matches!(control.state, PoolState::Started | PoolState::Starting)
    }

    /// A worker for an admitted request to `application`: the running one, or one started
    /// for it (the request waits, counted against `queue_length`).
    pub async fn worker_for(self: &Arc<Self>, application: usize) -> Result<WorkerLease, NoWorker> {
        let Some(position) = self.apps.iter().position(|a| a.application == application) else {
            return Err(NoWorker::Stopped);
        };
        let app = &self.apps[position];
        // A worker that crashes right after starting may cost a request one more start.
        for _ in 0..2 {
            let wait = {
                let mut slot = app.lock();
                if let Some(worker) = &slot.current
                    && !worker.has_exited()
                {
                    // Under the slot lock: a recycle swapping the worker sees this lease.
                    return Ok(worker.lease());
                }
                if !self.accepts_starts() {
                    return Err(NoWorker::Stopped);
                }
                match &slot.starting {
                    Some(start) => start.clone(),
                    None => self.begin_start(position, &mut slot, None),
                }
            };
            let queued = self.queued.fetch_add(1, Ordering::SeqCst);
            let _queued = Queued(&self.queued);
            if queued >= self.spec.queue_length as usize {
                return Err(NoWorker::QueueFull);
            }
            wait.await.map_err(|_| NoWorker::StartFailed)?;
        }
        Err(NoWorker::StartFailed)
    }

    /// Starts the worker of `apps[position]` in a task of its own (a request that gives up
    /// waiting does not cancel it); with `retire`, first drains and stops that worker (a
    /// non-overlapped recycle). Called with the slot locked.
    fn begin_start(
        self: &Arc<Self>,
        position: usize,
        slot: &mut Slot,
        retire: Option<Arc<Worker>>,
    ) -> StartFuture {
        slot.start_serial += 1;
        let serial = slot.start_serial;
        let epoch = slot.epoch;
        let pool = self.clone();
        let task = tokio::spawn(async move {
            let app = &pool.apps[position];
            if let Some(old) = retire {
                let limit = pool.spec.shutdown_time_limit;
                old.drain(limit).await;
                let text = old.stop(worker_shutdown_limit(app, limit)).await;
                pool.send(PoolEvent::Notice(format!(
                    "pool {}: {text} (recycle)",
                    pool.name()
                )));
            }
            let result = match app.config() {
                Some(config) => pool.start_worker(&config).await,
                None => Err(Arc::from("the application has no worker any more")),
            };
            let mut slot = app.lock();
            if slot.start_serial == serial {
                slot.starting = None;
            }
            match result {
                Ok(worker) if slot.epoch == epoch && pool.accepts_starts() => {
                    slot.current = Some(worker.clone());
                    drop(slot);
                    pool.watch(position, worker);
                    Ok(())
                }
                Ok(worker) => {
                    worker.kill();
                    Err(Arc::from("the pool stopped while its worker started"))
                }
                Err(text) => Err(text),
            }
        });
        let start: StartFuture = async move {
            task.await
                .unwrap_or_else(|e| Err(Arc::from(format!("worker start failed: {e}"))))
        }
        .boxed()
        .shared();
        slot.starting = Some(start.clone());
        start
    }

    /// Up to `1 + startup_retry_count` attempts; every failed one counts as a failure.
    async fn start_worker(&self, config: &WorkerConfig) -> Result<Arc<Worker>, Arc<str>> {
        let mut last = Arc::from("no start attempt");
        for _ in 0..=config.startup_retry_count {
            if self.lock().tripped {
                break;
            }
            self.lock().worker_starts += 1;
            match Worker::start(config, &self.context.sinks, &self.context.spawner).await {
                Ok(worker) => {
                    self.send(PoolEvent::Notice(format!(
                        "pool {}: worker {} of {} started on port {}",
                        self.name(),
                        worker.pid,
                        worker.alias,
                        worker.target.addr.port()
                    )));
                    return Ok(worker);
                }
                Err(failure) => {
                    last = Arc::from(failure.0.as_str());
                    self.record_failure(failure.0, config);
                }
            }
        }
        Err(last)
    }

    /// Watches a running worker: an exit the host did not ask for is a failure; an
    /// AlwaysRunning pool starts a new worker at once, others on the next request.
    fn watch(self: &Arc<Self>, position: usize, worker: Arc<Worker>) {
        let pool = self.clone();
        tokio::spawn(async move {
            let text = worker.exited().await;
            if worker.is_stopping() {
                return;
            }
            let app = &pool.apps[position];
            {
                let mut slot = app.lock();
                if slot
                    .current
                    .as_ref()
                    .is_some_and(|current| Arc::ptr_eq(current, &worker))
                {
                    slot.current = None;
                }
            }
            if let Some(config) = app.config() {
                pool.record_failure(text.to_string(), &config);
            }
            if pool.spec.start_mode == StartMode::AlwaysRunning && pool.accepts_starts() {
                let mut slot = app.lock();
                if slot.current.is_none() && slot.starting.is_none() {
                    // The start runs in its own task; nobody waits for it here.
                    drop(pool.begin_start(position, &mut slot, None));
                }
            }
        });
    }

    /// Counts a failure; trips rapid-fail protection when there are too many.
    fn record_failure(&self, text: String, config: &WorkerConfig) {
        let now = Instant::now();
        let tripped = {
            let mut control = self.lock();
            control.worker_failures += 1;
            control.last_worker_exit = Some(text.clone());
            control.recent_failures.push_back(now);
            while control
                .recent_failures
                .front()
                .is_some_and(|t| now.duration_since(*t) > RAPID_FAIL_INTERVAL)
            {
                control.recent_failures.pop_front();
            }
            let last_minute = control
                .recent_failures
                .iter()
                .filter(|t| now.duration_since(**t) <= Duration::from_secs(60))
                .count();
            let too_many = control.recent_failures.len() >= RAPID_FAIL_COUNT
                || config
                    .rapid_fails_per_minute
                    .is_some_and(|limit| last_minute > limit as usize);
            if too_many && !control.tripped {
                control.tripped = true;
                control.generation += 1;
                control.state = PoolState::Stopped;
                true
            } else {
                false
            }
        };
        self.send(PoolEvent::WorkerFailed {
            pool: self.name().to_string(),
            text: text.clone(),
        });
        if tripped {
            for app in &self.apps {
                let worker = {
                    let mut slot = app.lock();
                    slot.epoch += 1;
                    slot.current.take()
                };
                if let Some(worker) = worker {
                    worker.kill();
                }
            }
            self.send(PoolEvent::RapidFail {
                pool: self.name().to_string(),
                last_exit: text,
            });
        }
    }

    /// Starts the pool; see the module documentation.
    pub async fn start(self: &Arc<Self>) {
        let _operations = self.operations.lock().await;
        {
            let mut control = self.lock();
            if control.state == PoolState::Started || control.tripped {
                return;
            }
            control.generation += 1;
            control.state = PoolState::Starting;
        }
        self.start_workers().await;
        let mut control = self.lock();
        if control.state == PoolState::Starting {
            control.state = PoolState::Started;
        }
    }

    /// For an AlwaysRunning pool: starts every application's worker that is not running and
    /// waits for them. Failures are counted and reported, not returned.
    pub async fn start_workers(self: &Arc<Self>) {
        if self.spec.start_mode != StartMode::AlwaysRunning {
            return;
        }
        let mut starts = Vec::new();
        for (position, app) in self.apps.iter().enumerate() {
            if app.config().is_none() || !self.accepts_starts() {
                continue;
            }
            let mut slot = app.lock();
            if slot.current.as_ref().is_some_and(|w| !w.has_exited()) {
                continue;
            }
            starts.push(match &slot.starting {
                Some(start) => start.clone(),
                None => self.begin_start(position, &mut slot, None),
            });
        }
        for start in starts {
            let _ = start.await;
        }
    }

    /// Stops the pool; see the module documentation. Returns at once (state Stopping or
    /// Stopped); a task finishes the drain. Must run inside a tokio runtime.
    pub fn stop(self: &Arc<Self>) {
        // Slot locks before the control lock, never inside it: the request path takes them
        // in that order.
        let has_workers = self
            .apps
            .iter()
            .any(|a| a.running().is_some() || a.lock().starting.is_some());
        let mut control = self.lock();
        if matches!(control.state, PoolState::Stopped | PoolState::Stopping) {
            return;
        }
        control.generation += 1;
        if self.in_flight.load(Ordering::SeqCst) == 0 && !has_workers {
            control.state = PoolState::Stopped;
            return;
        }
        control.state = PoolState::Stopping;
        let generation = control.generation;
        drop(control);
        let pool = self.clone();
        tokio::spawn(async move {
            let limit = pool.spec.shutdown_time_limit;
            let _ = tokio::time::timeout(limit, pool.wait_for_drain()).await;
            if pool.lock().generation != generation {
                return;
            }
            pool.stop_workers("pool stopped").await;
            let mut control = pool.lock();
            if control.generation == generation && control.state == PoolState::Stopping {
                control.state = PoolState::Stopped;
            }
        });
    }

    /// Stops every worker of the pool (SIGTERM, SIGKILL after the shutdown limit) and waits.
    async fn stop_workers(&self, why: &str) {
        let mut stops = Vec::new();
        for app in &self.apps {
            let worker = {
                let mut slot = app.lock();
                slot.epoch += 1;
                slot.current.take()
            };
            if let Some(worker) = worker {
                let limit = worker_shutdown_limit(app, self.spec.shutdown_time_limit);
                stops.push(async move { worker.stop(limit).await });
            }
        }
        for text in futures::future::join_all(stops).await {
            self.send(PoolEvent::Notice(format!(
                "pool {}: {text} ({why})",
                self.name()
            )));
        }
    }

    /// At host exit: no new starts, every worker stopped within `limit` (then killed).
    pub async fn shutdown(&self, limit: Duration) {
        {
            let mut control = self.lock();
            control.generation += 1;
            control.state = PoolState::Stopped;
        }
        let mut stops = Vec::new();
        for app in &self.apps {
            let worker = {
                let mut slot = app.lock();
                slot.epoch += 1;
                slot.current.take()
            };
            if let Some(worker) = worker {
                stops.push(async move { worker.stop(limit).await });
            }
        }
        futures::future::join_all(stops).await;
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
    pub fn prepare_recycle(
        self: &Arc<Self>,
        spec: &HostSpec,
    ) -> Result<PreparedRecycle, SiteError> {
        let sites = build_sites(&self.statics.roots)?;
        let applications: Vec<usize> = self.applications().collect();
        let (configs, warnings) = load_worker_configs(spec, &applications)?;
        Ok(PreparedRecycle {
            pool: self.clone(),
            sites,
            configs,
            warnings,
        })
    }

    /// This pool's status.
    pub fn status(&self) -> PoolStatus {
        let workers: Vec<_> = self
            .apps
            .iter()
            .filter_map(|a| a.running())
            .map(|w| w.status())
            .collect();
        let control = self.lock();
        PoolStatus {
            name: self.spec.name.clone(),
            full_name: self.spec.full_name.clone(),
            state: control.state,
            worker_pids: workers.iter().map(|w| w.pid).collect(),
            recycles: control.recycles,
            workers,
            worker_starts: control.worker_starts,
            worker_failures: control.worker_failures,
            last_worker_exit: control.last_worker_exit.clone(),
            is_static: !self
                .apps
                .iter()
                .any(|a| a.is_worker.load(Ordering::Relaxed)),
        }
    }

    /// Answers an admitted request for the static site at `key`.
    pub async fn serve_static(
        &self,
        key: SiteKey,
        method: &Method,
        remainder: &str,
        headers: &HeaderMap,
    ) -> Option<Response<Body>> {
        let sites = self.statics.current()?;
        let (_, site) = sites.iter().find(|(site_key, _)| *site_key == key)?;
        Some(site.serve(method, remainder, headers).await)
    }

    /// Runs the pool's timers until `stop`: the idle timeout and periodic restarts.
    pub async fn run_timers(self: Arc<Self>, spec: Arc<HostSpec>, stop: CancellationToken) {
        let idle = self.spec.idle_timeout;
        let periodic = self.spec.periodic_restart;
        let idle_loop = async {
            if idle.is_zero() {
                return std::future::pending().await;
            }
            loop {
                let last = Duration::from_millis(self.last_activity.load(Ordering::Relaxed));
                let due = self.created + last + idle;
                tokio::time::sleep_until(due.into()).await;
                let last_now = Duration::from_millis(self.last_activity.load(Ordering::Relaxed));
                if last_now != last || self.in_flight.load(Ordering::SeqCst) > 0 {
                    continue;
                }
                if self.apps.iter().any(|a| a.running().is_some()) {
                    let _operations = self.operations.lock().await;
                    if self.in_flight.load(Ordering::SeqCst) == 0 {
                        self.stop_workers(&format!("idle for {idle:?}")).await;
                    }
                }
                // Nothing to do until the next request: wait a full period from now.
                self.touch();
            }
        };
        let periodic_loop = async {
            if periodic.is_zero() {
                return std::future::pending().await;
            }
            loop {
                tokio::time::sleep(periodic).await;
                match self.prepare_recycle(&spec) {
                    Ok(prepared) => match prepared.commit().await {
                        Ok(()) => self.send(PoolEvent::Notice(format!(
                            "pool {} recycled (periodic restart after {periodic:?})",
                            self.name()
                        ))),
                        Err(e) => self.send(PoolEvent::Notice(format!(
                            "pool {}: periodic restart failed: {e}",
                            self.name()
                        ))),
                    },
                    Err(e) => self.send(PoolEvent::Notice(format!(
                        "pool {}: periodic restart failed: {e}",
                        self.name()
                    ))),
                }
            }
        };
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = idle_loop => {}
            _ = periodic_loop => {}
        }
    }
}

/// The shutdown limit of an application's worker: the module's, when it names a smaller one.
fn worker_shutdown_limit(app: &AppWorkers, pool_limit: Duration) -> Duration {
    app.config()
        .map_or(pool_limit, |c| c.shutdown_time_limit.min(pool_limit))
}

impl PreparedRecycle {
    /// The pool it recycles.
    pub fn pool_name(&self) -> &str {
        self.pool.name()
    }

    /// Swaps the new sites and configurations in and recycles the workers; the old sites are
    /// flushed so requests still holding them do not keep stale content alive longer than
    /// they must. A worker that cannot be started for an overlapped recycle leaves the old
    /// one serving and makes this an error (the static part is recycled all the same).
    pub async fn commit(self) -> Result<(), String> {
        let pool = self.pool;
        let _operations = pool.operations.lock().await;
        let fresh = Arc::new(self.sites);
        let old = match pool.statics.sites.write() {
            Ok(mut sites) => std::mem::replace(&mut *sites, fresh),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), fresh),
        };
        for (_, site) in old.iter() {
            site.flush_cache();
        }
        let mut errors = Vec::new();
        for (position, config) in self.configs.into_iter().enumerate() {
            if let Err(e) = pool.recycle_app(position, config).await {
                errors.push(e);
            }
        }
        pool.lock().recycles += 1;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

impl Pool {
    async fn recycle_app(
        self: &Arc<Self>,
        position: usize,
        config: Option<Arc<WorkerConfig>>,
    ) -> Result<(), String> {
        let app = &self.apps[position];
        app.set_config(config.clone());
        // A start already under way finishes first (it may use the old configuration; the
        // recycle replaces its worker next).
        loop {
            let pending = app.lock().starting.clone();
            match pending {
                Some(start) => {
                    let _ = start.await;
                }
                None => break,
            }
        }
        let Some(config) = config else {
            // No worker any more (the web.config went): stop the old one.
            let old = {
                let mut slot = app.lock();
                slot.epoch += 1;
                slot.current.take()
            };
            if let Some(old) = old {
                let limit = self.spec.shutdown_time_limit;
                old.drain(limit).await;
                old.stop(limit).await;
            }
            return Ok(());
        };
        if !self.accepts_starts() {
            return Ok(());
        }
        let old = app.running();
        let Some(old) = old else {
            // Nothing runs: OnDemand waits for a request, AlwaysRunning starts now.
            if self.spec.start_mode == StartMode::AlwaysRunning {
                let start = {
                    let mut slot = app.lock();
                    self.begin_start(position, &mut slot, None)
                };
                return start.await.map_err(|e| format!("{}: {e}", config.alias));
            }
            return Ok(());
        };
        if self.spec.disable_overlapped_recycle {
            let start = {
                let mut slot = app.lock();
                slot.current = None;
                self.begin_start(position, &mut slot, Some(old))
            };
            return start.await.map_err(|e| format!("{}: {e}", config.alias));
        }
        let epoch = app.lock().epoch;
        let new = self.start_worker(&config).await.map_err(|e| {
            format!(
                "{}: new worker failed, the old one keeps serving: {e}",
                config.alias
            )
        })?;
        let replaced = {
            let mut slot = app.lock();
            if slot.epoch != epoch || !self.accepts_starts() {
                None
            } else {
                Some(slot.current.replace(new.clone()))
            }
        };
        let Some(previous) = replaced else {
            new.kill();
            return Err(format!(
                "{}: the pool stopped during the recycle",
                config.alias
            ));
        };
        self.watch(position, new);
        if let Some(previous) = previous {
            // In-flight requests finish on the old worker; then it stops.
            let pool = self.clone();
            let limit = self.spec.shutdown_time_limit;
            let worker_limit = config.shutdown_time_limit.min(limit);
            tokio::spawn(async move {
                previous.drain(limit).await;
                let text = previous.stop(worker_limit).await;
                pool.send(PoolEvent::Notice(format!(
                    "pool {}: {text} (recycled)",
                    pool.name()
                )));
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn static_pool(root: &std::path::Path) -> Arc<Pool> {
        let spec = crate::test_support::pool_spec(UnavailableResponse::TcpLevel);
        let backend =
            StaticBackend::new(vec![((0, None), root.to_path_buf(), "app".into())]).unwrap();
        let (events, _) = mpsc::unbounded_channel();
        let sink = Arc::new(crate::log_sink::LogSink::open("/dev/null".as_ref(), "t").unwrap());
        let context = PoolContext {
            sinks: OutputSinks {
                stdout: sink.clone(),
                stderr: sink,
            },
            spawner: Spawner::new(tokio::runtime::Handle::current()),
            events,
        };
        Pool::new(spec, backend, vec![(0, None)], context)
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
        pool.start().await;
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
        pool.start().await;
        assert!(matches!(pool.admit(), Admission::Admitted(_)));
        assert!(pool.status().is_static);
    }
}
