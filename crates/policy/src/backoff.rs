use std::time::{Duration, Instant};

/// Exponential backoff with downward jitter.
///
/// Invariant: every delay lies in `[initial, max]`. Jitter only shortens a delay (never
/// below `initial`), so delays still grow from one restart to the next while
/// `multiplier * (1 - jitter) > 1`, and replicas that crashed together spread out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay, and the floor every jittered delay is kept above.
    pub initial: Duration,
    /// The ceiling no delay exceeds, however many failures in a row.
    pub max: Duration,
    /// How much each delay grows over the previous one.
    pub multiplier: f64,
    /// The largest fraction (0 to 1) by which jitter may shorten a delay.
    pub jitter: f64,
}

impl Backoff {
    /// Delay before restart number `attempt` (0-based) of a run of failures.
    /// `rand01` is a uniform random number in `[0, 1)`.
    pub fn delay(&self, attempt: u32, rand01: f64) -> Duration {
        let base = self.initial.as_secs_f64() * self.multiplier.powi(attempt.min(64) as i32);
        let max = self.max.as_secs_f64();
        let base = if base.is_finite() { base.min(max) } else { max };
        let jittered = base * (1.0 - self.jitter * rand01.clamp(0.0, 1.0));
        Duration::from_secs_f64(jittered.clamp(self.initial.as_secs_f64(), max))
    }
}

/// Tracks one replica's run of short-lived incarnations.
///
/// Invariant: `failures` counts consecutive incarnations that ended before `reset_after`
/// of uptime; an incarnation that lived at least that long resets it to zero.
#[derive(Debug, Clone)]
pub struct CrashLoop {
    backoff: Backoff,
    reset_after: Duration,
    /// Consecutive short runs that make the replica "crash-looping".
    loop_after: u32,
    failures: u32,
    started_at: Option<Instant>,
}

/// What to do after an incarnation ended: how long to wait, and whether the replica is
/// crash-looping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartDecision {
    /// How long to wait before the next start.
    pub delay: Duration,
    /// Consecutive short-lived runs so far, including this one.
    pub failures: u32,
    /// Whether the run of short-lived incarnations is long enough to report a crash loop.
    pub crash_looping: bool,
}

impl CrashLoop {
    /// A tracker with no history; an incarnation that lives `reset_after` clears the run of
    /// failures.
    pub fn new(backoff: Backoff, reset_after: Duration) -> Self {
        CrashLoop {
            backoff,
            reset_after,
            loop_after: 3,
            failures: 0,
            started_at: None,
        }
    }

    /// Records that a new incarnation started at `now`, so its uptime can be judged when it ends.
    pub fn started(&mut self, now: Instant) {
        self.started_at = Some(now);
    }

    /// The incarnation started by the last [`started`](Self::started) ended at `now`.
    pub fn ended(&mut self, now: Instant, rand01: f64) -> RestartDecision {
        let uptime = self
            .started_at
            .take()
            .map(|s| now.saturating_duration_since(s))
            .unwrap_or_default();
        if uptime >= self.reset_after {
            self.failures = 0;
        }
        let delay = self.backoff.delay(self.failures, rand01);
        self.failures = self.failures.saturating_add(1);
        RestartDecision {
            delay,
            failures: self.failures,
            crash_looping: self.failures >= self.loop_after,
        }
    }

    /// Takes new settings (a reload changed them) and keeps the history: the run of
    /// short-lived incarnations and the current incarnation's start.
    pub fn set_backoff(&mut self, backoff: Backoff, reset_after: Duration) {
        self.backoff = backoff;
        self.reset_after = reset_after;
    }

    /// Whether the current run of short-lived incarnations counts as a crash loop.
    pub fn is_crash_looping(&self) -> bool {
        self.failures >= self.loop_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }

    #[test]
    fn delays_double_and_stay_within_bounds() {
        let b = backoff();
        let no_jitter: Vec<u64> = (0..10)
            .map(|a| b.delay(a, 0.0).as_millis() as u64)
            .collect();
        assert_eq!(
            no_jitter,
            vec![250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        for attempt in 0..200 {
            for r in [0.0, 0.3, 0.999] {
                let d = b.delay(attempt, r);
                assert!(d >= b.initial && d <= b.max, "{attempt} {r} {d:?}");
            }
        }
        // jitter never lets a delay shrink below the previous attempt's undisturbed delay
        for attempt in 1..7 {
            assert!(b.delay(attempt, 0.999) > b.delay(attempt - 1, 0.0));
        }
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        assert_eq!(backoff().delay(u32::MAX, 0.0), Duration::from_secs(30));
    }

    #[test]
    fn crash_loop_detected_and_reset_after_stable_uptime() {
        let t0 = crate::epoch();
        let mut cl = CrashLoop::new(backoff(), Duration::from_secs(60));
        let mut now = t0;
        let mut delays = vec![];
        for i in 0..4 {
            cl.started(now);
            now += Duration::from_millis(10);
            let d = cl.ended(now, 0.0);
            delays.push(d.delay.as_millis());
            assert_eq!(d.crash_looping, i >= 2, "run {i}");
            now += d.delay;
        }
        assert_eq!(delays, vec![250, 500, 1000, 2000]);
        // a run that lasts reset_after starts the sequence again
        cl.started(now);
        now += Duration::from_secs(60);
        let d = cl.ended(now, 0.0);
        assert_eq!(d.delay, Duration::from_millis(250));
        assert!(!d.crash_looping);
        assert!(!cl.is_crash_looping());
    }
}
