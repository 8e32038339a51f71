//! bulwark's HTTP/1.1 server engine: the inbound side of the proxy, over any
//! `AsyncRead + AsyncWrite` (plain TCP or a rustls stream).
//!
//! What it keeps per connection is what nginx keeps: while a keep-alive connection is idle
//! it holds no buffer (a read buffer is taken from the worker thread's pool when the socket
//! has bytes, and given back once they are consumed), and its future is small: the work of
//! one request (the service's future, the response writer) is boxed only once a request
//! head has arrived. See `serve`.
//!
//! Framing is RFC 9112's, strictly (the proxy's conformance suite in
//! `crates/proxy/tests/conformance/` gives the answers): `httparse` for the head (no
//! obs-fold, no whitespace before a colon, no bare CR; bare LF accepted), `Content-Length`
//! and `Transfer-Encoding` judged in `head`, chunked bodies decoded in `decode`.
//! Responses: the head built into one pooled buffer, head and body written together (one
//! vectored write, or one copy for small bodies), chunked when the length is unknown.
//!
//! Architecture invariant: this crate knows nothing of the proxy: no routing, no headers
//! beyond framing and `Connection`, no `Host` judgement (the proxy's), no TLS.

mod body;
mod buffer;
mod conn;
mod decode;
mod head;
pub mod pool;
mod upgrade;
mod write;

use std::future::Future;
use std::time::Duration;

use bytes::Buf;
use http::{Request, Response, StatusCode};

pub use body::RequestBody;
pub use conn::serve;
pub use upgrade::{Io, NotUpgraded, OnUpgrade, Upgraded};

/// Limits and timers of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Bytes of a request head (request line and fields); over it: 431 and close.
    pub max_head_bytes: usize,
    /// Fields in a request head (at most 128); over it: 431 and close.
    pub max_headers: usize,
    /// Bytes of a request body: a longer `Content-Length` is 413 before the service is
    /// called; a chunked body that grows past it fails, and is answered 413.
    pub max_body_bytes: Option<u64>,
    /// How long a keep-alive connection may wait for the first byte of a request; then it
    /// is closed without an answer. Needs tokio's time driver.
    pub idle_timeout: Option<Duration>,
    /// How long a head may take to arrive once its first byte has; then 408 and close.
    pub header_timeout: Option<Duration>,
    /// After the engine decides to close, how long it keeps reading (and discarding) what
    /// the client still sends, so that its answer is not lost to a reset (nginx's
    /// lingering close).
    pub linger: Option<Duration>,
    /// Add a `date` field to answers that have none (hyper's server does).
    pub date: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_head_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: None,
            idle_timeout: None,
            header_timeout: None,
            linger: None,
            date: true,
        }
    }
}

/// What answers requests: `Fn(Request<RequestBody>) -> impl Future<Output = Response<B>>`.
pub trait Service {
    type Body: http_body::Body<Data = Self::Data, Error = Self::Error>;
    type Data: Buf;
    type Error: Into<Box<dyn std::error::Error + Send + Sync>>;
    type Future: Future<Output = Response<Self::Body>>;

    fn call(&self, request: Request<RequestBody>) -> Self::Future;
}

impl<F, Fut, B> Service for F
where
    F: Fn(Request<RequestBody>) -> Fut,
    Fut: Future<Output = Response<B>>,
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Body = B;
    type Data = B::Data;
    type Error = B::Error;
    type Future = Fut;

    fn call(&self, request: Request<RequestBody>) -> Fut {
        self(request)
    }
}

/// Put in a response's extensions, it makes the engine drop the connection instead of
/// answering (what hyper does when a service fails; the proxy's injected resets).
#[derive(Clone, Copy, Debug, Default)]
pub struct Reset;

/// Why a connection ended other than by the client closing it between requests.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The request was answered with this status by the engine itself (bad head, limits,
    /// a head too slow, a bad or too large body) and the connection closed.
    #[error("the request was refused with {0}")]
    Rejected(StatusCode),
    #[error("the response body failed: {0}")]
    ResponseBody(Box<dyn std::error::Error + Send + Sync>),
    /// The response body did not have the length its `Content-Length` promised.
    #[error("the response body did not match its content-length")]
    ResponseLength,
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{}", match self.kind {
    BodyErrorKind::Framing => "the request body's framing is invalid",
    BodyErrorKind::TooLarge => "the request body is larger than allowed",
    BodyErrorKind::Incomplete => "the client closed the connection before the end of the body",
    BodyErrorKind::Io => "reading the request body failed",
    BodyErrorKind::Abandoned => "the response was complete before the body was read",
})]
pub struct BodyError {
    kind: BodyErrorKind,
}

impl BodyError {
    pub fn kind(&self) -> BodyErrorKind {
        self.kind
    }
}

/// The classes of `BodyError`. `Framing` and `TooLarge` are the client's fault (400, 413).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyErrorKind {
    Framing,
    TooLarge,
    Incomplete,
    Io,
    Abandoned,
}
