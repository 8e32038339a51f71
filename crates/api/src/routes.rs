use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use bus::Bus;
use futures_util::{Stream, StreamExt, stream};
use observe::journal::Health;
use prometheus_client::registry::Registry;
use runtime::{ControlError, Supervisor};
use serde::Deserialize;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::json::{self, error};
use crate::security;

pub struct AppState {
    pub supervisor: Supervisor,
    pub bus: Arc<Bus>,
    pub registry: Arc<Registry>,
    /// The tokens accepted, with their roles.
    pub tokens: Arc<crate::tokens::Tokens>,
    /// Where calls that change something, and refused calls, are recorded.
    pub audit: Arc<crate::audit::Audit>,
    pub plane: observe::plane::Plane,
    /// The journal's durable watermark: events above it are not shown yet.
    pub persisted: tokio::sync::watch::Receiver<u64>,
    /// The global fault kill switch (`true`: injected faults apply).
    pub faults: tokio::sync::watch::Sender<bool>,
    /// Asks `up` to apply the stack file again; the answer is the changes or the errors.
    pub reload: tokio::sync::mpsc::Sender<ReloadRequest>,
    /// Whether the journal writes; while it fails, events are served from memory.
    pub journal_health: tokio::sync::watch::Receiver<Health>,
    /// The API speaks TLS (`[api.tls]`): any well-formed Host is accepted, not only
    /// loopback names (a DNS-rebinding page cannot pass the browser's certificate check).
    pub any_host: bool,
    /// The stack's backups.
    pub backups: backup::Backups,
    /// The stack's chaos experiments.
    pub chaos: chaos::Chaos,
    /// The stack's rollouts.
    pub rollouts: rollout::Rollouts,
    /// The stack file `up` runs (`rollout start` reads it again).
    pub stack_file: std::path::PathBuf,
    /// The run-time switches.
    pub switches: Arc<proxy::Switchboard>,
    /// Remediation: its decisions and approvals.
    pub remedy: remedy::Remedy,
    /// The autoscalers' last decisions.
    pub autoscaling: remedy::Autoscaling,
    /// The last ten minutes of every service and replica, a point a second.
    pub series: Arc<observe::series::Series>,
}

/// The response header that says the events shown are not all in the journal.
pub const JOURNAL_HEADER: &str = "bulwark-journal";

pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<Vec<String>, String>>;

pub fn router(state: Arc<AppState>) -> Router {
    let sessions = Arc::new(crate::session::Sessions::default());
    let gate = security::Gate {
        tokens: state.tokens.clone(),
        audit: state.audit.clone(),
        sessions: sessions.clone(),
    };
    let any_host = state.any_host;
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
        .merge(crate::backups::routes())
        .merge(crate::experiments::routes())
        .merge(crate::rollouts::routes())
        .merge(crate::switches::routes())
        .merge(crate::remedy::routes())
        .merge(crate::series::routes())
        .merge(crate::tokens::routes())
        .merge(crate::audit::routes())
        .merge(crate::ui::routes(sessions))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such API route; see `bulwark --help`",
            )
        })
        .layer(middleware::from_fn(move |req, next| {
            security::guard(gate.clone(), any_host, req, next)
        }))
        .with_state(state)
}

