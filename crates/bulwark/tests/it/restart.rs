//! Issue 2, acceptance 3 and 4: crash-loop backoff and restart policies.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

#[test]
fn crash_loop_backs_off_within_bounds_and_spares_other_services() {
    let port = free_port();
    let bad = r#"
[services.bad]
run = ["sh", "-c", "echo boom-$BULWARK_INDEX >&2; exit 3"]
[services.bad.backoff]
initial = "100ms"
max = "800ms"
"#;
    let web = Demo::new("web").ready_every("200ms").expose(port).build();
    let toml = format!("{bad}{web}");
    let stack = Stack::start(&toml);
    let bad = stack.wait_service("bad", "6 restarts", Duration::from_secs(30), |s| {
        s["replicas"][0]["restarts"].as_u64() >= Some(6)
    });
    let r = &bad["replicas"][0];
    // crash-looping is visible with the last exit and stderr tail
    let bad = if r["crash_looping"] == true {
        bad
    } else {
        stack.wait_service("bad", "crash-looping", Duration::from_secs(10), |s| {
            s["replicas"][0]["crash_looping"] == true
        })
    };
    let r = &bad["replicas"][0];
    assert_eq!(r["last_exit"]["code"], 3, "{r}");
    assert!(
        r["stderr_tail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "boom-0"),
        "{r}"
    );
    assert_eq!(r["state"], "crash-looping");

    let events = stack.events();
    let delays: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "restart_scheduled" && e["service"] == "bad")
        .map(|e| e["delay_ms"].as_u64().unwrap())
        .collect();
    assert!(delays.len() >= 6, "{delays:?}");
    assert!(
        delays.iter().all(|d| (100..=800).contains(d)),
        "within [initial, max]: {delays:?}"
    );
    assert!(
        delays[0] < delays[1] && delays[1] < delays[2] && delays[2] < delays[3],
        "growing: {delays:?}"
    );
    assert!(
        delays[4..].iter().all(|&d| d >= 640),
        "stays near the maximum: {delays:?}"
    );
    let looping: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "crash_looping")
        .collect();
    assert_eq!(
        looping.len(),
        1,
        "one event when it starts looping: {looping:?}"
    );
    assert_eq!(looping[0]["service"], "bad");

    // the healthy service is untouched
    let web = stack.wait_ready("web", 1);
    assert_eq!(web["replicas"][0]["restarts"], 0);
    assert_eq!(
        get(format!("127.0.0.1:{port}").parse().unwrap(), "/").0,
        200
    );
}

#[test]
fn restart_policies_and_exit_code_rules() {
    // (name, restart, command, rules, should restart)
    let cases = [
        ("always-exit0", "always", "exit 0", "", true),
        ("always-signal", "always", "kill -9 $$", "", true),
        ("onfailure-exit0", "on-failure", "exit 0", "", false),
        ("onfailure-exit1", "on-failure", "exit 1", "", true),
        ("onfailure-signal", "on-failure", "kill -9 $$", "", true),
        ("never-exit1", "never", "exit 1", "", false),
        ("never-signal", "never", "kill -9 $$", "", false),
        (
            "rule-stop-on-3",
            "always",
            "exit 3",
            "{ exit_codes = [3], action = \"stop\" }",
            false,
        ),
        (
            "rule-restart-on-0",
            "never",
            "exit 0",
            "{ exit_codes = [0], action = \"restart\" }",
            true,
        ),
    ];
    let mut toml = String::new();
    for (name, restart, cmd, rule, _) in &cases {
        toml.push_str(&format!(
            "[services.{name}]\nrun = [\"sh\", \"-c\", \"sleep 0.2; {cmd}\"]\nrestart = \"{restart}\"\n"
        ));
        if !rule.is_empty() {
            toml.push_str(&format!("restart_rules = [{rule}]\n"));
        }
        toml.push_str(&format!(
            "[services.{name}.backoff]\ninitial = \"50ms\"\nmax = \"100ms\"\n\n"
        ));
    }
    let stack = Stack::start(&toml);
    for (name, _, _, _, restarts) in &cases {
        if *restarts {
            stack.wait_service(name, "restarted twice", Duration::from_secs(30), |s| {
                s["replicas"][0]["restarts"].as_u64() >= Some(2)
            });
        }
    }
    for (name, _, cmd, _, restarts) in &cases {
        let r = stack.service(name)["replicas"][0].clone();
        if *restarts {
            continue;
        }
        assert_eq!(r["state"], "exited", "{name}: {r}");
        assert_eq!(r["restarts"], 0, "{name}: {r}");
        assert!(r["pid"].is_null(), "{name}: {r}");
        if cmd.starts_with("kill") {
            assert_eq!(r["last_exit"]["signal"], 9, "{name}: {r}");
        }
    }
    let done: Vec<String> = stack
        .events()
        .iter()
        .filter(|e| e["type"] == "replica_done")
        .map(|e| e["service"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(done.len(), 4, "{done:?}");
}

#[test]
fn concurrent_restarts_are_limited_stack_wide() {
    let toml = r#"
[supervisor]
max_concurrent_restarts = 1

[services.slow]
run = ["{bulwark}", "demo", "--port", "{port}", "--startup-delay", "600ms"]
replicas = 3
[services.slow.backoff]
initial = "50ms"
max = "100ms"
[services.slow.startup]
http = "/healthz"
period = "50ms"
failure_threshold = 200
"#;
    let stack = Stack::start(toml);
    let svc = stack.wait_ready("slow", 3);
    let after = stack.events().last().unwrap()["seq"].as_u64().unwrap();
    for pid in replica_pids(&svc) {
        signal(pid, libc::SIGKILL);
    }
    stack.wait_service(
        "slow",
        "all restarted and ready",
        Duration::from_secs(60),
        |s| {
            replicas_in(s)
                .iter()
                .all(|r| r["ready"] == true && r["restarts"] == 1)
        },
    );
    // With one permit, a restarted replica's startup (started → running) never overlaps
    // another's.
    let events: Vec<Value> = stack
        .events()
        .into_iter()
        .filter(|e| e["seq"].as_u64().unwrap() > after)
        .collect();
    let mut spans = vec![];
    for i in 0..3u64 {
        let at = |ty: &str| {
            events
                .iter()
                .find(|e| e["type"] == ty && e["index"] == i)
                .unwrap_or_else(|| panic!("{ty} {i}"))["seq"]
                .as_u64()
                .unwrap()
        };
        spans.push((at("replica_started"), at("replica_running")));
    }
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 < w[1].0, "startups overlap: {spans:?}");
    }
}
