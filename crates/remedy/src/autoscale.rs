//! Autoscaling: every `interval`, each autoscaled service's measure per ready replica
//! goes through Kubernetes' HPA algorithm (`policy::autoscale`: tolerance, stabilization
//! windows, rate policies, min/max) and the count is set to what it decides. Replicas that
//! crashed or were ejected (learned from the bus) are covered by extra ones until back.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bus::{Bus, EventKind};
use policy::autoscale::{AutoscaleConfig, Autoscaler, ScalePolicy};
use serde::Serialize;
use spec::{Autoscale, ScaleTarget};
use tokio::task::JoinHandle;

use crate::metrics::{Metrics, ServiceLabels};
use crate::{Detector, Host, Measures, Reading};

/// What `bulwark status` shows of an autoscaled service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AutoscaleStatus {
    /// The service.
    pub service: String,
    /// Fewest replicas.
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// The measure (`in_flight`, `request_rate`, `cpu`, `latency_p99`).
    pub target: String,
    /// Its target per replica (latency in ms).
    pub goal: f64,
    /// The measure per ready replica at the last decision.
    pub value: Option<f64>,
    /// The count in force at the last decision.
    pub current: u32,
    /// What the last decision asked for.
    pub desired: u32,
    /// Why (the HPA step that decided).
    pub reason: String,
}

/// The autoscalers of a stack, one task per autoscaled service.
#[derive(Clone, Default)]
pub struct Autoscaling {
    status: Arc<Mutex<HashMap<String, AutoscaleStatus>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// What each autoscaler task works with.
#[derive(Clone)]
pub struct Inputs {
    /// The running stack.
    pub host: Arc<dyn Host>,
    /// Failures are learned from it; decisions are published on it.
    pub bus: Arc<Bus>,
    /// The proxy's outcomes.
    pub measures: Arc<Measures>,
    /// The sampler's CPU.
    pub detector: Arc<Detector>,
    pub(crate) metrics: Metrics,
}

impl Inputs {
    /// The inputs, with the metrics registered by `remedy`.
    pub fn new(
        host: Arc<dyn Host>,
        bus: Arc<Bus>,
        measures: Arc<Measures>,
        detector: Arc<Detector>,
        remedy: &crate::Remedy,
    ) -> Self {
        Inputs {
            host,
            bus,
            measures,
            detector,
            metrics: remedy.inner.shared.metrics.clone(),
        }
    }
}

impl Autoscaling {
    /// Starts (or, after a reload, restarts) one autoscaler per autoscaled service.
    pub fn start(&self, stack: &spec::Stack, inputs: &Inputs) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for t in tasks.drain(..) {
            t.abort();
        }
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.clear();
        for svc in &stack.services {
            let Some(a) = svc.autoscale else { continue };
            status.insert(
                svc.name.clone(),
                AutoscaleStatus {
                    service: svc.name.clone(),
                    min: a.min,
                    max: a.max,
                    target: a.target.name().into(),
                    goal: a.target.value(),
                    value: None,
                    current: svc.replicas,
                    desired: svc.replicas,
                    reason: "starting".into(),
                },
            );
            tasks.push(tokio::spawn(run(
                svc.name.clone(),
                a,
                inputs.clone(),
                self.status.clone(),
            )));
        }
    }

