//! Issue 18: the control API over TLS and mTLS (`[api.tls]`), checked with curl, openssl
//! s_client and the CLI itself; plain HTTP off loopback refused.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::tls::{ca, ca_named, signed};

const SERVER_EXT: &str = "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n";
const CLIENT_EXT: &str =
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n";

/// A stack whose API speaks TLS with `api.pem` (for 127.0.0.1 and localhost, from
/// `ca.pem`), `tls_keys` added to `[api.tls]`; client certificates `ops` (CN=ops-laptop,
/// from the CA) and `stranger` (from `other-ca.pem`) are made too.
fn tls_api(tls_keys: &str) -> Stack {
    tls_api_with("", tls_keys)
}

/// [`tls_api`] with `api_keys` added to `[api]`.
fn tls_api_with(api_keys: &str, tls_keys: &str) -> Stack {
    let toml = format!(
        "{}\n[api]\nlisten = \"127.0.0.1:0\"\n{api_keys}\n[api.tls]\ncertificates = [{{ cert = \"api.pem\", key = \"api.key\" }}]\n{tls_keys}",
        Demo::new("web").build()
    );
    let mut stack = Stack::prepare(&toml);
    let dir = stack.dir.path().to_owned();
    ca(&dir);
    ca_named(&dir, "other-ca");
    signed(&dir, "ca", "api", "/CN=bulwark api", SERVER_EXT);
    signed(
        &dir,
        "ca",
        "ops",
        "/O=bulwark tests/CN=ops-laptop",
        CLIENT_EXT,
    );
    signed(&dir, "other-ca", "stranger", "/CN=stranger", CLIENT_EXT);
    stack.launch();
    stack
}

/// `curl` to the API over https (CA `ca.pem`): "STATUS VERSION" then the body, or curl's
/// error. `args` adds options (a version, `--cert`, a header).
fn curl(stack: &Stack, method: &str, path: &str, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            "ca.pem",
            "-X",
            method,
        ])
        .args(args)
        .args(["-w", "\n%{http_code} %{http_version}"])
        .arg(format!("https://127.0.0.1:{}{path}", stack.api.port()))
        .current_dir(stack.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    format!("{code} {body}{}", String::from_utf8_lossy(&out.stderr))
}

fn bearer(stack: &Stack) -> String {
    format!("Authorization: Bearer {}", stack.token.trim())
}

/// The CLI against `stack` with `env` (file names relative to the stack's directory).
fn cli(stack: &Stack, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = stack.dir.path();
    let mut cmd = Command::new(BULWARK);
    cmd.args(args)
        .env("BULWARK_STATE_DIR", stack.state_dir())
        .env_remove("BULWARK_CACERT")
        .env_remove("BULWARK_CLIENT_CERT")
        .env_remove("BULWARK_CLIENT_KEY");
    for (k, v) in env {
        cmd.env(k, dir.join(v));
    }
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The subject of the certificate the API serves, as `openssl s_client` prints it.
fn served_subject(dir: &Path, port: u16) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-CAfile", "ca.pem"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn tls_api_speaks_h2_and_http1_and_the_cli_verifies_it_against_its_ca() {
    let stack = tls_api("");
    let dir = stack.dir.path().to_owned();
    let auth = bearer(&stack);
    let h2 = curl(&stack, "GET", "/v1/status", &["--http2", "-H", &auth]);
    assert!(h2.starts_with("200 2 ") && h2.contains("\"web\""), "{h2}");
    let h1 = curl(&stack, "GET", "/v1/status", &["--http1.1", "-H", &auth]);
    assert!(h1.starts_with("200 1.1 "), "{h1}");
    // Over TLS the Host may be a name (a rebinding page cannot pass the certificate check).
    let by_name = Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            "ca.pem",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(["-H", &auth])
        .arg(format!("https://localhost:{}/v1/status", stack.api.port()))
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&by_name.stdout), "200");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(stack.api).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{}/metrics", stack.api.port()))
        .output()
        .unwrap();
    assert!(!out.status.success(), "plain HTTP was answered");

    // The CLI: verified against BULWARK_CACERT, never without it.
    let ok = cli(&stack, &["status"], &[("BULWARK_CACERT", "ca.pem")]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("web"));
    let none = cli(&stack, &["status"], &[]);
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("speaks TLS; set BULWARK_CACERT"),
        "{}",
        stderr(&none)
    );
    // `bulwark top` goes through the same client: its frame names the https origin.
    let top = cli(&stack, &["top", "--once"], &[("BULWARK_CACERT", "ca.pem")]);
    assert!(top.status.success(), "{}", stderr(&top));
    let frame = String::from_utf8_lossy(&top.stdout);
    assert!(
        frame.contains(&format!("API https://{}", stack.api)) && frame.contains("web"),
        "{frame}"
    );
    let top = cli(&stack, &["top", "--once"], &[]);
    assert!(
        stderr(&top).contains("speaks TLS; set BULWARK_CACERT"),
        "{}",
        stderr(&top)
    );
    let wrong = cli(&stack, &["status"], &[("BULWARK_CACERT", "other-ca.pem")]);
    assert!(!wrong.status.success());
    let why = stderr(&wrong);
    assert!(
        why.contains("TLS handshake with bulwark's API at 127.0.0.1:")
            && why.contains("invalid peer certificate: UnknownIssuer"),
        "{why}"
    );

    // A replaced certificate is served to new connections without a restart.
    let port = stack.api.port();
    assert_eq!(served_subject(&dir, port), "subject=CN = bulwark api");
    signed(&dir, "ca", "api", "/CN=bulwark api v2", SERVER_EXT);
    eventually("the new API certificate", Duration::from_secs(20), || {
        (served_subject(&dir, port) == "subject=CN = bulwark api v2").then_some(())
    });
    let ok = cli(&stack, &["status"], &[("BULWARK_CACERT", "ca.pem")]);
    assert!(ok.status.success(), "{}", stderr(&ok));
}

