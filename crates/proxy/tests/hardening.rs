//! Hostile and careless clients against the HTTP listener, over real sockets on
//! 127.0.0.1 with `demo` replicas: connections that send nothing, idle keep-alive
//! connections, stalled request bodies, oversized heads, upgraded tunnels, and replicas
//! with absurd `Retry-After` values.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

#[tokio::test]
async fn connections_that_send_nothing_are_closed_at_the_header_deadline() {
    let p = start(DEADLINE, |e| {
        e.timeouts.header_read = ms(500);
        e.timeouts.idle = Duration::from_secs(60);
    })
    .await;
    let t = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..50 {
        conns.push(connect(p.addr).await);
    }
    for c in &mut conns {
        assert!(
            closed_within(c, DEADLINE).await,
            "a silent connection stayed open"
        );
    }
    assert!(
        t.elapsed() >= ms(400),
        "closed too early: {:?}",
        t.elapsed()
    );
    // The listener still serves.
    let mut c = connect(p.addr).await;
    assert_eq!(get(&mut c, "/").await.0, 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    // `header_read` is long: only `idle` can close this connection in time.
    let p = start(DEADLINE, |e| {
        e.timeouts.header_read = Duration::from_secs(30);
        e.timeouts.idle = ms(700);
    })
    .await;
    let mut c = connect(p.addr).await;
    assert_eq!(get(&mut c, "/").await.0, 200);
    // Activity resets the idle clock.
    tokio::time::sleep(ms(400)).await;
    assert_eq!(get(&mut c, "/").await.0, 200);
    let t = Instant::now();
    assert!(
        closed_within(&mut c, DEADLINE).await,
        "idle connection stayed open"
    );
    assert!(
        t.elapsed() >= ms(550),
        "closed too early: {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_started_request_head_gets_the_header_deadline_not_the_idle_one() {
    let p = start(DEADLINE, |e| {
        e.timeouts.header_read = ms(500);
        e.timeouts.idle = Duration::from_secs(60);
    })
    .await;
    let mut c = connect(p.addr).await;
    assert_eq!(get(&mut c, "/").await.0, 200);
    // Slowloris on the second request of a keep-alive connection.
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    assert!(
        closed_within(&mut c, DEADLINE).await,
        "partial head kept open"
    );
}

#[tokio::test]
async fn a_request_in_flight_is_not_closed_by_the_idle_timeout() {
    let p = start(DEADLINE, |e| {
        e.timeouts.header_read = ms(300);
        e.timeouts.idle = ms(300);
    })
    .await;
    // Make the replica slow (directly, not through the proxy).
    let mut r = connect(p.replica).await;
    assert_eq!(get(&mut r, "/fault/slow?ms=1500").await.0, 200);
    let mut c = connect(p.addr).await;
    let t = Instant::now();
    let (status, _, body) = get(&mut c, "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(t.elapsed() >= ms(1400), "{:?}", t.elapsed());
}

/// A replica that answers every request with a 1 GiB body, written as fast as the
/// reader takes it.
async fn endless_replica() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if !read_request_head(&mut s).await {
                    return;
                }
                let len = 1u64 << 30;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut sent = 0;
                while sent < len {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += chunk.len() as u64;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_client_that_never_reads_its_answer_is_closed_after_the_idle_timeout() {
    let p = start_to(endless_replica().await, DEADLINE, |e| {
        e.timeouts.header_read = ms(500);
        e.timeouts.idle = ms(500);
        e.timeouts.request = Duration::from_secs(60);
    })
    .await;
    let mut c = connect(p.addr).await;
    c.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Never read while the answer is sent: the proxy's writes block within
    // milliseconds, so it closes at about idle (checked every idle) after that.
    tokio::time::sleep(ms(2000)).await;
    // Then read: only what was buffered on the way may arrive before the end; a
    // connection still open would stream on.
    let mut got = 0usize;
    let mut b = vec![0u8; 64 * 1024];
    let closed = timeout(DEADLINE, async {
        loop {
            match c.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await
    .is_ok();
    assert!(closed, "a client that never reads kept its connection");
    assert!(
        got < 64 << 20,
        "{got} bytes arrived after the idle timeout: the connection stayed open"
    );
}

#[tokio::test]
async fn an_http2_preface_then_silence_is_closed_at_the_header_deadline_without_http1_bytes() {
    let p = start(DEADLINE, |e| {
        e.timeouts.header_read = ms(500);
        e.timeouts.idle = Duration::from_secs(60);
    })
    .await;
    let mut c = connect(p.addr).await;
    let t = Instant::now();
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    let closed = timeout(DEADLINE, async {
        loop {
            match c.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&b[..n]),
            }
        }
    })
    .await
    .is_ok();
    assert!(closed, "a silent HTTP/2 connection stayed open");
    assert!(
        t.elapsed() >= ms(400),
        "closed too early: {:?}",
        t.elapsed()
    );
    assert!(
        !got.windows(12).any(|w| w == b"HTTP/1.1 408"),
        "an HTTP/1 408 was written into an HTTP/2 connection: {got:?}"
    );
}

#[tokio::test]
async fn stalled_request_bodies_get_408_and_hold_no_shared_capacity() {
    let p = start(DEADLINE, |e| {
        e.limits.max_inflight = 8;
        e.timeouts.request = ms(1500);
    })
    .await;
    let t = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut c = connect(p.addr).await;
        c.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
            .await
            .unwrap();
        stalled.push(c);
    }
    // Let the stalled requests reach the proxy's handler.
    tokio::time::sleep(ms(200)).await;
    let mut good = connect(p.addr).await;
    for _ in 0..20 {
        let (status, _, body) = get(&mut good, "/").await;
        assert_eq!(status, 200, "a well-behaved client was refused: {body}");
    }
    assert!(
        t.elapsed() < ms(1500),
        "the good requests waited for the stalled ones"
    );
    for c in &mut stalled {
        let (status, head, _) = response(c).await;
        assert_eq!(status, 408);
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        assert!(closed_within(c, DEADLINE).await);
    }
    assert!(t.elapsed() < ms(1500) + DEADLINE);
}

#[tokio::test]
async fn a_streamed_body_is_bounded_by_the_request_deadline() {
    let p = start(DEADLINE, |e| {
        e.limits.max_inflight = 1;
        e.limits.queue = 0;
        e.retries.max_body = 16;
        e.timeouts.request = ms(800);
    })
    .await;
    let t = Instant::now();
    let mut c = connect(p.addr).await;
    c.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    // The echo may start streaming back; it must end, not hang with the body.
    assert!(
        closed_within(&mut c, DEADLINE).await,
        "stalled stream kept open"
    );
    assert!(t.elapsed() >= ms(700), "{:?}", t.elapsed());
    // The only in-flight slot is free again.
    let mut good = connect(p.addr).await;
    assert_eq!(get(&mut good, "/").await.0, 200);
}

#[tokio::test]
async fn oversized_request_heads_get_431() {
    let p = start(DEADLINE, |_| {}).await;
    let mut c = connect(p.addr).await;
    let big = "a".repeat(70 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    // The proxy may answer and close before it has read everything.
    let _ = c.write_all(req.as_bytes()).await;
    assert_eq!(response(&mut c).await.0, 431);

    let mut c = connect(p.addr).await;
    let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let _ = c.write_all(req.as_bytes()).await;
    assert_eq!(response(&mut c).await.0, 431);

    // Within the limits: fine.
    let mut c = connect(p.addr).await;
    let req = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(30 * 1024)
    );
    c.write_all(req.as_bytes()).await.unwrap();
    assert_eq!(response(&mut c).await.0, 200);
}

#[tokio::test]
async fn a_huge_retry_after_from_a_replica_does_not_break_the_proxy() {
    let p = start(DEADLINE, |e| {
        e.retries.on.push(spec::RetryCondition::GatewayError);
    })
    .await;
    let mut r = connect(p.replica).await;
    let (status, _, body) = get(
        &mut r,
        "/fault/status?code=503&retry_after=18446744073709551615",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut c = connect(p.addr).await;
    let (status, head, _) = get(&mut c, "/").await;
    assert_eq!(status, 503, "{head}");
    // Heal the replica: the same connection and new ones work.
    assert_eq!(get(&mut r, "/fault/reset").await.0, 200);
    assert_eq!(get(&mut c, "/").await.0, 200);
    let mut c2 = connect(p.addr).await;
    assert_eq!(get(&mut c2, "/").await.0, 200);
}

/// Opens a WebSocket tunnel to the demo's `/ws` through the proxy.
async fn websocket(addr: SocketAddr) -> TcpStream {
    let mut c = connect(addr).await;
    c.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let (status, head, _) = response(&mut c).await;
    assert_eq!(status, 101, "{head}");
    c
}

/// Sends a short text message (masked with a zero key) and reads its echo.
async fn ws_echo(c: &mut TcpStream, msg: &[u8]) {
    let mut frame = vec![0x81, 0x80 | msg.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(msg);
    c.write_all(&frame).await.unwrap();
    let mut back = vec![0u8; 2 + msg.len()];
    timeout(DEADLINE, c.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(&back[2..], msg);
}

#[tokio::test]
async fn a_tunnel_keeps_its_connection_slot() {
    let p = start(DEADLINE, |e| e.limits.max_connections = 1).await;
    let mut ws = websocket(p.addr).await;
    ws_echo(&mut ws, b"hi").await;
    // The only slot is the tunnel's: another connection is closed at once.
    let mut other = connect(p.addr).await;
    let _ = other.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(closed_within(&mut other, DEADLINE).await);
    ws_echo(&mut ws, b"still here").await;
    drop(ws);
    // Once the tunnel is gone, the slot is free.
    let mut ok = false;
    for _ in 0..50 {
        let mut c = connect(p.addr).await;
        let _ = c
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let _ = timeout(DEADLINE, c.read_to_end(&mut buf)).await;
        if buf.starts_with(b"HTTP/1.1 200") {
            ok = true;
            break;
        }
        tokio::time::sleep(ms(50)).await;
    }
    assert!(ok, "the slot was not released with the tunnel");
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_and_an_active_one_is_not() {
    let p = start(DEADLINE, |e| e.timeouts.idle = ms(600)).await;
    let mut active = websocket(p.addr).await;
    let mut idle = websocket(p.addr).await;
    let t = Instant::now();
    // Messages every 200 ms keep the first tunnel open for well over `idle`.
    for _ in 0..8 {
        ws_echo(&mut active, b"ping").await;
        tokio::time::sleep(ms(200)).await;
    }
    assert!(t.elapsed() >= ms(1500));
    ws_echo(&mut active, b"ping").await;
    assert!(closed_within(&mut idle, DEADLINE).await, "idle tunnel open");
    assert!(
        closed_within(&mut active, DEADLINE).await,
        "idle tunnel open"
    );
}

#[tokio::test]
async fn shutdown_closes_tunnels_after_the_drain_period() {
    let p = start(ms(500), |_| {}).await;
    let mut ws = websocket(p.addr).await;
    ws_echo(&mut ws, b"hi").await;
    let t = Instant::now();
    p.shutdown.send(true).unwrap();
    // Within the drain period the tunnel still works.
    tokio::time::sleep(ms(200)).await;
    ws_echo(&mut ws, b"draining").await;
    assert!(
        closed_within(&mut ws, DEADLINE).await,
        "tunnel outlived shutdown"
    );
    assert!(t.elapsed() >= ms(450), "{:?}", t.elapsed());
    timeout(DEADLINE, p.task)
        .await
        .expect("serve returns")
        .unwrap();
}

/// A 502's body tells the client which replica failed and why, by the replica's index
/// (as `bulwark status` names it), never by the address it listens on inside the host.
#[tokio::test]
async fn a_bad_gateway_names_the_replica_without_its_address() {
    let gone = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let p = start_to(gone, DEADLINE, |e| {
        e.retries.attempts = 1;
    })
    .await;
    let mut c = connect(p.addr).await;
    let (status, _, body) = get(&mut c, "/").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("replica 0: cannot connect"), "{body}");
    assert!(
        !body.contains(&gone.to_string()) && !body.contains(&gone.port().to_string()),
        "the replica's address reached the client: {body}"
    );
}

/// On shutdown an idle keep-alive connection is closed at once, and one with a request in
/// flight gets its answer, marked as the last, then is closed: neither waits for the end
/// of the drain period (either HTTP/1.1 engine, `BULWARK_HTTP1`).
#[tokio::test]
async fn shutdown_closes_keep_alive_connections_between_requests() {
    let drain = Duration::from_secs(10);
    let p = start(drain, |_| {}).await;
    let mut idle = connect(p.addr).await;
    assert_eq!(get(&mut idle, "/").await.0, 200);
    let mut busy = connect(p.addr).await;
    assert_eq!(get(&mut busy, "/").await.0, 200);
    // Half a body: the request is in flight when the drain begins.
    busy.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
        .await
        .unwrap();
    tokio::time::sleep(ms(200)).await;
    let t = Instant::now();
    p.shutdown.send(true).unwrap();
    assert!(
        closed_within(&mut idle, DEADLINE).await,
        "an idle connection waited for the drain deadline"
    );
    tokio::time::sleep(ms(200)).await;
    busy.write_all(b"56789").await.unwrap();
    let (status, head, body) = response(&mut busy).await;
    assert_eq!((status, body.as_str()), (200, "0123456789"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert!(closed_within(&mut busy, DEADLINE).await, "kept open");
    timeout(DEADLINE, p.task)
        .await
        .expect("serve returns once its connections are closed")
        .unwrap();
    assert!(t.elapsed() < drain / 2, "{:?}", t.elapsed());
}
