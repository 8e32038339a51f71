//! The faults: their state, shared by every connection, and the `/fault/...` endpoints that
//! set it.

use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use tokio::time::Instant;

use crate::Config;
use crate::service::{Body, ok};

/// How long the crash fault waits between answering and exiting, so the
/// `crashing` response reaches the client before the process disappears.
const CRASH_DELAY: Duration = Duration::from_millis(20);
/// Upper bound for `/fault/slow?ms=`: one hour, far beyond any useful test,
/// and small enough that `Duration` arithmetic can never overflow.
const MAX_SLOW_MS: u64 = 3_600_000;
/// Upper bound for one `/fault/leak?mb=` request (64 GiB).
const MAX_LEAK_MB: u64 = 64 * 1024;
const MIB: usize = 1024 * 1024;

/// Fault state shared by every connection. Invariant: only fault endpoints
/// write it, and each write is a single atomic store (or the leak mutex), so
/// the request path never takes a lock.
pub(crate) struct State {
    /// Prebuilt `GET /` body; cloning `Bytes` is a refcount bump.
    pub(crate) hello: Bytes,
    pub(crate) name: String,
    /// Until then, `/`, `/healthz` and `/ready` answer 503.
    pub(crate) ready_at: Instant,
    /// Once set, never cleared: every request awaits forever.
    pub(crate) hang: AtomicBool,
    /// Delay for `/` in ms; 0 = off.
    pub(crate) slow_ms: AtomicU64,
    /// Status fault packed into one word so code and ratio change together:
    /// `code << 32 | ratio.to_bits()` (ratio as f32); 0 = off.
    pub(crate) status: AtomicU64,
    /// `Retry-After` seconds sent with injected statuses (0: none).
    pub(crate) retry_after: AtomicU64,
    pub(crate) unready: AtomicBool,
    /// CPU burnt per `GET /`.
    pub(crate) cost: Duration,
    /// Leaked memory, one block per `/fault/leak` request. Only touched by
    /// `/fault/leak` and `/fault/reset`, never on the request path.
    leaked: Mutex<Vec<Vec<u8>>>,
    /// The connection faults (`close`, `rst`): sticky, watched by the accept loop and by
    /// every connection task.
    pub(crate) cut: tokio::sync::watch::Sender<Cut>,
    /// The notify socket's sender, when `NOTIFY_SOCKET` names a usable address.
    pub(crate) notifier: Option<std::sync::Arc<crate::notify::Notifier>>,
    exit: fn(i32),
}

impl State {
    pub(crate) fn new(cfg: Config) -> State {
        State {
            hello: Bytes::from(format!("{} from {}\n", cfg.greeting, cfg.name)),
            name: cfg.name,
            ready_at: Instant::now() + cfg.startup_delay,
            hang: AtomicBool::new(false),
            slow_ms: AtomicU64::new(cfg.slow.as_millis().min(u128::from(MAX_SLOW_MS)) as u64),
            cost: cfg.cost.min(Duration::from_millis(MAX_SLOW_MS)),
            status: AtomicU64::new(if cfg.fail_ratio > 0.0 {
                pack_status(cfg.fail_status, cfg.fail_ratio.min(1.0))
            } else {
                0
            }),
            retry_after: AtomicU64::new(0),
            unready: AtomicBool::new(false),
            leaked: Mutex::new(Vec::new()),
            cut: tokio::sync::watch::channel(Cut::None).0,
            notifier: cfg.notify_socket.as_deref().and_then(|path| {
                crate::notify::Notifier::open(path)
                    .inspect_err(|error| {
                        tracing::error!(%error, path = %path.display(), "cannot use NOTIFY_SOCKET");
                    })
                    .ok()
                    .map(std::sync::Arc::new)
            }),
            exit: cfg.exit,
        }
    }
}

/// What `/fault/close` and `/fault/rst` do to connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    None,
    /// The listener is closed: new connections are refused.
    Close,
    /// Every new connection is reset when accepted.
    Rst,
}

fn pack_status(code: u16, ratio: f32) -> u64 {
    (u64::from(code) << 32) | u64::from(ratio.to_bits())
}

pub(crate) fn unpack_status(word: u64) -> Option<(u16, f32)> {
    if word == 0 {
        return None;
    }
    // Truncations are exact: pack_status put a u16 above bit 32 and an f32 below.
    Some(((word >> 32) as u16, f32::from_bits(word as u32)))
}

/// Applies the fault named by the path; `Err` is a 400 message naming the bad parameter.
pub(crate) async fn apply_fault(
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

/// Leaks `rate` bytes per second, in tenths of a second, for as long as the process
/// lives: a replica whose memory grows steadily until something replaces it.
pub(crate) async fn leak_steadily(state: std::sync::Arc<State>, rate: u64) {
    let chunk = usize::try_from(rate / 10).unwrap_or(usize::MAX).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let mut block = Vec::new();
        if block.try_reserve_exact(chunk).is_err() {
            tracing::warn!(chunk, "leak: cannot allocate more; stopping the leak");
            return;
        }
        // Written, so the pages are resident and RSS really grows.
        block.resize(chunk, 0x5Au8);
        lock_leaked(&state).push(block);
    }
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
