//! The `iis` driver: Nomad's `BasePlugin` and `Driver` services, one method per RPC.
//!
//! Each task runs in its own detached site host (`nomad_iis host --runtime-dir DIR`), so tasks
//! outlive this plugin process; [`crate::state::DriverState`] in the task handle lets the next
//! plugin process re-attach. See the protocol doc §3 for what Nomad expects of each RPC.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use nix::sys::signal::Signal;
use nomad_plugin::proto::base::{
    self as base_pb, base_plugin_server::BasePlugin, base_plugin_server::BasePluginServer,
};
use nomad_plugin::proto::drivers::{
    self as pb, driver_server::Driver, driver_server::DriverServer,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::DriverError;
use crate::events::{EventBus, TaskRef};
use crate::fingerprint::{self, NodeFacts, Reported};
use crate::handle::TaskHandle;
use crate::identity::{self, Allocator, AssignContext, Privilege};
use crate::process::{self, HostCommand, ProcessIdentity};
use crate::runtime;
use crate::state::{DRIVER_STATE_VERSION, DriverState, TaskStore};
use crate::stats::{self, Sampler};
use nomad_plugin::transport::MAX_MESSAGE_SIZE;

/// The driver name jobs use (`driver = "iis"`).
pub const PLUGIN_NAME: &str = "iis";
/// The Nomad plugin API version this driver speaks.
pub const PLUGIN_API_VERSION: &str = "0.1.0";
/// Version of the task handles this driver returns (`TaskHandle.version`).
pub const HANDLE_VERSION: i32 = 1;

/// Used when Nomad sends no kill timeout (its own default `kill_timeout`).
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest StopTask timeout honoured. Nomad caps kill timeouts far below this (its client's
/// `max_kill_timeout`, 30 s by default); the cap keeps deadlines representable.
const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// Used when Nomad sends no stats interval.
const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest stats interval honoured, so a zero interval is no busy loop.
const MIN_STATS_INTERVAL: Duration = Duration::from_millis(100);
/// How long a SIGKILLed host may take to be noticed as gone.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How often the fingerprint stream looks for a health change between regular messages.
const HEALTH_CHECK_PERIOD: Duration = Duration::from_secs(5);
/// Go's zero `time.Time` (0001-01-01T00:00:00Z): what Nomad's drivers report as the completion
/// time of a task that has not completed.
const GO_ZERO_TIME: prost_types::Timestamp = prost_types::Timestamp {
    seconds: -62_135_596_800,
    nanos: 0,
};
/// Time limit for control commands other than shutdown.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// The Management API as the driver sees it. Its keys and secrets stay with the binary and the
/// `management` crate, so they can never reach the driver's `Debug` output or logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagementApi {
    /// Listening port asked for on the command line.
    pub port: u16,
}

/// How this plugin process runs, from its command line.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// Root of the hosts' runtime folders.
    pub runtime_root: PathBuf,
    /// How to start a host.
    pub host_command: HostCommand,
    /// How long a new host may take to answer its control socket.
    pub host_ready_timeout: Duration,
    /// The Management API, when asked for (the fingerprint reports it once served).
    pub management_api: Option<ManagementApi>,
    /// `--procdump-accept-eula`.
    pub procdump_accept_eula: bool,
}

impl DriverOptions {
    /// Options with defaults: no Management API, 60 s to become ready.
    pub fn new(runtime_root: impl Into<PathBuf>, host_command: HostCommand) -> Self {
        Self {
            runtime_root: runtime_root.into(),
            host_command,
            host_ready_timeout: Duration::from_secs(60),
            management_api: None,
            procdump_accept_eula: false,
        }
    }
}

/// The driver. Cheap to clone: clones share all state.
#[derive(Debug, Clone)]
pub struct IisDriver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Command-line options; fixed for the life of the process.
    options: DriverOptions,
    /// The agent's plugin config, replaced by each SetConfig.
    config: RwLock<config::DriverConfig>,
    /// Tracked tasks.
    tasks: TaskStore,
    /// Task events for Nomad's TaskEvents stream.
    events: EventBus,
    /// CPU speed used to express CPU usage in MHz-ticks.
    mhz_per_core: f64,
    /// Dynamic ids for `ApplicationPoolIdentity`, recorded under the runtime root.
    identities: Allocator,
    /// The Management API's port once it is served (0: not served); the fingerprint says so.
    management_served: std::sync::atomic::AtomicU16,
    /// `true` once a SetConfig carried `nomad_config`: this is the long-lived plugin instance.
    nomad_configured: tokio::sync::watch::Sender<bool>,
}

