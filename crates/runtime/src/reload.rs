//! Reconciling a changed stack with the running one.

use std::sync::Arc;

use crate::replica::Control;
use crate::supervisor::{ControlError, ServiceEntry, Supervisor};

/// What a reload did, and the services whose new spec needs new processes: the caller
/// rolls them out (the replicas keep running the stable revision until then).
#[derive(Debug, Default)]
pub struct Reloaded {
    /// A line per change.
    pub changes: Vec<String>,
    /// New specs to roll out.
    pub rollouts: Vec<spec::Service>,
}

impl Supervisor {
    /// Applies a changed stack: new services start (once their dependencies are ready),
    /// removed ones drain and stop, replica counts follow `replicas`, and settings that
    /// need no new process (restart rules, backoff, stop signal and grace, the disruption
    /// budget, `expose`, SLOs) apply at once. A service whose command, environment,
    /// working directory or probes changed is returned in `rollouts`.
    pub fn reload(&self, stack: &spec::Stack) -> Result<Reloaded, ControlError> {
        self.check_running()?;
        let new_names: Vec<String> = stack.services.iter().map(|s| s.name.clone()).collect();
        let mut out = Reloaded {
            changes: self.remove_missing(&new_names),
            rollouts: vec![],
        };
        for svc in &stack.services {
            match self.replace_spec(svc) {
                Change::Added => out.changes.push(format!("{}: added", svc.name)),
                Change::Rollout => {
                    out.rollouts.push(svc.clone());
                    out.changes.push(format!(
                        "{}: rollout (its command, environment or probes changed)",
                        svc.name
                    ));
                }
                Change::Busy => out.changes.push(format!(
                    "{}: not applied: a rollout is under way; wait for it or abort it, then \
                     reload again",
                    svc.name
                )),
                Change::InPlace => out
                    .changes
                    .push(format!("{}: settings updated in place", svc.name)),
                Change::None => {}
            }
        }
        self.shared.set_order(new_names.clone());
        // Scale the services that run, then start the added ones in dependency order.
        for svc in &stack.services {
            let (live, desired) = self
                .shared
                .lock()
                .get(svc.name.as_str())
                .map_or((0, 0), |e| (e.replicas.len() as u32, e.desired));
            // An autoscaled service keeps the count its autoscaler chose, within the new
            // bounds; `replicas` is only where it starts.
            let wanted = svc
                .autoscale
                .map_or(svc.replicas, |a| desired.clamp(a.min, a.max));
            let now = if svc.autoscale.is_some() {
                desired
            } else {
                live
            };
            if live == 0 && svc.autoscale.is_none() && desired != wanted {
                // Not started (no replica yet, e.g. `replicas = 0` until now, or waiting for
                // its dependencies): `start_in_order` starts the new count.
                if let Some(e) = self.shared.lock().get_mut(svc.name.as_str()) {
                    e.desired = wanted;
                }
                out.changes
                    .push(format!("{}: scaled {desired} -> {wanted}", svc.name));
            } else if now != wanted && live > 0 {
                match self.scale(&svc.name, wanted) {
                    Ok(from) => out
                        .changes
                        .push(format!("{}: scaled {from} -> {wanted}", svc.name)),
                    Err(e) => out.changes.push(format!("{}: not scaled: {e}", svc.name)),
                }
            }
        }
        let sup = self.clone();
        crate::leader::ensure_tasks(&self.shared);
        tokio::spawn(async move { sup.start_in_order(&new_names).await });
        if out.changes.is_empty() {
            out.changes.push("nothing changed".into());
        }
        Ok(out)
    }

    /// Drains, stops and forgets the replicas of services that are not in `names`.
    fn remove_missing(&self, names: &[String]) -> Vec<String> {
        let mut changes = vec![];
        for name in self.shared.order().iter().filter(|n| !names.contains(n)) {
            let mut services = self.shared.lock();
            if let Some(entry) = services.get_mut(name.as_str()) {
                entry.desired = 0;
                for r in entry.replicas.values() {
                    let _ = r.control.send(Control::Remove);
                }
            }
            changes.push(format!("{name}: removed"));
        }
        changes
    }

    /// Applies what of `svc` needs no new process to the stable revision (each replica's
    /// next incarnation runs it) and says what that changes.
    fn replace_spec(&self, svc: &spec::Service) -> Change {
        let mut services = self.shared.lock();
        let Some(entry) = services.get_mut(svc.name.as_str()) else {
            let entry = ServiceEntry::new(svc, self.shared.log_lines, self.shared.echo_logs);
            services.insert(svc.name.clone(), entry);
            return Change::Added;
        };
        let old = entry.spec.clone();
        let process = needs_new_processes(&old, svc);
        if process && entry.rolling_out {
            return Change::Busy;
        }
        let stable = Arc::new(if process {
            keep_processes(svc, &old)
        } else {
            svc.clone()
        });
        // A new count is scaled (and said) by itself.
        let changed = spec::Service {
            replicas: old.replicas,
            ..(*stable).clone()
        } != *old;
        entry.revisions.insert(entry.stable, stable.clone());
        entry.spec = stable;
        if process {
            Change::Rollout
        } else if changed {
            Change::InPlace
        } else {
            Change::None
        }
    }
}

