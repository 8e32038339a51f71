//! `[services.NAME.expose]` policies: every key, defaults, and located errors.

use std::path::Path;
use std::time::Duration;

use spec::RetryCondition::{ConnectFailure, PerTryTimeout, Reset, Status5xx};
use spec::{
    Balance, Direction, FaultAction, HashOn, Protocol, RateKey, RouteMatch, Stack, ToxicKind,
};

fn parse(src: &str) -> Result<Stack, String> {
    spec::parse(src, Path::new("stack.toml")).map_err(|e| e.to_string())
}

const HEAD: &str = "[services.web]\nrun = [\"x\"]\n[services.v2]\nrun = [\"x\"]\n[services.v2.expose]\nlisten = \"127.0.0.1:9001\"\n";

#[test]
fn defaults_are_the_documented_ones() {
    let s = parse(&format!(
        "{HEAD}[services.web.expose]\nlisten = \"127.0.0.1:9000\"\n"
    ))
    .unwrap();
    let e = s.service("web").unwrap().expose.clone().unwrap();
    assert_eq!(e.protocol, Protocol::Http);
    assert_eq!(e.balance, Balance::P2c);
    assert_eq!(e.retries.attempts, 2);
    assert!(
        e.retries.retries_on(ConnectFailure)
            && e.retries.retries_on(Reset)
            && !e.retries.retries_on(Status5xx)
    );
    assert_eq!(e.retries.budget_percent, 20.0);
    assert_eq!(e.timeouts.request, Duration::from_secs(15));
    assert!(e.outlier.enabled);
    assert_eq!(e.outlier.consecutive_5xx, 5);
    assert_eq!(e.limits.max_inflight, 1024);
    assert!(
        e.rate_limit.is_none() && e.hedge.is_none() && e.faults.is_empty() && e.routes.is_empty()
    );
    assert_eq!(e.request_id_header, "x-request-id");
}

#[test]
fn every_policy_key() {
    let src = format!(
        r#"{HEAD}[services.web.expose]
listen = "127.0.0.1:9000"
balance = "hash"
hash_on = "header:X-User"
slow_start = "5s"
upstream = "http2"
[services.web.expose.timeouts]
connect = "200ms"
request = "3s"
[services.web.expose.retries]
attempts = 3
on = ["connect-failure", "per-try-timeout", "status"]
statuses = [503]
per_try_timeout = "300ms"
methods = "all"
[services.web.expose.hedge]
percentile = 90
[services.web.expose.outlier]
consecutive_5xx = 3
restart_ejected = true
[services.web.expose.limits]
max_inflight = 10
queue = 0
[services.web.expose.rate_limit]
rate = 50
key = "client-address"
[[services.web.expose.faults]]
percent = 10
abort = 503
[[services.web.expose.faults]]
header = "x-delay-me"
delay = "100ms"
[[services.web.expose.routes]]
to = "v2"
header = "x-canary: 1"
[[services.web.expose.routes]]
to = "v2"
weight = 10
"#
    );
    let s = parse(&src).unwrap();
    let e = s.service("web").unwrap().expose.clone().unwrap();
    assert_eq!(e.balance, Balance::Hash(HashOn::Header("x-user".into())));
    assert_eq!(e.slow_start, Duration::from_secs(5));
    assert!(e.upstream_http2);
    assert_eq!(e.timeouts.connect, Duration::from_millis(200));
    assert_eq!(e.retries.attempts, 3);
    assert!(e.retries.retries_on(PerTryTimeout) && !e.retries.retries_on(Reset));
    assert_eq!(e.retries.statuses, vec![503]);
    assert!(e.retries.all_methods);
    assert_eq!(e.hedge.unwrap().percentile, 90.0);
    assert!(e.outlier.restart_ejected);
    assert_eq!((e.limits.max_inflight, e.limits.queue), (10, 0));
    let rl = e.rate_limit.unwrap();
    assert_eq!(
        (rl.rate, rl.burst, rl.key),
        (50.0, 50, RateKey::ClientAddress)
    );
    assert_eq!(e.faults[0].action, FaultAction::Abort(503));
    assert_eq!(e.faults[1].header.as_deref(), Some("x-delay-me"));
    assert_eq!(e.faults[1].percent, 100.0);
    assert_eq!(
        e.routes[0].matcher,
        RouteMatch::Header {
            name: "x-canary".into(),
            value: "1".into()
        }
    );
    assert_eq!(e.routes[1].matcher, RouteMatch::Weight(10.0));
}

