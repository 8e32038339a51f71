//! Issue 2, acceptance 1: a crashed replica costs clients nothing.

use std::time::{Duration, Instant};

use crate::harness::*;

pub fn demo_stack(port: u16, replicas: u32) -> String {
    Demo::new("web")
        .replicas(replicas)
        .quickstart_probes()
        .expose(port)
        .build()
}

#[test]
fn kill_nine_under_load_loses_no_request() {
    let port = free_port();
    let stack = Stack::start(&demo_stack(port, 3));
    stack.wait_ready("web", 3);
    let load = Load::start(&format!("http://127.0.0.1:{port}/"), 200, "13s");
    std::thread::sleep(Duration::from_millis(1500));
    let mut killed = vec![];
    for round in 0..5u32 {
        let svc = stack.service("web");
        let victim = &svc["replicas"][(round % 3) as usize];
        if let Some(pid) = victim["pid"].as_u64() {
            signal(pid as u32, libc::SIGKILL);
            killed.push((round % 3, pid as u32, Instant::now()));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let report = load.finish();
    assert_eq!(killed.len(), 5, "every round found a replica to kill");
    assert_eq!(
        report["failed"]["total"], 0,
        "no request may fail: {report}"
    );
    let sent = report["sent"].as_u64().unwrap();
    assert!(sent >= 2400, "the load ran on schedule: {report}");
    // every replacement became ready, with a new process
    let svc = stack.wait_ready("web", 3);
    let pids = replica_pids(&svc);
    for (_, pid, _) in &killed {
        assert!(!pids.contains(pid), "killed pid {pid} is not serving");
    }
    let restarts: u64 = svc["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["restarts"].as_u64().unwrap())
        .sum();
    assert_eq!(restarts, 5, "one restart per kill: {svc}");
}

#[test]
fn no_ready_replica_answers_503_at_once() {
    let port = free_port();
    let stack = Stack::start(&demo_stack(port, 1));
    stack.wait_ready("web", 1);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let (code, body) = get(addr, "/");
    assert_eq!(code, 200);
    assert!(body.starts_with("hello from web/0"), "{body}");
    // Taking the only replica out of the balancer (readiness fails) must give fast 503s.
    let replica_port = stack.service("web")["replicas"][0]["port"]
        .as_u64()
        .unwrap() as u16;
    let replica = format!("127.0.0.1:{replica_port}").parse().unwrap();
    assert_eq!(get(replica, "/fault/unready").0, 200);
    stack.wait_ready("web", 0);
    let began = Instant::now();
    let (code, body) = get(addr, "/");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no ready replica"), "{body}");
    assert!(began.elapsed() < Duration::from_secs(1), "answered at once");
    assert_eq!(get(replica, "/fault/reset").0, 200);
    stack.wait_ready("web", 1);
    assert_eq!(get(addr, "/").0, 200);
}

/// Tries per replica index so far, from `bulwark_proxy_replica_requests_total`.
fn tries_per_replica(stack: &Stack, n: usize) -> Vec<f64> {
    let (code, m) = get(stack.api, "/metrics");
    assert_eq!(code, 200);
    (0..n)
        .map(|i| {
            let prefix =
                format!("bulwark_proxy_replica_requests_total{{service=\"web\",replica=\"{i}\",");
            m.lines()
                .filter(|l| l.starts_with(&prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        })
        .collect()
}

/// Each replica's share of the tries between two [`tries_per_replica`] readings.
fn shares(before: &[f64], after: &[f64]) -> Vec<f64> {
    let delta: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let total: f64 = delta.iter().sum();
    assert!(total > 0.0, "no traffic between the readings");
    delta.iter().map(|d| d / total).collect()
}

/// Issue 10, item 5: the default balancer (P2C over peak EWMA) spreads load evenly over
/// equal replicas, and a replacement started after a kill -9 gets its share soon after it
/// becomes ready instead of staying cold.
#[test]
fn p2c_balances_equal_replicas_and_warms_a_replacement_issue_10() {
    let port = free_port();
    let stack = Stack::start(&demo_stack(port, 3));
    stack.wait_ready("web", 3);
    let url = format!("http://127.0.0.1:{port}/");

    let before = tries_per_replica(&stack, 3);
    let report = Load::start(&url, 1000, "5s").finish();
    let even = shares(&before, &tries_per_replica(&stack, 3));
    eprintln!("shares at 1000 req/s: {even:?}; load: {report}");
    for s in &even {
        assert!((0.23..=0.43).contains(s), "uneven: {even:?}");
    }

    let load = Load::start(&url, 200, "7s");
    std::thread::sleep(Duration::from_secs(1));
    let victim = stack.service("web")["replicas"][1]["pid"].as_u64().unwrap();
    signal(victim as u32, libc::SIGKILL);
    stack.wait_service("web", "replica 1 replaced", Duration::from_secs(10), |s| {
        let r = &s["replicas"][1];
        r["ready"] == true && r["pid"].as_u64().is_some_and(|p| p != victim)
    });
    let at_ready = tries_per_replica(&stack, 3);
    std::thread::sleep(Duration::from_secs(2));
    let warm = shares(&at_ready, &tries_per_replica(&stack, 3));
    eprintln!("shares in the 2 s after the replacement became ready: {warm:?}");
    // The replacement (index 1) gets its share, and no replica is left starving (on the
    // strict comparison one of the three often got 0–10 % here).
    for s in &warm {
        assert!(*s >= 0.20, "a replica stays cold: {warm:?}");
    }
    let report = load.finish();
    assert_eq!(report["failed"]["total"], 0, "{report}");
}

/// Python's `http.server` serves one connection at a time: it waits for the request of
/// the connection it accepted before it accepts the next one. It answers "ok" to any GET.
pub const ONE_AT_A_TIME: &str = r#"
import http.server, os
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Ok).serve_forever()
"#;

/// Regression: the proxy opened an idle connection to a replica as it became ready; a
/// replica serving one connection at a time waited on it, its readiness probe timed out a
/// second later, and it answered nothing (503, or 504 for a request already sent).
#[test]
fn a_replica_serving_one_connection_at_a_time_stays_ready_and_answers() {
    let port = free_port();
    let run = format!(r#"["python3", "-c", {ONE_AT_A_TIME:?}]"#);
    let mut stack = Stack::start(&format!(
        r#"
[services.single]
run = {run}
[services.single.readiness]
http = "/healthz"
period = "50ms"
timeout = "500ms"
failure_threshold = 1
[services.single.expose]
listen = "127.0.0.1:{port}"
"#
    ));
    stack.wait_ready("single", 1);
    for i in 0..4 {
        // Spaced out, so that a connection held idle has time to stall a probe.
        std::thread::sleep(Duration::from_millis(700));
        let (status, body) = get(format!("127.0.0.1:{port}").parse().unwrap(), "/");
        assert_eq!((status, body.as_str()), (200, "ok"), "request {i}");
    }
    let unready: Vec<_> = stack
        .events()
        .into_iter()
        .filter(|e| {
            e["type"] == "replica_unready"
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("timed out"))
        })
        .collect();
    assert!(
        unready.is_empty(),
        "the replica's probe timed out: {unready:?}"
    );
    stack.terminate(Duration::from_secs(10));
}
