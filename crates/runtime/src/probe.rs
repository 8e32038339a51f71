//! Probes with Kubernetes semantics: startup gates liveness and readiness; liveness failure
//! restarts; readiness drives balancer membership.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bus::ProbeKind;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use policy::{Threshold, Transition};
use spec::{Probe, ProbeAction, Service};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep, timeout};

use crate::driver::Identity;
use crate::metrics::Metrics;

/// What the probe task tells the replica task.
#[derive(Debug)]
pub(crate) enum Report {
    /// Startup passed (or there is no startup probe).
    Running,
    /// Readiness passed `success_threshold` times in a row (or there is no readiness
    /// probe): into the balancer.
    Ready,
    /// Readiness failed `failure_threshold` times in a row: out of the balancer.
    Unready(String),
    /// Startup or liveness failed `failure_threshold` times in a row, or the notify
    /// watchdog expired: restart.
    Failed { probe: ProbeKind, reason: String },
    /// The replica said something on its notify socket (`crate::notify`).
    Notified(crate::notify::Notice),
}

pub(crate) struct Target {
    pub service: Arc<Service>,
    pub index: u32,
    /// Where the replica listens: 127.0.0.1, or its container's own address.
    pub addr: std::net::SocketAddr,
    pub bulwark: Arc<Path>,
    pub metrics: Metrics,
}

/// Runs the probes of one replica incarnation, sending transitions on `tx`. Ends after a
/// `Failed` report; otherwise runs until aborted by the replica task.
pub(crate) async fn run(t: Arc<Target>, tx: mpsc::Sender<Report>) {
    if let Some(p) = &t.service.startup
        && !quick_start(p, &t).await
    {
        // quick_start waited out the initial delay already.
        let p = &Probe {
            initial_delay: Duration::ZERO,
            ..p.clone()
        };
        let mut th = Threshold::new(1, p.failure_threshold);
        let outcome = each_period(
            p,
            |res| {
                t.metrics
                    .probe(&t.service.name, ProbeKind::Startup, res.is_ok());
                let failures = th.failures() + 1;
                match (th.record(res.is_ok()), res) {
                    (Some(Transition::Healthy), _) => Some(Ok(())),
                    (Some(Transition::Unhealthy), Err(e)) => Some(Err(format!(
                        "startup probe failed {failures} times in a row: {e}"
                    ))),
                    _ => None,
                }
            },
            &t,
        )
        .await;
        if let Err(reason) = outcome {
            let _ = tx
                .send(Report::Failed {
                    probe: ProbeKind::Startup,
                    reason,
                })
                .await;
            return;
        }
    }
    if tx.send(Report::Running).await.is_err() {
        return;
    }
    let liveness = async {
        let Some(p) = &t.service.liveness else {
            return std::future::pending().await;
        };
        let mut th = Threshold::new(1, p.failure_threshold);
        let reason = each_period(
            p,
            |res| {
                t.metrics
                    .probe(&t.service.name, ProbeKind::Liveness, res.is_ok());
                let failures = th.failures() + 1;
                match (th.record(res.is_ok()), res) {
                    (Some(Transition::Unhealthy), Err(e)) => Some(format!(
                        "liveness probe failed {failures} times in a row: {e}"
                    )),
                    _ => None,
                }
            },
            &t,
        )
        .await;
        let _ = tx
            .send(Report::Failed {
                probe: ProbeKind::Liveness,
                reason,
            })
            .await;
    };
    let readiness = async {
        let Some(p) = &t.service.readiness else {
            let _ = tx.send(Report::Ready).await;
            return std::future::pending().await;
        };
        let mut th = Threshold::new(p.success_threshold, p.failure_threshold);
        each_period::<()>(
            p,
            |res| {
                t.metrics
                    .probe(&t.service.name, ProbeKind::Readiness, res.is_ok());
                let report = match (th.record(res.is_ok()), res) {
                    (Some(Transition::Healthy), _) => Some(Report::Ready),
                    (Some(Transition::Unhealthy), Err(e)) => {
                        Some(Report::Unready(format!("readiness probe failed: {e}")))
                    }
                    _ => None,
                };
                if let Some(r) = report {
                    // A full channel means the replica task is busy stopping us; dropping a
                    // transition then is harmless.
                    let _ = tx.try_send(r);
                }
                None
            },
            &t,
        )
        .await;
    };
    // Liveness ends the task by returning; readiness never returns.
    tokio::select! {
        () = liveness => {}
        () = readiness => {}
    }
}

