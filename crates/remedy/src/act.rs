//! The actions: what the service allows (the disruption budget, a rollout under way),
//! then each action in order through the [`Host`], or by itself (a runbook command, a
//! webhook).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use spec::{Action, MetricKind, Remediation, ScaleTo};

use crate::trigger::Firing;
use crate::{Detector, Host, Measures, Reading, Replica, Shared};

/// Bytes of a runbook's output kept (stdout, then stderr), for the incident timeline.
const RUNBOOK_OUTPUT: usize = 4096;

/// The service an action works on.
fn service_of<'a>(a: &'a Action, f: &'a Firing) -> &'a str {
    a.service().unwrap_or(&f.service)
}

/// The replica an action works on: the trigger's (none if it is gone: its trouble went
/// with it), else the longest-running ready one.
fn replica_of(replicas: &[Replica], a: &Action, f: &Firing) -> Option<u32> {
    if a.service().is_none_or(|s| s == f.service)
        && let Some(i) = f.replica
    {
        return replicas.iter().any(|r| r.index == i).then_some(i);
    }
    replicas
        .iter()
        .filter(|r| r.ready && !r.held_out)
        .min_by_key(|r| (r.started_at_ms.unwrap_or(u64::MAX), r.index))
        .map(|r| r.index)
}

/// Whether the service allows `rule`'s actions now: `Err((guard, why))` names what holds
/// them back, `disruption-budget` or `conflict` (a rollout under way). `reserved`: the
/// disruptions already admitted per service, not yet visible in the replicas.
pub(crate) fn allowed(
    host: &dyn Host,
    rule: &Remediation,
    f: &Firing,
    reserved: &HashMap<String, u32>,
) -> Result<(), (&'static str, String)> {
    for a in &rule.actions {
        let service = service_of(a, f);
        let Some(size) = host.size(service) else {
            continue;
        };
        let touches = matches!(
            a,
            Action::ReplaceReplica { .. } | Action::RestartService { .. } | Action::Scale { .. }
        ) || a.disrupts();
        if size.rolling_out && touches {
            return Err((
                "conflict",
                format!(
                    "a rollout of {service} is under way; `{}` waits for it",
                    a.name()
                ),
            ));
        }
        if !a.disrupts() {
            continue;
        }
        let replicas = host.replicas(service).unwrap_or_default();
        let serving = (replicas.iter().filter(|r| r.ready && !r.held_out).count() as u32)
            .saturating_sub(reserved.get(service).copied().unwrap_or(0));
        let min = size.min_available.of(size.desired);
        let after = match a {
            Action::Scale { to, .. } => scaled(size.desired, *to),
            Action::RestartService { .. } if size.desired > 0 && min >= size.desired => 0,
            Action::RestartService { .. } => continue,
            _ => {
                let target = replica_of(&replicas, a, f);
                let counted = target.is_some_and(|i| {
                    replicas
                        .iter()
                        .any(|r| r.index == i && r.ready && !r.held_out)
                });
                serving.saturating_sub(u32::from(counted))
            }
        };
        if after < min {
            return Err((
                "disruption-budget",
                format!(
                    "`{}` would leave {after} of {service}'s replicas serving, below \
                     min_available = {min} ({serving} serving now)",
                    a.name()
                ),
            ));
        }
    }
    Ok(())
}

fn scaled(desired: u32, to: ScaleTo) -> u32 {
    match to {
        ScaleTo::Count(n) => n,
        ScaleTo::By(step) => (i64::from(desired) + step).clamp(0, 1000) as u32,
    }
}

/// Runs the rule's actions in order; the first failure ends the run. `Ok`: what was done.
pub(crate) async fn run(
    shared: &Arc<Shared>,
    rule: &Remediation,
    f: &Firing,
    id: u64,
) -> Result<String, String> {
    let mut done = Vec::new();
    for a in &rule.actions {
        match one(shared, rule, a, f, id).await {
            Ok(line) => done.push(line),
            Err(e) => {
                done.push(format!("{} failed: {e}", a.name()));
                return Err(done.join("; "));
            }
        }
    }
    Ok(done.join("; "))
}

