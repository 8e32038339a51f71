//! What `bulwark up` and `bulwark check` do about `[services.NAME.resources]` and QoS:
//! bulwark's own `oom_score_adj`, the machine's cgroups, and whether every service's
//! limits can be enforced here. Blocking file I/O: call on the blocking pool.

use std::path::Path;
use std::sync::Arc;

use launch::cgroup::Cgroups;
use runtime::CgroupSupport;

/// bulwark's own `oom_score_adj`: below every replica's (`priority` maps to -500..500),
/// so under memory pressure the kernel kills replicas, which bulwark restarts, before it.
pub const SELF_OOM_SCORE_ADJ: i32 = -900;

/// Lowers bulwark's own OOM score (root only; a warning otherwise, which also names the
/// services whose negative `priority` cannot be given then).
pub fn protect_self(stack: &spec::Stack) {
    if let Err(e) = launch::protect_self(SELF_OOM_SCORE_ADJ) {
        tracing::warn!(
            error = %e,
            "cannot lower bulwark's own oom_score_adj to {SELF_OOM_SCORE_ADJ} (needs root or \
             CAP_SYS_RESOURCE): under memory pressure the kernel may kill bulwark itself"
        );
        let favoured: Vec<&str> = stack
            .services
            .iter()
            .filter(|s| s.priority.oom_score_adj() < 0)
            .map(|s| s.name.as_str())
            .collect();
        if !favoured.is_empty() {
            tracing::warn!(
                services = favoured.join(", "),
                "these services' priority cannot lower their oom_score_adj either; their \
                 replicas keep bulwark's"
            );
        }
    }
}

/// The machine's cgroups for `up` (`prepare`: bulwark's parents made, leftovers of a
/// killed bulwark removed) or `check` (only whether they could be written), and one
/// problem per service whose `resources` cannot be enforced, naming the key.
pub fn support(stack: &spec::Stack, file: &Path, prepare: bool) -> (CgroupSupport, Vec<String>) {
    let detected = Cgroups::detect().and_then(|c| {
        if prepare {
            for stale in c.prepare()? {
                tracing::info!(dir = %stale.display(), "removed the cgroups a killed bulwark left");
            }
        } else {
            c.writable()?;
        }
        Ok(c)
    });
    let support = detected.map(Arc::new).map_err(|e| e.to_string());
    let mut problems = Vec::new();
    for svc in stack.services.iter().filter(|s| !s.resources.is_empty()) {
        let at = format!("{}: [services.{}.resources]", file.display(), svc.name);
        match &support {
            Err(why) => problems.push(format!("{at}: cannot be enforced on this machine: {why}")),
            Ok(c) => {
                if let Some(e) = c.missing(&runtime::limits(svc)) {
                    problems.push(format!("{at}: cannot be enforced on this machine: {e}"));
                }
            }
        }
    }
    (support, problems)
}
