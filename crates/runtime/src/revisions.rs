//! Revisions of a service, as rollouts drive them: a new revision's spec is staged beside
//! the stable one, replicas of either are started and removed, the traffic split between
//! them is published with the endpoints, and the new one is finally made stable (or
//! forgotten).
//!
//! The decisions (how many to start or stop, when to move on) belong to the rollout
//! controller; this module only does what it is told, each call under one short lock.

use std::sync::Arc;
use std::time::Instant;

use bus::Split;
use tokio::sync::watch;

use crate::ReplicaState;
use crate::replica::Control;
use crate::supervisor::{ControlError, ServiceEntry, Supervisor, publish_endpoints};

/// One replica, as a rollout sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevisionReplica {
    pub index: u32,
    pub revision: u32,
    pub state: ReplicaState,
    /// Ready since then (`None`: not ready).
    pub ready_since: Option<Instant>,
    pub restarts: u32,
    /// Crash-looping, or exited for good.
    pub failing: bool,
}

/// A service's replicas and revisions at one moment.
#[derive(Debug, Clone)]
pub struct RevisionView {
    pub desired: u32,
    pub stable: u32,
    /// Replicas not being stopped.
    pub replicas: Vec<RevisionReplica>,
    pub split: Option<Split>,
    pub min_available: spec::Amount,
}

impl RevisionView {
    /// The live replicas of `revision`.
    pub fn of(&self, revision: u32) -> impl Iterator<Item = &RevisionReplica> {
        self.replicas.iter().filter(move |r| r.revision == revision)
    }

    /// Ready replicas of every revision.
    pub fn ready(&self) -> u32 {
        self.replicas
            .iter()
            .filter(|r| r.ready_since.is_some())
            .count() as u32
    }
}

impl Supervisor {
    /// Stages `spec` as a new revision of its service, to run beside the stable one;
    /// returns its number. The service is held (scaling waits) until [`Supervisor::settle`].
    pub fn stage(&self, spec: &spec::Service) -> Result<u32, ControlError> {
        self.check_running()?;
        let mut services = self.shared.lock();
        let entry = services
            .get_mut(spec.name.as_str())
            .ok_or_else(|| ControlError::UnknownService(spec.name.clone()))?;
        if entry.rolling_out {
            return Err(ControlError::RolloutUnderWay(spec.name.clone()));
        }
        entry.last_revision += 1;
        let rev = entry.last_revision;
        entry.revisions.insert(rev, Arc::new(spec.clone()));
        entry.rolling_out = true;
        Ok(rev)
    }

    /// Numbers the stable revision of `service` (before it starts: revisions go on from
    /// those of earlier runs).
    /// `last`: the highest revision recorded, so new ones never reuse a number.
    pub fn renumber(&self, service: &str, revision: u32, last: u32) {
        let mut services = self.shared.lock();
        if let Some(e) = services.get_mut(service)
            && e.replicas.is_empty()
        {
            e.revisions = std::collections::BTreeMap::from([(revision, e.spec.clone())]);
            e.stable = revision;
            e.last_revision = last.max(revision);
        }
    }

    /// The replicas and revisions of `service`.
    pub fn revisions(&self, service: &str) -> Option<RevisionView> {
        let services = self.shared.lock();
        let e = services.get(service)?;
        Some(view(e))
    }

    /// Replicas of `revision` still in the table, those draining and stopping included.
    pub fn running_of(&self, service: &str, revision: u32) -> usize {
        self.shared.lock().get(service).map_or(0, |e| {
            e.replicas
                .values()
                .filter(|r| r.revision == revision)
                .count()
        })
    }

    /// Wakes on every status change of `service`'s replicas.
    pub fn watch(&self, service: &str) -> Option<watch::Receiver<u64>> {
        self.shared
            .lock()
            .get(service)
            .map(|e| e.changed.subscribe())
    }

    /// Starts `n` replicas of `revision` at the lowest free indices; returns them.
    pub fn start_replicas(&self, service: &str, revision: u32, n: u32) -> Vec<u32> {
        let mut services = self.shared.lock();
        let Some(entry) = services.get_mut(service) else {
            return vec![];
        };
        let mut started = vec![];
        let mut index = 0;
        for _ in 0..n {
            while entry.replicas.contains_key(&index) {
                index += 1;
            }
            self.add_replica_of(entry, index, revision);
            started.push(index);
        }
        started
    }

    /// Drains, stops and forgets these replicas: out of the endpoints (and of
    /// [`Supervisor::revisions`]) at once, their requests in flight finish.
    pub fn remove_replicas(&self, service: &str, indices: &[u32]) {
        let mut services = self.shared.lock();
        if let Some(entry) = services.get_mut(service) {
            for i in indices {
                if let Some(r) = entry.replicas.get_mut(i) {
                    r.removing = true;
                    let _ = r.control.send(Control::Remove);
                }
            }
            publish_endpoints(entry);
            entry.changed.send_modify(|v| *v += 1);
        }
    }

    /// Publishes how requests divide between revisions (`None`: by the balancer alone).
    pub fn set_split(&self, service: &str, split: Option<Split>) {
        let mut services = self.shared.lock();
        if let Some(entry) = services.get_mut(service)
            && entry.split != split
        {
            entry.split = split;
            publish_endpoints(entry);
        }
    }

    /// Ends a rollout: `revision` becomes the stable one (promoted, or the old one kept
    /// after a rollback), every other revision is forgotten once its replicas are gone,
    /// the split is cleared and the service is released.
    pub fn settle(&self, service: &str, revision: u32) {
        let mut services = self.shared.lock();
        let Some(entry) = services.get_mut(service) else {
            return;
        };
        if let Some(spec) = entry.revisions.get(&revision).cloned() {
            entry.spec = spec;
            entry.stable = revision;
        }
        let running: std::collections::BTreeSet<u32> =
            entry.replicas.values().map(|r| r.revision).collect();
        entry
            .revisions
            .retain(|rev, _| *rev == revision || running.contains(rev));
        entry.rolling_out = false;
        entry.split = None;
        publish_endpoints(entry);
        entry.changed.send_modify(|v| *v += 1);
    }
}

fn view(e: &ServiceEntry) -> RevisionView {
    RevisionView {
        desired: e.desired,
        stable: e.stable,
        split: e.split.clone(),
        min_available: e.spec.min_available,
        replicas: e
            .replicas
            .values()
            .filter(|r| r.status.state != ReplicaState::Stopping && !r.removing)
            .map(|r| RevisionReplica {
                index: r.status.index,
                revision: r.revision,
                state: r.status.state,
                ready_since: r.status.ready.then_some(r.ready_since),
                restarts: r.status.restarts,
                failing: matches!(
                    r.status.state,
                    ReplicaState::CrashLooping | ReplicaState::Exited
                ),
            })
            .collect(),
    }
}
