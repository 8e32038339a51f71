//! Message framing, field syntax, chunked bodies, connections and answers without content.

use super::*;

#[tokio::test]
async fn content_length_with_chunked_is_read_as_chunked_and_the_connection_closed() {
    // RFC 9112 §6.1: a server MAY reject the request (400) or read the body as chunked,
    // and MUST close the connection after responding; §6.3 (3): an intermediary that
    // forwards it MUST first remove `Content-Length`.
    let r = Recorder::new().await;
    let p = start_to(r.addr, DEADLINE, |_| {}).await;
    let cases: [(&[u8], &[u8]); 2] = [
        // By `Content-Length`, the body would be "0\r\n\r\nG" and "ET /smuggled…" next.
        (
            b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"",
        ),
        (
            b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"hello",
        ),
    ];
    for (rest, body) in cases {
        let req = [b"POST /a HTTP/1.1\r\nHost: x\r\n", rest, SMUGGLED].concat();
        let (out, closed) = exchange(&p, &req).await;
        let seen = r.take(&p).await;
        let shown = String::from_utf8_lossy(rest);
        assert!(closed, "{shown:?}: the connection stayed open");
        match statuses(&out)[..] {
            [400] => assert!(seen.is_empty(), "{shown:?}: {seen:?}"),
            [200] => {
                assert_eq!(seen.len(), 1, "{shown:?}: {seen:?}");
                assert_eq!(seen[0].path(), "/a");
                assert!(seen[0].header("content-length").is_empty(), "{seen:?}");
                assert_eq!(seen[0].header("transfer-encoding"), ["chunked"]);
                assert_eq!(seen[0].body.as_deref(), Some(body), "{shown:?}");
            }
            _ => panic!("{shown:?}: {}", String::from_utf8_lossy(&out)),
        }
    }
}

#[tokio::test]
async fn conflicting_or_invalid_content_lengths_are_400_and_the_connection_closed() {
    // RFC 9112 §6.3 (5): an invalid `Content-Length`, or differing values, is
    // unrecoverable: 400 and close.
    rejected(&[
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nabc",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nabc",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1,2\r\n\r\nabc",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    ])
    .await;
}

#[tokio::test]
async fn transfer_codings_not_ending_in_chunked_or_misspelt_are_400_and_closed() {
    // RFC 9112 §6.3 (4): `chunked` not the final coding → 400 and close; §6.1: a
    // `Transfer-Encoding` in HTTP/1.0 means faulty framing; §5.1, §5.2: a field name with
    // whitespace before the colon, or folded, is rejected (never read as this header).
    rejected(&[
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;q=1\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \x0bchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\x0b\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ])
    .await;
}

#[tokio::test]
async fn obs_fold_and_whitespace_before_the_colon_are_400() {
    // RFC 9112 §5.2: a server MUST reject obs-fold with 400 (or replace it with spaces);
    // §5.1: a server MUST reject with 400 whitespace between a field name and the colon.
    rejected(&[
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  2\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\t2\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-A\t: 1\r\n\r\n",
    ])
    .await;
}

#[tokio::test]
async fn bare_lf_is_accepted_as_one_request_and_bare_cr_rejected() {
    // RFC 9112 §2.2: a recipient MAY take a bare LF as a line terminator (here: it
    // does, and forwards one well-formed request), SHOULD ignore an empty line before the
    // request line, and MUST treat a bare CR as invalid (or replace it with a space).
    let r = Recorder::new().await;
    let p = start_to(r.addr, DEADLINE, |_| {}).await;
    let cases: [(&[u8], &[u8]); 4] = [
        (b"GET /a HTTP/1.1\nHost: x\n\n", b""),
        (b"\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n", b""),
        (b"GET /a HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n", b""),
        (
            b"POST /a HTTP/1.1\nHost: x\nContent-Length: 3\n\nabc",
            b"abc",
        ),
    ];
    for (req, body) in cases {
        let shown = String::from_utf8_lossy(req);
        let mut c = connect(p.addr).await;
        c.write_all(req).await.unwrap();
        let (status, _, text) = response(&mut c).await;
        assert_eq!((status, text.as_str()), (200, "/a"), "{shown:?}");
        // The connection is still in step: what follows is read as the next request.
        assert_eq!(get(&mut c, "/b").await.2, "/b", "{shown:?}");
        let seen = r.take(&p).await;
        assert_eq!(seen.len(), 2, "{shown:?}: {seen:?}");
        let head = &seen[0].head;
        let line = head.split("\r\n").next().unwrap_or("");
        assert!(
            ["GET /a HTTP/1.1", "POST /a HTTP/1.1"].contains(&line),
            "{head:?}"
        );
        assert!(!head.replace("\r\n", "").contains(['\r', '\n']), "{head:?}");
        assert_eq!(seen[0].header("host"), ["x"]);
        assert_eq!(seen[0].body.as_deref(), Some(body));
        assert_eq!(seen[1].path(), "/b");
    }
    rejected(&[
        b"GET /a HTTP/1.1\rHost: x\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r2\r\n\r\n",
    ])
    .await;
}

#[tokio::test]
async fn malformed_chunks_close_the_connection_and_complete_no_request() {
    // RFC 9112 §7.1: chunk-size is hex digits, chunk data ends with CRLF; hyper limits
    // chunk extensions to 16 KiB per body. The body is never forwarded whole: the replica
    // sees at most a head and a cut-off body. The client's broken body is its own fault:
    // 400 (RFC 9112 §2.2), never a 502 that would count against the replica and the SLO.
    let r = Recorder::new().await;
    let p = start_to(r.addr, DEADLINE, |_| {}).await;
    let long_ext = [b"3;".as_slice(), &[b'a'; 20_000], b"\r\nabc\r\n0\r\n\r\n"].concat();
    let bodies: [&[u8]; 5] = [
        b"ffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        b"zz\r\nabc\r\n0\r\n\r\n",
        b"0x3\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcX\r\n0\r\n\r\n",
        &long_ext,
    ];
    for body in bodies {
        let head = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (out, closed) = exchange(&p, &[head, body, SMUGGLED].concat()).await;
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]);
        assert!(closed, "{shown:?}: the connection stayed open");
        let answered = statuses(&out);
        assert_eq!(answered, [400], "{shown:?}");
        let seen = r.take(&p).await;
        assert!(
            seen.len() <= 1 && seen.iter().all(|s| s.path() == "/a" && s.body.is_none()),
            "{shown:?}: {seen:?}"
        );
    }
}

