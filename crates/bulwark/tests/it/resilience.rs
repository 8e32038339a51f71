//! Issue 3: the proxy's resilience policies, against demo replicas over real sockets.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

fn web(port: u16, replicas: u32, expose: &str) -> String {
    Demo::new("web")
        .replicas(replicas)
        .ready_every("200ms")
        .expose(port)
        .with(expose)
        .build()
}

fn proxy(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// Replica index → its own address (bypassing the proxy).
fn replicas(stack: &Stack) -> Vec<SocketAddr> {
    let svc = stack.service("web");
    let mut v: Vec<(u64, SocketAddr)> = svc["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                format!("127.0.0.1:{}", r["port"]).parse().unwrap(),
            )
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, a)| a).collect()
}

fn fault(addr: SocketAddr, path: &str) {
    assert_eq!(get(addr, path).0, 200, "{path} on {addr}");
}

/// Which replica answered, from the demo's body ("hello from web/N").
fn replica_of(body: &str) -> Option<u32> {
    body.trim().rsplit('/').next()?.parse().ok()
}

fn events_of(stack: &Stack, ty: &str) -> Vec<Value> {
    stack
        .events()
        .into_iter()
        .filter(|e| e["type"] == ty)
        .collect()
}

pub fn metric(stack: &Stack, name: &str) -> f64 {
    let (_, text) = get(stack.api, "/metrics");
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Writes `toml` (with an `[api]` table on an ephemeral port) as the stack file and
/// runs `bulwark reload`, which must succeed.
pub fn reload(stack: &Stack, toml: &str) {
    std::fs::write(
        stack.dir.path().join("stack.toml"),
        format!("{toml}\n[api]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let out = stack.cli(&["reload"]);
    assert!(
        out.status.success(),
        "reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_hung_replica_costs_get_requests_nothing() {
    let port = free_port();
    // Round robin keeps sending to the hung replica, so the per-try timeout and the
    // retry are what save its requests (P2C would mostly route around it by itself).
    let expose = r#"
balance = "round-robin"
[services.web.expose.retries]
on = ["connect-failure", "reset", "per-try-timeout"]
per_try_timeout = "250ms"
attempts = 3
"#;
    let stack = Stack::start(&web(port, 3, expose));
    stack.wait_ready("web", 3);
    let load = Load::start(&format!("http://127.0.0.1:{port}/"), 100, "6s");
    std::thread::sleep(Duration::from_secs(1));
    fault(replicas(&stack)[0], "/fault/hang");
    let report = load.finish();
    assert_eq!(report["failed"]["total"], 0, "{report}");
    assert!(
        metric(&stack, "bulwark_proxy_retries_total") >= 1.0,
        "the hung replica's requests were retried"
    );
}

#[test]
fn a_replica_answering_503_is_ejected_readmitted_and_the_last_never_ejected() {
    let port = free_port();
    // Round robin, so replica 0 surely gets traffic (P2C-EWMA may avoid it for seconds).
    let expose = r#"
balance = "round-robin"
[services.web.expose.retries]
on = ["connect-failure", "reset", "5xx"]
attempts = 3
[services.web.expose.outlier]
consecutive_5xx = 3
base_ejection = "500ms"
max_ejection_percent = 100
"#;
    let stack = Stack::start(&web(port, 3, expose));
    stack.wait_ready("web", 3);
    let reps = replicas(&stack);
    let load = Load::start(&format!("http://127.0.0.1:{port}/"), 100, "6s");
    std::thread::sleep(Duration::from_millis(800));
    fault(reps[0], "/fault/status?code=503&ratio=1");
    let ejected = eventually("replica 0 ejected", Duration::from_secs(10), || {
        events_of(&stack, "replica_ejected")
            .into_iter()
            .find(|e| e["index"] == 0)
    });
    assert!(
        ejected["reason"].as_str().unwrap().contains("5xx"),
        "{ejected}"
    );
    fault(reps[0], "/fault/reset");
    eventually("replica 0 re-admitted", Duration::from_secs(15), || {
        events_of(&stack, "replica_readmitted")
            .into_iter()
            .find(|e| e["index"] == 0)
    });
    let report = load.finish();
    assert_eq!(
        report["failed"]["total"], 0,
        "503s were retried elsewhere: {report}"
    );

    // Everyone fails: ejection stops before the last healthy replica.
    for r in &reps {
        fault(*r, "/fault/status?code=503&ratio=1");
    }
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(3) {
        let (code, body) = get(proxy(port), "/");
        assert_eq!(code, 503);
        assert!(
            body.starts_with("injected 503 from web/"),
            "a replica still answers: {body}"
        );
    }
    let mut out: std::collections::BTreeSet<u64> = Default::default();
    for e in stack.events() {
        match e["type"].as_str() {
            Some("replica_ejected") => {
                out.insert(e["index"].as_u64().unwrap());
            }
            Some("replica_readmitted") => {
                out.remove(&e["index"].as_u64().unwrap());
            }
            _ => {}
        }
        assert!(out.len() < 3, "all replicas ejected at once: {out:?}");
    }
}

/// Sends GETs from 4 threads for `secs`; returns (share of replica 0, p90 latency).
fn measure(port: u16, secs: u64) -> (f64, Duration) {
    let stop = Instant::now() + Duration::from_secs(secs);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut got = vec![];
                while Instant::now() < stop {
                    let t = Instant::now();
                    let (code, body) = get(proxy(port), "/");
                    assert_eq!(code, 200, "{body}");
                    got.push((replica_of(&body), t.elapsed()));
                }
                got
            })
        })
        .collect();
    let mut all: Vec<(Option<u32>, Duration)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let slow = all.iter().filter(|(r, _)| *r == Some(0)).count() as f64 / all.len() as f64;
    all.sort_by_key(|(_, d)| *d);
    (slow, all[all.len() * 90 / 100].1)
}

