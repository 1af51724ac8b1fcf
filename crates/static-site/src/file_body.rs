//! A response body streaming a byte range of an open file in chunks, for files too big for the cache.
//!
//! The length was promised in `Content-Length` already, so a file that shrinks while we read it ends the
//! body with an error (the connection is then closed) instead of a short, silently wrong response.

use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncSeek;
use tokio_util::io::poll_read_buf;

/// How much we read from disk per frame.
const CHUNK_SIZE: usize = 64 * 1024;

/// Streams `len` bytes of a file starting at an offset.
#[derive(Debug)]
pub(crate) struct FileBody {
    file: tokio::fs::File,
    /// The offset to seek to before the first read; `None` once the seek is done.
    seek_to: Option<u64>,
    /// Whether `start_seek` was issued and we are waiting for it to complete.
    seeking: bool,
    /// Bytes still to send.
    remaining: u64,
    buffer: BytesMut,
}

impl FileBody {
    pub(crate) fn new(file: std::fs::File, offset: u64, len: u64) -> Self {
        FileBody {
            file: tokio::fs::File::from_std(file),
            seek_to: (offset > 0).then_some(offset),
            seeking: false,
            remaining: len,
            buffer: BytesMut::new(),
        }
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
        if let Some(offset) = this.seek_to {
            if !this.seeking {
                Pin::new(&mut this.file).start_seek(SeekFrom::Start(offset))?;
                this.seeking = true;
            }
            ready!(Pin::new(&mut this.file).poll_complete(cx))?;
            this.seek_to = None;
            this.seeking = false;
        }
        let wanted = usize::try_from(this.remaining).map_or(CHUNK_SIZE, |r| r.min(CHUNK_SIZE));
        if this.buffer.capacity() < wanted {
            this.buffer.reserve(wanted);
        }
        let mut limited = (&mut this.buffer).limit(wanted);
        let read = ready!(poll_read_buf(Pin::new(&mut this.file), cx, &mut limited))?;
        if read == 0 {
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was being sent",
            ))));
        }
        this.remaining -= read as u64;
        Poll::Ready(Some(Ok(Frame::data(this.buffer.split().freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
