//! Running site hosts as children of `nomad_iis run`: spawn, wait until ready, stop.
//!
//! The only module of this crate with `unsafe`: the child asks the kernel to send it SIGTERM
//! when `run` dies (`PR_SET_PDEATHSIG`), which must be set between fork and exec.

#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::anyhow;
use control::{Client, Command, HostStatus};
use tokio::process::Child;

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

/// Starts `exe host --runtime-dir DIR` and waits until its control socket answers
/// ([`control::launch::spawn_ready`]).
pub async fn start(
    exe: &Path,
    name: String,
    runtime_dir: PathBuf,
    ready_within: Duration,
) -> anyhow::Result<(HostChild, HostStatus)> {
    let mut command = control::launch::host_command(exe, &["host".into()], &runtime_dir);
    command.stdout(Stdio::inherit()).stderr(Stdio::inherit());
    // SAFETY: the closure only calls prctl(2), which is async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    let (child, status) =
        control::launch::spawn_ready(&mut command, &runtime_dir, ready_within, |_| {})
            .await
            .map_err(|e| anyhow!("{name}: {e}"))?;
    let client = Client::new(runtime_dir.join(control::CONTROL_SOCKET));
    Ok((
        HostChild {
            name,
            runtime_dir,
            child,
            client,
        },
        status,
    ))
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