#[tokio::test]
async fn chunked_bodies_with_extensions_and_trailers_arrive_intact() {
    // RFC 9112 §7.1.1: unrecognized chunk extensions are ignored; §7.1.2: trailer fields
    // may be dropped; §7: `chunked` is case-insensitive, and the field value may have
    // whitespace around it (§5.1).
    let r = Recorder::new().await;
    let p = start_to(r.addr, DEADLINE, |_| {}).await;
    let body = b"3;ext=\"v\"\r\nabc\r\n4;a;b=c\r\ndefg\r\n0\r\nX-Checksum: 1\r\n\r\n";
    for te in ["chunked", "CHUNKED", "\tchunked "] {
        let head = format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nTrailer: X-Checksum\r\nTransfer-Encoding:{te}\r\n\r\n"
        );
        let mut c = connect(p.addr).await;
        c.write_all(&[head.as_bytes(), body].concat())
            .await
            .unwrap();
        assert_eq!(response(&mut c).await.0, 200, "{te:?}");
        assert_eq!(get(&mut c, "/b").await.2, "/b", "{te:?}");
        let seen = r.take(&p).await;
        assert_eq!(seen.len(), 2, "{te:?}: {seen:?}");
        assert_eq!(seen[0].body.as_deref(), Some(&b"abcdefg"[..]), "{te:?}");
        assert!(seen[0].header("content-length").is_empty(), "{seen:?}");
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    // RFC 9112 §9.3.2: a server MUST send its responses in the order of the requests.
    let r = Recorder::new().await;
    let p = start_to(r.addr, DEADLINE, |_| {}).await;
    let mut c = connect(p.addr).await;
    let one = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    c.write_all(format!("{}{}{}", one("/a"), one("/b"), one("/c")).as_bytes())
        .await
        .unwrap();
    let answers = responses(&mut c, 3).await;
    let got: Vec<_> = answers.iter().map(|(s, _, b)| (*s, b.as_str())).collect();
    assert_eq!(got, [(200, "/a"), (200, "/b"), (200, "/c")]);
    assert_eq!(get(&mut c, "/d").await.2, "/d");
    let seen = r.take(&p).await;
    let paths: Vec<_> = seen.iter().map(Seen::path).collect();
    assert_eq!(paths, ["/a", "/b", "/c", "/d"]);
}

#[tokio::test]
async fn expect_100_continue_gets_100_then_the_body_reaches_the_replica() {
    // RFC 9110 §10.1.1: a server that receives `100-continue` sends 100 (Continue) and
    // reads the body, or answers with a final status at once; the request must then
    // complete with its body.
    let r = Recorder::new().await;
    let p = start_to(r.addr, DEADLINE, |_| {}).await;
    let mut c = connect(p.addr).await;
    let head = b"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
    c.write_all(head).await.unwrap();
    let (status, head, extra) = head_of(&mut c).await;
    assert_eq!(status, 100, "{head}");
    assert!(extra.is_empty(), "{extra:?}");
    c.write_all(b"hello").await.unwrap();
    let (status, _, body) = response(&mut c).await;
    assert_eq!((status, body.as_str()), (200, "/a"));
    assert_eq!(get(&mut c, "/b").await.2, "/b");
    let seen = r.take(&p).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].body.as_deref(), Some(b"hello".as_slice()));
}