#[test]
fn tcp_with_toxics() {
    let src = format!(
        "{HEAD}[services.web.expose]\nlisten = \"127.0.0.1:9000\"\nprotocol = \"tcp\"\n\
         [[services.web.expose.toxics]]\ntype = \"latency\"\nlatency = \"50ms\"\ntoxicity = 0.5\ndirection = \"upstream\"\n\
         [[services.web.expose.toxics]]\ntype = \"limit-data\"\nbytes = 10\n"
    );
    let e = parse(&src)
        .unwrap()
        .service("web")
        .unwrap()
        .expose
        .clone()
        .unwrap();
    assert_eq!(e.protocol, Protocol::Tcp);
    assert_eq!(e.toxics.len(), 2);
    assert_eq!(
        e.toxics[0].kind,
        ToxicKind::Latency {
            latency: Duration::from_millis(50),
            jitter: Duration::ZERO
        }
    );
    assert_eq!(
        (e.toxics[0].toxicity, e.toxics[0].direction),
        (0.5, Direction::Upstream)
    );
    assert_eq!(e.toxics[1].kind, ToxicKind::LimitData { bytes: 10 });
}

#[test]
fn policy_errors_are_located() {
    let src = format!(
        r#"{HEAD}[services.web.expose]
listen = "127.0.0.1:9000"
balance = "hash"
[services.web.expose.retries]
attempts = 0
on = ["conect-failure"]
[services.web.expose.outlier]
consecutive_5xxx = 3
[[services.web.expose.faults]]
percent = 150
abort = 503
[[services.web.expose.routes]]
to = "v3"
weight = 5
"#
    );
    assert_eq!(
        parse(&src).unwrap_err(),
        "stack.toml:7:1: error: [services.web.expose]: balance = \"hash\" needs `hash_on`: \"header:NAME\", \"cookie:NAME\" or \"client-address\"\n\
         stack.toml:11:12: error: `attempts` must be between 1 and 10, found 0\n\
         stack.toml:12:7: error: elements of `on` must be \"connect-failure\", \"reset\", \"per-try-timeout\", \"5xx\", \"gateway-error\" or \"status\", found \"conect-failure\"; did you mean \"connect-failure\"?\n\
         stack.toml:14:1: error: unknown field `consecutive_5xxx` in [services.web.expose.outlier]; did you mean `consecutive_5xx`?\n\
         stack.toml:16:11: error: `percent` must be between 0 and 100 (percent), found 150\n\
         stack.toml:19:6: error: route `to` names unknown service `v3`; services are `v2`"
    );
}

/// `statuses` without `on = [.., "status"]` retried nothing the docs promised (and the
/// proxy used to retry them anyway); `status` without `statuses` retries nothing.
#[test]
fn statuses_and_the_status_condition_go_together() {
    let cases = [
        (
            "on = [\"5xx\"]\nstatuses = [429]\n",
            "stack.toml:11:12: error: `statuses` are retried only with \"status\" in `on`; add it: on = [.., \"status\"]",
        ),
        (
            "on = [\"reset\", \"status\"]\n",
            "stack.toml:10:6: error: `on` has \"status\" but `statuses` lists no code; add them, e.g. statuses = [503]",
        ),
    ];
    for (retries, want) in cases {
        let src = format!(
            "{HEAD}[services.web.expose]\nlisten = \"127.0.0.1:9000\"\n[services.web.expose.retries]\n{retries}"
        );
        assert_eq!(parse(&src).unwrap_err(), want, "{retries}");
    }
    let ok = format!(
        "{HEAD}[services.web.expose]\nlisten = \"127.0.0.1:9000\"\n[services.web.expose.retries]\non = [\"status\"]\nstatuses = [429]\n"
    );
    let retries = parse(&ok)
        .unwrap()
        .service("web")
        .unwrap()
        .expose
        .clone()
        .unwrap()
        .retries;
    assert!(retries.retries_on(spec::RetryCondition::Status));
    assert_eq!(retries.statuses, vec![429]);
}

