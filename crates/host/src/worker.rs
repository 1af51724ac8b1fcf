//! One worker process: how an application's worker is configured (the job's `process {}`
//! block or the folder's `web.config`), started on a loopback port with the environment IIS
//! gives it, checked for readiness, watched until it exits, and stopped.
//!
//! - **Port**: the host binds `127.0.0.1:0`, reads the port and closes the socket, as the
//!   ASP.NET Core Module does; a worker that then cannot bind it fails its start and the next
//!   attempt gets a new port.
//! - **Ready** means it accepts a TCP connection on its port. A worker that exits first or
//!   is not ready within the start time limit is killed; that attempt is a failed start.
//! - **Process**: in the host's process group (the driver sweeps that group when the host
//!   has exited, taking anything a worker started along), working folder the application
//!   folder, stdin `/dev/null`, SIGKILL when the host dies (`os`), the pool's identity when
//!   the host is root. stdout and stderr are read line by line into the host's
//!   stdout and stderr sinks, and with `stdoutLogEnabled` also into
//!   `<stdoutLogFile>_<yyyyMMddHHmmss>_<pid>.log`.
//! - **Stop**: SIGTERM, SIGKILL after the shutdown time limit.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control::{ApplicationKind, BindingKind, HostSpec, WorkerStatus};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, watch};

use crate::log_sink::LogSink;
use crate::proxy::UpstreamTarget;

