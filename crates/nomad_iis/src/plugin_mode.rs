//! Plugin mode (the binary started by a Nomad agent) and the `host` subcommand (the per-task site
//! host the driver starts).
//!
//! Plugin mode never writes to stdout except the go-plugin handshake line (printed by
//! `nomad_plugin::transport::serve`): Nomad reads that line and discards the rest. Logs go to
//! stderr as hclog JSON. Every problem before logging is up is written to stderr as plain text
//! and ends the process with exit code 1, as go-plugin plugins do.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Parser};
use driver::{DriverOptions, HostCommand, IisDriver, ManagementApi, PLUGIN_NAME};
use nomad_plugin::logging::LogSink;
use nomad_plugin::transport::{self, Listen};

/// Default root of the hosts' runtime folders.
const DEFAULT_RUNTIME_DIR: &str = "/run/nomad_iis";

/// The plugin's arguments, from `plugin "nomad_iis" { args = [...] }`. Both `--flag=value` and
/// `--flag value` work; booleans take a value (`--procdump-accept-eula=true`).
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "nomad_iis",
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct PluginArgs {
    /// Serve gRPC on TCP 127.0.0.1:N (0 = any free port) instead of a unix socket.
    #[arg(long, value_name = "N")]
    port: Option<u16>,
    /// The Management API.
    #[command(flatten)]
    management: crate::management_args::ManagementArgs,
    /// Accept the procdump EULA (process dumps through the Management API).
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, default_value_t = false)]
    procdump_accept_eula: bool,
    /// Root of the site hosts' runtime folders.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_RUNTIME_DIR)]
    runtime_dir: PathBuf,
}

/// The `host` subcommand's arguments.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "nomad_iis host",
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct HostArgs {
    /// The host's runtime folder, holding its `spec.json`.
    #[arg(long, value_name = "DIR")]
    runtime_dir: PathBuf,
}

/// Writes to stderr without panicking when it is closed (the agent may be gone).
fn to_stderr(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = stderr.write_all(b"\n");
    }
    let _ = stderr.flush();
}

fn usage() -> String {
    format!(
        "nomad_iis {version}: a Nomad task driver (driver \"{PLUGIN_NAME}\") that hosts web applications the IIS way, on Linux.

Usage:
  nomad_iis [OPTIONS]          plugin mode; started by a Nomad agent, which sets its magic cookie
  nomad_iis run JOBFILE        run the iis tasks of a job file on this machine, without Nomad
  nomad_iis --help | --version

Plugin options (plugin \"nomad_iis\" {{ args = [...] }}); --flag=value and --flag value both work:
  --port=N                         serve gRPC on TCP 127.0.0.1:N (0 = any free port) instead of a unix socket
  --management-api-port=N          enable the Management API on port N (0 or absent = off)
  --management-api-address=IP      listen address (default all interfaces; 127.0.0.1 without key/secret)
  --management-api-key=KEY         API key required in X-Api-Key
  --management-api-key-file=PATH   ... read from the first line of a file (keeps it out of ps)
  --management-api-key-env=NAME    ... read from an environment variable
  --management-api-jwt-secret=S    secret for HS256 bearer tokens (also -file=PATH, -env=NAME)
  --management-api-tls-cert=PATH   serve the API over TLS (PEM chain; with --management-api-tls-key=PATH)
  --management-api-upload-limit=N  largest upload, e.g. 500M (default 1G)
  --procdump-accept-eula=true      accept the procdump EULA (process dumps)
  --runtime-dir=PATH               root of the site hosts' runtime folders (default {DEFAULT_RUNTIME_DIR})

Agent configuration:
  plugin_dir = \"/opt/nomad/plugins\"      # holds this binary
  plugin \"nomad_iis\" {{
    args = [\"--management-api-port=5004\"]
    config {{
      enabled              = true
      fingerprint_interval = \"30s\"
    }}
  }}
",
        version = env!("CARGO_PKG_VERSION")
    )
}

/// Prints the usage text on stdout (for `--help`, run by a person).
pub fn print_usage() {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(usage().as_bytes());
    let _ = stdout.flush();
}