#[tokio::test]
async fn head_204_and_304_answers_carry_no_body_and_keep_the_connection() {
    // RFC 9112 §6.3 (1): an answer to HEAD, a 204 and a 304 end with their header
    // section, whatever `Content-Length` says (RFC 9110 §9.3.2, §15.3.5, §15.4.5).
    let r = Recorder::new().await;
    let p = start_to(r.addr, DEADLINE, |_| {}).await;
    let mut c = connect(p.addr).await;
    for (req, status) in [("HEAD /a", 200), ("GET /204", 204), ("GET /304", 304)] {
        c.write_all(format!("{req} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (got, head, extra) = head_of(&mut c).await;
        assert_eq!(got, status, "{req}: {head}");
        if req.starts_with("HEAD") {
            assert!(head.contains("content-length: 5\r\n"), "{head}");
        }
        assert!(extra.is_empty(), "{req}: a body followed: {extra:?}");
        // A body sent late would be read as the start of the next answer.
        let (_, head, body) = get(&mut c, "/b").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{req}: {head:?}");
        assert_eq!(body, "/b");
    }
    let seen = r.take(&p).await;
    let paths: Vec<_> = seen.iter().map(Seen::path).collect();
    assert_eq!(paths, ["/a", "/b", "/204", "/b", "/304", "/b"]);
}

#[tokio::test]
async fn connection_close_from_the_client_closes_after_its_answer() {
    // RFC 9112 §9.6: after the answer to a request with `close` the server MUST close,
    // SHOULD say `close`, and MUST NOT process further requests on the connection;
    // RFC 9110 §7.6.1: `Connection` is not forwarded.
    let r = Recorder::new().await;
    let p = start_to(r.addr, DEADLINE, |_| {}).await;
    let req = b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (out, closed) = exchange(&p, &[req.as_slice(), SMUGGLED].concat()).await;
    assert!(closed, "the connection stayed open");
    let (mut buf, text) = (out.clone(), String::from_utf8_lossy(&out));
    let answers = whole_responses(&mut buf);
    assert!(buf.is_empty() && answers.len() == 1, "{text}");
    assert_eq!((answers[0].0, answers[0].2.as_str()), (200, "/a"));
    assert!(answers[0].1.contains("connection: close\r\n"), "{text}");
    let seen = r.take(&p).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].header("connection").is_empty(), "{seen:?}");
}

#[tokio::test]
async fn connection_close_from_the_replica_keeps_the_client_connection() {
    // RFC 9110 §7.6.1: `Connection` is hop-by-hop: the replica closing its connection
    // says nothing about the client's, which stays usable, also for a request that is
    // never retried (a POST sent on the replica's closed connection would be a 502).
    let r = Recorder::new().await;
    let p = start_to(r.addr, DEADLINE, |_| {}).await;
    let mut c = connect(p.addr).await;
    for i in 0..3 {
        let (status, head, body) = get(&mut c, "/close").await;
        assert_eq!((status, body.as_str()), (200, "/close"), "request {i}");
        assert!(!head.contains("connection:"), "request {i}: {head}");
        c.write_all(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
            .await
            .unwrap();
        let (status, _, body) = response(&mut c).await;
        assert_eq!((status, body.as_str()), (200, "/b"), "request {i}");
    }
    let seen = r.take(&p).await;
    let paths: Vec<_> = seen.iter().map(Seen::path).collect();
    assert_eq!(paths, ["/close", "/b"].repeat(3));
}

#[tokio::test]
async fn absolute_form_targets_are_accepted_and_forwarded_in_origin_form() {
    // RFC 9112 §3.2.2: a server MUST accept the absolute-form; an origin server is sent
    // the origin-form (§3.2.1).
    let r = Recorder::new().await;
    let p = start_to(r.addr, DEADLINE, |_| {}).await;
    let mut c = connect(p.addr).await;
    c.write_all(b"GET http://x/a?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (status, _, body) = response(&mut c).await;
    assert_eq!((status, body.as_str()), (200, "/a?q=1"));
    let seen = r.take(&p).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let head = &seen[0].head;
    assert!(head.starts_with("GET /a?q=1 HTTP/1.1\r\n"), "{head}");
    assert_eq!(seen[0].header("host"), ["x"]);
}
