//! Predicting a slow failure: a robust line through a resource's samples (disk, memory,
//! file descriptors) and when it reaches its limit, and the drift of a signal (latency,
//! error ratio) away from its own baseline.
//!
//! Non-finite inputs (NaN, ±∞) are ignored everywhere: they never panic and never enter
//! any state.

use std::time::Duration;

/// The most points a fit looks at: 64 points make 2016 pairwise slopes.
const MAX_POINTS: usize = 64;

/// A line `y = slope × x + intercept` and how much the data agree on its direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Change of y per unit of x.
    pub slope: f64,
    /// y at x = 0.
    pub intercept: f64,
    /// In `[0, 1]`: how consistently the pairs of points move in the slope's direction
    /// (see [`theil_sen`]).
    pub confidence: f64,
}

/// The Theil–Sen estimator: the slope is the median of the slopes between every pair of
/// points with distinct x, the intercept the median of `y − slope × x`. Robust to about
/// 29 % of arbitrary outliers, where least squares follows a single one.
///
/// `confidence` is Kendall's tau-a signed by the median slope and floored at 0:
/// `(agreeing − opposing) / pairs`, where a pair agrees when its slope has the sign of the
/// median slope and opposes when it has the other sign (a flat pair does neither). It is
/// 1 for a strictly monotone series, near 0 for noise without a trend, and 0 for a flat
/// fit: it measures the evidence for a trend, not the goodness of the line.
///
/// `None` for fewer than 3 finite points or no two distinct x. Bounded cost: beyond 64
/// finite points, 64 are taken evenly spaced by index, first and last included
/// (deterministic), so a fit costs at most 2016 slopes and two small allocations.
pub fn theil_sen(points: &[(f64, f64)]) -> Option<Fit> {
    let points = sample(points);
    if points.len() < 3 {
        return None;
    }
    let mut slopes = Vec::with_capacity(points.len() * (points.len() - 1) / 2);
    for (i, &(x1, y1)) in points.iter().enumerate() {
        for &(x2, y2) in &points[i + 1..] {
            let slope = (y2 - y1) / (x2 - x1);
            // Equal x give ±∞ or NaN; an overflowing difference gives ±∞ too.
            if slope.is_finite() {
                slopes.push(slope);
            }
        }
    }
    let slope = median(&mut slopes)?;
    let mut offsets: Vec<f64> = points
        .iter()
        .map(|&(x, y)| y - slope * x)
        .filter(|v| v.is_finite())
        .collect();
    let intercept = median(&mut offsets)?;
    let sign = if slope > 0.0 {
        1.0
    } else if slope < 0.0 {
        -1.0
    } else {
        0.0
    };
    let tau: f64 = slopes
        .iter()
        .map(|&s| if s == 0.0 { 0.0 } else { s.signum() * sign })
        .sum::<f64>()
        / slopes.len() as f64;
    Some(Fit {
        slope,
        intercept,
        confidence: tau.clamp(0.0, 1.0),
    })
}

/// The finite points, at most [`MAX_POINTS`] of them evenly spaced by index.
fn sample(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let n = points.iter().filter(finite).count();
    let k = n.min(MAX_POINTS);
    // The i-th kept point is the finite point number i × (n − 1) / (k − 1): strictly
    // increasing, the first and the last included, every point when n ≤ 64.
    let pick = |i: usize| if k <= 1 { 0 } else { i * (n - 1) / (k - 1) };
    let mut out = Vec::with_capacity(k);
    for (j, &p) in points.iter().filter(finite).enumerate() {
        if out.len() < k && j == pick(out.len()) {
            out.push(p);
        }
    }
    out
}

/// The median of finite values (the mean of the middle two for an even count).
fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    let mid = values.len() / 2;
    let m = if values.len() % 2 == 1 {
        values[mid]
    } else {
        // Halving first: the sum of two huge values must not overflow.
        values[mid - 1] / 2.0 + values[mid] / 2.0
    };
    Some(m)
}

/// When a resource reaches its limit, if its trend goes on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// The fitted slope, per second.
    pub slope_per_sec: f64,
    /// The fitted line at the last sample.
    pub now_value: f64,
    /// Time from the last sample until the fitted line reaches the limit: `Some(ZERO)` if
    /// it is already there, `None` if it never does (a flat or falling trend) or only
    /// beyond what a `Duration` holds.
    pub eta: Option<Duration>,
    /// The fit's [`Fit::confidence`]: gate alerts on it.
    pub confidence: f64,
}

