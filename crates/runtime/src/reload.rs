//! Reconciling a changed stack with the running one.

use std::sync::Arc;

use crate::replica::Control;
use crate::supervisor::{ControlError, ServiceEntry, Supervisor};

impl Supervisor {
    /// Applies a changed stack: new services start (once their dependencies are ready),
    /// removed ones drain and stop, replica counts follow `replicas`, and a service whose
    /// command, environment, probes or stop settings changed gets a rolling restart.
    /// Returns a line per change. Changes to `expose` alone touch no replica.
    pub fn reload(&self, stack: &spec::Stack) -> Result<Vec<String>, ControlError> {
        self.check_running()?;
        let new_names: Vec<String> = stack.services.iter().map(|s| s.name.clone()).collect();
        let mut changes = self.remove_missing(&new_names);
        let mut rolling = vec![];
        for svc in &stack.services {
            match self.replace_spec(svc) {
                Change::Added => changes.push(format!("{}: added", svc.name)),
                Change::Rolling => {
                    rolling.push(svc.name.clone());
                    changes.push(format!(
                        "{}: rolling restart (its command or settings changed)",
                        svc.name
                    ));
                }
                Change::Expose => changes.push(format!("{}: proxy policies updated", svc.name)),
                Change::None => {}
            }
        }
        self.shared.set_order(new_names.clone());
        // Scale the services that run, then start the added ones in dependency order.
        for svc in &stack.services {
            let live = self
                .shared
                .lock()
                .get(svc.name.as_str())
                .map_or(0, |e| e.replicas.len() as u32);
            if live != svc.replicas && live > 0 {
                let from = self.scale(&svc.name, svc.replicas)?;
                changes.push(format!("{}: scaled {from} -> {}", svc.name, svc.replicas));
            }
        }
        let sup = self.clone();
        tokio::spawn(async move { sup.start_in_order(&new_names).await });
        for name in rolling {
            self.restart(&name, None)?;
        }
        if changes.is_empty() {
            changes.push("nothing changed".into());
        }
        Ok(changes)
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

    /// Makes `svc` the current spec of its service (each replica's next incarnation runs
    /// it) and says what that changes.
    fn replace_spec(&self, svc: &spec::Service) -> Change {
        let mut services = self.shared.lock();
        let Some(entry) = services.get_mut(svc.name.as_str()) else {
            let entry = ServiceEntry::new(svc, self.shared.log_lines, self.shared.echo_logs);
            services.insert(svc.name.clone(), entry);
            return Change::Added;
        };
        let old = std::mem::replace(&mut entry.spec, Arc::new(svc.clone()));
        if needs_rolling_restart(&old, svc) {
            Change::Rolling
        } else if old.expose != svc.expose {
            Change::Expose
        } else {
            Change::None
        }
    }
}

/// What a reload does to one service of the new stack.
enum Change {
    Added,
    Rolling,
    /// Only the proxy's side changed.
    Expose,
    None,
}

/// Whether running replicas of `old` must be replaced to run `new`: anything a replica
/// process or its task acts on. The match is exhaustive so that a new field must be placed
/// on one side or the other.
pub(crate) fn needs_rolling_restart(old: &spec::Service, new: &spec::Service) -> bool {
    let spec::Service {
        // Replaced without touching a replica: the name is the key, the count is scaled,
        // dependencies order only starts, and `expose` and `slos` belong to the proxy
        // and observability.
        name: _,
        replicas: _,
        depends_on: _,
        expose: _,
        slos: _,
        min_available: _,
        run,
        restart,
        restart_rules,
        env,
        cwd,
        stop_signal,
        stop_grace,
        backoff,
        startup,
        liveness,
        readiness,
    } = old;
    *run != new.run
        || *restart != new.restart
        || *restart_rules != new.restart_rules
        || *env != new.env
        || *cwd != new.cwd
        || *stop_signal != new.stop_signal
        || *stop_grace != new.stop_grace
        || *backoff != new.backoff
        || *startup != new.startup
        || *liveness != new.liveness
        || *readiness != new.readiness
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
    fn process_settings_need_a_rolling_restart() {
        let old = service("");
        type Edit = fn(&mut spec::Service);
        let changes: [(&str, Edit); 11] = [
            ("run", |s| s.run.push("x".into())),
            ("restart", |s| s.restart = spec::RestartPolicy::Never),
            ("restart_rules", |s| {
                s.restart_rules.push(spec::RestartRule {
                    exit_codes: vec![3],
                    action: spec::RestartAction::Stop,
                })
            }),
            ("env", |s| {
                s.env.insert("A".into(), "1".into());
            }),
            ("cwd", |s| s.cwd = Some("/tmp".into())),
            ("stop_signal", |s| {
                s.stop_signal = nix::sys::signal::Signal::SIGINT
            }),
            ("stop_grace", |s| s.stop_grace += Duration::from_secs(1)),
            ("backoff", |s| s.backoff.max += Duration::from_secs(1)),
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
            assert!(needs_rolling_restart(&old, &new), "{field}");
        }
        assert!(!needs_rolling_restart(&old, &old.clone()));
    }

    #[test]
    fn count_dependencies_and_proxy_settings_do_not() {
        let old = service("");
        let exposed = service("expose = { listen = \"127.0.0.1:0\" }\n");
        let mut new = old.clone();
        new.replicas = 3;
        new.depends_on = vec!["d".into()];
        new.expose = exposed.expose;
        assert!(new.expose.is_some());
        assert!(!needs_rolling_restart(&old, &new));
    }

    fn probe() -> spec::Probe {
        service("[services.s.liveness]\ntcp = true\n")
            .liveness
            .expect("a liveness probe")
    }
}
