//! Issue 2, acceptance 8, and the CLI commands that use the API.

use std::time::Duration;

use crate::harness::*;

#[test]
fn api_refuses_missing_token_and_foreign_host() {
    let port = free_port();
    let stack = Stack::start(&crate::proxy::demo_stack(port, 1));
    stack.wait_ready("web", 1);
    // mutating without the token: 401, and nothing changes
    let (code, body) = stack.call(
        "POST",
        "/v1/services/web/scale?replicas=2",
        "127.0.0.1",
        false,
    );
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("Bearer"), "{body}");
    assert_eq!(stack.service("web")["desired"], 1);
    // a wrong token is no better
    let (code, _) = crate::harness::http(
        stack.api,
        "POST /v1/services/web/restart HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer nope\r\n",
    );
    assert_eq!(code, 401);
    // foreign Host header (DNS rebinding): refused even for reads, even with the token
    for host in ["evil.example", "evil.example:7700", "10.1.2.3"] {
        let (code, body) = stack.call("GET", "/v1/status", host, true);
        assert_eq!(code, 403, "{host}: {body}");
        let (code, _) = stack.call("POST", "/v1/services/web/scale?replicas=2", host, true);
        assert_eq!(code, 403, "{host}");
    }
    for host in [
        "localhost",
        &format!("localhost:{}", stack.api.port()),
        "127.0.0.1",
        "[::1]",
    ] {
        assert_eq!(stack.call("GET", "/v1/status", host, true).0, 200, "{host}");
    }
    // with the token: accepted
    let (code, body) = stack.call(
        "POST",
        "/v1/services/web/scale?replicas=2",
        "127.0.0.1",
        true,
    );
    assert_eq!(code, 200, "{body}");
    stack.wait_ready("web", 2);
    // the token file is readable only by its user
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(stack.state_dir().join("token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn cli_status_scale_restart_logs_events_and_metrics() {
    let port = free_port();
    let stack = Stack::start(&crate::proxy::demo_stack(port, 2));
    stack.wait_ready("web", 2);

    let out = stack.cli(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &v["services"][0]["replicas"][0];
    assert_eq!(v["services"][0]["name"], "web");
    for field in ["index", "pid", "port", "state", "ready", "restarts"] {
        assert!(!r[field].is_null(), "status --json has {field}: {r}");
    }
    assert_eq!(r["state"], "running");
    let human = String::from_utf8(stack.cli(&["status"]).stdout).unwrap();
    assert!(human.contains("2/2 ready on 127.0.0.1:"), "{human}");

    let out = stack.cli(&["scale", "web", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "scaled web: 2 -> 3"
    );
    stack.wait_ready("web", 3);
    assert!(stack.cli(&["scale", "web", "1"]).status.success());
    stack.wait_service("web", "scaled down to 1", Duration::from_secs(30), |s| {
        s["replicas"].as_array().unwrap().len() == 1
    });

    let pid = stack.service("web")["replicas"][0]["pid"].as_u64().unwrap();
    assert!(stack.cli(&["restart", "web/0"]).status.success());
    let svc = stack.wait_service("web", "restarted", Duration::from_secs(30), |s| {
        let r = &s["replicas"][0];
        r["ready"] == true && r["pid"].as_u64() != Some(pid)
    });
    assert_eq!(svc["replicas"][0]["restarts"], 1);
    let out = stack.cli(&["restart", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service named \"nope\""));

    // logs: the demo writes a line when a fault changes
    let rport = stack.service("web")["replicas"][0]["port"]
        .as_u64()
        .unwrap();
    get(
        format!("127.0.0.1:{rport}").parse().unwrap(),
        "/fault/slow?ms=1",
    );
    let logs = eventually("a log line", Duration::from_secs(10), || {
        let out = String::from_utf8(stack.cli(&["logs", "web/0"]).stdout).unwrap();
        out.contains("web/0 | ").then_some(out)
    });
    assert!(logs.to_lowercase().contains("slow"), "{logs}");

    let events = String::from_utf8(stack.cli(&["events"]).stdout).unwrap();
    assert!(
        events.contains("scaled") && events.contains("replica_ready"),
        "{events}"
    );

    let (code, metrics) = get(stack.api, "/metrics");
    assert_eq!(code, 200);
    for name in [
        "bulwark_replica_state{",
        "bulwark_replica_restarts_total{service=\"web\",replica=\"0\"} 1",
        "bulwark_probe_results_total{service=\"web\",probe=\"readiness\",result=\"success\"}",
        "bulwark_replica_ready{service=\"web\",replica=\"0\"} 1",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
    assert!(
        !metrics.contains("replica=\"2\""),
        "scaled-away replicas leave no series"
    );
}

/// `bulwark events | head -1`: a reader that goes away ends the command quietly (status 0),
/// never with a panic, also while following.
#[test]
fn cli_output_to_a_closed_pipe_ends_quietly() {
    let port = free_port();
    let stack = Stack::start(&crate::proxy::demo_stack(port, 1));
    stack.wait_ready("web", 1);
    for args in [&["events"][..], &["events", "--follow"], &["status"]] {
        let mut child = std::process::Command::new(BULWARK)
            .args(args)
            .env("BULWARK_STATE_DIR", stack.state_dir())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Close the read end before the command has printed anything.
        drop(child.stdout.take());
        let status = eventually("the command to end", Duration::from_secs(10), || {
            child.try_wait().unwrap()
        });
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(status.success(), "{args:?}: {status}: {stderr}");
    }
}
