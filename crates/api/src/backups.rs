//! `/v1/backups`: status, snapshots, and running a backup, a verification, a drill or a
//! restore now. The operations answer when they are done (a drill can take minutes):
//! clients give these calls a long timeout.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::json::error;
use crate::routes::{AppState, bad_query};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/backups", get(list))
        .route("/v1/backups/{name}/snapshots", get(snapshots))
        .route("/v1/backups/{name}/run", post(run))
        .route("/v1/backups/{name}/verify", post(verify))
        .route("/v1/backups/{name}/drill", post(drill))
        .route("/v1/backups/{name}/restore", post(restore))
}

async fn list(State(s): State<Arc<AppState>>) -> Response {
    Json(s.backups.status()).into_response()
}

async fn snapshots(State(s): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    answer(s.backups.snapshots(&name).await, StatusCode::OK)
}

async fn run(State(s): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    answer(s.backups.run(&name).await, StatusCode::CREATED)
}

async fn verify(State(s): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    answer(s.backups.verify(&name).await, StatusCode::OK)
}

async fn drill(State(s): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    answer(s.backups.drill(&name).await, StatusCode::OK)
}

#[derive(Deserialize)]
struct RestoreQuery {
    snapshot: String,
    to: std::path::PathBuf,
}

async fn restore(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    q: Result<Query<RestoreQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    if !q.to.is_absolute() {
        return error(
            StatusCode::BAD_REQUEST,
            "restore: `to` must be an absolute path (bulwark's working directory is not yours)",
        )
        .into_response();
    }
    let done = s.backups.restore(&name, &q.snapshot, &q.to).await;
    answer(
        done.map(|id| serde_json::json!({ "backup": name, "snapshot": id, "to": q.to })),
        StatusCode::OK,
    )
}

/// The result as JSON, or the error with the status that fits it.
fn answer<T: serde::Serialize>(result: Result<T, backup::Error>, ok: StatusCode) -> Response {
    match result {
        Ok(v) => (ok, Json(v)).into_response(),
        Err(e) => {
            use backup::Error as E;
            let status = match e {
                E::Unknown(_) | E::NoSnapshot(_) => StatusCode::NOT_FOUND,
                // What the stack file or the machine must change: a path, a password file,
                // a service, a restore target.
                E::Io { .. } | E::Password { .. } | E::Service(_) => StatusCode::CONFLICT,
                // The operation ran and its outcome is the failure.
                E::Hook { .. } | E::Drill(_) => StatusCode::UNPROCESSABLE_ENTITY,
                E::Repository { .. } | E::State(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, &e.to_string()).into_response()
        }
    }
}
