//! The per-task site host: the process `nomad_iis host --runtime-dir DIR` that serves one Nomad
//! task's IIS-style site — its bindings (HTTP, HTTPS with SNI), its applications under path
//! aliases, and their application pools — and takes commands on a unix control socket.
//!
//! The host knows nothing of Nomad or of job files: the driver (or `nomad_iis run`) resolves
//! everything into a [`control::HostSpec`] and writes it to `DIR/spec.json`.
//!
//! # Entry points
//! - [`run_from_runtime_dir`]: the process entry point; builds its own tokio runtime, handles
//!   signals, writes `DIR/exit.json`, returns the exit code.
//! - [`run`]: start, serve until a shutdown future resolves, drain; for tests and in-process use.
//! - [`Host`] / [`HostHandle`]: the same in steps, with status and commands.
//!
//! # Layout
//! - `plan`: checks the spec and groups bindings into listeners.
//! - `tls`: certificates (PEM, PFX, self-signed), the SNI resolver, rustls configuration.
//! - `placeholder`: creates application folders and fills empty ones.
//! - `router`: host header and path alias → application, virtual directory, remainder.
//! - `pool`: pool state machine, admission and in-flight counting, static sites, worker
//!   supervision (on-demand and always-running starts, overlapped recycle, idle timeout,
//!   periodic restart, rapid-fail protection), events to the host.
//! - `worker`: one worker process: configuration (`process {}` or `web.config`), port,
//!   environment, readiness, output, stop.
//! - `os`: the pre-`exec` code of worker children (the crate's only `unsafe`).
//! - `proxy`: the reverse proxy to worker processes (forwarded headers, token, streaming,
//!   WebSocket upgrades, 502/504, pooled keep-alive upstream connections).
//! - `server`: binding, accept loops, HTTP/1.1 + HTTP/2, the request handler, draining.
//! - `strict`: requests refused before routing (RFC 9112 / nginx strictness), the log line
//!   for requests hyper refuses itself.
//! - `access_log`: the access log line and the body wrapper that writes it.
//! - `log_sink`: non-blocking line output to FIFOs and files.
//! - `limits`: resource bounds (HTTP/1 and HTTP/2 settings, connections per listener, accept
//!   back-off, the descriptor limit).
//! - `control_server`: the unix-socket control API.
//! - `host`: start-up order, shared state, commands, shutdown.
//!
//! # Errors
//! Start-up failures are a [`StartupError`] whose message names the spec field, file or
//! address, and whose [`StartupError::exit_code`] is the process exit code: 0 graceful stop,
//! 1 anything else, 2 bad spec or certificate, 3 an address that could not be bound. Once
//! running, nothing stops the host but a shutdown: a failing connection, certificate
//! handshake or log target is logged (the task's stderr) and the host keeps serving. Control
//! commands answer errors as `Reply::Error` and change nothing.
//!
//! # Signals
//! SIGTERM and SIGINT drain and exit 0, with the largest `shutdown_time_limit` of the pools as
//! grace, at most [`MAX_SIGNAL_GRACE`]; SIGHUP recycles every pool.

// `unsafe` only in `os` (the code a worker's child runs before `exec`).
#![deny(unsafe_code)]

/// The allocator: jemalloc, which gives memory back to the system after a burst (a
/// background thread purges pages unused for a second), chosen by measurement against glibc's
/// malloc and mimalloc (BENCHMARKS.md, "Memory per idle connection").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read by jemalloc itself at its start (its `malloc_conf`): unused dirty
/// pages are returned after 1 s by one background thread, instead of on later allocations
/// only (an idle host makes none).
// The one way to hand jemalloc its options before its first allocation; the name is
// jemalloc's own and nothing else in the program defines it.
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &u8 =
    &b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];

mod access_log;
mod control_server;
mod error;
mod host;
mod http1;
mod limits;
mod log_sink;
mod os;
mod park;
mod placeholder;
mod plan;
mod pool;
mod proxy;
mod router;
mod server;
mod strict;
#[cfg(test)]
mod test_support;
mod tls;
mod upstream;
mod worker;

use std::path::Path;

use control::{Command, ExitRecord, HostSpec};
use tokio::signal::unix::{SignalKind, signal};