/// How long a worker's request may take when nothing says otherwise (both modules' default).
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Start attempts after the first one when nothing says otherwise (the ASP.NET Core Module's
/// default `startupRetryCount`).
const DEFAULT_STARTUP_RETRIES: u32 = 2;
/// How often readiness is probed while a worker starts.
const READY_PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// Longest output line passed on whole; longer ones are cut into pieces of this size.
const MAX_LINE: usize = 16 * 1024;

/// Everything needed to start one application's workers; rebuilt on every recycle.
#[derive(Debug, Clone)]
pub(crate) struct WorkerConfig {
    /// What serves the application (`Process`, `AspNetCore`, `HttpPlatform`).
    pub kind: ApplicationKind,
    /// Normalised alias (`ASPNETCORE_APPL_PATH`).
    pub alias: String,
    /// The application folder: working folder and base of relative paths.
    pub app_dir: PathBuf,
    /// Program and arguments, resolved for a port at each start.
    pub command: CommandLine,
    /// The task's environment (Nomad's variables, `TMP`/`TEMP`).
    pub task_env: Vec<(String, String)>,
    /// The application's own variables (`process.env`, `<environmentVariables>`).
    pub app_env: Vec<(String, String)>,
    /// The first https port of the site, for `ASPNETCORE_ANCM_HTTPS_PORT`.
    pub https_port: Option<u16>,
    /// A worker must accept connections within this.
    pub start_time_limit: Duration,
    /// A stopping worker gets this long after SIGTERM.
    pub shutdown_time_limit: Duration,
    /// A request to the worker gets this long (504 after).
    pub request_timeout: Duration,
    /// The module's own rapid-fail limit: failures per minute.
    pub rapid_fails_per_minute: Option<u32>,
    /// Start attempts after the first one.
    pub startup_retry_count: u32,
    /// `stdoutLogFile` prefix (absolute) when `stdoutLogEnabled`.
    pub stdout_log: Option<PathBuf>,
    /// User and group to run as (only applied when the host is root).
    pub identity: Option<(u32, u32)>,
}

/// Program, arguments and the application's variables of one worker.
type LaunchLine = (PathBuf, Vec<String>, Vec<(String, String)>);

/// How a worker's command line is made.
#[derive(Debug, Clone)]
pub(crate) enum CommandLine {
    /// The job's `process {}` block: `%PORT%`-style placeholders replaced in the arguments.
    Explicit {
        /// Program as written (relative to the application folder when it has a `/`).
        program: String,
        /// Arguments with placeholders.
        args: Vec<String>,
    },
    /// A `web.config` worker definition, resolved by `webconfig::resolve_command`.
    WebConfig(Box<webconfig::WorkerDefinition>),
}

/// A worker configuration problem, naming the field or file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{field}: {detail}")]
pub(crate) struct ConfigError {
    /// `application[0].process`, `application[1].path (web.config)` …
    pub field: String,
    /// What is wrong.
    pub detail: String,
}

impl WorkerConfig {
    /// The worker configuration of application `index`, or `None` when it serves static files.
    /// Reads the folder's `web.config` (so a recycle after an upload sees the new one). Also
    /// returns warnings for the operator.
    pub fn load(
        spec: &HostSpec,
        index: usize,
    ) -> Result<Option<(WorkerConfig, Vec<String>)>, ConfigError> {
        let app = &spec.applications[index];
        let pool = spec.pools.iter().find(|p| p.name == app.pool);
        let web_config_path = app.path.join("web.config");
        let web_config = match std::fs::read_to_string(&web_config_path) {
            Ok(text) => webconfig::parse(&text).map_err(|e| ConfigError {
                field: format!("application[{index}].path"),
                detail: format!("{}: {e}", web_config_path.display()),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(ConfigError {
                    field: format!("application[{index}].path"),
                    detail: format!(
                        "cannot read {}: {}",
                        web_config_path.display(),
                        crate::error::describe_io(&e)
                    ),
                });
            }
        };
        let mut warnings = Vec::new();
        let pool_start = pool.map_or(Duration::from_secs(90), |p| p.start_time_limit);
        let pool_shutdown = pool.map_or(Duration::from_secs(90), |p| p.shutdown_time_limit);
        let base = |kind, command| WorkerConfig {
            kind,
            alias: crate::plan::normalised_alias(&app.alias),
            app_dir: app.path.clone(),
            command,
            task_env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            app_env: Vec::new(),
            https_port: spec
                .bindings
                .iter()
                .find(|b| b.kind == BindingKind::Https)
                .map(|b| b.port),
            start_time_limit: pool_start,
            shutdown_time_limit: pool_shutdown,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            rapid_fails_per_minute: None,
            startup_retry_count: DEFAULT_STARTUP_RETRIES,
            stdout_log: None,
            identity: pool
                .and_then(|p| p.identity.as_ref())
                .map(|i| (i.uid, i.gid)),
        };
        let config = match (&app.process, web_config) {
            (Some(_), Some(definition)) => {
                return Err(ConfigError {
                    field: format!("application[{index}].process"),
                    detail: format!(
                        "the application folder's web.config already names a worker \
                         (<{}>); use one or the other",
                        definition.module.element()
                    ),
                });
            }
            (None, None) => return Ok(None),
            (Some(process), None) => {
                let mut config = base(
                    ApplicationKind::Process,
                    CommandLine::Explicit {
                        program: process.command.clone(),
                        args: process.args.clone(),
                    },
                );
                config.app_env = process
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                config
            }
            (None, Some(definition)) => {
                let kind = match definition.module {
                    webconfig::Module::AspNetCore => ApplicationKind::AspNetCore,
                    webconfig::Module::HttpPlatform => ApplicationKind::HttpPlatform,
                };
                // Resolved once now so a development web.config (%LAUNCHER_PATH%) or a missing
                // program fails the start (or the recycle) with a clear message.
                let task_env = |name: &str| spec.env.get(name).cloned();
                webconfig::resolve_command_in(&definition, &app.path, 0, &task_env).map_err(
                    |e| ConfigError {
                        field: format!("application[{index}].path"),
                        detail: format!("{}: {e}", web_config_path.display()),
                    },
                )?;
                if definition.inprocess {
                    warnings.push(format!(
                        "application[{index}] ({}): hostingModel=\"inprocess\" runs out of \
                         process on Linux",
                        app.alias
                    ));
                }
                let mut config = base(kind, CommandLine::WebConfig(Box::new(definition.clone())));
                config.app_env = definition.env.clone();
                if !definition.startup_time_limit.is_zero() {
                    config.start_time_limit = pool_start.min(definition.startup_time_limit);
                }
                if !definition.shutdown_time_limit.is_zero() {
                    config.shutdown_time_limit = pool_shutdown.min(definition.shutdown_time_limit);
                }
                if !definition.request_timeout.is_zero() {
                    config.request_timeout = definition.request_timeout;
                }
                config.rapid_fails_per_minute = (definition.rapid_fails_per_minute > 0)
                    .then_some(definition.rapid_fails_per_minute);
                config.startup_retry_count = definition.startup_retry_count;
                if definition.stdout_log_enabled {
                    let file = definition.stdout_log_file.replace('\\', "/");
                    let file = file.trim_start_matches("./");
                    config.stdout_log = Some(app.path.join(file));
                }
                config
            }
        };
        Ok(Some((config, warnings)))
    }

    /// Program, arguments and application variables for a worker on `port`.
    fn command_for(&self, port: u16) -> Result<LaunchLine, String> {
        match &self.command {
            CommandLine::Explicit { program, args } => {
                let program = if program.contains('/') && !program.starts_with('/') {
                    self.app_dir.join(program.trim_start_matches("./"))
                } else {
                    PathBuf::from(program)
                };
                let port = port.to_string();
                let args = args
                    .iter()
                    .map(|a| {
                        a.replace("%PORT%", &port)
                            .replace("%HTTP_PLATFORM_PORT%", &port)
                            .replace("%ASPNETCORE_PORT%", &port)
                    })
                    .collect();
                Ok((program, args, self.app_env.clone()))
            }
            CommandLine::WebConfig(definition) => {
                // `<environmentVariables>` come back with the port placeholders substituted.
                let task_env = |name: &str| {
                    self.task_env
                        .iter()
                        .find(|(key, _)| key.as_str() == name)
                        .map(|(_, value)| value.clone())
                };
                webconfig::resolve_command_in(definition, &self.app_dir, port, &task_env)
                    .map(|c| (c.program, c.args, c.env))
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// The worker's environment: the task's, the application's, then what the module sets
    /// (which wins, as with IIS).
    fn environment(
        &self,
        app_env: &[(String, String)],
        port: u16,
        token: Option<&str>,
    ) -> Vec<(String, String)> {
        let mut env = self.task_env.clone();
        env.extend(app_env.iter().cloned());
        let port = port.to_string();
        let mut set = |name: &str, value: String| env.push((name.to_string(), value));
        set("PORT", port.clone());
        match self.kind {
            ApplicationKind::AspNetCore => {
                set("ASPNETCORE_PORT", port.clone());
                set("ASPNETCORE_APPL_PATH", self.alias.clone());
                let mut physical = self.app_dir.display().to_string();
                if !physical.ends_with('/') {
                    physical.push('/');
                }
                set("ASPNETCORE_IIS_PHYSICAL_PATH", physical);
                if let Some(token) = token {
                    set("ASPNETCORE_TOKEN", token.to_string());
                }
                set("ASPNETCORE_IIS_HTTPAUTH", "anonymous;".into());
                set("ASPNETCORE_IIS_WEBSOCKETS_SUPPORTED", "true".into());
                if let Some(https) = self.https_port {
                    set("ASPNETCORE_ANCM_HTTPS_PORT", https.to_string());
                }
                const INTEGRATION: &str = "Microsoft.AspNetCore.Server.IISIntegration";
                let existing = app_env
                    .iter()
                    .chain(self.task_env.iter())
                    .find(|(k, _)| k.eq_ignore_ascii_case("ASPNETCORE_HOSTINGSTARTUPASSEMBLIES"))
                    .map(|(_, v)| v.clone())
                    .filter(|v| !v.is_empty());
                set(
                    "ASPNETCORE_HOSTINGSTARTUPASSEMBLIES",
                    match existing {
                        Some(v) if v.contains(INTEGRATION) => v,
                        Some(v) => format!("{v};{INTEGRATION}"),
                        None => INTEGRATION.to_string(),
                    },
                );
            }
            ApplicationKind::HttpPlatform => {
                set("HTTP_PLATFORM_PORT", port.clone());
                set("HTTP_PLATFORM_APPL_PATH", self.alias.clone());
            }
            ApplicationKind::Process | ApplicationKind::Static => {}
        }
        env
    }
}

/// Starts worker processes from one thread of its own, started on first use and kept while
/// any pool of the host lives.
///
/// Why not the runtime thread: `std`'s spawn blocks the calling thread from `fork` until the
/// child has called `exec` (it waits for the close-on-exec error channel), and on a busy CPU
/// that is milliseconds in which a current-thread runtime serves no request — each recycle and
/// each OnDemand start stalled every connection of the host. Why not tokio's blocking pool:
/// `PR_SET_PDEATHSIG` (see `os::die_with_host`) fires when the *thread* that forked the child
/// exits, and blocking-pool threads exit when idle, which would kill running workers. This
/// thread exits only when the last pool (and so every worker it manages) is gone.
#[derive(Debug, Clone)]
pub(crate) struct Spawner {
    inner: Arc<SpawnerInner>,
}

#[derive(Debug)]
struct SpawnerInner {
    /// The runtime the children's pipes and exit notifications are registered with.
    runtime: tokio::runtime::Handle,
    /// The spawning thread's queue, once it has been started.
    queue: std::sync::OnceLock<std::sync::mpsc::Sender<SpawnJob>>,
}

/// A command to start and where its child (or the error) goes.
type SpawnJob = (
    tokio::process::Command,
    tokio::sync::oneshot::Sender<std::io::Result<tokio::process::Child>>,
);

impl Spawner {
    /// A spawner registering children with `runtime`; its thread starts with the first worker.
    pub fn new(runtime: tokio::runtime::Handle) -> Self {
        Self {
            inner: Arc::new(SpawnerInner {
                runtime,
                queue: std::sync::OnceLock::new(),
            }),
        }
    }

    fn queue(&self) -> std::io::Result<&std::sync::mpsc::Sender<SpawnJob>> {
        if let Some(queue) = self.inner.queue.get() {
            return Ok(queue);
        }
        let (sender, receiver) = std::sync::mpsc::channel::<SpawnJob>();
        let runtime = self.inner.runtime.clone();
        std::thread::Builder::new()
            .name("worker-spawner".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                // Ends when every sender (every clone of the spawner) is gone.
                for (mut command, reply) in receiver {
                    let _ = reply.send(command.spawn());
                }
            })?;
        // Two first workers at once: the loser's thread ends at once (its sender is dropped).
        let _ = self.inner.queue.set(sender);
        self.inner
            .queue
            .get()
            .ok_or_else(|| std::io::Error::other("the worker spawner did not start"))
    }

    /// Starts `command` on the spawner thread.
    pub async fn spawn(
        &self,
        command: tokio::process::Command,
    ) -> std::io::Result<tokio::process::Child> {
        let gone = || std::io::Error::other("the worker spawner thread has stopped");
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue()?.send((command, reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Where a worker's output goes.
#[derive(Debug, Clone)]
pub(crate) struct OutputSinks {
    /// The task's stdout (shared with the access log).
    pub stdout: Arc<LogSink>,
    /// The task's stderr (shared with the host's notices).
    pub stderr: Arc<LogSink>,
}

/// A running (or exited) worker process.
#[derive(Debug)]
pub(crate) struct Worker {
    /// Its pid.
    pub pid: u32,
    /// Where the proxy sends its requests.
    pub target: UpstreamTarget,
    /// Alias of its application.
    pub alias: String,
    /// When it was started.
    started_at_ms: u64,
    /// How it exited, once it has: `worker 12 of /api exited with code 3`.
    exit: watch::Receiver<Option<Arc<str>>>,
    /// Set when the host stops it, so its exit is not a failure.
    stopping: AtomicBool,
    /// Requests being forwarded to it; a retiring worker is stopped when this reaches zero.
    in_flight: AtomicUsize,
    /// Notified when `in_flight` reaches zero.
    idle: Notify,
}

/// Why a start attempt failed; counts as a worker failure.
#[derive(Debug, Clone)]
pub(crate) struct StartFailure(pub String);

impl Worker {
    /// Starts one worker and waits until it accepts connections, exits, or the start time limit
    /// passes (then it is killed).
    pub async fn start(
        config: &WorkerConfig,
        sinks: &OutputSinks,
        spawner: &Spawner,
    ) -> Result<Arc<Worker>, StartFailure> {
        let port = pick_port()
            .map_err(|e| StartFailure(format!("cannot pick a port for {}: {e}", config.alias)))?;
        let token = matches!(config.kind, ApplicationKind::AspNetCore).then(random_token);
        let (program, args, app_env) = config
            .command_for(port)
            .map_err(|e| StartFailure(format!("{}: {e}", config.alias)))?;
        let mut command = tokio::process::Command::new(&program);
        command
            .args(&args)
            .current_dir(&config.app_dir)
            .envs(config.environment(&app_env, port, token.as_deref()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some((uid, gid)) = config.identity
            && nix::unistd::geteuid().is_root()
        {
            // std drops supplementary groups (setgroups) before setgid/setuid as root.
            command.uid(uid).gid(gid);
        }
        crate::os::die_with_host(&mut command);
        let mut child = spawner.spawn(command).await.map_err(|e| {
            StartFailure(format!(
                "worker of {} cannot start {}: {}",
                config.alias,
                program.display(),
                crate::error::describe_io(&e)
            ))
        })?;
        let pid = child.id().unwrap_or(0);
        let log_file = match &config.stdout_log {
            Some(prefix) => open_stdout_log(prefix, pid).await,
            None => None,
        };
        let log_file = log_file.map(|f| Arc::new(tokio::sync::Mutex::new(f)));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(out, sinks.stdout.clone(), log_file.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(err, sinks.stderr.clone(), log_file));
        }
        let (exit_tx, exit) = watch::channel(None);
        let alias = config.alias.clone();
        tokio::spawn(async move {
            let text = match child.wait().await {
                Ok(status) => describe_exit(pid, &alias, status),
                Err(e) => format!("worker {pid} of {alias}: cannot wait for it: {e}"),
            };
            let _ = exit_tx.send(Some(text.into()));
        });
        let worker = Arc::new(Worker {
            pid,
            target: UpstreamTarget {
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                token: token.map(Arc::from),
                request_timeout: config.request_timeout,
            },
            alias: config.alias.clone(),
            started_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            exit,
            stopping: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        });
        match worker.wait_ready(config.start_time_limit).await {
            Ok(()) => Ok(worker),
            Err(reason) => {
                worker.kill();
                Err(StartFailure(reason))
            }
        }
    }

    async fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut exit = self.exit.clone();
        loop {
            if let Some(text) = exit.borrow_and_update().clone() {
                return Err(format!("{text} before accepting connections"));
            }
            if tokio::net::TcpStream::connect(self.target.addr)
                .await
                .is_ok()
            {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "worker {} of {} did not accept connections on port {} within {:?} (start \
                     time limit); killed",
                    self.pid,
                    self.alias,
                    self.target.addr.port(),
                    limit
                ));
            }
            let pause = READY_PROBE_INTERVAL.min(deadline - now);
            tokio::select! {
                _ = exit.changed() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// How it exited, if it has.
    pub fn exit_text(&self) -> Option<Arc<str>> {
        self.exit.borrow().clone()
    }

    /// Whether it has exited.
    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Waits for its exit and returns how it exited.
    pub async fn exited(&self) -> Arc<str> {
        let mut exit = self.exit.clone();
        match exit.wait_for(|e| e.is_some()).await {
            Ok(text) => text.clone().unwrap_or_else(|| Arc::from("worker exited")),
            Err(_) => Arc::from(format!("worker {} of {} exited", self.pid, self.alias)),
        }
    }

    /// Whether the host is stopping it (so its exit is expected).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Its status line.
    pub fn status(&self) -> WorkerStatus {
        WorkerStatus {
            pid: self.pid,
            application: self.alias.clone(),
            port: self.target.addr.port(),
            started_at_ms: self.started_at_ms,
        }
    }

    /// Counts one forwarded request until the returned guard drops.
    pub fn lease(self: &Arc<Self>) -> WorkerLease {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        WorkerLease(self.clone())
    }

    /// Waits until no request is forwarded to it, at most `limit`.
    pub async fn drain(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let idle = self.idle.notified();
                if self.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await;
    }

    fn signal(&self, signal: Signal) {
        if self.pid == 0 {
            return;
        }
        let _ = nix::sys::signal::kill(Pid::from_raw(self.pid as i32), signal);
    }

    /// SIGTERM, then SIGKILL when it has not exited within `limit`; returns how it exited.
    pub async fn stop(&self, limit: Duration) -> Arc<str> {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(text) = self.exit_text() {
            return text;
        }
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(limit, self.exited()).await {
            Ok(text) => text,
            Err(_) => {
                self.signal(Signal::SIGKILL);
                let text = self.exited().await;
                Arc::from(format!(
                    "{text} (killed after the shutdown time limit of {limit:?})"
                ))
            }
        }
    }

    /// SIGKILL at once (host exit, failed start).
    pub fn kill(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.signal(Signal::SIGKILL);
    }
}

/// One request forwarded to a worker; keeps it from being stopped by a recycle.
#[derive(Debug)]
pub(crate) struct WorkerLease(Arc<Worker>);

impl WorkerLease {
    /// The worker.
    pub fn worker(&self) -> &Arc<Worker> {
        &self.0
    }
}

impl Drop for WorkerLease {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

fn describe_exit(pid: u32, alias: &str, status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("worker {pid} of {alias} exited with code {code}"),
        (None, Some(signal)) => {
            let name = Signal::try_from(signal)
                .map_or_else(|_| signal.to_string(), |s| s.as_str().to_string());
            format!("worker {pid} of {alias} was killed by signal {name}")
        }
        (None, None) => format!("worker {pid} of {alias} exited ({status})"),
    }
}

/// A free loopback port: bound, read, released (the worker binds it next).
fn pick_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// 32 random hex digits for `ASPNETCORE_TOKEN`.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if read.is_err() {
        // Not secret then, but still unique per worker: time, pid and a counter.
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mixed = nanos
            ^ (u128::from(std::process::id()) << 64)
            ^ (COUNTER.fetch_add(1, Ordering::Relaxed) as u128) << 96;
        bytes = mixed.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens `<prefix>_<yyyyMMddHHmmss>_<pid>.log`, creating its folder, as the ASP.NET Core Module
/// names its stdout logs. A file that cannot be opened is reported and skipped.
async fn open_stdout_log(prefix: &Path, pid: u32) -> Option<tokio::fs::File> {
    let format = time::macros::format_description!("[year][month][day][hour][minute][second]");
    let stamp = time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default();
    let name = format!(
        "{}_{stamp}_{pid}.log",
        prefix
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let path = prefix.with_file_name(name);
    if let Some(folder) = path.parent() {
        let _ = tokio::fs::create_dir_all(folder).await;
    }
    match tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
    {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot open the stdout log");
            None
        }
    }
}

/// Copies a worker's output line by line into `sink` (and the stdout log file).
async fn pump(
    output: impl AsyncRead + Unpin,
    sink: Arc<LogSink>,
    file: Option<Arc<tokio::sync::Mutex<tokio::fs::File>>>,
) {
    let mut reader = BufReader::with_capacity(MAX_LINE, output);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        // Reads up to a newline, or a full buffer for an overlong line.
        let done = loop {
            let available = match reader.fill_buf().await {
                Ok(bytes) => bytes,
                Err(_) => break true,
            };
            if available.is_empty() {
                break true;
            }
            let room = MAX_LINE - line.len();
            match available.iter().take(room).position(|&b| b == b'\n') {
                Some(end) => {
                    line.extend_from_slice(&available[..=end]);
                    reader.consume(end + 1);
                    break false;
                }
                None => {
                    let take = available.len().min(room);
                    line.extend_from_slice(&available[..take]);
                    reader.consume(take);
                    if line.len() >= MAX_LINE {
                        break false;
                    }
                }
            }
        };
        if !line.is_empty() {
            if let Some(file) = &file {
                let mut file = file.lock().await;
                let _ = file.write_all(&line).await;
                if line.last() != Some(&b'\n') {
                    let _ = file.write_all(b"\n").await;
                }
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            sink.write_with(|out| out.push_str(text));
        }
        if done {
            if let Some(file) = &file {
                let _ = file.lock().await.flush().await;
            }
            return;
        }
    }
}
