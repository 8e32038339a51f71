//! Hardening of the API, the state directory and the journal (items 7, 8, 9, 10, 12).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

fn stack() -> Stack {
    let s = Stack::start(&crate::proxy::demo_stack(free_port(), 1));
    s.wait_ready("web", 1);
    s
}

/// A raw request with a body; returns the status and body (or 0 when the connection closed
/// without an answer).
fn send(stack: &Stack, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(stack.api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        stack.token,
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let (code, body) = parse_response(&raw);
    (code.unwrap_or(0), body)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn silence_body(ends_at_ms: u64) -> Vec<u8> {
    format!(r#"{{"service":"web","ends_at_ms":{ends_at_ms},"comment":"test"}}"#).into_bytes()
}

/// Whether the server closed the connection (EOF or reset) within `within`, without
/// answering anything.
fn closed_silently(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

#[test]
fn api_needs_the_token_for_everything_but_metrics() {
    let stack = stack();
    for path in [
        "/v1/events",
        "/v1/events?follow=true",
        "/v1/status",
        "/v1/logs/web",
        "/v1/alerts",
        "/v1/silences",
    ] {
        let (code, body) = stack.call("GET", path, "127.0.0.1", false);
        assert_eq!(code, 401, "{path}: {body}");
        assert!(body.contains("Bearer"), "{body}");
    }
    let (code, body) = stack.call("GET", "/metrics", "127.0.0.1", false);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("bulwark_journal_write_errors_total"),
        "{body}"
    );
    assert_eq!(stack.call("GET", "/v1/events", "127.0.0.1", true).0, 200);
    // A bracketed IPv6 literal ends at `]`, then nothing or a port.
    for host in ["[::1]evil.com", "[::1].evil.com:80", "[::1]:80x", "::1"] {
        let (code, body) = stack.call("GET", "/v1/status", host, true);
        assert!(code == 403 || code == 400, "{host}: {code} {body}");
    }
    assert_eq!(stack.call("GET", "/v1/status", "[::1]:1", true).0, 200);
    // The CLI sends the token on reads too.
    let out = stack.cli(&["events"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = stack.cli(&["logs", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn api_connections_are_bounded_in_time_number_and_protocol() {
    let stack = stack();
    // A connection that sends nothing is closed (header-read timeout, 10 s).
    let started = Instant::now();
    let mut idle = TcpStream::connect(stack.api).unwrap();
    assert!(
        closed_silently(&mut idle, Duration::from_secs(30)),
        "a silent connection stayed open"
    );
    assert!(started.elapsed() < Duration::from_secs(25));

    // h2c with prior knowledge is not served as HTTP/2.
    let mut h2 = TcpStream::connect(stack.api).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    // An empty SETTINGS frame.
    h2.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    h2.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut got = Vec::new();
    let _ = h2.read_to_end(&mut got);
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 "),
        "the API answered an h2c preface with {:?}",
        &got[..got.len().min(32)]
    );

    // Over the connection cap (256): a new connection is closed at once.
    let held: Vec<TcpStream> = (0..256)
        .map(|_| TcpStream::connect(stack.api).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut over = TcpStream::connect(stack.api).unwrap();
    let _ = over.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert!(
        closed_silently(&mut over, Duration::from_secs(5)),
        "the 257th connection was served"
    );
    drop(held);
    eventually("the API to serve again", Duration::from_secs(15), || {
        (send(&stack, "GET", "/metrics", b"").0 == 200).then_some(())
    });
}

#[test]
fn api_bodies_and_parameters_are_bounded_and_validated() {
    let stack = stack();
    // Too large: 413, whether declared or not.
    let big = vec![b' '; 100 * 1024];
    let (code, body) = send(&stack, "POST", "/v1/silences", &big);
    assert_eq!(code, 413, "{body}");
    // Malformed, wrong types, absurd values, unknown fields: 400 naming the field.
    let cases: [(&[u8], &str); 8] = [
        (b"{not json", "JSON"),
        (b"[1,2]", "object"),
        (br#"{"service":"web"}"#, "ends_at_ms"),
        (br#"{"service":"web","ends_at_ms":"soon"}"#, "ends_at_ms"),
        (br#"{"service":"web","ends_at_ms":-1}"#, "ends_at_ms"),
        (
            br#"{"service":"web","ends_at_ms":18446744073709551615}"#,
            "ends_at_ms",
        ),
        (
            br#"{"service":"web","ends_at_ms":99999999999999999999999}"#,
            "ends_at_ms",
        ),
        (br#"{"service":"web","ends_at_ms":1,"bogus":1}"#, "bogus"),
    ];
    for (body, field) in cases {
        let (code, text) = send(&stack, "POST", "/v1/silences", body);
        assert_eq!(code, 400, "{}: {text}", String::from_utf8_lossy(body));
        assert!(
            text.contains(field),
            "{}: {text}",
            String::from_utf8_lossy(body)
        );
    }
    let far = format!(
        r#"{{"service":"web","starts_at_ms":{},"ends_at_ms":18446744073709551615}}"#,
        u64::MAX - 5
    );
    let (code, text) = send(&stack, "POST", "/v1/silences", far.as_bytes());
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("starts_at_ms"), "{text}");
    let long = format!(
        r#"{{"service":"web","ends_at_ms":{},"comment":"{}"}}"#,
        now_ms() + 60_000,
        "x".repeat(5000)
    );
    let (code, text) = send(&stack, "POST", "/v1/silences", long.as_bytes());
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("comment"), "{text}");
    // Query parameters: 400 naming them.
    for (path, field) in [
        ("/v1/services/web/scale?replicas=99999999999", "replicas"),
        ("/v1/services/web/scale?replicas=5000", "replicas"),
        ("/v1/services/web/restart?replica=-1", "replica"),
    ] {
        let (code, text) = send(&stack, "POST", path, b"");
        assert_eq!(code, 400, "{path}: {text}");
        assert!(text.contains(field), "{path}: {text}");
    }
    let (code, text) = stack.call("GET", "/v1/events?since=-1", "127.0.0.1", true);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("since"), "{text}");
    // The CLI: an absurd duration is an error naming the flag, never a panic.
    for args in [
        &["silence", "add", "web", "--for", "99999999999h"][..],
        &[
            "silence",
            "add",
            "web",
            "--for",
            "1h",
            "--start-in",
            "99999999999h",
        ][..],
    ] {
        let out = stack.cli(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            err.contains("--for") || err.contains("--start-in"),
            "{args:?}: {err}"
        );
    }
    // Everything is still up, and a sane silence works.
    let out = stack.cli(&["silence", "add", "web", "--for", "1h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(crate::harness::alive(stack.pid()));
}

/// The `data:` events of an SSE stream read so far.
fn sse_events(raw: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(raw)
        .split("data: ")
        .skip(1)
        .filter_map(|d| serde_json::from_str(d.split('\n').next()?).ok())
        .collect()
}

#[test]
fn a_reader_can_ask_for_only_the_newest_events() {
    let stack = stack();
    toggle_faults(&stack, 6);
    let events = |path: &str| -> Vec<Value> {
        let (code, text) = stack.call("GET", path, "127.0.0.1", true);
        assert_eq!(code, 200, "{path}: {text}");
        serde_json::from_str(&text).unwrap()
    };
    let all = events("/v1/events?sync=true");
    assert!(all.len() > 6, "{all:?}");
    assert_eq!(events("/v1/events?tail=3"), all[all.len() - 3..]);
    assert_eq!(events("/v1/events?tail=0"), Vec::<Value>::new());
    assert_eq!(events("/v1/events?tail=100000"), all);
    let (code, text) = stack.call("GET", "/v1/events?tail=-1", "127.0.0.1", true);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("tail"), "{text}");
    // Following with a tail: the three newest, then what happens next, nothing older.
    let mut s = TcpStream::connect(stack.api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "GET /v1/events?follow=true&tail=3 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\r\n",
        stack.token
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while sse_events(&raw).len() < 3 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
    toggle_faults(&stack, 1);
    while sse_events(&raw).len() < 4 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
    let seqs: Vec<u64> = sse_events(&raw)
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let newest = all.last().unwrap()["seq"].as_u64().unwrap();
    assert_eq!(seqs, [newest - 2, newest - 1, newest, newest + 1]);
}

#[test]
fn a_second_up_on_the_same_state_dir_fails_and_leaves_the_first_alone() {
    let stack = stack();
    let token = std::fs::read_to_string(stack.state_dir().join("token")).unwrap();
    let addr = std::fs::read_to_string(stack.state_dir().join("api.addr")).unwrap();
    let mut second = Command::new(BULWARK)
        .args(["up", "-f"])
        .arg(stack.dir.path().join("stack.toml"))
        .env("BULWARK_STATE_DIR", stack.state_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(second.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = second.wait();
            panic!("a second `up` on a state directory in use kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(err.contains("in use by another `bulwark up`"), "{err}");
    assert!(
        err.contains(&stack.pid().to_string()),
        "names the running one: {err}"
    );
    // The running instance keeps its token and address; its CLI still works.
    assert_eq!(
        std::fs::read_to_string(stack.state_dir().join("token")).unwrap(),
        token
    );
    assert_eq!(
        std::fs::read_to_string(stack.state_dir().join("api.addr")).unwrap(),
        addr
    );
    let out = stack.cli(&["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stack.call("GET", "/v1/status", "127.0.0.1", true).0, 200);
}

use std::os::unix::process::CommandExt;

/// A tmpfs mounted for the test; lazily unmounted on drop (bulwark may still hold files).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs on {} (this test needs root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with `dir/filler` until it is full.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

/// Sends `n` requests on one keep-alive connection.
fn toggle_faults(stack: &Stack, n: usize) {
    let mut s = TcpStream::connect(stack.api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = Vec::new();
    for i in 0..n {
        let state = if i % 2 == 0 { "off" } else { "on" };
        let req = format!(
            "POST /v1/faults/{state} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\n\r\n",
            stack.token
        );
        s.write_all(req.as_bytes()).unwrap();
        // Read one response: headers, then Content-Length bytes.
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= end + 4 + len {
                    assert!(head.starts_with("http/1.1 200"), "{head}");
                    buf.drain(..end + 4 + len);
                    break;
                }
            }
            let mut chunk = [0u8; 4096];
            let got = s.read(&mut chunk).unwrap();
            assert!(got > 0, "the API closed the connection");
            buf.extend_from_slice(&chunk[..got]);
        }
    }
}

fn metric(stack: &Stack, name: &str) -> f64 {
    let (_, text) = stack.call("GET", "/metrics", "127.0.0.1", false);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_full_disk_is_reported_refused_bounded_and_recovered() {
    let mut stack = Stack::prepare(&crate::proxy::demo_stack(free_port(), 1));
    let _tmpfs = Tmpfs::mount(&stack.state_dir(), "4m");
    stack.launch();
    stack.wait_ready("web", 1);
    let state = stack.state_dir();

    let filler = fill(&state);
    // A silence that cannot be stored is refused with 503, not acknowledged. (The
    // journal's file may still have free pages for a small record: one that fits is
    // stored and rightly acknowledged, so silences go on until one cannot be.) This comes
    // first, while the audit queue is short: the floods below fill it and what does not
    // fit is dropped, so a refusal asked for after them might rightly not be audited.
    let body = eventually("a silence refused", Duration::from_secs(30), || {
        let (code, body) = send(
            &stack,
            "POST",
            "/v1/silences",
            &silence_body(now_ms() + 3_600_000),
        );
        assert!(code == 201 || code == 503, "{code} {body}");
        (code == 503).then_some(body)
    });
    assert!(body.contains("journal"), "{body}");
    // Events keep coming; the journal cannot write them.
    eventually("journal write errors", Duration::from_secs(60), || {
        toggle_faults(&stack, 50);
        (metric(&stack, "bulwark_journal_write_errors_total") > 0.0).then_some(())
    });
    assert!(
        !stack.status()["journal"]["state"].is_null(),
        "{}",
        stack.status()
    );
    // `status` says the journal is failing, in JSON and for people.
    let out = stack.cli(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["journal"]["state"], "failing", "{v}");
    assert!(v["journal"]["last_error"].as_str().is_some(), "{v}");
    let out = stack.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("journal: FAILING since"), "{text}");
    // Events do not freeze: recent ones are served from memory, marked.
    let started = Instant::now();
    let (code, events) = stack.call("GET", "/v1/events?sync=true", "127.0.0.1", true);
    assert_eq!(code, 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    let events: Vec<Value> = serde_json::from_str(&events).unwrap();
    let newest = events.last().unwrap()["seq"].as_u64().unwrap();
    toggle_faults(&stack, 2);
    let events: Vec<Value> = serde_json::from_str(
        &stack
            .call(
                "GET",
                &format!("/v1/events?since={newest}"),
                "127.0.0.1",
                true,
            )
            .1,
    )
    .unwrap();
    assert_eq!(
        events.len(),
        2,
        "new events are shown while the journal fails"
    );

    // Memory stays bounded while events keep coming (30k > the 10k the journal holds back).
    let before = rss_kib(stack.pid());
    toggle_faults(&stack, 30_000);
    let after = rss_kib(stack.pid());
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert!(metric(&stack, "bulwark_journal_lost_events_total") > 0.0);
    // 30k audit records cannot all wait for the disk: the overflow is counted.
    assert!(metric(&stack, "bulwark_audit_dropped_records_total") > 0.0);

    // Space returns: bulwark recovers by itself.
    std::fs::remove_file(&filler).unwrap();
    eventually("the journal to recover", Duration::from_secs(60), || {
        (stack.status()["journal"]["state"] == "ok").then_some(())
    });
    let (code, body) = send(
        &stack,
        "POST",
        "/v1/silences",
        &silence_body(now_ms() + 3_600_000),
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(metric(&stack, "bulwark_journal_healthy"), 1.0);
    // What was lost is marked in the journal.
    eventually("a gap marker", Duration::from_secs(30), || {
        stack
            .events()
            .iter()
            .any(|e| {
                e["type"] == "gap" && e["reader"] == "journal" && e["missed"].as_u64() > Some(0)
            })
            .then_some(())
    });
    let out = stack.cli(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("journal: ok"));
    // The audit log held up no call while the disk was full, and writes what it had
    // queued once space returns: the refused silence is there, and the one after.
    eventually("the audit log written", Duration::from_secs(30), || {
        let out = stack.cli(&["audit", "--json", "--limit", "10000"]);
        let silences: Vec<u64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["path"] == "/v1/silences")
            .filter_map(|r| r["status"].as_u64())
            .collect();
        (silences.contains(&503) && silences.contains(&201)).then_some(())
    });
}
