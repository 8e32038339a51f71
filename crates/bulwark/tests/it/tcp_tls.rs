//! TLS in TCP mode: terminated by the proxy (the plaintext relayed to plain TCP replicas),
//! or passed through by SNI to replicas that hold their own certificates (`openssl
//! s_server`), checked with openssl s_client and curl.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::resilience::{metric, reload};
use crate::tls::{ca, leaf};

/// What `openssl s_client` says of a handshake with SNI `name` (none if empty), without
/// ALPN.
fn s_client(dir: &Path, port: u16, name: &str) -> String {
    let sni: &[&str] = if name.is_empty() {
        &["-noservername"]
    } else {
        &["-servername", name]
    };
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(sni)
        .args(["-CAfile", "ca.pem"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    output_text(&out)
}

/// An `openssl s_client -quiet` session to `name` on `port`: its stdin and stdout.
struct Session {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Session {
    fn open(dir: &Path, port: u16, name: &str) -> Session {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-verify_return_error"])
            .args(["-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", name, "-CAfile", "ca.pem"])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Session {
            child,
            stdin,
            stdout,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        assert!(self.stdout.read_line(&mut line).unwrap() > 0, "closed");
        line.trim_end().to_owned()
    }

    fn send(&mut self, text: &str) {
        self.stdin.write_all(text.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `bytes`, then nothing: how long until the proxy closes the connection.
fn stall_after(addr: SocketAddr, bytes: &[u8]) -> Duration {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let t = Instant::now();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty() || got[0] == 0x15, "{got:?}");
    t.elapsed()
}

#[test]
fn tcp_mode_terminates_tls_relays_plaintext_and_serves_a_renewed_certificate() {
    let (echo_port, web_port) = (free_port(), free_port());
    let tls = "[services.NAME.expose.tls]\ncertificates = [{ cert = \"a.pem\", key = \"a.key\" }]";
    let timeouts = "[services.NAME.expose.timeouts]\nheader_read = \"1s\"";
    let toml = Demo::with_args("echo", &["--tcp"])
        .expose(echo_port)
        .with("protocol = \"tcp\"")
        .with(&tls.replace("NAME", "echo"))
        .with(&timeouts.replace("NAME", "echo"))
        .build()
        + &Demo::new("web")
            .expose(web_port)
            .with("protocol = \"tcp\"")
            .with(&tls.replace("NAME", "web"))
            .build();
    let mut stack = Stack::prepare(&toml);
    let dir = stack.dir.path().to_owned();
    ca(&dir);
    leaf(&dir, "a", "a.test", "/CN=a.test");
    stack.launch();
    stack.wait_ready("echo", 1);
    stack.wait_ready("web", 1);

    // The replica's own bytes come back through the TLS the proxy ended.
    let mut session = Session::open(&dir, echo_port, "a.test");
    assert!(session.line().starts_with("echo"), "the replica's banner");
    session.send("over tls\n");
    assert_eq!(session.line(), "over tls");
    let shown = s_client(&dir, echo_port, "a.test");
    assert!(shown.contains("subject=CN = a.test"), "{shown}");
    assert!(shown.contains("Verify return code: 0 (ok)"), "{shown}");
    assert!(shown.contains("No ALPN negotiated"), "{shown}");
    // curl's HTTP/1.1 reaches an HTTP replica behind a TCP listener that ends TLS.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", "ca.pem"])
        .args(["--resolve", &format!("a.test:{web_port}:127.0.0.1")])
        .args(["-w", " %{http_code} %{http_version}"])
        .arg(format!("https://a.test:{web_port}/"))
        .current_dir(&dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.ends_with(" 200 1.1"), "{said}");

    // A renewed certificate goes to new connections; the open one goes on.
    leaf(&dir, "a", "a.test", "/CN=a.test/O=renewed");
    eventually("the renewed certificate", Duration::from_secs(10), || {
        s_client(&dir, echo_port, "a.test")
            .contains("subject=CN = a.test, O = renewed")
            .then_some(())
    });
    session.send("still here\n");
    assert_eq!(session.line(), "still here");
    drop(session);

    // Plain bytes and a silent client are closed, within header_read, and counted.
    let addr: SocketAddr = format!("127.0.0.1:{echo_port}").parse().unwrap();
    stall_after(addr, b"hello in clear\n");
    let silent = stall_after(addr, b"");
    assert!(
        silent >= Duration::from_millis(900) && silent < Duration::from_secs(5),
        "closed after header_read: {silent:?}"
    );
    let failed = metric(
        &stack,
        "bulwark_proxy_policy_events_total{service=\"echo\",event=\"tls_handshake_failed\"}",
    );
    assert!(failed >= 2.0, "{failed}");
    let counted = metric(
        &stack,
        "bulwark_tcp_connections_total{service=\"echo\",result=\"tls_failed\"}",
    );
    assert!(counted >= 2.0, "{counted}");
}

/// A TCP service `name` whose replica is `openssl s_server` with `FILE.pem`, passing TLS
/// through on `port` with `tls_keys`.
fn passthrough(name: &str, file: &str, port: u16, tls_keys: &str) -> String {
    format!(
        r#"
[services.{name}]
run = ["openssl", "s_server", "-quiet", "-accept", "{{port}}", "-cert", "{file}.pem", "-key", "{file}.key", "-www"]
cwd = "."
[services.{name}.expose]
protocol = "tcp"
listen = "127.0.0.1:{port}"
[services.{name}.expose.timeouts]
header_read = "1s"
[services.{name}.expose.tls]
passthrough = true
{tls_keys}
"#
    )
}

#[test]
fn tls_passthrough_by_sni_reaches_the_replicas_that_claim_each_name() {
    let port = free_port();
    let toml = |b_keys: &str| {
        passthrough("a", "a", port, "sni = [\"a.example\"]") + &passthrough("b", "b", port, b_keys)
    };
    let mut stack = Stack::prepare(&toml("sni = [\"*.b.example\"]"));
    let dir = stack.dir.path().to_owned();
    ca(&dir);
    leaf(&dir, "a", "a.example", "/CN=a.example");
    leaf(&dir, "b", "*.b.example", "/CN=b.example");
    // One worker: s_server serves one connection at a time.
    stack.launch_with(&["--workers", "1"]);
    stack.wait_ready("a", 1);
    stack.wait_ready("b", 1);

    // Each name reaches its own service's replica, which ends the TLS with its own key.
    let a = s_client(&dir, port, "a.example");
    assert!(a.contains("subject=CN = a.example"), "{a}");
    assert!(a.contains("Verify return code: 0 (ok)"), "{a}");
    let b = s_client(&dir, port, "x.b.example");
    assert!(b.contains("subject=CN = b.example"), "{b}");
    let mut session = Session::open(&dir, port, "a.example");
    session.send("GET / HTTP/1.0\r\n\r\n");
    assert_eq!(session.line(), "HTTP/1.0 200 ok");
    drop(session);

    // A name nobody claims, and a hello without SNI: closed, counted under the address.
    for name in ["c.example", "y.x.b.example", ""] {
        let out = s_client(&dir, port, name);
        assert!(!out.contains("subject="), "{name}: {out}");
    }
    let unclaimed = format!(
        "bulwark_proxy_policy_events_total{{service=\"127.0.0.1:{port}\",event=\"sni_unclaimed\"}}"
    );
    assert!(metric(&stack, &unclaimed) >= 3.0);

    // Half a hello, then nothing: closed within the deadline (the longest header_read).
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let half = stall_after(addr, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]);
    assert!(
        half >= Duration::from_millis(900) && half < Duration::from_secs(5),
        "closed after header_read: {half:?}"
    );
    stall_after(addr, b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n");
    let failed = format!(
        "bulwark_proxy_policy_events_total{{service=\"127.0.0.1:{port}\",event=\"tls_hello_failed\"}}"
    );
    assert!(metric(&stack, &failed) >= 2.0);

    // A reload makes b the default, on the same socket: unclaimed names now reach it.
    reload(&stack, &toml("sni = [\"*.b.example\"]\ndefault = true"));
    eventually("b as the default", Duration::from_secs(10), || {
        s_client(&dir, port, "c.example")
            .contains("subject=CN = b.example")
            .then_some(())
    });
    let a = s_client(&dir, port, "a.example");
    assert!(a.contains("subject=CN = a.example"), "{a}");
    let conns = metric(
        &stack,
        "bulwark_tcp_connections_total{service=\"a\",result=\"ok\"}",
    );
    assert!(conns >= 2.0, "{conns}");
}

#[test]
fn check_refuses_one_sni_name_claimed_twice_on_an_address() {
    let port = free_port();
    let toml = passthrough("a", "a", port, "sni = [\"a.example\"]")
        + &passthrough("b", "b", port, "sni = [\"A.example\"]");
    let stack = Stack::prepare(&toml);
    let file = stack.dir.path().join("stack.toml");
    let out = stack.cli(&["check", "-f", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "stack.toml:24:7: error: SNI name `a.example` on 127.0.0.1:{port} is already claimed by service `a`"
        )),
        "{err}"
    );
}

#[test]
fn tcp_mode_tls_with_client_ca_lets_in_only_clients_with_its_certificates() {
    let port = free_port();
    let toml = Demo::with_args("echo", &["--tcp"])
        .expose(port)
        .with("protocol = \"tcp\"")
        .with(
            "[services.echo.expose.tls]\ncertificates = [{ cert = \"a.pem\", key = \"a.key\" }]\nclient_ca = \"ca.pem\"",
        )
        .build();
    let mut stack = Stack::prepare(&toml);
    let dir = stack.dir.path().to_owned();
    ca(&dir);
    crate::tls::ca_named(&dir, "other-ca");
    leaf(&dir, "a", "a.test", "/CN=a.test");
    crate::tls::client(&dir, "ca", "client");
    crate::tls::client(&dir, "other-ca", "stranger");
    stack.launch();
    stack.wait_ready("echo", 1);
    // What the replica says first, through a session presenting `cert` (if any).
    let banner = |cert: Option<&str>| {
        let mut args = vec![
            "s_client".to_owned(),
            "-quiet".into(),
            "-connect".into(),
            format!("127.0.0.1:{port}"),
            "-servername".into(),
            "a.test".into(),
            "-CAfile".into(),
            "ca.pem".into(),
        ];
        if let Some(c) = cert {
            args.extend([
                "-cert".into(),
                format!("{c}.pem"),
                "-key".into(),
                format!("{c}.key"),
            ]);
        }
        let out = Command::new("timeout")
            .arg("10")
            .arg("openssl")
            .args(&args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        banner(Some("client")).starts_with("echo"),
        "a client of the CA"
    );
    assert_eq!(banner(None), "", "no certificate");
    assert_eq!(
        banner(Some("stranger")),
        "",
        "a certificate from another CA"
    );
}