#[test]
fn required_mtls_api_knows_clients_by_certificate_as_viewers_and_audits_their_cn() {
    let stack = tls_api("client_ca = \"ca.pem\"\nclient_verify = \"required\"\n");
    let auth = bearer(&stack);
    let ops = ["--cert", "ops.pem", "--key", "ops.key"];

    // No certificate, or one from another CA: refused even with the owner's token.
    let bare = curl(&stack, "GET", "/v1/status", &["-H", &auth]);
    assert!(bare.starts_with("000 "), "{bare}");
    assert_stranger_refused(&stack, &auth);

    // A certificate from the CA, without a token: a viewer named by its CN.
    let read = curl(&stack, "GET", "/v1/status", &ops);
    assert!(read.starts_with("200 2 "), "{read}");
    let act = curl(&stack, "POST", "/v1/services/web/restart", &ops);
    assert!(
        act.starts_with("403 ")
            && act.contains(
                "\\\"CN=ops-laptop\\\" has the role viewer; POST /v1/services/web/restart needs operator"
            ),
        "{act}"
    );
    // A token, when sent, decides; a wrong one is refused whatever the certificate.
    let wrong = curl(
        &stack,
        "GET",
        "/v1/status",
        &[&ops[..], &["-H", "Authorization: Bearer nope"]].concat(),
    );
    assert!(wrong.starts_with("401 "), "{wrong}");

    // The CLI presents BULWARK_CLIENT_CERT and BULWARK_CLIENT_KEY.
    let tls_env = [
        ("BULWARK_CACERT", "ca.pem"),
        ("BULWARK_CLIENT_CERT", "ops.pem"),
        ("BULWARK_CLIENT_KEY", "ops.key"),
    ];
    let without = cli(&stack, &["status"], &tls_env[..1]);
    assert!(
        !without.status.success(),
        "served without a client certificate"
    );
    assert!(
        stderr(&without).contains(
            "refused the TLS connection (CertificateRequired): it takes clients with a \
             certificate from its [api.tls] client_ca; set BULWARK_CLIENT_CERT and \
             BULWARK_CLIENT_KEY to one"
        ),
        "{}",
        stderr(&without)
    );
    let foreign = [
        ("BULWARK_CACERT", "ca.pem"),
        ("BULWARK_CLIENT_CERT", "stranger.pem"),
        ("BULWARK_CLIENT_KEY", "stranger.key"),
    ];
    let stranger = cli(&stack, &["status"], &foreign);
    assert!(
        !stranger.status.success() && stderr(&stranger).contains("refused the TLS connection"),
        "{}",
        stderr(&stranger)
    );
    let half = cli(&stack, &["status"], &tls_env[..2]);
    assert!(
        stderr(&half).contains("BULWARK_CLIENT_CERT and BULWARK_CLIENT_KEY go together"),
        "{}",
        stderr(&half)
    );
    let records = audit(&stack, &tls_env);
    assert!(
        records.iter().any(|r| r["who"] == "CN=ops-laptop"
            && r["role"] == "viewer"
            && r["method"] == "POST"
            && r["path"] == "/v1/services/web/restart"
            && r["outcome"] == "refused"),
        "{records:#?}"
    );
}

