//! One client connection's limits on the HTTP listener: the deadline for the first
//! request, `timeouts.header_read` for later HTTP/1 request heads, `timeouts.idle`, and
//! what an upgraded tunnel keeps of its connection (the listener's connection permit and
//! the shutdown signal).
//!
//! Cost: one `Arc<Conn>` and one timer per connection; per request two atomic updates and
//! one clock read; per socket read one or two relaxed loads; per socket write one relaxed
//! load (and a store when writing blocks or unblocks).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;

use crate::body::ResponseBody;

/// `head_since` when no byte of a next request head has arrived (and
/// `write_blocked_since` when writes are not blocked).
const NONE: u64 = u64::MAX;

/// The first bytes of an HTTP/2 connection (prior knowledge or h2c).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// `at + d`, or a far future (about 30 years) if that overflows: durations from config
/// and from replicas are never trusted to fit.
pub(crate) fn after(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .unwrap_or_else(|| at + Duration::from_secs(86_400 * 365 * 30))
}

/// Shared by a connection's task, its socket wrapper, its requests and (after an
/// upgrade) its tunnel.
pub(crate) struct Conn {
    pub peer: SocketAddr,
    opened: Instant,
    /// `timeouts.idle` of the listener, when the connection opened.
    pub idle: Duration,
    header_read: Duration,
    /// Requests whose answer is not yet fully sent.
    inflight: AtomicU32,
    /// Whether any request has begun (before that, `header_read` from accept applies).
    begun: AtomicBool,
    /// Set by the HTTP/2 preface or the first HTTP/2 request: control frames then do not
    /// count as a request head arriving, and a deadline closes without an HTTP/1 `408`.
    h2: AtomicBool,
    /// Milliseconds after `opened` when a request last ended.
    idle_since: AtomicU64,
    /// Milliseconds after `opened` of the first byte read while idle ([`NONE`]: none).
    head_since: AtomicU64,
    /// Milliseconds after `opened` since when writing to the client has been blocked
    /// (the socket's send buffer is full: the client does not read), [`NONE`]: not
    /// blocked.
    write_blocked_since: AtomicU64,
    /// Set when a deadline closes the connection: the socket is then closed gently
    /// (see [`linger`]).
    timed_out: AtomicBool,
    /// Set when the listener starts to drain (`h1` connections; hyper's have its
    /// `GracefulShutdown`): the answer in flight is the last.
    draining: AtomicBool,
    /// Turns `true` when the listener's drain period is over (or the listener is gone):
    /// tunnels and connections still open then are closed.
    pub closing: watch::Receiver<bool>,
    /// The listener's connection slot; kept by an upgraded tunnel for its whole life.
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    pub fn new(
        peer: SocketAddr,
        idle: Duration,
        header_read: Duration,
        closing: watch::Receiver<bool>,
        permit: OwnedSemaphorePermit,
    ) -> Conn {
        Conn {
            peer,
            opened: Instant::now(),
            idle,
            header_read,
            inflight: AtomicU32::new(0),
            begun: AtomicBool::new(false),
            h2: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(NONE),
            write_blocked_since: AtomicU64::new(NONE),
            timed_out: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            closing,
            _permit: permit,
        }
    }

    fn ms_now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        after(self.opened, Duration::from_millis(ms))
    }

    /// A request begins; the returned ticket ends it when dropped (with its answer).
    pub fn begin(self: &Arc<Self>, h2: bool) -> InFlight {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(NONE, Ordering::Relaxed);
        if !self.begun.load(Ordering::Relaxed) {
            self.begun.store(true, Ordering::Relaxed);
        }
        if h2 && !self.h2.load(Ordering::Relaxed) {
            self.h2.store(true, Ordering::Relaxed);
        }
        InFlight(self.clone())
    }

    /// Bytes arrived from the client (`data`: the bytes of this read).
    fn on_read(&self, data: &[u8]) {
        if self.inflight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == NONE
        {
            if !self.begun.load(Ordering::Relaxed) && data.starts_with(H2_PREFACE) {
                // The first bytes ever: an HTTP/2 connection, which must never be
                // answered with HTTP/1 bytes.
                self.h2.store(true, Ordering::Relaxed);
            }
            self.head_since.store(self.ms_now(), Ordering::Relaxed);
        }
    }

    /// A write to the client returned: `blocked` if it could not proceed (`Pending`).
    fn on_write(&self, blocked: bool) {
        let since = self.write_blocked_since.load(Ordering::Relaxed);
        if blocked {
            if since == NONE {
                self.write_blocked_since
                    .store(self.ms_now(), Ordering::Relaxed);
            }
        } else if since != NONE {
            self.write_blocked_since.store(NONE, Ordering::Relaxed);
        }
    }

    /// A deadline closes the connection (the caller then drops it).
    pub fn time_out(&self) {
        self.timed_out.store(true, Ordering::Relaxed);
    }

    /// `timeouts.header_read`, when the connection opened.
    pub fn header_read(&self) -> Duration {
        self.header_read
    }

    /// The listener drains: the connection is to close once between requests.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Between requests: none in flight, and no byte of a next one read.
    pub fn quiet(&self) -> bool {
        self.inflight.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Relaxed) == NONE
    }

    /// The first deadline: the first request must have begun by then.
    pub fn first_deadline(&self) -> Instant {
        after(self.opened, self.header_read)
    }

    /// When to look again at the connection: at its deadline, but at least every
    /// `min(idle, header_read)`, so a deadline set by a later request (never further away
    /// than that) is not missed. `None`: close it now.
    ///
    /// Requests never touch the timer: it wakes at most once per that period.
    pub fn next_check(&self, now: Instant) -> Option<Instant> {
        let deadline = self.deadline(now);
        (deadline > now).then(|| deadline.min(after(now, self.idle.min(self.header_read))))
    }

    /// When the connection is to be closed if nothing changes; a deadline in the past
    /// means now. With a request in flight, the answer is "check again in `idle`",
    /// unless writing to the client has been blocked: then `idle` after it blocked (a
    /// client that never reads its answer does not keep the connection forever).
    fn deadline(&self, now: Instant) -> Instant {
        if self.inflight.load(Ordering::Acquire) > 0 {
            let blocked = self.write_blocked_since.load(Ordering::Relaxed);
            if blocked != NONE {
                return after(self.at(blocked), self.idle);
            }
            return after(now, self.idle);
        }
        if !self.begun.load(Ordering::Relaxed) {
            return self.first_deadline();
        }
        let head = self.head_since.load(Ordering::Relaxed);
        if head != NONE && !self.h2.load(Ordering::Relaxed) {
            // An HTTP/1 request head has started to arrive: it has `header_read`.
            return after(self.at(head), self.header_read);
        }
        after(self.at(self.idle_since.load(Ordering::Relaxed)), self.idle)
    }
}

