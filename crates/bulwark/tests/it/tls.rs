//! TLS termination on a listener (`expose.tls`), checked with the tools users check it
//! with: curl (ALPN h2 and http/1.1), openssl s_client (SNI, certificate, a connection
//! kept open across a certificate change) and sslscan (protocols and ciphers).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::resilience::metric;

/// Runs `openssl` with `args` in `dir`; panics with its output if it fails.
pub(crate) fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA in `dir` (`ca.pem`, `ca.key`).
pub(crate) fn ca(dir: &Path) {
    ca_named(dir, "ca");
}

/// A test CA in `dir` (`NAME.pem`, `NAME.key`).
pub(crate) fn ca_named(dir: &Path, name: &str) {
    let (key, pem, subject) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("/CN=bulwark test {name}"),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &subject,
            "-keyout",
            &key,
            "-out",
            &pem,
        ],
    );
}

/// `FILE.pem` and `FILE.key`: a server certificate for `name` signed by the CA, with
/// `subject`.
pub(crate) fn leaf(dir: &Path, file: &str, name: &str, subject: &str) {
    let ext = format!(
        "subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
    );
    signed(dir, "ca", file, subject, &ext);
}

/// `FILE.pem` and `FILE.key`: a client certificate signed by the CA `ca`.
pub(crate) fn client(dir: &Path, ca: &str, file: &str) {
    let ext = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n";
    signed(dir, ca, file, "/CN=a client", ext);
}

pub(crate) fn signed(dir: &Path, ca: &str, file: &str, subject: &str, ext: &str) {
    std::fs::write(dir.join(format!("{file}.ext")), ext).unwrap();
    let (key, csr, pem) = (
        format!("{file}.key.new"),
        format!("{file}.csr"),
        format!("{file}.pem.new"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
    );
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &format!("{file}.ext"),
        ],
    );
    // Renamed into place, key first, as certificate tools replace files.
    std::fs::rename(dir.join(&key), dir.join(format!("{file}.key"))).unwrap();
    std::fs::rename(dir.join(&pem), dir.join(format!("{file}.pem"))).unwrap();
}

fn tls_stack(port: u16, extra: &str) -> Stack {
    tls_stack_with(port, extra, "")
}

/// Two demo replicas behind a TLS listener with certificates for a.test and b.test
/// (`extra` after `[expose]`, `tls_keys` in `[expose.tls]`); clients' certificates
/// (`client`, `stranger`) are made for the mTLS tests.
fn tls_stack_with(port: u16, extra: &str, tls_keys: &str) -> Stack {
    let mut stack = Stack::prepare(&tls_toml(port, extra, tls_keys));
    let dir = stack.dir.path().to_owned();
    ca(&dir);
    leaf(&dir, "a", "a.test", "/CN=a.test");
    leaf(&dir, "b", "b.test", "/CN=b.test");
    if !tls_keys.is_empty() {
        ca_named(&dir, "other-ca");
        client(&dir, "ca", "client");
        client(&dir, "other-ca", "stranger");
    }
    stack.launch();
    stack.wait_ready("web", 2);
    stack
}

/// The stack file of [`tls_stack_with`].
fn tls_toml(port: u16, extra: &str, tls_keys: &str) -> String {
    Demo::new("web")
        .replicas(2)
        .ready_every("200ms")
        .expose(port)
        .with(extra)
        .with(&format!(
            "[services.web.expose.tls]\ncertificates = [{{ cert = \"a.pem\", key = \"a.key\" }}, {{ cert = \"b.pem\", key = \"b.key\" }}]\n{tls_keys}"
        ))
        .build()
}

/// `curl` over TLS to `name` (resolved to 127.0.0.1): "STATUS VERSION".
fn curl(dir: &Path, port: u16, name: &str, version: &str) -> String {
    curl_as(dir, port, name, version, None)
}

