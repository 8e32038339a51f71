//! Issue 18: bulwark's own actions in the audit log, by `bulwark`: a restart after a
//! kill -9, a remediation naming its rule, a chaos experiment, an ejection by the proxy;
//! kept across a restart of `up` and the journal's pruning; and the CEF lines a SIEM
//! ingests.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// The first record of bulwark's own `action` that `pick` accepts, waited for.
fn action_record(stack: &Stack, action: &str, pick: impl Fn(&Value) -> bool) -> Value {
    eventually(
        &format!("a `{action}` record by bulwark"),
        Duration::from_secs(20),
        || {
            stack
                .audit()
                .into_iter()
                .find(|r| r["who"] == "bulwark" && r["action"] == action && pick(r))
        },
    )
}

#[test]
fn restarts_remediations_and_experiments_are_audited_by_bulwark_and_kept() {
    let port = free_port();
    let toml = Demo::new("web")
        .replicas(2)
        .ready_every("200ms")
        .expose(port)
        .with(
            r#"
[journal]
retention = "1s"

[[remediations]]
name = "note-exit"
when = { event = "replica-exited", service = "web" }
do = [{ action = "run", command = ["true"] }]

[[experiments]]
name = "kill-one"
target = { service = "web" }
fault = { type = "kill" }
duration = "1s"
"#,
        )
        .build();
    let mut stack = Stack::start(&toml);
    let web = stack.wait_ready("web", 2);
    let victim = &replicas_in(&web)[0];
    let index = victim["index"].as_u64().unwrap();
    signal(victim["pid"].as_u64().unwrap() as u32, libc::SIGKILL);

    // The supervisor's restart, with why.
    let target = format!("web/{index}");
    let restart = action_record(&stack, "restart", |r| r["target"] == target);
    assert_eq!(restart["outcome"], "scheduled", "{restart}");
    assert!(
        restart["detail"].as_str().unwrap().contains("signal 9"),
        "{restart}"
    );
    assert!(restart["role"].is_null() && restart.get("method").is_none());
    // The rule the exit triggered, by name.
    let rule = action_record(&stack, "remediation", |r| r["by"] == "rule note-exit");
    assert!(
        ["acted", "done"].contains(&rule["outcome"].as_str().unwrap()),
        "{rule}"
    );
    assert_eq!(rule["target"], target, "{rule}");

    // For people: one line each, with the target, outcome, cause and why.
    let out = stack.cli(&["audit"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.contains("bulwark")
            && l.contains(&format!("restart     {target} scheduled: "))
            && l.contains("signal 9")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("remediation {target} "))
                && l.contains(" by rule note-exit: ")),
        "{text}"
    );

    // A chaos experiment: its start and its end, by the experiment.
    stack.wait_ready("web", 2);
    let out = stack.cli(&["chaos", "run", "kill-one"]);
    assert!(out.status.success(), "{out:?}");
    let by = |r: &Value| r["by"] == "experiment kill-one";
    let started = action_record(&stack, "chaos", |r| by(r) && r["outcome"] == "started");
    assert!(
        started["detail"]
            .as_str()
            .unwrap()
            .contains("trigger manual"),
        "{started}"
    );
    action_record(&stack, "chaos", |r| by(r) && r["outcome"] == "ended");
    // The API call that started it is there too, by its token.
    let records = stack.audit();
    assert!(
        records.iter().any(|r| r["who"] == "owner"
            && r["path"]
                .as_str()
                .unwrap()
                .starts_with("/v1/chaos/run/kill-one")),
        "{records:#?}"
    );

    // A restart of `up` (the journal pruned at its opening: retention 1s) keeps them all.
    std::thread::sleep(Duration::from_millis(1100));
    stack.restart();
    let after = stack.audit();
    for r in &records {
        assert!(after.contains(r), "lost in the restart: {r}");
    }
}

#[test]
fn an_ejection_and_its_readmission_are_audited_and_the_log_reads_as_cef() {
    let port = free_port();
    let toml = Demo::new("web")
        .replicas(3)
        .ready_every("200ms")
        .expose(port)
        .with(
            r#"
balance = "round-robin"
[services.web.expose.retries]
on = ["connect-failure", "reset", "5xx"]
attempts = 3
[services.web.expose.outlier]
consecutive_5xx = 3
base_ejection = "500ms"
max_ejection_percent = 100
"#,
        )
        .build();
    let stack = Stack::start(&toml);
    let web = stack.wait_ready("web", 3);
    let replica = replicas_in(&web)
        .iter()
        .find(|r| r["index"] == 0)
        .map(|r| -> SocketAddr { format!("127.0.0.1:{}", r["port"]).parse().unwrap() })
        .unwrap();
    let fault = |path: &str| assert_eq!(get(replica, path).0, 200, "{path}");
    fault("/fault/status?code=503&ratio=1");
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ejected = eventually("replica 0 ejected", Duration::from_secs(15), || {
        get(proxy, "/");
        stack
            .audit()
            .into_iter()
            .find(|r| r["action"] == "eject" && r["target"] == "web/0")
    });
    assert_eq!(ejected["who"], "bulwark");
    assert_eq!(ejected["by"], "outlier detection");
    assert!(
        ejected["detail"].as_str().unwrap().contains("5xx"),
        "{ejected}"
    );
    fault("/fault/reset");
    eventually("replica 0 readmitted", Duration::from_secs(15), || {
        get(proxy, "/");
        stack
            .audit()
            .into_iter()
            .find(|r| r["action"] == "readmit" && r["target"] == "web/0")
    });

    // The same records as CEF lines, one per record, for a SIEM.
    let out = stack.cli(&["audit", "--cef"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let eject = text
        .lines()
        .find(|l| l.contains("|eject|eject web/0|"))
        .unwrap_or_else(|| panic!("no ejection line: {text}"));
    assert!(eject.starts_with("CEF:0|bulwark|bulwark|"), "{eject}");
    assert!(
        eject.contains("suser=bulwark") && eject.contains("cs2=outlier detection"),
        "{eject}"
    );
    assert_eq!(text.lines().count(), stack.audit().len());
}

#[test]
fn a_restart_for_a_failed_liveness_probe_says_so() {
    let port = free_port();
    let stack = Stack::start(&crate::proxy::demo_stack(port, 1));
    let web = stack.wait_ready("web", 1);
    let replica = &replicas_in(&web)[0];
    let own: SocketAddr = format!("127.0.0.1:{}", replica["port"]).parse().unwrap();
    assert_eq!(get(own, "/fault/hang").0, 200);
    let target = format!("web/{}", replica["index"]);
    let restart = action_record(&stack, "restart", |r| r["target"] == target);
    assert!(
        restart["detail"].as_str().unwrap().contains("liveness"),
        "{restart}"
    );
    // The stop that came before it, with the same reason.
    let stop = action_record(&stack, "stop", |r| r["target"] == target);
    assert!(
        stop["detail"].as_str().unwrap().contains("liveness"),
        "{stop}"
    );
}
