//! `bulwark nodes` and `bulwark apply`: cluster mode's read and write of etcd.

use std::process::ExitCode;

use anyhow::Context;
use cluster::stack::{Applied, StackRevision};

use crate::cli::{ApplyArgs, EtcdArgs};
use crate::output::outln;

/// Connects to the cluster's etcd, bounded by `--etcd-timeout`.
pub async fn connect(args: &EtcdArgs) -> anyhow::Result<(cluster::Etcd, cluster::Keys)> {
    let keys = cluster::Keys::new(&args.cluster)?;
    let etcd = cluster::connect(&args.etcd, *args.etcd_timeout).await?;
    Ok((etcd, keys))
}

/// `bulwark nodes`.
pub async fn nodes(args: EtcdArgs, json: bool) -> anyhow::Result<ExitCode> {
    let (etcd, keys) = connect(&args).await?;
    let (nodes, _) = cluster::list_nodes(&etcd, &keys).await?;
    let (placements, scheduler) = cluster::schedule::placements(&etcd, &keys).await?;
    let endpoints = cluster::schedule::endpoints(&etcd, &keys).await?;
    let by_node = crate::scheduler::by_node(&placements);
    let none = Vec::new();
    let replicas_of = |node: &str| by_node.get(node).unwrap_or(&none);
    let ready_of = |node: &str| -> Vec<String> {
        endpoints
            .iter()
            .filter(|((n, _, _), e)| n == node && e.ready)
            .map(|((_, s, i), _)| format!("{s}/{i}"))
            .collect()
    };
    let now = bus::now_ms();
    if json {
        let list: Vec<serde_json::Value> = nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "name": n.record.name,
                    "state": n.state.as_str(),
                    "labels": n.record.labels,
                    "address": n.record.api,
                    "version": n.record.version,
                    "started_at_ms": n.record.started_at_ms,
                    "age_s": now.saturating_sub(n.record.started_at_ms) / 1000,
                    "scheduler": scheduler.as_deref() == Some(n.record.name.as_str()),
                    "replicas": replicas_of(&n.record.name),
                    "ready": ready_of(&n.record.name),
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if nodes.is_empty() {
        outln!("no node has joined cluster `{}`", args.cluster);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<20} {:<6} {:<24} {:<22} {:>8}  REPLICAS (READY)",
        "NAME",
        "STATE",
        "LABELS",
        "ADDRESS",
        "AGE"
    );
    for n in &nodes {
        let labels: Vec<String> = n
            .record
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let age = std::time::Duration::from_secs(now.saturating_sub(n.record.started_at_ms) / 1000);
        let name = match scheduler.as_deref() == Some(n.record.name.as_str()) {
            true => format!("{} (scheduler)", n.record.name),
            false => n.record.name.clone(),
        };
        let replicas = replicas_of(&n.record.name);
        let placed = match replicas.is_empty() {
            true => "-".to_owned(),
            false => format!(
                "{} ({} ready)",
                replicas.join(","),
                ready_of(&n.record.name).len()
            ),
        };
        outln!(
            "{:<20} {:<6} {:<24} {:<22} {:>8}  {placed}",
            name,
            n.state.as_str(),
            if labels.is_empty() {
                "-".to_owned()
            } else {
                labels.join(",")
            },
            n.record.api,
            humantime::format_duration(age).to_string(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `bulwark apply`.
pub async fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let Some(file) = args.file.clone() else {
        return history(&args).await;
    };
    // Checked exactly as `bulwark check` checks it, before etcd is asked anything: the
    // text read is the text stored.
    let checked = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || {
            let text = std::fs::read_to_string(&file);
            let loaded = match &text {
                Ok(t) => spec::parse_with_warnings(t, &file),
                Err(_) => spec::load_with_warnings(&file),
            };
            (text, loaded)
        })
        .await
        .context("checking the stack file")?
    };
    let text = match checked {
        (Ok(text), Ok(loaded)) => {
            for w in loaded.warnings {
                eprintln!("{w}");
            }
            text
        }
        (_, Err(errors)) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(2));
        }
        (Err(e), Ok(_)) => return Err(e).context(format!("cannot read {}", file.display())),
    };
    let (etcd, keys) = connect(&args.etcd).await?;
    let by = format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "?".into()),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| "?".into(), |h| h.trim().to_owned())
    );
    let applied =
        cluster::stack::apply(&etcd, &keys, &file.display().to_string(), &by, &text).await?;
    let (rev, stored) = match applied {
        Applied::Stored(r) => (r, true),
        Applied::Unchanged(r) => (r, false),
    };
    if args.json {
        let mut v = summary(&rev);
        v["stored"] = stored.into();
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else if stored {
        outln!(
            "{}: stored as revision {} of cluster `{}`",
            file.display(),
            rev.revision,
            args.etcd.cluster
        );
    } else {
        outln!(
            "{}: unchanged, revision {} is this file already",
            file.display(),
            rev.revision
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `bulwark apply --history`.
async fn history(args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let (etcd, keys) = connect(&args.etcd).await?;
    let revisions = cluster::stack::history(&etcd, &keys).await?;
    if args.json {
        let list: Vec<_> = revisions.iter().map(summary).collect();
        outln!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if revisions.is_empty() {
        outln!(
            "no stack applied to cluster `{}` yet (`bulwark apply -f FILE`)",
            args.etcd.cluster
        );
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:>8}  {:<24}  {:<16} {:>6}  FILE",
        "REVISION",
        "APPLIED",
        "BY",
        "LINES"
    );
    for r in &revisions {
        outln!(
            "{:>8}  {:<24}  {:<16} {:>6}  {}",
            r.revision,
            applied_at(r),
            r.by,
            r.text.lines().count(),
            r.file
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn applied_at(r: &StackRevision) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.applied_at_ms),
    )
    .to_string()
}

/// A revision in JSON, without its text.
fn summary(r: &StackRevision) -> serde_json::Value {
    serde_json::json!({
        "revision": r.revision,
        "file": r.file,
        "by": r.by,
        "applied_at_ms": r.applied_at_ms,
        "lines": r.text.lines().count(),
        "bytes": r.text.len(),
        "etcd_revision": r.etcd_revision,
    })
}
