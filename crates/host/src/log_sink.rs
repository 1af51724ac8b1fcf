//! Line-oriented log output that never blocks serving: callers append lines to a bounded
//! in-memory queue, a dedicated thread writes them to the target (a Nomad FIFO or a regular
//! file) in batches. A target of `/dev/null` means no log at all: no thread, and
//! [`LogSink::is_enabled`] tells callers not to format lines in the first place.
//!
//! - Appending takes a short lock and wakes the writer only when it is idle; woken, the writer
//!   waits [`BATCH_INTERVAL`] before it takes the lines, and while lines keep coming it takes
//!   whatever accumulated every interval. Under load it makes a few hundred writes a second
//!   instead of one write and two context switches per line.
//! - A full queue drops the line and counts it.
//! - A FIFO is opened with `O_NONBLOCK`: without a reader the open fails (`ENXIO`) and lines
//!   are dropped and counted until a retry (at most once a second) finds a reader again.
//!   Lines go to a FIFO in writes of whole lines of at most `PIPE_BUF` bytes (longer lines are
//!   cut), so every write is all or nothing and readers never see half a line. A write that
//!   would block (`EAGAIN`, the reader is slow) keeps the lines and tries again, up to the
//!   queue's size, beyond which new lines are dropped; a FIFO whose reader left (`EPIPE`) is
//!   closed, its pending lines dropped, and opened again later.
//! - Anything else is opened for appending (created when missing) and written with blocking
//!   writes on the writer thread.
//! - [`LogSink::close`] writes what is queued and ends the thread; dropping the sink does too.
//!   Lines a FIFO cannot take by then are dropped and counted.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes of lines that may wait for the writer (and, separately, for a slow FIFO reader).
const QUEUE_BYTES: usize = 1 << 20;
/// How often a target that could not be opened is tried again.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);
/// Linux's `PIPE_BUF`: writes up to this size to a pipe are atomic.
const PIPE_BUF: usize = 4096;
/// How long a busy writer lets lines accumulate before it takes the next batch; also how soon
/// it tries again when a FIFO reader is slow. A line reaches the target at most about this
/// long after it was queued.
pub(crate) const BATCH_INTERVAL: Duration = Duration::from_millis(2);

/// The target that means "no log".
const DISCARD: &str = "/dev/null";

