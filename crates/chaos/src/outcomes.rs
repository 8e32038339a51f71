//! The proxy's request outcomes per service, kept per second for the last few minutes:
//! what `error-ratio` and `latency` probes judge.
//!
//! Invariant: fixed memory per service ([`SECONDS`] buckets of [`BUCKETS`] counters), O(1)
//! work per request under a per-service mutex, and only for services an experiment's probe
//! judges ([`Outcomes::arm`]): otherwise a request costs one atomic load. Services unknown at
//! start are not kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bus::{OutcomeSink, RequestOutcome};

/// How far back a probe can look: windows are capped at this.
pub const SECONDS: usize = 300;
use policy::{LATENCY_BUCKETS as BUCKETS, latency_bucket as bucket, latency_percentile};

#[derive(Clone, Copy)]
struct Second {
    /// Which second since `origin` this bucket holds (stale when older).
    at: u64,
    total: u32,
    failed: u32,
    latency: [u32; BUCKETS],
}

const EMPTY: Second = Second {
    at: u64::MAX,
    total: 0,
    failed: 0,
    latency: [0; BUCKETS],
};

/// Outcomes of some services, by second.
pub struct Outcomes {
    origin: Instant,
    /// Some service is armed.
    any: AtomicBool,
    services: HashMap<String, Ring>,
}

struct Ring {
    armed: AtomicBool,
    seconds: Mutex<Box<[Second; SECONDS]>>,
}

/// A window's counts.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Tally {
    /// Requests answered.
    pub total: u64,
    /// Of which failed: 5xx (bulwark's own 502/503/504 included).
    pub failed: u64,
}

impl Tally {
    /// `failed / total`; 0 without requests.
    pub fn ratio(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.failed as f64 / self.total as f64
        }
    }
}

