//! Incidents: opened when a page alert fires or a service has no ready replica; a timeline
//! from fault to resolution; MTTD, MTTR, MTBF and availability per service.
//! Pure: fed events and alert transitions, with times in wall-clock milliseconds.
//!
//! Definitions (stated in the API and README):
//! - MTTD: fault start → detection, over incidents whose fault start is known.
//! - MTTR: detection → resolution ("time to resolve", measured from detection).
//! - MTBF: time between failures = (observed time − time in incidents) / incidents.
//! - availability: 1 − time in incidents / observed time (since bulwark first saw the service).
//! - automated: an incident a remediation finished (`done`) while it was open; MTTR is also
//!   given apart for those and for the others (the supervisor, a person, the fault passing).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use bus::{Event, EventKind};
use serde::{Deserialize, Serialize};

/// A fault older than this before detection is not taken as the incident's start.
const FAULT_LOOKBACK_MS: u64 = 10 * 60 * 1000;
/// Timeline entries kept per incident (the first ones and the resolution are never lost:
/// once full, further actions, remediations and anomalies are counted, not listed).
const TIMELINE_MAX: usize = 200;
/// Bytes of text kept per timeline entry (a runbook's output arrives in a remediation's
/// detail).
const TEXT_MAX: usize = 2000;
/// Resolved incidents kept in memory (all are in the journal).
const CLOSED_MAX: usize = 1000;

pub const NO_READY_REPLICA: &str = "no_ready_replica";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Open,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub at_ms: u64,
    /// `fault`, `detected`, `action`, `remediation`, `anomaly`, `resolved`.
    pub kind: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: u64,
    pub service: String,
    pub title: String,
    pub state: IncidentState,
    pub fault_at_ms: Option<u64>,
    pub fault: Option<String>,
    pub detected_at_ms: u64,
    pub resolved_at_ms: Option<u64>,
    /// What keeps it open: alert fingerprints and/or `no_ready_replica`.
    pub triggers: BTreeSet<String>,
    pub timeline: Vec<Entry>,
    /// Actions, remediations and anomalies not listed because the timeline was full.
    pub more_actions: u64,
    /// The remediation rule that last finished (`done`) while the incident was open.
    /// Absent from incidents stored before remediation existed.
    #[serde(default)]
    pub resolved_by: Option<String>,
    /// The node of the cluster agent that opened it; absent under `bulwark up` and from
    /// incidents stored before cluster mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Incident {
    /// Fault start → detection.
    pub fn mttd_ms(&self) -> Option<u64> {
        self.fault_at_ms
            .map(|f| self.detected_at_ms.saturating_sub(f))
    }

    /// Detection → resolution.
    pub fn ttr_ms(&self) -> Option<u64> {
        self.resolved_at_ms
            .map(|r| r.saturating_sub(self.detected_at_ms))
    }

    fn note(&mut self, at_ms: u64, kind: &str, text: String) {
        let countable = matches!(kind, "action" | "remediation" | "anomaly");
        if self.timeline.len() >= TIMELINE_MAX && countable {
            self.more_actions += 1;
            return;
        }
        self.timeline.push(Entry {
            at_ms,
            kind: kind.into(),
            text: bounded(text),
        });
    }
}

/// `text` cut to at most [`TEXT_MAX`] bytes on a character boundary, marked with `…`.
fn bounded(mut text: String) -> String {
    if text.len() <= TEXT_MAX {
        return text;
    }
    let mut end = TEXT_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

/// `web/1` for a replica, `web` for the whole service.
fn who(service: &str, replica: Option<u32>) -> String {
    match replica {
        Some(r) => format!("{service}/{r}"),
        None => service.to_owned(),
    }
}

/// `" — detail"`, or nothing for an empty detail.
fn dash(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" — {detail}")
    }
}

/// A forecast horizon in words: `45s`, `4m`, `2h10m`.
fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        _ if s % 3600 / 60 == 0 => format!("{}h", s / 3600),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

