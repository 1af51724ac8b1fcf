//! The parking lot for idle HTTP/1 keep-alive connections.
//!
//! A connection served by the host's own HTTP/1 loop (`http1.rs`) that has been idle for a
//! short grace period (nothing buffered, no request in flight) ends its task: its socket leaves
//! tokio's reactor and comes here with what it needs to resume — its payload (the connection's
//! context and connection-limit slot) and the deadline of its keep-alive wait. One task per
//! listener owns an epoll instance (itself registered with tokio once) in which the parked
//! sockets wait for readable or hang-up, and a slab of the parked entries (a few dozen bytes
//! each). A readable socket is taken out and handed back to the runtime (a new connection task,
//! which starts by reading); a socket whose keep-alive deadline passed is closed by a sweep; on
//! `stop` (the host's graceful shutdown) every parked socket is closed at once, and so its slot
//! freed, without waiting for anything.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[cfg(test)]
thread_local! {
    /// Connections parked by the lots running on this thread (tests run one runtime thread).
    pub(crate) static PARKED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn count(_change: isize) {
    #[cfg(test)]
    PARKED.with(|p| p.set(p.get().saturating_add_signed(_change)));
}

/// Events taken from epoll at a time.
const BATCH: usize = 256;
/// The sweep for expired deadlines runs at most this often (a parked connection may outlive
/// its deadline by this much).
const SWEEP_MIN: Duration = Duration::from_millis(250);

/// One parked connection.
struct Parked<T> {
    socket: std::net::TcpStream,
    deadline: Instant,
    payload: T,
}

/// Where connections are parked: cheap to clone.
pub(crate) struct Lot<T> {
    sender: mpsc::UnboundedSender<Parked<T>>,
}

impl<T> Clone for Lot<T> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
        }
    }
}

impl<T> Lot<T> {
    /// Parks `stream` until it is readable or `deadline` passes. When the lot is gone (the
    /// host is shutting down) or the socket cannot leave the reactor, it is closed.
    pub fn park(&self, stream: tokio::net::TcpStream, deadline: tokio::time::Instant, payload: T) {
        let Ok(socket) = stream.into_std() else {
            return;
        };
        let parked = Parked {
            socket,
            deadline: deadline.into_std(),
            payload,
        };
        // A failed send drops the socket: closed.
        let _ = self.sender.send(parked);
    }
}

/// The epoll instance, registered with tokio's reactor as one descriptor.
struct Poller(Epoll);

impl AsRawFd for Poller {
    fn as_raw_fd(&self) -> RawFd {
        self.0.0.as_raw_fd()
    }
}

/// A lot made but not yet running.
pub(crate) struct Pending<T> {
    poller: AsyncFd<Poller>,
    receiver: mpsc::UnboundedReceiver<Parked<T>>,
    stop: CancellationToken,
}

impl<T> Pending<T> {
    /// The lot's task, until `stop`: `resume` gets every connection that became readable.
    pub async fn run<R>(self, resume: R)
    where
        R: Fn(tokio::net::TcpStream, tokio::time::Instant, T),
    {
        run(self.poller, self.receiver, self.stop, resume).await;
    }
}

/// Makes a lot (in a runtime): the handle, and the lot to run until `stop`.
pub(crate) fn lot<T>(stop: CancellationToken) -> io::Result<(Lot<T>, Pending<T>)> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io::Error::from)?;
    // Deprecated for descriptors the `AsyncFd` does not own (they could be closed while
    // registered); this one is the epoll instance it owns, open as long as it is registered.
    #[allow(deprecated)]
    let poller = AsyncFd::with_interest(Poller(epoll), tokio::io::Interest::READABLE)?;
    let (sender, receiver) = mpsc::unbounded_channel();
    Ok((
        Lot { sender },
        Pending {
            poller,
            receiver,
            stop,
        },
    ))
}

/// The parked connections, in a slab indexed by their epoll data.
struct Slab<T> {
    entries: Vec<Option<Parked<T>>>,
    free: Vec<usize>,
}

impl<T> Slab<T> {
    fn insert(&mut self, parked: Parked<T>) -> usize {
        match self.free.pop() {
            Some(index) => {
                count(1);
                self.entries[index] = Some(parked);
                index
            }
            None => {
                count(1);
                self.entries.push(Some(parked));
                self.entries.len() - 1
            }
        }
    }

    fn remove(&mut self, index: usize) -> Option<Parked<T>> {
        let parked = self.entries.get_mut(index)?.take()?;
        count(-1);
        self.free.push(index);
        Some(parked)
    }
}

async fn run<T, R>(
    poller: AsyncFd<Poller>,
    mut receiver: mpsc::UnboundedReceiver<Parked<T>>,
    stop: CancellationToken,
    resume: R,
) where
    R: Fn(tokio::net::TcpStream, tokio::time::Instant, T),
{
    let mut slab = Slab {
        entries: Vec::new(),
        free: Vec::new(),
    };
    let mut events = vec![EpollEvent::empty(); BATCH];
    let mut next_sweep: Option<Instant> = None;
    let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
    loop {
        let sweep = async {
            match next_sweep {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            parked = receiver.recv() => {
                // The sender lives as long as the listener's connections: `None` only at exit.
                let Some(parked) = parked else { break };
                let deadline = parked.deadline;
                let index = slab.insert(parked);
                let registered = slab.entries[index].as_ref().map(|p| {
                    poller.get_ref().0.add(&p.socket, EpollEvent::new(interest, index as u64))
                });
                if !matches!(registered, Some(Ok(()))) {
                    // Not watchable: closed.
                    slab.remove(index);
                    continue;
                }
                let at = deadline.max(Instant::now() + SWEEP_MIN);
                next_sweep = Some(next_sweep.map_or(at, |next| next.min(at)));
            }
            ready = poller.readable() => {
                let Ok(mut guard) = ready else { break };
                let count = match poller.get_ref().0.wait(&mut events, EpollTimeout::ZERO) {
                    Ok(count) => count,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(error) => {
                        tracing::warn!(%error, "parking lot: epoll_wait failed; closing its connections");
                        break;
                    }
                };
                if count == 0 {
                    guard.clear_ready();
                    continue;
                }
                for event in &events[..count] {
                    let Ok(index) = usize::try_from(event.data()) else { continue };
                    let Some(parked) = slab.remove(index) else { continue };
                    let _ = poller.get_ref().0.delete(&parked.socket);
                    let flags = event.events();
                    if !flags.contains(EpollFlags::EPOLLIN) {
                        // Hang-up or error with nothing to read: closed here.
                        continue;
                    }
                    if let Ok(stream) = tokio::net::TcpStream::from_std(parked.socket) {
                        resume(stream, parked.deadline.into(), parked.payload);
                    }
                }
            }
            _ = sweep => {
                let now = Instant::now();
                let mut earliest: Option<Instant> = None;
                for index in 0..slab.entries.len() {
                    let Some(deadline) = slab.entries[index].as_ref().map(|p| p.deadline) else {
                        continue;
                    };
                    if deadline <= now {
                        if let Some(parked) = slab.remove(index) {
                            let _ = poller.get_ref().0.delete(&parked.socket);
                        }
                    } else {
                        earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
                    }
                }
                next_sweep = earliest.map(|at| at.max(now + SWEEP_MIN));
                if slab.free.len() == slab.entries.len() {
                    // Nothing parked: give the memory back.
                    slab.entries = Vec::new();
                    slab.free = Vec::new();
                }
            }
        }
    }
    // Dropping the slab closes every parked socket and frees its slot.
    count(-(slab.entries.iter().flatten().count() as isize));
}
