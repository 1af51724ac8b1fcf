//! A test harness that plays the Nomad client towards the real `nomad_iis` binary, as the
//! protocol doc describes it: Nomad's environment and stdin, the handshake line on stdout,
//! hclog lines on stderr, gRPC over the announced unix socket, task configs encoded from HCL
//! against the plugin's own schema, and allocation folders with log FIFOs that the harness
//! reads.
//!
//! Every resource a test makes is owned by a [`Fixture`]: its `Drop` kills every plugin it
//! launched and every site host started under its runtime root (found through `/proc`), then
//! removes its temp folder — also when the test fails half-way.

#![allow(dead_code)]

pub mod http;

mod ports;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nomad_plugin::proto::base::base_plugin_client::BasePluginClient;
use nomad_plugin::proto::drivers::{self as pb, driver_client::DriverClient};
use nomad_plugin::proto::goplugin::grpc_broker_client::GrpcBrokerClient;
use nomad_plugin::proto::goplugin::grpc_controller_client::GrpcControllerClient;
use nomad_plugin::proto::goplugin::grpc_stdio_client::GrpcStdioClient;
use tokio::io::AsyncReadExt;
use tonic::transport::{Channel, Endpoint};

/// Nomad's magic cookie.
pub const COOKIE_KEY: &str = "NOMAD_PLUGIN_MAGIC_COOKIE";
/// Its value.
pub const COOKIE_VALUE: &str = "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255";

/// The binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nomad_iis"))
}

/// Lines collected from a pipe by a reader thread.
#[derive(Debug, Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

/// The go-plugin handshake as announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub line: String,
    pub network: String,
    pub address: String,
}

impl Handshake {
    /// Parses `1|2|unix|/path|grpc` strictly: exactly five fields, nothing after `grpc`.
    pub fn parse(line: &str) -> Result<Self, String> {
        let fields: Vec<&str> = line.split('|').collect();
        match fields.as_slice() {
            ["1", "2", network @ ("unix" | "tcp"), address, "grpc"] if !address.is_empty() => {
                Ok(Self {
                    line: line.to_owned(),
                    network: (*network).to_owned(),
                    address: (*address).to_owned(),
                })
            }
            _ => Err(format!("malformed handshake line {line:?}")),
        }
    }
}

/// One launched plugin process.
pub struct Plugin {
    child: Child,
    pub pid: u32,
    pub handshake: Handshake,
    /// Time from spawn to the handshake line.
    pub handshake_after: Duration,
    /// Everything on stdout after the handshake (must stay empty).
    pub stdout_rest: Lines,
    /// Every stderr line.
    pub stderr: Lines,
    /// Set when the stdout reader saw EOF.
    stdout_closed: Arc<Mutex<bool>>,
    /// The unread stderr pipe of a plugin launched with `stall_stderr`.
    _stalled_stderr: Option<std::process::ChildStderr>,
    pub channel: Channel,
}

/// The gRPC clients a Nomad client uses.
#[derive(Clone)]
pub struct Clients {
    pub base: BasePluginClient<Channel>,
    pub driver: DriverClient<Channel>,
    pub controller: GrpcControllerClient<Channel>,
    pub broker: GrpcBrokerClient<Channel>,
    pub stdio: GrpcStdioClient<Channel>,
    pub health: tonic_health::pb::health_client::HealthClient<Channel>,
}

