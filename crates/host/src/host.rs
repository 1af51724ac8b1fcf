//! The host as a whole: start-up in the documented order, the shared state every connection
//! and the control server see, commands, and the shutdown drain.
//!
//! Start-up order (each step fails fast, nothing is served before the last one):
//! 1. check the spec and plan the listeners;
//! 2. open the log sinks (stdout: access log; stderr: the host's notices);
//! 3. build the TLS configurations, loading or generating every certificate;
//! 4. create missing application folders, copy the placeholder into empty ones;
//! 5. build the pools: their file sites, and each application's worker configuration (the
//!    job's `process {}` or the folder's `web.config`);
//! 6. bind every listener;
//! 7. start the control server on `control.sock` (mode 0600), last, so a control `Status`
//!    that answers means the host is ready. AlwaysRunning pools start their workers then,
//!    in the background (requests wait for them, bounded by `queue_length`).
//!
//! Pools report worker starts, exits and failures on an event channel; the host writes them
//! to the task's stderr, and when rapid-fail protection stops a pool it shuts down with exit
//! code `control::exit_code::POOL_FAILED` and a reason naming the pool and the last worker
//! exit. At exit, after the drain, every pool's workers are stopped.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use control::{
    ApplicationKind, ApplicationStatus, BindingKind, Command, ExitRecord, HostSpec, HostStatus,
    Reply,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::error::StartupError;
use crate::log_sink::LogSink;
use crate::placeholder::prepare_application_folders;
use crate::pool::{Pool, PoolContext, PoolEvent, SiteKey, StaticBackend, load_worker_configs};
use crate::proxy::Proxy;
use crate::router::Router;
use crate::server::{self, Connections};
use crate::worker::{OutputSinks, Spawner};
use crate::{control_server, plan, tls};

/// The longest drain a signal or the caller's shutdown future gets (a control `Shutdown`
/// names its own). The driver sends `Shutdown` with Nomad's kill timeout and SIGKILLs the host
/// when that is over, so a signal is a fallback; 30 s keeps a forgotten host from lingering
/// for IIS's default 90 s `shutdown_time_limit`.
pub const MAX_SIGNAL_GRACE: Duration = Duration::from_secs(30);

/// What every connection and the control server share.
#[derive(Debug)]
pub(crate) struct HostState {
    /// The spec the host was started with.
    pub spec: HostSpec,
    /// Host and path → application.
    pub router: Router,
    /// Pools in spec order.
    pub pools: Vec<Arc<Pool>>,
    /// Application index → index into `pools`.
    pub application_pool: Vec<usize>,
    /// The access log (the task's stdout).
    pub access_log: Arc<LogSink>,
    /// The host's own notices (the task's stderr).
    pub notices: Arc<LogSink>,
    /// Bound addresses, in listener order.
    pub listening: Vec<SocketAddr>,
    /// Whether listener `i` speaks TLS (`X-Forwarded-Proto`).
    pub listener_tls: Vec<bool>,
    /// The reverse proxy to workers, with its pooled upstream connections.
    pub proxy: ProxyHandle,
    /// Warnings for the operator (status `warnings`), e.g. an in-process hosting model.
    warnings: std::sync::Mutex<Vec<String>>,
    /// The first shutdown request wins; `wait` watches it.
    shutdown: watch::Sender<Option<ShutdownRequest>>,
}

/// The proxy, shown in the state's `Debug` output by name only.
pub(crate) struct ProxyHandle(pub Proxy);

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Proxy")
    }
}

#[derive(Debug, Clone)]
struct ShutdownRequest {
    grace: Duration,
    reason: String,
    code: i32,
}

impl HostState {
    /// The pool serving application `application`.
    pub fn pool_of(&self, application: usize) -> &Arc<Pool> {
        &self.pools[self.application_pool[application]]
    }

    /// Writes a notice to the task's stderr (and to tracing).
    pub fn notice(&self, message: String) {
        tracing::info!(site = %self.spec.site_name, "{message}");
        write_notice(&self.notices, &message);
    }

