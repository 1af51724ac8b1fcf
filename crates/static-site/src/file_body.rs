//! A response body streaming a byte range of a file in chunks, for files too big for the cache.
//!
//! The length was promised in `Content-Length` already, so a file that shrinks while we read it ends the
//! body with an error (the connection is then closed) instead of a short, silently wrong response.
//!
//! Bounded, so that clients that never read cannot make the host hold memory or descriptors without end
//! (`budget`): every response streaming the same file shares one descriptor, read with positional reads;
//! and a chunk is read only once the process-wide response buffer budget has room for it. The budget is
//! given back when the chunk's last copy is dropped, i.e. once the connection wrote it to the socket — a
//! stream whose client does not read holds at most one chunk.

use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio_util::sync::PollSemaphore;

use crate::budget;

/// How much we read from disk per frame.
const CHUNK_SIZE: usize = 64 * 1024;

/// Streams `len` bytes of a file starting at an offset.
#[derive(Debug)]
pub(crate) struct FileBody {
    file: Arc<std::fs::File>,
    /// Where the next chunk starts.
    offset: u64,
    /// Bytes still to send.
    remaining: u64,
    /// The process-wide response buffer budget, when one is set.
    budget: Option<PollSemaphore>,
    /// Budget taken for the chunk being read.
    permit: Option<OwnedSemaphorePermit>,
    /// The chunk being read on the blocking pool.
    reading: Option<JoinHandle<io::Result<Vec<u8>>>>,
}

impl FileBody {
    pub(crate) fn new(file: Arc<std::fs::File>, offset: u64, len: u64) -> Self {
        FileBody {
            file,
            offset,
            remaining: len,
            budget: budget::response_buffer().map(PollSemaphore::new),
            permit: None,
            reading: None,
        }
    }
}

/// A chunk that gives its budget back when its last copy is dropped.
struct Budgeted {
    data: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let wanted = usize::try_from(this.remaining).map_or(CHUNK_SIZE, |r| r.min(CHUNK_SIZE));
        if this.reading.is_none() {
            if let Some(budget) = &mut this.budget
                && this.permit.is_none()
            {
                // `wanted` is at most CHUNK_SIZE, far below u32::MAX.
                let permits = u32::try_from(wanted).unwrap_or(u32::MAX);
                match ready!(budget.poll_acquire_many(cx, permits)) {
                    Some(permit) => this.permit = Some(permit),
                    // A closed semaphore: no budget any more, read unbounded.
                    None => this.budget = None,
                }
            }
            let (file, offset) = (Arc::clone(&this.file), this.offset);
            this.reading = Some(tokio::task::spawn_blocking(move || {
                let mut data = vec![0; wanted];
                let read = file.read_at(&mut data, offset)?;
                data.truncate(read);
                Ok(data)
            }));
        }
        let Some(reading) = &mut this.reading else {
            return Poll::Ready(None);
        };
        let read = ready!(Pin::new(reading).poll(cx));
        this.reading = None;
        let data = read.map_err(io::Error::other)??;
        if data.is_empty() {
            this.permit = None;
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was being sent",
            ))));
        }
        this.remaining -= data.len() as u64;
        this.offset += data.len() as u64;
        let bytes = match this.permit.take() {
            Some(permit) => Bytes::from_owner(Budgeted {
                data,
                _permit: permit,
            }),
            None => Bytes::from(data),
        };
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

impl Drop for FileBody {
    fn drop(&mut self) {
        // A read under way finishes on the blocking pool; its result is not wanted.
        if let Some(reading) = self.reading.take() {
            reading.abort();
        }
    }
}
