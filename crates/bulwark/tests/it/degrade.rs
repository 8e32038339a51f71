//! Graceful degradation on the real binary: stale copies and static fallbacks while every
//! replica is held down, run-time switches that send a route to its fallback (and survive
//! a restart), and the `bulwark-switches` header replicas see.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::harness::{Demo, Stack, eventually, free_port};

/// A response: status, headers (lowercase `name: value` lines) and body.
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
    }
}

fn fetch(addr: SocketAddr, path: &str) -> Answer {
    fetch_with(addr, path, "")
}

/// [`fetch`] with `extra` header lines (each ending in CRLF).
fn fetch_with(addr: SocketAddr, path: &str, extra: &str) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = head
        .lines()
        .skip(1)
        .map(|l| match l.split_once(": ") {
            Some((n, v)) => format!("{}: {v}\n", n.to_ascii_lowercase()),
            None => String::new(),
        })
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A demo service that refuses to start while the file `hold` exists in the stack's
/// directory, so a crashed replica stays down until the test lets it up.
fn held_demo(name: &str, port: u16) -> String {
    let demo = Demo::new(name)
        .with(&format!(
            "cwd = \".\"\n[services.{name}.backoff]\ninitial = \"100ms\"\nmax = \"300ms\""
        ))
        .ready_every("100ms")
        .expose(port)
        .build();
    demo.replacen(
        r#"run = ["{bulwark}", "demo", "--port", "{port}"]"#,
        r#"run = ["sh", "-c", "test -e hold && exit 1; exec \"$0\" demo --port \"$1\"", "{bulwark}", "{port}"]"#,
        1,
    )
}

