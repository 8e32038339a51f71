//! The TCP proxy over real sockets on 127.0.0.1, with `demo` TCP echo replicas: each
//! connection first receives "{name}\n", then an echo of what it sends.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{Endpoint, Endpoints, Load};
use prometheus_client::registry::Registry;
use proxy::{TcpExpose, TcpMetrics, serve_tcp};
use spec::{Direction, Toxic, ToxicKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Generous bound for anything that should happen promptly.
const DEADLINE: Duration = Duration::from_secs(5);
const SERVICE: &str = "svc";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Starts a demo TCP echo replica named `name`.
async fn replica(name: &str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let cfg = demo::Config {
        tcp: true,
        name: name.into(),
        ..demo::Config::new(addr)
    };
    tokio::spawn(demo::serve(l, cfg));
    addr
}

/// An address nobody listens on (bound, then released).
async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn endpoint(replica: u32, addr: SocketAddr) -> Endpoint {
    Endpoint {
        ready_since: std::time::Instant::now(),
        replica,
        addr,
        revision: 1,
        load: Arc::new(Load::default()),
    }
}

fn snapshot(version: u64, ready: &[Endpoint]) -> Arc<Endpoints> {
    Arc::new(Endpoints {
        version,
        ready: ready.to_vec(),
        split: None,
        mixed: false,
        leader: None,
    })
}

fn toxic(kind: ToxicKind, direction: Direction) -> Toxic {
    Toxic {
        kind,
        toxicity: 1.0,
        direction,
    }
}

struct Proxy {
    addr: SocketAddr,
    endpoints: watch::Sender<Arc<Endpoints>>,
    toxics: watch::Sender<Vec<Toxic>>,
    faults: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    registry: Registry,
}

async fn start(ready: &[Endpoint], toxics: Vec<Toxic>) -> Proxy {
    start_with_drain(ready, toxics, DEADLINE).await
}

async fn start_with_drain(ready: &[Endpoint], toxics: Vec<Toxic>, drain: Duration) -> Proxy {
    start_with_limits(ready, toxics, drain, 10_000, Duration::from_secs(60)).await
}

async fn start_with_limits(
    ready: &[Endpoint],
    toxics: Vec<Toxic>,
    drain: Duration,
    max_connections: u32,
    idle: Duration,
) -> Proxy {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (endpoints, endpoints_rx) = watch::channel(snapshot(1, ready));
    let (toxics, toxics_rx) = watch::channel(toxics);
    let (faults, faults_rx) = watch::channel(true);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut registry = Registry::default();
    let metrics = TcpMetrics::register(&mut registry);
    let listener = TcpExpose {
        service: SERVICE.into(),
        socket,
        endpoints: endpoints_rx,
        connect_timeout: ms(500),
        max_connections,
        idle,
        toxics: toxics_rx,
        faults_enabled: faults_rx,
        injected: Default::default(),
    };
    let task = tokio::spawn(async move { serve_tcp(listener, &metrics, shutdown_rx, drain).await });
    Proxy {
        addr,
        endpoints,
        toxics,
        faults,
        shutdown,
        task,
        registry,
    }
}

impl Proxy {
    async fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Stops the proxy and waits until `serve_tcp` returned; then the metrics are final.
    async fn stop(self) -> String {
        self.shutdown.send(true).unwrap();
        timeout(DEADLINE, self.task)
            .await
            .expect("serve_tcp returns after shutdown")
            .unwrap();
        metrics_text(&self.registry)
    }
}

fn metrics_text(registry: &Registry) -> String {
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, registry).unwrap();
    s
}

/// Reads the replica's banner line.
async fn banner(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = timeout(DEADLINE, s.read(&mut b))
            .await
            .expect("banner in time")
            .unwrap();
        assert_eq!(n, 1, "closed before the banner ended: {line:?}");
        if b[0] == b'\n' {
            return String::from_utf8(line).unwrap();
        }
        line.push(b[0]);
    }
}

/// Sends `msg` and reads the echo back; returns the round trip.
async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
    let t = Instant::now();
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    timeout(DEADLINE, s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(back, msg);
    t.elapsed()
}

/// Waits for the end of the connection: `Ok(0)` for end of stream, or the error.
async fn end_of(s: &mut TcpStream) -> io::Result<usize> {
    let mut buf = [0u8; 1024];
    timeout(DEADLINE, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return Ok(0),
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("connection ends in time")
}

fn assert_metric(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing `{line}` in:\n{text}"
    );
}