type RpcResult<T> = Result<Response<T>, Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl IisDriver {
    /// A driver with the default plugin config until Nomad sends its own.
    pub fn new(options: DriverOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                config: RwLock::new(config::DriverConfig::default()),
                tasks: TaskStore::default(),
                events: EventBus::new(),
                mhz_per_core: stats::mhz_per_core(),
                identities: Allocator::new(&options.runtime_root),
                options,
                management_served: std::sync::atomic::AtomicU16::new(0),
                nomad_configured: tokio::sync::watch::channel(false).0,
            }),
        }
    }

    /// The gRPC services (`BasePlugin` and `Driver`) with Nomad's message-size limits.
    pub fn routes(&self) -> tonic::service::Routes {
        let base = BasePluginServer::new(self.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let driver = DriverServer::new(self.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        tonic::service::Routes::new(base).add_service(driver)
    }

    /// The options this driver runs with.
    pub fn options(&self) -> &DriverOptions {
        &self.inner.options
    }

    /// The task events bus (the Management API publishes on it too).
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// The handle of a tracked task.
    pub fn task(&self, task_id: &str) -> Option<Arc<TaskHandle>> {
        self.inner.tasks.get(task_id)
    }

    /// Every tracked task.
    pub fn tasks(&self) -> Vec<Arc<TaskHandle>> {
        self.inner.tasks.all()
    }

    /// Completes once Nomad sent a SetConfig with `nomad_config`: only the long-lived plugin
    /// instance (P3 of the protocol doc §1) gets one, so only it should bind the Management API.
    pub async fn nomad_configured(&self) {
        let mut configured = self.inner.nomad_configured.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = configured.wait_for(|c| *c).await;
    }

    /// Records that the Management API is served on `port` (`None`: not served).
    pub fn set_management_api_served(&self, port: Option<u16>) {
        self.inner
            .management_served
            .store(port.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether process dumps are allowed: `--procdump-accept-eula=true` or the driver config's
    /// `procdump { accept_eula = true }`.
    pub fn procdump_allowed(&self) -> bool {
        self.inner.options.procdump_accept_eula
            || self.config().procdump.is_some_and(|p| p.accept_eula)
    }

    fn config(&self) -> config::DriverConfig {
        self.inner
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn root(&self) -> &Path {
        &self.inner.options.runtime_root
    }

    fn fingerprint_once(&self) -> pb::FingerprintResponse {
        let config = self.config();
        let reported = Reported {
            enabled: config.enabled,
            directory_security: config.directory_security,
            target_websites: !config.allowed_target_websites.is_empty(),
        };
        let facts = NodeFacts {
            // Enabled only when actually served, not merely asked for.
            management_api_port: Some(
                self.inner
                    .management_served
                    .load(std::sync::atomic::Ordering::Relaxed),
            )
            .filter(|p| *p != 0),
            runtime_root: self.root().to_owned(),
        };
        fingerprint::fingerprint(&reported, &facts)
    }

    // === StartTask ===

    async fn start(&self, task: pb::TaskConfig) -> Result<pb::StartTaskResponse, DriverError> {
        if task.id.is_empty() {
            return Err(DriverError::BadRequest("task.id: missing".into()));
        }
        if task.name.is_empty() {
            return Err(DriverError::BadRequest("task.name: missing".into()));
        }
        if self.inner.tasks.contains(&task.id) {
            return Err(DriverError::AlreadyStarted(task.id));
        }
        let driver_config = self.config();
        if !driver_config.enabled {
            return Err(DriverError::Disabled);
        }
        let task_config = config::TaskConfig::from_msgpack(&task.msgpack_driver_config)
            .map_err(|e| DriverError::InvalidConfig(e.to_string()))?;
        let notices = task_config
            .validate(&driver_config)
            .map_err(|e| DriverError::InvalidConfig(e.to_string()))?;
        let ports = collect_ports(&task)?;
        let alloc_id = if task.alloc_id.is_empty() {
            task.id.split('/').next().unwrap_or_default().to_owned()
        } else {
            task.alloc_id.clone()
        };
        let task_ref = TaskRef {
            task_id: task.id.clone(),
            alloc_id: alloc_id.clone(),
            task_name: task.name.clone(),
        };
        let root = self.root().to_owned();
        let runtime_dir = runtime::runtime_dir_for(&root, &alloc_id, &task.name)?;
        let socket = runtime_dir.join(control::CONTROL_SOCKET);
        if let Ok(status) = control::Client::new(&socket)
            .with_timeout(Duration::from_secs(1))
            .status()
            .await
        {
            self.end_earlier_host(status.pid, &runtime_dir, &task_ref)
                .await?;
        }
        runtime::create_fresh(&root, &runtime_dir)?;

        let context = config::ResolveContext {
            alloc_id: alloc_id.clone(),
            task_name: task.name.clone(),
            task_dir: Path::new(&task.alloc_dir).join(&task.name),
            ports,
            runtime_dir: runtime_dir.clone(),
            stdout_path: path_or_null(&task.stdout_path),
            stderr_path: path_or_null(&task.stderr_path),
            env: task
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            placeholder_app_path: driver_config.placeholder_app_path.clone(),
            default_ip: default_ip(&task),
            limits: driver_config.limits.clone(),
        };
        let launched = async {
            let spec = config::resolve(&task_config, &context)
                .map_err(|e| DriverError::InvalidConfig(e.to_string()))?;
            let (spec, identity_events) = self
                .assign_identities(&task_config, &task.user, &driver_config, spec)
                .await?;
            runtime::write_spec(&runtime_dir, &spec)?;
            Ok::<_, DriverError>((spec, identity_events))
        }
        .await;
        let (spec, identity_events) = match launched {
            Ok(launched) => launched,
            Err(e) => {
                self.remove_runtime_dir(&runtime_dir);
                return Err(e);
            }
        };

        let launched = control::launch::spawn_ready(
            &mut process::host_command(&self.inner.options.host_command, &runtime_dir),
            &runtime_dir,
            self.inner.options.host_ready_timeout,
            |pid| {
                // The host leads its own process group: its workers go with it.
                let _ = process::kill_group_now(pid);
            },
        )
        .await;
        let (mut child, status) = match launched {
            Ok(launched) => launched,
            Err(error) => {
                self.remove_runtime_dir(&runtime_dir);
                return Err(launch_error(error, &runtime_dir));
            }
        };
        let Some(identity) = child.id().and_then(ProcessIdentity::of) else {
            self.abort_start(&mut child, &runtime_dir).await;
            return Err(DriverError::HostStart(
                "site host exited right after it became ready".into(),
            ));
        };

        let started_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let state = DriverState {
            version: DRIVER_STATE_VERSION,
            task_id: task.id.clone(),
            host_pid: identity.pid,
            host_start_time: identity.start_time,
            runtime_dir: runtime_dir.clone(),
            spec,
            started_at,
        };
        let driver_state = state.to_bytes();
        let site_name = state.spec.site_name.clone();
        let handle = TaskHandle::new(task.clone(), state);
        if !self.inner.tasks.insert_new(Arc::clone(&handle)) {
            // A concurrent StartTask with the same id won the race.
            self.abort_start(&mut child, &runtime_dir).await;
            return Err(DriverError::AlreadyStarted(task.id));
        }
        handle.spawn_child_watcher(child, self.inner.events.clone());

        for notice in notices {
            self.inner.events.emit(&task_ref, notice.to_string());
        }
        for event in identity_events {
            self.inner.events.emit(&task_ref, event);
        }
        for warning in handle.unseen_warnings(&status.warnings) {
            self.inner.events.emit(&task_ref, warning);
        }
        self.inner.events.emit(
            &task_ref,
            format!(
                "started site {site_name} listening on {}",
                status.listening.join(", ")
            ),
        );
        Ok(pb::StartTaskResponse {
            result: pb::start_task_response::Result::Success as i32,
            driver_error_msg: String::new(),
            handle: Some(pb::TaskHandle {
                version: HANDLE_VERSION,
                config: Some(task),
                state: pb::TaskState::Running as i32,
                driver_state,
            }),
            network_override: None,
        })
    }

    /// Ends a host that still runs in the runtime folder of a task Nomad starts anew. Nomad
    /// starts a task only when it holds no handle for it, so such a host belongs to an attempt
    /// Nomad gave up on (a StartTask cut short by an agent restart, a failed DestroyTask) and
    /// would keep the task's ports and folder forever. It is killed only when the process
    /// answering on the socket is provably a site host of that folder.
    async fn end_earlier_host(
        &self,
        pid: u32,
        runtime_dir: &Path,
        task: &TaskRef,
    ) -> Result<(), DriverError> {
        let still_runs = || {
            DriverError::HostStart(format!(
                "a site host for task {:?} of allocation {} still runs in {}",
                task.task_name,
                task.alloc_id,
                runtime_dir.display()
            ))
        };
        let Some(host) = ProcessIdentity::of(pid).filter(|p| p.is_host_of(runtime_dir)) else {
            return Err(still_runs());
        };
        tracing::warn!(pid, task_id = %task.task_id, "stopping a site host left by an earlier attempt");
        let _ = host.kill_group();
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        while host.is_alive() {
            if tokio::time::Instant::now() >= deadline {
                return Err(still_runs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.inner.events.emit(
            task,
            format!("stopped an earlier site host (pid {pid}) that Nomad no longer tracked"),
        );
        Ok(())
    }

    /// Undoes a failed start: kills the host's whole group, reaps it, removes its folder.
    async fn abort_start(&self, child: &mut tokio::process::Child, runtime_dir: &Path) {
        if let Some(pid) = child.id() {
            let _ = process::kill_group_now(pid);
        }
        let _ = child.kill().await;
        self.remove_runtime_dir(runtime_dir);
    }

    /// Removes a task's runtime folder and releases its pool identities with it.
    fn remove_runtime_dir(&self, dir: &Path) {
        if let Err(e) = runtime::remove(self.root(), dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a runtime folder");
        }
        let released = self.inner.identities.release(dir);
        if !released.is_empty() {
            tracing::debug!(dir = %dir.display(), ?released, "released pool identities");
        }
    }

    /// Fills each pool's worker identity and applies `directory_security` (folder walks: off
    /// the async threads); the task events to send once the task runs.
    async fn assign_identities(
        &self,
        task_config: &config::TaskConfig,
        task_user: &str,
        driver_config: &config::DriverConfig,
        mut spec: control::HostSpec,
    ) -> Result<(control::HostSpec, Vec<String>), DriverError> {
        let allocator = self.inner.identities.clone();
        let task_config = task_config.clone();
        let task_user = task_user.to_owned();
        let directory_security = driver_config.directory_security;
        tokio::task::spawn_blocking(move || {
            let ctx = AssignContext {
                allocator: &allocator,
                task: &task_config,
                task_user: &task_user,
                directory_security,
                privilege: Privilege::current(),
            };
            let events = identity::assign(&ctx, &mut spec)?;
            Ok((spec, events))
        })
        .await
        .map_err(|e| DriverError::HostStart(format!("assigning pool identities: {e}")))?
    }

    // === WaitTask, StopTask, DestroyTask ===

    async fn wait(&self, task_id: &str) -> Result<pb::WaitTaskResponse, DriverError> {
        let handle = self.tracked(task_id)?;
        let outcome = handle.wait().await;
        let err = match (&outcome.reason, outcome.exit_code) {
            (Some(reason), code) if code != 0 => reason.clone(),
            _ => String::new(),
        };
        Ok(pb::WaitTaskResponse {
            result: Some(outcome.to_proto()),
            err,
        })
    }

    async fn stop(
        &self,
        task_id: &str,
        timeout: Duration,
        signal: &str,
    ) -> Result<(), DriverError> {
        let Some(handle) = self.inner.tasks.get(task_id) else {
            return Ok(());
        };
        if !handle.is_running() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let grace = shutdown_grace(&handle, timeout);
        let client = handle
            .control()
            .clone()
            .with_timeout(timeout.clamp(Duration::from_millis(500), Duration::from_secs(5)));
        if let Err(e) = client.send(&control::Command::Shutdown { grace }).await {
            let signal = if signal.is_empty() { "SIGINT" } else { signal };
            let sig = process::parse_signal(signal).unwrap_or(Signal::SIGINT);
            tracing::warn!(task_id, error = %e, signal = %sig, "control shutdown failed; signalling the host");
            if let Err(e) = handle.host().signal(sig) {
                tracing::warn!(task_id, error = %e, "could not signal the host");
            }
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if handle.wait_for(remaining).await {
            return Ok(());
        }
        tracing::warn!(
            task_id,
            ?timeout,
            "site host did not exit in time; killing its process group"
        );
        self.kill(&handle).await
    }

    async fn kill(&self, handle: &TaskHandle) -> Result<(), DriverError> {
        kill_group(handle)?;
        if handle.wait_for(KILL_WAIT).await {
            Ok(())
        } else {
            Err(DriverError::HostStart(format!(
                "site host (pid {}) did not exit after SIGKILL",
                handle.host().pid
            )))
        }
    }

    async fn destroy(&self, task_id: &str, force: bool) -> Result<(), DriverError> {
        let Some(handle) = self.inner.tasks.get(task_id) else {
            return Ok(());
        };
        if handle.is_running() {
            if !force {
                return Err(DriverError::StillRunning(task_id.to_owned()));
            }
            self.kill(&handle).await?;
        }
        // Only the runtime folder is ours; application folders belong to Nomad's alloc dir.
        self.remove_runtime_dir(&handle.driver_state().runtime_dir);
        self.inner.tasks.remove(task_id);
        Ok(())
    }

    // === RecoverTask ===

    async fn recover(
        &self,
        task_id: String,
        handle: Option<pb::TaskHandle>,
    ) -> Result<(), DriverError> {
        let handle = handle.ok_or_else(|| DriverError::BadRequest("handle: missing".into()))?;
        let config = handle.config.unwrap_or_default();
        let mut state = DriverState::from_bytes(&handle.driver_state)?;
        // Nomad sends an empty task_id: the id is the handle's config id.
        let task_id = [task_id, config.id.clone(), state.task_id.clone()]
            .into_iter()
            .find(|id| !id.is_empty())
            .ok_or_else(|| DriverError::BadRequest("task_id: missing".into()))?;
        if self.inner.tasks.contains(&task_id) {
            return Ok(());
        }
        state.task_id = task_id.clone();
        let host = ProcessIdentity {
            pid: state.host_pid,
            start_time: state.host_start_time,
        };
        if !host.is_alive() {
            self.remove_runtime_dir(&state.runtime_dir);
            return Err(DriverError::HostGone {
                task_id,
                detail: format!("process {} is no longer running", state.host_pid),
            });
        }
        // A matching pid and start time can still be a stranger (a reboot may hand both out
        // again); nothing may be sent to a process group we cannot prove is the host's.
        if !host.is_host_of(&state.runtime_dir) {
            self.remove_runtime_dir(&state.runtime_dir);
            return Err(DriverError::HostGone {
                task_id,
                detail: format!(
                    "process {} is not its site host (it does not run in {})",
                    state.host_pid,
                    state.runtime_dir.display()
                ),
            });
        }
        let client = control::Client::new(state.runtime_dir.join(control::CONTROL_SOCKET))
            .with_timeout(Duration::from_secs(5));
        let mut last_error = None;
        let mut warnings = Vec::new();
        let mut missing = Vec::new();
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            match client.status().await {
                Ok(status) => {
                    last_error = None;
                    missing = status.missing_features();
                    warnings = status.warnings;
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        if let Some(e) = last_error {
            // A host that no longer answers would keep its ports: end it so the restarted task
            // can bind them.
            let _ = host.kill_group();
            self.remove_runtime_dir(&state.runtime_dir);
            return Err(DriverError::HostGone {
                task_id,
                detail: format!("its control socket does not answer: {e}"),
            });
        }
        let handle = TaskHandle::new(config, state);
        // The plugin that started the host already sent these as events.
        handle.unseen_warnings(&warnings);
        if self.inner.tasks.insert_new(Arc::clone(&handle)) {
            handle.spawn_pid_watcher(self.inner.events.clone());
            self.inner.events.emit(
                &handle.task_ref(),
                format!("re-attached to the site host (pid {})", host.pid),
            );
            // A host started by an older plugin keeps running; say what it cannot report.
            for unsupported in missing {
                self.inner
                    .events
                    .emit(&handle.task_ref(), unsupported.to_string());
            }
        }
        Ok(())
    }

    // === SignalTask ===

    async fn signal(&self, task_id: &str, signal: &str) -> Result<(), DriverError> {
        let handle = self.tracked(task_id)?;
        let name = signal.trim().to_ascii_uppercase();
        let (command, done) = match name.as_str() {
            "START" => (
                Some(control::Command::StartPool { pool: None }),
                "started all application pools",
            ),
            "STOP" => (
                Some(control::Command::StopPool { pool: None }),
                "stopped all application pools (the task keeps running)",
            ),
            "RECYCLE" | "SIGHUP" => (
                Some(control::Command::RecyclePool { pool: None }),
                "recycled all application pools",
            ),
            "SIGINT" | "SIGTERM" => (
                Some(control::Command::Shutdown {
                    grace: shutdown_grace(&handle, Duration::MAX),
                }),
                "stopping the site host",
            ),
            "SIGKILL" => (None, "killed the site host"),
            _ => return Err(DriverError::UnsupportedSignal(signal.to_owned())),
        };
        if !handle.is_running() {
            return Err(DriverError::NotRunning(task_id.to_owned()));
        }
        match command {
            Some(command) => {
                // Pool commands wait as long as the task's limits say (a recycle starts new
                // workers first); a shutdown request only needs to be taken.
                let client = match command {
                    control::Command::Shutdown { .. } => {
                        handle.control().clone().with_timeout(CONTROL_TIMEOUT)
                    }
                    _ => handle.control().clone(),
                };
                if let Err(source) = client.send(&command).await {
                    let fallback = process::parse_signal(&name)
                        .filter(|_| matches!(command, control::Command::Shutdown { .. }));
                    match fallback {
                        // The host handles SIGINT/SIGTERM gracefully itself.
                        Some(sig) if handle.host().signal(sig).is_ok() => {}
                        _ => {
                            return Err(DriverError::Control {
                                task_id: task_id.to_owned(),
                                source,
                            });
                        }
                    }
                }
            }
            None => kill_group(&handle)?,
        }
        self.inner
            .events
            .emit(&handle.task_ref(), format!("{done} (signal {name})"));
        Ok(())
    }

    // === InspectTask, TaskStats ===

    fn inspect(&self, task_id: &str) -> Result<pb::InspectTaskResponse, DriverError> {
        let handle = self.tracked(task_id)?;
        let snapshot = handle.snapshot();
        let state = handle.driver_state();
        let attributes = HashMap::from([
            ("host_pid".to_owned(), state.host_pid.to_string()),
            (
                "runtime_dir".to_owned(),
                state.runtime_dir.display().to_string(),
            ),
            ("site_name".to_owned(), state.spec.site_name.clone()),
        ]);
        Ok(pb::InspectTaskResponse {
            task: Some(pb::TaskStatus {
                id: handle.id().to_owned(),
                name: handle.task_ref().task_name,
                state: snapshot.state as i32,
                started_at: Some(snapshot.started_at.into()),
                // Nomad decodes both without a nil check: a running task reports Go's zero
                // time and a zero result, as Nomad's own drivers do.
                completed_at: Some(snapshot.completed_at.map_or(GO_ZERO_TIME, Into::into)),
                result: Some(snapshot.exit.map(|e| e.to_proto()).unwrap_or_default()),
            }),
            driver: Some(pb::TaskDriverStatus { attributes }),
            network_override: None,
        })
    }

    fn stats(
        &self,
        task_id: &str,
        interval: Duration,
    ) -> Result<ReceiverStream<Result<pb::TaskStatsResponse, Status>>, DriverError> {
        let handle = self.tracked(task_id)?;
        let mhz = self.inner.mhz_per_core;
        let events = self.inner.events.clone();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let control = handle
                .control()
                .clone()
                .with_timeout(Duration::from_secs(1));
            let host_pid = handle.host().pid;
            let mut workers: Vec<u32> = Vec::new();
            let mut sampler = Sampler::new();
            // A baseline, so that the first message already reports the interval's CPU use.
            sampler.sample(&[host_pid]);
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    _ = handle.wait() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                if let Ok(status) = control.status().await {
                    // Warnings that appear later (a worker started on demand) become task
                    // events too, each once.
                    for warning in handle.unseen_warnings(&status.warnings) {
                        events.emit(&handle.task_ref(), warning);
                    }
                    workers = status
                        .pools
                        .iter()
                        .flat_map(|p| p.worker_pids.iter().copied())
                        .collect();
                }
                let mut pids = Vec::with_capacity(workers.len() + 1);
                pids.push(host_pid);
                pids.extend(&workers);
                let (total, by_pid) = sampler.sample(&pids);
                let stats = pb::TaskStats {
                    id: handle.id().to_owned(),
                    timestamp: Some(SystemTime::now().into()),
                    agg_resource_usage: Some(total.to_proto(mhz)),
                    resource_usage_by_pid: by_pid
                        .into_iter()
                        .map(|(pid, usage)| (pid.to_string(), usage.to_proto(mhz)))
                        .collect(),
                };
                let message = pb::TaskStatsResponse { stats: Some(stats) };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    fn tracked(&self, task_id: &str) -> Result<Arc<TaskHandle>, DriverError> {
        self.inner
            .tasks
            .get(task_id)
            .ok_or_else(|| DriverError::UnknownTask(task_id.to_owned()))
    }
}

/// Sends SIGKILL to a task's host and its workers, if the host is still the same process.
fn kill_group(handle: &TaskHandle) -> Result<(), DriverError> {
    handle
        .host()
        .kill_group()
        .map_err(|source| DriverError::Io {
            what: "killing the site host",
            path: handle.driver_state().runtime_dir.clone(),
            source,
        })
}

/// Why StartTask failed when the host did not become ready; a host that exited tells its
/// reason in its exit record.
fn launch_error(error: control::launch::LaunchError, runtime_dir: &Path) -> DriverError {
    use control::launch::LaunchError;
    match error {
        LaunchError::Spawn { program, source } => DriverError::Io {
            what: "starting the site host",
            path: program,
            source,
        },
        LaunchError::Wait(source) => DriverError::Io {
            what: "waiting for the site host",
            path: runtime_dir.to_owned(),
            source,
        },
        LaunchError::NotReady { .. } => DriverError::HostStart(error.to_string()),
        LaunchError::Exited { status, record } => {
            let code = record.as_ref().map(|r| r.code).or(status.code());
            let reason = record.map_or_else(|| format!("site host {status}"), |r| r.reason);
            match code {
                Some(control::exit_code::CONFIG) => DriverError::HostConfig(reason),
                Some(control::exit_code::BIND) => DriverError::HostStart(reason),
                _ => DriverError::HostStart(format!(
                    "site host exited before it was ready ({status}): {reason}"
                )),
            }
        }
    }
}

/// Drain time for a graceful stop: the largest pool `shutdown_time_limit`, but within Nomad's
/// timeout minus some headroom (a tenth, at most 2 s), so the host can stop its workers and
/// write its exit record before the plugin's SIGKILL would come.
fn shutdown_grace(handle: &TaskHandle, timeout: Duration) -> Duration {
    let headroom = (timeout / 10).min(Duration::from_secs(2));
    let within = timeout.saturating_sub(headroom);
    handle
        .driver_state()
        .spec
        .pools
        .iter()
        .map(|p| p.shutdown_time_limit)
        .max()
        .map_or(within, |limit| limit.min(within))
}

/// Port labels → numbers: the group network's port mappings, then the task's own networks.
fn collect_ports(task: &pb::TaskConfig) -> Result<BTreeMap<String, u16>, DriverError> {
    let mut ports = BTreeMap::new();
    let resources = task.resources.as_ref();
    let mut add = |label: &str, value: i32, field: &str| -> Result<(), DriverError> {
        let port = u16::try_from(value)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                DriverError::BadRequest(format!(
                    "task.resources.{field}[{label:?}]: port {value} is out of range"
                ))
            })?;
        ports.entry(label.to_owned()).or_insert(port);
        Ok(())
    };
    for mapping in resources.map(|r| r.ports.as_slice()).unwrap_or_default() {
        add(&mapping.label, mapping.value, "ports")?;
    }
    let networks = resources
        .and_then(|r| r.allocated_resources.as_ref())
        .map(|a| a.networks.as_slice())
        .unwrap_or_default();
    for network in networks {
        for port in &network.reserved_ports {
            add(&port.label, port.value, "networks.reserved_ports")?;
        }
        for port in &network.dynamic_ports {
            add(&port.label, port.value, "networks.dynamic_ports")?;
        }
    }
    Ok(ports)
}

/// Address for bindings that name none: every address, as IIS's `*`.
fn default_ip(_task: &pb::TaskConfig) -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

fn path_or_null(path: &str) -> PathBuf {
    if path.is_empty() {
        PathBuf::from("/dev/null")
    } else {
        PathBuf::from(path)
    }
}

fn duration(d: Option<prost_types::Duration>) -> Option<Duration> {
    let d = d?;
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok()?;
    Some(Duration::new(secs, nanos))
}

// === impl BasePlugin ===

#[tonic::async_trait]
impl BasePlugin for IisDriver {
    async fn plugin_info(
        &self,
        _request: Request<base_pb::PluginInfoRequest>,
    ) -> RpcResult<base_pb::PluginInfoResponse> {
        Ok(Response::new(base_pb::PluginInfoResponse {
            r#type: base_pb::PluginType::Driver as i32,
            plugin_api_versions: vec![PLUGIN_API_VERSION.to_owned()],
            plugin_version: env!("CARGO_PKG_VERSION").to_owned(),
            name: PLUGIN_NAME.to_owned(),
        }))
    }

    async fn config_schema(
        &self,
        _request: Request<base_pb::ConfigSchemaRequest>,
    ) -> RpcResult<base_pb::ConfigSchemaResponse> {
        Ok(Response::new(base_pb::ConfigSchemaResponse {
            spec: Some(config::DriverConfig::spec()),
        }))
    }

    async fn set_config(
        &self,
        request: Request<base_pb::SetConfigRequest>,
    ) -> RpcResult<base_pb::SetConfigResponse> {
        let request = request.into_inner();
        let config = if request.msgpack_config.is_empty() {
            config::DriverConfig::default()
        } else {
            config::DriverConfig::from_msgpack(&request.msgpack_config)
                .map_err(|e| Status::from(DriverError::InvalidConfig(e.to_string())))?
        };
        let long_lived = request.nomad_config.is_some();
        if let Some(driver) = request.nomad_config.and_then(|c| c.driver) {
            tracing::debug!(
                min_port = driver.client_min_port,
                max_port = driver.client_max_port,
                "nomad client config received"
            );
        }
        tracing::info!(enabled = config.enabled, interval = ?config.fingerprint_interval, "driver configured");
        *self.inner.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        if long_lived {
            self.inner.nomad_configured.send_replace(true);
        }
        Ok(Response::new(base_pb::SetConfigResponse {}))
    }
}

// === impl Driver ===

#[tonic::async_trait]
impl Driver for IisDriver {
    async fn task_config_schema(
        &self,
        _request: Request<pb::TaskConfigSchemaRequest>,
    ) -> RpcResult<pb::TaskConfigSchemaResponse> {
        Ok(Response::new(pb::TaskConfigSchemaResponse {
            spec: Some(config::TaskConfig::spec()),
        }))
    }

    async fn capabilities(
        &self,
        _request: Request<pb::CapabilitiesRequest>,
    ) -> RpcResult<pb::CapabilitiesResponse> {
        Ok(Response::new(pb::CapabilitiesResponse {
            capabilities: Some(pb::DriverCapabilities {
                send_signals: true,
                exec: false,
                fs_isolation: pb::driver_capabilities::FsIsolation::None as i32,
                // Hosts bind on the node's own network; there is no network namespace to join.
                network_isolation_modes: vec![
                    pb::network_isolation_spec::NetworkIsolationMode::Host as i32,
                ],
                must_create_network: false,
                mount_configs: pb::driver_capabilities::MountConfigs::NoMounts as i32,
                remote_tasks: false,
                disable_log_collection: false,
                dynamic_workload_users: false,
            }),
        }))
    }

    type FingerprintStream = ReceiverStream<Result<pb::FingerprintResponse, Status>>;

    async fn fingerprint(
        &self,
        _request: Request<pb::FingerprintRequest>,
    ) -> RpcResult<Self::FingerprintStream> {
        let (tx, rx) = mpsc::channel(1);
        let driver = self.clone();
        tokio::spawn(async move {
            // Sent at once, then every fingerprint_interval, and as soon as the health changes
            // (checked every HEALTH_CHECK_PERIOD at most).
            let mut last: Option<(tokio::time::Instant, i32, String)> = None;
            loop {
                let message = driver.fingerprint_once();
                let interval = driver
                    .config()
                    .fingerprint_interval
                    .max(Duration::from_secs(1));
                let due = match &last {
                    None => true,
                    Some((sent_at, health, description)) => {
                        sent_at.elapsed() + Duration::from_millis(100) >= interval
                            || *health != message.health
                            || *description != message.health_description
                    }
                };
                if due {
                    last = Some((
                        tokio::time::Instant::now(),
                        message.health,
                        message.health_description.clone(),
                    ));
                    if tx.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
                // Nomad cancels the call to stop fingerprinting; the stream never ends by itself.
                tokio::select! {
                    () = tx.closed() => return,
                    () = tokio::time::sleep(interval.min(HEALTH_CHECK_PERIOD)) => {}
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn recover_task(
        &self,
        request: Request<pb::RecoverTaskRequest>,
    ) -> RpcResult<pb::RecoverTaskResponse> {
        let request = request.into_inner();
        self.recover(request.task_id, request.handle).await?;
        Ok(Response::new(pb::RecoverTaskResponse {}))
    }

    async fn start_task(
        &self,
        request: Request<pb::StartTaskRequest>,
    ) -> RpcResult<pb::StartTaskResponse> {
        let task = request
            .into_inner()
            .task
            .ok_or_else(|| DriverError::BadRequest("task: missing".into()))?;
        let task_id = task.id.clone();
        match self.start(task).await {
            Ok(response) => Ok(Response::new(response)),
            Err(e) => {
                tracing::warn!(task_id, error = %e, "start task failed");
                Err(e.into())
            }
        }
    }

    async fn wait_task(
        &self,
        request: Request<pb::WaitTaskRequest>,
    ) -> RpcResult<pb::WaitTaskResponse> {
        Ok(Response::new(
            self.wait(&request.into_inner().task_id).await?,
        ))
    }

    async fn stop_task(
        &self,
        request: Request<pb::StopTaskRequest>,
    ) -> RpcResult<pb::StopTaskResponse> {
        let request = request.into_inner();
        let timeout = duration(request.timeout)
            .unwrap_or(DEFAULT_STOP_TIMEOUT)
            .min(MAX_STOP_TIMEOUT);
        self.stop(&request.task_id, timeout, &request.signal)
            .await?;
        Ok(Response::new(pb::StopTaskResponse {}))
    }

    async fn destroy_task(
        &self,
        request: Request<pb::DestroyTaskRequest>,
    ) -> RpcResult<pb::DestroyTaskResponse> {
        let request = request.into_inner();
        self.destroy(&request.task_id, request.force).await?;
        Ok(Response::new(pb::DestroyTaskResponse {}))
    }

    async fn inspect_task(
        &self,
        request: Request<pb::InspectTaskRequest>,
    ) -> RpcResult<pb::InspectTaskResponse> {
        Ok(Response::new(self.inspect(&request.into_inner().task_id)?))
    }

    type TaskStatsStream = ReceiverStream<Result<pb::TaskStatsResponse, Status>>;

    async fn task_stats(
        &self,
        request: Request<pb::TaskStatsRequest>,
    ) -> RpcResult<Self::TaskStatsStream> {
        let request = request.into_inner();
        let interval = duration(request.collection_interval)
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_STATS_INTERVAL)
            .max(MIN_STATS_INTERVAL);
        Ok(Response::new(self.stats(&request.task_id, interval)?))
    }

    type TaskEventsStream = BoxStream<pb::DriverTaskEvent>;

    async fn task_events(
        &self,
        _request: Request<pb::TaskEventsRequest>,
    ) -> RpcResult<Self::TaskEventsStream> {
        let mut events = self.inner.events.subscribe();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    () = tx.closed() => return,
                    event = events.recv() => event,
                };
                match event {
                    Ok(event) => {
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "task events subscriber fell behind");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn signal_task(
        &self,
        request: Request<pb::SignalTaskRequest>,
    ) -> RpcResult<pb::SignalTaskResponse> {
        let request = request.into_inner();
        self.signal(&request.task_id, &request.signal).await?;
        Ok(Response::new(pb::SignalTaskResponse {}))
    }

    async fn exec_task(
        &self,
        _request: Request<pb::ExecTaskRequest>,
    ) -> RpcResult<pb::ExecTaskResponse> {
        Err(DriverError::Unsupported("exec").into())
    }

    type ExecTaskStreamingStream = BoxStream<pb::ExecTaskStreamingResponse>;

    async fn exec_task_streaming(
        &self,
        _request: Request<tonic::Streaming<pb::ExecTaskStreamingRequest>>,
    ) -> RpcResult<Self::ExecTaskStreamingStream> {
        Err(DriverError::Unsupported("exec").into())
    }

    async fn create_network(
        &self,
        _request: Request<pb::CreateNetworkRequest>,
    ) -> RpcResult<pb::CreateNetworkResponse> {
        Err(DriverError::Unsupported("network creation").into())
    }

    async fn destroy_network(
        &self,
        _request: Request<pb::DestroyNetworkRequest>,
    ) -> RpcResult<pb::DestroyNetworkResponse> {
        Err(DriverError::Unsupported("network creation").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_mappings_and_networks() {
        let task = pb::TaskConfig {
            resources: Some(pb::Resources {
                ports: vec![pb::PortMapping {
                    label: "http".into(),
                    value: 24001,
                    to: 80,
                    host_ip: "127.0.0.1".into(),
                }],
                allocated_resources: Some(pb::AllocatedTaskResources {
                    networks: vec![pb::NetworkResource {
                        reserved_ports: vec![pb::NetworkPort {
                            label: "admin".into(),
                            value: 8081,
                        }],
                        dynamic_ports: vec![pb::NetworkPort {
                            label: "http".into(),
                            value: 1,
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ports = collect_ports(&task).unwrap();
        assert_eq!(ports["http"], 24001);
        assert_eq!(ports["admin"], 8081);
        let bad = pb::TaskConfig {
            resources: Some(pb::Resources {
                ports: vec![pb::PortMapping {
                    label: "x".into(),
                    value: 70000,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = collect_ports(&bad).unwrap_err().to_string();
        assert!(err.contains("\"x\"") && err.contains("70000"), "{err}");
    }

    fn handle_with_pool_limit(limit: Option<Duration>) -> Arc<TaskHandle> {
        let pools = limit
            .map(|limit| control::PoolSpec {
                name: "default".into(),
                full_name: "nomad-a-web".into(),
                start_mode: control::StartMode::OnDemand,
                idle_timeout: Duration::ZERO,
                periodic_restart: Duration::ZERO,
                start_time_limit: Duration::from_secs(90),
                shutdown_time_limit: limit,
                disable_overlapped_recycle: false,
                service_unavailable_response: control::UnavailableResponse::HttpLevel,
                queue_length: 1000,
                identity: None,
            })
            .into_iter()
            .collect();
        TaskHandle::new(
            pb::TaskConfig::default(),
            crate::test_support::driver_state(1, 0, Path::new("/run/x"), pools),
        )
    }

    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Answers every control connection on `socket` with `status`, as a host would.
    fn fake_host(socket: &Path, status: control::HostStatus) -> tokio::task::JoinHandle<()> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                if BufReader::new(read).read_line(&mut line).await.is_err() {
                    continue;
                }
                let reply = control::Reply::Ok {
                    status: status.clone(),
                };
                let mut json = serde_json::to_vec(&reply).unwrap();
                json.push(b'\n');
                let _ = write.write_all(&json).await;
            }
        })
    }

    /// TaskStats reports the host and every worker the host's status names, each under its
    /// pid, and their sum; host warnings seen on the way become task events once.
    #[tokio::test]
    async fn stats_cover_the_host_and_every_worker() {
        use tokio_stream::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let sleep = || {
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap()
        };
        let host = KillOnDrop(sleep());
        let workers = [KillOnDrop(sleep()), KillOnDrop(sleep())];
        let worker_pids: Vec<u32> = workers.iter().map(|w| w.0.id()).collect();
        let pool_status = |name: &str, pids: Vec<u32>| control::PoolStatus {
            name: name.into(),
            full_name: format!("nomad-alloc-web-{name}"),
            state: control::PoolState::Started,
            worker_pids: pids,
            recycles: 0,
            workers: vec![],
            worker_starts: 1,
            worker_failures: 0,
            last_worker_exit: None,
            is_static: false,
        };
        let status = control::HostStatus {
            pid: host.0.id(),
            site_name: "nomad-alloc-web".into(),
            listening: vec![],
            pools: vec![
                pool_status("default", vec![worker_pids[0]]),
                pool_status("api", vec![worker_pids[1]]),
            ],
            dropped_log_lines: 0,
            protocol: control::PROTOCOL_VERSION,
            applications: vec![],
            warnings: vec![
                "application /api: hostingModel=\"inprocess\" runs out of process".into(),
            ],
        };
        let server = fake_host(&dir.path().join(control::CONTROL_SOCKET), status);
        let driver = IisDriver::new(DriverOptions::new(
            dir.path().join("rt"),
            HostCommand {
                program: "/bin/false".into(),
                args: vec![],
            },
        ));
        let mut events = driver.events().subscribe();
        let host_identity = ProcessIdentity::of(host.0.id()).unwrap();
        let state = crate::test_support::driver_state(
            host_identity.pid,
            host_identity.start_time,
            dir.path(),
            vec![],
        );
        let handle = TaskHandle::new(pb::TaskConfig::default(), state);
        assert!(driver.inner.tasks.insert_new(Arc::clone(&handle)));
        let mut stream = driver
            .stats(handle.id(), Duration::from_millis(100))
            .unwrap();
        let mut last = None;
        for _ in 0..3 {
            let message = stream.next().await.unwrap().unwrap();
            last = message.stats;
        }
        let stats = last.unwrap();
        let mut pids: Vec<String> = stats.resource_usage_by_pid.keys().cloned().collect();
        pids.sort();
        let mut expected: Vec<String> = [host.0.id(), worker_pids[0], worker_pids[1]]
            .iter()
            .map(u32::to_string)
            .collect();
        expected.sort();
        assert_eq!(pids, expected);
        let rss = |u: &pb::TaskResourceUsage| u.memory.as_ref().unwrap().rss;
        let sum: u64 = stats.resource_usage_by_pid.values().map(rss).sum();
        assert!(sum > 0);
        assert_eq!(rss(stats.agg_resource_usage.as_ref().unwrap()), sum);
        let event = events.recv().await.unwrap();
        assert!(event.message.contains("inprocess"), "{}", event.message);
        assert!(
            events.try_recv().is_err(),
            "the same warning is sent once, not with every sample"
        );
        server.abort();
    }

    /// A host that exited with `POOL_FAILED`: WaitTask's result carries its code and the exit
    /// record's reason (naming the pool), and a task event says it.
    #[tokio::test]
    async fn wait_reports_a_failed_pool_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let reason = "pool api: rapid-fail protection: 5 worker failures within 5m; last: worker 4242 of /api exited with code 3";
        control::files::write_exit_record(
            dir.path(),
            &control::ExitRecord {
                code: control::exit_code::POOL_FAILED,
                reason: reason.into(),
            },
        )
        .unwrap();
        // The pid of a child that is already gone: the watcher finds the host exited.
        let mut gone = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = gone.id();
        gone.wait().unwrap();
        let driver = IisDriver::new(DriverOptions::new(
            dir.path().join("rt"),
            HostCommand {
                program: "/bin/false".into(),
                args: vec![],
            },
        ));
        let mut events = driver.events().subscribe();
        let state = crate::test_support::driver_state(pid, 1, dir.path(), vec![]);
        let handle = TaskHandle::new(pb::TaskConfig::default(), state);
        assert!(driver.inner.tasks.insert_new(Arc::clone(&handle)));
        handle.spawn_pid_watcher(driver.events().clone());
        let response = driver.wait(handle.id()).await.unwrap();
        assert_eq!(
            response.result.map(|r| (r.exit_code, r.signal)),
            Some((control::exit_code::POOL_FAILED, 0))
        );
        assert_eq!(response.err, reason);
        let event = events.recv().await.unwrap();
        assert!(
            event.message.contains("rapid-fail") && event.message.contains(reason),
            "{}",
            event.message
        );
    }

    #[test]
    fn shutdown_grace_leaves_headroom_within_nomads_timeout() {
        let secs = Duration::from_secs;
        let handle = handle_with_pool_limit(Some(secs(3)));
        assert_eq!(shutdown_grace(&handle, secs(5)), secs(3));
        assert_eq!(
            shutdown_grace(&handle, secs(2)),
            Duration::from_millis(1800)
        );
        assert_eq!(shutdown_grace(&handle, Duration::MAX), secs(3));
        let handle = handle_with_pool_limit(Some(secs(90)));
        assert_eq!(shutdown_grace(&handle, secs(60)), secs(58));
        let handle = handle_with_pool_limit(None);
        assert_eq!(
            shutdown_grace(&handle, secs(5)),
            Duration::from_millis(4500)
        );
    }
}