/// Fits `points` (x = seconds, relative: since the first sample for instance; y = the
/// value) with [`theil_sen`] and projects the line to `limit`. The last sample is the one
/// with the largest x. `None` where the fit is.
///
/// An already reached limit gives `eta = Some(ZERO)` whatever the slope: a full disk that
/// is emptying is still full.
pub fn forecast(points: &[(f64, f64)], limit: f64) -> Option<Forecast> {
    let fit = theil_sen(points)?;
    let last = points
        .iter()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .map(|p| p.0)
        .fold(f64::NEG_INFINITY, f64::max);
    let now_value = fit.slope * last + fit.intercept;
    if !now_value.is_finite() {
        return None;
    }
    let eta = if now_value >= limit {
        Some(Duration::ZERO)
    } else if fit.slope > 0.0 {
        // NaN or ∞ (a NaN or unreachable limit) is refused by `try_from_secs_f64`.
        Duration::try_from_secs_f64((limit - now_value) / fit.slope).ok()
    } else {
        None
    };
    Some(Forecast {
        slope_per_sec: fit.slope,
        now_value,
        eta,
        confidence: fit.confidence,
    })
}

/// How [`Drift`] judges a signal against its baseline. At least one of `ratio` and
/// `increase` must be set for it to ever report; with both, either one exceeded counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftConfig {
    /// The baseline's EWMA weight of a new observation, in `(0, 1]`; small is slow (0.05:
    /// about the last 20 observations). Clamped to `[0, 1]`; NaN is taken as 0 (the first
    /// observation stays the baseline).
    pub alpha: f64,
    /// Multiplicative threshold, for latency: drifting when `value > baseline × ratio`
    /// (for non-negative signals).
    pub ratio: Option<f64>,
    /// Additive threshold, for an error ratio: drifting when `value > baseline + increase`.
    pub increase: Option<f64>,
    /// Values at or below this never drift (a latency of 2 ms against 1 ms is no
    /// incident).
    pub floor: f64,
    /// Observations that only build the baseline before any judgement (at least 1).
    pub warmup: u32,
    /// Consecutive drifting observations before a report (at least 1).
    pub sustain: u32,
}

/// A drift being reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftReport {
    /// The baseline, as learnt before the drift.
    pub baseline: f64,
    /// The observation.
    pub value: f64,
    /// In `[0, 1]`: how far past the threshold, in units of the threshold's own margin
    /// over the baseline: 0.5 just past it, 1 at twice the margin or beyond (1 when the
    /// margin is zero).
    pub confidence: f64,
}

/// The drift of a signal against its own baseline.
///
/// Each observation is a recent value (the caller aggregates: a window's p99, a window's
/// error ratio). The baseline is a slow EWMA that learns only from observations that do
/// not exceed the threshold (every observation during warmup), so neither a spike nor a
/// drift teaches it the bad level: a drift is reported on every observation from the
/// `sustain`-th consecutive one over the threshold, until one falls back under it. A
/// legitimate permanent change of level keeps reporting: the caller acknowledges it by
/// starting a new `Drift`. A slow creep that stays under the threshold is learnt; pair
/// with [`forecast`] for that.
#[derive(Debug, Clone)]
pub struct Drift {
    cfg: DriftConfig,
    baseline: f64,
    seen: u32,
    streak: u32,
}

impl Drift {
    /// A signal with no observation yet.
    pub fn new(cfg: DriftConfig) -> Self {
        let alpha = if cfg.alpha.is_nan() {
            0.0
        } else {
            cfg.alpha.clamp(0.0, 1.0)
        };
        Drift {
            cfg: DriftConfig {
                alpha,
                warmup: cfg.warmup.max(1),
                sustain: cfg.sustain.max(1),
                ..cfg
            },
            baseline: 0.0,
            seen: 0,
            streak: 0,
        }
    }

    /// Takes one observation; a report while the signal has drifted for `sustain`
    /// consecutive observations after warmup. Non-finite values are ignored.
    pub fn observe(&mut self, value: f64) -> Option<DriftReport> {
        if !value.is_finite() {
            return None;
        }
        if self.seen == 0 {
            self.baseline = value;
            self.seen = 1;
            return None;
        }
        let warm = self.seen >= self.cfg.warmup;
        self.seen = self.seen.saturating_add(1);
        if let (true, Some(threshold)) = (warm, self.threshold())
            && value > threshold
            && value > self.cfg.floor
        {
            self.streak = self.streak.saturating_add(1);
            if self.streak < self.cfg.sustain {
                return None;
            }
            let margin = threshold - self.baseline;
            let confidence = if margin > 0.0 {
                ((value - self.baseline) / (2.0 * margin)).clamp(0.0, 1.0)
            } else {
                1.0
            };
            return Some(DriftReport {
                baseline: self.baseline,
                value,
                confidence,
            });
        }
        self.streak = 0;
        let learnt = (1.0 - self.cfg.alpha) * self.baseline + self.cfg.alpha * value;
        if learnt.is_finite() {
            self.baseline = learnt;
        }
        None
    }

    /// The baseline once warmup is over.
    pub fn baseline(&self) -> Option<f64> {
        (self.seen >= self.cfg.warmup).then_some(self.baseline)
    }