/// [`curl`] with the client certificate `FILE.pem` (key `FILE.key`).
fn curl_as(dir: &Path, port: u16, name: &str, version: &str, cert: Option<&str>) -> String {
    let cert: Vec<String> = cert.map_or(vec![], |c| {
        vec![
            "--cert".into(),
            format!("{c}.pem"),
            "--key".into(),
            format!("{c}.key"),
        ]
    });
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", "ca.pem", version])
        .args(&cert)
        .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
        .args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}"])
        .arg(format!("https://{name}:{port}/"))
        .current_dir(dir)
        .output()
        .unwrap();
    output_text(&out)
}

/// What `openssl s_client` says of a handshake with SNI `name` offering `alpn`.
fn s_client(dir: &Path, port: u16, name: &str, alpn: &str) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", name, "-alpn", alpn, "-CAfile", "ca.pem"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One request on an open `openssl s_client -quiet` connection; its answer's body line.
fn ask(stdin: &mut impl Write, stdout: &mut impl BufRead) -> String {
    stdin
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "connection closed"
        );
        if line.starts_with("hello") {
            return line.trim().to_owned();
        }
    }
}

#[test]
fn tls_listener_speaks_h2_and_http1_by_alpn_picks_certificates_by_sni_and_reloads_them() {
    let port = free_port();
    let stack = tls_stack(port, "");
    let dir = stack.dir.path().to_owned();
    assert_eq!(curl(&dir, port, "a.test", "--http2"), "200 2");
    assert_eq!(curl(&dir, port, "a.test", "--http1.1"), "200 1.1");
    assert_eq!(curl(&dir, port, "b.test", "--http2"), "200 2");

    let b = s_client(&dir, port, "b.test", "h2");
    assert!(b.contains("ALPN protocol: h2"), "{b}");
    assert!(b.contains("subject=CN = b.test"), "{b}");
    assert!(b.contains("Verify return code: 0 (ok)"), "{b}");
    let h1 = s_client(&dir, port, "a.test", "http/1.1");
    assert!(h1.contains("ALPN protocol: http/1.1"), "{h1}");
    assert!(h1.contains("subject=CN = a.test"), "{h1}");
    // A name no certificate is for gets the first one.
    let other = s_client(&dir, port, "c.test", "h2");
    assert!(other.contains("subject=CN = a.test"), "{other}");

    // A connection open across the change keeps working on its old certificate.
    let mut open = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .args([
            "-servername",
            "a.test",
            "-alpn",
            "http/1.1",
            "-CAfile",
            "ca.pem",
        ])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = open.stdin.take().unwrap();
    let mut stdout = BufReader::new(open.stdout.take().unwrap());
    assert!(ask(&mut stdin, &mut stdout).starts_with("hello"));

    leaf(&dir, "a", "a.test", "/CN=a.test/O=renewed");
    let renewed = eventually("the renewed certificate", Duration::from_secs(10), || {
        let out = s_client(&dir, port, "a.test", "h2");
        out.contains("subject=CN = a.test, O = renewed")
            .then_some(out)
    });
    assert!(renewed.contains("Verify return code: 0 (ok)"), "{renewed}");
    assert!(ask(&mut stdin, &mut stdout).starts_with("hello"));
    drop(stdin);
    let _ = open.kill();
    let _ = open.wait();

    // A broken replacement is not served: the renewed certificate stays.
    std::fs::write(dir.join("a.pem"), "not a certificate\n").unwrap();
    eventually("the failed reload logged", Duration::from_secs(10), || {
        stack
            .stderr()
            .contains("TLS certificates not reloaded")
            .then_some(())
    });
    let kept = s_client(&dir, port, "a.test", "h2");
    assert!(kept.contains("subject=CN = a.test, O = renewed"), "{kept}");
    assert_eq!(curl(&dir, port, "a.test", "--http2"), "200 2");
}

