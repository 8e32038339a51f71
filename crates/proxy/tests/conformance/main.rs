//! HTTP/1.1 conformance and request smuggling on the listener, over raw sockets with
//! hand-written bytes: what the client gets (status, whether the connection closes) and
//! what a raw-socket replica received (every request head and body), so a request
//! smuggled past the proxy shows up there as a second request.
//!
//! Covered, by RFC 9112 (HTTP/1.1) section unless RFC 9110 (semantics) is named:
//! - framing: `Content-Length` with `Transfer-Encoding` (§6.1, §6.3), conflicting or
//!   invalid `Content-Length` (§6.3, RFC 9110 §8.6), codings not ending in `chunked` or
//!   misspelt, `Transfer-Encoding` in HTTP/1.0 (§6.1, §6.3, §7);
//! - field syntax: obs-fold (§5.2), whitespace before the colon (§5.1), bare LF, bare CR
//!   and an empty line before the request (§2.2);
//! - chunked: bad chunk sizes and extensions, extensions and trailers (§7.1, §7.1.1,
//!   §7.1.2);
//! - connections: pipelining (§9.3.2), `Connection: close` either way (§9.6, RFC 9110
//!   §7.6.1), `Expect: 100-continue` (RFC 9110 §10.1.1);
//! - no content: HEAD, 204, 304 (§6.3; RFC 9110 §9.3.2, §15.3.5, §15.4.5);
//! - the absolute-form request target (§3.2.2);
//! - fields (`fields.rs`): `Host` missing, repeated or invalid (§3.2), the target's host
//!   over `Host` (§3.2.2), `chunked` applied twice (§7), fields named by `Connection`
//!   (RFC 9110 §7.6.1), and a client's malformed body never blamed on the replica.

#[path = "../common/mod.rs"]
mod common;
mod fields;
mod framing;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Written after a rejected request: if it is ever answered or forwarded, the proxy read
/// the rejected bytes as something other than what they claimed to be.
const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// One request as the replica received it.
#[derive(Clone, Debug)]
struct Seen {
    head: String,
    /// `None`: the head arrived, the body never completed (or its framing was ambiguous).
    body: Option<Vec<u8>>,
}

impl Seen {
    fn path(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }

    /// The values of header `name` (lowercase), in order.
    fn header(&self, name: &str) -> Vec<String> {
        let lines = self.head.lines().skip(1);
        let fields = lines.filter_map(|l| l.split_once(':'));
        let named = fields.filter(|(k, _)| k.eq_ignore_ascii_case(name));
        named.map(|(_, v)| v.trim().to_owned()).collect()
    }
}

/// A replica on raw sockets that records every request it receives.
struct Recorder {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    async fn new() -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let rec = log.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve(s, rec.clone()));
            }
        });
        Recorder { addr, log }
    }

    /// Everything received since the last call, up to a `/sentinel` request sent through
    /// `p` now on a new connection (so what was on its way has arrived); without it.
    async fn take(&self, p: &Proxy) -> Vec<Seen> {
        let mut s = connect(p.addr).await;
        assert_eq!(get(&mut s, "/sentinel").await.0, 200);
        let seen = std::mem::take(&mut *self.log.lock().unwrap());
        seen.into_iter()
            .filter(|s| s.path() != "/sentinel")
            .collect()
    }
}

fn find(buf: &[u8], pat: &[u8]) -> Option<usize> {
    buf.windows(pat.len()).position(|w| w == pat)
}

/// Reads more into `buf`; `false` at the end of the stream.
async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut b = [0u8; 4096];
    match s.read(&mut b).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&b[..n]);
            true
        }
    }
}

/// Takes from `buf` (reading more from `s` as needed) up to and with the first `delim`;
/// `None` if the stream ends first.
async fn until(s: &mut TcpStream, buf: &mut Vec<u8>, delim: &[u8]) -> Option<Vec<u8>> {
    loop {
        if let Some(i) = find(buf, delim) {
            return Some(buf.drain(..i + delim.len()).collect());
        }
        if !fill(s, buf).await {
            return None;
        }
    }
}

