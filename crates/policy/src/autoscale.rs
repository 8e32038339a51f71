//! Replica counts in the manner of Kubernetes' HorizontalPodAutoscaler (`autoscaling/v2`
//! with `behavior`): a recommendation from the metric's ratio to its target, stabilized
//! over a window, limited in rate per period, kept within bounds; plus a cover of extra
//! replicas while some are failed.
//!
//! One [`Autoscaler::decide`] turns the count in force into the count wanted, in steps
//! (each step reported in [`Decision`]):
//!
//! 1. raw: `ceil(current × value / target)` unless the ratio is within `tolerance` of 1,
//!    clamped to `[min, max]`;
//! 2. stabilization: a scale-up goes no higher than the lowest recommendation of the last
//!    `up_window`, a scale-down no lower than the highest of the last `down_window`;
//! 3. rate: within a policy's `period` the count moves by at most the larger of `percent`
//!    of the count at the period's start and `pods`;
//! 4. bounds: `[min, max]` again (they win over the rate);
//! 5. cover: up to `failed` more replicas, never above `max`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How much the count may change within `period`: the larger of `percent` of the count at
/// the period's start and `pods` (HPA's `selectPolicy: Max` over a Percent and a Pods
/// policy). Up, the percentage is rounded up; down, it is rounded down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalePolicy {
    /// Percentage of the count at the period's start (negative or NaN: 0).
    pub percent: f64,
    /// Replicas (0: only the percentage counts).
    pub pods: u32,
    /// The sliding period.
    pub period: Duration,
}

impl ScalePolicy {
    fn share(&self, base: u32) -> f64 {
        let percent = if self.percent > 0.0 {
            self.percent
        } else {
            0.0
        };
        f64::from(base) * percent / 100.0
    }

    /// The most the count may rise within a period that started at `base`.
    fn rise(&self, base: u32) -> u32 {
        // `as` saturates: an absurd percentage allows everything up to `max`.
        (self.share(base).ceil() as u32).max(self.pods)
    }

    /// The most the count may fall within a period that started at `base`.
    fn fall(&self, base: u32) -> u32 {
        (self.share(base).floor() as u32).max(self.pods)
    }
}

/// An autoscaler's configuration. The caller validates it; here `max` below `min` is
/// raised to `min`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoscaleConfig {
    /// The fewest replicas.
    pub min: u32,
    /// The most replicas, failure cover included.
    pub max: u32,
    /// Ratios within this of 1 change nothing (0.1: ±10 %).
    pub tolerance: f64,
    /// Scale-up stabilization: up only to the lowest recommendation of this window.
    pub up_window: Duration,
    /// Scale-down stabilization: down only to the highest recommendation of this window.
    pub down_window: Duration,
    /// The scale-up rate.
    pub up: ScalePolicy,
    /// The scale-down rate.
    pub down: ScalePolicy,
}

impl AutoscaleConfig {
    /// Kubernetes' defaults between `min` and `max`: tolerance 0.1, no scale-up
    /// stabilization, 300 s of scale-down stabilization, up by 100 % or 4 replicas per
    /// 15 s, down by 100 % per 15 s.
    pub fn new(min: u32, max: u32) -> Self {
        let period = Duration::from_secs(15);
        AutoscaleConfig {
            min,
            max,
            tolerance: 0.1,
            up_window: Duration::ZERO,
            down_window: Duration::from_secs(300),
            up: ScalePolicy {
                percent: 100.0,
                pods: 4,
                period,
            },
            down: ScalePolicy {
                percent: 100.0,
                pods: 0,
                period,
            },
        }
    }
}

/// Why a decision is what it is; the first that applies, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Replicas were added to cover failed ones.
    FailureCover,
    /// The metric or target is unusable (NaN, infinite, negative; target ≤ 0): the count in
    /// force is kept (within bounds).
    InvalidMetric,
    /// The bounds overrode the rate: the count is at `min`, or is held there.
    AtMin,
    /// The bounds overrode the rate or the metric: the count is at `max`.
    AtMax,
    /// The rate policy held the change back.
    LimitedByRate,
    /// A stabilization window held the change back.
    HeldByStabilization,
    /// Scaling up as recommended.
    Up,
    /// Scaling down as recommended (or a cover no longer needed is withdrawn).
    Down,
    /// No change: the ratio is within tolerance, or the metric asks for the count in
    /// force.
    WithinTolerance,
}