    /// The level above which an observation drifts: the lower of the configured
    /// thresholds, `None` if none is set or finite.
    fn threshold(&self) -> Option<f64> {
        let b = self.baseline;
        [
            self.cfg.ratio.map(|r| b * r),
            self.cfg.increase.map(|d| b + d),
        ]
        .into_iter()
        .flatten()
        .filter(|t| t.is_finite())
        .reduce(f64::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exact_line() {
        let points: Vec<_> = (0..10)
            .map(|i| (i as f64 * 10.0, 5.0 + 2.0 * i as f64))
            .collect();
        let fit = theil_sen(&points).unwrap();
        assert_eq!((fit.slope, fit.intercept, fit.confidence), (0.2, 5.0, 1.0));
        // at x = 90 the line is 23; 100 is reached after (100 − 23) / 0.2 = 385 s
        let f = forecast(&points, 100.0).unwrap();
        assert_eq!(f.now_value, 23.0);
        assert_eq!(f.eta, Some(Duration::from_secs(385)));
        assert_eq!(forecast(&points, 20.0).unwrap().eta, Some(Duration::ZERO));
        assert_eq!(forecast(&points, f64::NAN).unwrap().eta, None);
    }

    #[test]
    fn too_few_points_or_no_span() {
        assert_eq!(theil_sen(&[]), None);
        assert_eq!(theil_sen(&[(0.0, 1.0), (1.0, 2.0)]), None);
        assert_eq!(theil_sen(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]), None);
        assert_eq!(
            theil_sen(&[(0.0, 1.0), (f64::NAN, 2.0), (2.0, f64::INFINITY)]),
            None
        );
        // non-finite points are skipped, the rest still fit
        let fit = theil_sen(&[(0.0, 0.0), (f64::NAN, 9.0), (1.0, 1.0), (2.0, 2.0)]).unwrap();
        assert_eq!(fit.slope, 1.0);
    }

    #[test]
    fn subsampling_keeps_first_and_last() {
        let points: Vec<_> = (0..1000).map(|i| (i as f64, i as f64)).collect();
        let s = sample(&points);
        assert_eq!(s.len(), 64);
        assert_eq!((s[0].0, s[63].0), (0.0, 999.0));
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn huge_values_do_not_poison() {
        let points = [
            (0.0, f64::MAX),
            (1.0, -f64::MAX),
            (2.0, f64::MAX),
            (3.0, 0.0),
        ];
        // a fit may or may not exist, but nothing panics and nothing is NaN
        if let Some(fit) = theil_sen(&points) {
            assert!(fit.slope.is_finite() && fit.intercept.is_finite());
        }
        let _ = forecast(&points, 1.0);
    }

    fn latency() -> DriftConfig {
        DriftConfig {
            alpha: 0.1,
            ratio: Some(2.0),
            increase: None,
            floor: 0.010,
            warmup: 5,
            sustain: 3,
        }
    }

    #[test]
    fn drift_after_sustain_and_baseline_frozen() {
        let mut d = Drift::new(latency());
        for _ in 0..5 {
            assert_eq!(d.observe(0.1), None);
        }
        assert_eq!(d.baseline(), Some(0.1));
        assert_eq!(d.observe(0.4), None);
        assert_eq!(
            d.observe(f64::NAN),
            None,
            "ignored, does not break the streak"
        );
        assert_eq!(d.observe(0.4), None);
        let r = d.observe(0.4).unwrap();
        assert_eq!((r.baseline, r.value, r.confidence), (0.1, 0.4, 1.0));
        // just past the threshold (0.2): confidence near one half
        let r = d.observe(0.21).unwrap();
        assert!((r.confidence - 0.55).abs() < 1e-9, "{r:?}");
        assert_eq!(d.baseline(), Some(0.1));
        // back under the threshold: the streak ends and the baseline learns again
        assert_eq!(d.observe(0.1), None);
        assert_eq!(d.observe(0.3), None);
    }

    #[test]
    fn additive_threshold_and_floor() {
        let mut d = Drift::new(DriftConfig {
            alpha: 0.05,
            ratio: None,
            increase: Some(0.02),
            floor: 0.01,
            warmup: 1,
            sustain: 1,
        });
        assert_eq!(d.baseline(), None);
        assert_eq!(d.observe(0.001), None);
        assert_eq!(d.baseline(), Some(0.001));
        let r = d.observe(0.051).unwrap();
        assert!((r.confidence - 1.0).abs() < 1e-9);
        // a ratio of 100× under the floor is no drift
        let mut low = Drift::new(DriftConfig {
            floor: 0.05,
            ratio: Some(2.0),
            ..latency()
        });
        for v in [
            0.0001, 0.0001, 0.0001, 0.0001, 0.0001, 0.01, 0.01, 0.01, 0.01,
        ] {
            assert_eq!(low.observe(v), None);
        }
    }

    #[test]
    fn degenerate_configs_never_panic() {
        let mut d = Drift::new(DriftConfig {
            alpha: f64::NAN,
            ratio: Some(f64::NAN),
            increase: Some(f64::INFINITY),
            floor: f64::NAN,
            warmup: 0,
            sustain: 0,
        });
        for v in [1.0, f64::MAX, -f64::MAX, f64::MIN_POSITIVE, 1e300] {
            assert_eq!(d.observe(v), None);
        }
        assert_eq!(d.baseline(), Some(1.0));
    }
}