/// Per-service reliability figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reliability {
    pub service: String,
    pub incidents: u64,
    pub open: u64,
    pub mttd_ms: Option<f64>,
    pub mttr_ms: Option<f64>,
    /// Resolved incidents a remediation finished ([`Incident::resolved_by`]).
    pub automated: u64,
    /// MTTR over resolved incidents a remediation finished.
    pub mttr_automated_ms: Option<f64>,
    /// MTTR over the other resolved incidents.
    pub mttr_manual_ms: Option<f64>,
    pub mtbf_ms: Option<f64>,
    pub availability: f64,
    pub observed_ms: u64,
}

/// What an event or alert did to an incident.
#[derive(Debug, Clone, PartialEq)]
pub enum IncidentChange {
    Opened(Incident),
    Updated(Incident),
    Resolved(Incident),
}

impl IncidentChange {
    pub fn incident(&self) -> &Incident {
        match self {
            IncidentChange::Opened(i)
            | IncidentChange::Updated(i)
            | IncidentChange::Resolved(i) => i,
        }
    }
}

/// Invariant: at most one open incident per service; an incident resolves exactly when its
/// last trigger clears.
#[derive(Debug, Default)]
pub struct Incidents {
    open: BTreeMap<String, Incident>,
    closed: VecDeque<Incident>,
    next_id: u64,
    last_fault: HashMap<String, (u64, String)>,
    ready: HashMap<String, BTreeSet<u32>>,
    /// Replicas whose next exit was asked for (restart, scale down, shutdown): not faults.
    requested_stop: HashSet<(String, u32)>,
    stopping: bool,
    first_seen_ms: HashMap<String, u64>,
    /// Stamped on every incident opened here ([`Incident::node`]).
    node: Option<String>,
}

impl Incidents {
    pub fn new() -> Self {
        Incidents {
            next_id: 1,
            ..Default::default()
        }
    }

    /// Incidents opened by the cluster agent of `node` (none under `bulwark up`).
    pub fn on_node(node: Option<&str>) -> Self {
        Incidents {
            node: node.map(str::to_owned),
            ..Incidents::new()
        }
    }

    /// Loads incidents from the journal. Incidents left open by a previous run are closed
    /// at `now_ms`: whatever kept them open is no longer known.
    pub fn restore(&mut self, mut list: Vec<Incident>, now_ms: u64) -> Vec<IncidentChange> {
        list.sort_by_key(|i| i.id);
        let mut changes = vec![];
        for mut i in list {
            self.next_id = self.next_id.max(i.id + 1);
            self.first_seen_ms
                .entry(i.service.clone())
                .and_modify(|t| *t = (*t).min(i.fault_at_ms.unwrap_or(i.detected_at_ms)))
                .or_insert(i.fault_at_ms.unwrap_or(i.detected_at_ms));
            if i.state == IncidentState::Open {
                i.state = IncidentState::Resolved;
                i.resolved_at_ms = Some(now_ms);
                i.triggers.clear();
                i.note(
                    now_ms,
                    "resolved",
                    "closed at restart: bulwark was restarted while this incident was open".into(),
                );
                changes.push(IncidentChange::Resolved(i.clone()));
            }
            self.push_closed(i);
        }
        changes
    }

    fn push_closed(&mut self, i: Incident) {
        if self.closed.len() == CLOSED_MAX {
            self.closed.pop_front();
        }
        self.closed.push_back(i);
    }

    pub fn list(&self) -> Vec<Incident> {
        let mut all: Vec<Incident> = self
            .closed
            .iter()
            .chain(self.open.values())
            .cloned()
            .collect();
        all.sort_by_key(|i| i.id);
        all
    }

