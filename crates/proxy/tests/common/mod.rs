//! The harness shared by the proxy's integration tests: a proxy on 127.0.0.1 in front
//! of replicas, and raw-socket helpers to talk to it.

#![allow(dead_code)] // each test file uses a part of it

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bus::{Endpoint, Endpoints, Load};
use prometheus_client::registry::Registry;
use proxy::{Hooks, ProxyMetrics, ServiceProxyHandle, serve};
use spec::Expose;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Generous bound for anything that should happen promptly.
pub const DEADLINE: Duration = Duration::from_secs(5);

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub async fn replica() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let cfg = demo::Config {
        name: "r0".into(),
        ..demo::Config::new(addr)
    };
    tokio::spawn(demo::serve(l, cfg));
    addr
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub replica: SocketAddr,
    pub shutdown: watch::Sender<bool>,
    pub task: JoinHandle<()>,
    pub endpoints: watch::Sender<Arc<Endpoints>>,
    _faults: watch::Sender<bool>,
}

/// A proxy in front of one demo replica, with `tune` applied to the default config.
pub async fn start(drain: Duration, tune: impl FnOnce(&mut Expose)) -> Proxy {
    start_to(replica().await, drain, tune).await
}

/// A proxy in front of the replica at `replica`, with `tune` applied to the default config.
pub async fn start_to(
    replica: SocketAddr,
    drain: Duration,
    tune: impl FnOnce(&mut Expose),
) -> Proxy {
    start_many(&[replica], drain, tune).await
}

/// Ready endpoints for `replicas` (indexes 0, 1, …), as snapshot `version`.
pub fn ready(replicas: &[SocketAddr], version: u64) -> Arc<Endpoints> {
    let ready = replicas
        .iter()
        .enumerate()
        .map(|(i, &addr)| Endpoint {
            replica: i as u32,
            addr,
            revision: 1,
            ready_since: std::time::Instant::now(),
            load: Arc::new(Load::default()),
        })
        .collect();
    Arc::new(Endpoints {
        version,
        ready,
        split: None,
        mixed: false,
        leader: None,
    })
}

/// A proxy in front of `replicas` (the first is `Proxy::replica`).
pub async fn start_many(
    replicas: &[SocketAddr],
    drain: Duration,
    tune: impl FnOnce(&mut Expose),
) -> Proxy {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let mut expose = Expose::new(addr);
    tune(&mut expose);
    let (endpoints, endpoints_rx) = watch::channel(ready(replicas, 1));
    let (faults, faults_rx) = watch::channel(true);
    let hooks = Arc::new(Hooks {
        bus: None,
        faults_on: faults_rx,
        restart: None,
        services: RwLock::new(HashMap::new()),
        injected: Default::default(),
        switches: Default::default(),
        workers: proxy::Workers::current(),
    });
    let mut registry = Registry::default();
    let metrics = ProxyMetrics::register(&mut registry);
    let route = ServiceProxyHandle::new("svc", expose, endpoints_rx, &metrics, None, hooks);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(serve(socket, route, shutdown_rx, drain));
    Proxy {
        addr,
        replica: replicas[0],
        shutdown,
        task,
        endpoints,
        _faults: faults,
    }
}

pub async fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// For a replica written with raw sockets: reads until the end of a request's head,
/// waiting as long as it takes; `false` if the peer closed or failed first.
pub async fn read_request_head(s: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut b = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&b[..n]),
        }
    }
    true
}

/// Reads one response head and a `Content-Length` body; returns (status, head, body).
pub async fn response(s: &mut TcpStream) -> (u16, String, String) {
    timeout(DEADLINE, async {
        let mut buf = Vec::new();
        let mut b = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut b).await.expect("read a response");
            assert!(n > 0, "closed before a response: {buf:?}");
            buf.extend_from_slice(&b[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let status = head[9..12].parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = buf[end..].to_vec();
        while body.len() < len {
            let n = s.read(&mut b).await.expect("read a body");
            assert!(n > 0, "closed in the body");
            body.extend_from_slice(&b[..n]);
        }
        (status, head, String::from_utf8_lossy(&body).to_string())
    })
    .await
    .expect("a response in time")
}

/// Sends a GET and reads the answer on `s`.
pub async fn get(s: &mut TcpStream, path: &str) -> (u16, String, String) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    response(s).await
}

/// Waits until the peer closes `s` (end of stream or a reset), ignoring data before it.
pub async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut b = [0u8; 1024];
    timeout(limit, async {
        loop {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}
