//! A replica incarnation's resources: its cgroups (made before the spawn, joined by the
//! child before exec, removed once it is gone), its `oom_score_adj`, and whether the
//! kernel's OOM killer ended it. Every cgroup file is touched on the blocking pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use launch::Placement;
use launch::cgroup::{Cgroups, Limits, ReplicaCgroup, Usage};

/// Makes cgroup names unique within this bulwark: `<service>-<index>-<generation>`.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Where bulwark's cgroups are, or why it has none.
pub type CgroupSupport = Result<Arc<Cgroups>, String>;

/// The limits of `svc`'s replicas, as the cgroup layer takes them.
pub fn limits(svc: &spec::Service) -> Limits {
    Limits {
        memory: svc.resources.memory,
        cpu_quota_us: svc.resources.cpu_quota_us(),
        pids: svc.resources.pids,
    }
}

/// The cgroups of a new incarnation of `svc`'s replica `index` (`None` when the service
/// sets no resources) and how its child is placed.
pub(crate) async fn prepare(
    support: &CgroupSupport,
    svc: &spec::Service,
    index: u32,
) -> Result<(Option<Arc<ReplicaCgroup>>, Placement), String> {
    let mut placement = Placement {
        cgroup_procs: Vec::new(),
        oom_score_adj: Some(svc.priority.oom_score_adj()),
        inherit: Vec::new(),
    };
    if svc.resources.is_empty() {
        return Ok((None, placement));
    }
    let cgroups = support.as_ref().map_err(|why| {
        format!(
            "service {}: [services.{}.resources] needs cgroups, which bulwark cannot use: {why}",
            svc.name, svc.name
        )
    })?;
    let limits = limits(svc);
    if let Some(e) = cgroups.missing(&limits) {
        return Err(format!("service {}: resources: {e}", svc.name));
    }
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    let name = format!("{}-{index}-{generation}", svc.name);
    let cgroups = cgroups.clone();
    let made = tokio::task::spawn_blocking(move || cgroups.create(&name, limits))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("service {}: resources: {e}", svc.name))?;
    placement.cgroup_procs = made.procs_files();
    Ok((Some(Arc::new(made)), placement))
}

/// Once the incarnation's process is gone: how many of its processes the OOM killer
/// took, then its cgroups emptied and removed.
pub(crate) async fn finish(cgroup: Arc<ReplicaCgroup>) -> u64 {
    tokio::task::spawn_blocking(move || {
        let kills = cgroup.oom_kills();
        cgroup.remove();
        kills
    })
    .await
    .unwrap_or(0)
}

/// Current usage of each given cgroup, read on the blocking pool.
pub async fn usage(cgroups: Vec<Arc<ReplicaCgroup>>) -> Vec<Usage> {
    tokio::task::spawn_blocking(move || cgroups.iter().map(|c| c.usage()).collect())
        .await
        .unwrap_or_default()
}
