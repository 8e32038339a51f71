//! Fields the HTTP/1 parser lets through and the proxy must judge: `Host` (RFC 9112 §3.2,
//! §3.2.2), `chunked` applied twice (§7), fields named by `Connection` (RFC 9110 §7.6.1),
//! and a client's broken body, which is the client's fault and not the replica's.

use super::*;

#[tokio::test]
async fn a_missing_repeated_or_invalid_host_is_400_and_closed() {
    // §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host, with more than
    // one, or with an invalid value, absolute-form target or not.
    rejected(&[
        b"GET /a HTTP/1.1\r\n\r\n",
        b"GET http://x/a HTTP/1.1\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: a/b\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: user@a\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: a:8o\r\n\r\n",
    ])
    .await;
}

#[tokio::test]
async fn http_1_0_needs_no_host_and_the_targets_host_wins_over_host() {
    let r = Recorder::new().await;
    let p = start_to(r.addr, DEADLINE, |_| {}).await;
    let (out, _) = exchange(&p, b"GET /old HTTP/1.0\r\n\r\n").await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.0 200 "), "{text:?}");
    // §3.2.2: with an absolute-form target, Host is replaced by the target's host.
    let mut c = connect(p.addr).await;
    c.write_all(b"GET http://other.example:81/a?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(responses(&mut c, 1).await[0].0, 200);
    let seen = r.take(&p).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].path(), "/a?q=1");
    assert_eq!(seen[1].header("host"), ["other.example:81"]);
}

#[tokio::test]
async fn chunked_applied_twice_is_400_and_closed() {
    // §7: a sender MUST NOT apply chunked more than once; a proxy that decodes it once
    // and forwards the header as is would desynchronise with the replica.
    rejected(&[
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ])
    .await;
}

#[tokio::test]
async fn fields_named_by_connection_do_not_reach_the_replica() {
    let r = Recorder::new().await;
    let p = start_to(r.addr, DEADLINE, |_| {}).await;
    let mut c = connect(p.addr).await;
    c.write_all(
        b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Foo\r\nX-Foo: 1\r\nX-Kept: 2\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(responses(&mut c, 1).await[0].0, 200);
    let seen = r.take(&p).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].header("x-foo").is_empty(), "{:?}", seen[0].head);
    assert!(
        seen[0].header("connection").is_empty(),
        "{:?}",
        seen[0].head
    );
    assert_eq!(seen[0].header("x-kept"), ["2"]);
    // Host is never removed on a client's say-so: the request would be invalid.
    c.write_all(b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: host\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(responses(&mut c, 1).await[0].0, 200);
    assert_eq!(r.take(&p).await[0].header("host"), ["x"]);
}

#[tokio::test]
async fn a_clients_broken_body_is_answered_as_its_fault_and_never_blamed_on_the_replica() {
    let r = Recorder::new().await;
    // One transport failure would open the only replica's breaker for a minute: every
    // later request would get 503.
    let p = start_to(r.addr, DEADLINE, |e| {
        e.breaker.consecutive_failures = 1;
        e.breaker.cooldown = std::time::Duration::from_secs(60);
        e.retries.max_body = 16;
        e.timeouts.request = ms(500);
    })
    .await;
    // Chunk data not followed by CRLF: a malformed body, streamed to the replica.
    let (out, closed) = exchange(
        &p,
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&out), [400], "{}", String::from_utf8_lossy(&out));
    assert!(closed);
    // A body that stops arriving: 408 at the request deadline.
    let mut c = connect(p.addr).await;
    c.write_all(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    let answer = responses(&mut c, 1).await;
    assert_eq!(answer[0].0, 408, "{answer:?}");
    // The replica is still there for everyone else.
    let mut c = connect(p.addr).await;
    assert_eq!(get(&mut c, "/after").await.0, 200);
}
