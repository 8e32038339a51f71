//! `bulwark backup`: asks the running `up` and prints what it answers.

use std::time::Duration;

use anyhow::bail;
use api::client::Client;
use backup::{DrillReport, RunReport, SnapshotView, Status, VerifyReport};
use bus::now_ms;

use crate::cli::BackupCmd;
use crate::output::outln;

/// A backup, a verification or a drill runs to its end before the API answers: a day
/// bounds the wait (a drill's own timeout is at most a day), Ctrl-C ends it sooner.
const OPERATION: Duration = Duration::from_secs(24 * 3600);

pub async fn run(client: Client, cmd: BackupCmd) -> anyhow::Result<()> {
    let client = client.with_timeout(OPERATION);
    match cmd {
        BackupCmd::List { name: None, json } => {
            let body = client.get("/v1/backups").await?;
            if json {
                outln!("{}", String::from_utf8_lossy(&body));
            } else {
                print_status(&serde_json::from_slice::<Vec<Status>>(&body)?);
            }
        }
        BackupCmd::List {
            name: Some(name),
            json,
        } => {
            let body = client
                .get(&format!("/v1/backups/{}/snapshots", encode(&name)))
                .await?;
            if json {
                outln!("{}", String::from_utf8_lossy(&body));
            } else {
                print_snapshots(&serde_json::from_slice::<Vec<SnapshotView>>(&body)?);
            }
        }
        BackupCmd::Run { name, json } => {
            let body = client
                .post(&format!("/v1/backups/{}/run", encode(&name)))
                .await?;
            if json {
                outln!("{}", String::from_utf8_lossy(&body));
            } else {
                print_run(&serde_json::from_slice(&body)?);
            }
        }
        BackupCmd::Verify { name, json } => {
            let body = client
                .post(&format!("/v1/backups/{}/verify", encode(&name)))
                .await?;
            if json {
                outln!("{}", String::from_utf8_lossy(&body));
            } else {
                print_verify(&serde_json::from_slice(&body)?);
            }
        }
        BackupCmd::Drill { name, json } => {
            let body = client
                .post(&format!("/v1/backups/{}/drill", encode(&name)))
                .await?;
            if json {
                outln!("{}", String::from_utf8_lossy(&body));
            } else {
                print_drill(&serde_json::from_slice(&body)?);
            }
        }
        BackupCmd::Restore {
            snapshot,
            to,
            backup,
            json,
        } => {
            let name = match backup {
                Some(b) => b,
                None => holder(&client, &snapshot).await?,
            };
            let to = std::path::absolute(&to)?;
            let path = format!(
                "/v1/backups/{}/restore?snapshot={}&to={}",
                encode(&name),
                encode(&snapshot),
                encode(&to.to_string_lossy())
            );
            let body = client.post(&path).await?;
            if json {
                outln!("{}", String::from_utf8_lossy(&body));
            } else {
                let v: serde_json::Value = serde_json::from_slice(&body)?;
                outln!(
                    "restored snapshot {} of backup {name} into {}",
                    short(v["snapshot"].as_str().unwrap_or("?")),
                    to.display()
                );
            }
        }
    }
    Ok(())
}

/// The one backup that can hold `snapshot`: the only backup, or the only one with a
/// snapshot whose id starts so.
async fn holder(client: &Client, snapshot: &str) -> anyhow::Result<String> {
    let all: Vec<Status> = serde_json::from_slice(&client.get("/v1/backups").await?)?;
    match &all[..] {
        [] => bail!("the stack has no [[backups]]"),
        [one] => return Ok(one.name.clone()),
        _ if snapshot == "latest" => {
            bail!("several backups have a latest snapshot; say which with --backup NAME")
        }
        _ => {}
    }
    let mut found = Vec::new();
    for b in &all {
        let body = client
            .get(&format!("/v1/backups/{}/snapshots", encode(&b.name)))
            .await?;
        let snaps: Vec<SnapshotView> = serde_json::from_slice(&body)?;
        if snaps.iter().any(|s| s.id.starts_with(snapshot)) {
            found.push(b.name.clone());
        }
    }
    match &found[..] {
        [one] => Ok(one.clone()),
        [] => bail!("no backup has a snapshot {snapshot:?}; `bulwark backup list NAME` shows them"),
        _ => bail!(
            "{snapshot:?} is in several backups ({}); say which with --backup NAME",
            found.join(", ")
        ),
    }
}

