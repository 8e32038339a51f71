//! Hardening of the proxy against hostile clients and replicas, through the real binary:
//! the limits and timeouts of a stack file reach the HTTP and TCP listeners.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::strace::Syscalls;

const PATIENCE: Duration = Duration::from_secs(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// Reads until the peer closes (end of stream or reset); `false` if it stays open.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Reads one response head (and its `Content-Length` body) on a keep-alive connection.
fn response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut b).expect("a response in time");
        assert!(n > 0, "closed before a response: {buf:?}");
        buf.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut have = buf.len() - end;
    while have < len {
        let n = s.read(&mut b).expect("a body in time");
        assert!(n > 0, "closed in the body");
        have += n;
    }
    (status, head)
}

fn web(port: u16) -> String {
    Demo::new("web")
        .replicas(1)
        .ready_every("200ms")
        .expose(port)
        .with(
            r#"[services.web.expose.timeouts]
header_read = "500ms"
idle = "1s"
request = "1500ms"
[services.web.expose.limits]
max_inflight = 4
[services.web.expose.retries]
on = ["gateway-error"]"#,
        )
        .build()
}

#[test]
fn http_listener_enforces_deadlines_and_limits_from_the_stack_file() {
    let port = free_port();
    let stack = Stack::start(&web(port));
    stack.wait_ready("web", 1);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // Connections that send nothing are closed at `header_read`.
    let mut silent: Vec<TcpStream> = (0..20).map(|_| connect(addr)).collect();
    for s in &mut silent {
        assert!(closed(s), "a silent connection stayed open");
    }

    // An idle keep-alive connection is closed after `idle`.
    let mut c = connect(addr);
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(response(&mut c).0, 200);
    let t = Instant::now();
    assert!(closed(&mut c), "idle keep-alive connection stayed open");
    assert!(
        t.elapsed() >= ms(800),
        "closed before `idle`: {:?}",
        t.elapsed()
    );

    // Stalled bodies get 408 and leave the in-flight slots to others.
    let mut stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect(addr);
            s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(ms(200));
    for _ in 0..10 {
        assert_eq!(get(addr, "/").0, 200, "a well-behaved client was refused");
    }
    for s in &mut stalled {
        let (status, head) = response(s);
        assert_eq!(status, 408, "{head}");
        assert!(head.contains("connection: close"), "{head}");
    }

    // Oversized request heads get 431.
    let big = "a".repeat(70 * 1024);
    let mut c = connect(addr);
    // The proxy may answer and close before it has read it all.
    let _ = c.write_all(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes());
    assert_eq!(response(&mut c).0, 431);

    // A replica's absurd `Retry-After` does not break the proxy.
    let rport = stack.service("web")["replicas"][0]["port"]
        .as_u64()
        .unwrap();
    let replica: SocketAddr = format!("127.0.0.1:{rport}").parse().unwrap();
    let (status, body) = get(
        replica,
        "/fault/status?code=503&retry_after=18446744073709551615",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(addr, "/").0, 503);
    assert_eq!(get(replica, "/fault/reset").0, 200);
    assert_eq!(get(addr, "/").0, 200);
}

#[test]
fn tcp_listener_enforces_max_connections_and_idle_from_the_stack_file() {
    let port = free_port();
    let stack = Stack::start(
        &Demo::with_args("echo", &["--tcp"])
            .replicas(1)
            .expose(port)
            .with(
                r#"protocol = "tcp"
[services.echo.expose.timeouts]
idle = "1s"
[services.echo.expose.limits]
max_connections = 2"#,
            )
            .build(),
    );
    stack.wait_ready("echo", 1);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let banner = |s: &TcpStream| {
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "closed before the banner");
    };
    let active = connect(addr);
    banner(&active);
    let mut idle = connect(addr);
    banner(&idle);
    // Over the limit: closed at once.
    let mut over = connect(addr);
    let t = Instant::now();
    assert!(closed(&mut over), "a connection over the limit stayed open");
    assert!(t.elapsed() < ms(1000), "{:?}", t.elapsed());
    // Keep one busy for well over `idle`; the other goes quiet.
    let mut r = BufReader::new(active.try_clone().unwrap());
    let mut w = active;
    let t = Instant::now();
    while t.elapsed() < ms(2000) {
        writeln!(w, "ping").unwrap();
        let mut echo = String::new();
        r.read_line(&mut echo).unwrap();
        assert_eq!(echo, "ping\n");
        std::thread::sleep(ms(200));
    }
    assert!(closed(&mut idle), "idle connection stayed open");
    writeln!(w, "still here").unwrap();
    let mut echo = String::new();
    r.read_line(&mut echo).unwrap();
    assert_eq!(echo, "still here\n");
}

/// TCP mode reads each message once. Regression: the pump read with `try_read`, which
/// leaves the socket's readiness set after a short read, so every message cost a second
/// read failing with EAGAIN: 4 `recvfrom` per request/answer through the proxy, HAProxy's 2.
/// Counted with strace on `up` over 200 round trips.
#[test]
fn tcp_mode_reads_each_message_once() {
    let port = free_port();
    let stack = Stack::start(
        &Demo::with_args("echo", &["--tcp"])
            .replicas(1)
            .expose(port)
            .with(r#"protocol = "tcp""#)
            .build(),
    );
    stack.wait_ready("echo", 1);
    let s = connect(format!("127.0.0.1:{port}").parse().unwrap());
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut banner = String::new();
    r.read_line(&mut banner).unwrap();
    let mut round_trip = |i: usize| {
        // One write per line (`writeln!` writes each piece of its format on its own).
        w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        let mut echo = String::new();
        r.read_line(&mut echo).unwrap();
        assert_eq!(echo, format!("line {i}\n"));
    };
    round_trip(0); // the pump's first read (no buffer until data) is behind it
    let Syscalls { calls, errors } = Syscalls::count(stack.pid(), "recvfrom", || {
        for i in 1..=200 {
            round_trip(i);
        }
    });
    // 2 per round trip (client to replica, replica to client); a little room for the
    // control plane's own sockets.
    assert!(
        calls <= 2 * 200 + 40 && errors <= 20,
        "{calls} recvfrom ({errors} failed) for 200 round trips"
    );
}

/// Clients that send the first bytes of the HTTP/2 preface (`PRI * HT`) and stall cost
/// `up` no CPU while they wait for their deadline (the engine choice once peeked every
/// 5 ms for the rest of it), and a request whose first write (`P`) could begin the preface is answered.
#[test]
fn a_stalled_part_of_the_h2_preface_costs_no_cpu_and_a_split_request_is_answered() {
    let port = free_port();
    let toml = Demo::new("web")
        .replicas(1)
        .ready_every("200ms")
        .expose(port)
        .with("[services.web.expose.timeouts]\nheader_read = \"30s\"")
        .build();
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 1);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let stalled: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = connect(addr);
            s.write_all(b"PRI * HT").unwrap();
            s
        })
        .collect();
    std::thread::sleep(ms(500)); // let the proxy take in every connection's bytes
    let before = cpu_time(stack.pid());
    std::thread::sleep(Duration::from_secs(2)); // the window measured, not a wait for an event
    let used = cpu_time(stack.pid()) - before;
    assert!(
        used < Duration::from_millis(300),
        "{used:?} of CPU in 2 s for 300 stalled connections"
    );
    let mut split = connect(addr);
    split.write_all(b"P").unwrap(); // could begin the preface: hyper decides
    std::thread::sleep(ms(50));
    split
        .write_all(b"OST / HTTP/1.1\r\nHost: web\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    assert_eq!(response(&mut split).0, 200);
    drop(stalled);
}
