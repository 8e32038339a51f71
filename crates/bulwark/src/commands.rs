//! The CLI commands that talk to a running `bulwark up` through its API
//! ([`api::client`]), and how they print what it answers.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use api::client::Client;
use bytes::Bytes;
use http::Method;

use crate::cli::Command;
use crate::output::outln;
use crate::reports::{ms_to_time, print_incidents, print_slo};
use crate::status_view::{describe_event, print_status};

// Long on purpose: one match arm per CLI command, each a request and its printout.
#[allow(clippy::too_many_lines)]
pub async fn run(cmd: Command, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let client = Client::discover(&state_dir.unwrap_or_else(api::state_dir::default_dir))?;
    match cmd {
        Command::Status { json, .. } => {
            let body = client.get("/v1/status").await?;
            if json {
                outln!("{}", String::from_utf8_lossy(&body));
            } else {
                let status: api::json::Status = serde_json::from_slice(&body)?;
                print_status(&status);
            }
        }
        Command::Events { follow, json } => {
            let print = |line: &str| {
                if json {
                    outln!("{line}");
                } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    outln!("{}", describe_event(&v));
                }
            };
            if follow {
                client.stream("/v1/events?follow=true", print).await?;
            } else {
                let body = client.get("/v1/events?sync=true").await?;
                let events: Vec<serde_json::Value> = serde_json::from_slice(&body)?;
                for e in events {
                    print(&e.to_string());
                }
            }
        }
        Command::Logs { target, follow } => {
            let (service, replica) = split_target(&target)?;
            let mut path = format!("/v1/logs/{service}?follow={follow}");
            if let Some(r) = replica {
                path.push_str(&format!("&replica={r}"));
            }
            let print = |line: &str| {
                if let Ok(l) = serde_json::from_str::<api::json::LogLine>(line) {
                    outln!("{service}/{} | {}", l.replica, l.text);
                }
            };
            if follow {
                client.stream(&path, print).await?;
            } else {
                let lines: Vec<serde_json::Value> =
                    serde_json::from_slice(&client.get(&path).await?)?;
                for l in lines {
                    print(&l.to_string());
                }
            }
        }
        Command::Restart { target } => {
            let (service, replica) = split_target(&target)?;
            let mut path = format!("/v1/services/{service}/restart");
            if let Some(r) = replica {
                path.push_str(&format!("?replica={r}"));
            }
            client.post(&path).await?;
            outln!("restarting {target}");
        }
        Command::Scale { service, replicas } => {
            let body = client
                .post(&format!("/v1/services/{service}/scale?replicas={replicas}"))
                .await?;
            let s: api::json::Scaled = serde_json::from_slice(&body)?;
            outln!("scaled {}: {} -> {}", s.service, s.from, s.to);
        }
        Command::Slo { json, .. } => {
            let body = client.get("/v1/slo").await?;
            if json {
                outln!("{}", String::from_utf8_lossy(&body));
            } else {
                print_slo(&serde_json::from_slice::<Vec<api::json::SloReport>>(&body)?);
            }
        }
        Command::Incidents { json } => {
            let body = client.get("/v1/incidents").await?;
            if json {
                outln!("{}", String::from_utf8_lossy(&body));
            } else {
                print_incidents(&serde_json::from_slice(&body)?);
            }
        }
        Command::Alerts { json } => {
            let body = client.get("/v1/alerts").await?;
            if json {
                outln!("{}", String::from_utf8_lossy(&body));
            } else {
                let alerts: Vec<api::json::Alert> = serde_json::from_slice(&body)?;
                for a in alerts {
                    let state = match a.state {
                        api::json::AlertState::Firing => "FIRING",
                        api::json::AlertState::Resolved => "resolved",
                    };
                    outln!(
                        "{:<9} {:<6} {:<28} {}{}",
                        state,
                        a.severity.as_str(),
                        a.fingerprint,
                        a.summary,
                        if a.notified { "" } else { " (silenced)" }
                    );
                }
            }
        }
        Command::Silence { cmd } => silence(&client, cmd).await?,
        Command::Backup { cmd } => crate::backup_cmd::run(client, cmd).await?,
        Command::Chaos { cmd } => return crate::chaos_cmd::run(client, cmd).await,
        Command::Rollout { cmd } => return crate::rollout_cmd::run(client, cmd).await,
        Command::Reload => {
            let body = client.post("/v1/reload").await?;
            let changes: Vec<String> = serde_json::from_slice(&body)?;
            for c in changes {
                outln!("{c}");
            }
        }
        Command::Faults { state } => {
            client.post(&format!("/v1/faults/{state}")).await?;
            outln!("injected faults {state}");
        }
        Command::Switch { cmd } => switch(&client, cmd).await?,
        Command::Token { cmd } => token(&client, cmd).await?,
        Command::Dashboard => {
            let answer = client
                .call(Method::POST, "/v1/dashboard/codes", Bytes::new())
                .await?;
            let code: serde_json::Value = serde_json::from_slice(&answer)?;
            let code = code["code"]
                .as_str()
                .context("the API sent no login code")?;
            eprintln!(
                "a one-time login link, valid for 60 s (then run `bulwark dashboard` again):"
            );
            outln!("{}/ui/login#code={code}", client.base_url());
        }
        Command::Audit {
            json,
            cef,
            after,
            limit,
        } => {
            let body = client
                .get(&format!("/v1/audit?after={after}&limit={limit}"))
                .await?;
            let records: Vec<api::audit::Record> = serde_json::from_slice(&body)?;
            for r in records {
                if json {
                    outln!("{}", serde_json::to_string(&r)?);
                } else if cef {
                    outln!("{}", r.cef(env!("CARGO_PKG_VERSION")));
                } else {
                    outln!("{}", audit_line(&r));
                }
            }
        }
        Command::Actions { json } => crate::remedy_cmd::actions(&client, json).await?,
        Command::Approve { id } => crate::remedy_cmd::answer(&client, id, "approve").await?,
        Command::Deny { id } => crate::remedy_cmd::answer(&client, id, "deny").await?,
        Command::Up(_)
        | Command::Agent(_)
        | Command::Nodes { .. }
        | Command::Apply(_)
        | Command::Check { .. }
        | Command::SystemdUnit { .. }
        | Command::Import { .. }
        | Command::Grafana { .. }
        | Command::Demo(_)
        | Command::Load(_)
        | Command::Verify(_)
        | Command::Top { .. }
        | Command::Completions { .. }
        | Command::Schema { .. }
        | Command::Explain { .. }
        | Command::Man { .. } => {
            unreachable!("handled in main")
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn split_target(target: &str) -> anyhow::Result<(&str, Option<u32>)> {
    match target.split_once('/') {
        None => Ok((target, None)),
        Some((s, i)) => {
            let i = i
                .parse()
                .with_context(|| format!("{target:?}: expected SERVICE or SERVICE/INDEX"))?;
            Ok((s, Some(i)))
        }
    }
}

async fn token(client: &Client, cmd: crate::cli::TokenCmd) -> anyhow::Result<()> {
    use crate::cli::TokenCmd;
    match cmd {
        TokenCmd::Create { name, role } => {
            let role: api::tokens::Role = role.parse().map_err(anyhow::Error::msg)?;
            let body = serde_json::to_vec(&api::tokens::CreateToken { name, role })?;
            let answer = client
                .call(http::Method::POST, "/v1/tokens", body.into())
                .await?;
            let made: api::tokens::Created = serde_json::from_slice(&answer)?;
            eprintln!(
                "token {} ({}): shown this once; use it as BULWARK_TOKEN or `Authorization: Bearer`",
                made.name,
                made.role.as_str()
            );
            outln!("{}", made.token);
        }
        TokenCmd::List { json } => {
            let body = client.get("/v1/tokens").await?;
            if json {
                outln!("{}", String::from_utf8_lossy(&body));
                return Ok(());
            }
            let list: Vec<api::tokens::TokenInfo> = serde_json::from_slice(&body)?;
            if list.is_empty() {
                outln!(
                    "no tokens but the owner's; make one with `bulwark token create NAME --role viewer`"
                );
            }
            for t in list {
                outln!("{:<24} {:<9} {}", t.name, t.role.as_str(), t.created);
            }
        }
        TokenCmd::Revoke { name } => {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                anyhow::bail!(
                    "no token named {name:?}: names are ASCII letters, digits, `-` and `_`"
                );
            }
            client
                .call(
                    http::Method::DELETE,
                    &format!("/v1/tokens/{name}"),
                    bytes::Bytes::new(),
                )
                .await?;
            outln!("token {name} revoked");
        }
    }
    Ok(())
}

async fn switch(client: &Client, cmd: crate::cli::SwitchCmd) -> anyhow::Result<()> {
    use crate::cli::SwitchCmd;
    match cmd {
        SwitchCmd::List { json } => {
            let body = client.get("/v1/switches").await?;
            if json {
                outln!("{}", String::from_utf8_lossy(&body));
                return Ok(());
            }
            let switches: Vec<api::switches::Switch> = serde_json::from_slice(&body)?;
            if switches.is_empty() {
                outln!("no switches; declare them in the stack file with [switches.NAME]");
            }
            for s in switches {
                outln!(
                    "{:<24} {:<6} (default {:<6}) {}",
                    s.name,
                    s.value,
                    s.default,
                    s.doc
                );
            }
        }
        SwitchCmd::Set { name, value } => {
            let value = value.trim().to_owned();
            if let Err(e) = value.parse::<spec::SwitchValue>() {
                anyhow::bail!("switch {name}: {e}");
            }
            let by =
                std::env::var("USER").map_or_else(|_| "cli".to_owned(), |u| format!("cli ({u})"));
            let req = api::switches::SetSwitch { value, by };
            let body = serde_json::to_vec(&req)?;
            let path = format!("/v1/switches/{name}");
            let answer = client.call(http::Method::POST, &path, body.into()).await?;
            let changed: serde_json::Value = serde_json::from_slice(&answer)?;
            outln!(
                "switch {name}: {} -> {}",
                changed["from"].as_str().unwrap_or("?"),
                changed["to"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

async fn silence(client: &Client, cmd: crate::cli::SilenceCmd) -> anyhow::Result<()> {
    use crate::cli::SilenceCmd;
    match cmd {
        SilenceCmd::Add {
            service,
            slo,
            severity,
            duration,
            start_in,
            comment,
        } => {
            let severity = match severity.as_deref() {
                None => None,
                Some("page") => Some(api::json::Severity::Page),
                Some("ticket") => Some(api::json::Severity::Ticket),
                Some(other) => bail!("--severity must be page or ticket, not {other:?}"),
            };
            let ms = |flag: &str, d: std::time::Duration| {
                u64::try_from(d.as_millis())
                    .ok()
                    .filter(|&m| m <= MAX_SILENCE_MS)
                    .with_context(|| {
                        format!(
                            "{flag} {}: too long; a silence lasts (or starts) at most 366 days ahead",
                            humantime::format_duration(d)
                        )
                    })
            };
            let now = u64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis(),
            )?;
            let starts =
                now.saturating_add(start_in.map_or(Ok(0), |d| ms("--start-in", d.into()))?);
            let ends = starts.saturating_add(ms("--for", duration.into())?);
            let body = serde_json::to_vec(&api::json::NewSilence {
                service,
                slo,
                severity,
                starts_at_ms: Some(starts),
                ends_at_ms: ends,
                comment,
            })?;
            let res = client
                .call(Method::POST, "/v1/silences", body.into())
                .await?;
            let s: api::json::Silence = serde_json::from_slice(&res)?;
            outln!(
                "silence {} for {} until {}",
                s.id,
                s.service,
                ms_to_time(s.ends_at_ms)
            );
        }
        SilenceCmd::List { json } => {
            let body = client.get("/v1/silences").await?;
            if json {
                outln!("{}", String::from_utf8_lossy(&body));
            } else {
                let list: Vec<api::json::Silence> = serde_json::from_slice(&body)?;
                for s in list {
                    outln!(
                        "{}  {}{}{}  {} .. {}  {}",
                        s.id,
                        s.service,
                        s.name.map(|n| format!("/{n}")).unwrap_or_default(),
                        s.severity
                            .map(|v| format!(" ({})", v.as_str()))
                            .unwrap_or_default(),
                        ms_to_time(s.starts_at_ms),
                        ms_to_time(s.ends_at_ms),
                        s.comment
                    );
                }
            }
        }
        SilenceCmd::Rm { id } => {
            client
                .call(Method::DELETE, &format!("/v1/silences/{id}"), Bytes::new())
                .await?;
            outln!("removed silence {id}");
        }
    }
    Ok(())
}

/// What the API accepts for a silence's length and start (see `api`'s routes).
const MAX_SILENCE_MS: u64 = 366 * 24 * 3600 * 1000;

/// One audit record for people: a call's method, path and status, or an action's target,
/// cause and detail.
fn audit_line(r: &api::audit::Record) -> String {
    let head = format!("{:>6} {} {:<12}", r.id, r.at, r.who);
    match &r.action {
        None => format!(
            "{head} {:<6} {} {} {}",
            r.method, r.path, r.status, r.outcome
        ),
        Some(action) => format!(
            "{head} {action:<11} {} {}{}{}",
            r.target.as_deref().unwrap_or("-"),
            r.outcome,
            r.by.as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default(),
            r.detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default(),
        ),
    }
}
