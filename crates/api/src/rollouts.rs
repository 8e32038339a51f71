//! `/v1/rollouts/{service}`: a service's rollout (status, a live stream of it, the
//! commands, undo, history) and starting one from the stack file.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream;
use rollout::{Command, Error};
use serde::Deserialize;

use crate::json::error;
use crate::routes::{AppState, bad_query, control_error, sse};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/rollouts/{service}", get(status))
        .route("/v1/rollouts/{service}/watch", get(watch))
        .route("/v1/rollouts/{service}/history", get(history))
        .route("/v1/rollouts/{service}/start", post(start))
        .route("/v1/rollouts/{service}/undo", post(undo))
        .route("/v1/rollouts/{service}/{command}", post(command))
}

fn rollout_error(e: Error) -> Response {
    let status = match &e {
        Error::UnknownService(_) | Error::UnknownRevision { .. } | Error::NotRunning(_) => {
            StatusCode::NOT_FOUND
        }
        Error::Running { .. } | Error::Unchanged { .. } => StatusCode::CONFLICT,
        Error::Control(_) => {
            let Error::Control(c) = e else { unreachable!() };
            return control_error(c);
        }
    };
    error(status, &e.to_string()).into_response()
}

/// 404 for a service the stack does not have.
fn unknown(s: &AppState, service: &str) -> Option<Response> {
    s.supervisor
        .service_spec(service)
        .is_none()
        .then(|| rollout_error(Error::UnknownService(service.into())))
}

async fn status(State(s): State<Arc<AppState>>, Path(service): Path<String>) -> Response {
    if let Some(r) = unknown(&s, &service) {
        return r;
    }
    Json(serde_json::json!({
        "service": service,
        "revision": s.supervisor.revisions(&service).map(|v| v.stable),
        "rollout": s.rollouts.status(&service),
        "drift": s.rollouts.drift(&service),
    }))
    .into_response()
}

/// The running rollout's status as server-sent events: now, then at every change, until
/// it ends.
async fn watch(State(s): State<Arc<AppState>>, Path(service): Path<String>) -> Response {
    if let Some(r) = unknown(&s, &service) {
        return r;
    }
    let Some(rx) = s.rollouts.watch(&service) else {
        return rollout_error(Error::NotRunning(service));
    };
    let events = stream::unfold((rx, true, false), |(mut rx, first, done)| async move {
        if done {
            return None;
        }
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let status = rx.borrow_and_update().clone();
        let ended = status.phase.ended();
        let ev = SseEvent::default()
            .json_data(&status)
            .unwrap_or_else(|_| SseEvent::default());
        Some((Ok::<_, Infallible>(ev), (rx, false, ended)))
    });
    sse(events)
}

async fn history(State(s): State<Arc<AppState>>, Path(service): Path<String>) -> Response {
    if let Some(r) = unknown(&s, &service) {
        return r;
    }
    let rollouts = s.rollouts.clone();
    match tokio::task::spawn_blocking(move || rollouts.history(&service)).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()).into_response(),
    }
}

/// Rolls out what the stack file says of `service` now (after a rollback, or to retry).
async fn start(State(s): State<Arc<AppState>>, Path(service): Path<String>) -> Response {
    if let Some(r) = unknown(&s, &service) {
        return r;
    }
    let file = s.stack_file.clone();
    let loaded = tokio::task::spawn_blocking(move || spec::load(&file)).await;
    let stack = match loaded {
        Ok(Ok(stack)) => stack,
        Ok(Err(e)) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("the stack file does not load; nothing started:\n{e}"),
            )
            .into_response();
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()).into_response(),
    };
    let Some(svc) = stack.services.into_iter().find(|x| x.name == service) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!(
                "service {service:?} is no longer in the stack file; `bulwark reload` removes it"
            ),
        )
        .into_response();
    };
    match s.rollouts.restart_from_file(&svc) {
        Ok(revision) => Json(serde_json::json!({ "revision": revision })).into_response(),
        Err(e) => rollout_error(e),
    }
}

#[derive(Deserialize)]
struct UndoQuery {
    to: Option<u32>,
}

async fn undo(
    State(s): State<Arc<AppState>>,
    Path(service): Path<String>,
    q: Result<Query<UndoQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    let rollouts = s.rollouts.clone();
    match tokio::task::spawn_blocking(move || rollouts.undo(&service, q.to)).await {
        Ok(Ok(to)) => Json(serde_json::json!({ "to": to })).into_response(),
        Ok(Err(e)) => rollout_error(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
struct CommandQuery {
    #[serde(default)]
    full: bool,
}

async fn command(
    State(s): State<Arc<AppState>>,
    Path((service, command)): Path<(String, String)>,
    q: Result<Query<CommandQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    let c = match command.as_str() {
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "promote" => Command::Promote { full: q.full },
        "abort" => Command::Abort,
        other => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("no rollout command {other:?}: pause, resume, promote, abort, undo"),
            )
            .into_response();
        }
    };
    match s.rollouts.command(&service, c) {
        Ok(()) => {
            Json(serde_json::json!({ "service": service, "command": command })).into_response()
        }
        Err(e) => rollout_error(e),
    }
}
