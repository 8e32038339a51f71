//! Open-loop HTTP load generator with latency percentiles.
//!
//! Request `i` is scheduled at `start + i / rate` regardless of whether
//! earlier requests have returned, and its latency is measured from that
//! scheduled instant. Time spent queueing for one of the `concurrency`
//! permits, or behind a generator that fell behind, therefore counts as
//! latency: a stalled server shows up as growing latency and timeouts instead
//! of silently lowering the request rate (no coordinated omission).
//!
//! Design, for tens of thousands of requests per second:
//! - a dedicated OS thread does the scheduling, because tokio timers have
//!   millisecond granularity, which would add up to a millisecond of fake
//!   latency to every request; `std::thread::sleep` with the timer slack
//!   lowered overshoots by a few tens of µs;
//! - one spawned task per request, so a slow request never delays the next;
//! - each task sends one small `Outcome` over an unbounded channel to a
//!   single recorder task that owns all histograms and counters, so the
//!   request path takes no lock of ours.

mod config;
mod error;
mod recorder;
mod report;
mod request;
mod scheduler;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use config::{Config, parse_header};
pub use error::Error;
pub use report::{Failures, Latency, Report, Second};

use recorder::record;
use request::Shared;
use scheduler::{Plan, StopOnDrop, schedule};

/// Default for [`Config::concurrency`].
pub const DEFAULT_CONCURRENCY: usize = 64;
/// Default for [`Config::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Generate the configured load and report on it. Returns after `duration`
/// plus at most `timeout` (the time in-flight requests get to finish).
/// Dropping the future stops scheduling new requests.
pub async fn run(cfg: Config) -> Result<Report, Error> {
    cfg.validate()?;
    // Always present when awaited inside tokio; checked rather than assumed
    // so another executor gets an error instead of a panic.
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|e| Error::Internal(format!("load::run needs a tokio runtime: {e}")))?;
    let shared = Arc::new(Shared::new(&cfg));

    let seconds = cfg.duration.as_secs() + u64::from(cfg.duration.subsec_nanos() > 0);
    let (tx, rx) = mpsc::unbounded_channel();
    let recorder = tokio::spawn(record(rx, seconds));

    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let plan = Plan {
        rate: cfg.rate,
        duration: cfg.duration,
        stop: stop.0.clone(),
        handle,
    };
    // A thread of its own rather than `spawn_blocking`, because it changes its
    // timer slack and pooled threads should not inherit that.
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("load-scheduler".into())
        .spawn(move || {
            let _ = done_tx.send(schedule(plan, shared, tx));
        })
        .map_err(|e| Error::Internal(format!("cannot start scheduler thread: {e}")))?;
    let sent = done_rx
        .await
        .map_err(|_| Error::Internal("scheduler thread panicked".into()))?;
    // The scheduler dropped its sender; the recorder ends once the last
    // request task has reported, which is at most `timeout` from now.
    let rec = recorder
        .await
        .map_err(|e| Error::Internal(format!("recorder: {e}")))?;
    Ok(rec.report(&cfg, sent))
}
