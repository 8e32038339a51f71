//! Response heads, built into one buffer with no formatting machinery, and the engine's
//! own short answers.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::response::Parts;
use http::{StatusCode, Version};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::{Body, SizeHint};
use tokio::io::AsyncWrite;

use crate::Error;

/// Bodies up to this size are copied behind the head (one plain write); larger ones are
/// written from where they are, with a vectored write.
const COPY_LIMIT: usize = 4 * 1024;

/// How the response body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// No body is written (HEAD, 1xx, 204, 304), whatever the service's body holds.
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (HTTP/1.0 with an unknown length).
    Close,
}

/// What the request says about how to answer.
#[derive(Clone, Copy, Debug)]
pub struct Asked {
    pub version: Version,
    pub head: bool,
    pub keep_alive: bool,
    /// Add a `Date` field when the service's answer has none (RFC 9110 §6.6.1: an origin
    /// server with a clock MUST).
    pub date: bool,
    /// The answer is a 101 to a request that asked for an upgrade: its `Connection`
    /// field goes out as the service set it.
    pub upgrade: bool,
}

/// Writes the status line and fields of `parts` into `out`, with the framing fields the
/// engine chooses; returns the plan and whether the connection stays open.
pub fn head(out: &mut Vec<u8>, parts: &Parts, hint: &SizeHint, asked: Asked) -> (Plan, bool) {
    let status = parts.status;
    let mut keep_alive = asked.keep_alive;
    let mut length = None;
    for v in parts.headers.get_all(CONNECTION) {
        let close = v.as_bytes().split(|&b| b == b',');
        keep_alive &= !close
            .into_iter()
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
    }
    if let Some(v) = parts.headers.get(CONTENT_LENGTH) {
        length = std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
    }
    let empty = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let bodiless = asked.head || empty;
    if status == StatusCode::SWITCHING_PROTOCOLS && !asked.upgrade {
        // A 101 nobody asked for: the bytes that would follow are not HTTP/1.1.
        keep_alive = false;
    }
    let plan = if bodiless {
        Plan::None
    } else if let Some(n) = length.or(hint.exact()) {
        Plan::Length(n)
    } else if asked.version == Version::HTTP_11 {
        Plan::Chunked
    } else {
        keep_alive = false;
        Plan::Close
    };
    out.extend_from_slice(match asked.version {
        Version::HTTP_10 => b"HTTP/1.0 ",
        _ => b"HTTP/1.1 ",
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        let framing = (*name == CONNECTION && !asked.upgrade) || *name == TRANSFER_ENCODING;
        // A HEAD, 204 or 304 answer keeps the Content-Length the service gave it.
        let length = *name == CONTENT_LENGTH && !bodiless;
        if framing || length {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    // RFC 9110 §6.6.1: a `date` on every final answer; an informational one (a 101) may go
    // without.
    if asked.date && !status.is_informational() && !parts.headers.contains_key(DATE) {
        date(out);
    }
    match plan {
        Plan::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Plan::Chunked => field(out, b"transfer-encoding", b"chunked"),
        // HEAD: the length a GET would have, when the service's body knows it.
        Plan::None if asked.head && !empty && length.is_none() => {
            if let Some(n) = hint.exact() {
                out.extend_from_slice(b"content-length: ");
                decimal(out, n);
                out.extend_from_slice(b"\r\n");
            }
        }
        Plan::None | Plan::Close => {}
    }
    if asked.upgrade {
        // The service's own `Connection: upgrade` went out above.
    } else if !keep_alive {
        field(out, b"connection", b"close");
    } else if asked.version == Version::HTTP_10 {
        field(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    (plan, keep_alive)
}

thread_local! {
    /// This second's `Date` value, formatted once per second per thread.
    static DATE_VALUE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// A `date` field with the current second (`Sun, 06 Nov 1994 08:49:37 GMT`, always 29
/// bytes).
fn date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_VALUE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = second;
            }
        }
        field(out, b"date", &cached.1);
    });
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A chunk-size line: the length in hex and CRLF.
pub fn chunk_size(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n % 16) as usize];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The engine's own answer with `status`, closing the connection.
pub fn refusal(status: StatusCode) -> &'static [u8] {
    match status.as_u16() {
        408 => b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        413 => b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        431 => b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        _ => b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    }
}

/// The response being written: framing bytes in `buf` (the head, then chunk-size lines),
/// then at most one data frame, then `suffix`.
pub struct Out {
    pub buf: Vec<u8>,
    at: usize,
    data: Bytes,
    suffix: &'static [u8],
    pub plan: Plan,
    /// Bytes still allowed by a Content-Length plan.
    pub left: u64,
    ended: bool,
}

