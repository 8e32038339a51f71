//! Runbooks and webhooks that misbehave: a flood of output, a command that never ends or
//! does not exist, a webhook that never answers, answers 500, or is not there.

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

fn rule() -> Remediation {
    let toml = "[services.web]\nrun = [\"x\"]\n[[remediations]]\nname = \"r\"\n\
                when = { alert = \"page\" }\ndo = [{ action = \"restart-service\" }]";
    spec::parse(toml, std::path::Path::new("t.toml"))
        .expect("valid")
        .remediations
        .remove(0)
}

fn firing() -> Firing {
    Firing {
        rule: "r".into(),
        service: "web".into(),
        replica: None,
        trigger: "page alert web/availability".into(),
        context: json!({ "trigger": "alert", "service": "web", "slo": "availability" }),
        lasting: true,
        alert: None,
    }
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

#[tokio::test]
async fn a_runbook_flooding_its_output_is_kept_to_a_bound_and_finishes() {
    let ctx = json!({ "service": "web" });
    let out = run_command(
        &ctx,
        &sh("head -c 10000000 /dev/zero | tr '\\0' x; echo $BULWARK_SERVICE >&2"),
        Duration::from_secs(20),
    )
    .await
    .expect("succeeds");
    assert!(
        out.len() < 2 * RUNBOOK_OUTPUT + 200,
        "{} bytes kept",
        out.len()
    );
    assert!(out.ends_with("| web"), "{}", &out[out.len() - 20..]);
}

#[tokio::test]
async fn a_runbook_that_never_ends_is_killed_at_its_timeout_and_one_missing_says_so() {
    let started = Instant::now();
    let err = run_command(&json!({}), &sh("sleep 30"), Duration::from_millis(300))
        .await
        .expect_err("killed");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(err.contains("still running after"), "{err}");
    let err = run_command(
        &json!({}),
        &["/nonexistent/runbook".to_owned()],
        Duration::from_secs(1),
    )
    .await
    .expect_err("no such program");
    assert!(err.contains("could not start"), "{err}");
}

#[tokio::test]
async fn a_webhook_that_stalls_fails_or_is_absent_is_a_failure_with_the_reason() {
    // Accepts and never answers.
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url: http::Uri = format!("http://{}/hook", stall.local_addr().unwrap())
        .parse()
        .unwrap();
    let held = tokio::spawn(async move {
        let mut kept = vec![];
        while let Ok((s, _)) = stall.accept().await {
            kept.push(s);
        }
    });
    let started = Instant::now();
    let err = webhook(&rule(), &firing(), 1, &url, Duration::from_millis(300))
        .await
        .expect_err("stalled");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.contains("did not answer within"), "{err}");
    held.abort();

    // Answers 500.
    let five = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url: http::Uri = format!("http://{}/hook", five.local_addr().unwrap())
        .parse()
        .unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = five.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let err = webhook(&rule(), &firing(), 2, &url, Duration::from_secs(2))
        .await
        .expect_err("500");
    assert!(err.contains("answered 500"), "{err}");

    // Nobody listens.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url: http::Uri = format!("http://{}/hook", gone.local_addr().unwrap())
        .parse()
        .unwrap();
    drop(gone);
    let err = webhook(&rule(), &firing(), 3, &url, Duration::from_secs(2))
        .await
        .expect_err("refused");
    assert!(err.starts_with(&url.to_string()), "{err}");
}
