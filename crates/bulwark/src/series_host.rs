//! What the dashboard's time series read of the running stack (`observe::series::Source`):
//! the supervisor's replicas, the proxy's counters, the remediation's per-service outcome
//! counters, the resource sampler's latest CPU and RSS and the SLO budgets.

use std::collections::HashMap;
use std::sync::Arc;

use observe::series::{Counts, ReplicaReading, Resources, ServiceReading, Source};

pub struct SeriesHost {
    pub supervisor: runtime::Supervisor,
    pub hooks: Arc<proxy::Hooks>,
    pub measures: Arc<remedy::Measures>,
    pub resources: Arc<Resources>,
    pub plane: observe::plane::Plane,
}

impl Source for SeriesHost {
    fn read(&self) -> Vec<ServiceReading> {
        let now = std::time::Instant::now();
        let slos = self.plane.slo_reports();
        self.supervisor
            .status()
            .into_iter()
            .map(|svc| {
                let proxy = self.hooks.stats(&svc.name);
                let seen: HashMap<u32, &proxy::ReplicaStats> = proxy
                    .iter()
                    .flat_map(|p| &p.replicas)
                    .map(|s| (s.replica, s))
                    .collect();
                let requests = self.measures.read(&svc.name, now).map(|r| Counts {
                    // Counted since bulwark started: never reset.
                    epoch: 0,
                    total: r.total(),
                    failed: r.failed(),
                    latency: r.latency().to_vec(),
                });
                let replicas = svc
                    .replicas
                    .iter()
                    .map(|r| {
                        let seen = seen.get(&r.index).copied();
                        let usage = self.resources.get(&svc.name, r.index);
                        ReplicaReading {
                            index: r.index,
                            requests: seen.map(|s| Counts {
                                epoch: s.epoch,
                                total: s.tries,
                                failed: s.failed,
                                latency: s.latency.clone(),
                            }),
                            inflight: seen.and_then(|s| s.inflight),
                            ewma_ms: seen.map(|s| s.ewma_ms),
                            cpu: usage.and_then(|u| u.0),
                            rss_bytes: usage.map(|u| u.1),
                            restarts: r.restarts,
                            ready: r.ready,
                            // A replica the balancer does not hold (not ready, or not
                            // proxied) is not ejected.
                            ejected: proxy.as_ref().map(|_| seen.is_some_and(|s| s.ejected)),
                            breaker_open: seen.and_then(|s| s.breaker_open),
                        }
                    })
                    .collect();
                ServiceReading {
                    ready: svc.replicas.iter().filter(|r| r.ready).count() as u32,
                    budget_left: slos
                        .iter()
                        .find(|s| s.service == svc.name)
                        .map(|s| s.error_budget_remaining),
                    inflight: proxy.as_ref().map(|p| p.inflight),
                    requests,
                    replicas,
                    name: svc.name,
                }
            })
            .collect()
    }
}