    /// Follows the event stream: remembers faults, records actions on open incidents, and
    /// opens or clears the no-ready-replica trigger.
    // Long on purpose: one match arm per event kind, each a line or two.
    #[allow(clippy::too_many_lines)]
    pub fn on_event(&mut self, e: &Event) -> Option<IncidentChange> {
        let now = e.at_ms;
        let fault = |s: &mut Self, service: &str, what: String| {
            s.last_fault.insert(service.to_owned(), (now, what));
            None
        };
        match &e.kind {
            EventKind::StackStopping => {
                self.stopping = true;
                None
            }
            EventKind::ReplicaStarted {
                service,
                index,
                pid,
                ..
            } => {
                self.first_seen_ms.entry(service.clone()).or_insert(now);
                self.action(
                    service,
                    now,
                    format!("{service}/{index} started (pid {pid})"),
                )
            }
            EventKind::ReplicaReady { service, index } => {
                let set = self.ready.entry(service.clone()).or_default();
                let was_empty = set.is_empty();
                set.insert(*index);
                let change = self.action(service, now, format!("{service}/{index} ready"));
                if was_empty {
                    return self.clear(service, NO_READY_REPLICA, now).or(change);
                }
                change
            }
            EventKind::ReplicaUnready {
                service,
                index,
                reason,
            } => {
                fault(
                    self,
                    service,
                    format!("{service}/{index} unready: {reason}"),
                );
                self.lose_ready(service, *index, now)
            }
            EventKind::ReplicaStopping {
                service,
                index,
                reason,
            } => {
                if matches!(
                    reason.as_str(),
                    "restart requested" | "stack stopping" | "scaled down"
                ) {
                    self.requested_stop.insert((service.clone(), *index));
                }
                self.lose_ready(service, *index, now)
            }
            EventKind::ReplicaExited {
                service,
                index,
                exit,
                ..
            } => {
                let oom = format!("{service}/{index} OOM-killed");
                // An OOM kill said just before is the better cause than its signal 9.
                let said = self
                    .last_fault
                    .get(service)
                    .is_some_and(|(at, what)| now.saturating_sub(*at) < 1_000 && what.starts_with(&oom));
                if !self.requested_stop.remove(&(service.clone(), *index)) && !said {
                    fault(self, service, format!("{service}/{index} exited: {exit}"));
                }
                self.lose_ready(service, *index, now)
            }
            EventKind::ReplicaOomKilled {
                service,
                index,
                memory_limit,
                ..
            } => {
                let past = memory_limit.map_or_else(
                    || " (the machine ran out of memory)".to_owned(),
                    |b| format!(" past its memory limit of {b} bytes"),
                );
                fault(self, service, format!("{service}/{index} OOM-killed{past}"))
            }
            EventKind::ProbeFailed {
                service,
                index,
                reason,
                ..
            } => fault(self, service, format!("{service}/{index}: {reason}")),
            EventKind::SpawnFailed {
                service,
                index,
                error,
            } => fault(
                self,
                service,
                format!("{service}/{index} failed to start: {error}"),
            ),
            EventKind::CrashLooping {
                service,
                index,
                last_exit,
                ..
            } => self.action(
                service,
                now,
                format!("{service}/{index} is crash-looping ({last_exit})"),
            ),
            EventKind::RestartScheduled {
                service,
                index,
                delay_ms,
                ..
            } => self.action(
                service,
                now,
                format!("{service}/{index} restart in {delay_ms} ms"),
            ),
            EventKind::ReplicaKilled { service, index, .. } => self.action(
                service,
                now,
                format!("{service}/{index} killed after its stop grace"),
            ),
            EventKind::Scaled { service, from, to } => {
                self.action(service, now, format!("{service} scaled {from} -> {to}"))
            }
            EventKind::ExperimentStarted {
                service,
                name,
                fault: what,
                ..
            } => {
                let text = format!("chaos experiment {name}: {what}");
                self.action(service, now, text.clone());
                fault(self, service, text)
            }
            EventKind::ExperimentAborted {
                service,
                name,
                reason,
            } => self.action(
                service,
                now,
                format!("chaos experiment {name} aborted: {reason}"),
            ),
            EventKind::ExperimentEnded {
                service,
                name,
                outcome,
                ..
            } => self.action(
                service,
                now,
                format!("chaos experiment {name} ended: {outcome}"),
            ),
            EventKind::RolloutStarted {
                service,
                revision,
                strategy,
                ..
            } => self.action(
                service,
                now,
                format!("rollout of revision {revision} started ({strategy})"),
            ),
            EventKind::RolloutAborted {
                service,
                revision,
                reason,
                ..
            } => self.action(
                service,
                now,
                format!("rollout of revision {revision} rolled back: {reason}"),
            ),
            EventKind::RolloutEnded {
                service,
                revision,
                outcome,
                stable,
            } => self.action(
                service,
                now,
                format!("rollout of revision {revision} {outcome}; revision {stable} runs"),
            ),
            EventKind::Remediation {
                id,
                rule,
                service,
                replica,
                actions,
                decision,
                guard,
                detail,
                ..
            } => {
                let on = replica.map(|r| format!(" on {service}/{r}"));
                let by = guard.as_ref().map(|g| format!(" by {g}"));
                let text = format!(
                    "remediation {rule} #{id} ({}{}): {decision}{}{}",
                    actions.join(", "),
                    on.unwrap_or_default(),
                    by.unwrap_or_default(),
                    dash(detail)
                );
                let done = (decision == "done").then_some(rule.as_str());
                self.remediation(service, now, text, done)
            }
            EventKind::AnomalyDetected {
                service,
                replica,
                kind,
                confidence,
                forecast_ms,
                detail,
            } => {
                let limit = forecast_ms.map(|ms| format!(", limit in {}", span(ms)));
                let text = format!(
                    "{kind} on {}{}{} (confidence {confidence:.2}{})",
                    who(service, *replica),
                    if detail.is_empty() { "" } else { ": " },
                    detail,
                    limit.unwrap_or_default()
                );
                self.entry(service, now, "anomaly", text)
            }
            EventKind::Autoscaled {
                service,
                from,
                to,
                target,
                value,
                goal,
                reason,
            } => self.action(
                service,
                now,
                format!(
                    "{service} autoscaled {from} -> {to}: {target} {value:.1} per replica, target {goal:.1} ({reason})"
                ),
            ),
            _ => None,
        }
    }

