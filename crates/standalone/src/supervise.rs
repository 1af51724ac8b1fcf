//! Running site hosts as children of `nomad_iis run`: spawn, wait until ready, stop.
//!
//! The only module of this crate with `unsafe`: the child asks the kernel to send it SIGTERM
//! when `run` dies (`PR_SET_PDEATHSIG`), which must be set between fork and exec.

#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use control::{Client, Command, ExitRecord, HostStatus};
use tokio::process::{Child, Command as ProcessCommand};

/// A running host child.
pub struct HostChild {
    /// `alloc/task` for messages.
    pub name: String,
    /// The host's runtime folder.
    pub runtime_dir: PathBuf,
    /// The child process; `None` once reaped.
    pub child: Child,
    /// Its control client.
    pub client: Client,
}

/// Starts `exe host --runtime-dir DIR` and waits until its control socket answers.
pub async fn start(
    exe: &Path,
    name: String,
    runtime_dir: PathBuf,
    ready_within: Duration,
) -> anyhow::Result<(HostChild, HostStatus)> {
    let mut command = ProcessCommand::new(exe);
    command
        .arg("host")
        .arg("--runtime-dir")
        .arg(&runtime_dir)
        .env_remove(nomad_plugin_cookie())
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    // SAFETY: the closure only calls prctl(2), which is async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("cannot start the site host {}", exe.display()))?;
    let client = Client::new(runtime_dir.join(control::CONTROL_SOCKET));
    let mut host = HostChild {
        name,
        runtime_dir,
        child,
        client,
    };
    let deadline = tokio::time::Instant::now() + ready_within;
    loop {
        if let Some(status) = host.child.try_wait()? {
            let reason = read_exit_record(&host.runtime_dir)
                .map(|r| r.reason)
                .unwrap_or_else(|| format!("exited with {status} before it was ready"));
            bail!("{}: {reason}", host.name);
        }
        if host.client.socket().exists() {
            if let Ok(status) = host.client.status().await {
                return Ok((host, status));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = host.child.start_kill();
            bail!(
                "{}: the site host did not become ready within {ready_within:?}",
                host.name
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Asks a host to shut down, waits for it up to `grace` plus a margin, then kills it.
pub async fn stop(host: &mut HostChild, grace: Duration) -> anyhow::Result<()> {
    if host.child.try_wait()?.is_none() {
        let _ = host
            .client
            .clone()
            .with_timeout(Duration::from_secs(2))
            .send(&Command::Shutdown { grace })
            .await;
        let margin = grace + Duration::from_secs(5);
        if tokio::time::timeout(margin, host.child.wait())
            .await
            .is_err()
        {
            host.child
                .start_kill()
                .map_err(|e| anyhow!("cannot kill {}: {e}", host.name))?;
            host.child.wait().await?;
        }
    }
    Ok(())
}

/// Reads the exit record a host left, if any.
pub fn read_exit_record(runtime_dir: &Path) -> Option<ExitRecord> {
    let text = std::fs::read(runtime_dir.join(control::EXIT_RECORD)).ok()?;
    serde_json::from_slice(&text).ok()
}

fn nomad_plugin_cookie() -> &'static str {
    "NOMAD_PLUGIN_MAGIC_COOKIE"
}
