//! `GET /v1/series`: the last ten minutes of a service and its replicas (or of every
//! service, without replicas), a point a second, as columns of equal length, oldest first.
//! `since` (ms since the epoch) keeps only later points, so a page polling once a second
//! gets one new point each time.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use observe::series::{CAPACITY, Columns, INTERVAL, SERVICE_FIELDS, ServiceColumns};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

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
    let Some(service) = q.service else {
        return Json(Body::Overview(s.series.services(q.since))).into_response();
    };
    if !s.supervisor.in_stack(&service) {
        return control_error(runtime::ControlError::UnknownService(service));
    }
    // A service of the stack not sampled yet (the first second, or just added by a
    // reload) has no points: empty columns rather than an error.
    let columns = s
        .series
        .service(&service, q.since)
        .unwrap_or_else(|| ServiceColumns {
            service: Columns::empty(&SERVICE_FIELDS),
            replicas: BTreeMap::new(),
        });
    Json(Body::Service(service, columns)).into_response()
}

/// The answer, written straight from the columns: figures are `f32`s, written as such
/// (`48.96534`, not the `f64` digits of an `f32`); an unknown figure is `null`.
enum Body {
    Service(String, ServiceColumns),
    Overview(BTreeMap<String, Columns>),
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("interval_ms", &(INTERVAL.as_millis() as u64))?;
        m.serialize_entry("capacity", &CAPACITY)?;
        match self {
            Body::Service(name, c) => {
                m.serialize_entry("service", name)?;
                entries(&mut m, &c.service)?;
                let replicas: BTreeMap<String, ColumnsJson<'_>> = c
                    .replicas
                    .iter()
                    .map(|(i, c)| (i.to_string(), ColumnsJson(c)))
                    .collect();
                m.serialize_entry("replicas", &replicas)?;
            }
            Body::Overview(services) => {
                let services: BTreeMap<&str, ColumnsJson<'_>> = services
                    .iter()
                    .map(|(n, c)| (n.as_str(), ColumnsJson(c)))
                    .collect();
                m.serialize_entry("services", &services)?;
            }
        }
        m.end()
    }
}

/// `{"t": [...], "rps": [...], ...}`.
struct ColumnsJson<'a>(&'a Columns);

impl Serialize for ColumnsJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(Some(self.0.columns.len() + 1))?;
        entries(&mut m, self.0)?;
        m.end()
    }
}

fn entries<M: SerializeMap>(m: &mut M, c: &Columns) -> Result<(), M::Error> {
    m.serialize_entry("t", &c.t)?;
    for (name, values) in &c.columns {
        m.serialize_entry(name, values)?;
    }
    Ok(())
}