/// What a reload does to one service of the new stack.
enum Change {
    Added,
    /// New processes are needed: a rollout.
    Rollout,
    /// New processes are needed, but a rollout is under way.
    Busy,
    /// Applied to the running replicas (or only to the proxy).
    InPlace,
    None,
}

/// Whether running replicas of `old` must be replaced to run `new` (Kubernetes' pod
/// template: what the process is started with, its probes and its notify socket). The match is exhaustive
/// so that a new field must be placed on one side or the other.
pub(crate) fn needs_new_processes(old: &spec::Service, new: &spec::Service) -> bool {
    let spec::Service {
        // Applied in place: the name is the key, the count is scaled, dependencies order
        // only starts, restart and stop settings are read at the next exit or stop, and
        // `expose`, `slos`, `min_available`, `rollout`, `autoscale` and `anomaly` belong
        // to the proxy, observability, the rollout and remediation themselves.
        name: _,
        replicas: _,
        depends_on: _,
        expose: _,
        slos: _,
        min_available: _,
        rollout: _,
        autoscale: _,
        anomaly: _,
        restart: _,
        restart_rules: _,
        stop_signal: _,
        stop_grace: _,
        backoff: _,
        // The cluster scheduler's; one machine has nowhere else to run a replica.
        placement: _,
        // Read when the next incarnation starts (its cgroups and oom_score_adj are made
        // then), or at its next exit.
        resources: _,
        on_oom: _,
        priority: _,
        // Read when the next incarnation starts: a checkpoint taken under other settings
        // is not restored (`crate::warm::Stamp`).
        warm: _,
        run,
        env,
        secrets,
        cwd,
        container,
        startup,
        liveness,
        readiness,
        notify,
        // Read by the election task each round (`crate::leader`), except what is in the
        // replicas' environment: whether there is a token file, and where.
        leader,
    } = old;
    *run != new.run
        || *env != new.env
        || *secrets != new.secrets
        || *cwd != new.cwd
        || *container != new.container
        || *startup != new.startup
        || *liveness != new.liveness
        || *readiness != new.readiness
        || *notify != new.notify
        || leader.as_ref().map(|l| &l.token_file) != new.leader.as_ref().map(|l| &l.token_file)
}

/// `new` with the process settings of `old`: what the stable revision runs while `new`
/// is rolled out.
fn keep_processes(new: &spec::Service, old: &spec::Service) -> spec::Service {
    spec::Service {
        run: old.run.clone(),
        env: old.env.clone(),
        secrets: old.secrets.clone(),
        cwd: old.cwd.clone(),
        container: old.container.clone(),
        startup: old.startup.clone(),
        liveness: old.liveness.clone(),
        readiness: old.readiness.clone(),
        notify: old.notify,
        ..new.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn service(extra: &str) -> spec::Service {
        let toml = format!("[services.s]\nrun = [\"sleep\", \"60\"]\n{extra}");
        let mut stack = spec::parse(&toml, std::path::Path::new("t.toml")).expect("valid");
        stack.services.remove(0)
    }

    #[test]
    fn what_a_process_starts_with_needs_new_processes() {
        let old = service("");
        type Edit = fn(&mut spec::Service);
        let changes: [(&str, Edit); 6] = [
            ("run", |s| s.run.push("x".into())),
            ("env", |s| {
                s.env.insert("A".into(), "1".into());
            }),
            ("cwd", |s| s.cwd = Some("/tmp".into())),
            ("startup", |s| {
                s.startup = s.liveness.clone().or(Some(probe()))
            }),
            ("liveness", |s| s.liveness = Some(probe())),
            ("readiness", |s| s.readiness = Some(probe())),
        ];
        for (field, change) in changes {
            let mut new = old.clone();
            change(&mut new);
            assert_ne!(old, new, "{field}: the change changes nothing");
            assert!(needs_new_processes(&old, &new), "{field}");
            let kept = keep_processes(&new, &old);
            assert_eq!(
                kept, old,
                "{field}: the stable revision keeps its processes"
            );
        }
        assert!(!needs_new_processes(&old, &old.clone()));
    }

    #[test]
    fn supervision_count_dependencies_and_proxy_settings_apply_in_place() {
        let old = service("");
        let exposed = service("expose = { listen = \"127.0.0.1:0\" }\n");
        let mut new = old.clone();
        new.replicas = 3;
        new.depends_on = vec!["d".into()];
        new.expose = exposed.expose;
        new.restart = spec::RestartPolicy::Never;
        new.restart_rules.push(spec::RestartRule {
            exit_codes: vec![3],
            action: spec::RestartAction::Stop,
        });
        new.stop_signal = nix::sys::signal::Signal::SIGINT;
        new.stop_grace += Duration::from_secs(1);
        new.backoff.max += Duration::from_secs(1);
        assert!(new.expose.is_some());
        assert!(!needs_new_processes(&old, &new));
    }

    fn probe() -> spec::Probe {
        service("[services.s.liveness]\ntcp = true\n")
            .liveness
            .expect("a liveness probe")
    }
}