async fn status(State(s): State<Arc<AppState>>) -> Json<json::Status> {
    let autoscale = s.autoscaling.status();
    let services = s.supervisor.status();
    // Usage is read from the cgroup files, off the async workers.
    let cgroups: Vec<_> = services
        .iter()
        .flat_map(|svc| svc.replicas.iter().filter_map(|r| r.cgroup.clone()))
        .collect();
    let mut usage = runtime::usage(cgroups).await.into_iter();
    Json(json::Status {
        services: services
            .into_iter()
            .map(|svc| {
                let mut j = json::Service::from(svc);
                for r in j.replicas.iter_mut() {
                    if let Some(res) = &mut r.resources {
                        let u = usage.next().unwrap_or_default();
                        (res.memory_bytes, res.cpu_seconds, res.pids) =
                            (u.memory_bytes, u.cpu_seconds, u.pids);
                    }
                }
                j.drift = s.rollouts.drift(&j.name);
                j.secrets = s
                    .supervisor
                    .service_spec(&j.name)
                    .map(|spec| spec.secrets.keys().cloned().collect())
                    .unwrap_or_default();
                j.rollout = s
                    .rollouts
                    .status(&j.name)
                    .filter(|r| !r.phase.ended())
                    .map(|r| format!("revision {}: {}", r.revision, r.step));
                j.autoscale =
                    autoscale
                        .iter()
                        .find(|a| a.service == j.name)
                        .map(|a| json::Autoscale {
                            min: a.min,
                            max: a.max,
                            target: a.target.clone(),
                            goal: a.goal,
                            value: a.value,
                            current: a.current,
                            desired: a.desired,
                            reason: a.reason.clone(),
                        });
                j
            })
            .collect(),
        journal: Some((&*s.journal_health.borrow()).into()),
        pending_approvals: s.remedy.pending().iter().map(json::Action::from).collect(),
    })
}

/// A query string that does not parse: 400 naming the parameter, as JSON like every error.
pub(crate) fn bad_query(e: QueryRejection) -> Response {
    error(StatusCode::BAD_REQUEST, &e.body_text()).into_response()
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    since: u64,
    #[serde(default)]
    follow: bool,
    /// Only the newest `tail` events of the backlog (a view that shows the last few need
    /// not be sent the whole history on each connection).
    tail: Option<usize>,
    /// Wait (up to 2 s) until every event published so far is in the journal, so a
    /// reader sees what just happened.
    #[serde(default)]
    sync: bool,
}

/// Only events already in the journal are shown, so whatever a user saw survives a
/// kill -9; a follower waits (briefly) for each event to be written.
///
/// While the journal fails (a full disk), waiting would freeze the stream for as long as
/// the disk stays full, exactly when the operator needs it: events are then served from
/// the in-memory history, and the response says so with a `bulwark-journal: failing`
/// header (and `bulwark status` shows the journal failing).
async fn events(
    State(s): State<Arc<AppState>>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    if q.sync && s.journal_health.borrow().ok() {
        let last = s.bus.last_seq();
        let mut persisted = s.persisted.clone();
        let mut health = s.journal_health.clone();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            tokio::select! {
                _ = persisted.wait_for(|p| *p >= last) => {}
                _ = health.wait_for(|h| !h.ok()) => {}
            }
        })
        .await;
    }
    let failing = !s.journal_health.borrow().ok();
    let mut sub = s.bus.subscribe(q.since);
    // What `tail` leaves out counts as seen: a stream that falls behind later does not
    // bring it back.
    let mut since = q.since;
    let cut = q
        .tail
        .map_or(0, |tail| sub.backlog.len().saturating_sub(tail));
    if cut > 0 {
        since = sub.backlog[cut - 1].seq;
        sub.backlog.drain(..cut);
    }
    let mut res = if q.follow {
        let follow = Follow {
            bus: s.bus.clone(),
            last: sub
                .backlog
                .first()
                .map_or(since, |e| e.seq.saturating_sub(1)),
            backlog: sub.backlog.into(),
            live: sub.live,
            persisted: s.persisted.clone(),
            health: s.journal_health.clone(),
        };
        sse(stream::unfold(follow, |mut f| async move {
            let ev = f.next().await?;
            Some((Ok::<_, Infallible>(ev), f))
        }))
    } else {
        let upto = if failing {
            u64::MAX
        } else {
            *s.persisted.borrow()
        };
        let list: Vec<_> = sub
            .backlog
            .iter()
            .filter(|e| e.seq <= upto)
            .map(|e| &**e)
            .collect();
        Json(list).into_response()
    };
    if failing {
        res.headers_mut().insert(
            JOURNAL_HEADER,
            header::HeaderValue::from_static("failing; events shown may not be stored"),
        );
    }
    res
}