async fn one(
    shared: &Arc<Shared>,
    rule: &Remediation,
    a: &Action,
    f: &Firing,
    id: u64,
) -> Result<String, String> {
    let host = &*shared.host;
    let service = service_of(a, f).to_owned();
    let replicas = host.replicas(&service).unwrap_or_default();
    let replica =
        || replica_of(&replicas, a, f).ok_or_else(|| format!("{service} has no replica to act on"));
    match a {
        Action::RestartReplica { .. } => {
            let i = replica()?;
            host.restart(&service, Some(i))?;
            Ok(format!("restarting {service}/{i}"))
        }
        Action::ReplaceReplica { timeout, .. } => {
            let i = replica()?;
            let fresh = host.replace(&service, i, *timeout).await?;
            Ok(format!(
                "replaced {service}/{i} by {service}/{fresh} (ready first)"
            ))
        }
        Action::RestartService { .. } => {
            host.restart(&service, None)?;
            Ok(format!("restarting {service} one replica at a time"))
        }
        Action::Scale { to, .. } => {
            let desired = host.size(&service).map_or(0, |s| s.desired);
            let n = scaled(desired, *to);
            let from = host.scale(&service, n)?;
            Ok(format!("scaled {service} {from} -> {n}"))
        }
        Action::Eject { hold, .. } => {
            let i = replica()?;
            host.hold_out(&service, i, true)?;
            readmit_later(shared, &service, i, *hold);
            Ok(format!(
                "ejected {service}/{i} for {}",
                humantime::format_duration(*hold)
            ))
        }
        Action::Drain { hold, timeout, .. } => {
            let i = replica()?;
            host.hold_out(&service, i, true)?;
            let drained = match host.load(&service, i) {
                Some(load) => tokio::time::timeout(*timeout, load.drained()).await.is_ok(),
                None => true,
            };
            readmit_later(shared, &service, i, *hold);
            if !drained {
                return Err(format!(
                    "{service}/{i} still had requests in flight after {}",
                    humantime::format_duration(*timeout)
                ));
            }
            Ok(format!(
                "drained {service}/{i}; out of rotation for {}",
                humantime::format_duration(*hold)
            ))
        }
        Action::Rollback { .. } => {
            host.rollback(&service)?;
            Ok(format!("rolling back the rollout of {service}"))
        }
        Action::Switch { name, value } => {
            host.set_switch(name, *value, &format!("remediation {}", rule.name))
                .await?;
            Ok(format!("switch {name} set to {value}"))
        }
        Action::Silence { hold } => {
            let slo = f.context["slo"].as_str();
            let comment = format!("remediation {} #{id}: {}", rule.name, f.trigger);
            let sid = host.silence(&f.service, slo, *hold, comment).await?;
            Ok(format!(
                "silenced {} for {} ({sid})",
                f.service,
                humantime::format_duration(*hold)
            ))
        }
        Action::Run { command, timeout } => runbook(shared, rule, f, id, command, *timeout).await,
        Action::Webhook { url, timeout } => webhook(rule, f, id, url, *timeout).await,
    }
}

/// Puts an ejected or drained replica back in rotation after `hold`.
fn readmit_later(shared: &Arc<Shared>, service: &str, index: u32, hold: Duration) {
    let (shared, service) = (shared.clone(), service.to_owned());
    tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        // Gone by then (restarted, scaled away): nothing to put back.
        let _ = shared.host.hold_out(&service, index, false);
    });
}

/// What a runbook and a webhook get: the trigger's context and the action's.
fn payload(rule: &Remediation, f: &Firing, id: u64, incident: Option<u64>) -> serde_json::Value {
    let mut v = f.context.clone();
    if let Some(map) = v.as_object_mut() {
        map.insert("rule".into(), rule.name.clone().into());
        map.insert("action_id".into(), id.into());
        map.insert("trigger_text".into(), f.trigger.clone().into());
        map.insert("incident".into(), incident.into());
    }
    v
}

async fn runbook(
    shared: &Arc<Shared>,
    rule: &Remediation,
    f: &Firing,
    id: u64,
    command: &[String],
    timeout: Duration,
) -> Result<String, String> {
    let incident = shared.host.incident(&f.service);
    run_command(&payload(rule, f, id, incident), command, timeout).await
}

/// Runs `command` with `context` as JSON on stdin and, flattened, in `BULWARK_*`
/// variables, for at most `timeout`; keeps the first [`RUNBOOK_OUTPUT`] bytes of each
/// stream.
async fn run_command(
    context: &serde_json::Value,
    command: &[String],
    timeout: Duration,
) -> Result<String, String> {
    let (program, args) = command.split_first().ok_or("an empty command")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    // The context flattened: BULWARK_SERVICE, BULWARK_SLO, BULWARK_REPLICA...
    if let Some(map) = context.as_object() {
        for (k, v) in map {
            let value = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => continue,
                other => other.to_string(),
            };
            cmd.env(format!("BULWARK_{}", k.to_ascii_uppercase()), value);
        }
    }
    let input = serde_json::to_vec(context).unwrap_or_default();
    let out = launch::run_exec(cmd, Some(&input), timeout, RUNBOOK_OUTPUT)
        .await
        .map_err(|e| format!("`{program}` could not start: {e}"))?;
    let text = output(&out.stdout, &out.stderr);
    out.passed(timeout)
        .map(|()| format!("runbook `{program}` succeeded: {text}"))
        .map_err(|e| format!("runbook `{program}`: {e}; output: {text}"))
}

