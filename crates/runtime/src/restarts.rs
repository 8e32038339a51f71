//! One replica's run of restarts: the crash-loop tracker, following its service's current
//! backoff settings across reloads.

use std::time::Instant;

use policy::{CrashLoop, RestartDecision};

/// The crash-loop tracker of one replica task.
///
/// Invariant: `tracker` runs with `backoff`, the backoff of the spec the current
/// incarnation runs.
pub(crate) struct Restarts {
    backoff: spec::Backoff,
    tracker: CrashLoop,
}

/// What the replica task does after an incarnation ended and is to be restarted.
pub(crate) struct Decision {
    pub restart: RestartDecision,
    /// The replica has just begun to crash-loop (it was not crash-looping before).
    pub began_looping: bool,
}

impl Restarts {
    pub fn new(backoff: spec::Backoff) -> Self {
        Restarts {
            backoff,
            tracker: tracker(&backoff),
        }
    }

    /// Adopts `backoff` when a reload changed it, keeping the run of short-lived
    /// incarnations seen so far (a crash loop stays one across a reload).
    pub fn follow(&mut self, backoff: spec::Backoff) {
        if backoff != self.backoff {
            self.tracker
                .set_backoff(settings(&backoff), backoff.reset_after);
            self.backoff = backoff;
        }
    }

    /// An incarnation is being started at `now`.
    pub fn started(&mut self, now: Instant) {
        self.tracker.started(now);
    }

    /// The incarnation ended at `now` and is to be restarted; `rand01` drives the jitter.
    pub fn ended(&mut self, now: Instant, rand01: f64) -> Decision {
        let was_looping = self.tracker.is_crash_looping();
        let restart = self.tracker.ended(now, rand01);
        Decision {
            restart,
            began_looping: restart.crash_looping && !was_looping,
        }
    }
}

fn settings(b: &spec::Backoff) -> policy::Backoff {
    policy::Backoff {
        initial: b.initial,
        max: b.max,
        multiplier: b.multiplier,
        jitter: b.jitter,
    }
}

fn tracker(b: &spec::Backoff) -> CrashLoop {
    CrashLoop::new(settings(b), b.reset_after)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn backoff(initial_ms: u64, max_ms: u64) -> spec::Backoff {
        spec::Backoff {
            initial: Duration::from_millis(initial_ms),
            max: Duration::from_millis(max_ms),
            reset_after: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.0,
        }
    }

    /// Runs one short incarnation and returns its decision.
    fn crash(r: &mut Restarts, now: Instant) -> Decision {
        r.started(now);
        r.ended(now + Duration::from_millis(1), 0.0)
    }

    #[test]
    fn delays_grow_and_crash_looping_is_announced_once() {
        let now = Instant::now();
        let mut r = Restarts::new(backoff(100, 1000));
        let runs: Vec<(u128, bool, bool)> = (0..6)
            .map(|_| {
                let d = crash(&mut r, now);
                (
                    d.restart.delay.as_millis(),
                    d.restart.crash_looping,
                    d.began_looping,
                )
            })
            .collect();
        assert_eq!(
            runs,
            vec![
                (100, false, false),
                (200, false, false),
                (400, true, true),
                (800, true, false),
                (1000, true, false),
                (1000, true, false),
            ]
        );
    }

    #[test]
    fn a_changed_backoff_applies_to_the_next_restart_and_keeps_the_count() {
        let now = Instant::now();
        let mut r = Restarts::new(backoff(100, 1000));
        for _ in 0..3 {
            crash(&mut r, now);
        }
        r.follow(backoff(10, 50));
        let d = crash(&mut r, now);
        assert_eq!(
            d.restart.delay,
            Duration::from_millis(50),
            "10ms * 2^3, capped"
        );
        assert!(d.restart.crash_looping, "still the same crash loop");
        assert!(!d.began_looping, "not announced twice");
        assert_eq!(d.restart.failures, 4);
    }

    #[test]
    fn an_unchanged_backoff_keeps_the_tracker() {
        let now = Instant::now();
        let mut r = Restarts::new(backoff(100, 1000));
        crash(&mut r, now);
        r.started(now);
        r.follow(backoff(100, 1000));
        // The started incarnation is still being timed: a long run resets the count.
        let d = r.ended(now + Duration::from_secs(61), 0.0);
        assert_eq!(d.restart.delay, Duration::from_millis(100));
        assert_eq!(d.restart.failures, 1);
    }
}
