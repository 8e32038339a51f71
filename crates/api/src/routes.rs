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
    pub plane: observe::plane::Plane,
    /// The journal's durable watermark: events above it are not shown yet.
    pub persisted: tokio::sync::watch::Receiver<u64>,
    /// The global fault kill switch (`true`: injected faults apply).
    pub faults: tokio::sync::watch::Sender<bool>,
    /// Asks `up` to apply the stack file again; the answer is the changes or the errors.
    pub reload: tokio::sync::mpsc::Sender<ReloadRequest>,
}

pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<Vec<String>, String>>;

pub fn router(state: Arc<AppState>) -> Router {
    let token = state.token.clone();
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/events", get(events))
        .route("/v1/logs/{service}", get(logs))
        .route("/v1/services/{service}/restart", post(restart))
        .route("/v1/services/{service}/scale", post(scale))
        .route("/v1/slo", get(slo))
        .route("/v1/alerts", get(alerts))
        .route("/v1/incidents", get(incidents))
        .route("/v1/silences", get(silences).post(add_silence))
        .route("/v1/silences/{id}", axum::routing::delete(remove_silence))
        .route("/v1/faults/{state}", post(faults))
        .route("/v1/reload", post(reload))
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
    /// Wait (up to 2 s) until every event published so far is in the journal, so a
    /// reader sees what just happened.
    #[serde(default)]
    sync: bool,
}

/// Only events already in the journal are shown, so whatever a user saw survives a
/// kill -9; a follower waits (briefly) for each event to be written.
async fn events(State(s): State<Arc<AppState>>, Query(q): Query<EventsQuery>) -> Response {
    if q.sync {
        let last = s.bus.last_seq();
        let mut persisted = s.persisted.clone();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            persisted.wait_for(|p| *p >= last),
        )
        .await;
    }
    let sub = s.bus.subscribe(q.since);
    let upto = *s.persisted.borrow();
    if !q.follow {
        let list: Vec<_> = sub
            .backlog
            .iter()
            .filter(|e| e.seq <= upto)
            .map(|e| &**e)
            .collect();
        return Json(list).into_response();
    }
    let live = BroadcastStream::new(sub.live).filter_map(|e| async move { e.ok() });
    let persisted = s.persisted.clone();
    let all = stream::iter(sub.backlog).chain(live).then(move |e| {
        let mut persisted = persisted.clone();
        async move {
            let _ = persisted.wait_for(|p| *p >= e.seq).await;
            Ok::<_, Infallible>(SseEvent::default().json_data(&*e).unwrap_or_default())
        }
    });
    sse(all)
}

async fn reload(State(s): State<Arc<AppState>>) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if s.reload.send(tx).await.is_err() {
        return control_error(ControlError::ShuttingDown);
    }
    match rx.await {
        Ok(Ok(changes)) => Json(changes).into_response(),
        Ok(Err(e)) => error(
            StatusCode::BAD_REQUEST,
            &format!("reload refused, the previous stack keeps running:\n{e}"),
        )
        .into_response(),
        Err(_) => control_error(ControlError::ShuttingDown),
    }
}

/// `POST /v1/faults/off` removes every injected fault at once (HTTP faults and TCP
/// toxics); `on` restores the configured ones.
async fn faults(State(s): State<Arc<AppState>>, Path(state): Path<String>) -> Response {
    let enabled = match state.as_str() {
        "on" => true,
        "off" => false,
        _ => {
            return error(StatusCode::NOT_FOUND, "use /v1/faults/on or /v1/faults/off")
                .into_response();
        }
    };
    if s.faults.send_replace(enabled) != enabled {
        s.bus.publish(bus::EventKind::FaultsToggled { enabled });
    }
    Json(serde_json::json!({ "faults": state })).into_response()
}

async fn slo(State(s): State<Arc<AppState>>) -> Json<Vec<json::SloReport>> {
    Json(s.plane.slo_reports().iter().map(Into::into).collect())
}

async fn alerts(State(s): State<Arc<AppState>>) -> Json<Vec<observe::alert::Alert>> {
    Json(s.plane.alerts())
}

async fn incidents(State(s): State<Arc<AppState>>) -> Json<json::Incidents> {
    Json(json::Incidents {
        incidents: s.plane.incidents(),
        reliability: s.plane.reliability(),
    })
}

async fn silences(State(s): State<Arc<AppState>>) -> Json<Vec<observe::alert::Silence>> {
    Json(s.plane.silences())
}

async fn add_silence(
    State(s): State<Arc<AppState>>,
    body: Result<Json<json::NewSilence>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(n) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("silence: {e}")).into_response(),
    };
    if s.supervisor.logs(&n.service).is_none() {
        return control_error(ControlError::UnknownService(n.service));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let starts = n.starts_at_ms.unwrap_or(now);
    if n.ends_at_ms <= starts.max(now) {
        return error(
            StatusCode::BAD_REQUEST,
            "silence: ends_at_ms must be in the future and after starts_at_ms",
        )
        .into_response();
    }
    let silence = observe::alert::Silence {
        id: format!("{:016x}", rand::random::<u64>()),
        service: n.service,
        name: n.slo,
        severity: n.severity,
        starts_at_ms: starts,
        ends_at_ms: n.ends_at_ms,
        comment: n.comment,
    };
    s.plane.silence(silence.clone());
    (StatusCode::CREATED, Json(silence)).into_response()
}

async fn remove_silence(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if s.plane.unsilence(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, &format!("no silence {id:?}")).into_response()
    }
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

/// Prometheus text by default; OpenMetrics for scrapers that ask for it.
async fn metrics(State(s): State<Arc<AppState>>, headers: axum::http::HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(header::CONTENT_TYPE, observe::OPENMETRICS)],
            observe::encode_openmetrics(&s.registry),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, observe::PROMETHEUS_TEXT)],
            observe::encode_prometheus(&s.registry),
        )
            .into_response()
    }
}
