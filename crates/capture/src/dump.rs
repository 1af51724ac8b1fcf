//! Dumps of a running process, the way `procdump` makes them on Windows: a full memory image
//! (`procdump -ma`) or a minidump (threads, stacks, modules).
//!
//! - **Full**: gdb's `gcore` attaches, writes an ELF core of all the process's memory and detaches. The
//!   process is stopped while its memory is written (seconds for hundreds of megabytes) and then runs
//!   on.
//! - **Mini**: minidump-writer attaches with ptrace, writes threads, their stacks and the module list
//!   (no heap), and resumes the process. It blocks, so it runs on a blocking thread.
//!
//! Either dump is written into a temporary folder of its own. Once written, the file is opened and the
//! folder removed at once: the open file keeps the data readable until the [`DumpFile`] (or its stream)
//! is dropped, and nothing is left in any temporary folder even if the stream is never read, the caller
//! goes away or the process crashes. A dump cancelled half-way kills `gcore` (and its gdb) and sends the
//! target `SIGCONT`, in case it was left stopped.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use minidump_writer::minidump_writer::MinidumpWriterConfig;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncRead;

use crate::{CaptureError, locate, process_alive};

/// The Debian package that provides `gcore`.
const GDB_PACKAGE: &str = "gdb";

/// Which dump to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpKind {
    /// All of the process's memory as an ELF core file (`gcore`).
    Full,
    /// Threads, stacks and modules as a minidump.
    Mini,
}

/// A finished dump: an open file whose name is already gone, so it disappears when dropped.
#[derive(Debug)]
pub struct DumpFile {
    file: tokio::fs::File,
    len: u64,
}

impl DumpFile {
    /// The size of the dump in bytes (for `Content-Length`).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the dump is empty (it never is when `dump` succeeded).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The dump's bytes from the start. The file is gone from disk once the stream is dropped.
    pub fn into_stream(self) -> impl AsyncRead + Send + Unpin + 'static {
        self.file
    }
}

/// Dumps process `pid`, which keeps running.
///
/// Errors: [`CaptureError::ProcessNotFound`] when there is no such process (or it exits during the
/// dump), [`CaptureError::ToolMissing`] for a full dump without gdb installed, [`CaptureError::Failed`]
/// otherwise (e.g. not permitted to trace the process).
pub async fn dump(pid: u32, kind: DumpKind) -> Result<DumpFile, CaptureError> {
    if !process_alive(pid) {
        return Err(CaptureError::ProcessNotFound(pid));
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("nomad-iis-dump-{pid}-"))
        .tempdir()
        .map_err(|e| CaptureError::Failed(format!("creating a folder for the dump: {e}")))?;
    let started = std::time::Instant::now();
    let path = match kind {
        DumpKind::Full => full(pid, dir.path()).await?,
        DumpKind::Mini => mini(pid, dir.path()).await?,
    };
    let file = std::fs::File::open(&path)
        .map_err(|e| CaptureError::Failed(format!("opening the dump {}: {e}", path.display())))?;
    let len = file
        .metadata()
        .map_err(|e| {
            CaptureError::Failed(format!(
                "reading the size of the dump {}: {e}",
                path.display()
            ))
        })?
        .len();
    // Unlink now: the open file is all that is left, and it goes when it is dropped.
    let dir_path = dir.path().to_path_buf();
    if let Err(e) = dir.close() {
        tracing::warn!(path = %dir_path.display(), error = %e, "removing the dump folder");
    }
    tracing::info!(
        pid,
        ?kind,
        bytes = len,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "process dumped"
    );
    Ok(DumpFile {
        file: tokio::fs::File::from_std(file),
        len,
    })
}

/// `gcore -o <dir>/core <pid>`, which writes `<dir>/core.<pid>`.
async fn full(pid: u32, dir: &Path) -> Result<PathBuf, CaptureError> {
    let gcore = locate::find(&["gcore"]).ok_or(CaptureError::ToolMissing {
        package: GDB_PACKAGE,
    })?;
    let prefix = dir.join("core");
    let child = tokio::process::Command::new(&gcore)
        .arg("-o")
        .arg(&prefix)
        .arg(pid.to_string())
        // gdb must never try to fetch debug symbols over the network.
        .env("DEBUGINFOD_URLS", "")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // gcore is a script that runs gdb: a group of their own lets a cancelled dump kill both.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CaptureError::ToolMissing {
                package: GDB_PACKAGE,
            },
            _ => CaptureError::Failed(format!("starting {}: {e}", gcore.display())),
        })?;
    let mut guard = CancelGuard {
        group: child.id(),
        target: pid,
    };
    let output = child.wait_with_output().await;
    guard.group = None;
    let output = output.map_err(|e| CaptureError::Failed(format!("waiting for gcore: {e}")))?;
    let core = dir.join(format!("core.{pid}"));
    if output.status.success() && core.is_file() {
        return Ok(core);
    }
    if !process_alive(pid) {
        return Err(CaptureError::ProcessNotFound(pid));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let said = last_lines(&format!("{stdout}\n{stderr}"), 4);
    Err(CaptureError::Failed(format!(
        "gcore {pid} failed ({}): {said}",
        output.status
    )))
}

/// A minidump written by minidump-writer on a blocking thread into `<dir>/minidump.<pid>.dmp`.
async fn mini(pid: u32, dir: &Path) -> Result<PathBuf, CaptureError> {
    let target = i32::try_from(pid).map_err(|_| CaptureError::ProcessNotFound(pid))?;
    let path = dir.join(format!("minidump.{pid}.dmp"));
    let destination = path.clone();
    let written = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut file = std::fs::File::create(&destination)
            .map_err(|e| format!("creating {}: {e}", destination.display()))?;
        // The main thread is named as the "crashing" one: there is no crash, and it always exists.
        MinidumpWriterConfig::new(target, target)
            .write(&mut file)
            .map_err(|e| error_chain(&e))?;
        Ok(())
    })
    .await
    .map_err(|e| CaptureError::Failed(format!("minidump task failed: {e}")))?;
    match written {
        Ok(()) => Ok(path),
        Err(_) if !process_alive(pid) => Err(CaptureError::ProcessNotFound(pid)),
        Err(e) => Err(CaptureError::Failed(format!("minidump of {pid}: {e}"))),
    }
}

/// Kills a still-running gcore (and its gdb) when the dump is abandoned, and resumes the target in case
/// the dying debugger left it stopped.
struct CancelGuard {
    group: Option<u32>,
    target: u32,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        let Some(group) = self.group.and_then(|g| i32::try_from(g).ok()) else {
            return;
        };
        if let Err(e) = killpg(Pid::from_raw(group), Signal::SIGKILL) {
            tracing::debug!(group, error = %e, "killing gcore");
        }
        if let Ok(target) = i32::try_from(self.target) {
            let _ = kill(Pid::from_raw(target), Signal::SIGCONT);
        }
    }
}

/// An error and its sources on one line: minidump-writer's top-level messages alone say little.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_keeps_the_tail_without_blanks() {
        assert_eq!(last_lines("a\n\nb\n c \nd\n", 2), "c / d");
        assert_eq!(last_lines("", 3), "");
    }
}
