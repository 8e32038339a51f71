//! The connection driver: read a head (holding no buffer while idle), box the exchange,
//! answer, and go idle again.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, timeout};

use crate::body::{End, Shared};
use crate::buffer::Buffer;
use crate::decode::Decoder;
use crate::head::{self, Framing, Head, Parsed};
use crate::upgrade::{OnUpgrade, Upgraded};
use crate::write::{self, Asked, Out, Plan};
use crate::{BodyErrorKind, Config, Error, RequestBody, Reset, Service, pool};

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Bytes of an unread request body the engine reads and discards after the answer to keep
/// the connection; a longer rest closes it instead.
const DRAIN_LIMIT: u64 = 64 * 1024;

/// Serves HTTP/1.1 requests on `io` with `service` until the client closes, a request or
/// an answer says `close`, or the engine refuses a request (`Error::Rejected`, after
/// answering it).
///
/// The returned future is what an idle keep-alive connection costs besides its socket:
/// `io`, `service`, a pointer to `config` (shared: its 80 bytes are not copied into each
/// connection) and a few words. Per request, one allocation holds the
/// service's future and the response writer; the service is called inside it, so its
/// future (however large) is made in place and never moved.
pub async fn serve<IO, S>(io: IO, service: S, config: Arc<Config>) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: Service,
{
    let mut conn = Conn {
        io,
        buf: Buffer::default(),
        config,
    };
    let result = loop {
        let head = match conn.read_head().await {
            Ok(Some(head)) => head,
            Ok(None) => break Ok(None),
            Err(Error::Rejected(status)) => {
                Box::pin(conn.refuse(status)).await;
                break Err(Error::Rejected(status));
            }
            Err(e) => return Err(e),
        };
        match Box::pin(conn.exchange(head, &service)).await {
            Ok(Next::Again) => conn.buf.release_if_empty(),
            Ok(Next::Close) => break Ok(None),
            // Dropped without a FIN first, nor lingering.
            Ok(Next::Reset) => return Ok(()),
            Ok(Next::Upgrade(to)) => break Ok(Some(to)),
            Err(e) => break Err(e),
        }
    };
    match result {
        Ok(Some(to)) => {
            // The 101 is written: the stream and what the client sent after its head
            // now belong to whoever awaits the `OnUpgrade`.
            let read = Bytes::copy_from_slice(conn.buf.data());
            drop(conn.buf);
            let _ = to.send(Upgraded {
                read,
                io: Box::new(conn.io),
            });
            Ok(())
        }
        result => {
            // Boxed, like the exchange: what only runs once must not enlarge every idle
            // future.
            Box::pin(conn.close()).await;
            result.map(|_| ())
        }
    }
}

/// What follows an exchange.
enum Next {
    /// The next request.
    Again,
    Close,
    /// Drop the connection at once (`crate::Reset`).
    Reset,
    /// Hand the connection over (a 101 was written).
    Upgrade(oneshot::Sender<Upgraded>),
}

struct Conn<IO> {
    io: IO,
    buf: Buffer,
    config: Arc<Config>,
}

/// The reading side of one request body.
struct Feed {
    shared: Option<Arc<Shared>>,
    decoder: Decoder,
    end: End,
    read: u64,
    max: Option<u64>,
    /// `Expect: 100-continue`: `Some(n)` while the 100 is owed, `n` bytes of it written.
    continue_owed: Option<usize>,
}

impl Feed {
    fn new(framing: Framing, expect: bool, config: &Config) -> (RequestBody, Feed) {
        let (decoder, length) = match framing {
            Framing::None => return (RequestBody::empty(), Feed::done()),
            Framing::Length(n) => (Decoder::length(n), Some(n)),
            Framing::Chunked => (Decoder::chunked(config.max_head_bytes), None),
        };
        let (body, shared) = RequestBody::streamed(length);
        let feed = Feed {
            shared: Some(shared),
            decoder,
            end: End::Open,
            read: 0,
            max: config.max_body_bytes,
            continue_owed: expect.then_some(0),
        };
        (body, feed)
    }

    fn done() -> Feed {
        Feed {
            shared: None,
            decoder: Decoder::length(0),
            end: End::Done,
            read: 0,
            max: None,
            continue_owed: None,
        }
    }

    /// Whether what is left of the body cannot be drained after the answer: the client
    /// waits for a 100 it will not get, or would send too much.
    fn undrainable(&self) -> bool {
        self.end == End::Open
            && (self.continue_owed.is_some()
                || self.decoder.remaining().is_some_and(|n| n > DRAIN_LIMIT))
    }

