//! The connections from the proxy to its replicas, over real sockets on 127.0.0.1:
//! reused between requests, safe against replicas that close idle connections, HTTP/2
//! when the stack file says so (opened before a joining replica's first request), and no
//! HTTP/1.1 connection opened ahead to hold a replica that serves one at a time.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A replica written with raw sockets, counting the connections it accepted.
struct Counting {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Counting {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// An HTTP/1.1 replica answering `200` with `body_len` bytes to every request; with
/// `close_after`, it closes each connection that long after its first answer, without
/// saying so (as a server with a short keep-alive timeout does).
async fn counting(close_after: Option<Duration>, body_len: usize) -> Counting {
    listen(move |s| serve_h1(s, close_after, body_len)).await
}

/// A replica on a free port: each connection is counted, then served by `serve`.
async fn listen<F, Fut>(serve: F) -> Counting
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(s));
        }
    });
    Counting { addr, accepted }
}

async fn serve_h1(mut s: TcpStream, close_after: Option<Duration>, body_len: usize) {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        // One request head and its `Content-Length` body.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < end + len {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        }
        buf.drain(..end + len);
        // Head and body in one write: two small writes would wait on Nagle.
        let mut answer =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\n\r\n").into_bytes();
        answer.resize(answer.len() + body_len, b'x');
        if s.write_all(&answer).await.is_err() {
            return;
        }
        if let Some(after) = close_after {
            tokio::time::sleep(after).await;
            return;
        }
    }
}

async fn post(s: &mut TcpStream, path: &str) -> (u16, String, String) {
    let req = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi");
    s.write_all(req.as_bytes()).await.unwrap();
    response(s).await
}

/// Waits until `f` holds, up to [`DEADLINE`].
async fn eventually(f: impl Fn() -> bool) -> bool {
    let until = tokio::time::Instant::now() + DEADLINE;
    while tokio::time::Instant::now() < until {
        if f() {
            return true;
        }
        tokio::time::sleep(ms(10)).await;
    }
    f()
}

#[tokio::test]
async fn requests_one_after_another_share_one_replica_connection() {
    let r = counting(None, 2).await;
    let p = start_to(r.addr, DEADLINE, |_| {}).await;
    for i in 0..50 {
        // A new client connection each time: the replica's side is what is pooled.
        let mut c = connect(p.addr).await;
        assert_eq!(get(&mut c, "/").await.0, 200, "request {i}");
    }
    // The first connection, and at most one opened beside it before it was given back.
    assert!(
        r.accepted() <= 2,
        "50 requests opened {} replica connections",
        r.accepted()
    );
}

#[tokio::test]
async fn a_replica_that_closes_idle_connections_costs_no_request() {
    // Closes each connection 20 ms after answering, without `Connection: close`.
    let r = counting(Some(ms(20)), 2).await;
    let p = start_to(r.addr, DEADLINE, |_| {}).await;
    let mut c = connect(p.addr).await;
    for i in 0..20 {
        // POST is never retried on another try: a dead pooled connection would be a 502.
        let (status, _, body) = post(&mut c, "/").await;
        assert_eq!(status, 200, "request {i}: {body}");
        tokio::time::sleep(ms(50)).await;
    }
    assert!(r.accepted() >= 20, "each request needed a new connection");
}

/// A replica that serves one connection at a time, as Python's `http.server` or a gunicorn
/// sync worker does: it reads one request (waiting for it as long as it takes), answers
/// with `Connection: close`, and only then accepts the next connection.
async fn one_at_a_time() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            // Answered even when the head never came whole, as before.
            read_request_head(&mut s).await;
            let answer = "HTTP/1.0 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    addr
}