fn fallbacks(stack: &Stack, kind: &str) -> f64 {
    let (_, metrics) = stack.call("GET", "/metrics", "127.0.0.1", false);
    metrics
        .lines()
        .find(|l| {
            l.starts_with("bulwark_fallbacks_total")
                && l.contains(&format!("kind=\"{kind}\""))
                && l.contains("service=\"web\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn degrade_replicas_held_down_serve_stale_copies_then_static_and_fresh_answers_resume() {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let toml = held_demo("web", port)
        + r#"
[services.web.expose.fallback]
status = 503
body = "sorry, back soon\n"
headers = { content-type = "text/plain" }
stale = true
stale_max_entries = 3
stale_max_entry_bytes = 4096
"#;
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 1);

    // Four cacheable paths for three places: the first is evicted.
    let fresh: Vec<Answer> = (1..=4)
        .map(|i| fetch(addr, &format!("/cache/public?i={i}")))
        .collect();
    for a in &fresh {
        assert_eq!(
            (a.status, a.header("bulwark-fallback")),
            (200, None),
            "{}",
            a.body
        );
    }
    let huge = fetch(addr, "/cache/public?size=100000");
    assert_eq!(
        (huge.status, huge.body.len()),
        (200, 100_000),
        "a large answer streams whole"
    );
    let no_store = fetch(addr, "/cache/no-store");
    assert_eq!(no_store.status, 200);
    // Answers that depend on who asked, or are a part, are never kept for others.
    for (path, header) in [
        ("/cache/public?who=alice", "Authorization: Bearer alice\r\n"),
        ("/cache/public?who=bob", "Cookie: session=bob\r\n"),
        ("/cache/public?part=1", "Range: bytes=0-0\r\n"),
    ] {
        assert_eq!(
            fetch_with(addr, path, header).header("bulwark-fallback"),
            None
        );
    }

    // Held down: the replica crashes and cannot start again.
    std::fs::write(stack.dir.path().join("hold"), "").unwrap();
    let _ = fetch(addr, "/fault/crash");
    // Until the crash lands, fresh answers keep coming, and the newest is the copy.
    let mut newest = fresh[3].body.clone();
    let stale = eventually("a stale copy", Duration::from_secs(20), || {
        let a = fetch(addr, "/cache/public?i=4");
        if a.header("bulwark-fallback").is_none() {
            newest.clone_from(&a.body);
        }
        (a.header("bulwark-fallback") == Some("stale")).then_some(a)
    });
    assert_eq!((stale.status, stale.body.as_str()), (200, newest.as_str()));
    assert!(stale.header("age").is_some(), "{}", stale.headers);
    for i in [2, 3] {
        let a = fetch(addr, &format!("/cache/public?i={i}"));
        assert_eq!(a.header("bulwark-fallback"), Some("stale"), "i={i}");
        assert_eq!(a.body, fresh[i - 1].body);
    }
    // Evicted, too large, never cacheable, or never seen: the static answer.
    for path in [
        "/cache/public?i=1",
        "/cache/public?size=100000",
        "/cache/no-store",
        "/cache/public?who=alice",
        "/cache/public?who=bob",
        "/cache/public?part=1",
        "/other",
    ] {
        let a = fetch(addr, path);
        assert_eq!(
            (a.status, a.header("bulwark-fallback"), a.body.as_str()),
            (503, Some("static"), "sorry, back soon\n"),
            "{path}"
        );
        assert_eq!(a.header("content-type"), Some("text/plain"));
    }
    assert!(fallbacks(&stack, "stale") >= 3.0);
    assert!(fallbacks(&stack, "static") >= 7.0);

    // Let it up: fresh answers resume.
    std::fs::remove_file(stack.dir.path().join("hold")).unwrap();
    let back = eventually("a fresh answer", Duration::from_secs(20), || {
        let a = fetch(addr, "/cache/public?i=4");
        (a.status == 200 && a.header("bulwark-fallback").is_none()).then_some(a)
    });
    assert_ne!(back.body, newest, "a new replica answered");
    assert_eq!(fetch(addr, "/other").status, 404, "the demo's own answer");
}

fn switch(stack: &Stack, args: &[&str]) -> (bool, String) {
    let mut all = vec!["switch"];
    all.extend_from_slice(args);
    let out = stack.cli(&all);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn a_switch_sends_its_route_to_the_fallback_and_back_and_survives_a_restart() {
    let (port, beta_port) = (free_port(), free_port());
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let toml = format!(
        r#"
[switches.beta]
default = "on"
doc = "the beta backend"
[switches.dark]
default = "off"
{}
[services.web.expose.fallback]
status = 200
body = "beta is switched off\n"
[[services.web.expose.routes]]
to = "beta"
weight = 100
switch = "beta"
{}"#,
        Demo::new("web").ready_every("100ms").expose(port).build(),
        Demo::new("beta")
            .ready_every("100ms")
            .expose(beta_port)
            .build(),
    );
    let mut stack = Stack::start(&toml);
    stack.wait_ready("web", 1);
    stack.wait_ready("beta", 1);

    let on = fetch(addr, "/headers");
    assert_eq!(on.status, 200);
    assert!(
        on.body.contains("bulwark-switches: beta=on,dark=off\n"),
        "{}",
        on.body
    );
    assert_eq!(on.header("bulwark-fallback"), None);

    let (ok, out) = switch(&stack, &["set", "beta", "off"]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "switch beta: on -> off");
    let off = fetch(addr, "/headers");
    assert_eq!(
        (
            off.status,
            off.header("bulwark-fallback"),
            off.body.as_str()
        ),
        (200, Some("static"), "beta is switched off\n")
    );
    let changed = stack
        .events()
        .into_iter()
        .find(|e| e["type"] == "switch_changed")
        .expect("a switch_changed event");
    assert_eq!(
        (
            changed["name"].as_str(),
            changed["from"].as_str(),
            changed["to"].as_str()
        ),
        (Some("beta"), Some("on"), Some("off"))
    );
    assert!(
        changed["by"].as_str().unwrap().starts_with("cli"),
        "{changed}"
    );

    // Refused: a bad value, an unknown switch.
    let (ok, out) = switch(&stack, &["set", "beta", "150%"]);
    assert!(!ok && out.contains("from 0% to 100%"), "{out}");
    let (ok, out) = switch(&stack, &["set", "gamma", "on"]);
    assert!(!ok && out.contains("no switch \"gamma\""), "{out}");

    // The value set is in the journal: a restarted `up` keeps it.
    stack.restart();
    stack.wait_ready("web", 1);
    stack.wait_ready("beta", 1);
    let (ok, out) = switch(&stack, &["list", "--json"]);
    assert!(ok, "{out}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["name"], "beta");
    assert_eq!(
        (list[0]["value"].as_str(), list[0]["default"].as_str()),
        (Some("off"), Some("on"))
    );
    assert_eq!(
        fetch(addr, "/headers").header("bulwark-fallback"),
        Some("static")
    );

    let (ok, out) = switch(&stack, &["set", "beta", "on"]);
    assert!(ok, "{out}");
    let back = fetch(addr, "/headers");
    assert_eq!((back.status, back.header("bulwark-fallback")), (200, None));
    assert!(
        back.body.contains("bulwark-switches: beta=on,dark=off\n"),
        "{}",
        back.body
    );
    let (_, listed) = switch(&stack, &["list"]);
    assert!(
        listed.contains("beta") && listed.contains("the beta backend"),
        "{listed}"
    );
}

#[test]
fn degrade_a_service_fallback_answers_for_replicas_held_down_and_gives_way_when_they_return() {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let toml = held_demo("web", port)
        + "[services.web.expose.fallback]\nservice = \"spare\"\n"
        + &Demo::new("spare")
            .with("env = { GREETING = \"spare\" }")
            .ready_every("100ms")
            .build();
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 1);
    stack.wait_ready("spare", 1);
    let a = fetch(addr, "/");
    assert!(a.body.starts_with("hello from web/0"), "{}", a.body);

    std::fs::write(stack.dir.path().join("hold"), "").unwrap();
    let _ = fetch(addr, "/fault/crash");
    let a = eventually("the spare answers", Duration::from_secs(20), || {
        let a = fetch(addr, "/");
        (a.header("bulwark-fallback") == Some("service")).then_some(a)
    });
    assert_eq!(a.status, 200);
    assert!(a.body.starts_with("spare from spare/0"), "{}", a.body);
    assert!(fallbacks(&stack, "service") >= 1.0);

    std::fs::remove_file(stack.dir.path().join("hold")).unwrap();
    eventually("web answers again", Duration::from_secs(20), || {
        let a = fetch(addr, "/");
        (a.header("bulwark-fallback").is_none() && a.body.starts_with("hello from web/0"))
            .then_some(())
    });
}

#[test]
fn degrade_a_client_cannot_send_its_own_switch_states() {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let stack = Stack::start(&Demo::new("web").ready_every("100ms").expose(port).build());
    stack.wait_ready("web", 1);
    let a = fetch_with(addr, "/headers", "bulwark-switches: admin=on\r\n");
    assert_eq!(a.status, 200);
    assert!(
        !a.body.to_ascii_lowercase().contains("bulwark-switches"),
        "the client's header reached the replica: {}",
        a.body
    );
    let a = fetch_with(addr, "/headers", "x-probe: yes\r\n");
    assert!(
        a.body.to_ascii_lowercase().contains("x-probe"),
        "{}",
        a.body
    );
}
