//! `nomad_iis run JOBFILE`: runs the `iis` tasks of a Nomad job file on this machine, without
//! Nomad, in the same site host the driver uses.
//!
//! # Layout
//! - [`jobfile`]: reads the job file (or a bare `config {}` body) into a plan.
//! - `supervise`: hosts are children of `run`; start, wait until ready, stop.
//! - [`registry`]: the running tasks as the Management API sees them.
//! - this file: port allocation, config decoding exactly as the plugin does it (hcldec →
//!   cty msgpack → [`config::TaskConfig`]), the runtime folders, the console output, Ctrl-C.
//!
//! # Errors
//! Everything returns `anyhow` errors with context for the console; one bad task stops the run
//! before any host starts, so nothing is half-started.

#![deny(unsafe_code)]

pub mod jobfile;
pub mod registry;
mod supervise;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use config::{DriverConfig, ResolveContext, TaskConfig};
use control::{BindingKind, HostSpec};
use hcl::eval::Evaluate;

use crate::jobfile::{Interpolation, JobPlan, TaskPlan};
use crate::supervise::HostChild;

/// What `nomad_iis run` was asked to do.
#[derive(Clone)]
pub struct RunOptions {
    /// The job file (or bare config file).
    pub job_file: PathBuf,
    /// `--port label=N` overrides.
    pub ports: BTreeMap<String, u16>,
    /// Where runtime folders go; a fresh temp folder when `None`.
    pub runtime_root: Option<PathBuf>,
    /// The binary to start hosts with (normally `current_exe()`).
    pub host_binary: PathBuf,
    /// Where the tasks' stdout (access log, worker output) goes; this console by default.
    pub stdout_path: Option<PathBuf>,
    /// The Management API, when `--management-api-port` is given.
    pub management: Option<management::Settings>,
    /// `--procdump-accept-eula`: process dumps through the Management API are allowed.
    pub procdump_accept_eula: bool,
    /// The screenshot and dump engines (none: those routes answer 501).
    pub capture: Option<std::sync::Arc<dyn management::CaptureBackend>>,
}

/// A task prepared to start: its resolved spec.
struct PreparedTask {
    label: String,
    alloc_id: String,
    spec: HostSpec,
}

/// Runs the job until Ctrl-C (or SIGTERM, or a host exiting). Returns the process exit code.
pub fn run(options: RunOptions) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(options))
}

async fn run_async(options: RunOptions) -> anyhow::Result<i32> {
    let job_file = std::fs::canonicalize(&options.job_file)
        .with_context(|| format!("cannot open job file {}", options.job_file.display()))?;
    let job_dir = job_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let plan = jobfile::read(&job_file)?;
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    // Pool identities need the driver's id allocation and ACLs on Nomad's task folders, which a
    // job run from a checkout does not have: say who the workers run as instead.
    if nix::unistd::geteuid().is_root() && !plan.tasks.is_empty() {
        eprintln!(
            "warning: nomad_iis run applies no application pool identities: worker processes run \
             as root, like this command (under Nomad each pool gets an unprivileged identity)"
        );
    }
    // Listen for Ctrl-C and SIGTERM before anything starts: the banner invites Ctrl-C, which
    // must never find the default action (death without clean-up) in place.
    let signals = Signals::install()?;
    let root = RuntimeRoot::create(options.runtime_root.as_deref())?;
    let mut prepared = Vec::new();
    for task in &plan.tasks {
        prepared.push(prepare(&plan, task, &options, &job_dir, &root.path)?);
    }

    // Bound before any host starts, so a busy port stops the run before anything runs.
    let management = match &options.management {
        Some(settings) => Some(
            settings
                .bind(Duration::ZERO)
                .await
                .context("cannot serve the management API")?,
        ),
        None => None,
    };
    let registry = std::sync::Arc::new(registry::StandaloneRegistry::default());

    let mut hosts: Vec<HostChild> = Vec::new();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "nomad_iis run: job \"{}\" from {}",
        plan.job_name,
        job_file.display()
    )?;
    drop(out);
    for task in prepared {
        let runtime_dir = task.spec.runtime_dir.clone();
        write_spec(&task.spec)?;
        match supervise::start(
            &options.host_binary,
            task.label.clone(),
            runtime_dir,
            Duration::from_secs(30),
        )
        .await
        {
            Ok((host, status)) => {
                print_task(&task, &status);
                registry.add(control::RegisteredTask {
                    alloc_id: task.alloc_id.clone(),
                    task_name: task.spec.task_name.clone(),
                    namespace: "default".to_owned(),
                    job_name: plan.job_name.clone(),
                    spec: task.spec.clone(),
                    recovered: false,
                });
                hosts.push(host);
            }
            Err(e) => {
                stop_all(&mut hosts).await;
                return Err(e);
            }
        }
    }
    if let (Some(bound), Some(settings)) = (management, &options.management) {
        let scheme = if bound.is_tls() { "https" } else { "http" };
        println!(
            "Management API: {scheme}://{}/api/v1/ (OpenAPI document at /api/v1/openapi.json)",
            bound.local_addr()
        );
        let eula = options.procdump_accept_eula;
        let api = management::Api::new(
            registry.clone(),
            options
                .capture
                .clone()
                .unwrap_or_else(|| std::sync::Arc::new(management::NoCapture)),
            settings.credentials.clone(),
            settings.limits,
            std::sync::Arc::new(move || eula),
        );
        tokio::spawn(bound.serve(api, std::future::pending()));
    }
    println!("Press Ctrl-C to stop.");

    let code = wait_for_end(&mut hosts, signals).await;
    stop_all(&mut hosts).await;
    // The screenshot browser, if one was started, goes with the run.
    if let Some(capture) = &options.capture {
        capture.shutdown().await;
    }
    code
}