#[test]
fn tls_listener_refuses_plain_http_and_closes_stalled_handshakes() {
    let port = free_port();
    let stack = tls_stack(port, "[services.web.expose.timeouts]\nheader_read = \"1s\"");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/"), "{got:?}");
    // A client that connects and says nothing is closed after `header_read`.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    let n = s.read(&mut [0u8; 64]).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(5),
        "closed after header_read: {:?}",
        t.elapsed()
    );
    let failed = metric(
        &stack,
        "bulwark_proxy_policy_events_total{service=\"web\",event=\"tls_handshake_failed\"}",
    );
    assert!(failed >= 2.0, "{failed}");
    // Neither cost the listener anything.
    assert_eq!(curl(stack.dir.path(), port, "a.test", "--http2"), "200 2");
}

#[test]
fn tls_offers_no_weak_protocol_or_cipher_by_sslscan() {
    let port = free_port();
    let stack = tls_stack(port, "");
    let out = Command::new("sslscan")
        .args([
            "--no-colour",
            "--sni-name=a.test",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    for old in ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with(old) && l.contains("disabled")),
            "{old} not reported disabled:\n{report}"
        );
    }
    for current in ["TLSv1.2", "TLSv1.3"] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with(current) && l.contains("enabled")),
            "{current} not enabled:\n{report}"
        );
    }
    let ciphers: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("Accepted") || l.starts_with("Preferred"))
        .collect();
    assert!(!ciphers.is_empty(), "{report}");
    for c in &ciphers {
        assert!(
            (c.contains("GCM") || c.contains("CHACHA20")) && !c.contains(" 64 bits"),
            "weak cipher {c}:\n{report}"
        );
    }
    assert!(
        !report.contains("Insecure session renegotiation"),
        "{report}"
    );
    assert!(
        report.contains("TLSv1.3 not vulnerable to heartbleed")
            && report.contains("TLSv1.2 not vulnerable to heartbleed"),
        "{report}"
    );
    drop(stack);
}