    /// The status the engine answers instead of the service's, for a body that failed by
    /// the client's fault.
    fn refusal(&self) -> Option<StatusCode> {
        match self.end {
            End::Failed(BodyErrorKind::Framing) => Some(StatusCode::BAD_REQUEST),
            End::Failed(BodyErrorKind::TooLarge) => Some(StatusCode::PAYLOAD_TOO_LARGE),
            _ => None,
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    /// The next request head: `None` when the client closed (or stayed idle past
    /// `idle_timeout`) before sending one; `Error::Rejected` for a head to refuse (408
    /// once `header_timeout` has passed since its first byte).
    ///
    /// One timer serves both deadlines. It is boxed, and only made when a deadline is
    /// configured: inline, its 112 bytes would be in every idle connection's future (a
    /// coarse timer wheel per worker would do without both).
    ///
    /// # Cancel safety
    /// Bytes read stay in the buffer; a head is only consumed when returned.
    async fn read_head(&mut self) -> Result<Option<Box<Head>>, Error> {
        let limit = self.config.max_head_bytes;
        let mut idle = self.buf.is_empty();
        let first = if idle {
            self.config.idle_timeout
        } else {
            self.config.header_timeout
        };
        let mut timer = first.map(|t| Box::pin(sleep(t)));
        loop {
            if !idle {
                match head::parse(self.buf.data(), &self.config) {
                    Parsed::Complete(head, n) => {
                        self.buf.consume(n);
                        return Ok(Some(head));
                    }
                    Parsed::Reject(status) => return Err(Error::Rejected(status)),
                    Parsed::Partial => {}
                }
            }
            let read = poll_fn(|cx| {
                if let Poll::Ready(read) = self.buf.poll_fill(&mut self.io, cx, limit) {
                    return Poll::Ready(Some(read));
                }
                match timer.as_mut().map(|t| t.as_mut().poll(cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(None),
                    _ => Poll::Pending,
                }
            });
            match read.await {
                None if idle => return Ok(None),
                None => return Err(Error::Rejected(StatusCode::REQUEST_TIMEOUT)),
                // The client closed, between requests or in the middle of a head: nobody
                // to answer.
                Some(Ok(0)) => return Ok(None),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            }
            if idle {
                idle = false;
                timer = match (timer, self.config.header_timeout) {
                    (Some(mut t), Some(d)) => {
                        t.as_mut().reset(Instant::now() + d);
                        Some(t)
                    }
                    (_, d) => d.map(|d| Box::pin(sleep(d))),
                };
            }
        }
    }

    /// One request: the service's answer, written; what the connection does next.
    async fn exchange<S: Service>(&mut self, head: Box<Head>, service: &S) -> Result<Next, Error> {
        let Head {
            mut request,
            framing,
            keep_alive,
            expect_continue,
            upgrade,
        } = *head;
        if let (Framing::Length(n), Some(max)) = (framing, self.config.max_body_bytes)
            && n > max
        {
            self.refuse(StatusCode::PAYLOAD_TOO_LARGE).await;
            return Err(Error::Rejected(StatusCode::PAYLOAD_TOO_LARGE));
        }
        let mut upgrade = upgrade.then(|| {
            let (to, on) = oneshot::channel();
            request.extensions_mut().insert(OnUpgrade::new(on));
            to
        });
        let asked = Asked {
            version: request.version(),
            head: request.method() == Method::HEAD,
            keep_alive,
            date: self.config.date,
            upgrade: false,
        };
        let (body, mut feed) = Feed::new(framing, expect_continue, &self.config);
        let mut call = pin!(service.call(request.map(|()| body)));
        let response = poll_fn(|cx| {
            loop {
                if let Poll::Ready(r) = call.as_mut().poll(cx) {
                    return Poll::Ready(r);
                }
                if !self.poll_feed(&mut feed, cx) {
                    return Poll::Pending;
                }
            }
        })
        .await;
        if let Some(status) = feed.refusal() {
            self.refuse(status).await;
            return Err(Error::Rejected(status));
        }
        if response.extensions().get::<Reset>().is_some() {
            return Ok(Next::Reset);
        }
        if matches!(feed.end, End::Failed(_)) {
            return Ok(Next::Close);
        }
        // A body the service left unread and that will not be drained (a 100 still owed,
        // or too much of it) closes the connection: say so in the answer.
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        let asked = Asked {
            keep_alive: asked.keep_alive && !feed.undrainable(),
            upgrade: switching && upgrade.is_some(),
            ..asked
        };
        let keep_alive = self.respond(response, &mut feed, asked).await?;
        // A connection that closes after this answer has no next request to find: the
        // rest of the body is not waited for (a stalled client would hold it open).
        let finished = self.finish(&mut feed, keep_alive || asked.upgrade).await;
        Ok(match upgrade.take() {
            Some(to) if asked.upgrade && finished => Next::Upgrade(to),
            _ if keep_alive && finished && !switching => Next::Again,
            _ => Next::Close,
        })
    }

    /// Reads and decodes request body bytes if the body asked for them; true when it got
    /// something (bytes, its end, an error), so that the service is polled again.
    fn poll_feed(&mut self, feed: &mut Feed, cx: &mut Context<'_>) -> bool {
        let Some(shared) = &feed.shared else {
            return false;
        };
        let mut inner = shared.lock();
        if feed.end != End::Open || inner.dropped {
            return false;
        }
        if !inner.wants || inner.chunk.is_some() {
            inner.park_conn(cx);
            return false;
        }
        if let Some(written) = &mut feed.continue_owed {
            if !self.buf.is_empty() {
                feed.continue_owed = None;
            } else {
                match poll_write_all(&mut self.io, cx, CONTINUE, written) {
                    Poll::Pending => return false,
                    Poll::Ready(Ok(())) => feed.continue_owed = None,
                    Poll::Ready(Err(_)) => feed.end = End::Failed(BodyErrorKind::Io),
                }
            }
        }
        while feed.end == End::Open {
            if !self.buf.is_empty() {
                match feed.decoder.step(self.buf.data()) {
                    Err(kind) => feed.end = End::Failed(kind),
                    Ok(step) => {
                        let data = step.data.map(|(start, len)| {
                            Bytes::copy_from_slice(&self.buf.data()[start..start + len])
                        });
                        self.buf.consume(step.consumed);
                        if step.done {
                            feed.end = End::Done;
                        }
                        if let Some(data) = data {
                            feed.read += data.len() as u64;
                            if feed.max.is_some_and(|m| feed.read > m) {
                                feed.end = End::Failed(BodyErrorKind::TooLarge);
                            } else {
                                inner.chunk = Some(data);
                                break;
                            }
                        }
                        if step.consumed > 0 || step.done {
                            continue;
                        }
                    }
                }
                continue;
            }
            match self.buf.poll_fill(&mut self.io, cx, pool::BUFFER_SIZE) {
                Poll::Pending => return false,
                Poll::Ready(Ok(0)) => feed.end = End::Failed(BodyErrorKind::Incomplete),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(_)) => feed.end = End::Failed(BodyErrorKind::Io),
            }
        }
        inner.end = feed.end;
        inner.wants = false;
        inner.wake_body();
        true
    }

    /// Writes the answer; whether the connection may stay open after it.
    async fn respond<B>(
        &mut self,
        response: Response<B>,
        feed: &mut Feed,
        asked: Asked,
    ) -> Result<bool, Error>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = response.into_parts();
        let mut out = Out::new(pool::take_write());
        let (plan, keep_alive) = write::head(&mut out.buf, &parts, &body.size_hint(), asked);
        drop(parts);
        out.plan = plan;
        if let Plan::Length(n) = plan {
            out.left = n;
        }
        let mut body = pin!(body);
        let written = poll_fn(|cx| {
            // Full duplex: a body the service still reads keeps flowing while it answers.
            self.poll_feed(feed, cx);
            out.poll(&mut self.io, body.as_mut(), cx)
        })
        .await;
        pool::give_write(std::mem::take(&mut out.buf));
        written?;
        Ok(keep_alive && plan != Plan::Close)
    }

    /// After the answer: reads what is left of the request body (up to `DRAIN_LIMIT`, and
    /// only if `drain`) so that the next request is read from its start; false when the
    /// connection must close.
    async fn finish(&mut self, feed: &mut Feed, drain: bool) -> bool {
        if let Some(shared) = &feed.shared {
            let mut inner = shared.lock();
            if feed.end == End::Open {
                inner.end = End::Failed(BodyErrorKind::Abandoned);
                inner.wake_body();
            }
        }
        if feed.end != End::Open {
            return feed.end == End::Done;
        }
        if !drain || feed.undrainable() {
            return false;
        }
        let mut drained = 0u64;
        loop {
            if !self.buf.is_empty() {
                let Ok(step) = feed.decoder.step(self.buf.data()) else {
                    return false;
                };
                self.buf.consume(step.consumed);
                drained += step.data.map_or(0, |(_, n)| n as u64);
                if step.done {
                    return true;
                }
                if drained > DRAIN_LIMIT {
                    return false;
                }
                continue;
            }
            let read = poll_fn(|cx| self.buf.poll_fill(&mut self.io, cx, pool::BUFFER_SIZE));
            if !matches!(read.await, Ok(n) if n > 0) {
                return false;
            }
        }
    }

    /// Answers `status` on behalf of the engine (the connection then closes).
    async fn refuse(&mut self, status: StatusCode) {
        let _ = self.io.write_all(write::refusal(status)).await;
    }

    /// Ends the connection: a FIN after everything written, then (with `linger`) what
    /// the client still sends is read and dropped for a while, so that a client still
    /// writing gets the answer before the reset its unread bytes would cause.
    async fn close(&mut self) {
        if self.io.shutdown().await.is_err() {
            return;
        }
        let Some(linger) = self.config.linger else {
            return;
        };
        // A pooled buffer, not one on the stack: the stack of an async fn is its future,
        // which every idle connection would carry.
        let mut sink = pool::take_read();
        let drain = async {
            let mut left = DRAIN_LIMIT as usize;
            while let Ok(n) = self.io.read(&mut sink).await {
                if n == 0 || n >= left {
                    break;
                }
                left -= n;
            }
        };
        let _ = timeout(linger, drain).await;
        pool::give_read(sink);
    }
}

/// Writes all of `bytes` from offset `*at`.
fn poll_write_all<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    cx: &mut Context<'_>,
    bytes: &[u8],
    at: &mut usize,
) -> Poll<std::io::Result<()>> {
    while *at < bytes.len() {
        let n = ready!(Pin::new(&mut *io).poll_write(cx, &bytes[*at..]))?;
        if n == 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        *at += n;
    }
    Poll::Ready(Ok(()))
}
