//! Issue 13 on the real binary: a leaking replica replaced before it runs out of memory,
//! remediation rules and their guards (rate limit, cooldown, dry run, approval, the global
//! and disruption budgets), runbooks whose output reaches the incident, and autoscaling
//! under a load step. Time is scaled down: SLO periods of an hour, windows of seconds.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

fn get_json(stack: &Stack, path: &str) -> Value {
    let (code, body) = stack.call("GET", path, "127.0.0.1", true);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// `bulwark actions --json`.
fn actions(stack: &Stack) -> Vec<Value> {
    let out = stack.cli(&["actions", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The decisions of `rule`, oldest first.
fn of_rule(all: &[Value], rule: &str) -> Vec<Value> {
    all.iter().filter(|a| a["rule"] == rule).cloned().collect()
}

fn decisions(all: &[Value], rule: &str) -> Vec<String> {
    of_rule(all, rule)
        .iter()
        .map(|a| a["decision"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The remediation events of the journal, oldest first.
fn remediation_events(stack: &Stack) -> Vec<Value> {
    stack
        .events()
        .into_iter()
        .filter(|e| e["type"] == "remediation")
        .collect()
}

/// An availability SLO of 99 % over 1 h (its fast page pair: 14.4x over 5 s and 0.42 s).
const SLO: &str = r#"
[[services.web.slo]]
name = "availability"
kind = "availability"
objective = 99.0
period = "1h"
[services.web.slo.alerts]
ticket = false
"#;

/// Two demo replicas whose `/` fails from the start (a restart does not cure them), so a
/// page alert fires under load and persists.
fn failing_web(port: u16) -> String {
    Demo::with_args("web", &["--fail-ratio", "1", "--fail-status", "503"])
        .replicas(2)
        .ready_every("200ms")
        .expose(port)
        .with(SLO)
        .build()
}

/// Sends requests to `port` until the page alert fires.
fn page(stack: &Stack, port: u16) -> Load {
    let load = Load::start(&format!("http://127.0.0.1:{port}/"), 50, "60s");
    eventually("the page alert", Duration::from_secs(30), || {
        let alerts = get_json(stack, "/v1/alerts");
        alerts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["severity"] == "page" && a["state"] == "firing")
            .then_some(())
    });
    load
}

#[test]
fn a_leaking_replica_is_replaced_before_it_reaches_its_limit_losing_no_request() {
    // 5 MiB/s from a few MiB: a replica left alone passes 64 MiB within the 14 s watched.
    const LIMIT_MIB: u64 = 64;
    let port = free_port();
    let toml = Demo::with_args("web", &["--leak-rate", "5"])
        .replicas(2)
        .quickstart_probes()
        .expose(port)
        .with(&format!(
            "[services.web.anomaly]\nmemory_limit = \"{LIMIT_MIB}MiB\""
        ))
        .with(
            r#"
# Every replica leaks, so each is replaced every few seconds: more actions than the
# default budget allows in a burst.
[remediation]
budget_burst = 40
[anomaly]
sample_every = "250ms"
window = "10s"
min_samples = 8
horizon = "8s"
"#,
        )
        .build();
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 2);
    let first: Vec<u32> = replica_pids(&stack.service("web"));
    let load = Load::start(&format!("http://127.0.0.1:{port}/"), 100, "15s");
    // Watch every replica's memory while it runs: none may reach the limit.
    let deadline = Instant::now() + Duration::from_secs(14);
    let mut max_rss = 0u64;
    while Instant::now() < deadline {
        let (_, metrics) = stack.call("GET", "/metrics", "127.0.0.1", true);
        for line in metrics.lines() {
            if line.starts_with("bulwark_replica_resident_memory_bytes{")
                && let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())
            {
                max_rss = max_rss.max(v as u64);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let report = load.finish();
    assert_eq!(report["failed"]["total"], 0, "{report}");
    assert!(
        max_rss < LIMIT_MIB << 20,
        "a replica reached {} MiB, the limit is {LIMIT_MIB} MiB: {:#?}",
        max_rss >> 20,
        stack
            .events()
            .iter()
            .filter(|e| {
                matches!(
                    e["type"].as_str(),
                    Some("remediation" | "anomaly_detected" | "replica_ready" | "replica_stopping")
                )
            })
            .map(|e| format!("{} {e}", e["at_ms"]))
            .collect::<Vec<_>>()
    );
    let events = stack.events();
    let anomaly = events
        .iter()
        .find(|e| e["type"] == "anomaly_detected" && e["kind"] == "memory-leak")
        .unwrap_or_else(|| panic!("no memory-leak anomaly: {events:?}"));
    let forecast = anomaly["forecast_ms"].as_u64().expect("a forecast");
    assert!(forecast > 0 && forecast <= 8_000, "{anomaly}");
    assert!(
        anomaly["detail"]
            .as_str()
            .unwrap()
            .contains("forecast to reach the limit"),
        "{anomaly}"
    );
    let done: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["type"] == "remediation"
                && e["rule"] == "default:replace-before-oom"
                && e["decision"] == "done"
        })
        .collect();
    assert!(!done.is_empty(), "no replacement: {events:?}");
    assert!(
        done[0]["detail"]
            .as_str()
            .unwrap()
            .contains("(ready first)"),
        "{}",
        done[0]
    );
    // The original processes are gone, replaced.
    let now: Vec<u32> = replica_pids(&stack.service("web"));
    assert!(first.iter().any(|p| !now.contains(p)), "{first:?} {now:?}");
}

#[test]
fn a_rule_on_a_page_acts_once_then_its_guards_hold_and_dry_run_approve_and_deny_do_what_they_say() {
    let rx = Receiver::start();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let approved = dir.path().join("approved");
    let denied = dir.path().join("denied");
    let toml = format!(
        r#"{web}
[alerts]
group_wait = "100ms"
[[alerts.sinks]]
webhook = "{hook}"
timeout = "2s"

[[remediations]]
name = "restart-on-page"
when = {{ alert = "page", service = "web" }}
do = [{{ action = "restart-service" }}]
limit = 1
per = "1h"
backoff = "0s"
cooldown = "2s"

[[remediations]]
name = "scale-dry"
when = {{ alert = "page", service = "web" }}
do = [{{ action = "scale", to = 4 }}]
mode = "dry-run"

[[remediations]]
name = "approved-runbook"
when = {{ alert = "page", service = "web" }}
do = [{{ action = "run", command = ["touch", "{approved}"] }}]
mode = "approve"

[[remediations]]
name = "denied-runbook"
when = {{ alert = "page", service = "web" }}
do = [{{ action = "run", command = ["touch", "{denied}"] }}]
mode = "approve"
approve_timeout = "1h"
"#,
        web = failing_web(port),
        hook = rx.url,
        approved = approved.display(),
        denied = denied.display(),
    );
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 2);
    let _load = page(&stack, port);

    // Auto: acts once, then the cooldown, then the rate limit hold it back.
    let all = eventually("the rate limit to hold", Duration::from_secs(20), || {
        let all = actions(&stack);
        decisions(&all, "restart-on-page")
            .iter()
            .any(|d| d == "skipped")
            .then_some(all)
            .filter(|all| {
                of_rule(all, "restart-on-page")
                    .iter()
                    .any(|a| a["guard"] == "rate-limit")
            })
    });
    let restart = of_rule(&all, "restart-on-page");
    let acted = restart.iter().filter(|a| a["decision"] == "done").count();
    assert_eq!(acted, 1, "{restart:?}");
    let guards: Vec<&str> = restart.iter().filter_map(|a| a["guard"].as_str()).collect();
    assert!(
        guards.contains(&"cooldown") && guards.contains(&"rate-limit"),
        "{restart:?}"
    );
    // Still firing, still held: no second action a while later.
    std::thread::sleep(Duration::from_secs(2));
    let later = of_rule(&actions(&stack), "restart-on-page");
    // An action's record goes acted -> done under one id.
    assert_eq!(
        later
            .iter()
            .filter(|a| matches!(a["decision"].as_str(), Some("acted" | "done" | "failed")))
            .count(),
        1,
        "{later:?}"
    );

    // Dry run: recorded, nothing scaled.
    assert_eq!(decisions(&all, "scale-dry")[0], "dry-run");
    assert_eq!(stack.service("web")["desired"], 2);

    approve_and_deny(&stack, &rx, &approved, &denied);
    // Every decision is an event too (the journal's).
    let events = remediation_events(&stack);
    for decision in [
        "done", "skipped", "dry-run", "waiting", "approved", "denied",
    ] {
        assert!(
            events.iter().any(|e| e["decision"] == decision),
            "no {decision} event: {events:?}"
        );
    }
}

/// The two `approve` rules wait (in `status`, at the sink); one approved runs, one denied
/// does not, and answering twice is refused.
fn approve_and_deny(
    stack: &Stack,
    rx: &Receiver,
    approved: &std::path::Path,
    denied: &std::path::Path,
) {
    // Approve: waits, is sent to the sinks, shows in status; acts once approved.
    let waiting = |rule: &str| {
        of_rule(&actions(stack), rule)
            .into_iter()
            .find(|a| a["decision"] == "waiting")
            .unwrap_or_else(|| panic!("{rule} does not wait"))
    };
    let (yes, no) = (waiting("approved-runbook"), waiting("denied-runbook"));
    assert!(!approved.exists() && !denied.exists());
    let status = String::from_utf8(stack.cli(&["status"]).stdout).unwrap();
    assert!(
        status.contains(&format!("waiting for approval: #{}", yes["id"])),
        "{status}"
    );
    eventually("the approval at the sink", Duration::from_secs(10), || {
        rx.next(Duration::from_millis(200)).filter(|n| {
            n["alerts"].as_array().unwrap().iter().any(|a| {
                a["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("approval:"))
            })
        })
    });
    let out = stack.cli(&["approve", &yes["id"].to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        "the approved runbook to run",
        Duration::from_secs(10),
        || approved.exists().then_some(()),
    );
    let out = stack.cli(&["deny", &no["id"].to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("denied") && said.contains("nothing was done"),
        "{said}"
    );
    // Answered twice: refused, with the reason.
    let again = stack.cli(&["approve", &no["id"].to_string()]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("does not wait for approval"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(!denied.exists(), "a denied action ran");
    let all = actions(stack);
    let d = decisions(&all, "denied-runbook");
    assert!(d.iter().any(|x| x == "denied"), "{d:?}");
}

#[test]
fn the_global_budget_and_the_disruption_budget_each_stop_an_action_and_say_which() {
    let toml = format!(
        r#"{web}{db}
[remediation]
budget_burst = 1
budget_per_hour = 0.001

[[remediations]]
name = "first"
when = {{ event = "replica-exited", service = "web" }}
do = [{{ action = "run", command = ["true"] }}]

[[remediations]]
name = "second"
when = {{ event = "replica-exited", service = "web" }}
do = [{{ action = "run", command = ["true"] }}]

[[remediations]]
name = "restart-db"
when = {{ event = "replica-exited", service = "db" }}
do = [{{ action = "restart-replica" }}]
"#,
        web = Demo::new("web").ready_every("200ms").build(),
        db = Demo::new("db")
            .replicas(2)
            .with("min_available = 2")
            .ready_every("200ms")
            .build(),
    );
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 1);
    stack.wait_ready("db", 2);
    signal(replica_pids(&stack.service("web"))[0], libc::SIGKILL);
    let all = eventually("both web rules decided", Duration::from_secs(15), || {
        let all = actions(&stack);
        (!of_rule(&all, "first").is_empty() && !of_rule(&all, "second").is_empty()).then_some(all)
    });
    let both: Vec<Value> = [of_rule(&all, "first"), of_rule(&all, "second")].concat();
    assert_eq!(
        both.iter()
            .filter(|a| matches!(a["decision"].as_str(), Some("acted" | "done")))
            .count(),
        1,
        "{both:?}"
    );
    let held = both
        .iter()
        .find(|a| a["decision"] == "skipped")
        .unwrap_or_else(|| panic!("{both:?}"));
    assert_eq!(held["guard"], "global-budget", "{held}");

    signal(replica_pids(&stack.service("db"))[0], libc::SIGKILL);
    let db = eventually("the db rule decided", Duration::from_secs(15), || {
        of_rule(&actions(&stack), "restart-db").into_iter().next()
    });
    assert_eq!(db["decision"], "skipped", "{db}");
    assert_eq!(db["guard"], "disruption-budget", "{db}");
    assert!(
        db["detail"].as_str().unwrap().contains("min_available = 2"),
        "{db}"
    );
    let human = String::from_utf8(stack.cli(&["actions"]).stdout).unwrap();
    assert!(
        human.contains("skipped by disruption-budget")
            && human.contains("skipped by global-budget"),
        "{human}"
    );
}

#[test]
fn a_runbook_gets_the_alert_and_its_output_reaches_the_incident_a_failing_one_is_not_retried_forever()
 {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx.json");
    let toml = format!(
        r#"{web}
[[remediations]]
name = "runbook"
when = {{ alert = "page", service = "web" }}
do = [{{ action = "run", command = ["sh", "-c", "cat > {ctx}; echo runbook ran for $BULWARK_SERVICE/$BULWARK_SLO"] }}]
limit = 1

[[remediations]]
name = "broken"
when = {{ alert = "page", service = "web" }}
do = [{{ action = "run", command = ["sh", "-c", "echo it broke >&2; exit 3"] }}]
limit = 2
backoff = "500ms"
cooldown = "0s"
"#,
        web = failing_web(port),
        ctx = ctx.display(),
    );
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 2);
    let _load = page(&stack, port);
    let done = eventually("the runbook to finish", Duration::from_secs(15), || {
        of_rule(&actions(&stack), "runbook")
            .into_iter()
            .find(|a| a["decision"] == "done")
    });
    assert!(
        done["detail"]
            .as_str()
            .unwrap()
            .contains("runbook ran for web/availability"),
        "{done}"
    );
    let context: Value = serde_json::from_str(&std::fs::read_to_string(&ctx).unwrap()).unwrap();
    assert_eq!(context["service"], "web");
    assert_eq!(context["slo"], "availability");
    assert_eq!(context["severity"], "page");
    assert_eq!(context["rule"], "runbook");
    let incident = context["incident"]
        .as_u64()
        .expect("the open incident's id");
    let timeline = eventually(
        "the output in the incident",
        Duration::from_secs(10),
        || {
            let inc = get_json(&stack, "/v1/incidents");
            let i = inc["incidents"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["id"] == incident)?
                .clone();
            i["timeline"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| {
                    e["kind"] == "remediation"
                        && e["text"]
                            .as_str()
                            .is_some_and(|t| t.contains("runbook ran for web/availability"))
                })
                .then_some(i)
        },
    );
    assert_eq!(timeline["service"], "web");

    // The failing runbook: reported with its exit and output, twice at most (its limit),
    // while the alert keeps firing.
    std::thread::sleep(Duration::from_secs(5));
    let broken = of_rule(&actions(&stack), "broken");
    let failed: Vec<&Value> = broken
        .iter()
        .filter(|a| a["decision"] == "failed")
        .collect();
    assert!(!failed.is_empty() && failed.len() <= 2, "{broken:?}");
    let detail = failed[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("exit status: 3") && detail.contains("it broke"),
        "{detail}"
    );
    assert!(
        broken.iter().any(|a| a["guard"] == "rate-limit"),
        "{broken:?}"
    );
}

#[test]
fn autoscaling_follows_a_load_step_up_and_back_down_within_bounds_without_flapping() {
    let port = free_port();
    let toml = Demo::with_args("web", &["--cost", "1ms"])
        .ready_every("200ms")
        .expose(port)
        .with(
            r#"[services.web.autoscale]
min = 1
max = 6
request_rate = 100
interval = "1s"
down_window = "6s"
period = "1s"
"#,
        )
        .build();
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 1);
    let url = format!("http://127.0.0.1:{port}/");
    let low = Load::start(&url, 50, "4s").finish();
    assert_eq!(low["failed"]["total"], 0, "{low}");
    assert_eq!(
        stack.service("web")["desired"],
        1,
        "50 req/s needs one replica"
    );
    let step = Instant::now();
    let high = Load::start(&url, 400, "10s");
    let up = stack.wait_service("web", "scaled up", Duration::from_secs(12), |s| {
        s["desired"].as_u64().unwrap_or(0) >= 3
    });
    let took = step.elapsed();
    assert!(took < Duration::from_secs(8), "scaled up after {took:?}");
    assert!(up["autoscale"]["desired"].as_u64().unwrap() <= 6, "{up}");
    let high = high.finish();
    assert!(
        high["failed"]["total"].as_u64().unwrap() * 100 <= high["sent"].as_u64().unwrap_or(4000),
        "{high}"
    );
    let _low = Load::start(&url, 50, "14s");
    let down = stack.wait_service("web", "scaled down", Duration::from_secs(20), |s| {
        s["desired"].as_u64().unwrap_or(9) <= 2
    });
    assert!(down["autoscale"]["target"] == "request_rate", "{down}");
    let human = String::from_utf8(stack.cli(&["status"]).stdout).unwrap();
    assert!(human.contains("autoscale: request_rate"), "{human}");

    // Every decision within bounds, and few of them: up (at most in a few steps) and down.
    let scaled: Vec<Value> = stack
        .events()
        .into_iter()
        .filter(|e| e["type"] == "autoscaled")
        .collect();
    assert!(!scaled.is_empty(), "no autoscaled event");
    for e in &scaled {
        let to = e["to"].as_u64().unwrap();
        assert!((1..=6).contains(&to), "{e}");
        assert!(e["value"].as_f64().is_some() && e["goal"] == 100.0, "{e}");
    }
    assert!(scaled.len() <= 6, "flapping: {scaled:?}");
    // No flapping: the count goes up, then down, never up again after the first decrease.
    let dirs: Vec<bool> = scaled
        .iter()
        .map(|e| e["to"].as_u64() > e["from"].as_u64())
        .collect();
    let first_down = dirs.iter().position(|up| !up).unwrap_or(dirs.len());
    assert!(
        dirs[first_down..].iter().all(|up| !up),
        "up again after going down: {scaled:?}"
    );
}

#[test]
fn the_readme_example_pack_passes_check() {
    let readme = include_str!("../../../../README.md");
    let section = readme
        .split("### Remediation")
        .nth(1)
        .and_then(|s| s.split("### Backups").next())
        .expect("README has a Remediation section");
    let pack = section
        .split("```toml")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("with a TOML example");
    crate::check::check(pack, "");
}

#[test]
fn a_metric_held_beyond_its_bound_ejects_flips_a_switch_and_calls_a_webhook_then_readmits() {
    let rx = Receiver::start();
    let port = free_port();
    let toml = format!(
        r#"{web}
[switches.extras]
doc = "the expensive part of the page"

[[remediations]]
name = "errors-high"
when = {{ metric = "error-ratio", service = "web", above = 50, for = "1s" }}
do = [
  {{ action = "eject", for = "2s" }},
  {{ action = "switch", switch = "extras", state = "off" }},
  {{ action = "webhook", url = "{hook}", timeout = "2s" }},
]
limit = 1
"#,
        web = Demo::with_args("web", &["--fail-ratio", "1", "--fail-status", "500"])
            .replicas(3)
            .ready_every("200ms")
            .expose(port)
            .build(),
        hook = rx.url,
    );
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 3);
    let _load = Load::start(&format!("http://127.0.0.1:{port}/"), 50, "30s");
    let sent = rx
        .next(Duration::from_secs(20))
        .expect("the webhook action's POST");
    assert_eq!(sent["trigger"], "metric", "{sent}");
    assert_eq!(sent["metric"], "error-ratio", "{sent}");
    assert_eq!(sent["rule"], "errors-high", "{sent}");
    assert!(sent["value"].as_f64().unwrap() > 50.0, "{sent}");
    // One replica out of rotation for 2 s, then back.
    let held = stack.wait_service("web", "a replica held out", Duration::from_secs(5), |s| {
        replicas_in(s).iter().any(|r| r["held_out"] == true)
    });
    let index = replicas_in(&held)
        .iter()
        .find(|r| r["held_out"] == true)
        .unwrap()["index"]
        .clone();
    stack.wait_service("web", "the replica back", Duration::from_secs(10), |s| {
        replicas_in(s).iter().all(|r| r["held_out"] == false)
    });
    let events = stack.events();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "replica_readmitted" && e["index"] == index),
        "no readmission of {index}"
    );
    let out = stack.cli(&["switch", "list", "--json"]);
    let switches: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(switches[0]["value"], "off", "{switches}");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "switch_changed" && e["by"] == "remediation errors-high"),
        "the switch change does not name the rule"
    );
    let done = of_rule(&actions(&stack), "errors-high")
        .into_iter()
        .find(|a| a["decision"] == "done")
        .expect("done");
    let detail = done["detail"].as_str().unwrap();
    assert!(
        detail.contains("ejected web/") && detail.contains("switch extras set to off"),
        "{detail}"
    );
}

#[test]
fn the_actions_api_refuses_what_it_cannot_answer_with_the_reason() {
    let stack = Stack::start(&Demo::new("web").build());
    stack.wait_ready("web", 1);
    for (path, code, says) in [
        ("/v1/actions/seven/approve", 400, "not an action id"),
        (
            "/v1/actions/99999999999999999999/approve",
            400,
            "not an action id",
        ),
        ("/v1/actions/7/maybe", 404, "use approve or deny"),
        ("/v1/actions/7/approve", 404, "no remediation action #7"),
        ("/v1/actions/7/deny", 404, "no remediation action #7"),
    ] {
        let (got, body) = stack.call("POST", path, "127.0.0.1", true);
        assert_eq!(got, code, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
    let (got, _) = stack.call("POST", "/v1/actions/1/approve", "127.0.0.1", false);
    assert_eq!(got, 401, "the token is needed");
    let out = stack.cli(&["approve", "12"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no remediation action #12"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = stack.cli(&["actions"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no remediation decision yet"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_crashed_replica_is_covered_by_an_extra_one_while_it_is_down() {
    let port = free_port();
    let toml = Demo::new("web")
        .replicas(2)
        .with("restart = \"never\"")
        .ready_every("200ms")
        .expose(port)
        .with(
            r#"[services.web.autoscale]
min = 2
max = 4
request_rate = 1000
interval = "500ms"
"#,
        )
        .build();
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 2);
    // One replica dies for good (`restart = "never"`): the autoscaler covers it.
    signal(replica_pids(&stack.service("web"))[0], libc::SIGKILL);
    let covered = stack.wait_service("web", "2 ready again", Duration::from_secs(15), |s| {
        s["desired"] == 3 && replicas_in(s).iter().filter(|r| r["ready"] == true).count() == 2
    });
    assert_eq!(covered["autoscale"]["desired"], 3, "{covered}");
    let scaled: Vec<Value> = stack
        .events()
        .into_iter()
        .filter(|e| e["type"] == "autoscaled")
        .collect();
    assert!(
        scaled
            .iter()
            .any(|e| e["reason"] == "failure-cover" && e["from"] == 2 && e["to"] == 3),
        "{scaled:?}"
    );
    // Covered, not growing: the count holds while the dead replica stays down.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stack.service("web")["desired"], 3);
}

#[test]
fn an_incident_resolved_by_a_rule_says_so_and_splits_the_mttr() {
    let port = free_port();
    let toml = format!(
        r#"{web}
[[remediations]]
name = "restart-on-page"
when = {{ alert = "page", service = "web" }}
do = [{{ action = "restart-service" }}]
"#,
        web = Demo::new("web")
            .replicas(2)
            .ready_every("200ms")
            .expose(port)
            .with(SLO)
            .build(),
    );
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 2);
    let _load = Load::start(&format!("http://127.0.0.1:{port}/"), 50, "40s");
    std::thread::sleep(Duration::from_secs(1));
    // A fault a restart cures: the rule's restart ends it, the alert resolves.
    for r in replicas_in(&stack.service("web")) {
        let port = r["port"].as_u64().unwrap();
        let (code, _) = get(
            format!("127.0.0.1:{port}").parse().unwrap(),
            "/fault/status?code=503&ratio=1",
        );
        assert_eq!(code, 200);
    }
    let inc = eventually("the incident resolved", Duration::from_secs(30), || {
        let v = get_json(&stack, "/v1/incidents");
        (v["incidents"][0]["state"] == "resolved").then_some(v)
    });
    let i = &inc["incidents"][0];
    assert_eq!(i["resolved_by"], "restart-on-page", "{i}");
    let r = &inc["reliability"][0];
    assert_eq!(r["automated"], 1, "{r}");
    assert!(r["mttr_automated_ms"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["mttr_manual_ms"].is_null(), "{r}");
    let human = String::from_utf8(stack.cli(&["incidents"]).stdout).unwrap();
    assert!(
        human.contains("resolved by remediation restart-on-page"),
        "{human}"
    );
}
