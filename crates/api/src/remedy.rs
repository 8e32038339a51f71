//! `/v1/actions`: remediation decisions (`GET`), and answers to the ones that wait for
//! approval (`POST /v1/actions/ID/approve` or `/deny`, with `{"by": "..."}`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::json::{self, error};
use crate::routes::AppState;

/// Longest `by` kept in the record.
const MAX_BY: usize = 200;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/actions", get(list))
        .route("/v1/actions/{id}/{answer}", post(answer))
}

async fn list(State(s): State<Arc<AppState>>) -> Json<Vec<json::Action>> {
    Json(s.remedy.actions().iter().map(json::Action::from).collect())
}

async fn answer(
    State(s): State<Arc<AppState>>,
    Path((id, answer)): Path<(String, String)>,
    body: axum::body::Body,
) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("{id:?} is not an action id; `bulwark actions` lists them"),
        )
        .into_response();
    };
    let bytes = match crate::routes::read_body(body).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let req: json::Answer = if bytes.is_empty() {
        json::Answer::default()
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                return error(StatusCode::BAD_REQUEST, &format!("answer: {e}")).into_response();
            }
        }
    };
    let by: String = if req.by.is_empty() {
        "api".into()
    } else {
        req.by.chars().take(MAX_BY).collect()
    };
    let done = match answer.as_str() {
        "approve" => s.remedy.approve(id, &by),
        "deny" => s.remedy.deny(id, &by),
        other => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("unknown answer {other:?}: use approve or deny"),
            )
            .into_response();
        }
    };
    match done {
        Ok(rec) => Json(json::Action::from(&rec)).into_response(),
        Err(e @ remedy::AnswerError::Unknown(_)) => {
            error(StatusCode::NOT_FOUND, &e.to_string()).into_response()
        }
        Err(e) => error(StatusCode::CONFLICT, &e.to_string()).into_response(),
    }
}
