//! The API's JSON shapes. `status` is a stable contract for scripts: fields may be added,
//! never renamed or removed.

use axum::Json;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub services: Vec<Service>,
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
