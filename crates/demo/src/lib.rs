//! The demo workload: an HTTP service with injectable faults, and a TCP echo mode.
//!
//! `bulwark demo` runs this as the service under supervision in the quickstart,
//! the integration tests and the benchmarks. Faults are switched on over HTTP
//! (`/fault/...`) so a test can make one replica misbehave and watch bulwark
//! heal it. Fault state is per process and shared by all connections.
//!
//! HTTP endpoints:
//!
//! | path | effect |
//! |---|---|
//! | `GET /` | `200 "{greeting} from {name}\n"` (subject to the slow and status faults) |
//! | `/healthz` | `200 "ok"` (no newline, as are `ready`, `unready` and `starting`) |
//! | `/ready` | `200 "ready"`, `503` while the unready fault is set |
//! | `/fault/crash` | `200 "crashing\n"`, then exit with status 1 about 20 ms later |
//! | `/fault/hang` | `200 "hanging\n"`, then every later request never answers |
//! | `/fault/slow?ms=N` | `/` waits N ms before answering (sticky) |
//! | `/fault/status?code=C&ratio=R` | `/` answers C with probability R (default C 503, R 1.0) |
//! | `/fault/unready` | `/ready` answers 503 (sticky) |
//! | `/fault/leak?mb=N` | allocate and touch N MiB more, and keep it |
//! | `/fault/reset` | undo slow, status, unready and leak |
//! | `/fault/close` | close the listener and every connection: connections are refused from now on |
//! | `/fault/rst` | drop every connection; each new one is reset (RST) as soon as it is accepted |
//! | `POST /echo` | stream the request body back |
//!
//! During `startup_delay` after start, `/`, `/healthz` and `/ready` answer
//! `503 "starting"`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncWriteExt, copy};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Environment variable naming the replica (set by bulwark for each replica).
pub const ENV_REPLICA: &str = "BULWARK_REPLICA";
/// Environment variable holding the greeting returned by `GET /`.
pub const ENV_GREETING: &str = "GREETING";
/// Greeting used when `GREETING` is unset or empty.
pub const DEFAULT_GREETING: &str = "hello";

/// How long the crash fault waits between answering and exiting, so the
/// `crashing` response reaches the client before the process disappears.
const CRASH_DELAY: Duration = Duration::from_millis(20);
/// Upper bound for `/fault/slow?ms=`: one hour, far beyond any useful test,
/// and small enough that `Duration` arithmetic can never overflow.
const MAX_SLOW_MS: u64 = 3_600_000;
/// Upper bound for one `/fault/leak?mb=` request (64 GiB).
const MAX_LEAK_MB: u64 = 64 * 1024;
const MIB: usize = 1024 * 1024;

/// What to run. Plain data so the CLI can build it from its flags; use
/// [`Config::new`] to get the environment-derived defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on, e.g. `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// HTTP: how long `/`, `/healthz` and `/ready` answer 503 after start.
    /// TCP: how long before the port is bound (connections are refused meanwhile).
    pub startup_delay: Duration,
    /// Serve the TCP echo protocol instead of HTTP.
    pub tcp: bool,
    /// Replica name shown in response bodies and the TCP banner line.
    pub name: String,
    /// First word of the `GET /` body.
    pub greeting: String,
    /// Called with status 1 by the crash fault. Always `std::process::exit`
    /// outside tests; tests swap it so the test process survives.
    pub exit: fn(i32),
}

impl Config {
    /// Defaults for `listen`: no startup delay, HTTP, name from
    /// `BULWARK_REPLICA` (else `demo:PORT`), greeting from `GREETING` (else
    /// `hello`), and a real process exit on crash.
    pub fn new(listen: SocketAddr) -> Config {
        Config {
            listen,
            startup_delay: Duration::ZERO,
            tcp: false,
            name: env_nonempty(ENV_REPLICA).unwrap_or_else(|| format!("demo:{}", listen.port())),
            greeting: env_nonempty(ENV_GREETING).unwrap_or_else(|| DEFAULT_GREETING.to_owned()),
            exit: exit_process,
        }
    }
}

fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// `std::process::exit` returns `!`, which does not coerce to `fn(i32)`.
fn exit_process(code: i32) {
    std::process::exit(code)
}

/// Bind `cfg.listen` and serve until the process exits. Only fails if the
/// address cannot be bound.
pub async fn run(cfg: Config) -> std::io::Result<()> {
    if cfg.tcp && !cfg.startup_delay.is_zero() {
        // A TCP health check can only see "connect refused" vs "accepted", so a
        // slow TCP starter is one that binds late.
        tokio::time::sleep(cfg.startup_delay).await;
    }
    let listener = TcpListener::bind(cfg.listen).await?;
    let cfg = if cfg.tcp {
        Config {
            startup_delay: Duration::ZERO,
            ..cfg
        }
    } else {
        cfg
    };
    serve(listener, cfg).await
}

/// Serve on an already bound listener (tests bind port 0 and read the
/// address back). `cfg.listen` is ignored. In TCP mode a non-zero
/// `startup_delay` postpones accepting; the kernel queues connections meanwhile.
pub async fn serve(listener: TcpListener, cfg: Config) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    if cfg.tcp {
        tokio::time::sleep(cfg.startup_delay).await;
        tracing::info!(%addr, name = %cfg.name, "demo tcp echo listening");
        serve_tcp(listener, Arc::from(cfg.name)).await
    } else {
        tracing::info!(%addr, name = %cfg.name, startup_delay = ?cfg.startup_delay, "demo http listening");
        serve_http(listener, cfg).await
    }
}

/// Accept with a pause on errors: `accept` fails transiently (EMFILE,
/// ECONNABORTED) and a tight retry loop would only burn CPU.
async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Small request/response exchanges: don't let Nagle delay them.
                let _ = stream.set_nodelay(true);
                return stream;
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, name: Arc<str>) -> std::io::Result<()> {
    loop {
        let stream = accept(&listener).await;
        let name = name.clone();
        tokio::spawn(async move {
            if let Err(e) = echo_tcp(stream, &name).await {
                tracing::debug!(error = %e, "tcp echo connection ended");
            }
        });
    }
}

async fn echo_tcp(mut stream: TcpStream, name: &str) -> std::io::Result<()> {
    stream.write_all(format!("{name}\n").as_bytes()).await?;
    let (mut rd, mut wr) = stream.split();
    copy(&mut rd, &mut wr).await?;
    wr.shutdown().await
}

/// Fault state shared by every connection. Invariant: only fault endpoints
/// write it, and each write is a single atomic store (or the leak mutex), so
/// the request path never takes a lock.
struct State {
    /// Prebuilt `GET /` body; cloning `Bytes` is a refcount bump.
    hello: Bytes,
    name: String,
    /// Until then, `/`, `/healthz` and `/ready` answer 503.
    ready_at: Instant,
    /// Once set, never cleared: every request awaits forever.
    hang: AtomicBool,
    /// Delay for `/` in ms; 0 = off.
    slow_ms: AtomicU64,
    /// Status fault packed into one word so code and ratio change together:
    /// `code << 32 | ratio.to_bits()` (ratio as f32); 0 = off.
    status: AtomicU64,
    /// `Retry-After` seconds sent with injected statuses (0: none).
    retry_after: AtomicU64,
    unready: AtomicBool,
    /// Leaked memory, one block per `/fault/leak` request. Only touched by
    /// `/fault/leak` and `/fault/reset`, never on the request path.
    leaked: Mutex<Vec<Vec<u8>>>,
    /// The connection faults (`close`, `rst`): sticky, watched by the accept loop and by
    /// every connection task.
    cut: tokio::sync::watch::Sender<Cut>,
    exit: fn(i32),
}

/// What `/fault/close` and `/fault/rst` do to connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    None,
    /// The listener is closed: new connections are refused.
    Close,
    /// Every new connection is reset when accepted.
    Rst,
}

