//! Alert routing: groups notices per service for `group_wait`, then hands each group to
//! every sink — log, webhook (JSON POST with retries and backoff) or exec.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::alert::{Alert, AlertState, Notice};

#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    /// How long to wait for more notices of the same service before sending (grouping).
    pub group_wait: Duration,
    pub sinks: Vec<Sink>,
}

/// Where notices go: the stack file's `[[alerts.sinks]]`.
pub use spec::AlertSink as Sink;

/// The JSON body a webhook receives (close to Alertmanager's webhook payload).
#[derive(Debug, Clone, Serialize)]
pub struct Payload {
    pub version: &'static str,
    pub receiver: &'static str,
    /// `firing` if any alert in the group fires, else `resolved`.
    pub status: &'static str,
    pub group: String,
    pub alerts: Vec<PayloadAlert>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PayloadAlert {
    pub status: &'static str,
    pub id: String,
    pub fingerprint: String,
    pub service: String,
    pub name: String,
    pub severity: &'static str,
    pub summary: String,
    pub started_at_ms: u64,
    pub resolved_at_ms: Option<u64>,
}

impl From<&Alert> for PayloadAlert {
    fn from(a: &Alert) -> Self {
        PayloadAlert {
            status: match a.state {
                AlertState::Firing => "firing",
                AlertState::Resolved => "resolved",
            },
            id: a.id.clone(),
            fingerprint: a.fingerprint.clone(),
            service: a.service.clone(),
            name: a.name.clone(),
            severity: a.severity.as_str(),
            summary: a.summary.clone(),
            started_at_ms: a.started_at_ms,
            resolved_at_ms: a.resolved_at_ms,
        }
    }
}

/// Runs the router until the sender side is dropped; sends what is pending then.
pub fn spawn(
    routing: Routing,
    mut rx: mpsc::UnboundedReceiver<Notice>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let mut groups: BTreeMap<String, (Instant, Vec<Alert>)> = BTreeMap::new();
        loop {
            let next = groups.values().map(|(d, _)| *d).min();
            tokio::select! {
                n = rx.recv() => match n {
                    Some(Notice::Firing(a) | Notice::Resolved(a)) => {
                        let deadline = Instant::now() + routing.group_wait;
                        let g = groups.entry(a.service.clone()).or_insert((deadline, vec![]));
                        // Deduplicate within a group: the latest word on an alert wins.
                        g.1.retain(|x| x.id != a.id);
                        g.1.push(a);
                    }
                    None => {
                        for (group, (_, alerts)) in std::mem::take(&mut groups) {
                            deliver(&routing.sinks, &client, group, alerts).await;
                        }
                        return;
                    }
                },
                () = async { sleep_until(next.unwrap_or_else(Instant::now)).await }, if next.is_some() => {
                    let now = Instant::now();
                    let due: Vec<String> = groups.iter().filter(|(_, (d, _))| *d <= now).map(|(k, _)| k.clone()).collect();
                    for group in due {
                        if let Some((_, alerts)) = groups.remove(&group) {
                            let sinks = routing.sinks.clone();
                            let client = client.clone();
                            tokio::spawn(async move { deliver(&sinks, &client, group, alerts).await });
                        }
                    }
                }
            }
        }
    })
}

async fn deliver(
    sinks: &[Sink],
    client: &Client<HttpConnector, Full<Bytes>>,
    group: String,
    alerts: Vec<Alert>,
) {
    let firing = alerts.iter().any(|a| a.state == AlertState::Firing);
    let payload = Payload {
        version: "1",
        receiver: "bulwark",
        status: if firing { "firing" } else { "resolved" },
        group,
        alerts: alerts.iter().map(Into::into).collect(),
    };
    let body = Bytes::from(serde_json::to_vec(&payload).unwrap_or_default());
    for sink in sinks {
        match sink {
            Sink::Log => {
                for a in &payload.alerts {
                    tracing::warn!(alert = %a.fingerprint, status = a.status, summary = %a.summary, "alert");
                }
            }
            Sink::Webhook {
                url,
                timeout,
                attempts,
            } => {
                webhook(client, url, body.clone(), *timeout, *attempts).await;
            }
            Sink::Exec { command, timeout } => exec(command, &body, payload.status, *timeout).await,
        }
    }
}

/// POSTs with retries: 200 ms doubling to 5 s (jittered), a 2xx answer ends it.
async fn webhook(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &http::Uri,
    body: Bytes,
    timeout: Duration,
    attempts: u32,
) {
    let backoff = policy::Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(5),
        multiplier: 2.0,
        jitter: 0.2,
    };
    // Credentials in the URL (userinfo, a `?token=`) stay out of the logs.
    let shown = spec::redacted_url(url);
    for attempt in 0..attempts.max(1) {
        let req = http::Request::post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "bulwark-alerts")
            .body(Full::new(body.clone()));
        let Ok(req) = req else {
            tracing::error!(url = %shown, "bad webhook URL");
            return;
        };
        let outcome = tokio::time::timeout(timeout, async {
            let res = client.request(req).await.map_err(|e| e.to_string())?;
            let status = res.status();
            let _ = res.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("status {status}"))
            }
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
        match outcome {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(url = %shown, attempt = attempt + 1, error = %e, "alert webhook failed");
                tokio::time::sleep(backoff.delay(attempt, rand::random::<f64>())).await;
            }
        }
    }
    tracing::error!(url = %shown, attempts, "alert webhook gave up on this notification");
}