impl Reason {
    /// A stable name for logs, events and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Reason::FailureCover => "failure-cover",
            Reason::InvalidMetric => "invalid-metric",
            Reason::AtMin => "at-min",
            Reason::AtMax => "at-max",
            Reason::LimitedByRate => "limited-by-rate",
            Reason::HeldByStabilization => "held-by-stabilization",
            Reason::Up => "up",
            Reason::Down => "down",
            Reason::WithinTolerance => "within-tolerance",
        }
    }
}

/// One decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The count in force, as given.
    pub current: u32,
    /// The metric's recommendation within `[min, max]`, before stabilization and rate
    /// limits (the count in force without its cover when the metric is unusable).
    pub raw: u32,
    /// The count wanted, cover included; within `[min, max]`.
    pub desired: u32,
    /// Of `desired`, the replicas added for failed ones.
    pub cover: u32,
    /// Why.
    pub reason: Reason,
}

/// The intermediate counts of one decision, for its reason.
struct Steps {
    current: u32,
    wanted: Option<u32>,
    raw: u32,
    stabilized: u32,
    limited: u32,
    bounded: u32,
}

impl Steps {
    fn reason(&self, cover: u32) -> Reason {
        let Some(wanted) = self.wanted else {
            return if cover > 0 {
                Reason::FailureCover
            } else {
                Reason::InvalidMetric
            };
        };
        let bound = |low: bool| if low { Reason::AtMin } else { Reason::AtMax };
        if cover > 0 {
            Reason::FailureCover
        } else if self.bounded != self.limited {
            bound(self.bounded > self.limited)
        } else if self.limited != self.stabilized {
            Reason::LimitedByRate
        } else if self.stabilized != self.raw {
            Reason::HeldByStabilization
        } else if self.raw != wanted {
            bound(self.raw > wanted)
        } else if self.bounded > self.current {
            Reason::Up
        } else if self.bounded < self.current {
            Reason::Down
        } else {
            Reason::WithinTolerance
        }
    }
}

/// The autoscaler of one service.
///
/// Memory is bounded by time: recommendations within the longer stabilization window
/// (consecutive equal ones are kept as one, the latest: it stays in every window the
/// earlier would), scale events within the longer policy period.
///
/// Choices beyond Kubernetes':
/// - a new autoscaler takes the count in force as a recommendation made now, so a
///   restarted runtime does not shrink a service before `down_window` has passed (only a
///   new one: decisions further apart than the window must still scale down);
/// - the failure cover is added after stabilization and rate limits and never recorded as
///   a recommendation: it is granted at once and withdrawn at once when the failed
///   replicas are back. When `current` equals the previous decision's `desired`, that
///   decision's cover is taken out of `current` before the metric applies; otherwise
///   `current` is taken as all metric-driven. Changes the cover causes, recorded with
///   [`scaled`](Self::scaled), count in the rate policies' starting counts like any other.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    cfg: AutoscaleConfig,
    /// Raw recommendations, oldest first.
    recs: VecDeque<(Instant, u32)>,
    /// Scale events as (when, to − from), oldest first.
    events: VecDeque<(Instant, i64)>,
    /// The previous decision's `desired` and `cover`.
    last: Option<(u32, u32)>,
}

impl Autoscaler {
    /// An autoscaler with no history.
    pub fn new(cfg: AutoscaleConfig) -> Self {
        Autoscaler {
            cfg: AutoscaleConfig {
                max: cfg.max.max(cfg.min),
                ..cfg
            },
            recs: VecDeque::new(),
            events: VecDeque::new(),
            last: None,
        }
    }

