//! The request body handed to the service: an `http_body::Body` whose bytes the connection
//! reads and decodes on demand. Nothing is read before the service asks for it (so an
//! `Expect: 100-continue` client is only told to go on then), and at most one chunk is in
//! flight: the body is backpressured by the service, like a socket.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::{BodyError, BodyErrorKind};

/// A request body. A request without one (no `Content-Length`, or 0) holds nothing and
/// allocates nothing.
#[derive(Debug, Default)]
pub struct RequestBody {
    shared: Option<Arc<Shared>>,
    /// The exact length, for a `Content-Length` body.
    length: Option<u64>,
}

impl RequestBody {
    /// A body with no bytes.
    pub fn empty() -> RequestBody {
        RequestBody::default()
    }

    pub(crate) fn streamed(length: Option<u64>) -> (RequestBody, Arc<Shared>) {
        let shared = Arc::new(Shared::default());
        (
            RequestBody {
                shared: Some(shared.clone()),
                length,
            },
            shared,
        )
    }
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    /// Decoded bytes not yet taken by the body.
    pub chunk: Option<Bytes>,
    pub end: End,
    /// The body asked for more and got nothing yet.
    pub wants: bool,
    /// The body was dropped: nobody will read the rest.
    pub dropped: bool,
    body: Option<Waker>,
    conn: Option<Waker>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum End {
    #[default]
    Open,
    Done,
    Failed(BodyErrorKind),
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; go on with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Wakes the body's reader (after a chunk, the end or an error).
    pub fn wake_body(&mut self) {
        if let Some(w) = self.body.take() {
            w.wake();
        }
    }

    /// Remembers the connection's task, to wake it when the body wants more or is dropped.
    pub fn park_conn(&mut self, cx: &Context<'_>) {
        match &self.conn {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.conn = Some(cx.waker().clone()),
        }
    }

    fn wake_conn(&mut self) {
        if let Some(w) = self.conn.take() {
            w.wake();
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(shared) = &self.shared else {
            return Poll::Ready(None);
        };
        let mut inner = shared.lock();
        if let Some(chunk) = inner.chunk.take() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match inner.end {
            End::Done => Poll::Ready(None),
            End::Failed(kind) => Poll::Ready(Some(Err(BodyError { kind }))),
            End::Open => {
                inner.wants = true;
                match &inner.body {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => inner.body = Some(cx.waker().clone()),
                }
                inner.wake_conn();
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.shared {
            None => true,
            Some(s) => {
                let inner = s.lock();
                inner.chunk.is_none() && inner.end == End::Done
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.shared, self.length) {
            (None, _) => SizeHint::with_exact(0),
            (Some(_), Some(n)) => SizeHint::with_exact(n),
            (Some(_), None) => SizeHint::default(),
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let Some(s) = &self.shared {
            let mut inner = s.lock();
            inner.dropped = true;
            inner.wake_conn();
        }
    }
}
