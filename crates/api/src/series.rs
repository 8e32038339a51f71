//! `GET /v1/series`: the last ten minutes of a service and its replicas (or of every
//! service, without replicas), a point a second, as columns of equal length, oldest first.
//! `since` (ms since the epoch) keeps only later points, so a page polling once a second
//! gets one new point each time.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use observe::series::{CAPACITY, Columns, INTERVAL};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::routes::{AppState, bad_query, control_error};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/series", get(series))
}

#[derive(Deserialize)]
struct SeriesQuery {
    service: Option<String>,
    #[serde(default)]
    since: u64,
}

async fn series(
    State(s): State<Arc<AppState>>,
    q: Result<Query<SeriesQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    let mut out = Map::new();
    out.insert("interval_ms".into(), json!(INTERVAL.as_millis() as u64));
    out.insert("capacity".into(), json!(CAPACITY));
    let Some(service) = q.service else {
        let services: Map<String, Value> = s
            .series
            .services(q.since)
            .into_iter()
            .map(|(name, c)| (name, Value::Object(columns(c))))
            .collect();
        out.insert("services".into(), Value::Object(services));
        return Json(Value::Object(out)).into_response();
    };
    if !s.supervisor.in_stack(&service) {
        return control_error(runtime::ControlError::UnknownService(service));
    }
    out.insert("service".into(), json!(service));
    // A service of the stack not sampled yet (the first second, or just added by a
    // reload) has no points: empty columns rather than an error.
    let (own, replicas) = match s.series.service(&service, q.since) {
        Some(c) => (c.service, c.replicas),
        None => (
            Columns::empty(&observe::series::SERVICE_FIELDS),
            Default::default(),
        ),
    };
    out.extend(columns(own));
    let replicas: Map<String, Value> = replicas
        .into_iter()
        .map(|(i, c)| (i.to_string(), Value::Object(columns(c))))
        .collect();
    out.insert("replicas".into(), Value::Object(replicas));
    Json(Value::Object(out)).into_response()
}

/// `{"t": [...], "rps": [...], ...}`; an unknown figure is `null`.
fn columns(c: Columns) -> Map<String, Value> {
    let mut m = Map::with_capacity(c.columns.len() + 1);
    m.insert("t".into(), json!(c.t));
    for (name, values) in c.columns {
        m.insert(name.into(), json!(values));
    }
    m
}
