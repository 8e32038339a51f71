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
    let view = NodesView::read(&etcd, &keys).await?;
    let now = bus::now_ms();
    if json {
        let list: Vec<serde_json::Value> = nodes.iter().map(|n| view.json(n, now)).collect();
        outln!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if nodes.is_empty() {
        outln!("no node has joined cluster `{}`", args.cluster);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<20} {:<6} {:<24} {:<22} {:>8}  {:<28}  REPLICAS (READY)",
        "NAME",
        "STATE",
        "LABELS",
        "ADDRESS",
        "AGE",
        "REQUESTED/CAPACITY"
    );
    for n in &nodes {
        let node = n.record.name.as_str();
        let labels: Vec<String> = n
            .record
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let age = std::time::Duration::from_secs(now.saturating_sub(n.record.started_at_ms) / 1000);
        let name = match view.is_scheduler(node) {
            true => format!("{node} (scheduler)"),
            false => node.to_owned(),
        };
        let replicas = view.replicas_of(node);
        let placed = match replicas.is_empty() {
            true => "-".to_owned(),
            false => format!(
                "{} ({} ready)",
                replicas.join(","),
                view.ready_of(node).len()
            ),
        };
        let usage = crate::capacity::usage(view.requested_on(node), n.record.capacity);
        outln!(
            "{:<20} {:<6} {:<24} {:<22} {:>8}  {usage:<28}  {placed}",
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
    print_unplaced(&view.unplaced);
    Ok(ExitCode::SUCCESS)
}

/// What `bulwark nodes` shows beside the node records, read from etcd.
struct NodesView {
    placements: cluster::Placements,
    by_node: std::collections::BTreeMap<String, Vec<String>>,
    scheduler: Option<String>,
    endpoints: std::collections::BTreeMap<(String, String, u32), cluster::schedule::Endpoint>,
    requests: std::collections::BTreeMap<String, policy::placement::Resources>,
    unplaced: cluster::schedule::Unplaced,
}

impl NodesView {
    async fn read(etcd: &cluster::Etcd, keys: &cluster::Keys) -> anyhow::Result<Self> {
        let (placements, scheduler) = cluster::schedule::placements(etcd, keys).await?;
        Ok(NodesView {
            by_node: crate::scheduler::by_node(&placements),
            placements,
            scheduler,
            endpoints: cluster::schedule::endpoints(etcd, keys).await?,
            requests: requests(etcd, keys).await?,
            unplaced: cluster::schedule::unplaced(etcd, keys).await?,
        })
    }

    fn is_scheduler(&self, node: &str) -> bool {
        self.scheduler.as_deref() == Some(node)
    }

    fn replicas_of(&self, node: &str) -> &[String] {
        self.by_node.get(node).map_or(&[], Vec::as_slice)
    }

    fn ready_of(&self, node: &str) -> Vec<String> {
        self.endpoints
            .iter()
            .filter(|((n, _, _), e)| n == node && e.ready)
            .map(|((_, s, i), _)| format!("{s}/{i}"))
            .collect()
    }

    fn requested_on(&self, node: &str) -> policy::placement::Resources {
        requested(node, &self.placements, &self.requests)
    }

    fn json(&self, n: &cluster::NodeInfo, now: u64) -> serde_json::Value {
        let node = n.record.name.as_str();
        let requested = self.requested_on(node);
        serde_json::json!({
            "name": node,
            "state": n.state.as_str(),
            "labels": n.record.labels,
            "address": n.record.api,
            "version": n.record.version,
            "started_at_ms": n.record.started_at_ms,
            "age_s": now.saturating_sub(n.record.started_at_ms) / 1000,
            "scheduler": self.is_scheduler(node),
            "replicas": self.replicas_of(node),
            "ready": self.ready_of(node),
            "capacity": n.record.capacity.map(|c| resources_json(c.cpu_millis, c.memory)),
            "requested": resources_json(requested.cpu_millis, requested.memory),
        })
    }
}

/// The scheduler's unplaced replicas under a table, one line each.
pub fn print_unplaced(unplaced: &cluster::schedule::Unplaced) {
    if !unplaced.replicas.is_empty() {
        outln!("\nunplaced (stack revision {}):", unplaced.stack_revision);
        for line in &unplaced.replicas {
            outln!("  {line}");
        }
    }
}

/// What one replica of each service of the applied stack requests (none: no stack, or one
/// that no longer parses, which `apply` would have refused).
pub async fn requests(
    etcd: &cluster::Etcd,
    keys: &cluster::Keys,
) -> anyhow::Result<std::collections::BTreeMap<String, policy::placement::Resources>> {
    let Some(applied) = cluster::stack::current(etcd, keys).await? else {
        return Ok(Default::default());
    };
    let Ok(stack) = spec::parse_shape(&applied.text, std::path::Path::new("cluster stack")) else {
        return Ok(Default::default());
    };
    Ok(stack
        .services
        .iter()
        .map(|s| (s.name.clone(), crate::scheduler::request_of(s)))
        .collect())
}

/// The requests of the replicas placed on `node`, added up.
fn requested(
    node: &str,
    placements: &cluster::Placements,
    requests: &std::collections::BTreeMap<String, policy::placement::Resources>,
) -> policy::placement::Resources {
    let mut sum = policy::placement::Resources::default();
    for ((service, _), on) in placements {
        if on == node
            && let Some(r) = requests.get(service)
        {
            sum.cpu_millis = sum.cpu_millis.saturating_add(r.cpu_millis);
            sum.memory = sum.memory.saturating_add(r.memory);
        }
    }
    sum
}

/// `{"cpu": 1.5, "memory": 536870912}`: cores and bytes.
fn resources_json(cpu_millis: u64, memory: u64) -> serde_json::Value {
    serde_json::json!({ "cpu": cpu_millis as f64 / 1000.0, "memory": memory })
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