/// Output of an exec sink kept for the log when it fails.
const EXEC_CAPTURE: usize = 1024;

/// Runs the sink command with the payload on its stdin, through `launch::run_exec`: spawned
/// from the launcher thread, in its own process group, the stdin write counted in
/// `timeout`, and the whole group killed when the time is up. Nothing here blocks a
/// runtime thread.
async fn exec(command: &[String], body: &[u8], status: &str, timeout: Duration) {
    let Some((program, args)) = command.split_first() else {
        return;
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).env("BULWARK_ALERT_STATUS", status);
    match launch::run_exec(cmd, Some(body), timeout, EXEC_CAPTURE).await {
        Ok(out) => match out.status {
            Some(s) if s.success() => {}
            Some(s) => tracing::warn!(
                program,
                status = %s,
                stderr = %String::from_utf8_lossy(&out.stderr).trim(),
                "alert exec sink failed"
            ),
            None => tracing::warn!(program, ?timeout, "alert exec sink timed out; killed"),
        },
        Err(e) => tracing::error!(program, error = %e, "alert exec sink cannot start"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertBook, Severity};
    use std::io::{Read, Write};

    /// A real HTTP server that fails the first request with 500 and records the rest.
    fn receiver() -> (String, std::sync::mpsc::Receiver<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for (n, s) in l.incoming().enumerate() {
                let Ok(mut s) = s else { return };
                let mut buf = vec![0; 65536];
                let mut got = Vec::new();
                // read headers + body (content-length)
                loop {
                    let k = s.read(&mut buf).unwrap_or(0);
                    if k == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..k]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            if n == 0 {
                                let _ = s.write_all(b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                            } else {
                                let _ = tx.send(body.to_string());
                                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                            }
                            break;
                        }
                    }
                }
            }
        });
        (url, rx)
    }

    #[tokio::test]
    async fn groups_per_service_and_retries_the_webhook() {
        let (url, rx) = receiver();
        let (tx, notices) = mpsc::unbounded_channel();
        let task = spawn(
            Routing {
                group_wait: Duration::from_millis(100),
                sinks: vec![
                    Sink::Log,
                    Sink::Webhook {
                        url: url.parse().unwrap(),
                        timeout: Duration::from_secs(2),
                        attempts: 3,
                    },
                ],
            },
            notices,
        );
        let mut book = AlertBook::new(0);
        for slo in ["a", "b"] {
            let (_, n) = book
                .fire("web", slo, Severity::Page, format!("{slo} burns"), 1)
                .unwrap();
            tx.send(n.unwrap()).unwrap();
        }
        let body =
            tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)).unwrap())
                .await
                .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "firing");
        assert_eq!(v["group"], "web");
        assert_eq!(
            v["alerts"].as_array().unwrap().len(),
            2,
            "one POST for the group: {v}"
        );
        assert_eq!(v["alerts"][0]["severity"], "page");
        drop(tx);
        task.await.unwrap();
    }

    fn one_alert() -> Vec<Alert> {
        let mut book = AlertBook::new(0);
        let (a, _) = book
            .fire("web", "availability", Severity::Page, "burns".into(), 1)
            .unwrap();
        vec![a]
    }

    #[tokio::test]
    async fn exec_sink_gets_the_payload_and_a_stuck_one_is_killed_in_time() {
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let dir = tempfile::tempdir().unwrap();
        let got = dir.path().join("payload.json");
        let record = Sink::Exec {
            command: vec![
                "sh".into(),
                "-c".into(),
                format!("cat > {}; echo $BULWARK_ALERT_STATUS >> {0}", got.display()),
            ],
            timeout: Duration::from_secs(10),
        };
        // Never reads its stdin and never ends; leaves a grandchild in its group.
        let stuck = Sink::Exec {
            command: vec!["sh".into(), "-c".into(), "sleep 100 & sleep 100".into()],
            timeout: Duration::from_secs(1),
        };
        let began = std::time::Instant::now();
        deliver(&[stuck, record], &client, "web".into(), one_alert()).await;
        assert!(
            began.elapsed() < Duration::from_secs(8),
            "the stuck sink held delivery for {:?}",
            began.elapsed()
        );
        let text = std::fs::read_to_string(&got).unwrap();
        assert!(text.contains("\"group\":\"web\""), "{text}");
        assert!(text.trim_end().ends_with("firing"), "{text}");
    }
}
