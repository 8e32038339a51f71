//! `bulwark actions`, `approve` and `deny`: remediation's decisions and its approvals.

use api::client::Client;
use api::json::{Action, Autoscale};

use crate::output::outln;

pub async fn actions(client: &Client, json: bool) -> anyhow::Result<()> {
    let body = client.get("/v1/actions").await?;
    if json {
        outln!("{}", String::from_utf8_lossy(&body));
        return Ok(());
    }
    let list: Vec<Action> = serde_json::from_slice(&body)?;
    if list.is_empty() {
        outln!(
            "no remediation decision yet; rules are [[remediations]] in the stack file \
             (the default pack replaces a replica forecast to run out of memory)"
        );
    }
    for a in &list {
        outln!("{}", line(a));
    }
    Ok(())
}

fn line(a: &Action) -> String {
    let target = match a.replica {
        Some(i) => format!("{}/{i}", a.service),
        None => a.service.clone(),
    };
    let guard = a
        .guard
        .as_deref()
        .map(|g| format!(" by {g}"))
        .unwrap_or_default();
    let detail = if a.detail.is_empty() {
        String::new()
    } else {
        format!("\n      {}", a.detail)
    };
    let decided = format!("{}{guard}", a.decision);
    format!(
        "#{:<4} {}  {decided:<9}  {} on {target} ({}, {})  when {}{detail}",
        a.id,
        crate::reports::ms_to_time(a.updated_ms),
        a.actions.join(", "),
        a.rule,
        a.mode,
        a.trigger
    )
}

pub async fn answer(client: &Client, id: u64, answer: &str) -> anyhow::Result<()> {
    let by = std::env::var("USER").map_or_else(|_| "cli".to_owned(), |u| format!("cli ({u})"));
    let body = serde_json::to_vec(&api::json::Answer { by })?;
    let path = format!("/v1/actions/{id}/{answer}");
    let reply = client.call(http::Method::POST, &path, body.into()).await?;
    let a: Action = serde_json::from_slice(&reply)?;
    outln!("{}", line(&a));
    Ok(())
}

/// `autoscale: request_rate 180.0 per replica (target 100), 2 -> 4 (up), within 1..8`.
pub fn autoscale_line(a: &Autoscale) -> String {
    let value = a.value.map_or("not measured yet".to_owned(), |v| {
        format!("{v:.1} per replica")
    });
    format!(
        "autoscale: {} {value} (target {}), current {}, desired {} ({}), within {}..{}",
        a.target, a.goal, a.current, a.desired, a.reason, a.min, a.max
    )
}

/// A pending approval in `bulwark status`.
pub fn pending_line(a: &Action) -> String {
    format!(
        "waiting for approval: #{} {} on {} ({}): `bulwark approve {}` or `bulwark deny {}`",
        a.id,
        a.actions.join(", "),
        a.service,
        a.trigger,
        a.id,
        a.id
    )
}
