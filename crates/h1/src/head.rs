//! A request head: parsed by `httparse` (strict: no obs-fold, no whitespace before a colon,
//! no bare CR; a bare LF ends a line, empty lines before the request line are skipped,
//! RFC 9112 §2.2), then judged for framing (RFC 9112 §6) and connection handling.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};

use crate::Config;

/// Header slots `httparse` gets; `Config::max_headers` above this is capped to it.
pub const HEADER_SLOTS: usize = 128;

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A parsed head, with what the connection needs to know about it.
pub struct Head {
    pub request: Request<()>,
    pub framing: Framing,
    /// The client allows the connection to stay open after the answer.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on a request with a body.
    pub expect_continue: bool,
    /// `Connection: upgrade` with an `Upgrade` field, in HTTP/1.1 (RFC 9110 §7.8).
    pub upgrade: bool,
}

/// The outcome of parsing the bytes read so far.
pub enum Parsed {
    /// A complete head of this many bytes.
    Complete(Box<Head>, usize),
    /// More bytes are needed.
    Partial,
    /// The head is invalid: answer this status and close.
    Reject(StatusCode),
}

/// Parses a head from the start of `data`.
pub fn parse(data: &[u8], config: &Config) -> Parsed {
    // Uninitialised slots: filling 128 of them (4 KiB) for every head costs more than
    // most heads take to parse.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADER_SLOTS];
    let slots = &mut slots[..config.max_headers.clamp(1, HEADER_SLOTS)];
    let mut req = httparse::Request::new(&mut []);
    // Only the first `max_head_bytes` are looked at, however many were read: the answer
    // to a head does not depend on how the bytes arrived.
    let data = &data[..data.len().min(config.max_head_bytes)];
    let len = match req.parse_with_uninit_headers(data, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if data.len() >= config.max_head_bytes => {
            return Parsed::Reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        Err(_) => return Parsed::Reject(StatusCode::BAD_REQUEST),
    };
    match build(&req, &data[..len]) {
        Ok(head) => Parsed::Complete(Box::new(head), len),
        Err(status) => Parsed::Reject(status),
    }
}

/// The head's parts as `http` types. The head's bytes are copied out of the pooled read
/// buffer once, and the target and field values are slices of that copy (one allocation
/// instead of one per value).
fn build(req: &httparse::Request<'_, '_>, raw: &[u8]) -> Result<Head, StatusCode> {
    let bad = StatusCode::BAD_REQUEST;
    let shared = Bytes::copy_from_slice(raw);
    // `part` is a slice of `raw` (httparse returns nothing else): the same bytes in `shared`.
    let slice = |part: &[u8]| {
        let start = part.as_ptr() as usize - raw.as_ptr() as usize;
        shared.slice(start..start + part.len())
    };
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes()).map_err(|_| bad)?;
    let path = req.path.map_or_else(Bytes::new, |p| slice(p.as_bytes()));
    let uri = Uri::from_maybe_shared(path).map_err(|_| bad)?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut fields = Fields::default();
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad)?;
        let value = HeaderValue::from_maybe_shared(slice(h.value)).map_err(|_| bad)?;
        fields.note(&name, h.value)?;
        headers.append(name, value);
    }
    let framing = fields.framing(version)?;
    if fields.chunked && fields.length.is_some() {
        // RFC 9112 §6.3 (3): chunked wins, and an intermediary forwarding the message
        // MUST remove Content-Length first (else the next hop may read it by length).
        headers.remove(CONTENT_LENGTH);
    }
    let keep_alive = match version {
        Version::HTTP_10 => fields.keep_alive && !fields.close,
        _ => !fields.close,
    } && !(fields.chunked && fields.length.is_some());
    let expect_continue =
        fields.expect_continue && version == Version::HTTP_11 && framing != Framing::None;
    let upgrade = fields.upgrade && headers.contains_key(UPGRADE) && version == Version::HTTP_11;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Head {
        request,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
    })
}

/// What the framing and connection fields say, gathered over all of them.
#[derive(Default)]
struct Fields {
    length: Option<u64>,
    /// A `Transfer-Encoding` field was present.
    coded: bool,
    /// Its last coding is `chunked`.
    chunked: bool,
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    expect_continue: bool,
}