/// One `/v1/events?follow` stream: the backlog, then live events, each once it is in the
/// journal (or at once while the journal fails). A stream that falls behind the live channel
/// catches up from the history; what is gone from there too is announced with a `gap`
/// event (and logged), never skipped silently.
struct Follow {
    bus: Arc<Bus>,
    backlog: std::collections::VecDeque<Arc<bus::Event>>,
    live: tokio::sync::broadcast::Receiver<Arc<bus::Event>>,
    /// The newest sequence number sent.
    last: u64,
    persisted: tokio::sync::watch::Receiver<u64>,
    health: tokio::sync::watch::Receiver<Health>,
}

impl Follow {
    async fn next(&mut self) -> Option<SseEvent> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let e = match self.backlog.pop_front() {
                Some(e) => e,
                None => match self.live.recv().await {
                    Ok(e) => e,
                    Err(RecvError::Lagged(_)) => {
                        let sub = self.bus.subscribe(self.last);
                        self.live = sub.live;
                        self.backlog = sub.backlog.into();
                        let first = self.backlog.front().map(|e| e.seq);
                        if let Some(first) = first
                            && first > self.last + 1
                        {
                            let missed = first - self.last - 1;
                            self.last = first - 1;
                            tracing::warn!(
                                missed,
                                "an event stream fell behind; telling its reader"
                            );
                            let gap = bus::Event {
                                seq: 0,
                                origin: None,
                                at_ms: std::time::SystemTime::now()
                                    .duration_since(std::time::UNIX_EPOCH)
                                    .map_or(0, |d| d.as_millis() as u64),
                                kind: bus::EventKind::Gap {
                                    reader: "event stream".into(),
                                    missed,
                                },
                            };
                            return Some(SseEvent::default().json_data(&gap).unwrap_or_default());
                        }
                        continue;
                    }
                    Err(RecvError::Closed) => return None,
                },
            };
            if e.seq <= self.last {
                continue;
            }
            self.last = e.seq;
            loop {
                if *self.persisted.borrow_and_update() >= e.seq
                    || !self.health.borrow_and_update().ok()
                {
                    break;
                }
                tokio::select! {
                    r = self.persisted.changed() => if r.is_err() { break },
                    r = self.health.changed() => if r.is_err() { break },
                }
            }
            return Some(SseEvent::default().json_data(&*e).unwrap_or_default());
        }
    }
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
    let node = s.bus.origin().map(str::to_owned);
    Json(
        s.plane
            .slo_reports()
            .iter()
            .map(|r| json::SloReport {
                node: node.clone(),
                ..r.into()
            })
            .collect(),
    )
}

async fn alerts(State(s): State<Arc<AppState>>) -> Json<Vec<json::Alert>> {
    Json(s.plane.alerts().iter().map(Into::into).collect())
}

async fn incidents(State(s): State<Arc<AppState>>) -> Json<json::Incidents> {
    Json(json::Incidents {
        incidents: s.plane.incidents().iter().map(Into::into).collect(),
        reliability: s.plane.reliability().iter().map(Into::into).collect(),
    })
}

async fn silences(State(s): State<Arc<AppState>>) -> Json<Vec<json::Silence>> {
    Json(s.plane.silences().iter().map(Into::into).collect())
}

/// The longest a silence may last, and how far ahead it may start.
const MAX_SILENCE_MS: u64 = 366 * 24 * 3600 * 1000;
/// Longest comment, SLO name and service name in a silence.
const MAX_TEXT: usize = 1024;

/// Reads a request body: at most [`security::MAX_BODY_BYTES`], within 10 s.
pub(crate) async fn read_body(body: axum::body::Body) -> Result<axum::body::Bytes, Response> {
    match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        axum::body::to_bytes(body, security::MAX_BODY_BYTES),
    )
    .await
    {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the request body is larger than {} bytes (or was cut off)",
                security::MAX_BODY_BYTES
            ),
        )
        .into_response()),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive within 10 s",
        )
        .into_response()),
    }
}

