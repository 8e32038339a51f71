//! `/v1/switches`: the run-time switches and their values; setting one
//! (`POST /v1/switches/NAME` with `{"value": "off", "by": "..."}`) stores it in the
//! journal, applies it and records an event.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::json::error;
use crate::routes::AppState;

/// Longest `by` kept in the event.
const MAX_BY: usize = 200;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/switches", get(list))
        .route("/v1/switches/{name}", post(set))
}

/// One switch, as listed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Switch {
    pub name: String,
    /// `on`, `off` or a percentage such as `25%`.
    pub value: String,
    pub default: String,
    pub doc: String,
}

/// The body of `POST /v1/switches/NAME`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SetSwitch {
    /// `on`, `off` or a percentage such as `25%`.
    pub value: String,
    /// Who sets it (shown in the event).
    #[serde(default)]
    pub by: String,
}

async fn list(State(s): State<Arc<AppState>>) -> Json<Vec<Switch>> {
    Json(
        s.switches
            .list()
            .into_iter()
            .map(|w| Switch {
                name: w.name,
                value: w.value.to_string(),
                default: w.default.to_string(),
                doc: w.doc,
            })
            .collect(),
    )
}

async fn set(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> Response {
    let bytes = match crate::routes::read_body(body).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let req: SetSwitch = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, &format!("switch: {e}")).into_response();
        }
    };
    let value: spec::SwitchValue = match req.value.parse() {
        Ok(v) => v,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, &format!("switch {name}: {e}")).into_response();
        }
    };
    let by: String = if req.by.is_empty() {
        "api".into()
    } else {
        req.by.chars().take(MAX_BY).collect()
    };
    let board = s.switches.clone();
    let n = name.clone();
    // Stored in the journal first: a blocking write, off the async workers.
    let done = tokio::task::spawn_blocking(move || board.set(&n, value, &by)).await;
    match done {
        Ok(Ok(from)) => Json(serde_json::json!({
            "name": name,
            "from": from.to_string(),
            "to": value.to_string(),
        }))
        .into_response(),
        Ok(Err(e @ proxy::SetError::Unknown(_))) => {
            error(StatusCode::NOT_FOUND, &e.to_string()).into_response()
        }
        Ok(Err(e @ proxy::SetError::Store(_))) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("switch {name} not set: {e}"),
        )
        .into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "switch not set").into_response(),
    }
}