    /// The count wanted at `now`. `current`: the desired count in force; `value`: the
    /// metric averaged over ready replicas; `target`: its per-replica target; `failed`:
    /// replicas of `current` crashed or ejected right now, covered by as many extra ones
    /// (within `max`).
    pub fn decide(
        &mut self,
        now: Instant,
        current: u32,
        value: f64,
        target: f64,
        failed: u32,
    ) -> Decision {
        let (min, max) = (self.cfg.min, self.cfg.max);
        let held = match self.last {
            Some((desired, cover)) if desired == current => cover,
            _ => 0,
        };
        let base = current - held;
        self.forget(now);
        if self.last.is_none() {
            self.recs.push_back((now, base.clamp(min, max)));
        }
        let wanted = recommend(base, value, target, self.cfg.tolerance);
        let raw = wanted.unwrap_or(base).clamp(min, max);
        let (stabilized, limited) = match wanted {
            Some(_) => {
                let stabilized = self.stabilize(now, base, raw);
                (stabilized, self.limit_rate(now, current, base, stabilized))
            }
            None => (base, base),
        };
        let bounded = limited.clamp(min, max);
        let cover = failed.min(max - bounded);
        let desired = bounded + cover;
        self.last = Some((desired, cover));
        let steps = Steps {
            current,
            wanted,
            raw,
            stabilized,
            limited,
            bounded,
        };
        Decision {
            current,
            raw,
            desired,
            cover,
            reason: steps.reason(cover),
        }
    }

    /// Records that the count was changed from `from` to `to` at `now` (for the rate
    /// policies).
    pub fn scaled(&mut self, now: Instant, from: u32, to: u32) {
        if from != to {
            self.events
                .push_back((now, i64::from(to) - i64::from(from)));
        }
        self.forget(now);
    }

    /// HPA's stabilization: the count in force, raised to the lowest recommendation of
    /// the up window and lowered to the highest of the down window (both include `raw`,
    /// which is then remembered).
    fn stabilize(&mut self, now: Instant, base: u32, raw: u32) -> u32 {
        let (mut up, mut down) = (raw, raw);
        for &(t, r) in &self.recs {
            if within(t, now, self.cfg.up_window) {
                up = up.min(r);
            }
            if within(t, now, self.cfg.down_window) {
                down = down.max(r);
            }
        }
        match self.recs.back_mut() {
            Some(last) if last.1 == raw => last.0 = last.0.max(now),
            _ => self.recs.push_back((now, raw)),
        }
        base.max(up).min(down)
    }

    /// HPA's rate policies: a rise no higher than the period's starting count plus what
    /// the up policy allows (never below the count in force: scaling up never scales
    /// down), a fall no lower than its starting count minus what the down policy allows.
    fn limit_rate(&self, now: Instant, current: u32, base: u32, stabilized: u32) -> u32 {
        if stabilized > base {
            let up = &self.cfg.up;
            let start = self.period_start(now, current, up.period);
            stabilized.min(start.saturating_add(up.rise(start)).max(base))
        } else if stabilized < base {
            let down = &self.cfg.down;
            let start = self.period_start(now, current, down.period);
            stabilized.max(start.saturating_sub(down.fall(start)).min(base))
        } else {
            stabilized
        }
    }

    /// The count in force at `now − period`: `current` minus the changes since.
    fn period_start(&self, now: Instant, current: u32, period: Duration) -> u32 {
        let net = self
            .events
            .iter()
            .filter(|&&(t, _)| within(t, now, period))
            .fold(0i64, |sum, &(_, change)| sum.saturating_add(change));
        let start = i64::from(current).saturating_sub(net).max(0);
        u32::try_from(start).unwrap_or(u32::MAX)
    }

    /// Drops what no window or period can see any more.
    fn forget(&mut self, now: Instant) {
        let window = self.cfg.up_window.max(self.cfg.down_window);
        while self
            .recs
            .front()
            .is_some_and(|&(t, _)| !within(t, now, window))
        {
            self.recs.pop_front();
        }
        let period = self.cfg.up.period.max(self.cfg.down.period);
        while self
            .events
            .front()
            .is_some_and(|&(t, _)| !within(t, now, period))
        {
            self.events.pop_front();
        }
    }
}

/// Whether `t` lies in the window `(now − d, now]` (or after `now`), as HPA's
/// `timestamp.Add(d).After(now)`.
fn within(t: Instant, now: Instant, d: Duration) -> bool {
    now.saturating_duration_since(t) < d
}