fn print_status(all: &[Status]) {
    if all.is_empty() {
        outln!("no backups: add a [[backups]] table to the stack file");
    }
    for b in all {
        let r = &b.record;
        outln!(
            "{}  ({}, every \"{}\", RPO {}{})",
            b.name,
            b.source,
            b.schedule,
            human(b.rpo_ms),
            b.rto_ms
                .map_or(String::new(), |t| format!(", RTO {}", human(t)))
        );
        match (&b.newest_verified, b.newest_verified_ms) {
            (Some(id), Some(at)) => outln!(
                "  newest verified: {} ({} ago)",
                short(id),
                human(now_ms().saturating_sub(at))
            ),
            _ => outln!("  newest verified: none"),
        }
        if let Some(run) = &r.last_run {
            match &run.error {
                None => outln!(
                    "  last run: ok, {} saved in {}, {} ago",
                    bytes(run.bytes),
                    human(run.duration_ms),
                    human(now_ms().saturating_sub(run.at_ms))
                ),
                Some(e) => outln!(
                    "  last run: FAILED {} ago: {e}",
                    human(now_ms().saturating_sub(run.at_ms))
                ),
            }
        }
        if let Some(v) = &r.last_verify {
            let state = if v.problems.is_empty() {
                "ok".to_owned()
            } else {
                format!("{} problem(s)", v.problems.len())
            };
            outln!("  last verify: {state}, part {}/{}", v.part.0, v.part.1);
        }
        if let Some(d) = &r.last_drill {
            match (d.passed, d.rto_ms) {
                (true, Some(rto)) => outln!("  last drill: passed, RTO {}", human(rto)),
                _ => outln!(
                    "  last drill: FAILED: {}",
                    d.error.as_deref().unwrap_or("?")
                ),
            }
        }
    }
}

fn print_snapshots(snaps: &[SnapshotView]) {
    outln!(
        "{:<10} {:<26} {:>10} {:>7}  state",
        "ID",
        "TIME",
        "SIZE",
        "FILES"
    );
    for s in snaps {
        let state = match (s.damaged, s.verified) {
            (true, _) => "DAMAGED",
            (false, true) => "verified",
            (false, false) => "-",
        };
        outln!(
            "{:<10} {:<26} {:>10} {:>7}  {state}",
            short(&s.id),
            s.time,
            bytes(s.bytes),
            s.files
        );
    }
}

fn print_run(r: &RunReport) {
    outln!(
        "snapshot {} of {}: {} in {} files ({} new) in {}, {}",
        short(&r.snapshot),
        r.backup,
        bytes(r.bytes),
        r.files,
        bytes(r.added),
        human(r.duration_ms),
        if r.verified {
            "read back intact"
        } else {
            "NOT verified"
        }
    );
    if !r.forgotten.is_empty() {
        let ids: Vec<&str> = r.forgotten.iter().map(|i| short(i)).collect();
        outln!("forgotten by the keep rules: {}", ids.join(", "));
    }
    for w in &r.warnings {
        outln!("warning: {w}");
    }
}

fn print_verify(v: &VerifyReport) {
    let r = &v.record;
    outln!(
        "{}: read part {}/{} ({} pack(s)): {}",
        v.backup,
        r.part.0,
        r.part.1,
        r.packs_read,
        if r.problems.is_empty() {
            "no problem found".to_owned()
        } else {
            format!("{} problem(s)", r.problems.len())
        }
    );
    for p in &r.problems {
        outln!("  {p}");
    }
    if !r.damaged.is_empty() {
        let ids: Vec<&str> = r.damaged.iter().map(|i| short(i)).collect();
        outln!("snapshots marked damaged: {}", ids.join(", "));
    }
}

fn print_drill(d: &DrillReport) {
    let r = &d.record;
    outln!(
        "{}: snapshot {} restored in {}; the scratch replica passed its check: RTO {}{}",
        d.backup,
        short(r.snapshot.as_deref().unwrap_or("?")),
        human(r.restore_ms.unwrap_or(0)),
        human(r.rto_ms.unwrap_or(0)),
        d.rto_objective_ms
            .map_or(String::new(), |o| format!(" (objective {})", human(o)))
    );
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

fn human(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// Percent-encodes everything but unreserved characters, for a path segment or query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
