//! The open-loop scheduler: a thread of its own that spawns request `i` at `start + i / rate`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::request::{Outcome, Shared, one_request};

/// Tells the scheduler thread to stop if `run` is dropped mid-run.
pub(crate) struct StopOnDrop(pub(crate) Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub(crate) struct Plan {
    pub(crate) rate: f64,
    pub(crate) duration: Duration,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) handle: tokio::runtime::Handle,
}

/// Runs on its own thread: spawns request `i` at `start + i / rate`, and
/// immediately (a burst) for every deadline already past. Returns the number
/// of requests scheduled.
pub(crate) fn schedule(plan: Plan, shared: Arc<Shared>, tx: mpsc::UnboundedSender<Outcome>) -> u64 {
    reduce_timer_slack();
    let start = Instant::now();
    let duration = plan.duration.as_secs_f64();
    let mut i: u64 = 0;
    loop {
        // Computed from `i` rather than accumulated, so rounding never drifts.
        let offset_s = i as f64 / plan.rate;
        if offset_s >= duration || plan.stop.load(Ordering::Relaxed) {
            return i;
        }
        // offset_s < duration, which validate() proved fits an Instant.
        let offset = Duration::from_secs_f64(offset_s);
        let at = start + offset;
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        plan.handle
            .spawn(one_request(shared.clone(), tx.clone(), at, offset));
        i += 1;
    }
}

/// Linux delays a sleeping thread's wake-up by up to its timer slack (50 µs
/// by default) to batch wake-ups. Every sleep of the scheduler is a deadline
/// whose overshoot would count as request latency, so ask for 1 µs. Best
/// effort, through /proc because `prctl` would need unsafe code: without
/// /proc (other OS, sandbox) sleeps are merely less precise.
fn reduce_timer_slack() {
    let Ok(me) = std::fs::read_link("/proc/thread-self") else {
        return;
    };
    // `/proc/thread-self` links to `PID/task/TID`; `/proc/TID` is this thread.
    let Some(tid) = me.file_name() else {
        return;
    };
    let path = std::path::Path::new("/proc")
        .join(tid)
        .join("timerslack_ns");
    // Failure is harmless (see above) and not worth reporting.
    let _ = std::fs::write(path, "1000");
}
