//! Arbitrary bytes fed to the h1 engine's connection driver over an in-memory pipe, with a
//! trivial service that reads each body and answers 200. The engine must never panic nor
//! hang once the client has finished sending; what it writes must be a sequence of
//! well-formed responses; a refusal (400, 413, 431) is the last thing written; and a
//! first request head that `httparse` rejects is answered 400 (431 for too many fields),
//! as nginx does, never passed to the service.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

const CONFIG: h1::Config = h1::Config {
    max_head_bytes: 2048,
    max_headers: 16,
    max_body_bytes: Some(1024),
    idle_timeout: None,
    header_timeout: None,
    linger: None,
    date: true,
};

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(common::runtime)
}

async fn answer(req: Request<h1::RequestBody>) -> Response<Full<Bytes>> {
    let head = req.method() == Method::HEAD;
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => Bytes::from(e.to_string()),
    };
    let mut res = Response::new(Full::new(body));
    if head {
        res.headers_mut().insert("x-head", http::HeaderValue::from_static("1"));
    }
    res
}

fuzz_target!(|data: &[u8]| {
    let out = runtime().block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let engine = h1::serve(server, answer, CONFIG.into());
        let talk = async {
            client.write_all(data).await.unwrap();
            client.shutdown().await.unwrap();
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.unwrap();
            out
        };
        let (_, out) = tokio::join!(engine, talk);
        out
    });
    let statuses = responses(&out);
    for (i, s) in statuses.iter().enumerate() {
        assert!(matches!(s, 100 | 200 | 400 | 413 | 431), "status {s}");
        if matches!(s, 400 | 413 | 431) {
            assert_eq!(i + 1, statuses.len(), "answered after a refusal: {statuses:?}");
        }
    }
    let mut slots = [httparse::EMPTY_HEADER; 16];
    let head = &data[..data.len().min(CONFIG.max_head_bytes)];
    let expected = match httparse::Request::new(&mut slots).parse(head) {
        Err(httparse::Error::TooManyHeaders) => Some(431),
        Err(_) => Some(400),
        Ok(httparse::Status::Partial) if head.len() >= CONFIG.max_head_bytes => Some(431),
        Ok(_) => None,
    };
    if let Some(status) = expected {
        assert_eq!(statuses, [status], "{:?}", String::from_utf8_lossy(&out));
    } else {
        assert_ne!(statuses.first(), Some(&431), "a head within the limits refused");
    }
});

/// The statuses of the responses in `out`, which must be nothing but whole responses.
fn responses(mut out: &[u8]) -> Vec<u16> {
    let mut statuses = Vec::new();
    while !out.is_empty() {
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let mut res = httparse::Response::new(&mut slots);
        let n = match res.parse(out) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!("not a response ({other:?}): {:?}", String::from_utf8_lossy(out)),
        };
        let status = res.code.unwrap();
        let field = |name: &str| {
            res.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
        };
        let bodiless = status == 100 || field("x-head").is_some();
        let length = field("content-length").map(|v| std::str::from_utf8(v).unwrap().parse::<usize>().unwrap());
        let chunked = field("transfer-encoding").is_some();
        out = &out[n..];
        if !bodiless {
            assert!(!chunked, "a body of known length was chunked");
            let len = length.expect("a response without content-length");
            assert!(out.len() >= len, "a cut-off body");
            out = &out[len..];
        }
        statuses.push(status);
    }
    statuses
}