/// Waits for Ctrl-C, SIGTERM, or the first host to exit on its own.
/// The stop signals `run` answers, installed once at start.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }
}

async fn wait_for_end(hosts: &mut [HostChild], mut signals: Signals) -> anyhow::Result<i32> {
    let exited = async {
        loop {
            for host in hosts.iter_mut() {
                if let Ok(Some(status)) = host.child.try_wait() {
                    let reason = control::files::read_exit_record(&host.runtime_dir)
                        .map(|r| r.reason)
                        .unwrap_or_else(|| status.to_string());
                    return (host.name.clone(), status.code().unwrap_or(1), reason);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = signals.interrupt.recv() => { eprintln!("stopping…"); Ok(0) }
        _ = signals.terminate.recv() => { eprintln!("stopping…"); Ok(0) }
        (name, code, reason) = exited => {
            eprintln!("{name}: the site host exited ({reason}); stopping the others");
            Ok(if code == 0 { 1 } else { code })
        }
    }
}

async fn stop_all(hosts: &mut Vec<HostChild>) {
    for host in hosts.iter_mut() {
        if let Err(e) = supervise::stop(host, Duration::from_secs(10)).await {
            eprintln!("{}: {e:#}", host.name);
        }
    }
    hosts.clear();
}

fn print_task(task: &PreparedTask, status: &control::HostStatus) {
    println!("  alloc {}  task {}", task.alloc_id, task.label);
    for binding in &task.spec.bindings {
        let port = status
            .listening
            .iter()
            .filter_map(|a| a.parse::<std::net::SocketAddr>().ok())
            .find(|a| a.port() == binding.port || binding.port == 0)
            .map_or(binding.port, |a| a.port());
        let host = match (&binding.hostname, binding.ip_address) {
            (Some(name), _) => name.clone(),
            (None, IpAddr::V4(ip)) if ip.is_unspecified() || ip.is_loopback() => {
                "localhost".to_owned()
            }
            (None, IpAddr::V6(ip)) if ip.is_unspecified() || ip.is_loopback() => {
                "localhost".to_owned()
            }
            (None, IpAddr::V4(ip)) => ip.to_string(),
            (None, IpAddr::V6(ip)) => format!("[{ip}]"),
        };
        let scheme = match binding.kind {
            BindingKind::Http => "http",
            BindingKind::Https => "https",
        };
        println!("    {scheme}://{host}:{port}/");
    }
}

fn prepare(
    plan: &JobPlan,
    task: &TaskPlan,
    options: &RunOptions,
    job_dir: &Path,
    root: &Path,
) -> anyhow::Result<PreparedTask> {
    let label = if task.group.is_empty() {
        task.name.clone()
    } else {
        format!("{}/{}", task.group, task.name)
    };
    let alloc_id = random_uuid()?;
    let runtime_dir = root.join(format!("{}-{}", &alloc_id[..8], sanitize(&task.name)));
    let alloc_dir = runtime_dir.join("alloc");
    let task_dir = alloc_dir.join(&task.name);
    for dir in [
        alloc_dir.join("alloc"),
        task_dir.join("local"),
        task_dir.join("tmp"),
        task_dir.join("secrets"),
    ] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::set_permissions(&runtime_dir, std::fs::Permissions::from_mode(0o700))?;

    // Ports: overrides, then static numbers, then free ports. A bare config file has no network
    // block, so every label its bindings name gets one.
    let mut wanted = task.ports.clone();
    if task.bare {
        for name in binding_port_labels(&task.config) {
            wanted.entry(name).or_insert(None);
        }
    }
    let mut ports = BTreeMap::new();
    for (name, fixed) in wanted {
        let port = match options.ports.get(&name).copied().or(fixed) {
            Some(port) => port,
            None => free_port()
                .with_context(|| format!("{label}: cannot find a free port for \"{name}\""))?,
        };
        ports.insert(name, port);
    }

    let interpolation = Interpolation {
        alloc_id: &alloc_id,
        job_name: &plan.job_name,
        group: &task.group,
        task: &task.name,
        alloc_dir: &alloc_dir,
        task_dir: &task_dir,
        ports: &ports,
    };
    let ctx = interpolation.context();
    let body = task
        .config
        .evaluate(&ctx)
        .map_err(|e| anyhow::anyhow!("{label}: config: {e}"))?;
    let json: serde_json::Value =
        hcl::from_body(body).map_err(|e| anyhow::anyhow!("{label}: config: {e}"))?;
    let config =
        TaskConfig::from_json(&json).map_err(|e| anyhow::anyhow!("{label}: config: {e}"))?;
    let driver_config = DriverConfig::default();
    let notices = config
        .validate(&driver_config)
        .map_err(|e| anyhow::anyhow!("{label}: config: {e}"))?;
    for notice in notices {
        eprintln!("note: {label}: {notice}");
    }

    let mut env = BTreeMap::new();
    for attr in &task.env {
        let value = attr
            .expr()
            .evaluate(&ctx)
            .with_context(|| format!("{label}: env.{}", attr.key()))?;
        let text = match value {
            hcl::Value::String(s) => s,
            other => other.to_string(),
        };
        env.insert(attr.key().to_owned(), text);
    }

    let resolve = ResolveContext {
        alloc_id: alloc_id.clone(),
        task_name: task.name.clone(),
        // Relative paths in a job run by hand resolve against the job file's folder.
        task_dir: job_dir.to_path_buf(),
        ports,
        runtime_dir: runtime_dir.clone(),
        stdout_path: options
            .stdout_path
            .clone()
            .unwrap_or_else(|| PathBuf::from("/dev/stdout")),
        stderr_path: PathBuf::from("/dev/stderr"),
        env: config::task_env(&env, &task_dir.join("tmp")),
        placeholder_app_path: None,
        default_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        limits: Default::default(),
    };
    let spec =
        config::resolve(&config, &resolve).map_err(|e| anyhow::anyhow!("{label}: config: {e}"))?;
    Ok(PreparedTask {
        label,
        alloc_id,
        spec,
    })
}

/// Port labels named by `binding { port = "label" }` in a config body (literal labels only).
fn binding_port_labels(config: &hcl::Body) -> Vec<String> {
    config
        .blocks()
        .filter(|b| b.identifier() == "binding")
        .filter_map(|b| b.body().attributes().find(|a| a.key() == "port"))
        .filter_map(|a| a.expr().evaluate(&hcl::eval::Context::new()).ok())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .filter(|p| p.parse::<u16>().is_err())
        .collect()
}

fn write_spec(spec: &HostSpec) -> anyhow::Result<()> {
    control::files::write_spec(&spec.runtime_dir, spec).context("cannot write the host spec")
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))?
        .local_addr()?
        .port())
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect()
}

fn random_uuid() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// The folder holding this run's runtime folders; removed when the run ends.
struct RuntimeRoot {
    path: PathBuf,
}

impl RuntimeRoot {
    fn create(parent: Option<&Path>) -> anyhow::Result<Self> {
        let parent = parent
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let path = parent.join(format!("nomad_iis-run-{}", std::process::id()));
        if path.exists() {
            bail!("{} already exists", path.display());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for RuntimeRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
