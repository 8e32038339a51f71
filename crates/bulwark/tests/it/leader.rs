//! One leader per service with fencing tokens, on one machine (issue 16, acceptance 5):
//! `[services.NAME.leader]` with the demo's `/role` (the replica's name, the
//! `Bulwark-Fencing-Token` it received, the role and token its token file says).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// `web`: `replicas` demo replicas behind the proxy on `port`, with `[leader]` (its
/// promote and demote append `promote|demote INDEX TOKEN ROLE` to `roles.log` in the
/// stack's directory) plus `leader_extra` keys, and `extra` after it.
fn leader_stack(port: u16, replicas: u32, leader_extra: &str, extra: &str) -> String {
    let log = |what: &str| {
        format!(
            "[\"sh\", \"-c\", \"echo {what} $BULWARK_INDEX $BULWARK_FENCING_TOKEN $BULWARK_ROLE >> roles.log\"]"
        )
    };
    Demo::new("web")
        .replicas(replicas)
        .with("cwd = \".\"\nstop_grace = \"2s\"")
        .with("[services.web.backoff]\ninitial = \"100ms\"\nmax = \"1s\"")
        .ready_every("200ms")
        .expose(port)
        .with(&format!(
            "[services.web.leader]\npromote = {}\ndemote = {}\n{leader_extra}",
            log("promote"),
            log("demote")
        ))
        .with(extra)
        .build()
}

/// Starts `toml`, whose service `service` is exposed on `port`, and waits for its
/// `replicas` to be ready; returns the stack and the proxy's address.
fn started(toml: &str, port: u16, service: &str, replicas: usize) -> (Stack, SocketAddr) {
    let stack = Stack::start(toml);
    stack.wait_ready(service, replicas);
    (stack, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// What `/role` answered: `replica`, `header`, `role`, `token`.
fn parse_role(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `METHOD /role` through `addr`; `None` when the connection failed.
fn role(addr: SocketAddr, method: &str) -> Option<(u16, BTreeMap<String, String>)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "{method} /role HTTP/1.1\r\nHost: web\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let (code, body) = parse_response(&raw);
    Some((code?, parse_role(&body)))
}

/// The leader per `status`: (index, pid, token), once exactly one replica is leader and
/// `pred` holds for it.
fn wait_leader(stack: &Stack, what: &str, pred: impl Fn(u32, u64) -> bool) -> (u32, u32, u64) {
    eventually(what, Duration::from_secs(30), || {
        let s = stack.service("web");
        let leaders: Vec<&Value> = replicas_in(&s)
            .iter()
            .filter(|r| r["role"] == "leader")
            .collect();
        let standbys = replicas_in(&s)
            .iter()
            .filter(|r| r["role"] == "standby" && r["token"].is_null())
            .count();
        assert!(leaders.len() <= 1, "two leaders: {s}");
        let l = leaders.first()?;
        let (index, token) = (l["index"].as_u64()? as u32, l["token"].as_u64()?);
        let pid = l["pid"].as_u64()? as u32;
        (standbys + 1 == replicas_in(&s).len() && pred(index, token)).then_some((index, pid, token))
    })
}

fn roles_log(stack: &Stack) -> String {
    std::fs::read_to_string(stack.dir.path().join("roles.log")).unwrap_or_default()
}

fn events_of(stack: &Stack, kind: &str) -> Vec<Value> {
    stack
        .events()
        .into_iter()
        .filter(|e| e["type"] == kind)
        .collect()
}

/// One answer of the request loop: when it was sent and answered, and what it said.
struct Served {
    sent: Instant,
    done: Instant,
    code: Option<u16>,
    replica: String,
    header: String,
}

/// `threads` clients sending `GET /role` back to back until `stop`.
fn request_loop(
    addr: SocketAddr,
    threads: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<Served>>> {
    (0..threads)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let answer = role(addr, "GET");
                    let done = Instant::now();
                    let (code, body) =
                        answer.map_or((None, BTreeMap::new()), |(c, b)| (Some(c), b));
                    seen.push(Served {
                        sent,
                        done,
                        code,
                        replica: body.get("replica").cloned().unwrap_or_default(),
                        header: body.get("header").cloned().unwrap_or_default(),
                    });
                }
                seen
            })
        })
        .collect()
}

