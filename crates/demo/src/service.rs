//! The HTTP service: the accept loop (with the connection faults) and every endpoint but
//! the `/fault/...` ones.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::fault::{Cut, State, apply_fault, unpack_status};
use crate::{Config, accept};

pub(crate) type Body = Either<Full<Bytes>, Incoming>;

pub(crate) async fn serve_http(listener: TcpListener, cfg: Config) -> std::io::Result<()> {
    let leak_rate = cfg.leak_rate;
    let plan = cfg.notify;
    let state = Arc::new(State::new(cfg));
    if let Some(n) = &state.notifier {
        tokio::spawn(crate::notify::run(n.clone(), plan));
    }
    if leak_rate > 0 {
        tokio::spawn(crate::fault::leak_steadily(state.clone(), leak_rate));
    }
    // `auto` sniffs the connection preface: HTTP/1.1 or HTTP/2 prior knowledge.
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let mut cut = state.cut.subscribe();
    loop {
        let stream = tokio::select! {
            stream = accept(&listener) => stream,
            _ = async { let _ = cut.wait_for(|c| *c == Cut::Close).await; } => {
                // Closing the listener makes the kernel refuse new connections while
                // the process lives on: a replica whose server socket died.
                drop(listener);
                return std::future::pending().await;
            }
        };
        let rst = *cut.borrow() == Cut::Rst;
        if rst {
            // Linger 0: closing sends RST instead of FIN.
            let _ = stream.set_zero_linger();
            drop(stream);
            continue;
        }
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let mut cut = state.cut.subscribe();
            let svc = {
                let state = state.clone();
                service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(state, req).await) }
                })
            };
            tokio::select! {
                served = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc) => {
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "http connection ended");
                    }
                }
                // A connection fault drops the connections already open too.
                _ = async { let _ = cut.wait_for(|c| *c != Cut::None).await; } => {}
            }
        });
    }
}

pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Either::Left(Full::new(body.into())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

pub(crate) fn ok(body: impl Into<Bytes>) -> Response<Body> {
    text(StatusCode::OK, body)
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    if state.hang.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
    let starting = Instant::now() < state.ready_at;
    let query = req.uri().query();
    match req.uri().path() {
        "/" | "/healthz" | "/ready" if starting => {
            text(StatusCode::SERVICE_UNAVAILABLE, "starting")
        }
        "/" => root(&state).await,
        "/healthz" => ok("ok"),
        "/ready" if state.unready.load(Ordering::Relaxed) => {
            text(StatusCode::SERVICE_UNAVAILABLE, "unready")
        }
        "/ready" => ok("ready"),
        "/echo" if req.method() == Method::POST => echo(req),
        "/notify" => notify(&state, query),
        "/ws" => websocket(req),
        // What the replica received: one `name: value` line per header.
        "/headers" => {
            let mut out = String::new();
            for (k, v) in req.headers() {
                out.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
            }
            ok(out)
        }
        // A trailers-only gRPC answer with the given status (0 = OK).
        "/grpc" => {
            let status = query
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("status=")))
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0);
            let mut resp = ok(Bytes::new());
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            resp.headers_mut()
                .insert("grpc-status", HeaderValue::from(status));
            resp
        }
        "/echo" => {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
            resp.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
            resp
        }
        path if path.starts_with("/cache/") => cache(path, query),
        path => match path.strip_prefix("/fault/") {
            Some(fault) => match apply_fault(&state, fault, query).await {
                Ok(resp) => resp,
                Err(msg) => text(StatusCode::BAD_REQUEST, format!("{msg}\n")),
            },
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
    }
}

/// `/notify?say=LINE`: LINE sent on the notify socket.
fn notify(state: &State, query: Option<&str>) -> Response<Body> {
    let Some(n) = &state.notifier else {
        return text(StatusCode::CONFLICT, "no NOTIFY_SOCKET\n");
    };
    match crate::notify::line_to_say(query) {
        Ok(line) => match n.send(&line) {
            Ok(()) => ok(format!("sent {line:?}\n")),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not sent: {e}\n")),
        },
        Err(msg) => text(StatusCode::BAD_REQUEST, format!("{msg}\n")),
    }
}

/// Answers served by `/cache/...`, to tell one answer from another.
static CACHE_ANSWERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `/cache/public` (`Cache-Control: max-age=1, stale-if-error=600`), `/cache/no-store`,
/// `/cache/private`, anything else without `Cache-Control`; the body names this process
/// and counts the answers, padded to `size=N` bytes when asked.
fn cache(path: &str, query: Option<&str>) -> Response<Body> {
    let n = CACHE_ANSWERS.fetch_add(1, Ordering::Relaxed);
    let mut body = format!("{path} from pid {} answer {n}\n", std::process::id());
    let size = query
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("size=")))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(size) = size.filter(|s| *s > body.len()) {
        body.push_str(&"x".repeat(size - body.len()));
    }
    let mut resp = ok(body);
    let cc = match path {
        "/cache/public" => "max-age=1, stale-if-error=600",
        "/cache/no-store" => "no-store",
        "/cache/private" => "private, max-age=60",
        _ => return resp,
    };
    resp.headers_mut()
        .insert(http::header::CACHE_CONTROL, HeaderValue::from_static(cc));
    resp
}

/// `/ws`: a WebSocket echo (text and binary messages come back as sent).
fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return text(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade\n");
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        use futures_util::{SinkExt, StreamExt};
        let Ok(io) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(io),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut resp = text(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    resp.headers_mut().remove(CONTENT_TYPE);
    let h = resp.headers_mut();
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert("sec-websocket-accept", v);
    }
    resp
}

async fn root(state: &State) -> Response<Body> {
    if !state.cost.is_zero() {
        // The work a real handler would do: CPU on the serving thread.
        let start = std::time::Instant::now();
        while start.elapsed() < state.cost {
            std::hint::spin_loop();
        }
    }
    let slow = state.slow_ms.load(Ordering::Relaxed);
    if slow > 0 {
        tokio::time::sleep(Duration::from_millis(slow)).await;
    }
    if let Some((code, ratio)) = unpack_status(state.status.load(Ordering::Relaxed)) {
        // `random()` is in [0, 1): ratio 1.0 always fires and 0.0 never does.
        if rand::random::<f32>() < ratio {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut resp = text(status, format!("injected {code} from {}\n", state.name));
            let ra = state.retry_after.load(Ordering::Relaxed);
            if ra > 0 {
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from(ra));
            }
            return resp;
        }
    }
    ok(state.hello.clone())
}

/// Streams the body back rather than buffering it, so large bodies cost no memory.
fn echo(req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let mut resp = Response::new(Either::Right(body));
    if let Some(len) = parts.headers.get(CONTENT_LENGTH) {
        resp.headers_mut().insert(CONTENT_LENGTH, len.clone());
    }
    if let Some(ct) = parts.headers.get(CONTENT_TYPE) {
        resp.headers_mut().insert(CONTENT_TYPE, ct.clone());
    }
    resp
}