impl Out {
    pub fn new(buf: Vec<u8>) -> Out {
        Out {
            buf,
            at: 0,
            data: Bytes::new(),
            suffix: b"",
            plan: Plan::None,
            left: 0,
            ended: false,
        }
    }

    fn pending(&self) -> bool {
        self.at < self.buf.len() || !self.data.is_empty() || !self.suffix.is_empty()
    }

    pub fn poll<IO, B>(
        &mut self,
        io: &mut IO,
        mut body: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>>
    where
        IO: AsyncWrite + Unpin,
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        loop {
            if !self.ended && self.data.is_empty() && self.suffix.is_empty() {
                match self.next_frame(body.as_mut(), cx)? {
                    Poll::Ready(()) => {}
                    Poll::Pending if !self.pending() => return Poll::Pending,
                    Poll::Pending => {}
                }
            }
            if self.pending() {
                let n = ready!(self.poll_write(io, cx))?;
                self.advance(n);
                continue;
            }
            if self.ended {
                ready!(Pin::new(io).poll_flush(cx))?;
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Takes the next frame of the body into the queue (Ready when one was taken or the
    /// body ended).
    fn next_frame<B>(&mut self, body: Pin<&mut B>, cx: &mut Context<'_>) -> Result<Poll<()>, Error>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if self.plan == Plan::None {
            self.ended = true;
            return Ok(Poll::Ready(()));
        }
        let frame = match body.poll_frame(cx) {
            Poll::Pending => return Ok(Poll::Pending),
            Poll::Ready(None) => {
                self.end()?;
                return Ok(Poll::Ready(()));
            }
            Poll::Ready(Some(Err(e))) => return Err(Error::ResponseBody(e.into())),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        let Ok(mut data) = frame.into_data() else {
            return Ok(Poll::Ready(())); // trailers are not sent
        };
        let len = data.remaining();
        if len == 0 {
            return Ok(Poll::Ready(()));
        }
        match self.plan {
            Plan::Length(_) if len as u64 > self.left => return Err(Error::ResponseLength),
            Plan::Length(_) => self.left -= len as u64,
            Plan::Chunked => {
                self.compact();
                chunk_size(&mut self.buf, len as u64);
                self.suffix = b"\r\n";
            }
            Plan::Close | Plan::None => {}
        }
        if len <= COPY_LIMIT {
            self.compact();
            while data.has_remaining() {
                let chunk = data.chunk();
                self.buf.extend_from_slice(chunk);
                let n = chunk.len();
                data.advance(n);
            }
            if !self.suffix.is_empty() {
                self.buf.extend_from_slice(self.suffix);
                self.suffix = b"";
            }
        } else {
            self.data = data.copy_to_bytes(len);
        }
        Ok(Poll::Ready(()))
    }

    fn end(&mut self) -> Result<(), Error> {
        self.ended = true;
        match self.plan {
            Plan::Length(_) if self.left > 0 => Err(Error::ResponseLength),
            Plan::Chunked => {
                self.compact();
                self.buf.extend_from_slice(b"0\r\n\r\n");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Drops the bytes of `buf` already written, keeping what is not.
    fn compact(&mut self) {
        if self.at > 0 && self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        }
    }

    fn poll_write<IO: AsyncWrite + Unpin>(
        &self,
        io: &mut IO,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<usize>> {
        let slices = [
            std::io::IoSlice::new(&self.buf[self.at..]),
            std::io::IoSlice::new(&self.data),
            std::io::IoSlice::new(self.suffix),
        ];
        let n = ready!(Pin::new(io).poll_write_vectored(cx, &slices))?;
        if n == 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        Poll::Ready(Ok(n))
    }

    fn advance(&mut self, mut n: usize) {
        let head = (self.buf.len() - self.at).min(n);
        self.at += head;
        n -= head;
        let data = self.data.len().min(n);
        self.data.advance(data);
        n -= data;
        self.suffix = &self.suffix[n.min(self.suffix.len())..];
        self.compact();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_in_decimal_and_hex() {
        for n in [0, 7, 10, 255, 4096, u64::MAX] {
            let (mut d, mut h) = (Vec::new(), Vec::new());
            decimal(&mut d, n);
            chunk_size(&mut h, n);
            assert_eq!(d, n.to_string().as_bytes());
            assert_eq!(h, format!("{n:x}\r\n").as_bytes());
        }
    }
}