impl Clients {
    pub fn new(channel: Channel) -> Self {
        let max = i32::MAX as usize;
        Self {
            base: BasePluginClient::new(channel.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            driver: DriverClient::new(channel.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            controller: GrpcControllerClient::new(channel.clone()),
            broker: GrpcBrokerClient::new(channel.clone()),
            stdio: GrpcStdioClient::new(channel.clone()),
            health: tonic_health::pb::health_client::HealthClient::new(channel),
        }
    }
}

/// The RPCs as a Nomad client makes them, for the common cases.
impl Clients {
    /// PluginInfo (panics on error).
    pub async fn plugin_info(&mut self) -> nomad_plugin::proto::base::PluginInfoResponse {
        self.base
            .plugin_info(nomad_plugin::proto::base::PluginInfoRequest {})
            .await
            .expect("PluginInfo")
            .into_inner()
    }

    /// The agent's plugin `config {}` (HCL) encoded against ConfigSchema.
    pub async fn driver_config(&mut self, hcl_text: &str) -> Vec<u8> {
        let spec = self
            .base
            .config_schema(nomad_plugin::proto::base::ConfigSchemaRequest {})
            .await
            .expect("ConfigSchema")
            .into_inner()
            .spec
            .expect("spec");
        encode_hcl(&spec, hcl_text, &BTreeMap::new()).expect("driver config encodes")
    }

    /// The task config schema, fetched the way Nomad does before each task.
    pub async fn task_schema(&mut self) -> nomad_plugin::proto::hclspec::Spec {
        self.driver
            .task_config_schema(pb::TaskConfigSchemaRequest {})
            .await
            .expect("TaskConfigSchema")
            .into_inner()
            .spec
            .expect("spec")
    }

    /// Opens the Fingerprint stream.
    pub async fn fingerprints(&mut self) -> tonic::Streaming<pb::FingerprintResponse> {
        self.driver
            .fingerprint(pb::FingerprintRequest {})
            .await
            .expect("Fingerprint")
            .into_inner()
    }

    /// Opens the TaskEvents stream.
    pub async fn events(&mut self) -> tonic::Streaming<pb::DriverTaskEvent> {
        self.driver
            .task_events(pb::TaskEventsRequest {})
            .await
            .expect("TaskEvents")
            .into_inner()
    }

    /// Opens a TaskStats stream.
    pub async fn stats(
        &mut self,
        task_id: &str,
        interval: Duration,
    ) -> tonic::Streaming<pb::TaskStatsResponse> {
        self.driver
            .task_stats(pb::TaskStatsRequest {
                task_id: task_id.to_owned(),
                collection_interval: Some(proto_duration(interval)),
            })
            .await
            .expect("TaskStats")
            .into_inner()
    }

    /// WaitTask.
    pub async fn wait(&mut self, task_id: &str) -> Result<pb::WaitTaskResponse, tonic::Status> {
        self.driver
            .wait_task(pb::WaitTaskRequest {
                task_id: task_id.to_owned(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// WaitTask in the background, on a clone of these clients.
    pub fn wait_in_background(
        &self,
        task_id: &str,
    ) -> tokio::task::JoinHandle<Result<pb::WaitTaskResponse, tonic::Status>> {
        let mut clients = self.clone();
        let task_id = task_id.to_owned();
        tokio::spawn(async move { clients.wait(&task_id).await })
    }

    /// The exit result WaitTask reports (panics on error or a missing result).
    pub async fn exit_result(&mut self, task_id: &str) -> pb::ExitResult {
        self.wait(task_id)
            .await
            .expect("WaitTask")
            .result
            .expect("WaitTask always sets result")
    }

    /// StopTask with Nomad's default signal (panics on error: StopTask always succeeds).
    pub async fn stop(&mut self, task_id: &str, timeout: Duration) {
        self.driver
            .stop_task(pb::StopTaskRequest {
                task_id: task_id.to_owned(),
                timeout: Some(proto_duration(timeout)),
                signal: String::new(),
            })
            .await
            .expect("StopTask");
    }

    /// DestroyTask.
    pub async fn destroy(&mut self, task_id: &str, force: bool) -> Result<(), tonic::Status> {
        self.driver
            .destroy_task(pb::DestroyTaskRequest {
                task_id: task_id.to_owned(),
                force,
            })
            .await
            .map(|_| ())
    }

    /// StopTask, then DestroyTask with force: how Nomad ends a task (panics on error).
    pub async fn stop_and_destroy(&mut self, task_id: &str) {
        self.stop(task_id, Duration::from_secs(5)).await;
        self.destroy(task_id, true).await.expect("DestroyTask");
    }

    /// SignalTask.
    pub async fn signal(&mut self, task_id: &str, name: &str) -> Result<(), tonic::Status> {
        self.driver
            .signal_task(pb::SignalTaskRequest {
                task_id: task_id.to_owned(),
                signal: name.to_owned(),
            })
            .await
            .map(|_| ())
    }

    /// InspectTask's task status.
    pub async fn inspect(&mut self, task_id: &str) -> Result<pb::TaskStatus, tonic::Status> {
        self.driver
            .inspect_task(pb::InspectTaskRequest {
                task_id: task_id.to_owned(),
            })
            .await
            .map(|r| r.into_inner().task.expect("InspectTask sets task"))
    }

    /// `count` StartTask calls with a config that fails to decode. Each fails at once and
    /// logs one warning, so this is how a test makes the plugin write to stderr.
    pub async fn failing_starts(&mut self, count: usize) {
        for i in 0..count {
            let err = self
                .driver
                .start_task(pb::StartTaskRequest {
                    task: Some(pb::TaskConfig {
                        id: format!("noise/web/{i:08x}"),
                        name: "web".into(),
                        msgpack_driver_config: vec![0xc3],
                        ..Default::default()
                    }),
                })
                .await
                .expect_err("a config that is not an object fails");
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        }
    }

    /// RecoverTask as Nomad sends it: an empty task id and the persisted handle.
    pub async fn recover(&mut self, handle: pb::TaskHandle) -> Result<(), tonic::Status> {
        self.driver
            .recover_task(pb::RecoverTaskRequest {
                task_id: String::new(),
                handle: Some(handle),
            })
            .await
            .map(|_| ())
    }
}

/// Dials a handshake address (unix socket or tcp) as go-plugin does: plaintext HTTP/2.
pub async fn dial(handshake: &Handshake) -> Result<Channel, tonic::transport::Error> {
    match handshake.network.as_str() {
        "unix" => {
            let path = PathBuf::from(&handshake.address);
            Endpoint::try_from("http://[::]:50051")?
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await
        }
        _ => {
            Endpoint::try_from(format!("http://{}", handshake.address))?
                .connect()
                .await
        }
    }
}

impl Plugin {
    /// The clients for this plugin's channel.
    pub fn clients(&self) -> Clients {
        Clients::new(self.channel.clone())
    }

    /// Whether the process still runs (not yet exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for the process to exit; its status if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to the plugin process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), sig);
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the stdout reader saw EOF (no process holds the pipe any more).
    pub fn stdout_closed(&self) -> bool {
        *self.stdout_closed.lock().unwrap()
    }

    /// Checks every stderr line so far: hclog JSON with string `@level`/`@message`/
    /// `@timestamp` in the exact layout, or plain text. Returns the offending lines.
    pub fn bad_stderr_lines(&self) -> Vec<String> {
        self.stderr
            .snapshot()
            .into_iter()
            .filter(|line| check_stderr_line(line).is_err())
            .collect()
    }
}

/// Checks one stderr line the way Nomad's hclog reader would take it.
pub fn check_stderr_line(line: &str) -> Result<(), String> {
    if !line.trim_start().starts_with('{') {
        return Ok(());
    }
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}: {line}"))?;
    let object = value.as_object().ok_or("not an object")?;
    for key in ["@level", "@message", "@timestamp"] {
        match object.get(key) {
            Some(serde_json::Value::String(_)) => {}
            other => return Err(format!("{key} is {other:?} in {line}")),
        }
    }
    let level = object["@level"].as_str().unwrap_or_default();
    if !["trace", "debug", "info", "warn", "error"].contains(&level) {
        return Err(format!("bad @level {level:?}"));
    }
    let ts = object["@timestamp"].as_str().unwrap_or_default();
    if !timestamp_layout_ok(ts) {
        return Err(format!("bad @timestamp {ts:?}"));
    }
    Ok(())
}

/// `2006-01-02T15:04:05.000000Z07:00`: six fractional digits, then `Z` or `±hh:mm`.
fn timestamp_layout_ok(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range.clone())
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    let fixed = b.len() >= 27
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..26);
    if !fixed {
        return false;
    }
    match &ts[26..] {
        "Z" => true,
        zone => {
            let z = zone.as_bytes();
            z.len() == 6
                && (z[0] == b'+' || z[0] == b'-')
                && z[1..3].iter().all(u8::is_ascii_digit)
                && z[3] == b':'
                && z[4..6].iter().all(u8::is_ascii_digit)
        }
    }
}

/// How to launch a plugin.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// Extra arguments (the runtime dir is always added).
    pub args: Vec<String>,
    /// Do not set the magic cookie.
    pub without_cookie: bool,
    /// Close the read end of stderr right away, as when the agent died.
    pub close_stderr: bool,
    /// Keep the read end of stderr open but never read it, so the pipe fills up.
    pub stall_stderr: bool,
    /// Run this file instead of the built binary.
    pub program: Option<PathBuf>,
}

/// Owns everything a test makes; cleans up on drop.
pub struct Fixture {
    pub temp: tempfile::TempDir,
    pub runtime_root: PathBuf,
    plugins: Vec<Plugin>,
    /// Site host pids learned from driver states (in addition to the /proc scan).
    host_pids: Mutex<Vec<u32>>,
}

impl Fixture {
    pub fn new() -> Self {
        // Short paths: unix socket paths must stay under 108 bytes.
        let temp = tempfile::Builder::new()
            .prefix("niis")
            .tempdir_in("/tmp")
            .expect("temp dir");
        // tempfile makes the folder 0700; a Nomad data folder is searchable by everyone, and
        // workers running as a pool identity must reach their allocation folder through it.
        std::fs::set_permissions(
            temp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("temp dir mode");
        let runtime_root = temp.path().join("rt");
        Self {
            temp,
            runtime_root,
            plugins: Vec::new(),
            host_pids: Mutex::new(Vec::new()),
        }
    }

    /// Launches the plugin as Nomad does and waits for its handshake (at most 30 s).
    pub async fn launch(&mut self, options: LaunchOptions) -> usize {
        let mut command = Command::new(options.program.clone().unwrap_or_else(binary));
        command.args(&options.args);
        if !options.args.iter().any(|a| a.starts_with("--runtime-dir")) {
            command.arg(format!("--runtime-dir={}", self.runtime_root.display()));
        }
        // The plugin's socket folder goes under the system temp folder; pointing that at this
        // fixture's folder means a plugin killed with SIGKILL (as Nomad and these tests do)
        // leaves no socket folder behind in /tmp.
        // Nomad starts plugins in the agent's working folder; here it is the fixture's, so
        // whatever a plugin writes relative to it is cleaned up with the fixture.
        command
            .current_dir(self.temp.path())
            .env("TMPDIR", self.temp.path())
            .env("PLUGIN_PROTOCOL_VERSIONS", "2")
            .env("PLUGIN_MIN_PORT", "10000")
            .env("PLUGIN_MAX_PORT", "25000")
            // The system PATH a Nomad agent started by systemd has, not this test's (which may
            // lead into root's home, where no pool identity can execute anything).
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if options.without_cookie {
            command.env_remove(COOKIE_KEY);
        } else {
            command.env(COOKIE_KEY, COOKIE_VALUE);
        }
        // Own process group, so a test's SIGINT to the plugin never reaches the test runner.
        command.process_group(0);
        let started = Instant::now();
        let mut child = command.spawn().expect("spawn nomad_iis");
        let pid = child.id();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let stderr_lines = Lines::default();
        let mut stalled_stderr = None;
        if options.close_stderr {
            drop(stderr);
        } else if options.stall_stderr {
            stalled_stderr = Some(stderr);
        } else {
            let lines = stderr_lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    match line {
                        Ok(line) => lines.push(line),
                        Err(_) => break,
                    }
                }
            });
        }
        let (first_tx, first_rx) = std::sync::mpsc::channel::<Option<String>>();
        let rest = Lines::default();
        let stdout_closed = Arc::new(Mutex::new(false));
        {
            let rest = rest.clone();
            let closed = stdout_closed.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut first = String::new();
                let got = reader.read_line(&mut first).map(|n| n > 0).unwrap_or(false);
                let _ = first_tx.send(got.then(|| first.trim_end_matches('\n').to_owned()));
                let mut buffer = Vec::new();
                let _ = reader.read_to_end(&mut buffer);
                if !buffer.is_empty() {
                    rest.push(String::from_utf8_lossy(&buffer).into_owned());
                }
                *closed.lock().unwrap() = true;
            });
        }
        let first = tokio::task::spawn_blocking(move || {
            first_rx
                .recv_timeout(Duration::from_secs(30))
                .ok()
                .flatten()
        })
        .await
        .unwrap();
        let handshake_after = started.elapsed();
        let Some(line) = first else {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "no handshake line from the plugin; stderr: {:#?}",
                stderr_lines.snapshot()
            );
        };
        let handshake = match Handshake::parse(&line) {
            Ok(h) => h,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{e}");
            }
        };
        let channel = match dial(&handshake).await {
            Ok(c) => c,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("cannot dial {}: {e:?}", handshake.address);
            }
        };
        self.plugins.push(Plugin {
            child,
            pid,
            handshake,
            handshake_after,
            stdout_rest: rest,
            stderr: stderr_lines,
            stdout_closed,
            _stalled_stderr: stalled_stderr,
            channel,
        });
        self.plugins.len() - 1
    }

    /// A launched plugin.
    pub fn plugin(&mut self, index: usize) -> &mut Plugin {
        &mut self.plugins[index]
    }

    /// Launches a plugin with `options`; its index and clients.
    pub async fn launch_with(&mut self, options: LaunchOptions) -> (usize, Clients) {
        let index = self.launch(options).await;
        let clients = self.plugins[index].clients();
        (index, clients)
    }

    /// Launches a plugin with the default options; its index and clients.
    pub async fn launch_default(&mut self) -> (usize, Clients) {
        self.launch_with(LaunchOptions::default()).await
    }

    /// Launches a long-lived plugin (P3) and configures it as Nomad does: the agent's plugin
    /// `config {}` (HCL) encoded against ConfigSchema, then SetConfig with `nomad_config`.
    pub async fn configured_plugin(&mut self, driver_config_hcl: &str) -> (usize, Clients) {
        self.configured_plugin_with(LaunchOptions::default(), driver_config_hcl)
            .await
    }

    /// Like [`Fixture::configured_plugin`], launched with `options`.
    pub async fn configured_plugin_with(
        &mut self,
        options: LaunchOptions,
        driver_config_hcl: &str,
    ) -> (usize, Clients) {
        let (index, mut clients) = self.launch_with(options).await;
        let config = clients.driver_config(driver_config_hcl).await;
        set_config(&mut clients, &config, true)
            .await
            .expect("SetConfig");
        (index, clients)
    }

    /// Asserts that plugin `index` kept stdout silent after the handshake and wrote only lines
    /// Nomad can take to stderr.
    pub fn assert_clean(&mut self, index: usize) {
        let plugin = self.plugin(index);
        assert!(
            plugin.stdout_rest.snapshot().is_empty(),
            "stdout after the handshake: {:?}",
            plugin.stdout_rest.snapshot()
        );
        let bad = plugin.bad_stderr_lines();
        assert!(bad.is_empty(), "stderr lines Nomad cannot take: {bad:#?}");
    }

    /// Runtime folders left under the runtime root.
    pub fn runtime_leftovers(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.runtime_root)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// StartTask with `config_hcl` as Nomad does it: TaskConfigSchema and Capabilities first,
    /// then the task. The host is remembered for clean-up.
    pub async fn start_task(
        &self,
        clients: &mut Clients,
        alloc: &Allocation,
        config_hcl: &str,
        ports: &[(&str, u16)],
    ) -> Result<Task, tonic::Status> {
        let spec = clients.task_schema().await;
        clients
            .driver
            .capabilities(pb::CapabilitiesRequest {})
            .await
            .expect("Capabilities");
        let task = alloc.task_config(&spec, config_hcl, ports);
        self.start_prepared(clients, task).await
    }

    /// StartTask with a TaskConfig already built; the host is remembered for clean-up.
    pub async fn start_prepared(
        &self,
        clients: &mut Clients,
        task: pb::TaskConfig,
    ) -> Result<Task, tonic::Status> {
        let response = clients
            .driver
            .start_task(pb::StartTaskRequest {
                task: Some(task.clone()),
            })
            .await?
            .into_inner();
        let handle = response.handle.expect("StartTask returns a handle");
        if let Some(pid) = driver_state(&handle)["host_pid"].as_u64() {
            self.track_host(pid as u32);
        }
        Ok(Task {
            config: task,
            handle,
        })
    }

    /// A new allocation `name` whose `local/site` says `body`, started with [`STATIC_SITE`] on
    /// a free port labelled `http`.
    pub async fn start_static_site(
        &self,
        clients: &mut Clients,
        name: &str,
        body: &str,
    ) -> StaticSite {
        let alloc = self.allocation(name).await;
        alloc.static_site("site", body);
        let port = free_port();
        let task = self
            .start_task(clients, &alloc, STATIC_SITE, &[("http", port)])
            .await
            .unwrap_or_else(|e| panic!("StartTask {name}: {e:?}"));
        StaticSite { alloc, task, port }
    }

    /// Remembers a host pid from a driver state, for clean-up.
    pub fn track_host(&self, pid: u32) {
        self.host_pids.lock().unwrap().push(pid);
    }

    /// Pids of live processes whose command line names this fixture's runtime root: the site
    /// hosts (and their workers, which inherit nothing of it, so groups are killed below).
    pub fn host_processes(&self) -> Vec<u32> {
        let root = self.runtime_root.display().to_string();
        process_ids()
            .into_iter()
            .filter(|pid| {
                let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                    return false;
                };
                let cmdline = String::from_utf8_lossy(&cmdline);
                cmdline.contains("--runtime-dir")
                    && cmdline.contains(&root)
                    && cmdline.contains("\0host\0")
                    && process_state(*pid).is_some_and(|s| s != 'Z')
            })
            .collect()
    }

    /// A new allocation with one task, with Nomad's folder layout and log FIFOs.
    pub async fn allocation(&self, task_name: &str) -> Allocation {
        Allocation::create(self.temp.path(), task_name).await
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for plugin in &mut self.plugins {
            plugin.kill();
        }
        let mut pids = self.host_processes();
        pids.extend(self.host_pids.lock().unwrap().iter().copied());
        for pid in pids {
            // Hosts lead their own process group; kill the group to take the workers too.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The agent's plugin config the task tests run with.
pub const DRIVER_CONFIG: &str = r#"
enabled = true
fingerprint_interval = "10s"
"#;

/// A task serving its `local/site` folder on the port labelled `http`.
pub const STATIC_SITE: &str = r#"
application { path = "local/site" }
binding {
  type = "http"
  port = "http"
}
"#;

/// A started task: the config Nomad sent and the handle it got back.
#[derive(Debug, Clone)]
pub struct Task {
    pub config: pb::TaskConfig,
    pub handle: pb::TaskHandle,
}

impl Task {
    /// Nomad's task id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The site host's pid, from the driver state.
    pub fn host_pid(&self) -> u32 {
        host_pid(&self.handle)
    }

    /// The host's runtime folder, from the driver state.
    pub fn runtime_dir(&self) -> PathBuf {
        runtime_dir(&self.handle)
    }

    /// The handle as Nomad persists it, which may lack the driver config bytes.
    pub fn persisted_handle(&self) -> pb::TaskHandle {
        let mut persisted = self.handle.clone();
        if let Some(config) = persisted.config.as_mut() {
            config.msgpack_driver_config.clear();
        }
        persisted
    }
}

/// A static site task started by [`Fixture::start_static_site`].
pub struct StaticSite {
    pub alloc: Allocation,
    pub task: Task,
    pub port: u16,
}

impl StaticSite {
    /// The site's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        local(self.port)
    }

    /// Nomad's task id.
    pub fn id(&self) -> &str {
        self.task.id()
    }
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// The site host's pid in a handle's driver state.
pub fn host_pid(handle: &pb::TaskHandle) -> u32 {
    driver_state(handle)["host_pid"]
        .as_u64()
        .expect("driver_state.host_pid") as u32
}

/// The host's runtime folder in a handle's driver state.
pub fn runtime_dir(handle: &pb::TaskHandle) -> PathBuf {
    driver_state(handle)["runtime_dir"]
        .as_str()
        .expect("driver_state.runtime_dir")
        .into()
}

/// Reads events until one about `alloc` contains `needle` (at most 15 s) and checks that it
/// carries what Nomad routes and shows it by.
pub async fn expect_event(
    events: &mut tonic::Streaming<pb::DriverTaskEvent>,
    alloc: &Allocation,
    needle: &str,
) -> pb::DriverTaskEvent {
    use tokio_stream::StreamExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("no task event containing {needle:?}"))
            .expect("events stream open")
            .expect("event");
        if event.alloc_id == alloc.alloc_id && event.message.contains(needle) {
            assert_eq!(event.task_name, alloc.task_name);
            assert!(event.timestamp.is_some());
            assert!(
                event
                    .task_id
                    .starts_with(&format!("{}/{}/", alloc.alloc_id, alloc.task_name))
            );
            return event;
        }
    }
}