#[test]
fn p2c_ewma_sends_less_to_a_slow_replica_than_round_robin() {
    let port = free_port();
    let rr = web(port, 3, "balance = \"round-robin\"");
    let p2c = web(port, 3, "balance = \"p2c\"");
    let stack = Stack::start(&rr);
    stack.wait_ready("web", 3);
    fault(replicas(&stack)[0], "/fault/slow?ms=200");
    let (rr_share, rr_p90) = measure(port, 3);
    reload(&stack, &p2c);
    let (p2c_share, p2c_p90) = measure(port, 3);
    assert!(
        rr_share > 0.25,
        "round robin gives the slow replica its third: {rr_share}"
    );
    assert!(
        p2c_share < rr_share / 3.0,
        "P2C-EWMA: {p2c_share} vs round robin {rr_share}"
    );
    assert!(
        p2c_p90 < rr_p90,
        "latency improves: p90 {p2c_p90:?} vs {rr_p90:?}"
    );
}

#[test]
fn overload_is_refused_fast_and_rate_limits_hold() {
    let port = free_port();
    let expose = r#"
[services.web.expose.limits]
max_inflight = 4
queue = 0
"#;
    let stack = Stack::start(&web(port, 2, expose));
    stack.wait_ready("web", 2);
    for r in replicas(&stack) {
        fault(r, "/fault/slow?ms=400");
    }
    let rss = |pid: u32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
        s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
    };
    let before = rss(stack.pid());
    let report = {
        let load = Load::start(&format!("http://127.0.0.1:{port}/"), 400, "3s");
        load.finish()
    };
    let shed = report["failed"]["status"]["503"].as_u64().unwrap_or(0);
    assert!(shed > 800, "most of 1200 requests are shed: {report}");
    assert!(report["ok"].as_u64().unwrap() > 0, "{report}");
    let (code, _) = get(proxy(port), "/fault/reset"); // may itself be shed or pass
    let _ = code;
    let after = rss(stack.pid());
    assert!(
        after < before + 64 * 1024 * 1024,
        "memory stays bounded: {before} -> {after}"
    );
    // shed requests are answered at once with Retry-After
    for r in replicas(&stack) {
        fault(r, "/fault/slow?ms=2000");
    }
    let holders: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || get(proxy(port), "/")))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let raw = http_raw(proxy(port), "GET / HTTP/1.1\r\nHost: x\r\n", "");
    assert!(t.elapsed() < Duration::from_millis(500), "fast 503");
    assert!(raw.starts_with("HTTP/1.1 503"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("retry-after: 1"), "{raw}");
    for h in holders {
        let _ = h.join();
    }

    // rate limit: 50/s with a burst of 5, under 200/s offered for 4 s
    let rl = stack_text(
        port,
        "[services.web.expose.rate_limit]\nrate = 50\nburst = 5\n",
    );
    reload(&stack, &rl);
    for r in replicas(&stack) {
        fault(r, "/fault/reset");
    }
    let report = Load::start(&format!("http://127.0.0.1:{port}/"), 200, "4s").finish();
    let ok = report["ok"].as_u64().unwrap() as f64;
    let limited = report["failed"]["status"]["429"].as_u64().unwrap_or(0);
    assert!(
        (180.0..=225.0).contains(&ok),
        "50/s for 4 s (+5 burst) ±10 %: {ok} ({report})"
    );
    assert!(limited > 500, "{report}");
}