/// Peeks at a just-started replica more often than `period` during its first period (at
/// 0, 25, 50, 100 ms, ... doubling), so a replacement joins as soon as it listens instead of
/// up to a period later. Only a success counts: failed peeks do not use up the startup
/// probe's `failure_threshold`, whose regular checks follow.
async fn quick_start(p: &Probe, t: &Target) -> bool {
    sleep(p.initial_delay).await;
    let start = Instant::now();
    let mut at = Duration::ZERO;
    while at < p.period {
        sleep(at.saturating_sub(start.elapsed())).await;
        if check(&p.action, p.timeout.min(p.period), t).await.is_ok() {
            t.metrics.probe(&t.service.name, ProbeKind::Startup, true);
            return true;
        }
        at = if at.is_zero() {
            Duration::from_millis(25)
        } else {
            at.saturating_mul(2)
        };
    }
    false
}

/// Checks every `period` (after `initial_delay`) until `judge` returns a value.
async fn each_period<T>(
    p: &Probe,
    mut judge: impl FnMut(Result<(), String>) -> Option<T>,
    t: &Target,
) -> T {
    sleep(p.initial_delay).await;
    // interval_at panics on a zero period; the spec forbids one, but stay safe.
    let mut tick = interval_at(Instant::now(), p.period.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let res = check(&p.action, p.timeout, t).await;
        if let Some(v) = judge(res) {
            return v;
        }
    }
}

/// One probe attempt against the replica at its address.
async fn check(action: &ProbeAction, limit: Duration, t: &Target) -> Result<(), String> {
    let attempt = async {
        match action {
            ProbeAction::Tcp => TcpStream::connect(t.addr)
                .await
                .map(drop)
                .map_err(|e| format!("tcp connect to {}: {e}", t.addr)),
            ProbeAction::Http { path } => http_get(t.addr, path).await,
            // Keeps its own time: it must kill the command's whole group when it is over.
            ProbeAction::Exec { command } => return exec(command, limit, t).await,
        }
    };
    match timeout(limit, attempt).await {
        Ok(res) => res,
        Err(_) => Err(format!("timed out after {limit:?}")),
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("GET {path}: connect to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let conn = tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, "bulwark-probe")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("GET {path}: {e}"))?;
    let res = sender.send_request(req).await;
    conn.abort();
    let status = res.map_err(|e| format!("GET {path}: {e}"))?.status();
    if (200..400).contains(&status.as_u16()) {
        Ok(())
    } else {
        Err(format!("GET {path}: status {}", status.as_u16()))
    }
}

/// Output kept from an exec probe, for the failure reason.
const EXEC_CAPTURE: usize = 512;

/// Runs the probe command through `launch::run_exec`: its own process group, killed whole
/// when `limit` passes (and its leftovers killed when it exits), spawned from the
/// launcher thread.
async fn exec(command: &[String], limit: Duration, t: &Target) -> Result<(), String> {
    let id = Identity {
        service: &t.service.name,
        index: t.index,
        addr: t.addr.ip(),
        port: t.addr.port(),
        bulwark: &t.bulwark,
    };
    let argv: Vec<String> = command.iter().map(|a| id.substitute(a)).collect();
    let Some((program, args)) = argv.split_first() else {
        return Err("empty exec probe".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    id.apply_env(&mut cmd, &t.service);
    if let Some(cwd) = &t.service.cwd {
        cmd.current_dir(cwd);
    }
    let out = launch::run_exec(cmd, None, limit, EXEC_CAPTURE)
        .await
        .map_err(|e| format!("exec {program:?}: {e}"))?;
    match out.status {
        None => Err(format!("exec {program:?}: timed out after {limit:?}")),
        Some(s) if s.success() => Ok(()),
        Some(s) => {
            let raw = if out.stderr.is_empty() {
                &out.stdout
            } else {
                &out.stderr
            };
            let said = String::from_utf8_lossy(raw).trim().to_owned();
            // The probe ran with the service's secrets; what it said becomes an event. Output
            // cut at the capture bound may end in the first part of a secret.
            let cut = raw.len() >= EXEC_CAPTURE;
            let said = crate::Redactor::of(&t.service).text_cut(&said, cut);
            let exit = crate::driver::exit_of(s);
            if said.is_empty() {
                Err(format!("exec {program:?}: {exit}"))
            } else {
                Err(format!("exec {program:?}: {exit}: {said}"))
            }
        }
    }
}
