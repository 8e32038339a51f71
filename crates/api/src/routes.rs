use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use bus::Bus;
use futures_util::{Stream, StreamExt, stream};
use prometheus_client::registry::Registry;
use runtime::{ControlError, Supervisor};
use serde::Deserialize;
use tokio_stream::wrappers::BroadcastStream;

use crate::json::{self, error};
use crate::security;

pub struct AppState {
    pub supervisor: Supervisor,
    pub bus: Arc<Bus>,
    pub registry: Arc<Registry>,
    pub token: String,
}

pub fn router(state: Arc<AppState>) -> Router {
    let token = state.token.clone();
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/events", get(events))
        .route("/v1/logs/{service}", get(logs))
        .route("/v1/services/{service}/restart", post(restart))
        .route("/v1/services/{service}/scale", post(scale))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such API route; see `bulwark --help`",
            )
        })
        .layer(middleware::from_fn(move |req, next| {
            security::guard(token.clone(), req, next)
        }))
        .with_state(state)
}

async fn status(State(s): State<Arc<AppState>>) -> Json<json::Status> {
    Json(json::Status {
        services: s.supervisor.status().into_iter().map(Into::into).collect(),
    })
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    since: u64,
    #[serde(default)]
    follow: bool,
}

async fn events(State(s): State<Arc<AppState>>, Query(q): Query<EventsQuery>) -> Response {
    let sub = s.bus.subscribe(q.since);
    if !q.follow {
        let list: Vec<_> = sub.backlog.iter().map(|e| &**e).collect();
        return Json(list).into_response();
    }
    let live = BroadcastStream::new(sub.live).filter_map(|e| async move { e.ok() });
    let all = stream::iter(sub.backlog)
        .chain(live)
        .map(|e| Ok::<_, Infallible>(SseEvent::default().json_data(&*e).unwrap_or_default()));
    sse(all)
}

#[derive(Deserialize)]
struct LogsQuery {
    replica: Option<u32>,
    #[serde(default)]
    follow: bool,
}

async fn logs(
    State(s): State<Arc<AppState>>,
    Path(service): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Response {
    let Some(logs) = s.supervisor.logs(&service) else {
        return control_error(ControlError::UnknownService(service));
    };
    let (backlog, live) = logs.subscribe(q.replica);
    if !q.follow {
        let lines: Vec<json::LogLine> = backlog.iter().map(|l| (&**l).into()).collect();
        return Json(lines).into_response();
    }
    let want = q.replica;
    let live = BroadcastStream::new(live)
        .filter_map(move |l| async move { l.ok().filter(|l| want.is_none_or(|r| l.replica == r)) });
    let all = stream::iter(backlog).chain(live).map(|l| {
        Ok::<_, Infallible>(
            SseEvent::default()
                .json_data(json::LogLine::from(&*l))
                .unwrap_or_default(),
        )
    });
    sse(all)
}

fn sse(s: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static) -> Response {
    Sse::new(s).keep_alive(KeepAlive::default()).into_response()
}

#[derive(Deserialize)]
struct RestartQuery {
    replica: Option<u32>,
}

async fn restart(
    State(s): State<Arc<AppState>>,
    Path(service): Path<String>,
    Query(q): Query<RestartQuery>,
) -> Response {
    match s.supervisor.restart(&service, q.replica) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(
                serde_json::json!({ "service": service, "replica": q.replica, "restarting": true }),
            ),
        )
            .into_response(),
        Err(e) => control_error(e),
    }
}

#[derive(Deserialize)]
struct ScaleQuery {
    replicas: u32,
}

async fn scale(
    State(s): State<Arc<AppState>>,
    Path(service): Path<String>,
    Query(q): Query<ScaleQuery>,
) -> Response {
    if q.replicas > 1000 {
        return error(
            StatusCode::BAD_REQUEST,
            "replicas must be between 0 and 1000",
        )
        .into_response();
    }
    match s.supervisor.scale(&service, q.replicas) {
        Ok(from) => Json(json::Scaled {
            service,
            from,
            to: q.replicas,
        })
        .into_response(),
        Err(e) => control_error(e),
    }
}

fn control_error(e: ControlError) -> Response {
    let status = match e {
        ControlError::UnknownService(_) | ControlError::UnknownReplica { .. } => {
            StatusCode::NOT_FOUND
        }
        ControlError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, &e.to_string()).into_response()
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, observe::CONTENT_TYPE)],
        observe::encode(&s.registry),
    )
        .into_response()
}
