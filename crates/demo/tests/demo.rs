//! End-to-end tests of the demo workload over real loopback sockets. Every
//! test starts its own server, so fault state never leaks between tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Exit code passed to the crash hook; 0 = not called.
static EXIT_CODE: AtomicI32 = AtomicI32::new(0);

fn record_exit(code: i32) {
    EXIT_CODE.store(code, Ordering::SeqCst);
}

async fn start(tweak: impl FnOnce(&mut demo::Config)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = demo::Config::new(addr);
    cfg.name = "r1".into();
    cfg.greeting = "hello".into();
    cfg.exit = record_exit;
    tweak(&mut cfg);
    tokio::spawn(demo::serve(listener, cfg));
    addr
}

/// One HTTP/1.1 keep-alive connection.
struct Conn(http1::SendRequest<Full<Bytes>>);

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (send, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        Conn(send)
    }

    async fn send(&mut self, method: Method, path: &str, body: Bytes) -> (StatusCode, Bytes) {
        self.0.ready().await.unwrap();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "demo")
            .body(Full::new(body))
            .unwrap();
        let resp = self.0.send_request(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }

    async fn get(&mut self, path: &str) -> (StatusCode, String) {
        let (status, body) = self.send(Method::GET, path, Bytes::new()).await;
        (status, String::from_utf8(body.to_vec()).unwrap())
    }
}

/// GET on a fresh connection.
async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    Conn::open(addr).await.get(path).await
}