/// What a person who ran the binary by hand reads.
fn not_launched_by_nomad() -> String {
    format!(
        "This is nomad_iis {version}, a HashiCorp Nomad task-driver plugin (driver \"{PLUGIN_NAME}\").
It is started by a Nomad client agent, not by hand. To use it, put this binary into the agent's
plugin_dir and add to the agent configuration:

  plugin \"nomad_iis\" {{
    args = [\"--management-api-port=5004\"]   # optional
    config {{
      enabled = true
    }}
  }}

Run `nomad_iis --help` for every option, or `nomad_iis run JOBFILE` to run a job's iis tasks
on this machine without Nomad.",
        version = env!("CARGO_PKG_VERSION")
    )
}

fn parse_plugin_args(args: &[OsString]) -> Result<PluginArgs, String> {
    PluginArgs::try_parse_from(args).map_err(|e| e.render().to_string())
}

/// The line that says what is wrong in a clap error text (its first non-empty line, without
/// clap's `error: ` prefix); the rest is usage help for people.
fn headline(clap_text: &str) -> &str {
    let first = clap_text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("invalid arguments");
    first.strip_prefix("error: ").unwrap_or(first)
}

/// One hclog JSON line at error level, for problems found before logging is set up.
fn hclog_error_line(message: &str) -> String {
    let line =
        nomad_plugin::logging::render_line(tracing::Level::ERROR, message, serde_json::Map::new());
    String::from_utf8_lossy(&line).into_owned()
}

/// Reports a problem found before logging is up. Nomad logs plain stderr lines at debug level
/// only, so when Nomad launched us the problem goes out as one hclog error line; a person
/// running the binary by hand gets the full text.
fn report_startup_error(headline: &str, full_text: &str) {
    if transport::launched_by_nomad() {
        to_stderr(&hclog_error_line(&format!("nomad_iis: {headline}")));
    } else {
        to_stderr(&format!("nomad_iis: {}", full_text.trim_end()));
    }
}