/// The audit log, read by the CLI over TLS with the owner's token.
fn audit(stack: &Stack, env: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let out = cli(stack, &["audit", "--json"], env);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn optional_mtls_api_lets_certificates_act_with_the_role_written_and_tokens_without() {
    let stack = tls_api_with(
        "client_role = \"operator\"",
        "client_ca = \"ca.pem\"\nclient_verify = \"optional\"\n",
    );
    let auth = bearer(&stack);
    let ops = ["--cert", "ops.pem", "--key", "ops.key"];
    // Without a certificate: the token decides, and nothing without one.
    assert!(curl(&stack, "GET", "/v1/status", &["-H", &auth]).starts_with("200 "));
    assert!(curl(&stack, "GET", "/v1/status", &[]).starts_with("401 "));
    // A certificate presented must be from the CA, even when optional.
    assert_stranger_refused(&stack, &auth);
    // The certificate acts as an operator: restarts, and no more.
    let restart = curl(&stack, "POST", "/v1/services/web/restart", &ops);
    assert!(restart.starts_with("202 "), "{restart}");
    let reload = curl(&stack, "POST", "/v1/reload", &ops);
    assert!(
        reload.starts_with("403 ")
            && reload.contains("has the role operator; POST /v1/reload needs admin"),
        "{reload}"
    );
    let records = audit(&stack, &[("BULWARK_CACERT", "ca.pem")]);
    let has = |path: &str, outcome: &str| {
        records.iter().any(|r| {
            r["who"] == "CN=ops-laptop"
                && r["role"] == "operator"
                && r["path"] == path
                && r["outcome"] == outcome
        })
    };
    assert!(has("/v1/services/web/restart", "done"), "{records:#?}");
    assert!(has("/v1/reload", "refused"), "{records:#?}");
}

#[test]
fn a_silent_client_is_closed_at_the_handshake_deadline() {
    let stack = tls_api("");
    // One that finishes the handshake for HTTP/2 and then says nothing (no preface):
    // `s_client` ends when the API closes the connection.
    let mut h2 = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &stack.api.to_string()])
        .args(["-alpn", "h2", "-CAfile", "ca.pem"])
        .current_dir(stack.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut silent = TcpStream::connect(stack.api).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    // Closed (end of stream or reset), not timed out on our side.
    match silent.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the API to close a silent connection, got {other:?}"),
    }
    let held = started.elapsed();
    assert!(
        held >= Duration::from_secs(5) && held < Duration::from_secs(20),
        "closed after {held:?}; the handshake limit is 10s"
    );
    let h2_closed = eventually(
        "the API to close a silent HTTP/2 connection",
        Duration::from_secs(20),
        || h2.try_wait().unwrap(),
    );
    let _ = h2.kill();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "HTTP/2 connection held for {:?} ({h2_closed})",
        started.elapsed()
    );
    // Others were served meanwhile.
    let auth = bearer(&stack);
    assert!(curl(&stack, "GET", "/v1/status", &["-H", &auth]).starts_with("200 "));
}

#[test]
fn plain_http_off_loopback_is_refused_by_check_and_up() {
    let toml = "[services.web]\nrun = [\"x\"]\n[api]\nlisten = \"0.0.0.0:0\"\n";
    crate::check::check(
        toml,
        "stack.toml:4:10: error: [api] listen = \"0.0.0.0:0\" is not a loopback address, and \
         the API would speak plain HTTP, showing its bearer token to the network: add an \
         [api.tls] table, e.g. `tls = { certificates = [{ cert = \"api.pem\", key = \
         \"api.key\" }] }` (with `client_ca` for mTLS), or listen on 127.0.0.1",
    );
    let mut stack = Stack::prepare(toml);
    let status = stack.launch_expecting_failure(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| !s.success()),
        "up served plain HTTP off loopback"
    );
    assert!(
        stack.stderr().contains("add an [api.tls] table"),
        "{}",
        stack.stderr()
    );
}

/// A client certificate from another CA is refused at the handshake (curl's `000`), even
/// with the owner's token.
fn assert_stranger_refused(stack: &Stack, auth: &str) {
    let stranger = curl(
        stack,
        "GET",
        "/v1/status",
        &[
            "-H",
            auth,
            "--cert",
            "stranger.pem",
            "--key",
            "stranger.key",
        ],
    );
    assert!(stranger.starts_with("000 "), "{stranger}");
}

/// The dashboard over TLS: `bulwark dashboard` prints an https link for the name the
/// certificate is valid for, and the session cookie is `Secure` (never sent over plain HTTP).
#[test]
fn the_dashboards_link_is_https_and_its_cookie_secure() {
    let stack = tls_api("");
    let out = Command::new(BULWARK)
        .arg("dashboard")
        .env("BULWARK_STATE_DIR", stack.state_dir())
        .env("BULWARK_CACERT", stack.dir.path().join("ca.pem"))
        .env("BULWARK_SERVER_NAME", "localhost")
        .env_remove("BULWARK_CLIENT_CERT")
        .env_remove("BULWARK_CLIENT_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let link = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let prefix = format!("https://localhost:{}/ui/login#code=", stack.api.port());
    let code = link
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{link}"));
    let body = format!("{{\"code\": \"{code}\"}}");
    let answer = curl(
        &stack,
        "POST",
        "/ui/session",
        &["-i", "-H", "X-Bulwark-Csrf: 1", "--data", &body],
    );
    let cookie = answer
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: bulwark_session=")
        })
        .unwrap_or_else(|| panic!("{answer}"));
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(cookie.contains(part), "{part} missing: {cookie}");
    }
}
