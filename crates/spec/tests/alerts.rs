//! `[alerts]`: grouping, reminders and sinks.

use std::path::Path;
use std::time::Duration;

use spec::{AlertSink, Alerts};

fn errors(src: &str) -> String {
    match spec::parse(src, Path::new("stack.toml")) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

const SERVICE: &str = "[services.web]\nrun = [\"x\"]\n";

#[test]
fn defaults_to_one_log_sink() {
    let stack = spec::parse(SERVICE, Path::new("stack.toml")).unwrap();
    assert_eq!(stack.alerts, Alerts::default());
    assert_eq!(stack.alerts.sinks, vec![AlertSink::Log]);
    assert_eq!(stack.alerts.group_wait, Duration::from_secs(1));
}

#[test]
fn every_sink_kind() {
    let src = format!(
        "{SERVICE}[alerts]\ngroup_wait = \"100ms\"\nrepeat_interval = \"0s\"\n\
         [[alerts.sinks]]\nwebhook = \"http://127.0.0.1:9/hook\"\nattempts = 2\ntimeout = \"1s\"\n\
         [[alerts.sinks]]\nexec = [\"notify\", \"--urgent\"]\n\
         [[alerts.sinks]]\nlog = true\n"
    );
    let stack = spec::parse(&src, Path::new("stack.toml")).unwrap();
    assert_eq!(stack.alerts.group_wait, Duration::from_millis(100));
    assert_eq!(stack.alerts.repeat_interval, Duration::ZERO);
    assert_eq!(
        stack.alerts.sinks,
        vec![
            AlertSink::Webhook {
                url: "http://127.0.0.1:9/hook".parse().unwrap(),
                timeout: Duration::from_secs(1),
                attempts: 2
            },
            AlertSink::Exec {
                command: vec!["notify".into(), "--urgent".into()],
                timeout: Duration::from_secs(5)
            },
            AlertSink::Log,
        ]
    );
}

#[test]
fn bad_sinks_are_located() {
    let src = format!(
        "{SERVICE}[alerts]\ngroup_wait = \"soon\"\n\
         [[alerts.sinks]]\nwebhook = \"https://example.com/hook\"\n\
         [[alerts.sinks]]\nlog = true\nexec = [\"x\"]\n\
         [[alerts.sinks]]\nwebhok = \"http://127.0.0.1:1/\"\n"
    );
    assert_eq!(
        errors(&src),
        "stack.toml:4:14: error: `group_wait` must be a duration such as \"250ms\" or \"5s\", found \"soon\" (expected number at 0)\n\
         stack.toml:6:11: error: `webhook` must be an http:// URL such as \"http://127.0.0.1:9000/hook\", found \"https://example.com/hook\" (https is not supported yet: put a local relay in front)\n\
         stack.toml:7:1: error: [[alerts.sinks]] needs exactly one of `log = true`, `webhook = \"http://HOST:PORT/PATH\"` or `exec = [\"cmd\", \"arg\"]`, found `log`, `exec`\n\
         stack.toml:10:1: error: [[alerts.sinks]] needs exactly one of `log = true`, `webhook = \"http://HOST:PORT/PATH\"` or `exec = [\"cmd\", \"arg\"]`, found none\n\
         stack.toml:11:1: error: unknown field `webhok` in [[alerts.sinks]]; did you mean `webhook`?"
    );
}
