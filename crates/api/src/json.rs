//! The API's JSON shapes. `status` is a stable contract for scripts: fields may be added,
//! never renamed or removed.

use axum::Json;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub services: Vec<Service>,
    /// Whether the journal can write (absent from older bulwarks).
    #[serde(default)]
    pub journal: Option<Journal>,
    /// Remediation actions waiting for `bulwark approve`.
    #[serde(default)]
    pub pending_approvals: Vec<Action>,
}

/// A remediation decision, as `bulwark actions` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Action {
    pub id: u64,
    pub rule: String,
    pub service: String,
    pub replica: Option<u32>,
    pub actions: Vec<String>,
    pub mode: String,
    /// `acted`, `skipped`, `waiting`, `approved`, `denied`, `failed`, `done`, `dry-run`.
    pub decision: String,
    pub guard: Option<String>,
    pub trigger: String,
    pub detail: String,
    pub at_ms: u64,
    pub updated_ms: u64,
    pub expires_ms: Option<u64>,
}

impl From<&remedy::ActionRecord> for Action {
    fn from(r: &remedy::ActionRecord) -> Self {
        Action {
            id: r.id,
            rule: r.rule.clone(),
            service: r.service.clone(),
            replica: r.replica,
            actions: r.actions.clone(),
            mode: r.mode.clone(),
            decision: r.decision.as_str().into(),
            guard: r.guard.clone(),
            trigger: r.trigger.clone(),
            detail: r.detail.clone(),
            at_ms: r.at_ms,
            updated_ms: r.updated_ms,
            expires_ms: r.expires_ms,
        }
    }
}

/// The body of `POST /v1/actions/ID/approve` and `/deny`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Answer {
    /// Who answers (shown in the record).
    #[serde(default)]
    pub by: String,
}

/// An autoscaled service's target, current and desired counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    /// `in_flight`, `request_rate`, `cpu` or `latency_p99`.
    pub target: String,
    /// The target per replica (latency in ms).
    pub goal: f64,
    /// The measure per ready replica at the last decision.
    pub value: Option<f64>,
    pub current: u32,
    pub desired: u32,
    pub reason: String,
}

/// The journal's health.
#[derive(Debug, Serialize, Deserialize)]
pub struct Journal {
    /// `ok` or `failing`.
    pub state: String,
    pub failing_since_ms: Option<u64>,
    pub last_error: Option<String>,
    /// Failed writes since start (they are retried).
    pub write_errors: u64,
    /// Events dropped since start because they could not be written in time.
    pub lost_events: u64,
}

