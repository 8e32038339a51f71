//! When `bulwark top` asks the API for the status again: at most once a second, soon after
//! an event, every [`IDLE`] otherwise, and backing off to [`RETRY_MAX`] while the API does
//! not answer. Never two requests at once. Pure: the time comes in as arguments.

use std::time::Duration;

use tokio::time::Instant;

/// The shortest time between two refreshes.
pub const MIN_GAP: Duration = Duration::from_secs(1);
/// The time between two refreshes when nothing happens (ages and alerts change anyway).
pub const IDLE: Duration = Duration::from_secs(2);
/// The longest wait between two tries while the API does not answer.
pub const RETRY_MAX: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Pacer {
    /// When the last refresh started.
    last: Option<Instant>,
    in_flight: bool,
    /// An event came since the last refresh started.
    wanted: bool,
    /// Refreshes failed in a row.
    failures: u32,
}

impl Pacer {
    /// Something happened: refresh as soon as [`MIN_GAP`] allows.
    pub fn want(&mut self) {
        self.wanted = true;
    }

    /// When the next refresh is due; `None` while one is under way.
    pub fn due(&self, now: Instant) -> Option<Instant> {
        if self.in_flight {
            return None;
        }
        let Some(last) = self.last else {
            return Some(now);
        };
        let gap = if self.wanted {
            MIN_GAP
        } else if self.failures > 0 {
            self.retry()
        } else {
            IDLE
        };
        Some(last + gap)
    }

    pub fn started(&mut self, now: Instant) {
        self.last = Some(now);
        self.in_flight = true;
        self.wanted = false;
    }

    pub fn finished(&mut self, ok: bool) {
        self.in_flight = false;
        self.failures = if ok { 0 } else { self.failures + 1 };
    }

    /// The wait before the next try after the failures so far: 1 s, 2 s, 4 s, then 5 s.
    pub fn retry(&self) -> Duration {
        let doubled = MIN_GAP.saturating_mul(1 << self.failures.saturating_sub(1).min(8));
        doubled.min(RETRY_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn refreshes_are_a_second_apart_at_least_and_one_at_a_time() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        assert_eq!(p.due(t0), Some(t0), "the first is at once");
        p.started(t0);
        p.want();
        assert_eq!(p.due(t0), None, "one under way");
        p.finished(true);
        assert_eq!(
            p.due(t0),
            Some(t0 + S),
            "an event during it: a second after it began"
        );
        p.started(t0 + S);
        p.finished(true);
        assert_eq!(p.due(t0 + S), Some(t0 + S + IDLE), "quiet: every IDLE");
        p.want();
        assert_eq!(p.due(t0 + S), Some(t0 + 2 * S));
    }

    #[test]
    fn failures_back_off_to_five_seconds_and_an_answer_resets_them() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        let mut waits = Vec::new();
        for _ in 0..6 {
            p.started(t0);
            p.finished(false);
            waits.push(p.due(t0).unwrap() - t0);
        }
        assert_eq!(waits, [S, 2 * S, 4 * S, 5 * S, 5 * S, 5 * S]);
        assert_eq!(p.retry(), RETRY_MAX);
        for _ in 0..100 {
            p.finished(false);
        }
        assert_eq!(p.retry(), RETRY_MAX, "no overflow");
        p.want();
        assert_eq!(p.due(t0), Some(t0 + S), "the event stream is back: try now");
        p.started(t0);
        p.finished(true);
        assert_eq!(p.due(t0), Some(t0 + IDLE));
    }
}