#[tokio::test]
async fn echo_through_the_proxy_holds_the_load_guard_and_is_counted() {
    let ep = endpoint(0, replica("r0").await);
    let load = ep.load.clone();
    let p = start(std::slice::from_ref(&ep), vec![]).await;

    let mut c = p.connect().await;
    assert_eq!(banner(&mut c).await, "r0");
    round_trip(&mut c, b"hello\n").await;
    assert_eq!(load.inflight(), 1, "a guard for the open connection");
    assert_metric(
        &metrics_text(&p.registry),
        "bulwark_tcp_active_connections{service=\"svc\"} 1",
    );

    // Half-close: the replica sees our FIN, finishes, and its FIN comes back.
    c.shutdown().await.unwrap();
    assert_eq!(end_of(&mut c).await.unwrap(), 0);
    timeout(DEADLINE, load.drained())
        .await
        .expect("guard released");

    let text = p.stop().await;
    assert_metric(
        &text,
        "bulwark_tcp_connections_total{service=\"svc\",result=\"ok\"} 1",
    );
    assert_metric(
        &text,
        "bulwark_tcp_bytes_total{service=\"svc\",direction=\"upstream\"} 6",
    );
    assert_metric(
        &text,
        "bulwark_tcp_bytes_total{service=\"svc\",direction=\"downstream\"} 9",
    );
    assert_metric(&text, "bulwark_tcp_active_connections{service=\"svc\"} 0");
    assert!(text.contains("# UNIT bulwark_tcp_bytes bytes"), "{text}");
}

#[tokio::test]
async fn connections_are_balanced_over_three_replicas() {
    let eps = [
        endpoint(0, replica("r0").await),
        endpoint(1, replica("r1").await),
        endpoint(2, replica("r2").await),
    ];
    let p = start(&eps, vec![]).await;
    let mut held = Vec::new();
    let mut count = [0usize; 3];
    for _ in 0..60 {
        let mut c = p.connect().await;
        let name = banner(&mut c).await;
        let i: usize = name.strip_prefix('r').unwrap().parse().unwrap();
        count[i] += 1;
        held.push(c);
    }
    // P2C over connections in flight keeps the spread close to even (20 each).
    assert!(count.iter().all(|&n| n >= 10), "{count:?}");
    for (ep, n) in eps.iter().zip(count) {
        assert_eq!(ep.load.inflight(), n);
    }
    drop(held);
    p.stop().await;
}

#[tokio::test]
async fn a_dead_replica_is_skipped_by_retry() {
    let eps = [
        endpoint(0, dead_addr().await),
        endpoint(1, replica("r1").await),
    ];
    let p = start(&eps, vec![]).await;
    for _ in 0..20 {
        let mut c = p.connect().await;
        assert_eq!(banner(&mut c).await, "r1");
    }
    assert_eq!(eps[0].load.inflight(), 0);
    let text = p.stop().await;
    assert_metric(
        &text,
        "bulwark_tcp_connections_total{service=\"svc\",result=\"connect_failed\"} 0",
    );
}

#[tokio::test]
async fn without_a_ready_replica_the_client_is_closed_at_once() {
    let p = start(&[], vec![]).await;
    let mut c = p.connect().await;
    let t = Instant::now();
    let end = end_of(&mut c).await;
    assert!(
        end.is_err() || end.as_ref().is_ok_and(|&n| n == 0),
        "{end:?}"
    );
    assert!(
        t.elapsed() < ms(500),
        "closed at once, took {:?}",
        t.elapsed()
    );

    // Only dead replicas: every try fails, then the client is closed.
    let dead = [
        endpoint(0, dead_addr().await),
        endpoint(1, dead_addr().await),
    ];
    p.endpoints.send(snapshot(2, &dead)).unwrap();
    let mut c = p.connect().await;
    let _ = end_of(&mut c).await;

    let text = p.stop().await;
    assert_metric(
        &text,
        "bulwark_tcp_connections_total{service=\"svc\",result=\"no_replica\"} 1",
    );
    assert_metric(
        &text,
        "bulwark_tcp_connections_total{service=\"svc\",result=\"connect_failed\"} 1",
    );
}

#[tokio::test]
async fn a_replica_removed_from_the_snapshot_gets_no_new_connections() {
    let eps = [
        endpoint(0, replica("r0").await),
        endpoint(1, replica("r1").await),
    ];
    let p = start(&eps, vec![]).await;
    let mut first = p.connect().await;
    banner(&mut first).await;

    p.endpoints.send(snapshot(2, &eps[1..])).unwrap();
    for _ in 0..20 {
        let mut c = p.connect().await;
        assert_eq!(banner(&mut c).await, "r1");
    }
    // The connection opened before keeps working.
    round_trip(&mut first, b"still here\n").await;
    drop(first);
    p.stop().await;
}