    fn add_warnings(&self, new: Vec<String>) {
        let mut warnings = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        for warning in new {
            if !warnings.contains(&warning) {
                self.notice(format!("warning: {warning}"));
                warnings.push(warning);
            }
        }
    }

    fn applications(&self) -> Vec<ApplicationStatus> {
        self.spec
            .applications
            .iter()
            .enumerate()
            .map(|(index, app)| ApplicationStatus {
                alias: app.alias.clone(),
                pool: app.pool.clone(),
                path: app.path.clone(),
                kind: self
                    .pool_of(index)
                    .worker_config(index)
                    .map_or(ApplicationKind::Static, |c| c.kind),
            })
            .collect()
    }

    fn status(&self) -> HostStatus {
        HostStatus {
            pid: std::process::id(),
            site_name: self.spec.site_name.clone(),
            listening: self.listening.iter().map(|a| a.to_string()).collect(),
            pools: self.pools.iter().map(|p| p.status()).collect(),
            dropped_log_lines: self.access_log.dropped(),
            protocol: control::PROTOCOL_VERSION,
            applications: self.applications(),
            warnings: self
                .warnings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn request_shutdown(&self, grace: Duration, reason: String, code: i32) {
        self.shutdown.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(ShutdownRequest {
                grace,
                reason,
                code,
            });
            true
        });
    }