/// Acceptance 2's shape on one machine: every answer a leader gave carries a token; per
/// token one replica; the spans in which tokens served do not overlap, and tokens grow
/// with time.
fn assert_no_overlap(served: &[Served]) {
    let mut spans: BTreeMap<u64, (String, Instant, Instant)> = BTreeMap::new();
    for s in served.iter().filter(|s| s.code == Some(200)) {
        let token: u64 = s.header.parse().unwrap_or_else(|_| {
            panic!(
                "{} answered leader traffic without a token: {:?}",
                s.replica, s.header
            )
        });
        let span = spans
            .entry(token)
            .or_insert_with(|| (s.replica.clone(), s.done, s.sent));
        assert_eq!(span.0, s.replica, "token {token} served by two replicas");
        // The earliest answer and the latest sending: the span in which it surely led.
        span.1 = span.1.min(s.done);
        span.2 = span.2.max(s.sent);
    }
    let spans: Vec<_> = spans.into_iter().collect();
    for w in spans.windows(2) {
        let ((t1, (_, _, last1)), (t2, (_, first2, _))) = (&w[0], &w[1]);
        assert!(
            last1 <= first2,
            "token {t1} was still sent requests after token {t2} answered one"
        );
    }
}

#[test]
fn one_leader_takes_all_traffic_with_its_token_and_a_standby_takes_over_on_kill() {
    let port = free_port();
    let (stack, addr) = started(&leader_stack(port, 3, "", ""), port, "web", 3);
    let (first, pid, t1) = wait_leader(&stack, "a leader", |_, _| true);
    for _ in 0..12 {
        let (code, r) = role(addr, "GET").expect("the proxy answers");
        assert_eq!(code, 200);
        assert_eq!(
            r["replica"],
            format!("web/{first}"),
            "leader traffic reaches the leader"
        );
        assert_eq!(r["header"], t1.to_string(), "with its token");
        assert_eq!(
            (r["role"].as_str(), r["token"].clone()),
            ("leader", t1.to_string())
        );
    }
    let table = output_text(&stack.cli(&["status"]));
    assert!(
        table.contains(&format!("role: leader, fencing token {t1}")),
        "{table}"
    );
    assert!(table.contains("role: standby"), "{table}");
    assert!(roles_log(&stack).contains(&format!("promote {first} {t1} leader")));

    // kill -9 of the leader under four clients.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = request_loop(addr, 4, &stop);
    std::thread::sleep(Duration::from_millis(300));
    signal(pid, libc::SIGKILL);
    let (second, _, t2) = wait_leader(&stack, "a new leader", |i, t| i != first && t > t1);
    assert_eq!(t2, t1 + 1, "the next token");
    // The old replica is back, as a standby without a token.
    stack.wait_service("web", "the old leader back", Duration::from_secs(30), |s| {
        let r = &replicas_in(s)[first as usize];
        r["ready"] == true && r["role"] == "standby" && r["token"].is_null()
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let served: Vec<Served> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let failed = served.iter().filter(|s| s.code != Some(200)).count();
    assert!(
        failed <= 4,
        "{failed} failed requests; at most the 4 in flight at the kill"
    );
    assert!(
        served.iter().any(|s| s.header == t2.to_string()),
        "the new leader served"
    );
    assert_no_overlap(&served);

    // Failover within 2 s of the exit being seen; the demote ran before the promote.
    let exited = events_of(&stack, "replica_exited")
        .into_iter()
        .find(|e| e["pid"] == pid)
        .expect("the leader's exit");
    let elected = events_of(&stack, "leader_elected")
        .into_iter()
        .find(|e| e["token"] == t2)
        .expect("the new leader's election");
    let took = elected["at_ms"].as_u64().unwrap() - exited["at_ms"].as_u64().unwrap();
    assert!(took < 2_000, "failover took {took} ms after the exit");
    eprintln!(
        "failover: {took} ms from the exit to the new leader; {} requests, {failed} failed",
        served.len()
    );
    assert_eq!(elected["reason"], "exited");
    let lost = events_of(&stack, "leader_lost");
    assert!(
        lost.iter().any(|e| e["token"] == t1 && e["index"] == first),
        "{lost:?}"
    );
    let log = roles_log(&stack);
    let demoted = log
        .find(&format!("demote {first} {t1} standby"))
        .unwrap_or_else(|| panic!("no demote of the old leader:\n{log}"));
    let promoted = log
        .find(&format!("promote {second} {t2} leader"))
        .unwrap_or_else(|| panic!("no promote of the new leader:\n{log}"));
    assert!(demoted < promoted, "the demote runs first:\n{log}");

    // More failovers: tokens only grow.
    let mut tokens = vec![t1, t2];
    for _ in 0..2 {
        let (_, pid, before) = wait_leader(&stack, "a leader", |_, _| true);
        signal(pid, libc::SIGKILL);
        let (_, _, next) = wait_leader(&stack, "the next leader", |_, t| t > before);
        tokens.push(next);
    }
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    let metrics = stack.call("GET", "/metrics", "127.0.0.1", true).1;
    assert!(
        metrics.contains("bulwark_leader_changes_total{service=\"web\"} 4"),
        "{metrics}"
    );
    let last = tokens.last().unwrap();
    assert!(
        metrics.contains(&format!("bulwark_leader_token{{service=\"web\"}} {last}")),
        "{metrics}"
    );
}

#[test]
fn writes_go_to_the_leader_and_reads_to_every_ready_replica() {
    let port = free_port();
    let (stack, addr) = started(
        &leader_stack(port, 3, "route = \"writes\"", ""),
        port,
        "web",
        3,
    );
    let (leader, _, token) = wait_leader(&stack, "a leader", |_, _| true);
    for method in ["POST", "PUT", "DELETE"] {
        for _ in 0..5 {
            let (code, r) = role(addr, method).expect("answer");
            assert_eq!(code, 200);
            assert_eq!(
                r["replica"],
                format!("web/{leader}"),
                "{method} goes to the leader"
            );
            assert_eq!(r["header"], token.to_string());
        }
    }
    let mut readers = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let (code, r) = role(addr, "GET").expect("answer");
        assert_eq!(code, 200);
        // Only a request to the leader carries the token, never one to a standby.
        let expected = if r["replica"] == format!("web/{leader}") {
            token.to_string()
        } else {
            "-".to_owned()
        };
        assert_eq!(r["header"], expected, "{r:?}");
        readers.insert(r["replica"].clone());
    }
    assert!(
        readers.len() >= 2,
        "reads spread over the replicas: {readers:?}"
    );
    // A client cannot forge the token: its own header never reaches a replica.
    for method in ["GET", "POST"] {
        for _ in 0..5 {
            let head =
                format!("{method} /role HTTP/1.1\r\nHost: web\r\nBulwark-Fencing-Token: 999\r\n");
            let (code, body) = http(addr, &head);
            assert_eq!(code, 200);
            let header = parse_role(&body)["header"].clone();
            assert!(header == token.to_string() || header == "-", "{body}");
        }
    }
}

#[test]
fn a_hung_leader_is_replaced_and_a_restarted_bulwark_never_reuses_a_token() {
    let port = free_port();
    let (mut stack, addr) = started(
        &leader_stack(port, 2, "failover_after = \"1s\"", ""),
        port,
        "web",
        2,
    );
    let (hung, pid, t1) = wait_leader(&stack, "a leader", |_, _| true);
    let hung_port = replicas_in(&stack.service("web"))[hung as usize]["port"]
        .as_u64()
        .unwrap();
    signal(pid, libc::SIGSTOP);
    let (next, _, t2) = wait_leader(&stack, "the standby promoted", |i, t| i != hung && t > t1);
    let lost = events_of(&stack, "leader_lost");
    assert!(
        lost.iter()
            .any(|e| e["token"] == t1 && e["reason"] == "unready"),
        "{lost:?}"
    );
    let (code, r) = role(addr, "POST").expect("answer");
    assert_eq!((code, r["replica"].clone()), (200, format!("web/{next}")));
    assert_eq!(r["header"], t2.to_string());
    assert!(roles_log(&stack).contains(&format!("demote {hung} {t1} standby")));

    // SIGCONT: the old leader runs on, as a standby that knows it is one.
    signal(pid, libc::SIGCONT);
    stack.wait_service(
        "web",
        "the old leader ready again",
        Duration::from_secs(30),
        |s| {
            let r = &replicas_in(s)[hung as usize];
            r["ready"] == true && r["pid"] == pid && r["role"] == "standby"
        },
    );
    let direct: SocketAddr = format!("127.0.0.1:{hung_port}").parse().unwrap();
    let (_, r) = role(direct, "GET").expect("the old leader answers");
    assert_eq!((r["role"].as_str(), r["token"].as_str()), ("standby", "-"));
    for _ in 0..10 {
        let (_, r) = role(addr, "POST").expect("answer");
        assert_eq!(
            r["replica"],
            format!("web/{next}"),
            "leader traffic stays with the new one"
        );
    }

    // A new bulwark over the same journal: the next token is greater than any before.
    stack.terminate(Duration::from_secs(20));
    stack.restart();
    stack.wait_ready("web", 2);
    let (_, _, t3) = wait_leader(&stack, "a leader after the restart", |_, _| true);
    assert!(t3 > t2, "token {t3} after a restart, {t2} before");
    let (_, r) = role(addr, "GET").expect("answer");
    assert_eq!(r["header"], t3.to_string());
}

#[test]
fn a_failing_promote_leaves_the_replica_a_standby_and_leader_traffic_waits() {
    // Replica 0's promotion always fails; replica 1's passes.
    let port = free_port();
    let toml = leader_stack(port, 2, "", "").replace(
        "promote = [\"sh\", \"-c\", \"echo",
        "promote = [\"sh\", \"-c\", \"test $BULWARK_INDEX = 1 || { echo no >&2; exit 3; }; echo",
    ) + "[services.web.expose.timeouts]\nrequest = \"2s\"\n";
    let (stack, addr) = started(&toml, port, "web", 2);
    let (leader, pid, t1) = wait_leader(&stack, "replica 1 leads", |i, _| i == 1);
    assert_eq!(leader, 1);
    // Replica 0 was tried first, or is now that replica 1 is gone: its promotion fails
    // and leader traffic waits for a leader until its deadline.
    signal(pid, libc::SIGKILL);
    let failed = eventually(
        "replica 0's promotion fails",
        Duration::from_secs(30),
        || {
            events_of(&stack, "promote_failed")
                .into_iter()
                .find(|e| e["index"] == 0)
        },
    );
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("exit status: 3: no"),
        "{failed}"
    );
    let s = stack.service("web");
    assert_eq!(replicas_in(&s)[0]["role"], "standby", "{s}");
    assert!(replicas_in(&s)[0]["token"].is_null());
    // Replica 1 comes back and is promoted; the request that waited for it is answered.
    let (code, r) = role(addr, "GET").expect("answer");
    if code == 200 {
        assert_eq!(r["replica"], "web/1");
    } else {
        assert_eq!(code, 503, "{r:?}");
    }
    let (_, _, t2) = wait_leader(&stack, "replica 1 leads again", |i, t| i == 1 && t > t1);
    assert!(
        t2 > failed["token"].as_u64().unwrap(),
        "a refused token is never reused"
    );
    let (code, r) = role(addr, "GET").expect("answer");
    assert_eq!((code, r["header"].clone()), (200, t2.to_string()));
    let elected = events_of(&stack, "leader_elected");
    assert!(
        elected.iter().all(|e| e["index"] == 1),
        "only replica 1 ever led: {elected:?}"
    );
}