impl From<&observe::journal::Health> for Journal {
    fn from(h: &observe::journal::Health) -> Self {
        Journal {
            state: if h.ok() { "ok" } else { "failing" }.into(),
            failing_since_ms: h.failing_since_ms,
            last_error: h.last_error.clone(),
            write_errors: h.write_errors,
            lost_events: h.lost_events,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub desired: u32,
    pub ready: u32,
    pub expose: Option<String>,
    pub replicas: Vec<Replica>,
    /// The revision the service runs.
    #[serde(default)]
    pub revision: u32,
    /// A rollout under way: `revision N: step` (see `bulwark rollout status`).
    #[serde(default)]
    pub rollout: Option<String>,
    /// Why the service runs other settings than its stack file says.
    #[serde(default)]
    pub drift: Option<String>,
    /// The autoscaler's last decision, for an autoscaled service.
    #[serde(default)]
    pub autoscale: Option<Autoscale>,
    /// The environment variables set from `secrets` files: names only, never a value.
    #[serde(default)]
    pub secrets: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Replica {
    pub index: u32,
    /// The replica's process; for a container, its PID 1 as the host numbers it.
    pub pid: Option<u32>,
    /// For a container: the runtime's process (runc), which bulwark spawned and watches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_pid: Option<u32>,
    /// Where the replica is reached: 127.0.0.1, or its container's own address
    /// (`network = "private"`).
    #[serde(default)]
    pub addr: Option<std::net::IpAddr>,
    pub port: Option<u16>,
    pub state: String,
    pub ready: bool,
    pub restarts: u32,
    pub crash_looping: bool,
    pub last_exit: Option<Exit>,
    pub stderr_tail: Vec<String>,
    pub started_at_ms: Option<u64>,
    #[serde(default)]
    pub revision: u32,
    /// Out of the proxy's rotation by a remediation (`eject`, `drain`).
    #[serde(default)]
    pub held_out: bool,
    /// Limits and current usage of the running incarnation's cgroups (services with
    /// `resources`).
    #[serde(default)]
    pub resources: Option<ReplicaResources>,
    /// The last `STATUS=` the replica sent on its sd_notify socket (at most 256 bytes,
    /// control characters replaced by spaces).
    #[serde(default)]
    pub notify_status: Option<String>,
    /// `leader` or `standby`, for a service with `[leader]`.
    #[serde(default)]
    pub role: Option<String>,
    /// The fencing token the leader holds.
    #[serde(default)]
    pub token: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The kernel's OOM killer sent the signal.
    #[serde(default)]
    pub oom_killed: bool,
}

/// A replica's cgroup limits (`None`: none) and what it uses now (`None`: not offered
/// by the machine).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplicaResources {
    pub memory_limit_bytes: Option<u64>,
    pub cpu_limit_cores: Option<f64>,
    pub pids_limit: Option<u32>,
    pub memory_bytes: Option<u64>,
    /// CPU used since the incarnation started.
    pub cpu_seconds: Option<f64>,
    pub pids: Option<u64>,
}

impl ReplicaResources {
    pub fn new(limits: launch::cgroup::Limits, usage: launch::cgroup::Usage) -> Self {
        ReplicaResources {
            memory_limit_bytes: limits.memory,
            cpu_limit_cores: limits
                .cpu_quota_us
                .map(|q| q as f64 / spec::Resources::CPU_PERIOD_US as f64),
            pids_limit: limits.pids,
            memory_bytes: usage.memory_bytes,
            cpu_seconds: usage.cpu_seconds,
            pids: usage.pids,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LogLine {
    pub replica: u32,
    pub stream: String,
    pub at_ms: u64,
    pub text: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Scaled {
    pub service: String,
    pub from: u32,
    pub to: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Error {
    pub error: String,
}

pub(crate) fn error(status: StatusCode, msg: &str) -> (StatusCode, Json<Error>) {
    (status, Json(Error { error: msg.into() }))
}

impl From<runtime::ServiceStatus> for Service {
    fn from(s: runtime::ServiceStatus) -> Self {
        Service {
            ready: s.replicas.iter().filter(|r| r.ready).count() as u32,
            name: s.name,
            desired: s.desired,
            expose: s.expose.map(|a| a.to_string()),
            revision: s.revision,
            rollout: None,
            drift: None,
            autoscale: None,
            secrets: Vec::new(),
            replicas: s
                .replicas
                .into_iter()
                .map(|r| Replica {
                    index: r.index,
                    pid: r.pid,
                    runtime_pid: r.runtime_pid,
                    addr: r.addr,
                    port: r.port,
                    state: r.state.as_str().into(),
                    ready: r.ready,
                    restarts: r.restarts,
                    crash_looping: r.state == runtime::ReplicaState::CrashLooping,
                    last_exit: r.last_exit.map(|e| Exit {
                        code: e.code,
                        signal: e.signal,
                        oom_killed: r.oom_killed,
                    }),
                    resources: r
                        .cgroup
                        .as_ref()
                        .map(|c| ReplicaResources::new(c.limits, Default::default())),
                    stderr_tail: r.stderr_tail,
                    started_at_ms: r.started_at_ms,
                    revision: r.revision,
                    held_out: r.held_out,
                    notify_status: r.notify_status,
                    role: r.role.map(|x| x.as_str().to_owned()),
                    token: r.token,
                })
                .collect(),
        }
    }
}

impl From<&runtime::LogLine> for LogLine {
    fn from(l: &runtime::LogLine) -> Self {
        LogLine {
            replica: l.replica,
            stream: l.stream.as_str().into(),
            at_ms: l.at_ms,
            text: l.text.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SloReport {
    /// The node of the cluster agent whose proxy counted it; absent under `bulwark up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub service: String,
    pub slo: String,
    /// `availability` or `latency`.
    pub kind: String,
    pub threshold_ms: Option<f64>,
    pub objective_percent: f64,
    pub period_s: f64,
    pub sli: Option<f64>,
    pub error_budget_remaining: f64,
    pub windows: Vec<SloWindow>,
    /// Per tier (`page`, `ticket`, `no_data`): `firing` or `inactive`.
    pub alerts: std::collections::BTreeMap<String, String>,
    pub time_to_exhaustion_s: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SloWindow {
    /// The SRE Workbook's name (`5m`, `30m`, `1h`, `6h`, `3d`, `period`), scaled to the period.
    pub window: String,
    pub length_s: f64,
    pub total: f64,
    pub bad: f64,
    pub sli: Option<f64>,
    pub burn_rate: f64,
}

impl From<&observe::slo::SloReport> for SloReport {
    fn from(r: &observe::slo::SloReport) -> Self {
        use observe::slo::Tier;
        let (kind, threshold_ms) = match r.kind {
            spec::SloKind::Availability { .. } => ("availability", None),
            spec::SloKind::Latency { threshold } => {
                ("latency", Some(threshold.as_secs_f64() * 1000.0))
            }
        };
        SloReport {
            node: None,
            service: r.service.clone(),
            slo: r.slo.clone(),
            kind: kind.into(),
            threshold_ms,
            objective_percent: r.objective * 100.0,
            period_s: r.period.as_secs_f64(),
            sli: r.sli,
            error_budget_remaining: r.error_budget_remaining,
            windows: r
                .windows
                .iter()
                .map(|w| SloWindow {
                    window: w.window.name().into(),
                    length_s: w.length.as_secs_f64(),
                    total: w.total,
                    bad: w.bad,
                    sli: w.sli,
                    burn_rate: w.burn_rate,
                })
                .collect(),
            alerts: Tier::ALL
                .iter()
                .map(|t| {
                    let state = if r.alert(*t).is_firing() {
                        "firing"
                    } else {
                        "inactive"
                    };
                    (t.as_str().to_owned(), state.to_owned())
                })
                .collect(),
            time_to_exhaustion_s: r.time_to_exhaustion.map(|d| d.as_secs_f64()),
        }
    }
}

// Alerts, silences and incidents: the journal keeps its own records (`observe`); these
// are what the API shows, converted with `From`, so either can change without the other.

/// How urgent an alert is: `page` or `ticket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Page,
    Ticket,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

impl From<observe::alert::Severity> for Severity {
    fn from(s: observe::alert::Severity) -> Self {
        match s {
            observe::alert::Severity::Page => Severity::Page,
            observe::alert::Severity::Ticket => Severity::Ticket,
        }
    }
}

impl From<Severity> for observe::alert::Severity {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Page => observe::alert::Severity::Page,
            Severity::Ticket => observe::alert::Severity::Ticket,
        }
    }
}

/// `firing` or `resolved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// One firing of one alert (`GET /v1/alerts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique per firing: `{fingerprint}@{started_at_ms}`.
    pub id: String,
    /// The same for every firing of the same alert: `{service}/{name}/{severity}`.
    pub fingerprint: String,
    pub service: String,
    /// The SLO's name, or `no_data`.
    pub name: String,
    pub severity: Severity,
    pub summary: String,
    pub state: AlertState,
    pub started_at_ms: u64,
    pub resolved_at_ms: Option<u64>,
    /// Whether a sink was told it fired. A silenced alert is recorded but not notified.
    pub notified: bool,
}

impl From<&observe::alert::Alert> for Alert {
    fn from(a: &observe::alert::Alert) -> Self {
        Alert {
            id: a.id.clone(),
            fingerprint: a.fingerprint.clone(),
            service: a.service.clone(),
            name: a.name.clone(),
            severity: a.severity.into(),
            summary: a.summary.clone(),
            state: match a.state {
                observe::alert::AlertState::Firing => AlertState::Firing,
                observe::alert::AlertState::Resolved => AlertState::Resolved,
            },
            started_at_ms: a.started_at_ms,
            resolved_at_ms: a.resolved_at_ms,
            notified: a.notified,
        }
    }
}

/// A maintenance window: matching alerts are recorded but not notified
/// (`GET /v1/silences`, the answer to `POST /v1/silences`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub service: String,
    /// The SLO's name; none matches every alert of the service.
    pub name: Option<String>,
    pub severity: Option<Severity>,
    pub starts_at_ms: u64,
    pub ends_at_ms: u64,
    pub comment: String,
}

impl From<&observe::alert::Silence> for Silence {
    fn from(s: &observe::alert::Silence) -> Self {
        Silence {
            id: s.id.clone(),
            service: s.service.clone(),
            name: s.name.clone(),
            severity: s.severity.map(Into::into),
            starts_at_ms: s.starts_at_ms,
            ends_at_ms: s.ends_at_ms,
            comment: s.comment.clone(),
        }
    }
}

/// `open` or `resolved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Open,
    Resolved,
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentEntry {
    pub at_ms: u64,
    /// `fault`, `detected`, `action`, `remediation`, `anomaly`, `resolved`.
    pub kind: String,
    pub text: String,
}

/// An incident, from fault to resolution.
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
    pub triggers: std::collections::BTreeSet<String>,
    pub timeline: Vec<IncidentEntry>,
    /// Actions, remediations and anomalies not listed because the timeline was full.
    pub more_actions: u64,
    /// The remediation rule that last finished while the incident was open.
    #[serde(default)]
    pub resolved_by: Option<String>,
    /// The node of the cluster agent that opened it; absent under `bulwark up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl From<&observe::incident::Incident> for Incident {
    fn from(i: &observe::incident::Incident) -> Self {
        Incident {
            id: i.id,
            service: i.service.clone(),
            title: i.title.clone(),
            state: match i.state {
                observe::incident::IncidentState::Open => IncidentState::Open,
                observe::incident::IncidentState::Resolved => IncidentState::Resolved,
            },
            fault_at_ms: i.fault_at_ms,
            fault: i.fault.clone(),
            detected_at_ms: i.detected_at_ms,
            resolved_at_ms: i.resolved_at_ms,
            triggers: i.triggers.clone(),
            timeline: i
                .timeline
                .iter()
                .map(|e| IncidentEntry {
                    at_ms: e.at_ms,
                    kind: e.kind.clone(),
                    text: e.text.clone(),
                })
                .collect(),
            more_actions: i.more_actions,
            resolved_by: i.resolved_by.clone(),
            node: i.node.clone(),
        }
    }
}

/// A service's reliability figures (see the README for the definitions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reliability {
    pub service: String,
    pub incidents: u64,
    pub open: u64,
    pub mttd_ms: Option<f64>,
    pub mttr_ms: Option<f64>,
    /// Resolved incidents a remediation finished.
    #[serde(default)]
    pub automated: u64,
    /// MTTR over resolved incidents a remediation finished.
    #[serde(default)]
    pub mttr_automated_ms: Option<f64>,
    /// MTTR over the other resolved incidents.
    #[serde(default)]
    pub mttr_manual_ms: Option<f64>,
    pub mtbf_ms: Option<f64>,
    pub availability: f64,
    pub observed_ms: u64,
}

impl From<&observe::incident::Reliability> for Reliability {
    fn from(r: &observe::incident::Reliability) -> Self {
        Reliability {
            service: r.service.clone(),
            incidents: r.incidents,
            open: r.open,
            mttd_ms: r.mttd_ms,
            mttr_ms: r.mttr_ms,
            automated: r.automated,
            mttr_automated_ms: r.mttr_automated_ms,
            mttr_manual_ms: r.mttr_manual_ms,
            mtbf_ms: r.mtbf_ms,
            availability: r.availability,
            observed_ms: r.observed_ms,
        }
    }
}

/// `GET /v1/incidents`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Incidents {
    pub incidents: Vec<Incident>,
    pub reliability: Vec<Reliability>,
}

/// `POST /v1/silences`.
#[derive(Debug, Serialize, Deserialize)]
pub struct NewSilence {
    pub service: String,
    pub slo: Option<String>,
    pub severity: Option<Severity>,
    pub starts_at_ms: Option<u64>,
    pub ends_at_ms: u64,
    #[serde(default)]
    pub comment: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, to_value};

    /// The API's JSON for alerts, silences and incidents is what the journal's records
    /// serialized to when the API returned them directly: same fields, same values.
    #[test]
    fn alerts_silences_and_incidents_keep_their_shape() {
        let alert = observe::alert::Alert {
            id: "web/availability/page@1".into(),
            fingerprint: "web/availability/page".into(),
            service: "web".into(),
            name: "availability".into(),
            severity: observe::alert::Severity::Page,
            summary: "burning".into(),
            state: observe::alert::AlertState::Resolved,
            started_at_ms: 1,
            resolved_at_ms: Some(2),
            notified: true,
        };
        assert_eq!(
            to_value(Alert::from(&alert)).unwrap(),
            to_value(&alert).unwrap()
        );
        let silence = observe::alert::Silence {
            id: "00ff".into(),
            service: "web".into(),
            name: Some("availability".into()),
            severity: Some(observe::alert::Severity::Ticket),
            starts_at_ms: 3,
            ends_at_ms: 4,
            comment: "deploy".into(),
        };
        let shown = to_value(Silence::from(&silence)).unwrap();
        assert_eq!(shown, to_value(&silence).unwrap());
        assert_eq!(shown["severity"], Value::from("ticket"));
        let incident = observe::incident::Incident {
            id: 7,
            service: "web".into(),
            title: "web has no ready replica".into(),
            state: observe::incident::IncidentState::Open,
            fault_at_ms: Some(5),
            fault: Some("exit 1".into()),
            detected_at_ms: 6,
            resolved_at_ms: None,
            triggers: ["no_ready_replica".to_owned()].into(),
            timeline: vec![observe::incident::Entry {
                at_ms: 5,
                kind: "fault".into(),
                text: "exit 1".into(),
            }],
            more_actions: 0,
            resolved_by: Some("restart-on-page".into()),
            node: Some("h0".into()),
        };
        assert_eq!(
            to_value(Incident::from(&incident)).unwrap(),
            to_value(&incident).unwrap()
        );
        let reliability = observe::incident::Reliability {
            service: "web".into(),
            incidents: 1,
            open: 1,
            mttd_ms: Some(1.0),
            mttr_ms: Some(3.0),
            automated: 1,
            mttr_automated_ms: Some(2.0),
            mttr_manual_ms: Some(4.0),
            mtbf_ms: None,
            availability: 0.5,
            observed_ms: 10,
        };
        assert_eq!(
            to_value(Reliability::from(&reliability)).unwrap(),
            to_value(&reliability).unwrap()
        );
    }
}