#[test]
fn tls_files_that_do_not_read_are_named_by_check_and_up() {
    let port = free_port();
    let toml = Demo::new("web")
        .expose(port)
        .with("[services.web.expose.tls]\ncertificates = [{ cert = \"missing.pem\", key = \"a.key\" }]")
        .build();
    let mut stack = Stack::prepare(&toml);
    let dir = stack.dir.path().to_owned();
    ca(&dir);
    leaf(&dir, "a", "a.test", "/CN=a.test");
    let out = stack.cli(&["check", "-f", dir.join("stack.toml").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("stack.toml:") && err.contains("missing.pem"),
        "{err}"
    );

    // A key that is not the certificate's passes `check` (both files read) but not `up`.
    leaf(&dir, "b", "b.test", "/CN=b.test");
    let text = std::fs::read_to_string(dir.join("stack.toml"))
        .unwrap()
        .replace("missing.pem", "b.pem");
    std::fs::write(dir.join("stack.toml"), text).unwrap();
    let exit = stack.launch_expecting_failure(Duration::from_secs(20));
    assert!(exit.is_some_and(|e| !e.success()), "{exit:?}");
    let err = stack.stderr();
    assert!(
        err.contains("a.key is not the private key of") && err.contains("b.pem"),
        "{err}"
    );
}

#[test]
fn mtls_required_refuses_clients_without_a_certificate_from_its_ca_and_optional_admits_them() {
    let port = free_port();
    let stack = tls_stack_with(port, "", "client_ca = \"ca.pem\"");
    let dir = stack.dir.path().to_owned();
    assert_eq!(
        curl_as(&dir, port, "a.test", "--http2", Some("client")),
        "200 2"
    );
    assert_eq!(
        curl_as(&dir, port, "a.test", "--http1.1", Some("client")),
        "200 1.1"
    );
    for refused in [None, Some("stranger")] {
        let out = curl_as(&dir, port, "a.test", "--http2", refused);
        assert!(out.starts_with("000"), "{refused:?}: {out}");
    }

    // A reload of the stack file that only loosens `client_verify` applies at once.
    crate::resilience::reload(
        &stack,
        &tls_toml(
            port,
            "",
            "client_ca = \"ca.pem\"\nclient_verify = \"optional\"",
        ),
    );
    eventually(
        "client_verify = optional applied",
        Duration::from_secs(10),
        || (curl_as(&dir, port, "a.test", "--http2", None) == "200 2").then_some(()),
    );
    assert_eq!(
        curl_as(&dir, port, "a.test", "--http2", Some("client")),
        "200 2"
    );
    let out = curl_as(&dir, port, "a.test", "--http2", Some("stranger"));
    assert!(out.starts_with("000"), "{out}");
}

/// A service whose replica is `openssl s_server` serving the stack's directory over TLS
/// (HTTP/1.0), asking for a client certificate from the CA, behind a plain listener
/// with `upstream_tls` keys `tls_keys`.
fn tls_replicas(port: u16, tls_keys: &str) -> String {
    format!(
        r#"[services.web]
run = ["openssl", "s_server", "-quiet", "-accept", "{{port}}", "-cert", "replica.pem", "-key", "replica.key", "-WWW", "-Verify", "1", "-CAfile", "ca.pem"]
cwd = "."
[services.web.expose]
listen = "127.0.0.1:{port}"
[services.web.expose.upstream_tls]
{tls_keys}
"#
    )
}

#[test]
fn tls_to_replicas_verifies_their_certificate_and_presents_the_proxys() {
    let port = free_port();
    let good = "ca = \"ca.pem\"\nserver_name = \"replica.test\"\ncert = \"proxy.pem\"\nkey = \"proxy.key\"";
    let mut stack = Stack::prepare(&tls_replicas(port, good));
    let dir = stack.dir.path().to_owned();
    ca(&dir);
    ca_named(&dir, "other-ca");
    leaf(&dir, "replica", "replica.test", "/CN=replica.test");
    client(&dir, "ca", "proxy");
    std::fs::write(dir.join("hello.txt"), "hello over tls\n").unwrap();
    // One worker: s_server serves one connection at a time, and each worker would warm one.
    stack.launch_with(&["--workers", "1"]);
    stack.wait_ready("web", 1);
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let fetch = || get(proxy, "/hello.txt");
    let (status, body) = fetch();
    assert_eq!((status, body.trim()), (200, "hello over tls"), "{body}");

    // Each broken setting fails closed: 502, never plain text, never an unverified peer.
    for (keys, why, says) in [
        (
            "ca = \"other-ca.pem\"\nserver_name = \"replica.test\"\ncert = \"proxy.pem\"\nkey = \"proxy.key\"",
            "a replica certificate from another CA",
            "UnknownIssuer",
        ),
        (
            "ca = \"ca.pem\"\nserver_name = \"other.test\"\ncert = \"proxy.pem\"\nkey = \"proxy.key\"",
            "a replica certificate for another name",
            "not valid for name \"other.test\"",
        ),
        (
            "ca = \"ca.pem\"\nserver_name = \"replica.test\"",
            "no client certificate for a replica that asks for one",
            // TLS 1.3: the replica's refusal arrives after the handshake.
            "connection error",
        ),
    ] {
        crate::resilience::reload(&stack, &tls_replicas(port, keys));
        let (status, body) = eventually(why, Duration::from_secs(10), || {
            let (status, body) = fetch();
            (status != 200).then_some((status, body))
        });
        assert_eq!(status, 502, "{why}: {body}");
        assert!(body.contains(says), "{why}: {body}");
    }
    // Without verification, any certificate is taken (the one for another name too).
    crate::resilience::reload(
        &stack,
        &tls_replicas(
            port,
            "insecure_skip_verify = true\ncert = \"proxy.pem\"\nkey = \"proxy.key\"",
        ),
    );
    let body = eventually("insecure_skip_verify", Duration::from_secs(10), || {
        let (status, body) = fetch();
        (status == 200).then_some(body)
    });
    assert_eq!(body.trim(), "hello over tls");
}
