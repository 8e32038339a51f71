//! The engine's answers to the framing cases of RFC 9112, over an in-memory pipe: the same
//! answers the proxy's conformance suite expects on its listener.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// Each input is answered exactly once, with `status`, and the connection closed: the
/// request written after it is never answered.
async fn refused(status: u16, inputs: &[&[u8]]) {
    for input in inputs {
        let out = exchange(&[input, SMUGGLED.as_bytes()].concat()).await;
        let shown = String::from_utf8_lossy(&input[..input.len().min(80)]);
        let got = responses(&out);
        assert_eq!(got.len(), 1, "{shown:?}: {out:?}");
        assert_eq!(got[0].0, status, "{shown:?}: {out:?}");
        assert!(got[0].1.contains("connection: close"), "{shown:?}: {out:?}");
    }
}

#[tokio::test]
async fn invalid_framing_fields_are_400_and_close() {
    refused(400, &[
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nabc",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nabc",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1,2\r\n\r\nabc",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;q=1\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \x0bchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ])
    .await;
}

#[tokio::test]
async fn obs_fold_space_before_colon_and_bare_cr_are_400() {
    refused(
        400,
        &[
            b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  2\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\t2\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: x\r\nX-A\t: 1\r\n\r\n",
            b"GET /a HTTP/1.1\rHost: x\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r2\r\n\r\n",
            b"GET /a HTTP/2.0\r\nHost: x\r\n\r\n",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        ],
    )
    .await;
}

#[tokio::test]
async fn bare_lf_and_leading_empty_lines_are_one_request_in_step() {
    for req in [
        &b"GET /a HTTP/1.1\nHost: x\n\n"[..],
        b"\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n",
    ] {
        let out = exchange(&[req, b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"].concat()).await;
        let bodies: Vec<_> = responses(&out).into_iter().map(|r| r.2).collect();
        assert_eq!(bodies, ["/a ", "/b "], "{req:?}");
    }
    let out = exchange(b"POST /a HTTP/1.1\nHost: x\nContent-Length: 3\n\nabc").await;
    assert_eq!(responses(&out)[0].2, "/a abc");
}

#[tokio::test]
async fn content_length_with_chunked_is_read_as_chunked_then_closed() {
    let input = format!(
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
    );
    let got = responses(&exchange(input.as_bytes()).await);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0, got[0].2.as_str()), (200, "/a "));
    assert!(got[0].1.contains("connection: close"), "{got:?}");
}

#[tokio::test]
async fn malformed_chunks_are_400_and_close() {
    let long_ext = [b"3;".as_slice(), &[b'a'; 20_000], b"\r\nabc\r\n0\r\n\r\n"].concat();
    let head = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let bodies: [&[u8]; 6] = [
        b"ffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        b"zz\r\nabc\r\n0\r\n\r\n",
        b"0x3\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcX\r\n0\r\n\r\n",
        b"3\r\nabcXX\r\n0\r\n\r\n",
        &long_ext,
    ];
    let inputs: Vec<Vec<u8>> = bodies.iter().map(|b| [&head[..], b].concat()).collect();
    let inputs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    refused(400, &inputs).await;
}

#[tokio::test]
async fn chunked_bodies_with_extensions_and_trailers_arrive_and_keep_the_connection() {
    for te in ["chunked", "CHUNKED", "\tchunked ", "gzip, chunked"] {
        let req = format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:{te}\r\n\r\n3;ext=\"v\"\r\nabc\r\n4;a;b=c\r\ndefg\r\n0\r\nX-Checksum: 1\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        let got = responses(&exchange(req.as_bytes()).await);
        let bodies: Vec<_> = got.iter().map(|r| r.2.as_str()).collect();
        assert_eq!(bodies, ["/a abcdefg", "/b "], "{te:?}");
    }
}

#[tokio::test]
async fn limits_are_431_and_413() {
    let many: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
    let big = format!(
        "GET /a HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    let fields = format!("GET /a HTTP/1.1\r\n{many}\r\n");
    refused(431, &[big.as_bytes(), fields.as_bytes()]).await;
    // A body over the limit (1 KiB here): by its length before the service runs, chunked
    // once it grows past it.
    let chunk = format!("400\r\n{}\r\n", "a".repeat(1024));
    let chunked = format!(
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n"
    );
    refused(
        413,
        &[
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n",
            chunked.as_bytes(),
        ],
    )
    .await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_not_read_as_a_body() {
    let input = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
                 POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz\
                 POST /skip HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nGET \
                 GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
    let got = responses(&exchange(input.as_bytes()).await);
    let bodies: Vec<_> = got.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(bodies, ["/a ", "/b xyz", "skipped", "/c "]);
}

#[tokio::test]
async fn expect_100_continue_is_answered_when_the_body_is_read() {
    let (mut c, _task) = connect(config());
    c.write_all(
        b"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = vec![0; 25];
    c.read_exact(&mut got).await.unwrap();
    assert_eq!(got, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.write_all(b"hello").await.unwrap();
    c.shutdown().await.unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    assert_eq!(responses(&out)[0].2, "/a hello");
    // Not read: no 100, and the connection closes after the answer (the client may never
    // send the body).
    let out = exchange(
        b"POST /skip HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 200 OK\r\n") && out.contains("connection: close"),
        "{out}"
    );
}

#[tokio::test]
async fn head_204_and_304_have_no_body_and_keep_the_connection() {
    let input = "HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n\
                 GET /204 HTTP/1.1\r\nHost: x\r\n\r\n\
                 GET /304 HTTP/1.1\r\nHost: x\r\n\r\n\
                 GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
    let out = exchange(input.as_bytes()).await;
    // The HEAD answer says the GET's length and is followed by the next head at once.
    let (first, rest) = out.split_once("\r\n\r\n").unwrap();
    assert!(first.contains("content-length: 3"), "{first}");
    assert!(rest.starts_with("HTTP/1.1 204 No Content\r\n"), "{out}");
    let got = responses(rest);
    let statuses: Vec<_> = got.iter().map(|r| r.0).collect();
    assert_eq!(statuses, [204, 304, 200], "{out}");
    assert!(got[1].1.contains("content-length: 5"), "{out}");
    assert!(!got[0].1.contains("transfer-encoding"), "{out}");
}

#[tokio::test]
async fn connection_close_either_way_closes_after_the_answer() {
    let out = exchange(
        format!("GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n{SMUGGLED}").as_bytes(),
    )
    .await;
    let got = responses(&out);
    assert_eq!(got.len(), 1, "{out}");
    assert!(got[0].1.contains("connection: close"), "{out}");
    let out =
        exchange(format!("GET /close HTTP/1.1\r\nHost: x\r\n\r\n{SMUGGLED}").as_bytes()).await;
    assert_eq!(responses(&out).len(), 1, "{out}");
    // A reset: the connection ends with no answer at all.
    let out =
        exchange(format!("GET /reset HTTP/1.1\r\nHost: x\r\n\r\n{SMUGGLED}").as_bytes()).await;
    assert_eq!(out, "");
    // HTTP/1.0: closes unless kept alive, answered in 1.0, and says keep-alive when kept.
    let out = exchange(format!("GET /a HTTP/1.0\r\n\r\n{SMUGGLED}").as_bytes()).await;
    assert!(
        out.starts_with("HTTP/1.0 200 OK\r\n") && responses(&out).len() == 1,
        "{out}"
    );
    let out =
        exchange(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n").await;
    let got = responses(&out);
    assert_eq!(got.len(), 2, "{out}");
    assert!(got[0].1.contains("connection: keep-alive"), "{out}");
}

#[tokio::test]
async fn bodies_of_unknown_length_are_chunked_in_1_1_and_close_delimited_in_1_0() {
    let out =
        exchange(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
    let got = responses(&out);
    assert!(got[0].1.contains("transfer-encoding: chunked"), "{out}");
    assert_eq!(
        (got[0].2.as_str(), got[1].2.as_str()),
        ("abcde", "/b "),
        "{out}"
    );
    let out = exchange(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await;
    assert!(
        out.ends_with("\r\n\r\nabcde") && out.contains("connection: close"),
        "{out}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_head_is_408_and_an_idle_connection_is_closed_silently() {
    let timed = h1::Config {
        header_timeout: Some(Duration::from_secs(10)),
        idle_timeout: Some(Duration::from_secs(60)),
        ..config()
    };
    let (mut c, task) = connect(timed);
    c.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    let got = responses(&out);
    assert_eq!(
        got.iter().map(|r| r.0).collect::<Vec<_>>(),
        [200, 408],
        "{out}"
    );
    assert!(matches!(task.await.unwrap(), Err(h1::Error::Rejected(s)) if s == 408));
    let (mut c, task) = connect(timed);
    c.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    assert_eq!(responses(&out).len(), 1, "{out}");
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn large_bodies_stream_both_ways_in_pieces() {
    // Bodies many times the pooled buffer: read in pieces as the service asks, answered
    // with a vectored write of head and data; chunked the same.
    let body = "x".repeat(200_000);
    let (mut c, task) = connect(h1::Config::default());
    let chunked: String = body
        .as_bytes()
        .chunks(30_000)
        .map(|p| format!("{:x}\r\n{}\r\n", p.len(), String::from_utf8_lossy(p)))
        .collect();
    let input = format!(
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}0\r\n\r\n",
        body.len()
    );
    let write = async {
        c.write_all(input.as_bytes()).await.unwrap();
        let mut out = String::new();
        c.shutdown().await.unwrap();
        c.read_to_string(&mut out).await.unwrap();
        out
    };
    let out = write.await;
    let got = responses(&out);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].2, format!("/a {body}"));
    assert_eq!(got[1].2, format!("/b {body}"));
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn answers_carry_a_date_unless_switched_off() {
    let out = exchange(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let date = out
        .lines()
        .find_map(|l| l.strip_prefix("date: "))
        .expect(&out);
    assert!(date.len() == 29 && date.ends_with(" GMT"), "{date:?}");
    let config = h1::Config {
        date: false,
        ..config()
    };
    let (mut c, _task) = connect(config);
    c.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    assert!(!out.contains("date:"), "{out}");
}

/// A service that closes without reading a body whose bytes never come: the engine closes
/// after the answer instead of waiting for them (the proxy's 408 to a stalled body).
#[tokio::test]
async fn an_answer_that_closes_does_not_wait_for_the_rest_of_the_body() {
    let (mut c, server) = tokio::io::duplex(64 * 1024);
    let service = |_req: http::Request<h1::RequestBody>| async {
        let mut res = http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
        *res.status_mut() = http::StatusCode::REQUEST_TIMEOUT;
        res.headers_mut()
            .insert("connection", "close".parse().unwrap());
        res
    };
    let task = tokio::spawn(h1::serve(server, service, config().into()));
    c.write_all(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out))
        .await
        .expect("the engine waited for the body")
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    task.await.unwrap().unwrap();
}