#[test]
fn check_refuses_leader_routing_without_a_proxy() {
    let (code, text) = crate::check::check_output(
        "[services.db]\nrun = [\"db\"]\nreplicas = 2\n[services.db.leader]\nroute = \"leader\"\n",
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("stack.toml:5:"), "{text}");
    assert!(
        text.contains("route = \"leader\" needs the proxy"),
        "{text}"
    );
    // One replica: allowed, with a warning that nothing can take over.
    let (code, text) =
        crate::check::check_output("[services.db]\nrun = [\"db\"]\n[services.db.leader]\n");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("no standby to take over"), "{text}");
}

/// The name in a TCP demo's banner, through `addr`.
fn banner(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("the proxy accepts");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while s.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

#[test]
fn a_tcp_service_sends_every_connection_to_the_leader() {
    let port = free_port();
    let toml = Demo::with_args("db", &["--tcp"])
        .replicas(3)
        .expose(port)
        .with("protocol = \"tcp\"\n[services.db.leader]\n")
        .build();
    let (stack, addr) = started(&toml, port, "db", 3);
    let leader = eventually("a leader", Duration::from_secs(30), || {
        replicas_in(&stack.service("db"))
            .iter()
            .find(|r| r["role"] == "leader")
            .map(|r| {
                (
                    r["index"].as_u64().unwrap(),
                    r["pid"].as_u64().unwrap() as u32,
                )
            })
    });
    for _ in 0..15 {
        assert_eq!(
            banner(addr),
            format!("db/{}", leader.0),
            "every connection to the leader"
        );
    }
    signal(leader.1, libc::SIGKILL);
    let next = eventually("the next leader", Duration::from_secs(30), || {
        replicas_in(&stack.service("db"))
            .iter()
            .find(|r| r["role"] == "leader" && r["index"] != leader.0)
            .map(|r| r["index"].as_u64().unwrap())
    });
    for _ in 0..15 {
        assert_eq!(banner(addr), format!("db/{next}"));
    }
    // `writes` needs HTTP methods: refused for TCP.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stack.toml");
    std::fs::write(
        &file,
        toml.replace(
            "[services.db.leader]\n",
            "[services.db.leader]\nroute = \"writes\"\n",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(BULWARK)
        .args(["check", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(
        !out.status.success() && text.contains("route = \"leader\""),
        "{text}"
    );
}
