//! The rollouts of a running stack: one task per service under rollout, its commands and
//! its progress; the revisions' settings known to this process (for `undo`); and what
//! each service runs compared with its stack file.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bus::Bus;
pub(crate) use bus::now_ms;
use runtime::Supervisor;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::record::{Records, Revision, diff};
use crate::run::Run;
use crate::{Command, Error, Host, Status, Versions};

/// Revisions' settings kept per service for `undo` (the oldest are forgotten).
const KEPT_SPECS: usize = 10;

/// Every rollout of a `bulwark up`. Cheap to clone.
#[derive(Clone)]
pub struct Rollouts {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub sup: Supervisor,
    pub bus: Arc<Bus>,
    pub host: Arc<dyn Host>,
    pub versions: Arc<Versions>,
    pub records: Records,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: HashMap<String, Running>,
    /// The last status of each service's last rollout.
    last: HashMap<String, Status>,
    /// Settings by service and revision.
    specs: HashMap<String, Vec<(u32, Arc<spec::Service>)>>,
    /// Why a service runs other settings than its stack file says.
    drift: HashMap<String, String>,
}

struct Running {
    revision: u32,
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<Status>,
    task: JoinHandle<()>,
}

/// A stable fingerprint of what a revision's processes run. Secrets count by name only
/// (their `Debug`): the fingerprint is journalled, and a hash of a short secret could be
/// brute-forced from it. A changed secret value still rolls out on reload, which compares
/// the settings themselves.
fn fingerprint(s: &spec::Service) -> String {
    let text = format!(
        "{:?}{:?}{:?}{:?}{:?}{:?}{:?}",
        s.run, s.env, s.secrets, s.cwd, s.startup, s.liveness, s.readiness
    );
    format!("{:016x}", policy::hash_bytes(text.as_bytes()))
}

/// Whether two settings run the same processes, secret values included (in memory only).
fn same_processes(a: &spec::Service, b: &spec::Service) -> bool {
    fingerprint(a) == fingerprint(b) && a.secrets == b.secrets
}

