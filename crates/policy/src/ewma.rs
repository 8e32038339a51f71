//! Peak-EWMA latency estimate, the load signal of linkerd2-proxy's (and tower's) P2C
//! balancer.

use std::time::{Duration, Instant};

/// linkerd2-proxy defaults: a fresh endpoint is assumed to answer in 30 ms, and the
/// estimate forgets with a 10 s time constant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EwmaConfig {
    /// Estimate of an endpoint with no samples yet (linkerd2-proxy: 30 ms).
    pub default_rtt: Duration,
    /// Time constant τ of the exponential decay (linkerd2-proxy: 10 s).
    pub decay: Duration,
}

impl Default for EwmaConfig {
    fn default() -> Self {
        EwmaConfig {
            default_rtt: Duration::from_millis(30),
            decay: Duration::from_secs(10),
        }
    }
}

/// Peak-sensitive exponentially weighted moving average of response times, in seconds.
///
/// Semantics (tower `PeakEwma`, which linkerd2-proxy uses):
/// - between samples the estimate decays toward zero, `est(t) = est(at) · e^{-(t-at)/τ}`,
///   so an endpoint that was slow once (or has seen no traffic) is tried again rather than
///   starved (tower decays "with a zero RTT" whenever load is read);
/// - a sample *above* the current estimate replaces it at once (the "peak": a slowing
///   endpoint is avoided immediately);
/// - a sample at or below it pulls the estimate toward the sample with weight
///   `1 - e^{-elapsed/τ}`, `elapsed` being the time since the previous sample:
///   `est ← est(at) · w + rtt · (1 - w)`. The elapsed time is discounted once, by the
///   blend; decaying the stored value first and then blending again (as this type did
///   before) counted it twice.
///
/// Differences from tower, on purpose: reading ([`estimate`](Self::estimate),
/// [`cost`](Self::cost)) is pure (`&self`); tower mutates on every read, which makes its
/// estimate depend on how often the balancer looks at it. An estimator made with
/// [`joining`](Self::joining) takes no peak from its first sample (see there).
///
/// Invariants: the estimate is finite and `>= 0`; it never increases between samples; a
/// sample never moves it past the sample when lowering it. 40 bytes, `Copy`: keep one per
/// endpoint behind the endpoint's `Mutex`.
#[derive(Debug, Clone, Copy)]
pub struct PeakEwma {
    /// Seconds, as of `at`.
    est: f64,
    /// The last sample (or the creation, before the first sample).
    at: Instant,
    decay_s: f64,
    /// The next sample is blended even when above the estimate: a joining endpoint's
    /// first sample (see [`joining`](Self::joining)).
    blend_next: bool,
}

impl PeakEwma {
    /// A new endpoint, estimated at `config.default_rtt` as of `now`.
    pub fn new(config: EwmaConfig, now: Instant) -> Self {
        PeakEwma {
            est: config.default_rtt.as_secs_f64(),
            at: now,
            // A zero decay would make 0/0 at zero elapsed time.
            decay_s: config.decay.as_secs_f64().max(1e-9),
            blend_next: false,
        }
    }

    /// An endpoint joining a balancer, seeded with `config.default_rtt` (its peers' mean),
    /// whose first sample does not set a peak: it is blended like a sample below the
    /// estimate, so the estimate stays near the seed.
    ///
    /// Why: the first response of a fresh replica pays for what later ones do not — the
    /// proxy's connect, the process's first accept, cold caches. As a peak, that one sample
    /// decided the comparison for tens of seconds (τ = 10 s, and lower samples only blend
    /// it down), so a healthy replacement stayed cold (measured: 0 % of traffic for 6 s
    /// after a kill -9). Capping the peak at a multiple of the seed instead was tried and
    /// is not enough: any cap above the balancer's tie band (15 %) still loses every
    /// comparison and only blends down over τ. Ignoring the peak once costs little when
    /// the replica really is slow: its second response sets the peak, and until the first
    /// one arrived there was no sample either way.
    pub fn joining(config: EwmaConfig, now: Instant) -> Self {
        PeakEwma {
            blend_next: true,
            ..Self::new(config, now)
        }
    }

    fn weight(&self, now: Instant) -> f64 {
        (-now.saturating_duration_since(self.at).as_secs_f64() / self.decay_s).exp()
    }

    /// Feeds one response time, measured when the response (head) arrived at `now`.
    pub fn observe(&mut self, rtt: Duration, now: Instant) {
        let w = self.weight(now);
        let current = self.est * w;
        let rtt = rtt.as_secs_f64();
        self.est = if rtt > current && !self.blend_next {
            rtt
        } else {
            self.est * w + rtt * (1.0 - w)
        };
        self.blend_next = false;
        if now > self.at {
            self.at = now;
        }
    }

