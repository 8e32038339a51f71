//! `[services.NAME.expose.fallback]` and `[switches]`: graceful degradation.

mod common;

use std::time::Duration;

use common::{check, valid};
use spec::{FallbackAnswer, Stale, SwitchValue};

#[test]
fn degrade_fallbacks_and_switches_read_with_their_defaults() {
    let stack = valid(
        r#"
[switches.recommendations]
default = "25%"
doc = "the recommendations panel"

[switches.search]

[services.web]
run = ["web"]
expose.listen = "127.0.0.1:8080"
expose.fallback = { body = "down for a moment\n", headers = { Content-Type = "text/plain" }, stale = true }
[[services.web.expose.routes]]
to = "recs"
weight = 100
switch = "recommendations"

[services.recs]
run = ["recs"]
expose.listen = "127.0.0.1:8081"
expose.fallback = { service = "web" }
"#,
    );
    let [recs, search] = &stack.switches[..] else {
        panic!("{:?}", stack.switches)
    };
    assert_eq!(
        (recs.name.as_str(), recs.default, recs.doc.as_str()),
        (
            "recommendations",
            SwitchValue::Percent(25.0),
            "the recommendations panel"
        )
    );
    assert_eq!((search.default, search.doc.as_str()), (SwitchValue::On, ""));
    let web = stack.service("web").unwrap().expose.as_ref().unwrap();
    assert_eq!(web.routes[0].switch.as_deref(), Some("recommendations"));
    let fallback = web.fallback.as_ref().unwrap();
    assert_eq!(
        fallback.answer,
        Some(FallbackAnswer::Static {
            status: 503,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"down for a moment\n".to_vec(),
        })
    );
    assert_eq!(
        fallback.stale,
        Some(Stale {
            max_entries: 1000,
            max_bytes: 16 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
            max_age: Duration::from_secs(3600),
        })
    );
    let recs = stack.service("recs").unwrap().expose.as_ref().unwrap();
    let answer = &recs.fallback.as_ref().unwrap().answer;
    assert_eq!(answer, &Some(FallbackAnswer::Service("web".into())));
}

#[test]
fn a_fallback_body_file_is_read_relative_to_the_stack_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sorry.html"), "<p>sorry</p>").unwrap();
    let src = r#"
[services.web]
run = ["web"]
expose.listen = "127.0.0.1:8080"
expose.fallback = { status = 200, body_file = "sorry.html" }
"#;
    let stack = spec::parse(src, &dir.path().join("stack.toml")).unwrap();
    let expose = stack.services[0].expose.as_ref().unwrap();
    let Some(FallbackAnswer::Static { status, body, .. }) =
        &expose.fallback.as_ref().unwrap().answer
    else {
        panic!("{expose:?}")
    };
    assert_eq!(
        (*status, body.as_slice()),
        (200, b"<p>sorry</p>".as_slice())
    );
}

#[test]
fn a_missing_or_huge_fallback_body_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big"), vec![b'x'; 1024 * 1024 + 1]).unwrap();
    let src = r#"
[services.web]
run = ["web"]
expose.listen = "127.0.0.1:8080"
expose.fallback = { body_file = "missing.html" }

[services.api]
run = ["api"]
expose.listen = "127.0.0.1:8081"
expose.fallback = { body_file = "big" }
"#;
    let errors = spec::parse(src, &dir.path().join("stack.toml"))
        .unwrap_err()
        .to_string();
    let missing = dir.path().join("missing.html");
    let big = dir.path().join("big");
    let expected = format!(
        "DIR/stack.toml:5:33: error: [services.web.expose.fallback]: cannot read body_file {}: \
         No such file or directory (os error 2)\n\
         DIR/stack.toml:10:33: error: [services.api.expose.fallback]: cannot read body_file {}: \
         it holds 1048577 bytes, more than the 1 MiB a fallback body may have",
        missing.display(),
        big.display()
    );
    assert_eq!(
        errors.replace(&dir.path().display().to_string(), "DIR"),
        expected.replace(&dir.path().display().to_string(), "DIR")
    );
}

#[test]
fn a_fallback_to_an_unknown_service_or_itself_is_an_error() {
    check(
        r#"
[services.web]
run = ["web"]
expose.listen = "127.0.0.1:8080"
expose.fallback = { service = "statik" }

[services.static]
run = ["static"]
expose.listen = "127.0.0.1:8081"
expose.fallback = { service = "static" }
"#,
        r#"
        stack.toml:4:31: error: [services.web.expose.fallback]: service = "statik" is not a service of this stack; did you mean `static`?
        stack.toml:9:31: error: [services.static.expose.fallback]: a service cannot be its own fallback
        "#,
    );
}

#[test]
fn a_fallback_needs_one_kind_of_answer() {
    check(
        r#"
[services.web]
run = ["web"]
expose.listen = "127.0.0.1:8080"
expose.fallback = { service = "api", body = "x" }

[services.api]
run = ["api"]
expose.listen = "127.0.0.1:8081"
expose.fallback = { stale_max_entries = 5 }

[services.tcp]
run = ["tcp"]
expose.listen = "127.0.0.1:8082"
expose.protocol = "tcp"
expose.fallback = { body = "x" }
"#,
        r#"
        stack.toml:4:19: error: [services.web.expose.fallback]: `service` forwards elsewhere, so `status`, `headers`, `body` and `body_file` would never be sent; keep one or the other
        stack.toml:9:19: error: [services.api.expose.fallback] gives no answer: add a static one (`status`, `body` or `body_file`), `service = "NAME"`, or `stale = true`
        stack.toml:15:19: error: [services.tcp.expose.fallback] applies to HTTP only (protocol = "tcp")
        "#,
    );
}

#[test]
fn an_unknown_switch_in_a_route_is_an_error_with_its_location() {
    check(
        r#"
[switches.search]

[services.web]
run = ["web"]
expose.listen = "127.0.0.1:8080"
expose.fallback = { body = "x" }
[[services.web.expose.routes]]
to = "api"
weight = 10
switch = "serch"
[[services.web.expose.routes]]
to = "api"
header = "x-beta: 1"
switch = "beta"

[services.api]
run = ["api"]
expose.listen = "127.0.0.1:8081"
[[services.api.expose.routes]]
to = "web"
weight = 1
switch = "search"
"#,
        r#"
        stack.toml:10:10: error: [[services.web.expose.routes]]: unknown switch `serch`; did you mean `search`? Or declare it with a [switches.serch] table
        stack.toml:14:10: error: [[services.web.expose.routes]]: unknown switch `beta`; declare it with a [switches.beta] table
        stack.toml:22:10: error: [[services.api.expose.routes]]: a route with `switch` sends the requests it turns away to the service's fallback; add [services.api.expose.fallback]
        "#,
    );
}

#[test]
fn a_bad_switch_value_or_name_is_an_error() {
    check(
        r#"
[switches.a]
default = "150%"
[switches.b]
default = "maybe"
[switches."no,comma"]

[services.web]
run = ["web"]
"#,
        r#"
        stack.toml:2:11: error: `default` must be "on", "off" or a percentage such as "25%", found "150%" (a percentage is from 0% to 100%)
        stack.toml:4:11: error: `default` must be "on", "off" or a percentage such as "25%", found "maybe"
        stack.toml:5:11: error: invalid switch name `no,comma`: a name starts with an ASCII letter and contains only ASCII letters, digits, `-` and `_`
        "#,
    );
}
