//! TCP mode's toxics on arbitrary settings and payloads, through a real listener in front
//! of an echo replica. A panic anywhere aborts; and toxics that only reshape the stream
//! (latency, bandwidth, slicer, slow close) must deliver every byte, in order, unchanged.
#![no_main]

#[path = "common.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bus::{Endpoint, Endpoints, Load};
use libfuzzer_sys::fuzz_target;
use prometheus_client::registry::Registry;
use proxy::{TcpExpose, TcpMetrics};
use spec::{Direction, Toxic, ToxicKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::watch;

struct Target {
    rt: Runtime,
    proxy: SocketAddr,
    toxics: watch::Sender<Vec<Toxic>>,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let rt = common::runtime();
        let (proxy, toxics) = rt.block_on(start());
        Target { rt, proxy, toxics }
    })
}

async fn start() -> (SocketAddr, watch::Sender<Vec<Toxic>>) {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = echo.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let ep = Endpoint {
        replica: 0,
        addr: echo_addr,
        revision: 1,
        ready_since: std::time::Instant::now(),
        load: Arc::new(Load::default()),
    };
    let (endpoints, endpoints_rx) = watch::channel(Arc::new(Endpoints {
        version: 1,
        ready: vec![ep],
        // What a stack without rollouts or a leader has (and fields added later).
        ..Endpoints::default()
    }));
    std::mem::forget(endpoints);
    let (toxics, toxics_rx) = watch::channel(Vec::new());
    let (faults, faults_rx) = watch::channel(true);
    std::mem::forget(faults);
    let (shutdown, shutdown_rx) = watch::channel(false);
    std::mem::forget(shutdown);
    let mut registry = Registry::default();
    let metrics: &'static TcpMetrics = Box::leak(Box::new(TcpMetrics::register(&mut registry)));
    let listener = TcpExpose {
        service: "echo".into(),
        socket,
        endpoints: endpoints_rx,
        connect_timeout: Duration::from_secs(1),
        max_connections: 1000,
        idle: Duration::from_secs(2),
        toxics: toxics_rx,
        faults_enabled: faults_rx,
        injected: Default::default(),
    };
    tokio::spawn(proxy::serve_tcp(
        listener,
        metrics,
        shutdown_rx,
        Duration::from_secs(1),
    ));
    (addr, toxics)
}

/// Up to three toxics from the input's first bytes (small times and sizes, so one run
/// stays in milliseconds); the rest is the payload.
fn decode(data: &[u8]) -> (Vec<Toxic>, &[u8]) {
    let Some((&n, mut rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let mut toxics = Vec::new();
    for _ in 0..(n % 4) {
        let Some((head, tail)) = rest.split_at_checked(5) else {
            break;
        };
        rest = tail;
        let [kind, a, b, c, flags] = [head[0], head[1], head[2], head[3], head[4]];
        let ms = |x: u8| Duration::from_millis(u64::from(x % 4));
        let kind = match kind % 7 {
            0 => ToxicKind::Latency {
                latency: ms(a),
                jitter: ms(b),
            },
            1 => ToxicKind::Bandwidth {
                rate: u64::from(a) * 4096 + u64::from(b),
            },
            2 => ToxicKind::ResetPeer { timeout: ms(a) },
            3 => ToxicKind::Timeout { timeout: ms(a) },
            4 => ToxicKind::SlowClose { delay: ms(a) },
            5 => ToxicKind::Slicer {
                average_size: usize::from(a),
                size_variation: usize::from(b),
                delay: ms(c) / 4,
            },
            _ => ToxicKind::LimitData {
                bytes: u64::from(a) * 16 + u64::from(b),
            },
        };
        toxics.push(Toxic {
            kind,
            toxicity: f64::from(flags % 3) / 2.0,
            direction: if flags & 0x80 == 0 {
                Direction::Upstream
            } else {
                Direction::Downstream
            },
        });
    }
    (toxics, &rest[..rest.len().min(4096)])
}

fn reshapes_only(t: &Toxic) -> bool {
    match t.kind {
        ToxicKind::Latency { .. } | ToxicKind::Slicer { .. } | ToxicKind::SlowClose { .. } => true,
        // A rate of 0 means no limit; any other is only slower.
        ToxicKind::Bandwidth { .. } => true,
        ToxicKind::ResetPeer { .. } | ToxicKind::Timeout { .. } | ToxicKind::LimitData { .. } => {
            t.toxicity <= 0.0
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let t = target();
    let (toxics, payload) = decode(data);
    let intact = toxics.iter().all(reshapes_only);
    t.toxics.send_replace(toxics);
    t.rt.block_on(async {
        // A `reset_peer` of 0 ms can reset the connection before `connect` returns.
        let mut s = match tokio::net::TcpStream::connect(t.proxy).await {
            Ok(s) => s,
            Err(e) => {
                assert!(!intact, "connecting failed with reshaping toxics only: {e}");
                return;
            }
        };
        let (mut r, mut w) = s.split();
        let send = async {
            let _ = w.write_all(payload).await;
            let _ = w.shutdown().await;
        };
        let mut got = Vec::new();
        let recv = r.read_to_end(&mut got);
        let (_, read) =
            tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(send, recv) })
                .await
                .expect("a toxic connection ends within its deadlines");
        if intact {
            assert!(read.is_ok(), "{read:?}");
            assert_eq!(got, payload, "reshaping toxics changed the bytes");
        }
    });
});