/// Plugin mode: parses the arguments, checks Nomad's magic cookie and serves the driver until
/// Nomad shuts the plugin down. Tasks (their site hosts) outlive this process.
pub fn main(args: &[OsString]) -> ExitCode {
    let args = match parse_plugin_args(args) {
        Ok(args) => args,
        Err(message) => {
            let headline = format!("invalid plugin arguments: {}", headline(&message));
            report_startup_error(&headline, &message);
            return ExitCode::FAILURE;
        }
    };
    if !transport::launched_by_nomad() {
        to_stderr(&not_launched_by_nomad());
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let message = format!("cannot start the async runtime: {e}");
            report_startup_error(&message, &message);
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve_plugin(args));
    // Background tasks (task watchers, idle streams) must not delay the exit: Nomad kills the
    // plugin 2 s after asking it to stop.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

async fn serve_plugin(args: PluginArgs) -> ExitCode {
    let log_sink = match nomad_plugin::logging::init_hclog(tracing::Level::INFO) {
        Ok(sink) => Some(sink),
        Err(e) => {
            to_stderr(&format!("[WARN]  nomad_iis: logging is off: {e}"));
            None
        }
    };
    install_panic_hook(log_sink.clone());
    let code = run_driver(args).await;
    if let Some(sink) = log_sink {
        sink.flush(Duration::from_millis(300));
    }
    code
}

async fn run_driver(args: PluginArgs) -> ExitCode {
    if let Err(e) = transport::ignore_sigint() {
        tracing::warn!(error = %e, "cannot ignore SIGINT");
    }
    let host_command = match HostCommand::current_exe() {
        Ok(command) => command,
        Err(e) => {
            tracing::error!(error = %e, "cannot find this plugin's own executable");
            return ExitCode::FAILURE;
        }
    };
    // Hosts run in `/`, so they must be told an absolute folder.
    let runtime_root = match std::path::absolute(&args.runtime_dir) {
        Ok(root) => root,
        Err(e) => {
            tracing::error!(path = %args.runtime_dir.display(), error = %e, "--runtime-dir cannot be made absolute");
            return ExitCode::FAILURE;
        }
    };
    let management = match args.management.settings() {
        Ok(settings) => settings,
        Err(e) => {
            tracing::error!(error = %e, "invalid management API settings");
            return ExitCode::FAILURE;
        }
    };
    let mut options = DriverOptions::new(runtime_root, host_command);
    options.management_api = management.as_ref().map(|settings| ManagementApi {
        port: settings.port,
    });
    options.procdump_accept_eula = args.procdump_accept_eula;
    let driver = IisDriver::new(options);
    let engines = crate::capture_engines::engines();
    if let Some(settings) = management {
        tokio::spawn(serve_management(driver.clone(), settings, engines.clone()));
    }
    let listen = match args.port {
        Some(port) => Listen::Tcp { port },
        None => Listen::Unix { dir: None },
    };
    let served = transport::serve(listen, driver.routes(), terminated()).await;
    // The screenshot browser, if one was started, goes with the plugin: closed politely within
    // Nomad's grace period, else killed when the unfinished close is dropped.
    let closing = management::CaptureBackend::shutdown(engines.as_ref());
    if tokio::time::timeout(BROWSER_CLOSE_LIMIT, closing)
        .await
        .is_err()
    {
        tracing::warn!("the screenshot browser did not close in time; killed");
    }
    match served {
        Ok(()) => {
            tracing::info!(
                tasks = driver.tasks().len(),
                "plugin stopped; site hosts keep running"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "plugin transport failed");
            ExitCode::FAILURE
        }
    }
}

/// How long the plugin waits for the screenshot browser to close when it stops (Nomad kills the
/// plugin 2 s after asking it to stop).
const BROWSER_CLOSE_LIMIT: Duration = Duration::from_millis(1000);

/// How long a restarted plugin waits for the previous one to release the API's port.
const MANAGEMENT_BIND_PATIENCE: Duration = Duration::from_secs(30);

/// Serves the Management API once this process turns out to be the long-lived plugin instance
/// (a SetConfig with `nomad_config`): the short-lived launches Nomad makes at agent start never
/// bind, so none of them fails on a busy port. Tasks recovered later appear as they come.
async fn serve_management(
    driver: IisDriver,
    settings: management::Settings,
    engines: std::sync::Arc<crate::capture_engines::Engines>,
) {
    driver.nomad_configured().await;
    let bound = match settings.bind(MANAGEMENT_BIND_PATIENCE).await {
        Ok(bound) => bound,
        Err(e) => {
            tracing::error!(error = %e, "management API not served");
            return;
        }
    };
    driver.set_management_api_served(Some(bound.local_addr().port()));
    let registry = std::sync::Arc::new(driver::DriverRegistry::new(driver.clone()));
    let dumps = driver.clone();
    let api = management::Api::new(
        registry,
        engines,
        settings.credentials.clone(),
        settings.limits,
        std::sync::Arc::new(move || dumps.procdump_allowed()),
    );
    bound.serve(api, std::future::pending()).await;
}

/// How long a panic waits for its log line to be written (the process may be about to end).
const PANIC_FLUSH_LIMIT: Duration = Duration::from_millis(200);

/// Replaces Rust's panic message with one hclog error line. The default message is plain text,
/// which Nomad logs at debug level only, and it is a blocking write to stderr; this line goes
/// through the non-blocking log sink instead (or straight to stderr when logging is off).
fn install_panic_hook(sink: Option<LogSink>) {
    std::panic::set_hook(Box::new(move |info| {
        let line = panic_line(info);
        match &sink {
            Some(sink) => {
                sink.push(line);
                sink.flush(PANIC_FLUSH_LIMIT);
            }
            None => to_stderr(&String::from_utf8_lossy(&line)),
        }
    }));
}

/// The hclog line for a panic: its message, where it happened, the thread and, when
/// `RUST_BACKTRACE` asks for one, the backtrace.
fn panic_line(info: &std::panic::PanicHookInfo<'_>) -> Vec<u8> {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    let mut fields = serde_json::Map::new();
    if let Some(location) = info.location() {
        fields.insert(
            "location".to_owned(),
            format!("{}:{}", location.file(), location.line()).into(),
        );
    }
    let thread = std::thread::current();
    fields.insert(
        "thread".to_owned(),
        thread.name().unwrap_or("unnamed").into(),
    );
    let backtrace = std::backtrace::Backtrace::capture();
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        fields.insert("backtrace".to_owned(), backtrace.to_string().into());
    }
    nomad_plugin::logging::render_line(tracing::Level::ERROR, &format!("panic: {message}"), fields)
}

