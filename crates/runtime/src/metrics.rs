//! Supervisor metrics, registered in the shared Prometheus registry.

use bus::ProbeKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::ReplicaState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    service: String,
    replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    service: String,
    replica: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    service: String,
    probe: &'static str,
    result: &'static str,
}

/// Handles are cheap clones of shared families.
#[derive(Clone, Default)]
pub struct Metrics {
    state: Family<StateLabels, Gauge>,
    ready: Family<ReplicaLabels, Gauge>,
    restarts: Family<ReplicaLabels, Counter>,
    oom_kills: Family<ReplicaLabels, Counter>,
    probes: Family<ProbeLabels, Counter>,
    leader_changes: Family<ServiceLabels, Counter>,
    leader_token: Family<ServiceLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register(
            "bulwark_replica_state",
            "Replica state: 1 for the state the replica is in, 0 for the others",
            m.state.clone(),
        );
        registry.register(
            "bulwark_replica_ready",
            "1 when the replica is in its service's balancer",
            m.ready.clone(),
        );
        registry.register(
            "bulwark_replica_restarts",
            "Restarts of a replica (crashes, failed probes and requested restarts)",
            m.restarts.clone(),
        );
        registry.register(
            "bulwark_replica_oom_kills",
            "Incarnations of a replica killed by the kernel's OOM killer",
            m.oom_kills.clone(),
        );
        registry.register(
            "bulwark_probe_results",
            "Probe attempts by probe kind and result",
            m.probes.clone(),
        );
        registry.register(
            "bulwark_leader_changes",
            "Leaders elected for a service with [leader] (the first one included)",
            m.leader_changes.clone(),
        );
        registry.register(
            "bulwark_leader_token",
            "The fencing token of the service's current leader; 0 while it has none",
            m.leader_token.clone(),
        );
        registry.register(
            "bulwark_log_lines_dropped",
            "Replica output lines not echoed to bulwark's stdout because it was blocked or closed (the lines are still kept for `bulwark logs`)",
            crate::logs::ECHO_DROPPED.clone(),
        );
        m
    }

    /// A leader was elected with `token` (`None`: the service has no leader now).
    pub(crate) fn leader(&self, service: &str, token: Option<u64>) {
        let labels = ServiceLabels {
            service: service.to_owned(),
        };
        if token.is_some() {
            self.leader_changes.get_or_create(&labels).inc();
        }
        let value = token.map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX));
        self.leader_token.get_or_create(&labels).set(value);
    }

    pub(crate) fn oom_killed(&self, service: &str, index: u32) {
        self.oom_kills
            .get_or_create(&ReplicaLabels {
                service: service.to_owned(),
                replica: index.to_string(),
            })
            .inc();
    }

    pub(crate) fn probe(&self, service: &str, probe: ProbeKind, ok: bool) {
        self.probes
            .get_or_create(&ProbeLabels {
                service: service.to_owned(),
                probe: probe.as_str(),
                result: if ok { "success" } else { "failure" },
            })
            .inc();
    }

    pub(crate) fn set_state(&self, service: &str, replica: u32, state: ReplicaState, ready: bool) {
        let replica = replica.to_string();
        for s in ReplicaState::ALL {
            self.state
                .get_or_create(&StateLabels {
                    service: service.to_owned(),
                    replica: replica.clone(),
                    state: s.as_str(),
                })
                .set(i64::from(s == state));
        }
        let labels = ReplicaLabels {
            service: service.to_owned(),
            replica,
        };
        self.ready.get_or_create(&labels).set(i64::from(ready));
        // The restart counter exists (at 0) from the replica's first state on, so a
        // dashboard's `increase()` reads 0 rather than no data before the first restart.
        drop(self.restarts.get_or_create(&labels));
    }

    pub(crate) fn restarted(&self, service: &str, replica: u32) {
        self.restarts
            .get_or_create(&ReplicaLabels {
                service: service.to_owned(),
                replica: replica.to_string(),
            })
            .inc();
    }

    /// A replica removed by scaling down leaves no stale series behind.
    pub(crate) fn forget(&self, service: &str, replica: u32) {
        let replica = replica.to_string();
        for s in ReplicaState::ALL {
            self.state.remove(&StateLabels {
                service: service.to_owned(),
                replica: replica.clone(),
                state: s.as_str(),
            });
        }
        let labels = ReplicaLabels {
            service: service.to_owned(),
            replica,
        };
        self.ready.remove(&labels);
        self.restarts.remove(&labels);
        self.oom_kills.remove(&labels);
    }
}
