//! What `bulwark up` asks of its host before starting anything: reaping orphans and enough
//! file descriptors.

use launch::NofileLimit;

/// Descriptors bulwark holds per replica: its stdout and stderr pipes, plus a probe's
/// socket or an exec probe's pipes.
const FDS_PER_REPLICA: u64 = 4;
/// Each proxied connection holds the client's socket and the upstream one.
const FDS_PER_CONNECTION: u64 = 2;
/// Listeners, the API, the journal, the runtime's own descriptors.
const FDS_SLACK: u64 = 256;

/// Called first thing in `bulwark up`.
///
/// - Becomes a child subreaper (always, not only as PID 1): whatever a replica
///   double-forks re-parents to bulwark rather than to init, and bulwark reaps it, so in
///   a container where bulwark is PID 1 no zombie piles up.
/// - Raises the soft `RLIMIT_NOFILE` to the hard limit (children get the original back)
///   and warns, with the numbers, when the stack could need more than that.
///
/// SIGPIPE needs nothing here: Rust sets it to "ignore" before `main`, so a closed stdout
/// is a write error (which the log echo counts), not a death; replicas get the default
/// disposition back when spawned.
pub fn prepare(stack: &spec::Stack) {
    if let Err(e) = launch::become_subreaper() {
        tracing::warn!(error = %e, "cannot become a child subreaper; orphans of replicas go to init");
    }
    // Also without the subreaper role: the reaper's pass is what forgets the children the
    // launcher spawned once they are gone, so its table stays as small as the live ones.
    launch::reap_orphans();
    match launch::raise_nofile_limit() {
        Ok(limit) => {
            if let Some(warning) = fd_warning(stack, limit) {
                tracing::warn!("{warning}");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// Descriptors the stack may need at its peak: (replicas, connections, total).
fn fds_needed(stack: &spec::Stack) -> (u64, u64, u64) {
    let replicas: u64 = stack.services.iter().map(|s| u64::from(s.replicas)).sum();
    let connections: u64 = stack
        .services
        .iter()
        .filter_map(|s| s.expose.as_ref())
        .map(|x| u64::from(x.limits.max_connections))
        .sum();
    let total = replicas
        .saturating_mul(FDS_PER_REPLICA)
        .saturating_add(connections.saturating_mul(FDS_PER_CONNECTION))
        .saturating_add(FDS_SLACK);
    (replicas, connections, total)
}

fn fd_warning(stack: &spec::Stack, limit: NofileLimit) -> Option<String> {
    let (replicas, connections, need) = fds_needed(stack);
    (need > limit.soft).then(|| {
        format!(
            "open-file limit too low for this stack: it may need {need} file descriptors \
             ({replicas} replicas x {FDS_PER_REPLICA} + {connections} connections \
             (limits.max_connections summed over exposed services) x {FDS_PER_CONNECTION} \
             + {FDS_SLACK}), but the limit is {} (hard limit {}). Past it, new connections \
             and replica restarts fail with \"too many open files\". Raise the hard limit \
             (`ulimit -Hn {need}` as root, LimitNOFILE= in a systemd unit, --ulimit nofile= \
             for a container) or lower `limits.max_connections`",
            limit.soft, limit.hard
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(max_connections: u32) -> spec::Stack {
        let toml = format!(
            "[services.web]\nrun = [\"true\"]\nreplicas = 3\n[services.web.expose]\n\
             listen = \"127.0.0.1:8080\"\n[services.web.expose.limits]\n\
             max_connections = {max_connections}\n[services.worker]\nrun = [\"true\"]\n"
        );
        spec::parse(&toml, std::path::Path::new("t.toml")).expect("valid")
    }

    #[test]
    fn counts_replicas_and_both_sides_of_each_connection() {
        let (replicas, connections, need) = fds_needed(&stack(1000));
        assert_eq!((replicas, connections), (4, 1000));
        assert_eq!(need, 4 * FDS_PER_REPLICA + 2000 + FDS_SLACK);
    }

    #[test]
    fn warns_only_when_the_limit_cannot_fit() {
        let limit = NofileLimit {
            before: 256,
            soft: 4096,
            hard: 4096,
        };
        assert!(fd_warning(&stack(1000), limit).is_none());
        let w = fd_warning(&stack(10_000), limit).expect("20k connections do not fit 4096");
        assert!(w.contains("20272"), "{w}");
        assert!(w.contains("limits.max_connections"), "{w}");
        assert!(w.contains("ulimit -Hn"), "{w}");
    }
}