fn stack_text(port: u16, expose: &str) -> String {
    web(port, 2, expose)
}

/// The raw response head and body.
fn http_raw(addr: SocketAddr, head: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{head}Connection: close\r\n\r\n{body}").unwrap();
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut out);
    out
}

#[test]
fn post_is_not_retried_unless_the_route_allows_it() {
    let port = free_port();
    let retries = |methods: &str| {
        format!(
            "balance = \"round-robin\"\n[services.web.expose.retries]\non = [\"per-try-timeout\"]\nper_try_timeout = \"300ms\"\nmethods = \"{methods}\"\n[services.web.expose.outlier]\nenabled = false\n"
        )
    };
    let stack = Stack::start(&web(port, 2, &retries("idempotent")));
    stack.wait_ready("web", 2);
    fault(replicas(&stack)[0], "/fault/hang");
    let send = || (0..4).map(|_| post_echo(proxy(port))).collect::<Vec<u16>>();
    let codes = send();
    assert_eq!(
        codes.iter().filter(|c| **c == 504).count(),
        2,
        "half hit the hung replica, not retried: {codes:?}"
    );
    reload(&stack, &web(port, 2, &retries("all")));
    let codes = send();
    assert!(
        codes.iter().all(|c| *c == 200),
        "retried on the healthy replica: {codes:?}"
    );
}

