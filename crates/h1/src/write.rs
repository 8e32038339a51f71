//! Response heads, built into one buffer with no formatting machinery, and the engine's
//! own short answers.

use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::response::Parts;
use http::{StatusCode, Version};
use http_body::SizeHint;

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
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // Upgrades are not handed over (yet): the bytes that would follow are not HTTP/1.1.
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
        let framing = *name == CONNECTION || *name == TRANSFER_ENCODING;
        // A HEAD, 204 or 304 answer keeps the Content-Length the service gave it.
        let length = *name == CONTENT_LENGTH && !bodiless;
        if framing || length {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
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
    if !keep_alive {
        field(out, b"connection", b"close");
    } else if asked.version == Version::HTTP_10 {
        field(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    (plan, keep_alive)
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