pub use error::{EXIT_BIND, EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, StartupError};
pub use host::{Host, HostHandle, MAX_SIGNAL_GRACE, run};
pub use tls::{CertificateError, SniResolver, load_certificate};

/// Threads for file system work (lookups on a cache miss, chunks of streamed files). Tokio's
/// default, 512, lets a burst of stalled HTTP/2 streams start hundreds of threads, each with its
/// stack and malloc arena, and the memory stays with the process after the burst; the disk does
/// not get faster with more threads than this.
const MAX_BLOCKING_THREADS: usize = 32;

/// Reads `DIR/spec.json`, runs the host until it is shut down, writes `DIR/exit.json` and
/// returns the exit code. Builds a tokio runtime with one worker per CPU the process may use;
/// with one CPU, a current-thread runtime, which serves a request with less bookkeeping than a
/// work-stealing scheduler with a single worker. The control socket is `DIR/control.sock`,
/// whatever `runtime_dir` the spec names.
pub fn run_from_runtime_dir(dir: &Path) -> i32 {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .build()
    };
    let record = match runtime {
        // Panics inside connection tasks are contained by tokio; one that reaches the top would
        // end the process without a record, and a restarted plugin would then report SIGKILL.
        Ok(runtime) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(run_process(dir))
        }))
        .unwrap_or_else(|payload| ExitRecord {
            code: EXIT_FAILURE,
            reason: format!("site host panicked: {}", panic_message(payload.as_ref())),
        }),
        Err(e) => ExitRecord {
            code: EXIT_FAILURE,
            reason: format!("cannot start the async runtime: {e}"),
        },
    };
    if let Err(e) = control::files::write_exit_record(dir, &record) {
        tracing::error!(error = %e, "cannot write the exit record");
    }
    record.code
}

/// The text of a panic payload (`&str` or `String`, as `panic!` makes them).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Reads and decodes `DIR/spec.json` ([`control::files::read_spec`]); [`Host::start`] checks it.
pub fn read_spec(dir: &Path) -> Result<HostSpec, StartupError> {
    control::files::read_spec(dir).map_err(|e| match e {
        control::FileError::Io { path, source } => StartupError::SpecUnreadable {
            reason: error::describe_io(&source),
            path,
        },
        control::FileError::Invalid { path, detail, .. } => {
            StartupError::SpecInvalid { path, detail }
        }
    })
}

async fn run_process(dir: &Path) -> ExitRecord {
    let mut spec = match read_spec(dir) {
        Ok(spec) => spec,
        Err(error) => return error.to_exit_record(),
    };
    // The folder the host was started with holds the spec and gets the exit record; the
    // control socket belongs beside them even if the spec was copied from elsewhere.
    spec.runtime_dir = dir.to_path_buf();
    // Process-wide bounds: the descriptor limit, the budget of streamed response data.
    let descriptors = limits::raise_descriptor_limit();
    tracing::debug!(?descriptors, "descriptor limit");
    static_site::budget::set_response_buffer_budget(spec.limits.response_buffer_budget);
    // Installed before start-up, so a SIGTERM during it does not kill the host unrecorded.
    let signals = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(term), Ok(int), Ok(hup)) => (term, int, hup),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return ExitRecord {
                code: EXIT_FAILURE,
                reason: format!("cannot install signal handlers: {e}"),
            };
        }
    };
    let host = match Host::start(spec).await {
        Ok(host) => host,
        Err(error) => return error.to_exit_record(),
    };
    let handle = host.handle();
    let watcher = tokio::spawn(watch_signals(handle, signals));
    let record = host.wait().await;
    watcher.abort();
    record
}

async fn watch_signals(
    handle: HostHandle,
    (mut term, mut int, mut hup): (
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    ),
) {
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => {
                // In a task of its own: a recycle waits for new workers, and a SIGTERM meanwhile
                // must still be heard.
                let handle = handle.clone();
                tokio::spawn(async move {
                    if let control::Reply::Error { message } =
                        handle.apply(&Command::RecyclePool { pool: None }).await
                    {
                        tracing::warn!("SIGHUP recycle failed: {message}");
                    }
                });
                continue;
            }
        };
        handle.request_shutdown(handle.default_grace(), format!("stopped by signal {name}"));
    }
}
