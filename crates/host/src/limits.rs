//! Resource bounds of the host ([`control::HostLimits`]), applied where connections are made:
//! hyper's HTTP/1 and HTTP/2 settings, the connection limit per listener, the back-off when
//! `accept` fails (out of descriptors), and the descriptor limit raised at start.
//!
//! What bounds an attack that opens many HTTP/2 streams and never reads their responses: at most
//! `h2_max_concurrent_streams` streams per connection; each stalled stream holds at most one file
//! chunk, counted against the process-wide response buffer budget (`static_site::budget`), and all
//! streams of one file share its descriptor; connections per listener are capped.

use std::sync::Arc;
use std::time::Duration;

use control::HostLimits;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// hyper refuses a smaller read buffer.
const MIN_HEADER_BUFFER: usize = 8192;
/// Response data buffered per HTTP/2 stream before the stream waits for the client (hyper's
/// default is 400 KiB); one file chunk.
const H2_STREAM_SEND_BUFFER: usize = 64 * 1024;
/// The first pause after a failed `accept`, doubled while failures go on, at most
/// [`ACCEPT_PAUSE_MAX`].
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

pub(crate) fn header_buffer(limits: &HostLimits) -> usize {
    usize::try_from(limits.max_header_size)
        .unwrap_or(usize::MAX)
        .max(MIN_HEADER_BUFFER)
}

/// HTTP/1 settings: header read timeout (hyper's one timer for a request head and an idle
/// keep-alive connection) and the largest request head.
pub(crate) fn configure_http1(builder: &mut http1::Builder, limits: &HostLimits) {
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(header_buffer(limits));
}

/// The auto builder's HTTP/1 settings as [`configure_http1`], and HTTP/2's: concurrent streams,
/// the per-stream send buffer, the header list size, keep-alive pings for dead peers.
pub(crate) fn configure_auto(builder: &mut auto::Builder<TokioExecutor>, limits: &HostLimits) {
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(header_buffer(limits));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams.max(1))
        .max_send_buf_size(H2_STREAM_SEND_BUFFER)
        .max_header_list_size(limits.max_header_size.max(MIN_HEADER_BUFFER as u32))
        .keep_alive_interval(limits.h2_keepalive_interval)
        .keep_alive_timeout(limits.h2_keepalive_interval);
}

/// Admission of one listener: the connection limit and the back-off after failed accepts.
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    pause: Option<Duration>,
}

impl Admission {
    pub fn new(limits: &HostLimits) -> Self {
        let slots = usize::try_from(limits.max_connections_per_listener)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Semaphore::new(slots)),
            pause: None,
        }
    }

    /// Waits for room for one more connection; the permit lives as long as the connection.
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        // The semaphore is never closed; `None` would only mean "no limit".
        Arc::clone(&self.slots).acquire_owned().await.ok()
    }

    /// A connection was accepted: failures are over.
    pub fn accepted(&mut self) {
        self.pause = None;
    }

    /// `accept` failed: how long to pause, and whether this starts an episode worth reporting.
    pub fn failed(&mut self) -> (Duration, bool) {
        let (pause, first) = match self.pause {
            None => (ACCEPT_PAUSE_MIN, true),
            Some(pause) => ((pause * 2).min(ACCEPT_PAUSE_MAX), false),
        };
        self.pause = Some(pause);
        (pause, first)
    }
}

/// Raises the soft limit of open descriptors to the hard limit (the kernel's default soft limit,
/// 1024, is a few hundred connections); returns the limit now in force.
pub fn raise_descriptor_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_and_report_once() {
        let mut admission = Admission::new(&HostLimits::default());
        let (first, report) = admission.failed();
        assert_eq!((first, report), (ACCEPT_PAUSE_MIN, true));
        let mut last = first;
        for _ in 0..20 {
            let (pause, report) = admission.failed();
            assert!(!report);
            assert!(pause >= last && pause <= ACCEPT_PAUSE_MAX);
            last = pause;
        }
        assert_eq!(last, ACCEPT_PAUSE_MAX);
        admission.accepted();
        assert_eq!(admission.failed(), (ACCEPT_PAUSE_MIN, true));
    }

    #[tokio::test]
    async fn the_connection_limit_holds_until_a_connection_ends() {
        let limits = HostLimits {
            max_connections_per_listener: 2,
            ..HostLimits::default()
        };
        let admission = Admission::new(&limits);
        let first = admission.slot().await;
        let _second = admission.slot().await;
        let third = tokio::time::timeout(Duration::from_millis(50), admission.slot()).await;
        assert!(third.is_err(), "a third connection was admitted");
        drop(first);
        assert!(admission.slot().await.is_some());
    }

    #[test]
    fn the_descriptor_limit_is_raised_to_the_hard_limit() {
        use nix::sys::resource::{Resource, getrlimit};
        let now = raise_descriptor_limit().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((now, soft), (hard, hard));
    }
}
