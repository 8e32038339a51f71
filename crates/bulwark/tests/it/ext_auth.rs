//! Issue 18, fail closed or fail open: `[expose.auth]` against a real auth server (a small
//! HTTP server in the test): allowed with the user copied upstream, denied with the auth
//! server's own answer, its 5xx, its stall past the timeout and its absence each decided
//! by `on_error`, and counted.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;

/// An auth server on 127.0.0.1: `Bearer good` → 200 with `X-User: alice`; `Bearer stall`
/// → no answer for 30 s; `Bearer broken` → 500; `Bearer huge` → a 403 of 100 000 bytes
/// (over the proxy's bound); anything else → 403 with a body and a
/// header of its own. It keeps the head of every request it was asked.
struct AuthServer {
    url: String,
    asked: Arc<Mutex<Vec<String>>>,
}

impl AuthServer {
    fn start() -> AuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/check?app=web", listener.local_addr().unwrap());
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || serve(conn, &log));
            }
        });
        AuthServer { url, asked }
    }

    /// The heads it was asked with `needle` in them.
    fn asked_with(&self, needle: &str) -> Vec<String> {
        let asked = self.asked.lock().unwrap();
        asked
            .iter()
            .filter(|h| h.contains(needle))
            .cloned()
            .collect()
    }
}

/// Answers the requests of one connection (the proxy keeps connections open).
fn serve(conn: TcpStream, log: &Mutex<Vec<String>>) {
    let mut out = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line.to_ascii_lowercase());
        }
        log.lock().unwrap().push(head.clone());
        let huge;
        let answer = if head.contains("authorization: bearer good") {
            "HTTP/1.1 200 OK\r\nX-User: alice\r\nContent-Length: 0\r\n\r\n"
        } else if head.contains("authorization: bearer huge") {
            huge = format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Length: 100000\r\n\r\n{}",
                "x".repeat(100_000)
            );
            huge.as_str()
        } else if head.contains("authorization: bearer stall") {
            std::thread::sleep(Duration::from_secs(30));
            return;
        } else if head.contains("authorization: bearer broken") {
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
        } else {
            "HTTP/1.1 403 Forbidden\r\nX-Auth-Reason: no valid token\r\n\
             Content-Length: 15\r\n\r\ndenied by auth\n"
        };
        if out.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// A GET of `path` with `headers` (each ending in `\r\n`): status, whole response.