fn latency(ms_: u64, toxicity: f64, direction: Direction) -> Toxic {
    Toxic {
        kind: ToxicKind::Latency {
            latency: ms(ms_),
            jitter: Duration::ZERO,
        },
        toxicity,
        direction,
    }
}

#[tokio::test]
async fn latency_toxic_delays_chunks_and_toxicity_zero_adds_nothing() {
    let ep = endpoint(0, replica("r0").await);
    // Toxicity 0 means off, however large the latency.
    let p = start(
        std::slice::from_ref(&ep),
        vec![latency(2000, 0.0, Direction::Upstream)],
    )
    .await;
    let mut c = p.connect().await;
    banner(&mut c).await;
    let rtt = round_trip(&mut c, b"ping\n").await;
    assert!(rtt < ms(500), "toxicity 0 added {rtt:?}");
    drop(c);

    // A reload applies to connections opened afterwards.
    p.toxics
        .send(vec![latency(200, 1.0, Direction::Upstream)])
        .unwrap();
    let mut c = p.connect().await;
    banner(&mut c).await;
    for _ in 0..2 {
        let rtt = round_trip(&mut c, b"ping\n").await;
        assert!(rtt >= ms(200) && rtt < ms(1500), "rtt {rtt:?}");
    }
    drop(c);
    p.stop().await;
}

