//! `bulwark rollout`: asks the running `up`, prints the progress display.

use std::process::ExitCode;

use api::client::Client;
use rollout::{Revision, Status};

use crate::cli::RolloutCmd;
use crate::output::outln;

pub async fn run(client: Client, cmd: RolloutCmd) -> anyhow::Result<ExitCode> {
    let (path, json, post) = match &cmd {
        RolloutCmd::Status {
            service,
            watch: true,
            json,
        } => return watch(&client, service, *json).await,
        RolloutCmd::Status { service, json, .. } => {
            (format!("/v1/rollouts/{service}"), *json, false)
        }
        RolloutCmd::History { service, json } => {
            (format!("/v1/rollouts/{service}/history"), *json, false)
        }
        RolloutCmd::Start { service, json } => {
            (format!("/v1/rollouts/{service}/start"), *json, true)
        }
        RolloutCmd::Pause { service, json } => {
            (format!("/v1/rollouts/{service}/pause"), *json, true)
        }
        RolloutCmd::Resume { service, json } => {
            (format!("/v1/rollouts/{service}/resume"), *json, true)
        }
        RolloutCmd::Promote {
            service,
            full,
            json,
        } => (
            format!("/v1/rollouts/{service}/promote?full={full}"),
            *json,
            true,
        ),
        RolloutCmd::Abort { service, json } => {
            (format!("/v1/rollouts/{service}/abort"), *json, true)
        }
        RolloutCmd::Undo {
            service,
            to_revision,
            json,
        } => (
            match to_revision {
                Some(n) => format!("/v1/rollouts/{service}/undo?to={n}"),
                None => format!("/v1/rollouts/{service}/undo"),
            },
            *json,
            true,
        ),
    };
    let body = if post {
        client.post(&path).await?
    } else {
        client.get(&path).await?
    };
    if json {
        outln!("{}", String::from_utf8_lossy(&body));
        return Ok(ExitCode::SUCCESS);
    }
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    match cmd {
        RolloutCmd::Status { .. } => {
            outln!(
                "{} runs revision {}",
                v["service"].as_str().unwrap_or("?"),
                v["revision"]
            );
            if let Some(d) = v["drift"].as_str() {
                outln!("differs from the stack file: {d}");
            }
            match serde_json::from_value::<Option<Status>>(v["rollout"].clone())? {
                Some(s) => print_status(&s),
                None => outln!("no rollout yet"),
            }
        }
        RolloutCmd::History { .. } => print_history(serde_json::from_value(v)?),
        RolloutCmd::Start { service, .. } => {
            outln!(
                "{service}: revision {} rolling out (`bulwark rollout status {service} --watch`)",
                v["revision"]
            );
        }
        RolloutCmd::Undo { service, .. } => {
            outln!("{service}: going back to revision {}'s settings", v["to"]);
        }
        RolloutCmd::Pause { service, .. }
        | RolloutCmd::Resume { service, .. }
        | RolloutCmd::Promote { service, .. }
        | RolloutCmd::Abort { service, .. } => {
            outln!("{service}: {}", v["command"].as_str().unwrap_or("done"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows the rollout until it ends; exit status 1 unless it completed.
async fn watch(client: &Client, service: &str, json: bool) -> anyhow::Result<ExitCode> {
    let mut last: Option<Status> = None;
    client
        .stream(&format!("/v1/rollouts/{service}/watch"), |data| {
            if json {
                outln!("{data}");
            }
            if let Ok(s) = serde_json::from_str::<Status>(data) {
                if !json {
                    print_status(&s);
                    outln!("");
                }
                last = Some(s);
            }
        })
        .await?;
    Ok(match last {
        Some(s) if s.phase == rollout::Phase::Completed => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

fn time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// The progress display.
fn print_status(s: &Status) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    outln!(
        "rollout {} revision {} (from {}), {}: {}",
        s.service,
        s.revision,
        s.from,
        s.strategy,
        serde_json::to_value(s.phase)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    );
    outln!(
        "  step      {} ({}s in step)",
        s.step,
        now.saturating_sub(s.step_started_ms) / 1000
    );
    if let Some(w) = s.weight {
        outln!("  weights   new {w} %, stable {} %", 100.0 - w);
    }
    outln!(
        "  replicas  old {} ({} ready), new {} ({} ready), want {}",
        s.old,
        s.old_ready,
        s.new,
        s.new_ready,
        s.desired
    );
    if let Some(a) = &s.analysis {
        outln!("  analysis  {a}");
    }
    if let Some(m) = &s.message {
        outln!("  note      {m}");
    }
    let shown = s.verdicts.len().saturating_sub(5);
    for v in &s.verdicts[shown..] {
        outln!(
            "  verdict   {} {}{}",
            time(v.at_ms),
            v.verdict,
            if v.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", v.detail)
            }
        );
    }
}

/// `rollout history`: a line per revision.
fn print_history(list: Vec<Revision>) {
    outln!(
        "{:>8}  {:<10} {:<12} {:<24} {:<10} CHANGES",
        "REVISION",
        "STRATEGY",
        "OUTCOME",
        "STARTED",
        "TRIGGER"
    );
    for r in list {
        outln!(
            "{:>8}  {:<10} {:<12} {:<24} {:<10} {}",
            r.revision,
            r.strategy,
            r.outcome,
            time(r.started_ms),
            r.trigger,
            if r.changes.is_empty() {
                "-".to_owned()
            } else {
                r.changes.join("; ")
            }
        );
        if let Some(reason) = r.reason {
            outln!("{:>8}  {reason}", "");
        }
    }
}