    /// Every autoscaled service's last decision.
    pub fn status(&self) -> Vec<AutoscaleStatus> {
        let mut v: Vec<_> = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.service.cmp(&b.service));
        v
    }

    /// Stops every autoscaler.
    pub fn close(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

fn config(a: &Autoscale) -> AutoscaleConfig {
    AutoscaleConfig {
        min: a.min,
        max: a.max,
        tolerance: a.tolerance,
        up_window: a.up_window,
        down_window: a.down_window,
        up: ScalePolicy {
            percent: a.up_percent,
            pods: a.up_replicas,
            period: a.period,
        },
        down: ScalePolicy {
            percent: a.down_percent,
            pods: 0,
            period: a.period,
        },
    }
}

/// Replicas of one service that crashed or were ejected and are not back yet.
#[derive(Default)]
struct Failures {
    down: BTreeSet<u32>,
    stopping: BTreeSet<u32>,
}

impl Failures {
    fn on(&mut self, service: &str, e: &EventKind) {
        match e {
            // A failed probe's stop is a failure, not a stop asked for.
            EventKind::ProbeFailed {
                service: s, index, ..
            } if s == service => {
                self.down.insert(*index);
            }
            EventKind::ReplicaStopping {
                service: s, index, ..
            } if s == service && !self.down.contains(index) => {
                self.stopping.insert(*index);
            }
            EventKind::ReplicaExited {
                service: s, index, ..
            } if s == service => {
                // An exit asked for (a restart, a scale-down) is not a failure.
                let asked = self.stopping.remove(index);
                if !asked {
                    self.down.insert(*index);
                }
            }
            EventKind::ReplicaEjected {
                service: s, index, ..
            } if s == service => {
                self.down.insert(*index);
            }
            // Given up on by its restart policy after a failure: down for good.
            EventKind::ReplicaDone {
                service: s,
                index,
                exit,
            } if s == service => {
                self.stopping.remove(index);
                if exit.success() {
                    self.down.remove(index);
                } else {
                    self.down.insert(*index);
                }
            }
            EventKind::ReplicaReady { service: s, index }
            | EventKind::ReplicaReadmitted { service: s, index }
                if s == service =>
            {
                self.down.remove(index);
                self.stopping.remove(index);
            }
            _ => {}
        }
    }
}

async fn run(
    service: String,
    a: Autoscale,
    inputs: Inputs,
    status: Arc<Mutex<HashMap<String, AutoscaleStatus>>>,
) {
    let mut scaler = Autoscaler::new(config(&a));
    let mut failures = Failures::default();
    let mut live = inputs.bus.follow("autoscaler");
    let mut tick = tokio::time::interval(a.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Reading> = None;
    let labels = ServiceLabels {
        service: service.clone(),
    };
    inputs
        .metrics
        .goal
        .get_or_create(&labels)
        .set(a.target.value());
    loop {
        tokio::select! {
            e = live.next() => match e {
                Some(e) => failures.on(&service, &e.kind),
                None => return,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                let Some(size) = inputs.host.size(&service) else { return };
                let replicas = inputs.host.replicas(&service).unwrap_or_default();
                let serving: Vec<u32> = replicas
                    .iter()
                    .filter(|r| r.ready && !r.held_out)
                    .map(|r| r.index)
                    .collect();
                let reading = inputs.measures.read(&service, now);
                let window = match (&reading, &last) {
                    (Some(r), Some(prev)) => Some(r.since(prev)),
                    _ => None,
                };
                last = reading;
                let Some(value) = measure(&inputs, &service, a.target, &serving, window) else {
                    continue;
                };
                let failed = if a.cover_failures {
                    let present: BTreeSet<u32> = replicas.iter().map(|r| r.index).collect();
                    failures.down.retain(|i| present.contains(i));
                    failures.down.len() as u32
                } else {
                    0
                };
                let d = scaler.decide(now, size.desired, value, a.target.value(), failed);
                inputs.metrics.value.get_or_create(&labels).set(value);
                inputs.metrics.desired.get_or_create(&labels).set(i64::from(d.desired));
                let mut reason = d.reason.name().to_owned();
                if d.desired != size.desired {
                    match inputs.host.scale(&service, d.desired) {
                        Ok(from) => {
                            scaler.scaled(now, from, d.desired);
                            inputs.bus.publish(EventKind::Autoscaled {
                                service: service.clone(),
                                from,
                                to: d.desired,
                                target: a.target.name().into(),
                                value,
                                goal: a.target.value(),
                                reason: reason.clone(),
                            });
                        }
                        Err(e) => reason = format!("not scaled: {e}"),
                    }
                }
                if let Some(s) = status.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&service) {
                    s.value = Some(value);
                    s.current = size.desired;
                    s.desired = d.desired;
                    s.reason = reason;
                }
            }
        }
    }
}

/// The target measure per ready replica (`None`: nothing to go by yet).
fn measure(
    inputs: &Inputs,
    service: &str,
    target: ScaleTarget,
    serving: &[u32],
    window: Option<crate::measures::Window>,
) -> Option<f64> {
    let n = serving.len().max(1) as f64;
    match target {
        ScaleTarget::InFlight(_) => Some(
            serving
                .iter()
                .filter_map(|i| inputs.host.load(service, *i))
                .map(|l| l.inflight() as f64)
                .sum::<f64>()
                / n,
        ),
        ScaleTarget::RequestRate(_) => window.map(|w| w.rate / n),
        ScaleTarget::Cpu(_) => inputs
            .detector
            .usage(service)
            .map(|u| u.cpu_cores / f64::from(u.replicas.max(1))),
        ScaleTarget::LatencyP99(_) => window.and_then(|w| w.p99).map(|d| d.as_secs_f64() * 1000.0),
    }
}