fn pack_status(code: u16, ratio: f32) -> u64 {
    (u64::from(code) << 32) | u64::from(ratio.to_bits())
}

fn unpack_status(word: u64) -> Option<(u16, f32)> {
    if word == 0 {
        return None;
    }
    // Truncations are exact: pack_status put a u16 above bit 32 and an f32 below.
    Some(((word >> 32) as u16, f32::from_bits(word as u32)))
}

type Body = Either<Full<Bytes>, Incoming>;

async fn serve_http(listener: TcpListener, cfg: Config) -> std::io::Result<()> {
    let state = Arc::new(State {
        hello: Bytes::from(format!("{} from {}\n", cfg.greeting, cfg.name)),
        name: cfg.name,
        ready_at: Instant::now() + cfg.startup_delay,
        hang: AtomicBool::new(false),
        slow_ms: AtomicU64::new(0),
        status: AtomicU64::new(0),
        retry_after: AtomicU64::new(0),
        unready: AtomicBool::new(false),
        leaked: Mutex::new(Vec::new()),
        cut: tokio::sync::watch::channel(Cut::None).0,
        exit: cfg.exit,
    });
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

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Either::Left(Full::new(body.into())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn ok(body: impl Into<Bytes>) -> Response<Body> {
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
        path => match path.strip_prefix("/fault/") {
            Some(fault) => match apply_fault(&state, fault, query).await {
                Ok(resp) => resp,
                Err(msg) => text(StatusCode::BAD_REQUEST, format!("{msg}\n")),
            },
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
    }
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

/// Applies the fault named by the path; `Err` is a 400 message naming the bad parameter.
async fn apply_fault(
    state: &State,
    fault: &str,
    query: Option<&str>,
) -> Result<Response<Body>, String> {
    match parse_fault(fault, query)? {
        Fault::Crash => {
            tracing::warn!("fault: crash requested, exiting with status 1");
            let exit = state.exit;
            tokio::spawn(async move {
                tokio::time::sleep(CRASH_DELAY).await;
                exit(1);
            });
            Ok(ok("crashing\n"))
        }
        Fault::Hang => {
            tracing::warn!("fault: hang, no request will be answered from now on");
            state.hang.store(true, Ordering::Relaxed);
            Ok(ok("hanging\n"))
        }
        Fault::Slow(ms) => {
            tracing::warn!(ms, "fault: slow");
            state.slow_ms.store(ms, Ordering::Relaxed);
            Ok(ok(format!("slow {ms} ms\n")))
        }
        Fault::Status(code, ratio, retry_after) => {
            tracing::warn!(code, ratio, retry_after, "fault: status");
            state.retry_after.store(retry_after, Ordering::Relaxed);
            state
                .status
                .store(pack_status(code, ratio), Ordering::Relaxed);
            Ok(ok(format!("status {code} ratio {ratio}\n")))
        }
        Fault::Unready => {
            tracing::warn!("fault: unready");
            state.unready.store(true, Ordering::Relaxed);
            Ok(ok("unready\n"))
        }
        Fault::Leak(mb) => {
            let total = leak(state, mb).await?;
            tracing::warn!(mb, total_mb = total, "fault: leak");
            Ok(ok(format!("leaked {mb} MiB, {total} MiB total\n")))
        }
        Fault::Close => {
            tracing::warn!("fault: close, the listener and every connection are closed");
            state.cut.send_replace(Cut::Close);
            Ok(ok("closing\n"))
        }
        Fault::Rst => {
            tracing::warn!("fault: rst, every connection is reset from now on");
            state.cut.send_replace(Cut::Rst);
            Ok(ok("resetting\n"))
        }
        Fault::Reset => {
            state.slow_ms.store(0, Ordering::Relaxed);
            state.status.store(0, Ordering::Relaxed);
            state.retry_after.store(0, Ordering::Relaxed);
            state.unready.store(false, Ordering::Relaxed);
            let freed = std::mem::take(&mut *lock_leaked(state));
            let freed_mb = freed.iter().map(Vec::len).sum::<usize>() / MIB;
            drop(freed);
            tracing::info!(freed_mb, "fault: reset");
            Ok(ok("reset\n"))
        }
    }
}

enum Fault {
    Crash,
    Hang,
    Close,
    Rst,
    Slow(u64),
    Status(u16, f32, u64),
    Unready,
    Leak(u64),
    Reset,
}

fn parse_fault(fault: &str, query: Option<&str>) -> Result<Fault, String> {
    Ok(match fault {
        "crash" => Fault::Crash,
        "hang" => Fault::Hang,
        "unready" => Fault::Unready,
        "reset" => Fault::Reset,
        "close" => Fault::Close,
        "rst" => Fault::Rst,
        "slow" => {
            let ms: u64 = required(query, "ms", "an integer number of milliseconds")?;
            if ms > MAX_SLOW_MS {
                return Err(format!(
                    "query parameter `ms` must be at most {MAX_SLOW_MS}"
                ));
            }
            Fault::Slow(ms)
        }
        "status" => {
            let code: u16 = param(query, "code", "an HTTP status code")?.unwrap_or(503);
            if !(200..=599).contains(&code) {
                return Err(format!(
                    "query parameter `code` must be between 200 and 599, got {code}"
                ));
            }
            let ratio: f32 = param(query, "ratio", "a number between 0 and 1")?.unwrap_or(1.0);
            if !(0.0..=1.0).contains(&ratio) {
                return Err(format!(
                    "query parameter `ratio` must be between 0 and 1, got {ratio}"
                ));
            }
            let retry_after: u64 = param(query, "retry_after", "whole seconds")?.unwrap_or(0);
            Fault::Status(code, ratio, retry_after)
        }
        "leak" => {
            let mb: u64 = required(query, "mb", "an integer number of MiB")?;
            if mb == 0 || mb > MAX_LEAK_MB {
                return Err(format!(
                    "query parameter `mb` must be between 1 and {MAX_LEAK_MB}, got {mb}"
                ));
            }
            Fault::Leak(mb)
        }
        other => return Err(format!("unknown fault `{other}`")),
    })
}

/// First value of `name` in the query string. Values are numbers, so no
/// percent-decoding is needed; unknown parameters are ignored.
fn param<T: FromStr>(query: Option<&str>, name: &str, expected: &str) -> Result<Option<T>, String> {
    let Some(raw) = query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find_map(|(k, v)| (k == name).then_some(v))
    else {
        return Ok(None);
    };
    raw.parse()
        .map(Some)
        .map_err(|_| format!("bad value {raw:?} for query parameter `{name}`: expected {expected}"))
}

fn required<T: FromStr>(query: Option<&str>, name: &str, expected: &str) -> Result<T, String> {
    param(query, name, expected)?
        .ok_or_else(|| format!("missing query parameter `{name}`: expected {expected}"))
}

fn lock_leaked(state: &State) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
    // A panic while holding the lock cannot leave the Vec inconsistent.
    state.leaked.lock().unwrap_or_else(|p| p.into_inner())
}

/// Allocates and writes `mb` MiB (writing every byte makes the pages resident,
/// so RSS really grows), keeps it, and returns the total leaked in MiB.
async fn leak(state: &State, mb: u64) -> Result<usize, String> {
    let bytes = usize::try_from(mb)
        .ok()
        .and_then(|mb| mb.checked_mul(MIB))
        .ok_or_else(|| format!("query parameter `mb` too large: {mb}"))?;
    // Filling gigabytes takes a while: keep it off the async workers.
    let block = tokio::task::spawn_blocking(move || {
        let mut block = Vec::new();
        block
            .try_reserve_exact(bytes)
            .map_err(|e| format!("cannot allocate {mb} MiB: {e}"))?;
        block.resize(bytes, 0xA5u8);
        Ok::<_, String>(block)
    })
    .await
    .map_err(|e| format!("leak task failed: {e}"))??;
    let mut leaked = lock_leaked(state);
    leaked.push(block);
    Ok(leaked.iter().map(Vec::len).sum::<usize>() / MIB)
}
