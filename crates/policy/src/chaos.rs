//! Chaos experiments' decisions: which replicas a fault hits, when a monkey acts next, and
//! when a failing probe aborts an experiment.

use std::time::Duration;

use jiff::civil::{DateTime, Weekday};

/// `count` distinct replicas of `ready` chosen at random (all of them if fewer), in the
/// order drawn. `draw(n)` returns a uniform index in `0..n`.
pub fn pick_targets(ready: &[u32], count: usize, mut draw: impl FnMut(usize) -> usize) -> Vec<u32> {
    let mut pool = ready.to_vec();
    let mut out = Vec::with_capacity(count.min(pool.len()));
    while out.len() < count && !pool.is_empty() {
        let i = draw(pool.len()).min(pool.len() - 1);
        out.push(pool.swap_remove(i));
    }
    out
}

/// The monkey's window: the days it may act on, and minutes of the day (from inclusive,
/// to exclusive).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Days it may act on.
    pub days: Vec<Weekday>,
    /// Minutes of the day, `from < to <= 1440`.
    pub minutes: (u16, u16),
}

impl Window {
    /// Whether `t` is inside the window.
    pub fn contains(&self, t: DateTime) -> bool {
        let minute =
            u16::try_from(t.hour()).unwrap_or(0) * 60 + u16::try_from(t.minute()).unwrap_or(0);
        self.days.contains(&t.weekday()) && minute >= self.minutes.0 && minute < self.minutes.1
    }
}

/// A draw of the time between two faults, exponential with mean `mean`, from `u` uniform
/// in `[0, 1)`: faults then arrive as a Poisson process, as Chaos Monkey's do.
pub fn exponential(mean: Duration, u: f64) -> Duration {
    let u = u.clamp(0.0, 1.0 - f64::EPSILON);
    let secs = -mean.as_secs_f64() * (1.0 - u).ln();
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

/// When the monkey acts next: `gap` of window time after `from` (time outside the window
/// does not count, so the rate inside it is the configured one and nothing happens
/// outside it). `None` when the window is empty or the time is past any calendar.
pub fn monkey_next(from: DateTime, gap: Duration, window: &Window) -> Option<DateTime> {
    let (lo, hi) = window.minutes;
    if window.days.is_empty() || lo >= hi {
        return None;
    }
    let mut start = from;
    let mut remaining = gap;
    let per_day = Duration::from_secs(u64::from(hi - lo) * 60);
    let per_week = per_day * u32::try_from(window.days.len()).unwrap_or(7);
    // Day by day, with whole weeks skipped at once after the first day (from a midnight,
    // a week holds exactly `per_week` of window time): at most 16 steps.
    for step in 0..16 {
        let midnight = start.date().to_datetime(jiff::civil::Time::midnight());
        if step == 1 && remaining >= per_week {
            let weeks = remaining.as_secs() / per_week.as_secs();
            remaining -= per_week * u32::try_from(weeks).ok()?;
            let days = i64::try_from(weeks).ok()?.checked_mul(7)?;
            start = midnight
                .checked_add(jiff::Span::new().try_days(days).ok()?)
                .ok()?;
            continue;
        }
        let open = midnight + jiff::SignedDuration::from_mins(i64::from(lo));
        let close = midnight + jiff::SignedDuration::from_mins(i64::from(hi));
        if window.days.contains(&start.weekday()) && start < close {
            let s = start.max(open);
            let available = s.duration_until(close).unsigned_abs();
            if remaining < available {
                let step = jiff::SignedDuration::try_from(remaining).ok()?;
                return s.checked_add(step).ok();
            }
            remaining -= available;
        }
        start = midnight
            .date()
            .tomorrow()
            .ok()?
            .to_datetime(jiff::civil::Time::midnight());
    }
    None
}

/// Consecutive failures of one probe: the experiment aborts when a streak reaches the
/// threshold (Chaos Toolkit's tolerance, Kubernetes' `failureThreshold`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streak {
    failures: u32,
}

impl Streak {
    /// Records a check; `true` when the streak has reached `threshold` (at least 1).
    pub fn record(&mut self, passed: bool, threshold: u32) -> bool {
        self.failures = if passed {
            0
        } else {
            self.failures.saturating_add(1)
        };
        self.failures >= threshold.max(1)
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn weekdays_9_to_17() -> Window {
        Window {
            days: vec![
                Weekday::Monday,
                Weekday::Tuesday,
                Weekday::Wednesday,
                Weekday::Thursday,
                Weekday::Friday,
            ],
            minutes: (9 * 60, 17 * 60),
        }
    }

    #[test]
    fn the_gap_counts_window_time_only() {
        let w = weekdays_9_to_17();
        // Friday 16:30 plus one hour of window time: 30 minutes on Friday, the other 30 on
        // Monday from 9:00.
        let fri = date(2026, 12, 4).at(16, 30, 0, 0);
        assert_eq!(
            monkey_next(fri, Duration::from_secs(3600), &w),
            Some(date(2026, 12, 7).at(9, 30, 0, 0))
        );
        // Saturday night: nothing until Monday 9:00.
        let sat = date(2026, 12, 5).at(23, 0, 0, 0);
        assert_eq!(
            monkey_next(sat, Duration::ZERO, &w),
            Some(date(2026, 12, 7).at(9, 0, 0, 0))
        );
        let empty = Window { days: vec![], ..w };
        assert_eq!(monkey_next(fri, Duration::ZERO, &empty), None);
    }

    #[test]
    fn a_streak_aborts_at_the_threshold_and_a_pass_resets_it() {
        let mut s = Streak::default();
        assert!(!s.record(false, 3));
        assert!(!s.record(false, 3));
        assert!(!s.record(true, 3));
        assert!(!s.record(false, 3));
        assert!(!s.record(false, 3));
        assert!(s.record(false, 3));
        assert_eq!(s.failures(), 3);
    }
}