/// Parses `HEAD` with `[services.web.expose]` ending in `keys`, as `stack.toml` in `dir`
/// (where relative files are read); errors with `dir` shown as `DIR`.
fn parse_in(dir: &Path, keys: &str) -> Result<Stack, String> {
    let src = format!("{HEAD}[services.web.expose]\nlisten = \"127.0.0.1:9000\"\n{keys}");
    spec::parse(&src, &dir.join("stack.toml"))
        .map_err(|e| e.to_string().replace(&dir.display().to_string(), "DIR"))
}

/// The expose settings of `web`.
fn web_expose(s: &Stack) -> spec::Expose {
    s.service("web").unwrap().expose.clone().unwrap()
}

#[test]
fn tls_reads_its_files_relative_to_the_stack_file_and_names_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    let pem = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n";
    std::fs::write(dir.path().join("web.pem"), pem).unwrap();
    std::fs::write(dir.path().join("web.key"), key).unwrap();
    std::fs::write(dir.path().join("empty.pem"), "nothing here\n").unwrap();
    let load = |tls: &str| parse_in(dir.path(), tls);
    let s = load("tls = { certificates = [{ cert = \"web.pem\", key = \"web.key\" }] }\n").unwrap();
    let tls = web_expose(&s).tls.unwrap();
    assert_eq!(tls.certificates[0].cert, dir.path().join("web.pem"));
    assert_eq!(tls.certificates[0].key, dir.path().join("web.key"));
    assert_eq!(tls.min_version, spec::TlsVersion::Tls12);
    assert_eq!(
        load("tls = { certificates = [{ cert = \"gone.pem\", key = \"empty.pem\" }] }\n")
            .unwrap_err(),
        "DIR/stack.toml:9:34: error: [[services.web.expose.tls.certificates]]: DIR/gone.pem: \
         cannot read it: No such file or directory (os error 2)\n\
         DIR/stack.toml:9:52: error: [[services.web.expose.tls.certificates]]: DIR/empty.pem: \
         no private key in it (a PEM block `-----BEGIN PRIVATE KEY-----`)"
    );
    assert_eq!(
        load("tls = { certificates = [{ cert = \"web.pem\", key = \"web.key\" }], client_verify = \"optional\" }\n")
            .unwrap_err(),
        "DIR/stack.toml:9:81: error: `client_verify` needs `client_ca`, the CAs of the client certificates"
    );
    let s = load("tls = { certificates = [{ cert = \"web.pem\", key = \"web.key\" }], client_ca = \"web.pem\" }\n").unwrap();
    let tls = web_expose(&s).tls.unwrap();
    assert_eq!(tls.client_ca, Some(dir.path().join("web.pem")));
    assert_eq!(tls.client_verify, spec::ClientVerify::Required);
    assert_eq!(
        load("tls = { certificates = [] }\n").unwrap_err(),
        "DIR/stack.toml:9:24: error: [services.web.expose.tls] needs at least one certificate in `certificates`"
    );
    // TCP mode terminates TLS too.
    let s = load("protocol = \"tcp\"\ntls = { certificates = [{ cert = \"web.pem\", key = \"web.key\" }] }\n")
        .unwrap();
    let e = web_expose(&s);
    assert_eq!(e.protocol, Protocol::Tcp);
    assert!(e.tls.is_some() && e.passthrough.is_none());
    assert_eq!(
        load("tls = { min_version = \"1.3\" }\n").unwrap_err(),
        "DIR/stack.toml:9:7: error: [services.web.expose.tls] needs `certificates`, e.g. \
         certificates = [{ cert = \"web.pem\", key = \"web.key\" }] (or, in TCP mode, \
         `passthrough = true` to pass TLS through to the replicas)"
    );
}

/// A stack of TCP services passing TLS through, each `(name, listen, tls keys)`.
fn passthrough(services: &[(&str, &str, &str)]) -> Result<Stack, String> {
    let mut src = String::new();
    for (name, listen, tls) in services {
        src.push_str(&format!(
            "[services.{name}]\nrun = [\"x\"]\n[services.{name}.expose]\nprotocol = \"tcp\"\n\
             listen = \"{listen}\"\n[services.{name}.expose.tls]\n{tls}\n"
        ));
    }
    parse(&src)
}