#[tokio::test]
async fn root_healthz_ready_and_404() {
    let addr = start(|c| c.greeting = "hi".into()).await;
    let mut c = Conn::open(addr).await;
    // Several requests on one connection: keep-alive works.
    assert_eq!(c.get("/").await, (StatusCode::OK, "hi from r1\n".into()));
    assert_eq!(c.get("/healthz").await, (StatusCode::OK, "ok".into()));
    assert_eq!(c.get("/ready").await, (StatusCode::OK, "ready".into()));
    assert_eq!(c.get("/nope").await.0, StatusCode::NOT_FOUND);
    assert_eq!(c.get("/fault/nope").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(c.get("/echo").await.0, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn default_name_comes_from_port() {
    let addr: SocketAddr = "127.0.0.1:4567".parse().unwrap();
    let cfg = demo::Config::new(addr);
    if std::env::var(demo::ENV_REPLICA).is_err() {
        assert_eq!(cfg.name, "demo:4567");
    }
    assert!(!cfg.tcp);
    assert_eq!(cfg.startup_delay, Duration::ZERO);
}

#[tokio::test]
async fn http2_prior_knowledge() {
    let addr = start(|_| {}).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = Request::builder()
            .uri(format!("http://{addr}/"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello from r1\n");
    }
}

#[tokio::test]
async fn echo_streams_body_back() {
    let addr = start(|_| {}).await;
    let mut c = Conn::open(addr).await;
    let body: Bytes = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let (status, got) = c.send(Method::POST, "/echo", body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, body);
    // The connection is still usable afterwards.
    assert_eq!(c.get("/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn startup_delay_answers_503_then_200() {
    let addr = start(|c| c.startup_delay = Duration::from_millis(300)).await;
    for path in ["/", "/healthz", "/ready"] {
        assert_eq!(
            get(addr, path).await,
            (StatusCode::SERVICE_UNAVAILABLE, "starting".into()),
            "{path}"
        );
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    for path in ["/", "/healthz", "/ready"] {
        assert_eq!(get(addr, path).await.0, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn hang_blocks_every_later_request() {
    let addr = start(|_| {}).await;
    // A keep-alive connection opened before the fault.
    let mut before = Conn::open(addr).await;
    assert_eq!(before.get("/healthz").await.0, StatusCode::OK);

    assert_eq!(
        get(addr, "/fault/hang").await,
        (StatusCode::OK, "hanging\n".into())
    );

    let short = Duration::from_millis(300);
    assert!(
        tokio::time::timeout(short, before.get("/healthz"))
            .await
            .is_err(),
        "keep-alive connection answered after hang"
    );
    for path in ["/", "/healthz", "/fault/reset"] {
        assert!(
            tokio::time::timeout(short, get(addr, path)).await.is_err(),
            "{path} answered after hang"
        );
    }
}

#[tokio::test]
async fn slow_then_reset() {
    let addr = start(|_| {}).await;
    let mut c = Conn::open(addr).await;
    assert_eq!(c.get("/fault/slow?ms=200").await.0, StatusCode::OK);
    // Only `/` is slowed.
    let t = Instant::now();
    assert_eq!(c.get("/healthz").await.0, StatusCode::OK);
    assert!(t.elapsed() < Duration::from_millis(150));
    for _ in 0..2 {
        let t = Instant::now();
        assert_eq!(c.get("/").await.0, StatusCode::OK);
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
    }
    assert_eq!(c.get("/fault/reset").await.0, StatusCode::OK);
    let t = Instant::now();
    assert_eq!(c.get("/").await.0, StatusCode::OK);
    assert!(t.elapsed() < Duration::from_millis(150));
}

#[tokio::test]
async fn status_ratio_one_and_zero() {
    let addr = start(|_| {}).await;
    let mut c = Conn::open(addr).await;
    assert_eq!(
        c.get("/fault/status?code=503&ratio=1.0").await.0,
        StatusCode::OK
    );
    for _ in 0..20 {
        assert_eq!(c.get("/").await.0, StatusCode::SERVICE_UNAVAILABLE);
    }
    // Other endpoints are unaffected.
    assert_eq!(c.get("/healthz").await.0, StatusCode::OK);

    // Default ratio is 1.0.
    assert_eq!(c.get("/fault/status?code=500").await.0, StatusCode::OK);
    for _ in 0..5 {
        assert_eq!(c.get("/").await.0, StatusCode::INTERNAL_SERVER_ERROR);
    }

    assert_eq!(
        c.get("/fault/status?code=503&ratio=0").await.0,
        StatusCode::OK
    );
    for _ in 0..20 {
        assert_eq!(c.get("/").await.0, StatusCode::OK);
    }

    assert_eq!(c.get("/fault/status?code=429").await.0, StatusCode::OK);
    assert_eq!(c.get("/").await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(c.get("/fault/reset").await.0, StatusCode::OK);
    assert_eq!(c.get("/").await.0, StatusCode::OK);
}

#[tokio::test]
async fn status_ratio_half_mixes() {
    let addr = start(|_| {}).await;
    let mut c = Conn::open(addr).await;
    assert_eq!(
        c.get("/fault/status?code=503&ratio=0.5").await.0,
        StatusCode::OK
    );
    let mut failed = 0;
    for _ in 0..200 {
        if c.get("/").await.0 == StatusCode::SERVICE_UNAVAILABLE {
            failed += 1;
        }
    }
    // Binomial(200, 0.5): outside 50..150 has probability ~1e-12.
    assert!((50..150).contains(&failed), "{failed}");
}

#[tokio::test]
async fn bad_query_values_are_400_naming_the_parameter() {
    let addr = start(|_| {}).await;
    let mut c = Conn::open(addr).await;
    for (path, param) in [
        ("/fault/slow", "ms"),
        ("/fault/slow?ms=abc", "ms"),
        ("/fault/slow?ms=-5", "ms"),
        ("/fault/status?code=abc", "code"),
        ("/fault/status?code=42", "code"),
        ("/fault/status?code=503&ratio=1.5", "ratio"),
        ("/fault/status?ratio=x", "ratio"),
        ("/fault/leak", "mb"),
        ("/fault/leak?mb=0", "mb"),
        ("/fault/leak?mb=lots", "mb"),
    ] {
        let (status, body) = c.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert!(body.contains(&format!("`{param}`")), "{path}: {body}");
    }
    // Nothing was changed by the rejected requests.
    let t = Instant::now();
    assert_eq!(c.get("/").await, (StatusCode::OK, "hello from r1\n".into()));
    assert!(t.elapsed() < Duration::from_millis(150));
}

#[tokio::test]
async fn unready_then_reset() {
    let addr = start(|_| {}).await;
    let mut c = Conn::open(addr).await;
    assert_eq!(c.get("/fault/unready").await.0, StatusCode::OK);
    assert_eq!(c.get("/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(c.get("/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(c.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(c.get("/").await.0, StatusCode::OK);
    assert_eq!(c.get("/fault/reset").await.0, StatusCode::OK);
    assert_eq!(c.get("/ready").await.0, StatusCode::OK);
}

#[tokio::test]
async fn leak_accumulates_and_reset_frees() {
    let addr = start(|_| {}).await;
    let mut c = Conn::open(addr).await;
    assert_eq!(
        c.get("/fault/leak?mb=2").await,
        (StatusCode::OK, "leaked 2 MiB, 2 MiB total\n".into())
    );
    assert_eq!(
        c.get("/fault/leak?mb=3").await,
        (StatusCode::OK, "leaked 3 MiB, 5 MiB total\n".into())
    );
    assert_eq!(c.get("/fault/reset").await.0, StatusCode::OK);
    assert_eq!(
        c.get("/fault/leak?mb=1").await,
        (StatusCode::OK, "leaked 1 MiB, 1 MiB total\n".into())
    );
}

#[tokio::test]
async fn crash_answers_then_calls_exit_hook() {
    let addr = start(|_| {}).await;
    assert_eq!(EXIT_CODE.load(Ordering::SeqCst), 0);
    assert_eq!(
        get(addr, "/fault/crash").await,
        (StatusCode::OK, "crashing\n".into())
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while EXIT_CODE.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "exit hook not called");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(EXIT_CODE.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn tcp_echo_sends_name_then_echoes() {
    let addr = start(|c| c.tcp = true).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    assert_eq!(line, "r1\n");
    stream.write_all(b"ping\n").await.unwrap();
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping\n");
    stream.write_all(b"and more").await.unwrap();
    stream.get_mut().shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"and more");
}

#[tokio::test]
async fn tcp_startup_delay_binds_late() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut cfg = demo::Config::new(addr);
    cfg.tcp = true;
    cfg.name = "late".into();
    cfg.startup_delay = Duration::from_millis(300);
    tokio::spawn(demo::run(cfg));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(addr).await.is_err(), "bound too early");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut stream = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    assert_eq!(line, "late\n");
}

#[tokio::test]
async fn run_binds_the_configured_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut cfg = demo::Config::new(addr);
    cfg.name = "bound".into();
    tokio::spawn(demo::run(cfg));
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "never bound");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        get(addr, "/").await,
        (StatusCode::OK, "hello from bound\n".into())
    );
}

#[tokio::test]
async fn close_fault_refuses_connections_and_drops_open_ones() {
    let addr = start(|_| {}).await;
    let mut open = Conn::open(addr).await;
    assert_eq!(open.get("/").await.0, StatusCode::OK);
    assert_eq!(get(addr, "/fault/close").await.0, StatusCode::OK);
    // The open keep-alive connection is closed by the server...
    let mut stream_gone = false;
    for _ in 0..50 {
        if open.0.is_closed() {
            stream_gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stream_gone, "the open connection was closed");
    // ...and new ones are refused, while the process goes on.
    let mut refused = false;
    for _ in 0..50 {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(refused, "connections to a closed listener are refused");
}

#[tokio::test]
async fn rst_fault_resets_every_new_connection() {
    let addr = start(|_| {}).await;
    assert_eq!(get(addr, "/fault/rst").await.0, StatusCode::OK);
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: demo\r\n\r\n").await;
        let mut buf = [0u8; 64];
        let got = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the reset arrives");
        let err = got.expect_err("a reset, not an answer or a clean close");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    }
}

/// What a notify socket received, with when, until `until`.
async fn notified(sock: &tokio::net::UnixDatagram, until: Instant) -> Vec<(Duration, String)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(
        until.saturating_duration_since(Instant::now()),
        sock.recv(&mut buf),
    )
    .await
    {
        got.push((
            start.elapsed(),
            String::from_utf8_lossy(&buf[..n]).into_owned(),
        ));
    }
    got
}

#[tokio::test]
async fn notify_plan_says_starting_pings_readies_stops_pinging_and_says_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&path).unwrap();
    let addr = start(|c| {
        c.notify_socket = Some(path.clone());
        c.notify = demo::NotifyPlan {
            ready_after: Some(Duration::from_millis(300)),
            watchdog_every: Some(Duration::from_millis(50)),
            stop_watchdog_after: Some(Duration::from_millis(600)),
        };
    })
    .await;
    let got = notified(&sock, Instant::now() + Duration::from_millis(1_000)).await;
    let msgs: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(msgs.first(), Some(&"STATUS=starting"), "{got:?}");
    let at = |m: &str| got.iter().find(|(_, g)| g == m).map(|(at, _)| *at);
    let ready = at("READY=1\nSTATUS=ready").unwrap_or_else(|| panic!("no READY=1: {got:?}"));
    assert!(ready >= Duration::from_millis(250), "READY=1 at {ready:?}");
    let stopped = at("STATUS=watchdog pings stopped")
        .unwrap_or_else(|| panic!("the pings never stopped: {got:?}"));
    let pings: Vec<Duration> = got
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(at, _)| *at)
        .collect();
    assert!(pings.len() >= 8, "{} pings in 600 ms at 50 ms", pings.len());
    assert!(
        pings.iter().all(|p| *p < stopped),
        "a ping after the stop: {got:?}"
    );

    let (code, body) = get(addr, "/notify?say=STATUS%3Dbusy+now").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, _) = get(addr, "/notify?say=STOPPING=1").await;
    assert_eq!(code, StatusCode::OK);
    let said = notified(&sock, Instant::now() + Duration::from_millis(300)).await;
    let said: Vec<&str> = said.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(said, ["STATUS=busy now", "STOPPING=1"]);
    assert_eq!(get(addr, "/notify").await.0, StatusCode::BAD_REQUEST);

    // Without a socket it says so instead of pretending.
    let silent = start(|c| c.notify_socket = None).await;
    let (code, body) = get(silent, "/notify?say=READY=1").await;
    assert_eq!(
        (code, body.as_str()),
        (StatusCode::CONFLICT, "no NOTIFY_SOCKET\n")
    );
}