    fn lose_ready(&mut self, service: &str, index: u32, now: u64) -> Option<IncidentChange> {
        let set = self.ready.entry(service.to_owned()).or_default();
        if !set.remove(&index) || !set.is_empty() || self.stopping {
            return None;
        }
        let hint = self.last_fault.get(service).cloned();
        Some(self.trigger(
            service,
            NO_READY_REPLICA,
            format!("{service} has no ready replica"),
            hint,
            now,
        ))
    }

    fn action(&mut self, service: &str, now: u64, text: String) -> Option<IncidentChange> {
        self.entry(service, now, "action", text)
    }

    /// Adds an entry of `kind` to the open incident of `service`, if there is one.
    fn entry(
        &mut self,
        service: &str,
        now: u64,
        kind: &str,
        text: String,
    ) -> Option<IncidentChange> {
        let i = self.open.get_mut(service)?;
        i.note(now, kind, text);
        Some(IncidentChange::Updated(i.clone()))
    }

    /// A remediation's decision lands on the open incident of `service`; `done` names the
    /// rule when the remediation finished, which then takes the credit for the resolution.
    fn remediation(
        &mut self,
        service: &str,
        now: u64,
        text: String,
        done: Option<&str>,
    ) -> Option<IncidentChange> {
        let i = self.open.get_mut(service)?;
        if let Some(rule) = done {
            i.resolved_by = Some(rule.to_owned());
        }
        i.note(now, "remediation", text);
        Some(IncidentChange::Updated(i.clone()))
    }

