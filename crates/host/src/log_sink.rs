//! Line-oriented log output that never blocks serving: callers hand lines to a bounded queue,
//! a dedicated thread writes them to the target (a Nomad FIFO, a regular file or `/dev/null`).
//!
//! - A full queue drops the line and counts it.
//! - A FIFO is opened with `O_NONBLOCK`: without a reader the open fails (`ENXIO`) and lines
//!   are dropped and counted until a retry (at most once a second) finds a reader again.
//!   A write that would block (`EAGAIN`, the reader is slow) drops the line; a write to a FIFO
//!   whose reader left (`EPIPE`) closes it and retries later. Lines written to a FIFO are cut
//!   to `PIPE_BUF` bytes, so each is written whole or not at all and readers never see halves.
//! - Anything else is opened for appending (created when missing) and written with blocking
//!   writes on the writer thread.
//! - [`LogSink::close`] writes what is queued and ends the thread; dropping the sink does too.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Lines that may wait for the writer thread.
const QUEUE_LINES: usize = 4096;
/// How often a target that could not be opened is tried again.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);
/// Linux's `PIPE_BUF`: writes up to this size to a pipe are atomic.
const PIPE_BUF: usize = 4096;

enum Message {
    Line(String),
    Close,
}

/// A log target with its writer thread. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub(crate) struct LogSink {
    /// Queue to the writer thread; `None` once closed.
    sender: Mutex<Option<SyncSender<Message>>>,
    /// Lines dropped because the queue was full or the target could not take them.
    dropped: Arc<AtomicU64>,
    /// The writer thread, joined on close.
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Line(_) => f.write_str("Line"),
            Message::Close => f.write_str("Close"),
        }
    }
}

impl LogSink {
    /// Starts a writer thread for `path`. The target is opened on the thread, so a FIFO without
    /// reader or a missing folder never fails this call; only a failing thread spawn does.
    pub fn open(path: &Path, name: &str) -> io::Result<Self> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let target = Target::new(path.to_path_buf());
        let thread_dropped = dropped.clone();
        let thread = std::thread::Builder::new()
            .name(format!("log-{name}"))
            .spawn(move || write_lines(target, receiver, &thread_dropped))?;
        Ok(Self {
            sender: Mutex::new(Some(sender)),
            dropped,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues one line (without its newline). Never blocks.
    pub fn write_line(&self, line: String) {
        let sent = match self.sender.lock() {
            Ok(guard) => match guard.as_ref() {
                Some(sender) => match sender.try_send(Message::Line(line)) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
                },
                None => false,
            },
            Err(_) => false,
        };
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes what is queued, stops the thread and waits for it. Later lines are dropped.
    pub fn close(&self) {
        let sender = self.sender.lock().ok().and_then(|mut s| s.take());
        if let Some(sender) = sender {
            // A blocking send: the writer drains the queue, so there is room soon.
            let _ = sender.send(Message::Close);
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for LogSink {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_lines(mut target: Target, receiver: Receiver<Message>, dropped: &AtomicU64) {
    loop {
        match receiver.recv_timeout(REOPEN_INTERVAL) {
            Ok(Message::Line(line)) => {
                if !target.write_line(line) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Message::Close) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => target.open_if_due(),
        }
    }
}

/// The writer thread's view of the target.
struct Target {
    path: PathBuf,
    file: Option<Open>,
    /// When a closed target may be opened again.
    retry_at: Instant,
}

struct Open {
    file: File,
    is_fifo: bool,
}

impl Target {
    fn new(path: PathBuf) -> Self {
        let mut target = Self {
            path,
            file: None,
            retry_at: Instant::now(),
        };
        target.open_if_due();
        target
    }

    fn open_if_due(&mut self) {
        if self.file.is_some() || Instant::now() < self.retry_at {
            return;
        }
        let is_fifo = std::fs::metadata(&self.path).is_ok_and(|m| m.file_type().is_fifo());
        let opened = if is_fifo {
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.path)
        } else {
            OpenOptions::new()
                .append(true)
                .create(true)
                .open(&self.path)
        };
        match opened {
            Ok(file) => self.file = Some(Open { file, is_fifo }),
            Err(_) => self.retry_at = Instant::now() + REOPEN_INTERVAL,
        }
    }

    /// Writes one line; `false` when it was dropped.
    fn write_line(&mut self, mut line: String) -> bool {
        self.open_if_due();
        let Some(open) = self.file.as_mut() else {
            return false;
        };
        if open.is_fifo && line.len() >= PIPE_BUF {
            let mut cut = PIPE_BUF - 1;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        line.push('\n');
        let result = if open.is_fifo {
            // One write call: atomic for up to PIPE_BUF bytes, so all or nothing.
            open.file.write(line.as_bytes()).map(|_| ())
        } else {
            open.file.write_all(line.as_bytes())
        };
        match result {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(_) => {
                // EPIPE (the reader left) or a broken file: start over later.
                self.file = None;
                self.retry_at = Instant::now() + REOPEN_INTERVAL;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_are_appended_and_closing_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        std::fs::write(&path, "before\n").unwrap();
        let sink = LogSink::open(&path, "test").unwrap();
        sink.write_line("one".into());
        sink.write_line("two".into());
        sink.close();
        sink.write_line("late".into());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "before\none\ntwo\n"
        );
        assert_eq!(sink.dropped(), 1);
    }

    #[test]
    fn a_fifo_without_reader_drops_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let sink = LogSink::open(&path, "test").unwrap();
        sink.write_line("nobody reads this".into());
        sink.close();
        assert_eq!(sink.dropped(), 1);
    }
}