    /// Writes pool events to the task's stderr; a rapid-fail stop ends the host.
    async fn handle_events(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<PoolEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                PoolEvent::Notice(text) => self.notice(text),
                PoolEvent::WorkerFailed { pool, text } => {
                    self.notice(format!("pool {pool}: worker failure: {text}"))
                }
                PoolEvent::RapidFail { pool, last_exit } => {
                    let reason =
                        format!("pool {pool} stopped by rapid-fail protection: {last_exit}");
                    self.notice(reason.clone());
                    self.request_shutdown(
                        Duration::from_secs(5),
                        reason,
                        control::exit_code::POOL_FAILED,
                    );
                }
            }
        }
    }

    /// The pools a command names: one, or all for `None`.
    fn select(&self, pool: Option<&str>) -> Result<Vec<&Arc<Pool>>, String> {
        match pool {
            None => Ok(self.pools.iter().collect()),
            Some(name) => self
                .pools
                .iter()
                .find(|p| p.name() == name)
                .map(|p| vec![p])
                .ok_or_else(|| format!("unknown pool \"{name}\"")),
        }
    }

    /// Carries out one command; a failed command changes nothing. Start and recycle wait for
    /// workers to start (the control client allows `control::command_deadline` for that).
    pub async fn apply(&self, command: &Command) -> Reply {
        let done = match command {
            Command::Status => Ok(()),
            Command::StartPool { pool } => match self.select(pool.as_deref()) {
                Ok(pools) => {
                    for pool in pools {
                        pool.start().await;
                        self.notice(format!("pool {} started", pool.name()));
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Command::StopPool { pool } => self.select(pool.as_deref()).map(|pools| {
                for pool in pools {
                    pool.stop();
                    self.notice(format!("pool {} stopped", pool.name()));
                }
            }),
            Command::RecyclePool { pool } => self.recycle(pool.as_deref()).await,
            Command::Shutdown { grace } => {
                self.request_shutdown(
                    *grace,
                    "stopped by control command".into(),
                    control::exit_code::OK,
                );
                Ok(())
            }
        };
        match done {
            Ok(()) => Reply::Ok {
                status: self.status(),
            },
            Err(message) => {
                self.notice(format!("command refused: {message}"));
                Reply::Error { message }
            }
        }
    }
}

impl HostState {
    /// Recycles one pool or all: every new site and configuration is built first (all or
    /// nothing), then each pool recycles its workers.
    async fn recycle(&self, pool: Option<&str>) -> Result<(), String> {
        let pools = self.select(pool)?;
        let prepared = pools
            .iter()
            .map(|p| p.prepare_recycle(&self.spec))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot recycle: {e}"))?;
        let mut errors = Vec::new();
        for recycle in prepared {
            let name = recycle.pool_name().to_string();
            self.add_warnings(recycle.warnings.clone());
            match recycle.commit().await {
                Ok(()) => self.notice(format!("pool {name} recycled")),
                Err(e) => errors.push(format!("pool {name}: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("recycle incomplete: {}", errors.join("; ")))
        }
    }
}

fn write_notice(sink: &LogSink, message: &str) {
    let format = time::format_description::well_known::Rfc3339;
    let now = time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default();
    sink.write_with(|line| {
        line.push_str(&now);
        line.push_str(" nomad_iis host: ");
        line.push_str(message);
    });
}

/// A running host. Obtain with [`Host::start`], end with [`Host::wait`].
#[derive(Debug)]
pub struct Host {
    state: Arc<HostState>,
    connections: Connections,
    accept_loops: Vec<JoinHandle<()>>,
    control: JoinHandle<()>,
    control_stop: tokio_util::sync::CancellationToken,
    control_socket: PathBuf,
    /// Ends the pools' timers and the AlwaysRunning start-up at exit.
    pools_stop: tokio_util::sync::CancellationToken,
    /// The event loop (ends when every pool, and so every sender, is gone).
    events: JoinHandle<()>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("open", &self.tracker.len())
            .finish_non_exhaustive()
    }
}

/// A cheap handle to a running host: status, commands, shutdown.
#[derive(Debug, Clone)]
pub struct HostHandle(Arc<HostState>);

impl HostHandle {
    /// The host's status, as the control `Status` command reports it.
    pub fn status(&self) -> HostStatus {
        self.0.status()
    }

    /// Carries out one control command, exactly as the control socket does. Call it inside the
    /// host's tokio runtime: a stop with requests in flight spawns the task that waits for them.
    pub async fn apply(&self, command: &Command) -> Reply {
        self.0.apply(command).await
    }

    /// Asks the host to stop accepting, drain for at most `grace` and finish; the first request
    /// wins and its `reason` goes into the exit record (exit code 0).
    pub fn request_shutdown(&self, grace: Duration, reason: impl Into<String>) {
        self.0
            .request_shutdown(grace, reason.into(), control::exit_code::OK);
    }

    /// The drain limit for shutdowns that do not name one: the largest
    /// `shutdown_time_limit` of the pools, at most [`MAX_SIGNAL_GRACE`].
    pub fn default_grace(&self) -> Duration {
        self.0
            .pools
            .iter()
            .map(|p| p.spec().shutdown_time_limit)
            .max()
            .unwrap_or(MAX_SIGNAL_GRACE)
            .min(MAX_SIGNAL_GRACE)
    }
}

impl Host {
    /// Starts a host for `spec` in the documented order. Must run inside a tokio runtime.
    pub async fn start(spec: HostSpec) -> Result<Host, StartupError> {
        let listener_plans = plan::plan(&spec)?;
        let access_log = Arc::new(
            LogSink::open(&spec.stdout_path, "stdout")
                .map_err(|e| StartupError::other("cannot start the access log writer", e))?,
        );
        let notices = Arc::new(
            LogSink::open(&spec.stderr_path, "stderr")
                .map_err(|e| StartupError::other("cannot start the notice writer", e))?,
        );
        let (event_sender, event_receiver) = mpsc::unbounded_channel();
        let context = PoolContext {
            sinks: OutputSinks {
                stdout: access_log.clone(),
                stderr: notices.clone(),
            },
            spawner: Spawner::new(tokio::runtime::Handle::current()),
            events: event_sender,
        };
        let prepared = prepare(&spec, &listener_plans, context);
        let (pools, application_pool, bound, warnings) = match prepared {
            Ok(parts) => parts,
            Err(error) => {
                write_notice(&notices, &format!("cannot start: {error}"));
                return Err(error);
            }
        };
        let router = Router::new(&spec, &listener_plans);
        let listening = bound.iter().map(|b| b.local).collect();
        let listener_tls = bound.iter().map(|b| b.tls.is_some()).collect();
        let control_socket = spec.runtime_dir.join(control::CONTROL_SOCKET);
        let (shutdown, _) = watch::channel(None);
        let state = Arc::new(HostState {
            spec,
            router,
            pools,
            application_pool,
            access_log,
            notices,
            listening,
            listener_tls,
            proxy: ProxyHandle(Proxy::new()),
            warnings: std::sync::Mutex::new(Vec::new()),
            shutdown,
        });
        state.add_warnings(warnings);
        let events = tokio::spawn(state.clone().handle_events(event_receiver));
        let connections = Connections::new(&state.spec.limits);
        let accept_loops = bound
            .into_iter()
            .enumerate()
            .map(|(index, bound)| {
                tokio::spawn(server::accept_loop(
                    state.clone(),
                    connections.clone(),
                    index,
                    bound,
                ))
            })
            .collect::<Vec<_>>();
        let control_stop = tokio_util::sync::CancellationToken::new();
        let control = match control_server::bind(&control_socket) {
            Ok(listener) => tokio::spawn(control_server::serve(
                listener,
                state.clone(),
                control_stop.clone(),
            )),
            Err(error) => {
                connections.stop_accepting.cancel();
                for accept_loop in accept_loops {
                    let _ = accept_loop.await;
                }
                state.notice(format!("cannot start: {error}"));
                return Err(error);
            }
        };
        let pools_stop = tokio_util::sync::CancellationToken::new();
        let spec = Arc::new(state.spec.clone());
        for pool in &state.pools {
            tokio::spawn(pool.clone().run_timers(spec.clone(), pools_stop.clone()));
            let (pool, stop) = (pool.clone(), pools_stop.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = pool.start_workers() => {}
                }
            });
        }
        state.notice(format!(
            "site {} started, listening on {}",
            state.spec.site_name,
            state
                .listening
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(Host {
            state,
            connections,
            accept_loops,
            control,
            control_stop,
            control_socket,
            pools_stop,
            events,
        })
    }

    /// A handle for status, commands and shutdown requests.
    pub fn handle(&self) -> HostHandle {
        HostHandle(self.state.clone())
    }

    /// Runs until a shutdown is requested, then stops accepting, drains in-flight requests for
    /// at most the requested grace, drops what is left, and returns the exit record.
    pub async fn wait(self) -> ExitRecord {
        let mut requests = self.state.shutdown.subscribe();
        let request = match requests.wait_for(|r| r.is_some()).await {
            Ok(request) => request.clone(),
            // The sender lives in `state`, which this function holds; this cannot happen,
            // but stopping is the safe reading.
            Err(_) => None,
        }
        .unwrap_or(ShutdownRequest {
            grace: Duration::ZERO,
            reason: "shutdown channel closed".into(),
            code: crate::error::EXIT_FAILURE,
        });
        self.state.notice(format!(
            "shutting down ({}), draining for at most {:?}",
            request.reason, request.grace
        ));

        self.connections.stop_accepting.cancel();
        for accept_loop in self.accept_loops {
            let _ = accept_loop.await;
        }
        self.connections.graceful.cancel();
        self.connections.tracker.close();
        let drained = tokio::time::timeout(request.grace, self.connections.tracker.wait())
            .await
            .is_ok();
        if !drained {
            self.state.notice(format!(
                "grace of {:?} over, closing {} connections",
                request.grace,
                self.connections.tracker.len()
            ));
            self.connections.abort.cancel();
            self.connections.tracker.wait().await;
        }

        // Workers go after the requests they served: SIGTERM, SIGKILL after their pool's
        // shutdown limit, at most the grace (never less than a second to exit cleanly).
        self.pools_stop.cancel();
        let worker_limit = request.grace.max(Duration::from_secs(1));
        futures::future::join_all(self.state.pools.iter().map(|pool| {
            let limit = pool.spec().shutdown_time_limit.min(worker_limit);
            pool.shutdown(limit)
        }))
        .await;

        self.control_stop.cancel();
        let _ = self.control.await;
        let _ = std::fs::remove_file(&self.control_socket);
        self.state.notice(format!("stopped: {}", request.reason));
        self.events.abort();
        self.state.access_log.close();
        self.state.notices.close();
        ExitRecord {
            code: request.code,
            reason: request.reason,
        }
    }
}

type Prepared = (
    Vec<Arc<Pool>>,
    Vec<usize>,
    Vec<server::BoundListener>,
    Vec<String>,
);

/// Steps 3 to 6 of the start-up order.
fn prepare(
    spec: &HostSpec,
    plans: &[plan::ListenerPlan],
    context: PoolContext,
) -> Result<Prepared, StartupError> {
    let provider = tls::provider();
    let mut acceptors = Vec::with_capacity(plans.len());
    for listener in plans {
        acceptors.push(match listener.kind {
            BindingKind::Http => None,
            BindingKind::Https => Some(TlsAcceptor::from(tls::server_config(
                &spec.bindings,
                listener,
                &provider,
            )?)),
        });
    }

    prepare_application_folders(spec)?;

    let (pools, application_pool, warnings) = build_pools(spec, context)?;

    let bound = plans
        .iter()
        .zip(acceptors)
        .map(|(listener, acceptor)| server::bind(listener, acceptor))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((pools, application_pool, bound, warnings))
}

type Pools = (Vec<Arc<Pool>>, Vec<usize>, Vec<String>);

fn build_pools(spec: &HostSpec, context: PoolContext) -> Result<Pools, StartupError> {
    let mut application_pool = Vec::with_capacity(spec.applications.len());
    let mut roots: Vec<Vec<(SiteKey, PathBuf, String)>> = vec![Vec::new(); spec.pools.len()];
    for (index, app) in spec.applications.iter().enumerate() {
        let pool = spec
            .pools
            .iter()
            .position(|p| p.name == app.pool)
            .ok_or_else(|| {
                StartupError::invalid(
                    format!("application[{index}].pool"),
                    format!("unknown pool \"{}\"", app.pool),
                )
            })?;
        application_pool.push(pool);
        roots[pool].push((
            (index, None),
            app.path.clone(),
            format!("application[{index}].path"),
        ));
        for (vdir_index, vdir) in app.virtual_directories.iter().enumerate() {
            roots[pool].push((
                (index, Some(vdir_index)),
                vdir.path.clone(),
                format!("application[{index}].virtual_directory[{vdir_index}].path"),
            ));
        }
    }
    let mut warnings = Vec::new();
    let pools = spec
        .pools
        .iter()
        .enumerate()
        .zip(roots)
        .map(|((pool_index, pool), roots)| {
            let backend =
                StaticBackend::new(roots).map_err(|e| StartupError::invalid(e.field, e.detail))?;
            let applications: Vec<usize> = application_pool
                .iter()
                .enumerate()
                .filter(|(_, p)| **p == pool_index)
                .map(|(application, _)| application)
                .collect();
            let (configs, mut more) = load_worker_configs(spec, &applications)
                .map_err(|e| StartupError::invalid(e.field, e.detail))?;
            warnings.append(&mut more);
            Ok(Pool::new(
                pool.clone(),
                backend,
                applications.into_iter().zip(configs).collect(),
                context.clone(),
            ))
        })
        .collect::<Result<Vec<_>, StartupError>>()?;
    Ok((pools, application_pool, warnings))
}

/// Starts a host, runs it until `shutdown` resolves (or a control `Shutdown`), drains and
/// returns its exit record. A start-up failure returns at once with its code and reason.
pub async fn run(spec: HostSpec, shutdown: impl Future<Output = ()>) -> ExitRecord {
    let host = match Host::start(spec).await {
        Ok(host) => host,
        Err(error) => return error.to_exit_record(),
    };
    let handle = host.handle();
    let finished = host.wait();
    tokio::pin!(finished);
    tokio::select! {
        record = &mut finished => record,
        _ = shutdown => {
            handle.request_shutdown(handle.default_grace(), "stopped by shutdown request");
            finished.await
        }
    }
}