/// One request in flight on a [`Conn`].
pub(crate) struct InFlight(Arc<Conn>);

impl InFlight {
    /// The connection the request arrived on.
    pub fn conn(&self) -> &Arc<Conn> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The time first, so whoever sees the count reach zero sees it too.
        self.0.idle_since.store(self.0.ms_now(), Ordering::Relaxed);
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted in flight until it is fully sent.
pub struct Counted {
    inner: ResponseBody,
    _ticket: InFlight,
}

impl Counted {
    pub(crate) fn new(inner: ResponseBody, ticket: InFlight) -> Counted {
        Counted {
            inner,
            _ticket: ticket,
        }
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = <ResponseBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client socket, noting when bytes of a request head start to arrive and when
/// writing to the client blocks.
///
/// Invariant: `io` is `Some` until drop.
pub(crate) struct Watched<IO: Linger = TcpStream> {
    io: Option<IO>,
    conn: Arc<Conn>,
}

/// A client connection's stream (TCP, or TLS over it), which a deadline may close with
/// [`linger`].
pub(crate) trait Linger: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Linger for T {}

impl<IO: Linger> Watched<IO> {
    pub fn new(io: IO, conn: Arc<Conn>) -> Watched<IO> {
        Watched { io: Some(io), conn }
    }

    fn io(&mut self) -> Pin<&mut IO> {
        Pin::new(self.io.as_mut().expect("socket present until drop"))
    }
}

impl<IO: Linger> Drop for Watched<IO> {
    fn drop(&mut self) {
        if !self.conn.timed_out.load(Ordering::Relaxed) {
            return;
        }
        let reply = self.conn.head_since.load(Ordering::Relaxed) != NONE
            && !self.conn.h2.load(Ordering::Relaxed);
        if let (Some(io), Ok(rt)) = (self.io.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(linger(io, reply));
        }
    }
}

/// How long a timed-out connection's late bytes are read and dropped before closing.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// Closes a connection a deadline ended without resetting it: a 408 if part of an
/// HTTP/1 request head had arrived, then end of stream, then what the client still sends
/// is read and dropped for up to [`LINGER`] (closing a socket with unread input sends a
/// reset, which can destroy the answer before the client reads it).
async fn linger(mut io: impl Linger, reply: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(LINGER, async {
        if reply {
            let _ = io
                .write_all(
                    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
                )
                .await;
        }
        let _ = io.shutdown().await;
        let mut buf = [0u8; 512];
        while let Ok(1..) = io.read(&mut buf).await {}
    })
    .await;
}

impl<IO: Linger> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let io = Pin::new(this.io.as_mut().expect("socket present until drop"));
        let conn = &this.conn;
        poll_read_noting(io, cx, buf, |data| conn.on_read(data))
    }
}

/// Reads from `io` into `buf`; calls `on_data` with the new bytes if any arrived.
fn poll_read_noting<T: AsyncRead + ?Sized>(
    io: Pin<&mut T>,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
    on_data: impl FnOnce(&[u8]),
) -> Poll<io::Result<()>> {
    let before = buf.filled().len();
    let r = io.poll_read(cx, buf);
    if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
        on_data(&buf.filled()[before..]);
    }
    r
}

impl<IO: Linger> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = self.io().poll_write(cx, buf);
        self.conn.on_write(r.is_pending());
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = self.io().poll_write_vectored(cx, bufs);
        self.conn.on_write(r.is_pending());
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

/// Last activity of a connection that copies bytes (a tunnel, a TCP relay), for
/// `timeouts.idle`: milliseconds after `opened`.
pub(crate) struct Activity {
    opened: Instant,
    last: AtomicU64,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    pub fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing was touched for `idle`; never for a zero `idle`.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn idle_for(&self, idle: Duration) {
        if idle.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let last = after(
                self.opened,
                Duration::from_millis(self.last.load(Ordering::Relaxed)),
            );
            let deadline = after(last, idle);
            if deadline <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// An I/O object that touches an [`Activity`] whenever bytes pass either way.
pub(crate) struct Touching<'a, T> {
    pub io: T,
    pub activity: &'a Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Touching<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let activity = this.activity;
        poll_read_noting(Pin::new(&mut this.io), cx, buf, |_| activity.touch())
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Touching<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