/// Parses a `POST /v1/silences` body; every error names the field.
fn parse_silence(bytes: &[u8]) -> Result<json::NewSilence, String> {
    use serde::de::DeserializeOwned;
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let serde_json::Value::Object(obj) = v else {
        return Err("the body must be a JSON object".into());
    };
    const FIELDS: [&str; 6] = [
        "service",
        "slo",
        "severity",
        "starts_at_ms",
        "ends_at_ms",
        "comment",
    ];
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("{k}: unknown field; expected one of {FIELDS:?}"));
    }
    fn field<T: DeserializeOwned>(
        obj: &serde_json::Map<String, serde_json::Value>,
        name: &str,
    ) -> Result<Option<T>, String> {
        match obj.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| format!("{name}: {e}")),
        }
    }
    let text = |name: &str, v: Option<String>| -> Result<Option<String>, String> {
        match v {
            Some(t) if t.len() > MAX_TEXT => {
                Err(format!("{name}: at most {MAX_TEXT} bytes, got {}", t.len()))
            }
            v => Ok(v),
        }
    };
    Ok(json::NewSilence {
        service: text("service", field(&obj, "service")?)?
            .ok_or("service: missing (the service to silence)")?,
        slo: text("slo", field(&obj, "slo")?)?,
        severity: field(&obj, "severity")?,
        starts_at_ms: field(&obj, "starts_at_ms")?,
        ends_at_ms: field(&obj, "ends_at_ms")?
            .ok_or("ends_at_ms: missing (when the silence ends, ms since the epoch)")?,
        comment: text("comment", field(&obj, "comment")?)?.unwrap_or_default(),
    })
}

/// A silence from a checked request at `now` (ms since the epoch); the error names the
/// field.
fn new_silence(n: json::NewSilence, now: u64) -> Result<observe::alert::Silence, String> {
    let starts = n.starts_at_ms.unwrap_or(now);
    if starts > now.saturating_add(MAX_SILENCE_MS) {
        return Err("starts_at_ms: a silence may start at most 366 days from now".into());
    }
    if n.ends_at_ms <= starts.max(now) {
        return Err("ends_at_ms: must be in the future and after starts_at_ms".into());
    }
    if n.ends_at_ms - starts.max(now) > MAX_SILENCE_MS {
        return Err("ends_at_ms: a silence may last at most 366 days".into());
    }
    Ok(observe::alert::Silence {
        id: format!("{:016x}", rand::random::<u64>()),
        service: n.service,
        name: n.slo,
        severity: n.severity.map(Into::into),
        starts_at_ms: starts,
        ends_at_ms: n.ends_at_ms,
        comment: n.comment,
    })
}

/// What a client sends, parsed as the routes parse it, without a running stack: the
/// `Host` check, every route's query parameters and the silence body. For `fuzz/`.
pub(crate) fn parse_untrusted(host: &str, uri: &str, body: &[u8], now_ms: u64) {
    let _ = crate::security::is_loopback_host(host);
    if let Ok(uri) = uri.parse::<axum::http::Uri>() {
        let _ = Query::<EventsQuery>::try_from_uri(&uri);
        let _ = Query::<LogsQuery>::try_from_uri(&uri);
        let _ = Query::<RestartQuery>::try_from_uri(&uri);
        let _ = Query::<ScaleQuery>::try_from_uri(&uri);
    }
    if let Ok(n) = parse_silence(body) {
        let _ = new_silence(n, now_ms);
    }
}

async fn add_silence(State(s): State<Arc<AppState>>, body: axum::body::Body) -> Response {
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let n = match parse_silence(&bytes) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("silence: {e}")).into_response(),
    };
    if s.supervisor.logs(&n.service).is_none() {
        return control_error(ControlError::UnknownService(n.service));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let silence = match new_silence(n, now) {
        Ok(silence) => silence,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("silence: {e}")).into_response(),
    };
    let shown = json::Silence::from(&silence);
    match s.plane.silence(silence).await {
        Ok(()) => (StatusCode::CREATED, Json(shown)).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("silence not added: {e}"),
        )
        .into_response(),
    }
}

