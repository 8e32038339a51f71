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
//! | `/fault/leak?mb=N` | allocate and touch N MiB more, and keep it (`--leak-rate` leaks steadily) |
//! | `/fault/reset` | undo slow, status, unready and leak |
//! | `/fault/close` | close the listener and every connection: connections are refused from now on |
//! | `/fault/rst` | drop every connection; each new one is reset (RST) as soon as it is accepted |
//! | `POST /echo` | stream the request body back |
//! | `/notify?say=LINE` | send LINE (percent-decoded) on `NOTIFY_SOCKET`; `409` without one |
//!
//! During `startup_delay` after start, `/`, `/healthz` and `/ready` answer
//! `503 "starting"`.
//!
//! With `NOTIFY_SOCKET` set, the HTTP demo also speaks systemd's notify protocol
//! ([`NotifyPlan`], module `notify`).

mod fault;
mod notify;
mod service;
mod tcp;

use std::path::PathBuf;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use service::serve_http;
use tcp::serve_tcp;

pub use notify::NotifyPlan;

/// Environment variable naming the replica (set by bulwark for each replica).
pub const ENV_REPLICA: &str = "BULWARK_REPLICA";
/// Environment variable holding the greeting returned by `GET /`.
pub const ENV_GREETING: &str = "GREETING";
/// Environment variable naming the socket of systemd's notify protocol.
pub const ENV_NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// Greeting used when `GREETING` is unset or empty.
pub const DEFAULT_GREETING: &str = "hello";

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
    /// From the start, `/` answers `fail_status` with this probability (0: never), as
    /// `/fault/status` would: a bad version to roll out.
    pub fail_ratio: f32,
    /// The status of those answers.
    pub fail_status: u16,
    /// From the start, `/` waits this long, as `/fault/slow` would: a slow version.
    pub slow: Duration,
    /// From the start, this many bytes per second are allocated, touched and kept: a
    /// leaking version (0: none). `/fault/reset` frees them, not the leak.
    pub leak_rate: u64,
    /// CPU each `GET /` burns (a busy loop on the serving thread): a service with a
    /// per-request cost, for autoscaling.
    pub cost: Duration,
    /// HTTP: where to speak systemd's notify protocol (`NOTIFY_SOCKET`); `None`: silent.
    pub notify_socket: Option<PathBuf>,
    /// What to say there, and when.
    pub notify: NotifyPlan,
    /// Called with status 1 by the crash fault. Always `std::process::exit`
    /// outside tests; tests swap it so the test process survives.
    pub exit: fn(i32),
}

impl Config {
    /// Defaults for `listen`: no startup delay, HTTP, name from
    /// `BULWARK_REPLICA` (else `demo:PORT`), greeting from `GREETING` (else
    /// `hello`), the notify socket from `NOTIFY_SOCKET` with an empty plan, and a real
    /// process exit on crash.
    pub fn new(listen: SocketAddr) -> Config {
        Config {
            listen,
            startup_delay: Duration::ZERO,
            tcp: false,
            name: env_nonempty(ENV_REPLICA).unwrap_or_else(|| format!("demo:{}", listen.port())),
            greeting: env_nonempty(ENV_GREETING).unwrap_or_else(|| DEFAULT_GREETING.to_owned()),
            fail_ratio: 0.0,
            fail_status: 500,
            slow: Duration::ZERO,
            leak_rate: 0,
            cost: Duration::ZERO,
            notify_socket: env_nonempty(ENV_NOTIFY_SOCKET).map(PathBuf::from),
            notify: NotifyPlan::default(),
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
pub(crate) async fn accept(listener: &TcpListener) -> TcpStream {
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