    /// Something detected trouble with `service` (an alert fired, no replica is ready).
    /// Opens an incident, or adds the trigger to the open one. `fault` is the best known
    /// fault start; without one, the last fault bulwark saw for the service is used.
    pub fn trigger(
        &mut self,
        service: &str,
        trigger: &str,
        title: String,
        fault: Option<(u64, String)>,
        now: u64,
    ) -> IncidentChange {
        if let Some(i) = self.open.get_mut(service) {
            i.triggers.insert(trigger.to_owned());
            i.note(now, "detected", title);
            return IncidentChange::Updated(i.clone());
        }
        let known = self
            .last_fault
            .get(service)
            .filter(|(at, _)| *at <= now && now - at <= FAULT_LOOKBACK_MS)
            .cloned();
        // The earliest credible fault start wins.
        let fault = match (fault, known) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        let mut i = Incident {
            id: self.next_id,
            service: service.to_owned(),
            title: title.clone(),
            state: IncidentState::Open,
            fault_at_ms: fault.as_ref().map(|f| f.0),
            fault: fault.as_ref().map(|f| f.1.clone()),
            detected_at_ms: now,
            resolved_at_ms: None,
            triggers: BTreeSet::from([trigger.to_owned()]),
            timeline: vec![],
            more_actions: 0,
            resolved_by: None,
            node: self.node.clone(),
        };
        self.next_id += 1;
        if let Some((at, what)) = &fault {
            i.note(*at, "fault", what.clone());
        }
        i.note(now, "detected", title);
        self.open.insert(service.to_owned(), i.clone());
        IncidentChange::Opened(i)
    }

    /// A trigger cleared; the incident resolves when none is left.
    pub fn clear(&mut self, service: &str, trigger: &str, now: u64) -> Option<IncidentChange> {
        let i = self.open.get_mut(service)?;
        if !i.triggers.remove(trigger) {
            return None;
        }
        if !i.triggers.is_empty() {
            i.note(now, "action", format!("{trigger} cleared"));
            return Some(IncidentChange::Updated(i.clone()));
        }
        let mut i = self.open.remove(service)?;
        i.state = IncidentState::Resolved;
        i.resolved_at_ms = Some(now);
        i.note(now, "resolved", format!("{trigger} cleared"));
        self.last_fault.remove(service);
        self.push_closed(i.clone());
        Some(IncidentChange::Resolved(i))
    }

    pub fn reliability(&self, now: u64) -> Vec<Reliability> {
        let mut services: BTreeSet<&String> = self.first_seen_ms.keys().collect();
        services.extend(self.open.keys());
        services
            .into_iter()
            .map(|service| {
                let mine: Vec<&Incident> = self
                    .closed
                    .iter()
                    .chain(self.open.values())
                    .filter(|i| &i.service == service)
                    .collect();
                let first = self.first_seen_ms.get(service).copied().unwrap_or(now);
                let observed = now.saturating_sub(first).max(1);
                let down: u64 = mine
                    .iter()
                    .map(|i| {
                        i.resolved_at_ms
                            .unwrap_or(now)
                            .saturating_sub(i.detected_at_ms)
                    })
                    .sum();
                let mean = |xs: Vec<u64>| {
                    (!xs.is_empty()).then(|| xs.iter().sum::<u64>() as f64 / xs.len() as f64)
                };
                let n = mine.len() as u64;
                let ttr = |automated: bool| {
                    mine.iter()
                        .filter(|i| i.resolved_by.is_some() == automated)
                        .filter_map(|i| i.ttr_ms())
                        .collect::<Vec<u64>>()
                };
                let (automated, manual) = (ttr(true), ttr(false));
                Reliability {
                    service: service.clone(),
                    incidents: n,
                    open: mine
                        .iter()
                        .filter(|i| i.state == IncidentState::Open)
                        .count() as u64,
                    mttd_ms: mean(mine.iter().filter_map(|i| i.mttd_ms()).collect()),
                    mttr_ms: mean(mine.iter().filter_map(|i| i.ttr_ms()).collect()),
                    automated: automated.len() as u64,
                    mttr_automated_ms: mean(automated),
                    mttr_manual_ms: mean(manual),
                    mtbf_ms: (n > 0).then(|| observed.saturating_sub(down) as f64 / n as f64),
                    availability: 1.0 - (down.min(observed) as f64 / observed as f64),
                    observed_ms: observed,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