fn post_echo(addr: SocketAddr) -> u16 {
    let raw = http_raw(
        addr,
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n",
        "hello",
    );
    raw.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn fault_injection_percent_zero_and_kill_switch() {
    let port = free_port();
    let with = |pct: u32| {
        web(
            port,
            2,
            &format!("[[services.web.expose.faults]]\npercent = {pct}\nabort = 503\n"),
        )
    };
    let stack = Stack::start(&with(10));
    stack.wait_ready("web", 2);
    let count = |rate: u32, dur: &str| {
        let r = Load::start(&format!("http://127.0.0.1:{port}/"), rate, dur).finish();
        (
            r["sent"].as_u64().unwrap(),
            r["failed"]["status"]["503"].as_u64().unwrap_or(0),
        )
    };
    let (sent, injected) = count(500, "4s");
    assert_eq!(sent, 2000);
    assert!(
        (140..=260).contains(&injected),
        "10 % ± 3 % of 2000: {injected}"
    );
    reload(&stack, &with(0));
    assert_eq!(count(250, "2s").1, 0, "0 % injects nothing");
    reload(&stack, &with(100));
    assert_eq!(count(100, "1s").1, 100, "100 % injects always");
    let out = stack.cli(&["faults", "off"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count(100, "1s").1, 0, "the kill switch removes every fault");
    assert!(
        stack
            .events()
            .iter()
            .any(|e| e["type"] == "faults_toggled" && e["enabled"] == false)
    );
}

#[test]
fn consistent_hashing_keeps_keys_and_moves_few_on_scale_down() {
    let port = free_port();
    let stack = Stack::start(&web(
        port,
        4,
        "balance = \"hash\"\nhash_on = \"header:x-user\"\n",
    ));
    stack.wait_ready("web", 4);
    let owner = |key: usize| {
        let (code, body) = http(
            proxy(port),
            &format!("GET / HTTP/1.1\r\nHost: x\r\nx-user: user-{key}\r\n"),
        );
        assert_eq!(code, 200);
        replica_of(&body).unwrap()
    };
    let keys = 200;
    let first: Vec<u32> = (0..keys).map(owner).collect();
    let again: Vec<u32> = (0..keys).map(owner).collect();
    assert_eq!(first, again, "the same key lands on the same replica");
    let used: std::collections::BTreeSet<u32> = first.iter().copied().collect();
    assert_eq!(used.len(), 4, "keys spread over all replicas");
    assert!(stack.cli(&["scale", "web", "3"]).status.success());
    stack.wait_service("web", "3 replicas", Duration::from_secs(30), |s| {
        s["replicas"].as_array().unwrap().len() == 3
    });
    let after: Vec<u32> = (0..keys).map(owner).collect();
    let moved = first.iter().zip(&after).filter(|(a, b)| a != b).count();
    let stayed_wrong = first
        .iter()
        .zip(&after)
        .filter(|(a, b)| **a != 3 && a != b)
        .count();
    assert_eq!(stayed_wrong, 0, "keys of the remaining replicas stay put");
    assert!(
        moved as f64 <= keys as f64 * 0.40,
        "about a quarter to a third move: {moved}/{keys}"
    );
}

#[test]
fn http2_websocket_and_tcp_mode() {
    let port = free_port();
    let stack_h = Stack::start(&web(port, 2, ""));
    stack_h.wait_ready("web", 2);
    let out = std::process::Command::new("h2load")
        .args([
            "-n",
            "1000",
            "-c",
            "10",
            "-m",
            "10",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .expect("h2load (Debian nghttp2-client; scripts/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1000 succeeded") && text.contains("0 failed"),
        "{text}"
    );

    // WebSocket echo through the proxy
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
            .await
            .expect("upgrade through the proxy");
        for i in 0..3 {
            ws.send(Message::text(format!("ping {i}"))).await.unwrap();
            let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(back.into_text().unwrap().as_str(), format!("ping {i}"));
        }
    });

    // TCP mode balances connections over echo replicas
    let tport = free_port();
    let tcp = Demo::with_args("echo", &["--tcp"])
        .replicas(3)
        .expose(tport)
        .with(r#"protocol = "tcp""#)
        .build();
    let stack_t = Stack::start(&tcp);
    stack_t.wait_ready("echo", 3);
    let mut seen: HashMap<String, u32> = HashMap::new();
    for i in 0..30 {
        let mut s = TcpStream::connect(("127.0.0.1", tport)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut name = String::new();
        r.read_line(&mut name).unwrap();
        *seen.entry(name.trim().to_owned()).or_default() += 1;
        writeln!(s, "line {i}").unwrap();
        let mut echo = String::new();
        r.read_line(&mut echo).unwrap();
        assert_eq!(echo, format!("line {i}\n"));
    }
    assert_eq!(
        seen.len(),
        3,
        "connections spread over the replicas: {seen:?}"
    );
}

#[test]
fn reload_under_load_loses_nothing() {
    let port = free_port();
    let stack = Stack::start(&web(port, 3, ""));
    stack.wait_ready("web", 3);
    let load = Load::start(&format!("http://127.0.0.1:{port}/"), 200, "8s");
    std::thread::sleep(Duration::from_secs(2));
    reload(
        &stack,
        &web(
            port,
            3,
            "balance = \"least-request\"\n[services.web.expose.retries]\nattempts = 3\n",
        ),
    );
    std::thread::sleep(Duration::from_secs(2));
    // replicas and policies both change: 3 -> 4, round robin
    // and once more by SIGHUP, as an operator would
    std::fs::write(
        stack.dir.path().join("stack.toml"),
        format!(
            "{}\n[api]\nlisten = \"127.0.0.1:0\"\n",
            web(port, 4, "balance = \"round-robin\"\n")
        ),
    )
    .unwrap();
    signal(stack.pid(), libc::SIGHUP);
    let report = load.finish();
    assert_eq!(report["failed"]["total"], 0, "{report}");
    stack.wait_ready("web", 4);
    // one reload by the CLI, one by SIGHUP
    eventually("two reloads", Duration::from_secs(10), || {
        (stack
            .events()
            .iter()
            .filter(|e| e["type"] == "reloaded")
            .count()
            == 2)
            .then_some(())
    });
}

#[test]
fn retries_stay_within_the_budget() {
    let port = free_port();
    let expose = r#"
[services.web.expose.retries]
on = ["5xx"]
attempts = 3
backoff = "1ms"
budget_percent = 20
budget_min_per_second = 0
[services.web.expose.outlier]
enabled = false
"#;
    let stack = Stack::start(&web(port, 3, expose));
    stack.wait_ready("web", 3);
    for r in replicas(&stack) {
        fault(r, "/fault/status?code=503&ratio=1");
    }
    let n = 500;
    let report = Load::start(&format!("http://127.0.0.1:{port}/"), 250, "2s").finish();
    assert_eq!(report["sent"].as_u64().unwrap(), n);
    let retries = metric(&stack, "bulwark_proxy_retries_total");
    let exhausted = metric(
        &stack,
        "bulwark_proxy_policy_events_total{service=\"web\",event=\"retry_budget_exhausted\"}",
    );
    assert!(
        retries <= 0.2 * n as f64 + 1.0,
        "at most 20 % of {n} requests retried: {retries}"
    );
    assert!(retries >= 0.15 * n as f64, "the budget was used: {retries}");
    assert!(exhausted > 0.0, "and ran out: {exhausted}");
}

#[test]
fn header_routes_weighted_split_and_forwarding_headers() {
    let port = free_port();
    let routes = r#"
[[services.web.expose.routes]]
to = "v2"
header = "x-canary: 1"
[[services.web.expose.routes]]
to = "v2"
weight = 20
"#;
    let v2 = Demo::new("v2").with(
        r#"env = { GREETING = "v2" }
[services.v2.readiness]
tcp = true
period = "100ms""#,
    );
    let toml = Demo::new("web")
        .replicas(2)
        .expose(port)
        .with(routes)
        .with(&v2.build())
        .build();
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 2);
    stack.wait_ready("v2", 1);
    let canary = (0..20)
        .filter(|_| {
            http(proxy(port), "GET / HTTP/1.1\r\nHost: x\r\nx-canary: 1\r\n")
                .1
                .starts_with("v2 from v2/0")
        })
        .count();
    assert_eq!(canary, 20, "the header route always wins");
    let n = 400;
    let v2 = (0..n)
        .filter(|_| get(proxy(port), "/").1.starts_with("v2 from"))
        .count();
    assert!(
        (n * 12 / 100..=n * 28 / 100).contains(&v2),
        "20 % split: {v2}/{n}"
    );

    let raw = http_raw(
        proxy(port),
        "GET /headers HTTP/1.1\r\nHost: x\r\nx-request-id: abc123\r\n",
        "",
    );
    assert!(
        raw.to_ascii_lowercase()
            .contains("x-request-id: abc123\r\n"),
        "the id comes back: {raw}"
    );
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(body.contains("x-forwarded-for: 127.0.0.1\n"), "{body}");
    assert!(
        body.contains("forwarded: for=127.0.0.1;proto=http\n"),
        "{body}"
    );
    assert!(body.contains("x-request-id: abc123\n"), "{body}");
    let (_, body) = get(proxy(port), "/headers");
    let id = body
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("an id is added");
    assert_eq!(id.len(), 32, "{id}");
}

#[test]
fn weighted_balancing_and_slow_start() {
    let port = free_port();
    let stack = Stack::start(&web(port, 2, "balance = \"weighted\"\nweights = [3, 1]\n"));
    stack.wait_ready("web", 2);
    let share0 = |n: usize| {
        (0..n)
            .filter(|_| replica_of(&get(proxy(port), "/").1) == Some(0))
            .count() as f64
            / n as f64
    };
    let s = share0(400);
    assert!(
        (0.65..=0.85).contains(&s),
        "weights 3:1 give replica 0 about 75 %: {s}"
    );

    // Slow start: a replica that just became ready gets a small share at first, then its
    // full share once the window is over.
    reload(
        &stack,
        &web(
            port,
            2,
            "balance = \"weighted\"\nweights = [1, 1]\nslow_start = \"3s\"\n",
        ),
    );
    std::thread::sleep(Duration::from_millis(3500)); // replica 0 is past its own ramp
    let before = stack.service("web")["replicas"][1]["pid"].as_u64();
    assert!(stack.cli(&["restart", "web/1"]).status.success());
    stack.wait_service("web", "replica 1 back", Duration::from_secs(30), |s| {
        let r = &s["replicas"][1];
        r["ready"] == true && r["pid"].as_u64() != before
    });
    let early = 1.0 - share0(100);
    assert!(
        early < 0.35,
        "a just-restarted replica starts small: {early}"
    );
    std::thread::sleep(Duration::from_millis(3500));
    let later = 1.0 - share0(200);
    assert!(
        (0.35..=0.65).contains(&later),
        "and ramps to its full share: {later}"
    );
}

#[test]
fn breaker_hedging_and_grpc_failures() {
    let port = free_port();
    let expose = r#"
balance = "round-robin"
[services.web.expose.retries]
on = ["per-try-timeout"]
per_try_timeout = "200ms"
[services.web.expose.outlier]
enabled = false
[services.web.expose.breaker]
consecutive_failures = 2
cooldown = "30s"
"#;
    let stack = Stack::start(&web(port, 2, expose));
    stack.wait_ready("web", 2);
    fault(replicas(&stack)[0], "/fault/hang");
    for _ in 0..12 {
        assert_eq!(get(proxy(port), "/").0, 200);
    }
    let (_, m) = get(stack.api, "/metrics");
    assert!(
        m.contains(
            "bulwark_proxy_replica_state{service=\"web\",replica=\"0\",state=\"breaker_open\"} 1"
        ),
        "{m}"
    );
    let timed_out: f64 = m
        .lines()
        .filter(|l| l.starts_with("bulwark_proxy_replica_requests_total{service=\"web\",replica=\"0\",status_class=\"none\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        timed_out, 2.0,
        "the open breaker keeps requests away from the hung replica"
    );

    // Hedging: a second try goes out after the p50 of recent latencies.
    let port2 = free_port();
    let hedge = Stack::start(&web(
        port2,
        2,
        "balance = \"round-robin\"\n[services.web.expose.hedge]\npercentile = 50\nmin_delay = \"20ms\"\n",
    ));
    hedge.wait_ready("web", 2);
    for _ in 0..30 {
        get(proxy(port2), "/");
    }
    fault(replicas(&hedge)[0], "/fault/slow?ms=1000");
    let t = Instant::now();
    for _ in 0..10 {
        assert_eq!(get(proxy(port2), "/").0, 200);
    }
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "hedged requests do not wait for the slow replica: {:?}",
        t.elapsed()
    );
    assert!(
        metric(
            &hedge,
            "bulwark_proxy_policy_events_total{service=\"web\",event=\"hedge\"}"
        ) >= 4.0
    );

    // gRPC: a non-zero grpc-status is counted as a failure.
    assert_eq!(get(proxy(port2), "/grpc?status=14").0, 200);
    assert_eq!(get(proxy(port2), "/grpc?status=0").0, 200);
    assert_eq!(
        metric(
            &hedge,
            "bulwark_proxy_policy_events_total{service=\"web\",event=\"grpc_failure\"}"
        ),
        1.0
    );
}

/// Regression (a 503 seen under `bulwark verify`'s http-abort): a hedge that fails fast
/// must not beat the slow first try, nor leave its replica free for the retry.
#[test]
fn a_hedge_that_fails_fast_does_not_beat_the_slow_first_try() {
    let port = free_port();
    // Nearly every first try goes to replica 0, so the hedge goes to replica 1.
    let stack = Stack::start(&web(
        port,
        2,
        "balance = \"weighted\"\nweights = [1000000, 1]\n[services.web.expose.hedge]\npercentile = 50\nmin_delay = \"20ms\"\n",
    ));
    stack.wait_ready("web", 2);
    for _ in 0..30 {
        assert_eq!(get(proxy(port), "/").0, 200);
    }
    let addrs = replicas(&stack);
    fault(addrs[0], "/fault/slow?ms=300");
    fault(addrs[1], "/fault/status?code=503");
    for i in 0..4 {
        let (status, body) = get(proxy(port), "/");
        assert_eq!(
            (status, replica_of(&body)),
            (200, Some(0)),
            "request {i}: the slow replica's answer, not the hedge's 503: {body}"
        );
    }
    assert!(
        metric(
            &stack,
            "bulwark_proxy_policy_events_total{service=\"web\",event=\"hedge\"}"
        ) >= 4.0
    );
    // The hedge's failures count against its replica all the same.
    assert!(
        metric(
            &stack,
            "bulwark_proxy_replica_requests_total{service=\"web\",replica=\"1\",status_class=\"5xx\"}"
        ) >= 4.0,
        "{}",
        get(stack.api, "/metrics").1
    );
}

#[test]
fn slow_headers_and_idle_connections_are_closed() {
    let port = free_port();
    let stack = Stack::start(&web(
        port,
        1,
        "[services.web.expose.timeouts]\nheader_read = \"1s\"\nidle = \"2s\"\n",
    ));
    stack.wait_ready("web", 1);
    // slowloris: half a request line, then nothing
    let mut s = TcpStream::connect(proxy(port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut buf);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after the header timeout: {waited:?}"
    );
    // an idle keep-alive connection is closed too
    let mut s = TcpStream::connect(proxy(port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let t = Instant::now();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut r, &mut rest);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "idle connection closed: {:?}",
        t.elapsed()
    );
}

#[test]
fn an_ejected_replica_can_be_restarted_by_the_supervisor() {
    let port = free_port();
    let expose = "balance = \"round-robin\"\n[services.web.expose.outlier]\nconsecutive_5xx = 3\nrestart_ejected = true\n";
    let stack = Stack::start(&web(port, 2, expose));
    stack.wait_ready("web", 2);
    let pid = stack.service("web")["replicas"][0]["pid"].as_u64();
    fault(replicas(&stack)[0], "/fault/status?code=503&ratio=1");
    for _ in 0..12 {
        get(proxy(port), "/");
    }
    let svc = stack.wait_service("web", "replica 0 restarted", Duration::from_secs(30), |s| {
        let r = &s["replicas"][0];
        r["restarts"].as_u64() >= Some(1) && r["pid"].as_u64() != pid && r["ready"] == true
    });
    assert_eq!(svc["replicas"][1]["restarts"], 0);
    // the fresh incarnation answers normally
    assert!((0..6).all(|_| get(proxy(port), "/").0 == 200));
}

#[test]
fn http2_to_the_replicas() {
    let port = free_port();
    let stack = Stack::start(&web(port, 2, "upstream = \"http2\"\n"));
    stack.wait_ready("web", 2);
    for _ in 0..5 {
        let (code, body) = get(proxy(port), "/");
        assert_eq!(code, 200);
        assert!(body.starts_with("hello from web/"), "{body}");
    }
    let out = std::process::Command::new("h2load")
        .args(["-n", "500", "-c", "5", &format!("http://127.0.0.1:{port}/")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("500 succeeded"), "{text}");
}

#[test]
fn retry_after_from_a_replica_is_honoured() {
    let port = free_port();
    let expose = "balance = \"round-robin\"\n[services.web.expose.retries]\non = [\"status\"]\nstatuses = [503]\n[services.web.expose.outlier]\nenabled = false\n";
    let stack = Stack::start(&web(port, 2, expose));
    stack.wait_ready("web", 2);
    fault(
        replicas(&stack)[0],
        "/fault/status?code=503&ratio=1&retry_after=1",
    );
    let mut waited = vec![];
    for _ in 0..4 {
        let t = Instant::now();
        let (code, body) = get(proxy(port), "/");
        assert_eq!(code, 200, "{body}");
        waited.push(t.elapsed());
    }
    // Each request that met replica 0 waited its Retry-After (1 s) before the retry.
    let retries = metric(&stack, "bulwark_proxy_retries_total") as usize;
    let slow: Vec<_> = waited
        .iter()
        .filter(|d| **d >= Duration::from_millis(900))
        .collect();
    assert!(
        retries >= 1 && slow.len() == retries,
        "{retries} retries, waits {waited:?}"
    );
    assert!(
        slow.iter().all(|d| **d < Duration::from_secs(3)),
        "{waited:?}"
    );
}