/// Regression: the proxy opened an idle HTTP/1.1 connection to each replica as it became
/// ready. A replica serving one connection at a time then waited on it for a request that
/// did not come, so its probes (and the other workers' requests) timed out: under `up`, a
/// Python `http.server` replica went unready a second after it was ready and answered 503.
#[tokio::test]
async fn a_replica_that_serves_one_connection_at_a_time_is_not_held_by_the_proxy() {
    let replica = one_at_a_time().await;
    let p = start_to(replica, DEADLINE, |_| {}).await;
    for i in 0..3 {
        // As a readiness probe does: straight to the replica, while the proxy holds
        // whatever it opened to it. It must answer, and at once.
        tokio::time::sleep(ms(200)).await;
        let mut probe = connect(replica).await;
        let answered = tokio::time::timeout(Duration::from_secs(2), get(&mut probe, "/healthz"));
        let (status, _, _) = answered
            .await
            .unwrap_or_else(|_| panic!("the replica did not answer its probe {i}"));
        assert_eq!(status, 200, "probe {i}");
        // And through the proxy.
        let mut c = connect(p.addr).await;
        assert_eq!(get(&mut c, "/").await.0, 200, "request {i}");
    }
}

#[tokio::test]
async fn a_joining_http2_replica_gets_its_connection_before_its_first_request() {
    let (a, b) = (h2_replica().await, h2_replica().await);
    let p = start_many(&[a.addr, b.addr], DEADLINE, |e| e.upstream_http2 = true).await;
    // No request yet: each ready replica already has its connection.
    assert!(
        eventually(|| a.accepted() == 1 && b.accepted() == 1).await,
        "before any request, each replica should have one connection: {} and {}",
        a.accepted(),
        b.accepted()
    );
    // A third becomes ready: it gets its connection when the snapshot is published.
    let joining = h2_replica().await;
    p.endpoints
        .send(ready(&[a.addr, b.addr, joining.addr], 2))
        .unwrap();
    assert!(
        eventually(|| joining.accepted() == 1).await,
        "the joining replica got no connection"
    );
    // And the requests use those connections.
    for _ in 0..9 {
        let mut c = connect(p.addr).await;
        assert_eq!(get(&mut c, "/").await.0, 200);
    }
    let opened = a.accepted() + b.accepted() + joining.accepted();
    assert_eq!(
        opened, 3,
        "9 requests opened connections beside the shared ones"
    );
}

#[tokio::test]
async fn a_response_abandoned_by_its_client_does_not_poison_the_pool() {
    // 4 MiB answers: far more than socket buffers hold, so the first is cut short.
    let r = counting(None, 4 << 20).await;
    let p = start_to(r.addr, DEADLINE, |_| {}).await;
    let mut c = connect(p.addr).await;
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let n = c.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    drop(c);
    for i in 0..3 {
        let mut c = connect(p.addr).await;
        let (status, _, body) = get(&mut c, "/").await;
        assert_eq!((status, body.len()), (200, 4 << 20), "request {i}");
    }
}

/// An HTTP/2-only replica (prior knowledge) that answers with the version and URI it
/// received.
async fn h2_replica() -> Counting {
    use hyper::server::conn::http2;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    listen(|s| async move {
        let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| {
            let text = format!("{:?} {}", req.version(), req.uri());
            async move {
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from(text),
                )))
            }
        });
        let conn = http2::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(s), svc);
        let _ = conn.await;
    })
    .await
}

#[tokio::test]
async fn http2_replicas_get_http2_on_one_shared_connection() {
    let r = h2_replica().await;
    let p = start_to(r.addr, DEADLINE, |e| e.upstream_http2 = true).await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        let addr = p.addr;
        clients.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            get(&mut c, "/path?q=1").await
        }));
    }
    for c in clients {
        let (status, _, body) = c.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, format!("HTTP/2.0 http://{}/path?q=1", r.addr));
    }
    // Concurrent first requests may each open one before the first is shared; after
    // that, every request shares it.
    let opened = r.accepted();
    for _ in 0..10 {
        let mut c = connect(p.addr).await;
        assert_eq!(get(&mut c, "/").await.0, 200);
    }
    assert_eq!(
        r.accepted(),
        opened,
        "a later request opened a new connection"
    );
}