    /// The estimate in seconds as of `now` (decayed since the last sample).
    pub fn estimate(&self, now: Instant) -> f64 {
        self.est * self.weight(now)
    }

    /// P2C cost: `estimate × (inflight + 1)` (tower `PeakEwma::load`), so an endpoint with
    /// requests outstanding looks proportionally slower. Lower is better.
    pub fn cost(&self, inflight: usize, now: Instant) -> f64 {
        self.estimate(now) * (inflight as f64 + 1.0)
    }

    /// Time since the last sample (or since creation, before the first), as of `now`.
    pub fn idle(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn starts_at_default_and_decays_toward_zero() {
        let t0 = crate::epoch();
        let e = PeakEwma::new(EwmaConfig::default(), t0);
        assert!(close(e.estimate(t0), 0.030));
        // one time constant later: 30 ms × e^-1
        let t = t0 + Duration::from_secs(10);
        assert!(close(e.estimate(t), 0.030 * (-1f64).exp()));
        assert!(close(e.cost(3, t0), 0.120));
    }

    #[test]
    fn peak_replaces_at_once_and_lower_samples_blend() {
        let t0 = crate::epoch();
        let mut e = PeakEwma::new(EwmaConfig::default(), t0);
        e.observe(Duration::from_millis(200), t0);
        assert!(close(e.estimate(t0), 0.200), "peak taken immediately");
        // 10 s later a 10 ms sample blends with w = e^-1: the elapsed time is discounted
        // once, not by a decay and then again by the blend
        let t = t0 + Duration::from_secs(10);
        e.observe(Duration::from_millis(10), t);
        let w = (-1f64).exp();
        let want = 0.200 * w + 0.010 * (1.0 - w);
        assert!(close(e.estimate(t), want), "{} vs {want}", e.estimate(t));
        assert!(e.estimate(t) >= 0.010 && e.estimate(t) <= 0.200);
        // a sample at the same instant as the last one does not move a higher estimate
        let before = e.estimate(t);
        e.observe(Duration::from_millis(1), t);
        assert!(close(e.estimate(t), before));
    }

    #[test]
    fn steady_latency_holds_the_estimate() {
        let t0 = crate::epoch();
        let mut e = PeakEwma::new(EwmaConfig::default(), t0);
        let mut now = t0;
        for _ in 0..1000 {
            now += Duration::from_millis(5);
            e.observe(Duration::from_millis(50), now);
        }
        assert!(close(e.estimate(now), 0.050));
    }

    #[test]
    fn stale_now_neither_panics_nor_rewinds() {
        let t0 = crate::epoch();
        let mut e = PeakEwma::new(EwmaConfig::default(), t0 + Duration::from_secs(5));
        e.observe(Duration::from_millis(40), t0);
        assert!(close(e.estimate(t0 + Duration::from_secs(5)), 0.040));
    }

    #[test]
    fn decays_once_per_sample() {
        // Samples below the estimate pull it toward them as a time-based EWMA: after one
        // time constant of 1 ms-spaced 50 ms samples, e^-1 of the 50 ms excess is left.
        // Decaying twice per sample shed it twice as fast (e^-2, and then a peak).
        let t0 = crate::epoch();
        let mut e = PeakEwma::new(
            EwmaConfig {
                default_rtt: Duration::from_millis(100),
                decay: Duration::from_secs(1),
            },
            t0,
        );
        let mut now = t0;
        for _ in 0..1000 {
            now += Duration::from_millis(1);
            e.observe(Duration::from_millis(50), now);
        }
        let want = 0.050 + 0.050 * (-1f64).exp();
        assert!((e.estimate(now) - want).abs() < 1e-6, "{}", e.estimate(now));
    }

    #[test]
    fn joining_takes_no_peak_from_the_first_sample() {
        let t0 = crate::epoch();
        let seed = EwmaConfig {
            default_rtt: Duration::from_millis(1),
            ..EwmaConfig::default()
        };
        let mut e = PeakEwma::joining(seed, t0);
        // a 20 ms first response (connect + cold process) is blended, not a peak
        let t = t0 + Duration::from_millis(10);
        e.observe(Duration::from_millis(20), t);
        let w = (-0.001f64).exp();
        assert!(close(e.estimate(t), 0.001 * w + 0.020 * (1.0 - w)));
        assert!(e.estimate(t) < 0.0011);
        // a slow replica is still recognised at once: the second peak is taken whole
        e.observe(Duration::from_millis(20), t);
        assert!(close(e.estimate(t), 0.020));
        assert_eq!(e.idle(t + Duration::from_secs(2)), Duration::from_secs(2));
    }
}