/// The metric's count, unclamped: `None` if the metric or target is unusable.
fn recommend(base: u32, value: f64, target: f64, tolerance: f64) -> Option<u32> {
    if !(value.is_finite() && value >= 0.0 && target.is_finite() && target > 0.0) {
        return None;
    }
    let ratio = value / target;
    if !ratio.is_finite() {
        return None;
    }
    if (ratio - 1.0).abs() <= tolerance {
        return Some(base);
    }
    let x = f64::from(base.max(1)) * ratio;
    // A product within 1e-9 of an integer is that integer: floating-point noise in
    // value / target must not add a replica (and then take it away again).
    let near = x.round();
    let count = if (x - near).abs() <= 1e-9 * near.max(1.0) {
        near
    } else {
        x.ceil()
    };
    Some(count as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn hpa_ratio_and_tolerance() {
        let t0 = crate::epoch();
        let mut a = Autoscaler::new(AutoscaleConfig::new(1, 20));
        let d = a.decide(t0, 4, 200.0, 100.0, 0);
        assert_eq!((d.raw, d.desired, d.cover, d.reason), (8, 8, 0, Reason::Up));
        let mut a = Autoscaler::new(AutoscaleConfig::new(1, 20));
        let d = a.decide(t0, 4, 105.0, 100.0, 0);
        assert_eq!(
            (d.raw, d.desired, d.reason),
            (4, 4, Reason::WithinTolerance)
        );
        // with nothing running, the ratio applies to one replica
        let mut a = Autoscaler::new(AutoscaleConfig::new(0, 20));
        assert_eq!(a.decide(t0, 0, 300.0, 100.0, 0).desired, 3);
    }

    #[test]
    fn the_rate_per_period() {
        let t0 = crate::epoch();
        let mut a = Autoscaler::new(AutoscaleConfig::new(1, 20));
        // 1 → 8 wanted; 4 replicas (more than 100 % of 1) per 15 s
        let d = a.decide(t0, 1, 800.0, 100.0, 0);
        assert_eq!((d.raw, d.desired, d.reason), (8, 5, Reason::LimitedByRate));
        a.scaled(t0, 1, 5);
        let d = a.decide(t0 + 5 * S, 5, 160.0, 100.0, 0);
        assert_eq!((d.raw, d.desired, d.reason), (8, 5, Reason::LimitedByRate));
        // a new period starts from 5: up to 10
        let d = a.decide(t0 + 15 * S, 5, 160.0, 100.0, 0);
        assert_eq!((d.desired, d.reason), (8, Reason::Up));
    }

    #[test]
    fn scale_down_waits_for_the_window() {
        let t0 = crate::epoch();
        let mut a = Autoscaler::new(AutoscaleConfig::new(1, 20));
        assert_eq!(a.decide(t0, 4, 200.0, 100.0, 0).desired, 8);
        a.scaled(t0, 4, 8);
        for s in (15..300).step_by(15) {
            let d = a.decide(t0 + s * S, 8, 25.0, 100.0, 0);
            assert_eq!((d.raw, d.desired), (2, 8), "at {s} s");
            assert_eq!(d.reason, Reason::HeldByStabilization);
        }
        let d = a.decide(t0 + 300 * S, 8, 25.0, 100.0, 0);
        assert_eq!((d.desired, d.reason), (2, Reason::Down));
        assert!(a.recs.len() <= 2, "equal recommendations are kept as one");
    }

    #[test]
    fn a_new_autoscaler_does_not_shrink_at_once() {
        let t0 = crate::epoch();
        let mut a = Autoscaler::new(AutoscaleConfig::new(1, 20));
        let d = a.decide(t0, 6, 10.0, 100.0, 0);
        assert_eq!((d.desired, d.reason), (6, Reason::HeldByStabilization));
    }

    #[test]
    fn decisions_further_apart_than_the_window_still_scale_down() {
        // Regression: the count in force was taken as a fresh recommendation whenever the
        // memory was empty, so decisions at least `down_window` apart never scaled down.
        let t0 = crate::epoch();
        let cfg = AutoscaleConfig {
            down_window: 13 * S,
            ..AutoscaleConfig::new(1, 3)
        };
        let mut a = Autoscaler::new(cfg);
        let mut current = 3;
        for step in 1..=4 {
            let now = t0 + 13 * step * S;
            let d = a.decide(now, current, 10.0 / f64::from(current), 100.0, 0);
            a.scaled(now, current, d.desired);
            current = d.desired;
        }
        assert_eq!(current, 1);
    }

    #[test]
    fn bounds() {
        let t0 = crate::epoch();
        let cfg = AutoscaleConfig {
            down_window: Duration::ZERO,
            ..AutoscaleConfig::new(2, 6)
        };
        let d = Autoscaler::new(cfg).decide(t0, 4, 1000.0, 100.0, 0);
        assert_eq!((d.raw, d.desired, d.reason), (6, 6, Reason::AtMax));
        let d = Autoscaler::new(cfg).decide(t0, 4, 10.0, 100.0, 0);
        assert_eq!((d.raw, d.desired, d.reason), (2, 2, Reason::AtMin));
        // bounds win over the rate: 40 is brought to 6 at once
        let d = Autoscaler::new(cfg).decide(t0, 40, 100.0, 100.0, 0);
        assert_eq!((d.desired, d.reason), (6, Reason::AtMax));
        // and a max below min is raised to it
        let d = Autoscaler::new(AutoscaleConfig::new(5, 3)).decide(t0, 1, 100.0, 100.0, 0);
        assert_eq!(d.desired, 5);
    }

    #[test]
    fn failure_cover_comes_and_goes_at_once() {
        let t0 = crate::epoch();
        let mut a = Autoscaler::new(AutoscaleConfig::new(1, 10));
        let d = a.decide(t0, 5, 100.0, 100.0, 2);
        assert_eq!((d.desired, d.cover, d.reason), (7, 2, Reason::FailureCover));
        a.scaled(t0, 5, 7);
        // applied: the cover is not mistaken for load
        let d = a.decide(t0 + S, 7, 100.0, 100.0, 2);
        assert_eq!((d.raw, d.desired, d.cover), (5, 7, 2));
        // failed replicas are back: withdrawn without waiting for the down window
        let d = a.decide(t0 + 2 * S, 7, 100.0, 100.0, 0);
        assert_eq!((d.desired, d.cover, d.reason), (5, 0, Reason::Down));
        a.scaled(t0 + 2 * S, 7, 5);
        // never above max
        let d = a.decide(t0 + 3 * S, 5, 100.0, 100.0, 20);
        assert_eq!((d.desired, d.cover), (10, 5));
    }

    #[test]
    fn unusable_metrics_keep_the_count() {
        let t0 = crate::epoch();
        for (value, target) in [
            (f64::NAN, 100.0),
            (-1.0, 100.0),
            (f64::INFINITY, 100.0),
            (50.0, 0.0),
            (50.0, -3.0),
            (50.0, f64::NAN),
            (1e300, 1e-300),
        ] {
            let d = Autoscaler::new(AutoscaleConfig::new(1, 10)).decide(t0, 4, value, target, 0);
            assert_eq!((d.raw, d.desired, d.reason), (4, 4, Reason::InvalidMetric));
        }
    }

    #[test]
    fn names() {
        assert_eq!(Reason::HeldByStabilization.name(), "held-by-stabilization");
        assert_eq!(Reason::FailureCover.name(), "failure-cover");
        assert_eq!(Reason::WithinTolerance.name(), "within-tolerance");
    }

    #[test]
    fn memory_is_bounded_by_time() {
        let t0 = crate::epoch();
        let mut a = Autoscaler::new(AutoscaleConfig::new(1, 1000));
        let mut current = 10;
        for i in 0..5000u32 {
            let now = t0 + 15 * S * i;
            let d = a.decide(now, current, f64::from(100 + (i % 7) * 40), 100.0, 0);
            a.scaled(now, current, d.desired);
            current = d.desired;
        }
        assert!(a.recs.len() <= 21, "{} recommendations", a.recs.len());
        assert!(a.events.len() <= 1, "{} events", a.events.len());
    }
}