fn output(stdout: &[u8], stderr: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(stdout).trim().to_owned();
    let err = String::from_utf8_lossy(stderr);
    if !err.trim().is_empty() {
        if !s.is_empty() {
            s.push_str(" | ");
        }
        s.push_str(err.trim());
    }
    if s.is_empty() {
        "(no output)".into()
    } else {
        s
    }
}

async fn webhook(
    rule: &Remediation,
    f: &Firing,
    id: u64,
    url: &http::Uri,
    timeout: Duration,
) -> Result<String, String> {
    let body = serde_json::to_vec(&payload(rule, f, id, None)).unwrap_or_default();
    let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let req = http::Request::post(url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "bulwark-remediation")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad webhook request: {e}"))?;
    // Reported in events, the journal and `bulwark actions`: without credentials.
    let url = spec::redacted_url(url);
    match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => Err(format!(
            "{url} did not answer within {}",
            humantime::format_duration(timeout)
        )),
        Ok(Err(e)) => Err(format!("{url}: {e}")),
        Ok(Ok(resp)) if resp.status().is_success() => {
            Ok(format!("{url} answered {}", resp.status()))
        }
        Ok(Ok(resp)) => Err(format!("{url} answered {}", resp.status())),
    }
}

/// Measures for metric triggers: the proxy's outcomes over the last second, the
/// replicas' in-flight counts, the sampler's CPU and memory.
pub(crate) struct MetricReader {
    measures: Arc<Measures>,
    detector: Arc<Detector>,
    last: HashMap<String, Reading>,
    /// This tick's window per service: every rule of a tick reads the same one.
    windows: HashMap<String, Option<crate::Window>>,
    now: Instant,
}

impl MetricReader {
    pub(crate) fn new(measures: Arc<Measures>, detector: Arc<Detector>) -> Self {
        MetricReader {
            measures,
            detector,
            last: HashMap::new(),
            windows: HashMap::new(),
            now: Instant::now(),
        }
    }

    /// A new tick: windows are read afresh, once per service.
    pub(crate) fn begin(&mut self, now: Instant) {
        self.now = now;
        self.windows.clear();
    }

    fn window(&mut self, service: &str) -> Option<crate::Window> {
        if let Some(w) = self.windows.get(service) {
            return *w;
        }
        let w = self.measures.read(service, self.now).and_then(|r| {
            let w = self.last.get(service).map(|prev| r.since(prev));
            self.last.insert(service.to_owned(), r);
            w
        });
        self.windows.insert(service.to_owned(), w);
        w
    }

    /// `metric` of `service` now (`None`: nothing to measure yet).
    pub(crate) fn value(
        &mut self,
        host: &dyn Host,
        service: &str,
        metric: MetricKind,
    ) -> Option<f64> {
        let replicas = host.replicas(service)?;
        let ready: Vec<&Replica> = replicas.iter().filter(|r| r.ready).collect();
        let per_ready = |v: f64| v / ready.len().max(1) as f64;
        let window = self.window(service);
        match metric {
            MetricKind::Ready => Some(ready.len() as f64),
            MetricKind::InFlight => Some(per_ready(
                ready
                    .iter()
                    .filter_map(|r| host.load(service, r.index))
                    .map(|l| l.inflight() as f64)
                    .sum(),
            )),
            MetricKind::RequestRate => window.map(|w| per_ready(w.rate)),
            MetricKind::ErrorRatio => window.filter(|w| w.requests > 0).map(|w| w.error_percent),
            MetricKind::LatencyP99 => window.and_then(|w| w.p99).map(|d| d.as_secs_f64() * 1000.0),
            MetricKind::Cpu => self
                .detector
                .usage(service)
                .map(|u| u.cpu_cores / u.replicas.max(1) as f64),
            MetricKind::Memory => self
                .detector
                .usage(service)
                .map(|u| u.max_rss as f64 / (1 << 20) as f64),
        }
    }
}

#[cfg(test)]
mod tests;