/// A log target with its writer thread. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub(crate) struct LogSink {
    /// `None` when the target is `/dev/null`.
    shared: Option<Arc<Shared>>,
    /// The writer thread, joined on close.
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What the callers and the writer thread share.
#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when lines arrive for an idle writer, and on close.
    wake: Condvar,
    /// Lines dropped because the queue was full or the target could not take them.
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    /// Whole lines, each ending in `\n`.
    text: String,
    /// The writer waits for lines and must be woken.
    writer_idle: bool,
    /// No more lines are taken.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Appending leaves the queue consistent before anything that could panic.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LogSink {
    /// Starts a writer thread for `path`, or none for `/dev/null`. The target is opened on the
    /// thread, so a FIFO without reader or a missing folder never fails this call; only a
    /// failing thread spawn does.
    pub fn open(path: &Path, name: &str) -> io::Result<Self> {
        if path == Path::new(DISCARD) {
            return Ok(Self {
                shared: None,
                thread: Mutex::new(None),
            });
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let target = Target::new(path.to_path_buf());
        let writer_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("log-{name}"))
            .spawn(move || write_lines(target, &writer_shared))?;
        Ok(Self {
            shared: Some(shared),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Whether lines go anywhere; `false` for `/dev/null`, so callers can skip formatting.
    pub fn is_enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// Queues one line (without its newline). Never blocks on I/O.
    #[cfg(test)]
    pub fn write_line(&self, line: &str) {
        self.write_with(|text| text.push_str(line));
    }

    /// Queues one line that `format` appends (without its newline) to the queue's text, so the
    /// line needs no allocation of its own. `format` runs under the queue's lock: keep it short.
    /// Never blocks on I/O.
    pub fn write_with(&self, format: impl FnOnce(&mut String)) {
        let Some(shared) = &self.shared else {
            return;
        };
        let mut queue = shared.lock();
        if queue.closed || queue.text.len() >= QUEUE_BYTES {
            drop(queue);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        format(&mut queue.text);
        queue.text.push('\n');
        let wake = std::mem::take(&mut queue.writer_idle);
        drop(queue);
        if wake {
            shared.wake.notify_one();
        }
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared
            .as_ref()
            .map_or(0, |shared| shared.dropped.load(Ordering::Relaxed))
    }

    /// Writes what is queued, stops the thread and waits for it. Later lines are dropped.
    pub fn close(&self) {
        if let Some(shared) = &self.shared {
            shared.lock().closed = true;
            shared.wake.notify_one();
        }
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
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

/// The writer thread: takes batches from the queue and writes them until closed.
fn write_lines(mut target: Target, shared: &Shared) {
    let mut batch = String::new();
    let mut pending = Vec::new();
    loop {
        let closed = {
            let mut queue = shared.lock();
            if queue.text.is_empty() && !queue.closed {
                // Lines a slow FIFO reader has not taken yet are retried soon; otherwise sleep
                // until lines arrive (checking once in a while whether the target can be opened).
                let wait = if pending.is_empty() {
                    REOPEN_INTERVAL
                } else {
                    BATCH_INTERVAL
                };
                queue.writer_idle = true;
                queue = shared
                    .wake
                    .wait_timeout(queue, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                let woken = !queue.writer_idle;
                queue.writer_idle = false;
                if woken && !queue.closed {
                    // The first line after a quiet spell: let more arrive before writing, or
                    // every line of a trickle would wake the writer again (and, on a busy
                    // core, switch to it and back).
                    drop(queue);
                    std::thread::sleep(BATCH_INTERVAL);
                    queue = shared.lock();
                }
            }
            std::mem::swap(&mut queue.text, &mut batch);
            queue.closed
        };
        // The queue itself is bounded, so a batch is always taken when nothing is pending
        // (else a writer that started late would drop the whole first batch, oldest lines
        // included); with lines pending, a batch that would overflow is dropped.
        if !pending.is_empty() && pending.len() + batch.len() > QUEUE_BYTES {
            shared
                .dropped
                .fetch_add(count_lines(batch.as_bytes()), Ordering::Relaxed);
        } else {
            pending.extend_from_slice(batch.as_bytes());
        }
        batch.clear();
        if pending.is_empty() {
            target.open_if_due();
        } else {
            let dropped = target.write(&mut pending);
            shared.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if closed {
            shared
                .dropped
                .fetch_add(count_lines(&pending), Ordering::Relaxed);
            break;
        }
        if !pending.is_empty() || !shared.lock().text.is_empty() {
            // Busy (or a slow reader): let lines accumulate rather than write each one.
            std::thread::sleep(BATCH_INTERVAL);
        }
    }
}

fn count_lines(text: &[u8]) -> u64 {
    text.iter().filter(|&&b| b == b'\n').count() as u64
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

/// `/dev/stdout` and `/dev/stderr` (standalone mode's targets) are the streams the host
/// inherited: they are duplicated, not opened again. Opening them again makes a new file
/// description with its own offset when they are a regular file (`nomad_iis run … > out.txt`),
/// and the parent's writes, at its own offset, then overwrite the host's lines, leaving stray
/// fragments such as `0.0.0:18443`.
fn inherited_stream(path: &Path) -> Option<io::Result<File>> {
    use std::os::fd::AsFd;
    let duplicate = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned().map(File::from);
    match path.to_str()? {
        "/dev/stdout" | "/dev/fd/1" | "/proc/self/fd/1" => Some(duplicate(io::stdout().as_fd())),
        "/dev/stderr" | "/dev/fd/2" | "/proc/self/fd/2" => Some(duplicate(io::stderr().as_fd())),
        _ => None,
    }
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
        if let Some(inherited) = inherited_stream(&self.path) {
            // Blocking writes: O_NONBLOCK would be shared with the parent's descriptor.
            match inherited {
                Ok(file) => {
                    self.file = Some(Open {
                        file,
                        is_fifo: false,
                    })
                }
                Err(_) => self.retry_at = Instant::now() + REOPEN_INTERVAL,
            }
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

    /// Writes the whole lines in `pending` as far as the target takes them, removing what was
    /// written or dropped; returns how many lines were dropped.
    fn write(&mut self, pending: &mut Vec<u8>) -> u64 {
        self.open_if_due();
        let Some(open) = self.file.as_mut() else {
            let dropped = count_lines(pending);
            pending.clear();
            return dropped;
        };
        let result = if open.is_fifo {
            write_to_fifo(&mut open.file, pending)
        } else {
            open.file.write_all(pending).map(|()| pending.clear())
        };
        match result {
            Ok(()) => 0,
            Err(_) => {
                // EPIPE (the reader left) or a broken file: start over later.
                self.file = None;
                self.retry_at = Instant::now() + REOPEN_INTERVAL;
                let dropped = count_lines(pending);
                pending.clear();
                dropped
            }
        }
    }
}

/// Writes `pending` to a non-blocking FIFO in atomic writes of whole lines, removing what was
/// written. Stops without error when the pipe is full; what is left stays in `pending`.
fn write_to_fifo(fifo: &mut File, pending: &mut Vec<u8>) -> io::Result<()> {
    let mut done = 0;
    let mut cut_line = Vec::new();
    let outcome = loop {
        let rest = &pending[done..];
        if rest.is_empty() {
            break Ok(());
        }
        // The longest run of whole lines that fits one atomic write.
        let fits = &rest[..rest.len().min(PIPE_BUF)];
        let (chunk, consumed) = match fits.iter().rposition(|&b| b == b'\n') {
            Some(end) => (&fits[..=end], end + 1),
            None => {
                // One line longer than an atomic write: send its start.
                let line_end = rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(rest.len(), |i| i + 1);
                let mut cut = PIPE_BUF - 1;
                // Back to a UTF-8 character boundary (not inside a continuation byte).
                while cut > 0 && rest[cut] & 0xC0 == 0x80 {
                    cut -= 1;
                }
                cut_line.clear();
                cut_line.extend_from_slice(&rest[..cut]);
                cut_line.push(b'\n');
                (&cut_line[..], line_end)
            }
        };
        match fifo.write(chunk) {
            // Writes up to PIPE_BUF bytes to a pipe are all or nothing.
            Ok(_) => done += consumed,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    pending.drain(..done);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    #[test]
    fn regular_files_are_appended_and_closing_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        std::fs::write(&path, "before\n").unwrap();
        let sink = LogSink::open(&path, "test").unwrap();
        assert!(sink.is_enabled());
        sink.write_line("one");
        sink.write_with(|text| text.push_str("two"));
        sink.close();
        sink.write_line("late");
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
        sink.write_line("nobody reads this");
        sink.close();
        assert_eq!(sink.dropped(), 1);
    }

    #[test]
    fn dev_null_is_no_log_at_all() {
        let sink = LogSink::open(Path::new("/dev/null"), "test").unwrap();
        assert!(!sink.is_enabled());
        sink.write_with(|_| panic!("a line for /dev/null was formatted"));
        sink.close();
        assert_eq!(sink.dropped(), 0, "lines that are off are not dropped ones");
    }

    /// A reader that does not read until the pipe, the pending lines and the queue are full,
    /// then reads everything: each line arrives whole and in order, an over-long line is cut
    /// to one atomic write, and every line is either read or counted as dropped.
    #[test]
    fn a_slow_fifo_reader_gets_whole_lines_and_the_rest_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let sink = LogSink::open(&path, "test").unwrap();

        let long = "é".repeat(PIPE_BUF);
        sink.write_line(&long);
        let total = 40_000u64;
        for i in 1..total {
            sink.write_with(|text| {
                use std::fmt::Write as _;
                let _ = write!(text, "line {i:06} {}", "x".repeat(80));
            });
        }
        let started = Instant::now();
        while sink.dropped() == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "nothing was dropped although nobody read"
            );
            std::thread::sleep(Duration::from_millis(10));
        }

        // On a busy machine the writer thread may not have written yet: wait for its first
        // byte before switching to blocking reads.
        let mut head = [0u8; 1];
        loop {
            match (&reader).read(&mut head) {
                Ok(1) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("reading the FIFO: {e}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the writer never wrote"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Blocking reads from now on: the sink holds the write end, so end of file comes when
        // it closes.
        nix::fcntl::fcntl(
            reader.as_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        )
        .unwrap();
        let read_all = std::thread::spawn(move || {
            let mut reader = reader;
            let mut bytes = head.to_vec();
            reader.read_to_end(&mut bytes).map(|_| bytes)
        });
        sink.close();
        let text = String::from_utf8(read_all.join().unwrap().unwrap()).unwrap();

        let mut lines = text.lines();
        let first = lines.next().unwrap();
        assert!(
            first.len() < PIPE_BUF && first.len() > PIPE_BUF - 4,
            "{}",
            first.len()
        );
        assert!(first.chars().all(|c| c == 'é'));
        let mut read = 1;
        let mut last = 0;
        for line in lines {
            let number: u64 = line[5..11].parse().unwrap();
            assert!(number > last, "line {number} after {last}");
            assert_eq!(line.len(), 92, "{line}");
            last = number;
            read += 1;
        }
        assert_eq!(read + sink.dropped(), total, "a line was lost uncounted");
    }
}
