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
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Replica {
    pub index: u32,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub state: String,
    pub ready: bool,
    pub restarts: u32,
    pub crash_looping: bool,
    pub last_exit: Option<Exit>,
    pub stderr_tail: Vec<String>,
    pub started_at_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
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
            replicas: s
                .replicas
                .into_iter()
                .map(|r| Replica {
                    index: r.index,
                    pid: r.pid,
                    port: r.port,
                    state: r.state.as_str().into(),
                    ready: r.ready,
                    restarts: r.restarts,
                    crash_looping: r.state == runtime::ReplicaState::CrashLooping,
                    last_exit: r.last_exit.map(|e| Exit {
                        code: e.code,
                        signal: e.signal,
                    }),
                    stderr_tail: r.stderr_tail,
                    started_at_ms: r.started_at_ms,
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

#[derive(Debug, Serialize, Deserialize)]
pub struct Incidents {
    pub incidents: Vec<observe::incident::Incident>,
    pub reliability: Vec<observe::incident::Reliability>,
}

/// `POST /v1/silences`.
#[derive(Debug, Serialize, Deserialize)]
pub struct NewSilence {
    pub service: String,
    pub slo: Option<String>,
    pub severity: Option<observe::alert::Severity>,
    pub starts_at_ms: Option<u64>,
    pub ends_at_ms: u64,
    #[serde(default)]
    pub comment: String,
}