impl Fields {
    fn note(&mut self, name: &HeaderName, value: &[u8]) -> Result<(), StatusCode> {
        if *name == CONTENT_LENGTH {
            self.content_length(value)
        } else if *name == TRANSFER_ENCODING {
            self.transfer_encoding(value)
        } else if *name == CONNECTION {
            for t in list(value) {
                self.close |= t.eq_ignore_ascii_case(b"close");
                self.keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                self.upgrade |= t.eq_ignore_ascii_case(b"upgrade");
            }
            Ok(())
        } else {
            if *name == EXPECT {
                self.expect_continue |= trim(value).eq_ignore_ascii_case(b"100-continue");
            }
            Ok(())
        }
    }

    /// RFC 9112 §6.3 (5), RFC 9110 §8.6: `1*DIGIT`, and every value (also within a list)
    /// the same; anything else is 400.
    fn content_length(&mut self, value: &[u8]) -> Result<(), StatusCode> {
        let mut any = false;
        for item in value.split(|&b| b == b',').map(trim) {
            let n = digits(item).ok_or(StatusCode::BAD_REQUEST)?;
            if self.length.is_some_and(|l| l != n) {
                return Err(StatusCode::BAD_REQUEST);
            }
            self.length = Some(n);
            any = true;
        }
        if any {
            Ok(())
        } else {
            Err(StatusCode::BAD_REQUEST)
        }
    }

    /// RFC 9112 §6.1, §7: the codings over all fields, `chunked` last and only once.
    fn transfer_encoding(&mut self, value: &[u8]) -> Result<(), StatusCode> {
        self.coded = true;
        for coding in list(value) {
            if self.chunked {
                // A coding after chunked, or chunked twice (§7: MUST NOT).
                return Err(StatusCode::BAD_REQUEST);
            }
            self.chunked = coding.eq_ignore_ascii_case(b"chunked");
        }
        Ok(())
    }

    fn framing(&self, version: Version) -> Result<Framing, StatusCode> {
        if self.coded {
            // §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing; §6.3 (4): a final
            // coding other than chunked cannot be delimited.
            if version == Version::HTTP_10 || !self.chunked {
                return Err(StatusCode::BAD_REQUEST);
            }
            return Ok(Framing::Chunked);
        }
        Ok(match self.length {
            None | Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
        })
    }
}

/// The non-empty elements of a comma-separated list, without optional whitespace.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

/// `value` without leading and trailing spaces and tabs (OWS; nothing else is trimmed).
fn trim(value: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !ows(b)).map_or(start, |e| e + 1);
    &value[start..end]
}

/// A non-empty run of ASCII digits as a number that fits an i64 (what Content-Length can
/// be forwarded as anywhere), or None.
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(head: &[u8]) -> Option<u16> {
        match parse(head, &Config::default()) {
            Parsed::Complete(..) => None,
            Parsed::Partial => Some(0),
            Parsed::Reject(s) => Some(s.as_u16()),
        }
    }

    #[test]
    fn framing_fields_are_judged_per_rfc_9112() {
        let ok = |h: &str| parse(h.as_bytes(), &Config::default());
        let framing = |h: &str| match ok(h) {
            Parsed::Complete(head, _) => (head.framing, head.keep_alive),
            _ => panic!("{h:?} rejected"),
        };
        let post = "POST / HTTP/1.1\r\nHost: x\r\n";
        assert_eq!(framing(&format!("{post}\r\n")), (Framing::None, true));
        let cl = format!("{post}Content-Length: 5\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(framing(&cl), (Framing::Length(5), true));
        let te = format!("{post}Transfer-Encoding: gzip, CHUNKED \r\n\r\n");
        assert_eq!(framing(&te), (Framing::Chunked, true));
        let both = format!("{post}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(framing(&both), (Framing::Chunked, false));
        let ten = "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
        assert_eq!(framing(ten), (Framing::None, true));
        assert_eq!(framing("GET / HTTP/1.0\r\n\r\n"), (Framing::None, false));
        for bad in [
            "Content-Length: 1,2",
            "Content-Length: +1",
            "Content-Length: ",
            "Content-Length: 99999999999999999999",
            "Transfer-Encoding: chunked, gzip",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: \x0bchunked",
            "Transfer-Encoding: identity",
        ] {
            assert_eq!(
                status(format!("{post}{bad}\r\n\r\n").as_bytes()),
                Some(400),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn limits_give_431() {
        let many: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(status(req.as_bytes()), Some(431));
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(70_000));
        assert_eq!(status(long.as_bytes()), Some(431));
        assert_eq!(status(b"GET / HTTP/1.1\r\nX: 1\r\n"), Some(0));
    }
}