/// A process's state letter from `/proc/PID/stat`.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

/// Whether `pid` runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    process_state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// SetConfig as Nomad sends it (P2 without `nomad_config`, P3 with it).
pub async fn set_config(
    clients: &mut Clients,
    msgpack: &[u8],
    with_nomad_config: bool,
) -> Result<(), tonic::Status> {
    use nomad_plugin::proto::base as b;
    let nomad_config = with_nomad_config.then_some(b::NomadConfig {
        driver: Some(b::NomadDriverConfig {
            client_max_port: 14999,
            client_min_port: 14000,
            topology: None,
        }),
    });
    clients
        .base
        .set_config(b::SetConfigRequest {
            msgpack_config: msgpack.to_vec(),
            nomad_config,
            plugin_api_version: "0.1.0".into(),
        })
        .await
        .map(|_| ())
}

/// Encodes an HCL body against a spec as Nomad's client does: the job parser turns the body
/// into a generic (JSON-shaped) map, `${NOMAD_*}` variables are interpolated, hcldec decodes it
/// against the plugin's spec, and cty encodes the result as msgpack.
pub fn encode_hcl(
    spec: &nomad_plugin::proto::hclspec::Spec,
    hcl_text: &str,
    vars: &BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    let mut text = hcl_text.to_owned();
    for (name, value) in vars {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    let body: hcl::Value = hcl::from_str(&text).map_err(|e| e.to_string())?;
    let json = serde_json::to_value(&body).map_err(|e| e.to_string())?;
    let value = nomad_plugin::hclspec::decode_json(spec, &json).map_err(|e| e.to_string())?;
    Ok(nomad_plugin::cty::encode(&value))
}

/// A random lowercase hex string of `len` characters.
pub fn random_hex(len: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < len {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(Instant::now().elapsed().as_nanos());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(len);
    out
}

/// A uuid-shaped allocation id.
pub fn alloc_id() -> String {
    let h = random_hex(32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub use ports::free_port;

/// An allocation folder as Nomad lays it out, with the task's log FIFOs read by the harness.
pub struct Allocation {
    pub alloc_id: String,
    pub task_name: String,
    pub alloc_dir: PathBuf,
    pub task_dir: PathBuf,
    pub stdout_fifo: PathBuf,
    pub stderr_fifo: PathBuf,
    pub stdout: Arc<Mutex<Vec<u8>>>,
    pub stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Allocation {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

impl Allocation {
    async fn create(base: &Path, task_name: &str) -> Self {
        let alloc_id = alloc_id();
        let alloc_dir = base.join(&alloc_id[..8]);
        let task_dir = alloc_dir.join(task_name);
        for dir in [
            task_dir.join("local"),
            task_dir.join("tmp"),
            task_dir.join("secrets"),
            alloc_dir.join("alloc/logs"),
            alloc_dir.join("alloc/data"),
            alloc_dir.join("alloc/tmp"),
        ] {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let logs = alloc_dir.join("alloc/logs");
        let stdout_fifo = logs.join(format!(".{task_name}.stdout.fifo"));
        let stderr_fifo = logs.join(format!(".{task_name}.stderr.fifo"));
        let mut readers = Vec::new();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        for (fifo, sink) in [(&stdout_fifo, &stdout), (&stderr_fifo, &stderr)] {
            nix::unistd::mkfifo(
                fifo.as_path(),
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            )
            .unwrap();
            // Like Nomad's logmon: read continuously; opened read-write so the reader never
            // sees EOF while the host reopens its end.
            let mut receiver = tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(fifo)
                .unwrap();
            let sink = sink.clone();
            readers.push(tokio::spawn(async move {
                let mut buffer = [0u8; 8192];
                loop {
                    match receiver.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => sink.lock().unwrap().extend_from_slice(&buffer[..n]),
                    }
                }
            }));
        }
        Self {
            alloc_id,
            task_name: task_name.to_owned(),
            alloc_dir,
            task_dir,
            stdout_fifo,
            stderr_fifo,
            stdout,
            stderr,
            readers,
        }
    }

    /// Text read from the task's stdout FIFO so far.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Text read from the task's stderr FIFO so far.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Writes a static site into `<task>/local/<name>` with an index.html saying `body`.
    pub fn static_site(&self, name: &str, body: &str) -> PathBuf {
        let dir = self.task_dir.join("local").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), body).unwrap();
        dir
    }

    /// The `${NOMAD_*}` variables Nomad interpolates into a task config.
    pub fn variables(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "NOMAD_ALLOC_DIR".to_owned(),
                self.alloc_dir.join("alloc").display().to_string(),
            ),
            (
                "NOMAD_TASK_DIR".to_owned(),
                self.task_dir.join("local").display().to_string(),
            ),
            (
                "NOMAD_SECRETS_DIR".to_owned(),
                self.task_dir.join("secrets").display().to_string(),
            ),
            ("NOMAD_ALLOC_ID".to_owned(), self.alloc_id.clone()),
            ("NOMAD_TASK_NAME".to_owned(), self.task_name.clone()),
        ])
    }

    /// A TaskConfig as Nomad sends it, with `config_hcl` encoded against `spec` and `ports`
    /// (label → port) both as port mappings and as the network's dynamic ports.
    pub fn task_config(
        &self,
        spec: &nomad_plugin::proto::hclspec::Spec,
        config_hcl: &str,
        ports: &[(&str, u16)],
    ) -> pb::TaskConfig {
        let msgpack = encode_hcl(spec, config_hcl, &self.variables()).expect("task config encodes");
        self.task_config_raw(msgpack, ports)
    }

    /// Like [`Allocation::task_config`] with already encoded config bytes.
    pub fn task_config_raw(&self, msgpack: Vec<u8>, ports: &[(&str, u16)]) -> pb::TaskConfig {
        let mut env: HashMap<String, String> = self.variables().into_iter().collect();
        env.insert("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into());
        env.insert("NOMAD_JOB_NAME".into(), "web-job".into());
        for (label, port) in ports {
            env.insert(format!("NOMAD_PORT_{label}"), port.to_string());
            env.insert(format!("NOMAD_ADDR_{label}"), format!("127.0.0.1:{port}"));
        }
        pb::TaskConfig {
            id: format!("{}/{}/{}", self.alloc_id, self.task_name, random_hex(8)),
            name: self.task_name.clone(),
            msgpack_driver_config: msgpack,
            env,
            device_env: HashMap::new(),
            resources: Some(pb::Resources {
                allocated_resources: Some(pb::AllocatedTaskResources {
                    cpu: Some(pb::AllocatedCpuResources { cpu_shares: 500 }),
                    memory: Some(pb::AllocatedMemoryResources {
                        memory_mb: 256,
                        memory_max_mb: 0,
                    }),
                    networks: vec![pb::NetworkResource {
                        device: "lo".into(),
                        cidr: "127.0.0.1/32".into(),
                        ip: "127.0.0.1".into(),
                        mbits: 0,
                        reserved_ports: vec![],
                        dynamic_ports: ports
                            .iter()
                            .map(|(label, port)| pb::NetworkPort {
                                label: (*label).to_owned(),
                                value: i32::from(*port),
                            })
                            .collect(),
                    }],
                }),
                linux_resources: Some(pb::LinuxResources {
                    cpu_shares: 500,
                    memory_limit_bytes: 256 << 20,
                    ..Default::default()
                }),
                ports: ports
                    .iter()
                    .map(|(label, port)| pb::PortMapping {
                        label: (*label).to_owned(),
                        value: i32::from(*port),
                        to: 0,
                        host_ip: "127.0.0.1".into(),
                    })
                    .collect(),
            }),
            mounts: vec![],
            devices: vec![],
            user: String::new(),
            alloc_dir: self.alloc_dir.display().to_string(),
            stdout_path: self.stdout_fifo.display().to_string(),
            stderr_path: self.stderr_fifo.display().to_string(),
            task_group_name: "web-group".into(),
            job_name: "web-job".into(),
            alloc_id: self.alloc_id.clone(),
            network_isolation_spec: None,
            dns: None,
            job_id: "web-job".into(),
            namespace: "default".into(),
            node_name: "node-1".into(),
            node_id: alloc_id(),
            parent_job_id: String::new(),
        }
    }
}

/// Polls `check` every 50 ms until it holds or `limit` passes; whether it held.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Nomad's duration message.
pub fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Reads the driver state JSON of a handle.
pub fn driver_state(handle: &pb::TaskHandle) -> serde_json::Value {
    serde_json::from_slice(&handle.driver_state).expect("driver_state is JSON")
}

/// The pids in `/proc` right now.
pub fn process_ids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}