#[tokio::test]
async fn bandwidth_toxic_bounds_throughput() {
    const RATE: u64 = 100_000;
    const LEN: usize = 50_000;
    let ep = endpoint(0, replica("r0").await);
    let p = start(
        std::slice::from_ref(&ep),
        vec![toxic(
            ToxicKind::Bandwidth { rate: RATE },
            Direction::Downstream,
        )],
    )
    .await;
    let mut c = p.connect().await;
    banner(&mut c).await;
    let (mut rd, mut wr) = c.into_split();
    let payload: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    let t = Instant::now();
    let writer = tokio::spawn({
        let payload = payload.clone();
        async move { wr.write_all(&payload).await.map(|()| wr) }
    });
    let mut back = vec![0u8; LEN];
    timeout(DEADLINE, rd.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    let took = t.elapsed();
    assert_eq!(back, payload);
    let expected = Duration::from_secs_f64(LEN as f64 / RATE as f64);
    assert!(
        took >= expected.mul_f64(0.7) && took <= expected.mul_f64(1.3),
        "{LEN} bytes at {RATE} B/s took {took:?}, expected about {expected:?}"
    );
    drop(writer.await.unwrap().unwrap());
    drop(rd);
    p.stop().await;
}

#[tokio::test]
async fn reset_peer_gives_the_client_a_connection_reset() {
    let ep = endpoint(0, replica("r0").await);
    let p = start(
        std::slice::from_ref(&ep),
        vec![toxic(
            ToxicKind::ResetPeer { timeout: ms(100) },
            Direction::Downstream,
        )],
    )
    .await;
    let mut c = p.connect().await;
    let t = Instant::now();
    let err = end_of(&mut c)
        .await
        .expect_err("a reset, not a clean close");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    assert!(
        t.elapsed() >= ms(90),
        "reset after the timeout: {:?}",
        t.elapsed()
    );
    let text = p.stop().await;
    assert_metric(
        &text,
        "bulwark_tcp_connections_total{service=\"svc\",result=\"toxic\"} 1",
    );
}

#[tokio::test]
async fn limit_data_closes_after_n_bytes() {
    let ep = endpoint(0, replica("r0").await);
    let p = start(
        std::slice::from_ref(&ep),
        vec![toxic(
            ToxicKind::LimitData { bytes: 100 },
            Direction::Downstream,
        )],
    )
    .await;
    let mut c = p.connect().await;
    let payload: Vec<u8> = (0..200u8).collect();
    c.write_all(&payload).await.unwrap();
    let mut got = Vec::new();
    timeout(DEADLINE, c.read_to_end(&mut got))
        .await
        .expect("closed in time")
        .unwrap();
    // The banner counts too: "r0\n" then the first 97 echoed bytes.
    assert_eq!(got.len(), 100);
    assert_eq!(&got[..3], b"r0\n");
    assert_eq!(&got[3..], &payload[..97]);
    p.stop().await;
}

#[tokio::test]
async fn slicer_delivers_every_byte_intact() {
    let ep = endpoint(0, replica("r0").await);
    let p = start(
        std::slice::from_ref(&ep),
        vec![toxic(
            ToxicKind::Slicer {
                average_size: 20,
                size_variation: 10,
                delay: ms(2),
            },
            Direction::Downstream,
        )],
    )
    .await;
    let mut c = p.connect().await;
    assert_eq!(banner(&mut c).await, "r0");
    let payload: Vec<u8> = (0..2000).map(|i| (i % 253) as u8).collect();
    let took = round_trip(&mut c, &payload).await;
    // At most 30 bytes a slice: at least ~66 slices, 2 ms apart within each chunk.
    assert!(took >= ms(100), "sliced with delays, took {took:?}");
    drop(c);
    p.stop().await;
}

#[tokio::test]
async fn timeout_toxic_stops_data_then_closes() {
    let ep = endpoint(0, replica("r0").await);
    let p = start(
        std::slice::from_ref(&ep),
        vec![toxic(
            ToxicKind::Timeout { timeout: ms(300) },
            Direction::Upstream,
        )],
    )
    .await;
    let t = Instant::now();
    let mut c = p.connect().await;
    // Downstream is untouched: the banner arrives.
    assert_eq!(banner(&mut c).await, "r0");
    c.write_all(b"ping\n").await.unwrap();
    let mut b = [0u8; 16];
    assert!(
        timeout(ms(150), c.read(&mut b)).await.is_err(),
        "no echo while timed out"
    );
    let end = end_of(&mut c).await;
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    assert!(t.elapsed() >= ms(300), "closed after {:?}", t.elapsed());
    p.stop().await;
}

#[tokio::test]
async fn timeout_zero_never_closes_and_the_kill_switch_lets_data_through() {
    let ep = endpoint(0, replica("r0").await);
    let p = start(
        std::slice::from_ref(&ep),
        vec![toxic(
            ToxicKind::Timeout {
                timeout: Duration::ZERO,
            },
            Direction::Upstream,
        )],
    )
    .await;
    let mut c = p.connect().await;
    banner(&mut c).await;
    c.write_all(b"lost\n").await.unwrap();
    let mut b = [0u8; 16];
    assert!(
        timeout(ms(300), c.read(&mut b)).await.is_err(),
        "neither data nor a close"
    );
    p.faults.send(false).unwrap();
    // Dropped data stays dropped; new data passes.
    round_trip(&mut c, b"kept\n").await;
    drop(c);
    p.stop().await;
}

#[tokio::test]
async fn slow_close_delays_the_end_of_stream() {
    async fn time_to_eof(p: &Proxy) -> Duration {
        let mut c = p.connect().await;
        banner(&mut c).await;
        let t = Instant::now();
        c.shutdown().await.unwrap();
        assert_eq!(end_of(&mut c).await.unwrap(), 0);
        t.elapsed()
    }
    let ep = endpoint(0, replica("r0").await);
    let slow = Toxic {
        kind: ToxicKind::SlowClose { delay: ms(300) },
        toxicity: 0.0,
        direction: Direction::Downstream,
    };
    let p = start(std::slice::from_ref(&ep), vec![slow.clone()]).await;
    let quick = time_to_eof(&p).await;
    assert!(quick < ms(200), "without the toxic: {quick:?}");
    p.toxics
        .send(vec![Toxic {
            toxicity: 1.0,
            ..slow
        }])
        .unwrap();
    let slow = time_to_eof(&p).await;
    assert!(
        slow >= ms(300) && slow < ms(2000),
        "with slow_close: {slow:?}"
    );
    p.stop().await;
}

#[tokio::test]
async fn kill_switch_removes_latency_from_open_connections() {
    let ep = endpoint(0, replica("r0").await);
    let p = start(
        std::slice::from_ref(&ep),
        vec![latency(300, 1.0, Direction::Downstream)],
    )
    .await;
    let mut c = p.connect().await;
    banner(&mut c).await;
    let rtt = round_trip(&mut c, b"slow\n").await;
    assert!(rtt >= ms(300), "latency on: {rtt:?}");

    p.faults.send(false).unwrap();
    for _ in 0..3 {
        let rtt = round_trip(&mut c, b"fast\n").await;
        assert!(rtt < ms(150), "kill switch off, still {rtt:?}");
    }
    // And back on: the connection's toxics act again.
    p.faults.send(true).unwrap();
    let rtt = round_trip(&mut c, b"slow\n").await;
    assert!(rtt >= ms(300), "latency on again: {rtt:?}");
    drop(c);
    p.stop().await;
}

#[tokio::test]
async fn shutdown_drains_open_connections() {
    let ep = endpoint(0, replica("r0").await);
    let mut p = start(std::slice::from_ref(&ep), vec![]).await;
    let mut c = p.connect().await;
    banner(&mut c).await;

    p.shutdown.send(true).unwrap();
    // Still serving the open connection while draining.
    round_trip(&mut c, b"draining\n").await;
    assert!(
        timeout(ms(100), &mut p.task).await.is_err(),
        "serve_tcp waits for the open connection"
    );
    c.shutdown().await.unwrap();
    assert_eq!(end_of(&mut c).await.unwrap(), 0);
    timeout(DEADLINE, &mut p.task)
        .await
        .expect("returns once drained")
        .unwrap();
    // Not accepting any more.
    assert!(TcpStream::connect(p.addr).await.is_err());
    assert_metric(
        &metrics_text(&p.registry),
        "bulwark_tcp_connections_total{service=\"svc\",result=\"ok\"} 1",
    );
}

#[tokio::test]
async fn drain_deadline_closes_what_is_left() {
    let ep = endpoint(0, replica("r0").await);
    let load = ep.load.clone();
    let mut p = start_with_drain(std::slice::from_ref(&ep), vec![], ms(200)).await;
    let mut c = p.connect().await;
    banner(&mut c).await;

    let t = Instant::now();
    p.shutdown.send(true).unwrap();
    timeout(DEADLINE, &mut p.task)
        .await
        .expect("returns at the drain deadline")
        .unwrap();
    assert!(
        t.elapsed() >= ms(200),
        "waited the drain: {:?}",
        t.elapsed()
    );
    assert_eq!(load.inflight(), 0, "guards released on return");
    let end = end_of(&mut c).await;
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    let text = metrics_text(&p.registry);
    assert_metric(
        &text,
        "bulwark_tcp_connections_total{service=\"svc\",result=\"aborted\"} 1",
    );
    assert_metric(&text, "bulwark_tcp_active_connections{service=\"svc\"} 0");
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_at_once() {
    let ep = endpoint(0, replica("r0").await);
    let p = start_with_limits(std::slice::from_ref(&ep), vec![], DEADLINE, 2, DEADLINE).await;
    let mut a = p.connect().await;
    let mut b = p.connect().await;
    assert_eq!(banner(&mut a).await, "r0");
    assert_eq!(banner(&mut b).await, "r0");
    let mut over = p.connect().await;
    let t = Instant::now();
    // Closed without a banner (end of stream or reset).
    let mut buf = [0u8; 16];
    let r = timeout(DEADLINE, over.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(t.elapsed() < ms(1000));
    round_trip(&mut a, b"still fine\n").await;
    // A slot frees when a connection ends.
    drop(a);
    let mut ok = false;
    for _ in 0..50 {
        let mut c = p.connect().await;
        let mut b1 = [0u8; 3];
        if let Ok(Ok(3)) = timeout(DEADLINE, c.read_exact(&mut b1)).await {
            ok = &b1 == b"r0\n";
            break;
        }
        tokio::time::sleep(ms(50)).await;
    }
    assert!(ok, "the slot was not released");
    drop(b);
    let text = p.stop().await;
    assert!(
        text.lines().any(|l| l
            .starts_with("bulwark_tcp_connections_total{service=\"svc\",result=\"over_limit\"}")
            && !l.ends_with(" 0")),
        "{text}"
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_an_active_one_is_not() {
    let ep = endpoint(0, replica("r0").await);
    let p = start_with_limits(std::slice::from_ref(&ep), vec![], DEADLINE, 100, ms(600)).await;
    let mut active = p.connect().await;
    let mut idle = p.connect().await;
    assert_eq!(banner(&mut active).await, "r0");
    assert_eq!(banner(&mut idle).await, "r0");
    let t = Instant::now();
    for _ in 0..8 {
        round_trip(&mut active, b"ping\n").await;
        tokio::time::sleep(ms(200)).await;
    }
    assert!(t.elapsed() >= ms(1500));
    round_trip(&mut active, b"ping\n").await;
    assert!(matches!(end_of(&mut idle).await, Ok(0) | Err(_)));
    let t = Instant::now();
    assert!(matches!(end_of(&mut active).await, Ok(0) | Err(_)));
    assert!(t.elapsed() >= ms(450), "{:?}", t.elapsed());
    let text = p.stop().await;
    assert_metric(
        &text,
        "bulwark_tcp_connections_total{service=\"svc\",result=\"idle\"} 2",
    );
}