impl Outcomes {
    /// Keeps outcomes of `services`.
    pub fn new<'a>(services: impl IntoIterator<Item = &'a str>) -> Outcomes {
        Outcomes {
            origin: Instant::now(),
            any: AtomicBool::new(false),
            services: services
                .into_iter()
                .map(|s| {
                    let ring = Ring {
                        armed: AtomicBool::new(false),
                        seconds: Mutex::new(Box::new([EMPTY; SECONDS])),
                    };
                    (s.to_owned(), ring)
                })
                .collect(),
        }
    }

    /// Starts keeping `service`'s outcomes (for good).
    pub fn arm(&self, service: &str) {
        if let Some(r) = self.services.get(service) {
            r.armed.store(true, Ordering::Release);
            self.any.store(true, Ordering::Release);
        }
    }

    /// Arms the services that the probes of `experiments` judge by their outcomes.
    pub fn arm_for(&self, experiments: &[spec::Experiment]) {
        for p in experiments.iter().flat_map(|e| &e.steady_state) {
            if matches!(
                p.check,
                spec::SteadyCheck::ErrorRatio { .. } | spec::SteadyCheck::Latency { .. }
            ) {
                self.arm(&p.service);
            }
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    /// Records one outcome at `now`.
    pub fn add(&self, service: &str, status: u16, duration: Duration, now: Instant) {
        let Some(ring) = self.services.get(service) else {
            return;
        };
        let at = self.second(now);
        let mut ring = ring.seconds.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut ring[(at % SECONDS as u64) as usize];
        if slot.at != at {
            *slot = Second { at, ..EMPTY };
        }
        slot.total = slot.total.saturating_add(1);
        slot.failed = slot.failed.saturating_add(u32::from(status >= 500));
        let b = &mut slot.latency[bucket(duration)];
        *b = b.saturating_add(1);
    }

    /// Sums the seconds of `window` (at most [`SECONDS`]) up to `now` with `f`.
    fn fold<T>(
        &self,
        service: &str,
        window: Duration,
        now: Instant,
        mut f: impl FnMut(&Second) -> T,
    ) -> Option<()> {
        let ring = self.services.get(service)?;
        let now = self.second(now);
        let span = window.as_secs().clamp(1, SECONDS as u64);
        let ring = ring.seconds.lock().unwrap_or_else(|e| e.into_inner());
        for s in ring.iter().filter(|s| s.at <= now && now - s.at < span) {
            f(s);
        }
        Some(())
    }

    /// Requests and failures of `service` over the last `window`.
    pub fn tally(&self, service: &str, window: Duration, now: Instant) -> Tally {
        let mut t = Tally::default();
        self.fold(service, window, now, |s| {
            t.total += u64::from(s.total);
            t.failed += u64::from(s.failed);
        });
        t
    }

    /// The `percentile` (0-100] of request durations over the last `window`, an upper
    /// bound within ~19 %; `None` without requests.
    pub fn percentile(
        &self,
        service: &str,
        window: Duration,
        percentile: f64,
        now: Instant,
    ) -> Option<Duration> {
        let mut counts = [0u64; BUCKETS];
        self.fold(service, window, now, |s| {
            for (c, n) in counts.iter_mut().zip(s.latency) {
                *c += u64::from(n);
            }
        })?;
        latency_percentile(&counts, percentile)
    }
}

impl OutcomeSink for Outcomes {
    fn record(&self, o: &RequestOutcome<'_>) {
        if !self.any.load(Ordering::Relaxed) {
            return;
        }
        if self
            .services
            .get(o.service)
            .is_some_and(|r| r.armed.load(Ordering::Relaxed))
        {
            self.add(o.service, o.status, o.duration, Instant::now());
        }
    }
}

/// Passes each outcome to both sinks.
pub struct Tee(
    pub std::sync::Arc<dyn OutcomeSink>,
    pub std::sync::Arc<dyn OutcomeSink>,
);

impl OutcomeSink for Tee {
    fn record(&self, o: &RequestOutcome<'_>) {
        self.0.record(o);
        self.1.record(o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_percentiles_over_a_sliding_window() {
        let o = Outcomes::new(["web"]);
        let t0 = o.origin;
        for i in 0..100u64 {
            let status = if i % 10 == 0 { 503 } else { 200 };
            o.add(
                "web",
                status,
                Duration::from_millis(i + 1),
                t0 + Duration::from_millis(i * 10),
            );
        }
        o.add("other", 500, Duration::ZERO, t0);
        let now = t0 + Duration::from_secs(1);
        let t = o.tally("web", Duration::from_secs(10), now);
        assert_eq!((t.total, t.failed), (100, 10));
        let p99 = o
            .percentile("web", Duration::from_secs(10), 99.0, now)
            .unwrap();
        assert!(
            p99 >= Duration::from_millis(99) && p99 < Duration::from_millis(125),
            "{p99:?}"
        );
        let p50 = o
            .percentile("web", Duration::from_secs(10), 50.0, now)
            .unwrap();
        assert!(
            p50 >= Duration::from_millis(50) && p50 < Duration::from_millis(62),
            "{p50:?}"
        );
        // Ten seconds later the window holds nothing.
        let later = t0 + Duration::from_secs(12);
        assert_eq!(
            o.tally("web", Duration::from_secs(10), later),
            Tally::default()
        );
        assert_eq!(
            o.percentile("web", Duration::from_secs(10), 99.0, later),
            None
        );
        // A lap of the ring later, old seconds are not mistaken for new ones.
        let lap = t0 + Duration::from_secs(SECONDS as u64);
        assert_eq!(o.tally("web", Duration::from_secs(1), lap).total, 0);
    }

    #[test]
    fn the_sink_keeps_only_armed_services() {
        let o = Outcomes::new(["web"]);
        let t0 = o.origin;
        // Not armed: the sink keeps nothing.
        let seen = |o: &Outcomes| {
            o.tally("web", Duration::from_secs(10), t0 + Duration::from_secs(1))
                .total
        };
        let before = seen(&o);
        let outcome = RequestOutcome {
            service: "web",
            status: 200,
            duration: Duration::ZERO,
            local: None,
            revision: None,
        };
        o.record(&outcome);
        assert_eq!(seen(&o), before);
        o.arm("web");
        o.record(&outcome);
        assert_eq!(seen(&o), before + 1);
    }
}