fn ask(proxy: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: app.test\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut raw);
    let (code, _) = parse_response(&raw);
    (code.unwrap(), String::from_utf8_lossy(&raw).into_owned())
}

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// `bulwark_proxy_policy_events_total` of `service` for `event`.
fn policy_events(stack: &Stack, service: &str, event: &str) -> f64 {
    let (_, text) = get(stack.api, "/metrics");
    text.lines()
        .filter(|l| l.starts_with("bulwark_proxy_policy_events_total"))
        .filter(|l| {
            l.contains(&format!("service=\"{service}\"")) && l.contains(&format!("\"{event}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn the_auth_service_allows_or_denies_and_its_failures_and_stalls_fail_closed() {
    let auth = AuthServer::start();
    let port = free_port();
    let toml = Demo::new("web")
        .expose(port)
        .with(&format!(
            "[services.web.expose.auth]\nurl = \"{}\"\ntimeout = \"300ms\"\n\
             upstream_headers = [\"x-user\"]\n",
            auth.url
        ))
        .build();
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 1);
    let proxy = addr(port);

    // Allowed: the replica answers, and sees the user the auth service named, never the
    // one the client claimed.
    let (code, res) = ask(
        proxy,
        "/headers",
        "Authorization: Bearer good\r\nX-User: mallory\r\n",
    );
    assert_eq!(code, 200, "{res}");
    assert!(
        res.contains("x-user: alice") && !res.contains("mallory"),
        "{res}"
    );
    let asked = auth.asked_with("bearer good");
    assert!(
        asked[0].starts_with("get /check?app=web http/1.1"),
        "{asked:?}"
    );
    for h in [
        "x-forwarded-method: get",
        "x-forwarded-uri: /headers",
        "x-forwarded-host: app.test",
        "x-forwarded-for: 127.0.0.1",
    ] {
        assert!(asked[0].contains(h), "{h} in {asked:?}");
    }
    assert!(
        !asked[0].contains("x-user"),
        "only the declared headers are sent"
    );

    // Denied: the auth service's own answer, status, header and body, reaches the client;
    // the replica is never asked.
    let (code, res) = ask(proxy, "/", "Authorization: Bearer nope\r\n");
    assert_eq!(code, 403, "{res}");
    assert!(
        res.to_ascii_lowercase()
            .contains("x-auth-reason: no valid token"),
        "{res}"
    );
    assert!(res.ends_with("denied by auth\n"), "{res}");
    let (code, _) = ask(proxy, "/", "");
    assert_eq!(code, 403, "no credentials: denied");
    assert_eq!(policy_events(&stack, "web", "auth_denied"), 2.0);

    // A 5xx is no decision: fail closed (the default), 503, counted.
    let (code, res) = ask(proxy, "/", "Authorization: Bearer broken\r\n");
    assert_eq!(code, 503, "{res}");
    assert!(res.contains("authorization unavailable"), "{res}");

    // An answer over the bound (64 KiB) is no decision either.
    let (code, res) = ask(proxy, "/", "Authorization: Bearer huge\r\n");
    assert_eq!(code, 503, "{}", &res[..200.min(res.len())]);
    assert!(
        !res.contains("xxxx"),
        "the oversized answer is not passed on"
    );

    // A stall is cut at the timeout (300 ms), well before the request's own 15 s.
    let began = Instant::now();
    let (code, res) = ask(proxy, "/", "Authorization: Bearer stall\r\n");
    let took = began.elapsed();
    assert_eq!(code, 503, "{res}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(policy_events(&stack, "web", "auth_unavailable"), 3.0);
}

#[test]
fn an_auth_service_that_is_down_fails_closed_by_default_and_open_where_declared() {
    // Nothing listens on `down`: every check is refused at connect.
    let down = free_port();
    let (closed, open) = (free_port(), free_port());
    let auth = |on_error: &str| {
        format!(
            "[services.{{}}.expose.auth]\nurl = \"http://127.0.0.1:{down}/check\"\n{on_error}\
             upstream_headers = [\"x-user\"]\n"
        )
    };
    let toml = format!(
        "{}{}",
        Demo::new("closed")
            .expose(closed)
            .with(&auth("").replace("{}", "closed"))
            .build(),
        Demo::new("open")
            .expose(open)
            .with(&auth("on_error = \"allow\"\n").replace("{}", "open"))
            .build()
    );
    let stack = Stack::start(&toml);
    stack.wait_ready("closed", 1);
    stack.wait_ready("open", 1);

    let (code, res) = ask(addr(closed), "/", "Authorization: Bearer good\r\n");
    assert_eq!(code, 503, "fail closed: {res}");
    assert!(
        res.contains("authorization unavailable") && res.contains("retry-after: 1"),
        "{res}"
    );
    assert_eq!(policy_events(&stack, "closed", "auth_unavailable"), 1.0);
    assert_eq!(policy_events(&stack, "closed", "auth_failed_open"), 0.0);

    // Fail open: through, unauthenticated; a user the client names is still removed.
    let (code, res) = ask(addr(open), "/headers", "X-User: mallory\r\n");
    assert_eq!(code, 200, "fail open: {res}");
    assert!(!res.contains("mallory"), "{res}");
    assert_eq!(policy_events(&stack, "open", "auth_failed_open"), 1.0);
    assert_eq!(policy_events(&stack, "open", "auth_unavailable"), 0.0);
}

#[test]
fn checks_in_flight_are_bounded_and_one_more_is_no_decision() {
    let auth = AuthServer::start();
    let port = free_port();
    let toml = Demo::new("web")
        .expose(port)
        .with(&format!(
            "[services.web.expose.limits]\nmax_inflight = 1\n\
             [services.web.expose.auth]\nurl = \"{}\"\ntimeout = \"3s\"\n",
            auth.url
        ))
        .build();
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 1);
    let proxy = addr(port);
    // One check stalls, holding the only place…
    let stalled = std::thread::spawn(move || ask(proxy, "/", "Authorization: Bearer stall\r\n"));
    eventually("the stalled check asked", Duration::from_secs(10), || {
        (!auth.asked_with("bearer stall").is_empty()).then_some(())
    });
    // …so the next is not asked at all: fail closed, at once.
    let began = Instant::now();
    let (code, res) = ask(proxy, "/", "Authorization: Bearer good\r\n");
    assert_eq!(code, 503, "{res}");
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    assert!(auth.asked_with("bearer good").is_empty());
    assert_eq!(stalled.join().unwrap().0, 503, "the stall timed out");
    // The place is free again.
    assert_eq!(ask(proxy, "/", "Authorization: Bearer good\r\n").0, 200);
    assert_eq!(policy_events(&stack, "web", "auth_unavailable"), 2.0);
}