impl Rollouts {
    /// Rollouts over `sup`; revision records go to `store` (the journal) when given.
    pub fn new(
        sup: Supervisor,
        bus: Arc<Bus>,
        host: Arc<dyn Host>,
        versions: Arc<Versions>,
        store: Option<Arc<dyn store::Store>>,
    ) -> Rollouts {
        Rollouts {
            inner: Arc::new(Inner {
                sup,
                bus,
                host,
                versions,
                records: Records::new(store),
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers the revisions `up` starts with after those in the journal: a service whose
    /// settings are those of its last recorded revision keeps its number; otherwise a new
    /// revision is recorded. Call before the supervisor starts.
    pub fn init(&self, stack: &spec::Stack) {
        for svc in &stack.services {
            let mut history = self.inner.records.list(&svc.name);
            // A rollout cut short by a stop of `up`: its replicas stopped with it.
            for r in history.iter_mut().filter(|r| r.outcome == "progressing") {
                r.outcome = "interrupted".into();
                r.ended_ms = Some(now_ms());
                r.reason = Some("bulwark stopped during the rollout".into());
                self.inner.records.save(r);
            }
            let print = fingerprint(svc);
            let last = history.iter().rev().find(|r| r.outcome == "completed");
            let revision = match last {
                Some(r) if r.fingerprint == print => r.revision,
                _ => {
                    let revision = history.last().map_or(1, |r| r.revision + 1);
                    self.inner.records.save(&Revision {
                        service: svc.name.clone(),
                        revision,
                        from: last.map_or(0, |r| r.revision),
                        strategy: "initial".into(),
                        changes: vec![],
                        started_ms: now_ms(),
                        ended_ms: Some(now_ms()),
                        outcome: "completed".into(),
                        reason: None,
                        trigger: "up".into(),
                        fingerprint: print,
                    });
                    revision
                }
            };
            let last = history.last().map_or(revision, |r| r.revision);
            self.inner.sup.renumber(&svc.name, revision, last);
            self.remember(&svc.name, revision, Arc::new(svc.clone()));
        }
    }

    fn remember(&self, service: &str, revision: u32, spec: Arc<spec::Service>) {
        let mut st = self.state();
        let list = st.specs.entry(service.to_owned()).or_default();
        list.retain(|(r, _)| *r != revision);
        list.push((revision, spec));
        if list.len() > KEPT_SPECS {
            list.remove(0);
        }
    }

    /// Starts rolling `new` out (its service's `rollout` settings say how); returns the
    /// new revision. `trigger` says what asked (`reload`, `start`, `undo to 1`).
    pub fn start(&self, new: spec::Service, trigger: &str) -> Result<u32, Error> {
        let name = new.name.clone();
        let old = self
            .inner
            .sup
            .service_spec(&name)
            .ok_or_else(|| Error::UnknownService(name.clone()))?;
        if let Some(r) = self.state().running.get(&name) {
            return Err(Error::Running {
                service: name,
                revision: r.revision,
            });
        }
        let from = self.inner.sup.revisions(&name).map_or(1, |v| v.stable);
        let changes = diff(&old, &new);
        // The rollout's settings, analysis and budget are the new file's.
        let revision = self.inner.sup.stage(&new)?;
        let new = Arc::new(new);
        self.remember(&name, revision, new.clone());
        let record = Revision {
            service: name.clone(),
            revision,
            from,
            strategy: new.rollout.strategy.as_str().into(),
            changes: changes.clone(),
            fingerprint: fingerprint(&new),
            started_ms: now_ms(),
            ended_ms: None,
            outcome: "progressing".into(),
            reason: None,
            trigger: trigger.into(),
        };
        self.inner.records.save(&record);
        self.inner.bus.publish(bus::EventKind::RolloutStarted {
            service: name.clone(),
            revision,
            from,
            strategy: new.rollout.strategy.as_str().into(),
            changes,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let run = Run::new(self.clone(), new, revision, from, record, rx);
        let status = run.status();
        // Listed before the task can end and unlist itself.
        let mut st = self.state();
        let task = tokio::spawn(run.go());
        st.running.insert(
            name,
            Running {
                revision,
                commands: tx,
                status,
                task,
            },
        );
        Ok(revision)
    }

    /// Starts rolling out the service's file settings again (`bulwark rollout start`),
    /// e.g. after a rollback.
    pub fn restart_from_file(&self, svc: &spec::Service) -> Result<u32, Error> {
        let running = self
            .inner
            .sup
            .service_spec(&svc.name)
            .ok_or_else(|| Error::UnknownService(svc.name.clone()))?;
        if same_processes(&running, svc) {
            return Err(Error::Unchanged {
                service: svc.name.clone(),
                revision: self.inner.sup.revisions(&svc.name).map_or(1, |v| v.stable),
            });
        }
        self.start(svc.clone(), "start")
    }

    /// Sends `command` to `service`'s rollout.
    pub fn command(&self, service: &str, command: Command) -> Result<(), Error> {
        let st = self.state();
        let r = st
            .running
            .get(service)
            .ok_or_else(|| Error::NotRunning(service.into()))?;
        r.commands
            .send(command)
            .map_err(|_| Error::NotRunning(service.into()))
    }

    /// Goes back (reads the journal: call it on the blocking pool): during a rollout,
    /// aborts it (traffic back on the stable revision at
    /// once); otherwise rolls out revision `to` (default: the one before the stable one)
    /// as a new revision. Returns the revision whose settings will run.
    pub fn undo(&self, service: &str, to: Option<u32>) -> Result<u32, Error> {
        let running = self
            .state()
            .running
            .get(service)
            .map(|r| r.status.borrow().from);
        if let Some(from) = running {
            self.command(service, Command::Abort)?;
            return Ok(from);
        }
        let view = self
            .inner
            .sup
            .revisions(service)
            .ok_or_else(|| Error::UnknownService(service.into()))?;
        let target = match to {
            Some(t) => t,
            None => self
                .history(service)
                .iter()
                .rev()
                .filter(|r| r.outcome == "completed" && r.revision < view.stable)
                .map(|r| r.revision)
                .next()
                .ok_or_else(|| Error::UnknownRevision {
                    service: service.into(),
                    revision: view.stable.saturating_sub(1),
                })?,
        };
        let spec = {
            let st = self.state();
            st.specs
                .get(service)
                .and_then(|l| l.iter().find(|(r, _)| *r == target))
                .map(|(_, s)| s.clone())
        }
        .ok_or_else(|| Error::UnknownRevision {
            service: service.into(),
            revision: target,
        })?;
        // What `target`'s processes ran; everything applied in place stays as it is now.
        let current = self
            .inner
            .sup
            .service_spec(service)
            .ok_or_else(|| Error::UnknownService(service.into()))?;
        let spec = spec::Service {
            run: spec.run.clone(),
            env: spec.env.clone(),
            secrets: spec.secrets.clone(),
            cwd: spec.cwd.clone(),
            startup: spec.startup.clone(),
            liveness: spec.liveness.clone(),
            readiness: spec.readiness.clone(),
            ..(*current).clone()
        };
        if same_processes(&spec, &current) {
            return Err(Error::Unchanged {
                service: service.into(),
                revision: target,
            });
        }
        self.start(spec, &format!("undo to {target}"))?;
        Ok(target)
    }

    /// The running rollout's progress, or the last one's.
    pub fn status(&self, service: &str) -> Option<Status> {
        let st = self.state();
        st.running
            .get(service)
            .map(|r| r.status.borrow().clone())
            .or_else(|| st.last.get(service).cloned())
    }

    /// Follows the running rollout's progress.
    pub fn watch(&self, service: &str) -> Option<watch::Receiver<Status>> {
        self.state().running.get(service).map(|r| r.status.clone())
    }

    /// Every recorded revision of `service`, oldest first. Reads the journal: call it on
    /// the blocking pool.
    pub fn history(&self, service: &str) -> Vec<Revision> {
        self.inner.records.list(service)
    }

    /// Why `service` runs other settings than its stack file, if it does.
    pub fn drift(&self, service: &str) -> Option<String> {
        self.state().drift.get(service).cloned()
    }

    /// A reload found `service` as its file says (or is rolling it out): no drift.
    pub fn clear_drift(&self, service: &str) {
        self.state().drift.remove(service);
    }

    /// Called by a rollout's task as it ends.
    pub(crate) fn ended(&self, status: Status, drift: Option<String>) {
        let mut st = self.state();
        st.running.remove(&status.service);
        match drift {
            Some(d) => st.drift.insert(status.service.clone(), d),
            None => st.drift.remove(&status.service),
        };
        st.last.insert(status.service.clone(), status);
    }

    /// Stops every rollout task where it is (bulwark is stopping: every replica stops).
    pub fn close(&self) {
        for (_, r) in self.state().running.drain() {
            r.task.abort();
        }
    }
}
