//! A trivial service and raw-bytes clients for the engine's tests.
#![allow(dead_code)]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use h1::{Config, RequestBody};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

pub type Answer = UnsyncBoxBody<Bytes, Infallible>;

/// Answers by path: `/204`, `/304` (with a Content-Length), `/close` (asks to close),
/// `/reset` (asks to drop the connection unanswered), `/ws` and `/101` (see `switch`),
/// `/stream` (a body of unknown length), `/skip` (never reads the request body); any other
/// path reads the whole body and answers `PATH BODY`. A body that fails is answered 500
/// (the engine answers 400 or 413 instead when the failure is the client's).
pub async fn answer(req: Request<RequestBody>) -> Response<Answer> {
    let path = req.uri().path().to_owned();
    let full = |s: String| Full::new(Bytes::from(s)).boxed_unsync();
    if path == "/ws" || path == "/101" {
        return switch(req);
    }
    let mut res = match path.as_str() {
        "/204" => Response::new(full(String::new())),
        "/304" => Response::new(full(String::new())),
        "/skip" => Response::new(full("skipped".into())),
        "/stream" => {
            let parts = ["ab", "cde", ""].map(|p| Ok(http_body::Frame::data(Bytes::from(p))));
            Response::new(StreamBody::new(futures_util::stream::iter(parts)).boxed_unsync())
        }
        _ => match req.into_body().collect().await {
            Ok(b) => {
                let body = String::from_utf8_lossy(&b.to_bytes()).into_owned();
                Response::new(full(format!("{path} {body}")))
            }
            Err(e) => {
                let mut r = Response::new(full(e.to_string()));
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                r
            }
        },
    };
    match path.as_str() {
        "/204" => *res.status_mut() = StatusCode::NO_CONTENT,
        "/304" => {
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            res.headers_mut()
                .insert("content-length", "5".parse().unwrap());
        }
        "/close" => {
            res.headers_mut()
                .insert("connection", "close".parse().unwrap());
        }
        "/reset" => {
            res.extensions_mut().insert(h1::Reset);
        }
        _ => {}
    }
    res
}

/// 101 with `Connection: upgrade`, then an echo on the upgraded connection (if the
/// request asked for an upgrade; `/101` answers it whether or not).
fn switch(req: Request<RequestBody>) -> Response<Answer> {
    if let Some(on) = req.extensions().get::<h1::OnUpgrade>().cloned() {
        tokio::spawn(async move {
            let Ok(mut up) = on.await else { return };
            let mut buf = [0u8; 1024];
            while let Ok(n) = up.read(&mut buf).await {
                if n == 0 || up.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    }
    let mut res = Response::new(Full::new(Bytes::new()).boxed_unsync());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    res.headers_mut()
        .insert("connection", "upgrade".parse().unwrap());
    res.headers_mut()
        .insert("upgrade", "websocket".parse().unwrap());
    res
}

pub fn config() -> Config {
    Config {
        max_body_bytes: Some(1024),
        ..Config::default()
    }
}

/// A connection to a fresh engine over an in-memory pipe.
pub fn connect(config: Config) -> (DuplexStream, tokio::task::JoinHandle<Result<(), h1::Error>>) {
    let (client, server) = tokio::io::duplex(256 * 1024);
    let task = tokio::spawn(h1::serve(server, answer, config.into()));
    (client, task)
}

/// Sends `input`, half-closes, and returns everything answered until the engine closed.
pub async fn exchange(input: &[u8]) -> String {
    let (mut c, task) = connect(config());
    c.write_all(input).await.unwrap();
    c.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out))
        .await
        .expect("the engine never closed")
        .unwrap();
    let _ = task.await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The responses in `out`: status, head, body (by Content-Length or chunked).
pub fn responses(mut out: &str) -> Vec<(u16, String, String)> {
    let mut all = Vec::new();
    while let Some((head, rest)) = out.split_once("\r\n\r\n") {
        let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).expect(head);
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|n| n.parse::<usize>().unwrap());
        let bodiless = status == 100 || status == 204 || status == 304 || head.contains("x-head");
        let (body, rest) = if bodiless {
            (String::new(), rest)
        } else if head.contains("transfer-encoding: chunked") {
            dechunk(rest)
        } else if let Some(n) = length {
            (rest[..n].to_owned(), &rest[n..])
        } else {
            (rest.to_owned(), "")
        };
        all.push((status, head.to_owned(), body));
        out = rest;
    }
    assert!(out.is_empty(), "bytes after the last response: {out:?}");
    all
}

fn dechunk(mut s: &str) -> (String, &str) {
    let mut body = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size, 16).unwrap();
        if n == 0 {
            return (body, rest.strip_prefix("\r\n").unwrap());
        }
        body.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

/// Statuses answered for `input`.
pub async fn statuses(input: &[u8]) -> Vec<u16> {
    responses(&exchange(input).await)
        .iter()
        .map(|r| r.0)
        .collect()
}

/// Serves the engine on 127.0.0.1 from a thread with its own current-thread runtime (as a
/// proxy worker runs it), answering with [`answer`]; returns the address.
pub fn server(config: Config) -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    let config = std::sync::Arc::new(config);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            loop {
                let (s, _) = l.accept().await.unwrap();
                tokio::spawn(h1::serve(s, answer, config.clone()));
            }
        });
    });
    rx.recv().unwrap()
}