async fn remove_silence(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match s.plane.unsilence(&id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, &format!("no silence {id:?}")).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("silence not removed: {e}"),
        )
        .into_response(),
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
    q: Result<Query<LogsQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    let Some(logs) = s.supervisor.logs(&service) else {
        return control_error(ControlError::UnknownService(service));
    };
    let (backlog, live) = logs.subscribe(q.replica);
    if !q.follow {
        let lines: Vec<json::LogLine> = backlog.iter().map(|l| (&**l).into()).collect();
        return Json(lines).into_response();
    }
    let all = follow_logs(backlog, live, q.replica)
        .map(|l| Ok::<_, Infallible>(SseEvent::default().json_data(l).unwrap_or_default()));
    sse(all)
}

/// The lines of one `/v1/logs?follow` stream: the backlog, then live lines of `want` (or
/// every replica). A reader that falls behind the live channel gets a marker line saying how
/// many lines it missed (and it is logged), never a silent skip.
fn follow_logs(
    backlog: Vec<Arc<runtime::LogLine>>,
    live: tokio::sync::broadcast::Receiver<Arc<runtime::LogLine>>,
    want: Option<u32>,
) -> impl Stream<Item = json::LogLine> + Send + 'static {
    let live = BroadcastStream::new(live).filter_map(move |l| async move {
        match l {
            Ok(l) => want
                .is_none_or(|r| l.replica == r)
                .then(|| json::LogLine::from(&*l)),
            // Fell behind the live channel: the skipped lines are gone, so say so rather
            // than skip them silently (as `/v1/events?follow` does with a gap event).
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "a log stream fell behind; telling its reader");
                Some(json::LogLine {
                    replica: want.unwrap_or(0),
                    stream: "stderr".into(),
                    at_ms: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    text: format!("… {n} lines skipped (this reader fell behind)"),
                })
            }
        }
    });
    stream::iter(backlog)
        .map(|l| json::LogLine::from(&*l))
        .chain(live)
}

pub(crate) fn sse(
    s: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static,
) -> Response {
    Sse::new(s).keep_alive(KeepAlive::default()).into_response()
}

#[derive(Deserialize)]
struct RestartQuery {
    replica: Option<u32>,
}

async fn restart(
    State(s): State<Arc<AppState>>,
    Path(service): Path<String>,
    q: Result<Query<RestartQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
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
    q: Result<Query<ScaleQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    if q.replicas > 1000 {
        return error(
            StatusCode::BAD_REQUEST,
            "replicas: must be between 0 and 1000",
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

pub(crate) fn control_error(e: ControlError) -> Response {
    let status = match e {
        ControlError::UnknownService(_) | ControlError::UnknownReplica { .. } => {
            StatusCode::NOT_FOUND
        }
        ControlError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        ControlError::Budget { .. } | ControlError::RolloutUnderWay(_) => StatusCode::CONFLICT,
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

#[cfg(test)]
mod follow_logs_tests {
    use super::*;

    fn line(replica: u32, text: &str) -> Arc<runtime::LogLine> {
        Arc::new(runtime::LogLine {
            at_ms: 1,
            replica,
            stream: runtime::Stream::Stdout,
            text: text.into(),
        })
    }

    #[tokio::test]
    async fn a_lagging_log_reader_gets_a_marker_line() {
        let (tx, rx) = tokio::sync::broadcast::channel(2);
        for i in 0..5 {
            tx.send(line(1, &format!("l{i}"))).unwrap();
        }
        tx.send(line(2, "other replica")).unwrap();
        drop(tx);
        let got: Vec<json::LogLine> = follow_logs(vec![line(1, "old")], rx, Some(1))
            .collect()
            .await;
        let texts: Vec<&str> = got.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            ["old", "… 4 lines skipped (this reader fell behind)", "l4"]
        );
        assert_eq!(got[1].replica, 1);
    }
}