#[test]
fn passthrough_claims_sni_names_and_shares_an_address() {
    let s = passthrough(&[
        (
            "a",
            "127.0.0.1:8443",
            "passthrough = true\nsni = [\"a.example\", \"*.B.example\"]",
        ),
        (
            "b",
            "127.0.0.1:8443",
            "passthrough = true\nsni = [\"x.b.example\"]\ndefault = true",
        ),
        ("c", "127.0.0.1:8444", "passthrough = true"),
    ])
    .unwrap();
    let pass = |n: &str| {
        s.service(n)
            .unwrap()
            .expose
            .clone()
            .unwrap()
            .passthrough
            .unwrap()
    };
    let a = pass("a");
    assert_eq!(
        a.sni,
        vec![
            spec::SniName::Exact("a.example".into()),
            spec::SniName::Wildcard(".b.example".into())
        ]
    );
    assert!(!a.default);
    assert!(pass("b").default);
    // Alone on its address without `sni`: it takes every name.
    assert!(pass("c").default && pass("c").sni.is_empty());
    assert!(
        s.service("a")
            .unwrap()
            .expose
            .clone()
            .unwrap()
            .tls
            .is_none()
    );
}

#[test]
fn one_name_or_two_defaults_on_one_address_are_refused_where_written() {
    let err = passthrough(&[
        (
            "a",
            "127.0.0.1:8443",
            "passthrough = true\nsni = [\"a.example\", \"*.b.example\"]",
        ),
        (
            "b",
            "127.0.0.1:8443",
            "passthrough = true\nsni = [\"A.example\"]\ndefault = true",
        ),
        ("c", "127.0.0.1:8443", "passthrough = true"),
    ])
    .unwrap_err();
    assert_eq!(
        err,
        "stack.toml:16:7: error: SNI name `a.example` on 127.0.0.1:8443 is already claimed by \
         service `a`; each name goes to one service of an address\n\
         stack.toml:23:1: error: service `b` is already the default of 127.0.0.1:8443 (it takes \
         hellos without SNI or with a name nobody claims); one service of an address may be: \
         give this one `sni` names, or `default = false`"
    );
    // A service that does not pass TLS through cannot share the address.
    let err = passthrough(&[
        (
            "a",
            "127.0.0.1:8443",
            "passthrough = true\nsni = [\"a.example\"]",
        ),
        ("b", "127.0.0.1:8443", "certificates = []"),
    ])
    .unwrap_err();
    assert!(
        err.contains("stack.toml:13:10: error: `listen` address 127.0.0.1:8443 is already exposed by service `a` (TCP services share an address only when each passes TLS through by SNI"),
        "{err}"
    );
    // Nor one on every interface of the same port.
    let err = passthrough(&[
        (
            "a",
            "127.0.0.1:8443",
            "passthrough = true\nsni = [\"a.example\"]",
        ),
        (
            "b",
            "0.0.0.0:8443",
            "passthrough = true\nsni = [\"b.example\"]",
        ),
    ])
    .unwrap_err();
    assert_eq!(
        err,
        "stack.toml:13:10: error: `listen` address 0.0.0.0:8443 clashes with 127.0.0.1:8443, exposed by service `a`"
    );
}

