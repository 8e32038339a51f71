//! `/v1/chaos`: the declared experiments, running one (declared, or from a file checked
//! against the running stack), status, and halting them all.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chaos::{Refusal, Trigger};
use serde::Deserialize;

use crate::json::error;
use crate::routes::{AppState, bad_query};

/// How long a halt waits for experiments to undo their faults and run their rollbacks.
const HALT_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/chaos", get(list))
        .route("/v1/chaos/status", get(status))
        .route("/v1/chaos/run", post(run_file))
        .route("/v1/chaos/run/{name}", post(run_declared))
        .route("/v1/chaos/halt", post(halt))
}

async fn list(State(s): State<Arc<AppState>>) -> Response {
    let list: Vec<_> = s
        .chaos
        .experiments()
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.name,
                "service": e.target.service,
                "fault": e.fault.kind().as_str(),
                "duration_ms": u64::try_from(e.duration.as_millis()).unwrap_or(u64::MAX),
                "schedule": match &e.schedule {
                    spec::ChaosSchedule::OnDemand => "on demand".to_owned(),
                    spec::ChaosSchedule::Cron(c) => format!("cron {}", c.as_str()),
                    spec::ChaosSchedule::Monkey(m) => format!(
                        "monkey every ~{}{}",
                        humantime_secs(m.mean_interval),
                        if m.leashed { " (leashed)" } else { "" }
                    ),
                },
            })
        })
        .collect();
    Json(list).into_response()
}

fn humantime_secs(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs())
}

async fn status(State(s): State<Arc<AppState>>) -> Response {
    Json(s.chaos.status()).into_response()
}

#[derive(Deserialize)]
struct RunQuery {
    /// Answer when the experiment has ended (its report), not when it has started.
    #[serde(default = "yes")]
    wait: bool,
    /// Which experiment of a posted file.
    name: Option<String>,
    /// `verify` when `bulwark verify` runs it.
    #[serde(default)]
    trigger: Option<String>,
    /// The posted file's name, for the messages about it.
    #[serde(default)]
    file: Option<String>,
}

fn yes() -> bool {
    true
}

async fn run_declared(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    q: Result<Query<RunQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    match s.chaos.experiment(&name) {
        Ok(exp) => start(&s, exp.clone(), &q).await,
        Err(e) => error(StatusCode::NOT_FOUND, &e.to_string()).into_response(),
    }
}

/// The body is a file of `[[experiments]]`, checked against the running stack.
async fn run_file(
    State(s): State<Arc<AppState>>,
    q: Result<Query<RunQuery>, QueryRejection>,
    body: String,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    let services: Vec<spec::Service> = s
        .supervisor
        .status()
        .iter()
        .filter_map(|st| s.supervisor.service_spec(&st.name))
        .map(|svc| (*svc).clone())
        .collect();
    let file = std::path::Path::new(q.file.as_deref().unwrap_or("experiments.toml"));
    let list = match spec::parse_experiments(&body, file, &services) {
        Ok(list) => list,
        Err(e) => {
            return error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()).into_response();
        }
    };
    let exp = match (&q.name, list.len()) {
        (Some(n), _) => list.into_iter().find(|e| &e.name == n),
        (None, 1) => list.into_iter().next(),
        (None, _) => {
            let msg = "the file holds several experiments: name one with ?name=";
            return error(StatusCode::BAD_REQUEST, msg).into_response();
        }
    };
    match exp {
        Some(exp) if runs_commands(&exp) => error(
            StatusCode::FORBIDDEN,
            "experiments sent through the API may not run commands (rollbacks, `command` \
             probes) or fill a disk: bulwark runs only the commands its stack file names; \
             declare this experiment in the stack file",
        )
        .into_response(),
        Some(exp) => start(&s, exp, &q).await,
        None => error(
            StatusCode::NOT_FOUND,
            "no experiment of that name in the file",
        )
        .into_response(),
    }
}

async fn start(s: &AppState, exp: spec::Experiment, q: &RunQuery) -> Response {
    let trigger = match q.trigger.as_deref() {
        Some("verify") => Trigger::Verify,
        _ => Trigger::Manual,
    };
    match s.chaos.start(exp, trigger).await {
        Ok((id, task)) if q.wait => match task.await {
            Ok(Some(report)) => Json(report).into_response(),
            Ok(None) => error(StatusCode::CONFLICT, "refused at its gate").into_response(),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("experiment {id}: {e}"),
            )
            .into_response(),
        },
        Ok((id, _)) => {
            (StatusCode::ACCEPTED, Json(serde_json::json!({ "id": id }))).into_response()
        }
        Err(e @ Refusal::Unknown(_)) => {
            error(StatusCode::NOT_FOUND, &e.to_string()).into_response()
        }
        Err(e @ Refusal::Gate(_)) => error(StatusCode::CONFLICT, &e.to_string()).into_response(),
    }
}

/// Turns faults off (which blocks new experiments until `faults on`), then waits for the
/// running ones to undo their faults and run their rollbacks.
async fn halt(State(s): State<Arc<AppState>>) -> Response {
    // Counted before faults go off: the kill switch, woken by that, halts them too and
    // could end them before a count taken after, which would then say 0.
    let halted = s.chaos.stop_all();
    if s.faults.send_replace(false) {
        s.bus
            .publish(bus::EventKind::FaultsToggled { enabled: false });
    }
    s.chaos.settled(HALT_GRACE).await;
    Json(serde_json::json!({ "halted": halted, "faults": "off" })).into_response()
}

/// Whether `exp` would run a program or write where its sender chose.
fn runs_commands(exp: &spec::Experiment) -> bool {
    !exp.rollbacks.is_empty()
        || matches!(exp.fault, spec::ChaosFault::DiskFill { .. })
        || exp
            .steady_state
            .iter()
            .any(|p| matches!(p.check, spec::SteadyCheck::Command { .. }))
}
