//! A connection's read buffer: taken from the thread's pool when the socket has bytes,
//! given back when all of them have been consumed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use crate::pool;

#[derive(Default)]
pub struct Buffer {
    buf: Option<Vec<u8>>,
    start: usize,
    end: usize,
}

impl Buffer {
    /// The bytes read and not yet consumed.
    pub fn data(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b[self.start..self.end],
            None => &[],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn consume(&mut self, n: usize) {
        debug_assert!(self.start + n <= self.end);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Gives the buffer back to the pool if nothing in it is left to read.
    pub fn release_if_empty(&mut self) {
        if self.is_empty()
            && let Some(b) = self.buf.take()
        {
            pool::give_read(b);
        }
    }

    /// Reads more bytes after those held, taking a buffer from the pool first if none is
    /// held, and making room by moving unread bytes to the front or growing the buffer up
    /// to `limit` bytes. Ready(Ok(0)) is the end of the stream, or a full buffer at
    /// `limit` (the caller tells them apart with `data().len()`). When nothing could be
    /// read and nothing is held, the buffer goes straight back to the pool.
    ///
    /// # Cancel safety
    /// Nothing is lost: bytes read are kept in the buffer.
    pub fn poll_fill<IO: AsyncRead + Unpin>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
        limit: usize,
    ) -> Poll<io::Result<usize>> {
        let buf = self.buf.get_or_insert_with(pool::take_read);
        if self.end == buf.len() {
            if self.start > 0 {
                buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if buf.len() < limit {
                let grown = (buf.len() * 2).min(limit.max(buf.len()));
                buf.resize(grown, 0);
            } else {
                return Poll::Ready(Ok(0));
            }
        }
        let mut rb = ReadBuf::new(&mut buf[self.end..]);
        let res = Pin::new(io).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        match res {
            Poll::Pending => {
                self.release_if_empty();
                Poll::Pending
            }
            Poll::Ready(Err(e)) => {
                self.release_if_empty();
                Poll::Ready(Err(e))
            }
            Poll::Ready(Ok(())) => {
                self.end += n;
                self.release_if_empty();
                Poll::Ready(Ok(n))
            }
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            pool::give_read(b);
        }
    }
}
