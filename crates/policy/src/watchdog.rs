use std::time::{Duration, Instant};

/// A watchdog pushed by the watched (systemd's `WatchdogSec=` with `WATCHDOG=1`): it
/// expires when no kick came within `timeout` of the previous one.
///
/// It starts disarmed; [`arm`](Watchdog::arm) starts the first interval (when the replica
/// said `READY=1`), a [`kick`](Watchdog::kick) starts a new one (and arms it, so a replica
/// that kicks before it is ready is watched from then on), [`trigger`](Watchdog::trigger)
/// makes it expire at once (`WATCHDOG=trigger`). A zero `timeout` never arms.
///
/// Invariant: once armed, [`deadline`](Watchdog::deadline) is never later than the last
/// kick (or arming) plus `timeout`, and [`expired`](Watchdog::expired) is true from the
/// deadline on until the next kick.
#[derive(Debug, Clone)]
pub struct Watchdog {
    timeout: Duration,
    deadline: Option<Instant>,
}

impl Watchdog {
    /// A disarmed watchdog of `timeout` (zero: off).
    pub fn new(timeout: Duration) -> Self {
        Watchdog {
            timeout,
            deadline: None,
        }
    }

    /// Starts the first interval at `now`, unless one runs already.
    pub fn arm(&mut self, now: Instant) {
        if self.deadline.is_none() {
            self.kick(now);
        }
    }

    /// The watched is alive at `now`: a new interval starts.
    pub fn kick(&mut self, now: Instant) {
        if !self.timeout.is_zero() {
            // A huge timeout saturates to "practically never" instead of overflowing.
            self.deadline = Some(now.checked_add(self.timeout).unwrap_or(now + FAR));
        }
    }

    /// The watched asks to be treated as failed at once.
    pub fn trigger(&mut self, now: Instant) {
        if !self.timeout.is_zero() {
            self.deadline = Some(now);
        }
    }

    /// When it expires, if armed.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether it is armed and no kick came in time.
    pub fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    /// The interval the watched was given.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// About 30 years.
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(500);

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn disarmed_until_armed_or_kicked_then_expires_a_timeout_after_the_last_kick() {
        let t0 = crate::epoch();
        let mut w = Watchdog::new(T);
        assert!(!w.expired(at(t0, 10_000)), "disarmed never expires");
        w.arm(t0);
        w.arm(at(t0, 400)); // arming again does not extend
        assert!(!w.expired(at(t0, 499)));
        assert!(w.expired(at(t0, 500)));
        w.kick(at(t0, 450));
        assert!(!w.expired(at(t0, 949)));
        assert!(w.expired(at(t0, 950)));
        assert_eq!(w.deadline(), Some(at(t0, 950)));
    }

    #[test]
    fn a_kick_before_arming_arms_it() {
        let t0 = crate::epoch();
        let mut w = Watchdog::new(T);
        w.kick(t0);
        w.arm(at(t0, 300)); // already armed by the kick
        assert!(w.expired(at(t0, 500)));
    }

    #[test]
    fn trigger_expires_at_once_and_a_kick_recovers() {
        let t0 = crate::epoch();
        let mut w = Watchdog::new(T);
        w.arm(t0);
        w.trigger(at(t0, 100));
        assert!(w.expired(at(t0, 100)));
        w.kick(at(t0, 150));
        assert!(!w.expired(at(t0, 600)));
    }

    #[test]
    fn zero_is_off_and_huge_saturates() {
        let t0 = crate::epoch();
        let mut off = Watchdog::new(Duration::ZERO);
        off.arm(t0);
        off.kick(t0);
        off.trigger(t0);
        assert_eq!(off.deadline(), None);
        assert!(!off.expired(at(t0, 1_000_000)));
        let mut huge = Watchdog::new(Duration::MAX);
        huge.arm(t0);
        assert!(!huge.expired(t0 + Duration::from_secs(86_400 * 365)));
    }
}
