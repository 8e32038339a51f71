use std::pin::Pin;
use std::task::{Context, Poll};

use bus::LoadGuard;
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// What we send upstream: a buffered (replayable) body, or the client's stream.
pub(crate) type UpstreamBody = Either<Full<Bytes>, Incoming>;

/// What we send back: the replica's response streaming through, or our own answer.
pub type ResponseBody = Either<Tracked, Full<Bytes>>;

/// A response body that keeps its replica's in-flight count until it is fully sent
/// (or dropped), so draining a replica waits for responses still streaming.
pub struct Tracked {
    inner: Incoming,
    _guard: LoadGuard,
}

impl Tracked {
    pub(crate) fn new(inner: Incoming, guard: LoadGuard) -> Self {
        Tracked {
            inner,
            _guard: guard,
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