#[test]
fn passthrough_refuses_the_keys_of_termination_and_http() {
    let err = passthrough(&[(
        "a",
        "127.0.0.1:8443",
        "passthrough = true\ncertificates = [{ cert = \"a.pem\", key = \"a.key\" }]\nclient_verify = \"optional\"",
    )])
    .unwrap_err();
    assert_eq!(
        err,
        "stack.toml:8:16: error: [services.a.expose.tls]: `certificates` cannot be used with \
         `passthrough = true`: the TLS is passed through untouched, and the replicas hold the \
         certificates and end it; remove `certificates`, or `passthrough` to terminate TLS in \
         the proxy\n\
         stack.toml:9:17: error: [services.a.expose.tls]: `client_verify` cannot be used with \
         `passthrough = true`: the TLS is passed through untouched, and the replicas hold the \
         certificates and end it; remove `client_verify`, or `passthrough` to terminate TLS in \
         the proxy"
    );
    let err = parse(
        "[services.a]\nrun = [\"x\"]\n[services.a.expose]\nlisten = \"127.0.0.1:8443\"\n\
         [services.a.expose.tls]\npassthrough = true\n",
    )
    .unwrap_err();
    assert_eq!(
        err,
        "stack.toml:6:15: error: [services.a.expose.tls]: `passthrough = true` needs protocol = \
         \"tcp\": an HTTP listener must terminate TLS to read requests"
    );
    let err = passthrough(&[(
        "a",
        "127.0.0.1:8443",
        "certificates = []\nsni = [\"a.example\"]",
    )])
    .unwrap_err();
    assert!(
        err.contains(
            "stack.toml:8:7: error: [services.a.expose.tls]: `sni` applies with `passthrough = true`"
        ),
        "{err}"
    );
    let err = passthrough(&[(
        "a",
        "127.0.0.1:8443",
        "passthrough = true\nsni = [\"10.0.0.1\", \"a.*.example\"]",
    )])
    .unwrap_err();
    assert!(err.contains("stack.toml:8:8: error: "), "{err}");
    assert!(err.contains("\"10.0.0.1\""), "{err}");
    let err =
        passthrough(&[("a", "127.0.0.1:8443", "passthrough = true\ndefault = false")]).unwrap_err();
    assert!(
        err.contains("with neither `sni` nor `default = true` this service takes no connection"),
        "{err}"
    );
}

#[test]
fn upstream_tls_needs_a_ca_or_says_it_skips_verification_and_a_key_with_its_cert() {
    let dir = tempfile::tempdir().unwrap();
    let pem = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
    std::fs::write(dir.path().join("ca.pem"), pem).unwrap();
    let load = |tls: &str| parse_in(dir.path(), &format!("upstream_tls = {{ {tls} }}\n"));
    let s = load("ca = \"ca.pem\", server_name = \"replica.test\"").unwrap();
    let t = web_expose(&s).upstream_tls.unwrap();
    assert_eq!(t.ca, Some(dir.path().join("ca.pem")));
    assert_eq!(t.server_name.as_deref(), Some("replica.test"));
    assert!(!t.insecure && t.client.is_none());
    let t = load("insecure_skip_verify = true").unwrap();
    assert!(web_expose(&t).upstream_tls.unwrap().insecure);
    assert_eq!(
        load("server_name = \"replica.test\"").unwrap_err(),
        "DIR/stack.toml:9:16: error: [services.web.expose.upstream_tls] needs `ca` (the CAs of \
         the replicas' certificates) or `insecure_skip_verify = true`"
    );
    assert_eq!(
        load("ca = \"ca.pem\", cert = \"ca.pem\"").unwrap_err(),
        "DIR/stack.toml:9:16: error: [services.web.expose.upstream_tls] needs both `cert` and `key`, or neither"
    );
    assert!(
        load("ca = \"ca.pem\", insecure_skip_verify = true")
            .unwrap_err()
            .contains("`insecure_skip_verify = true` verifies nothing, so `ca` would be unused")
    );
    assert!(
        load("ca = \"ca.pem\", server_name = \"not a name\"")
            .unwrap_err()
            .contains("`server_name` must be a DNS name or an IP address")
    );
}

#[test]
fn auth_defaults_fail_closed_and_forward_credentials() {
    let s = parse(&format!(
        "{HEAD}[services.web.expose]\nlisten = \"127.0.0.1:9000\"\n\
         [services.web.expose.auth]\nurl = \"http://127.0.0.1:9002/check?x=1\"\n"
    ))
    .unwrap();
    let a = web_expose(&s).auth.unwrap();
    assert_eq!(a.url.to_string(), "http://127.0.0.1:9002/check?x=1");
    assert_eq!(a.timeout, Duration::from_secs(1));
    assert_eq!(a.forward_headers, ["authorization", "cookie"]);
    assert!(a.upstream_headers.is_empty());
    assert_eq!(a.on_error, spec::AuthFailure::Deny);
    assert!(
        web_expose(
            &parse(&format!(
                "{HEAD}[services.web.expose]\nlisten = \"127.0.0.1:9000\"\n"
            ))
            .unwrap()
        )
        .auth
        .is_none()
    );
}

