//! Arbitrary bytes sent to the proxy's HTTP listener, in front of a real demo replica, over
//! a real loopback connection: the request head (and whatever follows) goes through the
//! same accept, deadline, parsing, policy and forwarding code as in `bulwark up`. A panic
//! anywhere (also in a spawned task) aborts the process, and a connection must end within
//! its deadline once the client has finished sending.
#![no_main]

#[path = "common.rs"]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use bus::{Endpoint, Endpoints, Load};
use libfuzzer_sys::fuzz_target;
use prometheus_client::registry::Registry;
use proxy::{Hooks, ProxyMetrics, ServiceProxyHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

struct Target {
    rt: Runtime,
    proxy: SocketAddr,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let rt = common::runtime();
        let proxy = rt.block_on(start());
        Target { rt, proxy }
    })
}

/// A proxy with most policies switched on (hash balancing on a cookie, a header-keyed rate
/// limit, retries with a buffered body, injected faults by header), in
/// front of one demo replica.
async fn start() -> SocketAddr {
    let replica = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let replica_addr = replica.local_addr().unwrap();
    tokio::spawn(demo::serve(replica, demo::Config::new(replica_addr)));
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let toml = format!(
        r#"
[services.web]
run = ["x"]
[services.web.expose]
listen = "{addr}"
balance = "hash"
hash_on = "cookie:session"
[services.web.expose.timeouts]
header_read = "500ms"
idle = "1s"
request = "2s"
[services.web.expose.rate_limit]
rate = 100000
burst = 100000
key = "header:x-user"
[services.web.expose.retries]
attempts = 2
on = ["connect-failure", "reset", "5xx"]
[[services.web.expose.faults]]
header = "x-fault"
percent = 50
abort = 503
"#
    );
    let stack = spec::parse(&toml, std::path::Path::new("fuzz.toml")).expect("fuzz stack");
    let expose = stack.services[0].expose.clone().unwrap();
    let ep = Endpoint {
        replica: 0,
        addr: replica_addr,
        revision: 1,
        ready_since: std::time::Instant::now(),
        load: Arc::new(Load::default()),
    };
    let (endpoints, endpoints_rx) = tokio::sync::watch::channel(Arc::new(Endpoints {
        version: 1,
        ready: vec![ep],
        // What a stack without rollouts or a leader has (and fields added later).
        ..Endpoints::default()
    }));
    std::mem::forget(endpoints);
    let (faults, faults_rx) = tokio::sync::watch::channel(true);
    std::mem::forget(faults);
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
    let route = ServiceProxyHandle::new("web", expose, endpoints_rx, &metrics, None, hooks);
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    std::mem::forget(shutdown);
    tokio::spawn(proxy::serve(
        socket,
        route,
        shutdown_rx,
        Duration::from_secs(1),
    ));
    addr
}

fuzz_target!(|data: &[u8]| {
    let t = target();
    t.rt.block_on(async {
        let mut s = tokio::net::TcpStream::connect(t.proxy).await.unwrap();
        let _ = s.write_all(data).await;
        let _ = s.shutdown().await;
        let mut sink = Vec::new();
        // header_read, request and idle deadlines are all under 2 s here.
        let ended = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
        assert!(
            ended.is_ok(),
            "the proxy kept a finished client's connection open"
        );
    });
});