/// Completes on SIGTERM, so a plain `kill` stops the plugin cleanly (its tasks keep running).
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch for SIGTERM");
            std::future::pending::<()>().await;
        }
    }
}

/// `nomad_iis host --runtime-dir DIR`: runs one task's site host; its exit code tells the driver
/// how it ended (0 graceful, 2 config or certificate error, 3 address in use, 1 other).
pub fn host_main(args: &[OsString]) -> ExitCode {
    let args = match HostArgs::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            to_stderr(&format!(
                "nomad_iis host: {}",
                e.render().to_string().trim_end()
            ));
            return ExitCode::FAILURE;
        }
    };
    let code = host::run_from_runtime_dir(&args.runtime_dir);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<PluginArgs, String> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse_plugin_args(&args)
    }

    #[test]
    fn both_flag_forms_parse() {
        let args = parse(&[
            "--port",
            "0",
            "--management-api-port=5004",
            "--management-api-key",
            "k",
            "--management-api-jwt-secret=s",
            "--procdump-accept-eula=true",
            "--runtime-dir=/tmp/x",
        ])
        .unwrap();
        assert_eq!(args.port, Some(0));
        assert_eq!(args.management.management_api_port, Some(5004));
        let settings = args.management.settings().unwrap().unwrap();
        assert!(settings.credentials.api_key.unwrap().matches(b"k"));
        assert!(settings.credentials.jwt_secret.unwrap().matches(b"s"));
        assert!(args.procdump_accept_eula);
        assert_eq!(args.runtime_dir, PathBuf::from("/tmp/x"));
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.port, None);
        assert!(!defaults.procdump_accept_eula);
        assert_eq!(defaults.runtime_dir, PathBuf::from(DEFAULT_RUNTIME_DIR));
        assert!(
            !parse(&["--procdump-accept-eula", "false"])
                .unwrap()
                .procdump_accept_eula
        );
    }

    #[test]
    fn unknown_flags_and_bad_values_are_named() {
        let err = parse(&["--bogus=1"]).unwrap_err();
        assert!(err.contains("--bogus"), "{err}");
        let err = parse(&["--port=http"]).unwrap_err();
        assert!(err.contains("--port"), "{err}");
        let err = parse(&["--procdump-accept-eula=maybe"]).unwrap_err();
        assert!(err.contains("maybe"), "{err}");
    }

    #[test]
    fn startup_errors_become_one_hclog_error_line() {
        let text = parse(&["--bogus=1"]).unwrap_err();
        let first = headline(&text);
        assert!(first.contains("--bogus"), "{first}");
        assert!(!first.starts_with("error:"), "{first}");
        let line = hclog_error_line(first);
        assert!(!line.contains('\n'));
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(entry["@level"], "error");
        assert_eq!(entry["@message"], first);
        assert_eq!(headline("\n  \n"), "invalid arguments");
    }

    /// A writer into shared memory, standing in for stderr.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Puts Rust's own panic hook back, also when an assertion fails.
    struct RestoreDefaultHook;

    impl Drop for RestoreDefaultHook {
        fn drop(&mut self) {
            drop(std::panic::take_hook());
        }
    }

    #[test]
    fn panics_are_logged_as_one_hclog_error_line() {
        let captured = Captured::default();
        let sink = LogSink::spawn(captured.clone(), 16).unwrap();
        let restore = RestoreDefaultHook;
        install_panic_hook(Some(sink));
        let outcome = std::panic::catch_unwind(|| panic!("boom {}", 42));
        drop(restore);
        assert!(outcome.is_err());
        let written = captured.0.lock().unwrap().clone();
        let text = String::from_utf8(written).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let entry: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(entry["@level"], "error");
        assert_eq!(entry["@message"], "panic: boom 42");
        assert!(
            entry["location"]
                .as_str()
                .is_some_and(|l| l.contains("plugin_mode.rs")),
            "{entry}"
        );
        assert!(entry["thread"].is_string());
        assert!(entry["@timestamp"].is_string());
    }

    #[test]
    fn texts_explain_the_agent_configuration() {
        assert!(usage().contains("plugin \"nomad_iis\""));
        let text = not_launched_by_nomad();
        assert!(text.contains("plugin_dir"));
        assert!(text.contains("--help"));
        assert!(text.contains("nomad_iis run JOBFILE"));
        assert!(text.contains("enabled = true"));
    }
}
