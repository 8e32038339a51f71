use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bus::LoadGuard;

use crate::pool::Lease;
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// What we send upstream: a buffered (replayable) body, or the client's stream.
pub(crate) type UpstreamBody = Either<Full<Bytes>, Timed>;

/// A request body as the client's connection delivers it: hyper's (HTTP/2, and HTTP/1.1
/// under `BULWARK_HTTP1=hyper`) or bulwark's own HTTP/1.1 engine's. An enum rather than a
/// generic forward path: one match per frame, and one copy of the forward code.
pub(crate) enum Inbound {
    Hyper(Incoming),
    H1(h1::RequestBody),
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Inbound::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Inbound::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Inbound::Hyper(b) => b.is_end_stream(),
            Inbound::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Inbound::Hyper(b) => b.size_hint(),
            Inbound::H1(b) => b.size_hint(),
        }
    }
}

/// The client's streaming request body, cut off with an error at the request deadline,
/// so a slow sender cannot hold a bulkhead permit and a replica connection past it.
/// (One timer per streamed body; buffered bodies have none.)
pub(crate) struct Timed {
    inner: Inbound,
    deadline: Pin<Box<tokio::time::Sleep>>,
    waiting: Arc<AtomicBool>,
}

impl Timed {
    pub(crate) fn new(inner: Inbound, deadline: tokio::time::Instant) -> Self {
        Timed {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            waiting: Arc::default(),
        }
    }

    /// True while the body waits for the client's next bytes (not for the replica to
    /// read them): a try that times out then is the client's stall, not the replica's.
    pub(crate) fn waiting_on_client(&self) -> Arc<AtomicBool> {
        self.waiting.clone()
    }
}

/// The request deadline passed while the client's body was still arriving.
#[derive(Debug)]
pub(crate) struct BodyDeadline;

impl std::fmt::Display for BodyDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body not received before the request deadline")
    }
}

impl std::error::Error for BodyDeadline {}

impl Body for Timed {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                self.waiting.store(false, Ordering::Relaxed);
                Poll::Ready(r)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyDeadline.into()))),
                Poll::Pending => {
                    self.waiting.store(true, Ordering::Relaxed);
                    Poll::Pending
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What we send back: the replica's response streaming through, or our own answer.
pub type ResponseBody = Either<Tracked, Full<Bytes>>;

/// A response body that keeps its replica's in-flight count until it is fully sent
/// (or dropped), so draining a replica waits for responses still streaming. Its
/// connection goes back to the replica's pool once the body has ended.
pub struct Tracked {
    inner: Incoming,
    _guard: LoadGuard,
    lease: Option<Lease>,
    /// A stale copy being taken (`fallback.stale` only; `None` costs one check a frame).
    tee: Option<Box<crate::stale::Tee>>,
}

impl Tracked {
    pub(crate) fn new(inner: Incoming, guard: LoadGuard, lease: Option<Lease>) -> Self {
        let mut t = Tracked {
            inner,
            _guard: guard,
            lease,
            tee: None,
        };
        // No body (HEAD, 204, 304, `Content-Length: 0`): the connection is free already.
        t.ended();
        t
    }

    /// Gives the connection back once the body has ended (hyper stops polling a body of
    /// known length as soon as it says so, so this is checked after every frame).
    fn ended(&mut self) {
        if self.lease.is_some()
            && self.inner.is_end_stream()
            && let Some(lease) = self.lease.take()
        {
            lease.give_back();
        }
    }

    /// Copies the body into `tee` as it streams; the copy is kept once the body ends.
    pub(crate) fn copy_into(&mut self, tee: crate::stale::Tee) {
        self.tee = Some(Box::new(tee));
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_)) | None) => self.ended(),
            // A body cut short leaves its connection unusable: it is dropped, not pooled.
            Poll::Ready(Some(Err(_))) => self.lease = None,
            Poll::Pending => {}
        }
        if self.tee.is_none() {
            return polled;
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let fits = frame
                    .data_ref()
                    .is_none_or(|d| self.tee.as_mut().is_some_and(|t| t.push(d)));
                // hyper stops polling once a body of known length says it has ended.
                if !fits {
                    self.tee = None;
                } else if self.inner.is_end_stream()
                    && let Some(tee) = self.tee.take()
                {
                    tee.finish();
                }
            }
            Poll::Ready(None) => {
                if let Some(tee) = self.tee.take() {
                    tee.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => self.tee = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