/// One replica connection: records each request (the head first, then its body), and
/// answers `200` with the path as the body. `HEAD` gets `Content-Length: 5` and no body,
/// `/204` and `/304` no body, `/close` `Connection: close` before the replica closes.
/// A body framed by anything but one `Content-Length` or exactly `chunked` is never read:
/// the connection is closed.
async fn serve(mut s: TcpStream, log: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(head) = until(&mut s, &mut buf, b"\r\n\r\n").await else {
            return;
        };
        let head = String::from_utf8_lossy(&head).into_owned();
        let seen = Seen { head, body: None };
        let cl = seen.header("content-length");
        let te = seen.header("transfer-encoding");
        let (path, head_only) = (seen.path().to_owned(), seen.head.starts_with("HEAD "));
        let at = {
            let mut log = log.lock().unwrap();
            log.push(seen);
            log.len() - 1
        };
        let body = match (cl.as_slice(), te.as_slice()) {
            ([], [te]) if te.eq_ignore_ascii_case("chunked") => {
                let mut body = Vec::new();
                loop {
                    let Some(line) = until(&mut s, &mut buf, b"\r\n").await else {
                        return;
                    };
                    let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
                    let size = text.split(';').next().unwrap_or("");
                    let Ok(size) = usize::from_str_radix(size, 16) else {
                        return;
                    };
                    if size == 0 {
                        // Trailer fields, then an empty line.
                        while until(&mut s, &mut buf, b"\r\n")
                            .await
                            .is_some_and(|l| l.len() > 2)
                        {}
                        break body;
                    }
                    while buf.len() < size + 2 {
                        if !fill(&mut s, &mut buf).await {
                            return;
                        }
                    }
                    if &buf[size..size + 2] != b"\r\n" {
                        return;
                    }
                    body.extend(buf.drain(..size + 2).take(size));
                }
            }
            ([len], []) => {
                let Ok(len) = len.parse::<usize>() else {
                    return;
                };
                while buf.len() < len {
                    if !fill(&mut s, &mut buf).await {
                        return;
                    }
                }
                buf.drain(..len).collect()
            }
            ([], []) => Vec::new(),
            _ => return,
        };
        log.lock().unwrap()[at].body = Some(body);
        let close = path == "/close";
        let answer = match path.as_str() {
            _ if head_only => "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_owned(),
            "/204" => "HTTP/1.1 204 No Content\r\n\r\n".to_owned(),
            "/304" => {
                "HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\nContent-Length: 5\r\n\r\n".into()
            }
            _ => {
                let conn = if close { "Connection: close\r\n" } else { "" };
                let len = path.len();
                format!("HTTP/1.1 200 OK\r\n{conn}Content-Length: {len}\r\n\r\n{path}")
            }
        };
        if s.write_all(answer.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// Sends `bytes` on a new connection and reads until the proxy closes it (`true`) or
/// [`DEADLINE`] passes (`false`).
async fn exchange(p: &Proxy, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut c = connect(p.addr).await;
    c.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    // A reset ends it as the end of the stream does, keeping what was read before.
    let closed = timeout(DEADLINE, c.read_to_end(&mut out)).await.is_ok();
    (out, closed)
}

/// A response: status, head, body.
type Answer = (u16, String, String);

/// Takes the whole responses off the front of `buf` (each with a `Content-Length` body,
/// or none).
fn whole_responses(buf: &mut Vec<u8>) -> Vec<Answer> {
    let mut out = Vec::new();
    while let Some(end) = find(buf, b"\r\n\r\n").map(|i| i + 4) {
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 "), "not a response: {head:?}");
        let len = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.trim().parse().unwrap());
        if buf.len() < end + len {
            break;
        }
        let body = String::from_utf8_lossy(&buf[end..end + len]).into_owned();
        buf.drain(..end + len);
        out.push((head[9..12].parse().unwrap(), head, body));
    }
    out
}

/// The statuses of the responses that make up `bytes`.
fn statuses(bytes: &[u8]) -> Vec<u16> {
    let mut buf = bytes.to_vec();
    let answers = whole_responses(&mut buf);
    let text = String::from_utf8_lossy(bytes);
    assert!(buf.is_empty(), "not whole responses: {text:?}");
    answers.into_iter().map(|a| a.0).collect()
}

/// Reads `n` responses from `s`.
async fn responses(s: &mut TcpStream, n: usize) -> Vec<Answer> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    timeout(DEADLINE, async {
        while out.len() < n {
            assert!(fill(s, &mut buf).await, "closed after {out:?}");
            out.extend(whole_responses(&mut buf));
        }
    })
    .await
    .expect("the responses in time");
    assert!(buf.is_empty(), "more than {n} responses: {out:?} {buf:?}");
    out
}

/// Each request in `cases` gets one `400`, then the connection closes, and nothing
/// reaches the replica ([`SMUGGLED`] is appended to each).
async fn rejected(cases: &[&[u8]]) {
    let r = Recorder::new().await;
    let p = start_to(r.addr, DEADLINE, |_| {}).await;
    for case in cases {
        let shown = String::from_utf8_lossy(case);
        let (out, closed) = exchange(&p, &[case, SMUGGLED].concat()).await;
        assert_eq!(statuses(&out), [400], "{shown:?}");
        assert!(closed, "{shown:?}: the connection stayed open");
        let seen = r.take(&p).await;
        assert!(seen.is_empty(), "{shown:?} reached the replica: {seen:?}");
    }
}

/// Reads one response head; returns the status, the head, and whatever followed it in
/// the same reads.
async fn head_of(s: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let head = timeout(DEADLINE, until(s, &mut buf, b"\r\n\r\n")).await;
    let head = head
        .expect("a head in time")
        .expect("a head before the end");
    let head = String::from_utf8_lossy(&head).into_owned();
    (head[9..12].parse().unwrap(), head, buf)
}