#[test]
fn auth_keys_are_checked_with_the_reason() {
    let load = |keys: &str| {
        parse(&format!(
            "{HEAD}[services.web.expose]\nlisten = \"127.0.0.1:9000\"\n[services.web.expose.auth]\n{keys}"
        ))
    };
    let a = load(
        "url = \"http://auth.internal:80/\"\ntimeout = \"250ms\"\non_error = \"allow\"\n\
         forward_headers = [\"Authorization\", \"X-Api-Key\"]\nupstream_headers = [\"X-User\"]\n",
    )
    .unwrap();
    let a = web_expose(&a).auth.unwrap();
    assert_eq!(a.on_error, spec::AuthFailure::Allow);
    assert_eq!(a.forward_headers, ["authorization", "x-api-key"]);
    assert_eq!(a.upstream_headers, ["x-user"]);
    assert_eq!(a.timeout, Duration::from_millis(250));
    for (keys, error) in [
        (
            "timeout = \"1s\"\n",
            "stack.toml:9:1: error: missing required field `url` in [services.web.expose.auth]; \
             for example url = \"http://127.0.0.1:9001/check\"",
        ),
        (
            "url = \"https://127.0.0.1:9002/\"\n",
            "stack.toml:10:7: error: `url` must be an http:// URL such as \
             \"http://127.0.0.1:9001/check\", found \"https://127.0.0.1:9002/\" (https is not \
             supported yet: reach the auth service over loopback)",
        ),
        (
            "url = \"http://127.0.0.1:9002/\"\non_error = \"open\"\n",
            "stack.toml:11:12: error: `on_error` must be \"deny\" or \"allow\", found \"open\"",
        ),
        (
            "url = \"http://127.0.0.1:9002/\"\ntimeout = \"0s\"\n",
            "stack.toml:11:11: error: `timeout` must be greater than 0",
        ),
        (
            "url = \"http://127.0.0.1:9002/\"\nforward_headers = [\"bad header\"]\n",
            "stack.toml:11:20: error: elements of `forward_headers` must be a header name, found \
             \"bad header\"",
        ),
    ] {
        assert_eq!(load(keys).unwrap_err().trim(), error, "{keys}");
    }
    let tcp = parse(&format!(
        "{HEAD}[services.web.expose]\nlisten = \"127.0.0.1:9000\"\nprotocol = \"tcp\"\n\
         [services.web.expose.auth]\nurl = \"http://127.0.0.1:9002/\"\n"
    ))
    .unwrap_err();
    assert!(
        tcp.contains("[services.web.expose.auth] applies to HTTP only"),
        "{tcp}"
    );
}

/// A FIFO named as a certificate, a key or a fallback body is refused at once, naming the
/// file (a plain read would wait for a writer, hanging `check`, `up` and every reload), and
/// a PEM file past 1 MiB is refused instead of read whole.
#[test]
fn a_fifo_or_a_huge_file_named_by_tls_or_a_fallback_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    nix::unistd::mkfifo(
        &d.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    std::fs::write(d.join("huge.pem"), vec![b'x'; 1024 * 1024 + 1]).unwrap();
    let src = r#"
[services.web]
run = ["web"]
expose.listen = "127.0.0.1:8443"
expose.tls = { certificates = [{ cert = "fifo", key = "huge.pem" }] }
expose.fallback = { body_file = "fifo" }
"#;
    let (tx, rx) = std::sync::mpsc::channel();
    let file = d.join("stack.toml");
    std::thread::spawn(move || {
        let _ = tx.send(spec::parse(src, &file).map(|_| ()).unwrap_err().to_string());
    });
    let errors = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the stack was read without waiting on the FIFO");
    let errors = errors.replace(&d.display().to_string(), "DIR");
    for expected in [
        "DIR/fifo: it is a FIFO, not a regular file",
        "DIR/huge.pem: it holds more than the 1 MiB a PEM file may have",
        "cannot read body_file DIR/fifo: it is a FIFO, not a regular file",
    ] {
        assert!(errors.contains(expected), "{expected} in:\n{errors}");
    }
}
