//! The proxy's request outcomes per service, for metric triggers, drift detection and
//! autoscaling: cumulative counters and a latency histogram per service; a window is the
//! difference of two readings.
//!
//! Invariant: a request costs a read lock (uncontended), one hash lookup and three atomic
//! increments; memory is [`LATENCY_BUCKETS`] counters per service of the stack.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bus::{OutcomeSink, RequestOutcome};
use policy::{LATENCY_BUCKETS, latency_bucket, latency_percentile};

struct Counters {
    total: AtomicU64,
    failed: AtomicU64,
    latency: Box<[AtomicU64; LATENCY_BUCKETS]>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            total: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latency: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

/// Request outcomes of every service, counted since bulwark started.
#[derive(Default)]
pub struct Measures {
    services: RwLock<HashMap<String, Counters>>,
}

/// One reading of a service's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    at: Instant,
    total: u64,
    failed: u64,
    latency: Vec<u64>,
}

/// What happened between two readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Requests per second.
    pub rate: f64,
    /// Percent of requests answered with a 5xx.
    pub error_percent: f64,
    /// The p99 latency, if any request finished.
    pub p99: Option<Duration>,
    /// Requests in the window.
    pub requests: u64,
}

impl Measures {
    /// Counts the outcomes of these services from now on (others are ignored); a reload
    /// adds the new ones.
    pub fn track<'a>(&self, services: impl IntoIterator<Item = &'a str>) {
        let mut map = self.services.write().unwrap_or_else(|e| e.into_inner());
        for s in services {
            map.entry(s.to_owned()).or_default();
        }
    }

    /// The service's counters now (`None`: not tracked).
    pub fn read(&self, service: &str, at: Instant) -> Option<Reading> {
        let map = self.services.read().unwrap_or_else(|e| e.into_inner());
        let c = map.get(service)?;
        Some(Reading {
            at,
            total: c.total.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            latency: c
                .latency
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        })
    }
}

impl Reading {
    /// Requests counted since bulwark started.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Of which answered 5xx.
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// Their latencies, by `policy::latency_bucket`.
    pub fn latency(&self) -> &[u64] {
        &self.latency
    }

    /// What happened between `earlier` and this reading.
    pub fn since(&self, earlier: &Reading) -> Window {
        let secs = self
            .at
            .saturating_duration_since(earlier.at)
            .as_secs_f64()
            .max(1e-3);
        let requests = self.total.saturating_sub(earlier.total);
        let failed = self.failed.saturating_sub(earlier.failed);
        let diff: Vec<u64> = self
            .latency
            .iter()
            .zip(&earlier.latency)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        Window {
            rate: requests as f64 / secs,
            error_percent: if requests == 0 {
                0.0
            } else {
                failed as f64 * 100.0 / requests as f64
            },
            p99: latency_percentile(&diff, 99.0),
            requests,
        }
    }
}

impl OutcomeSink for Measures {
    fn record(&self, o: &RequestOutcome<'_>) {
        let map = self.services.read().unwrap_or_else(|e| e.into_inner());
        let Some(c) = map.get(o.service) else {
            return;
        };
        c.total.fetch_add(1, Ordering::Relaxed);
        if o.status >= 500 {
            c.failed.fetch_add(1, Ordering::Relaxed);
        }
        c.latency[latency_bucket(o.duration)].fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(service: &str, status: u16, ms: u64) -> RequestOutcome<'_> {
        RequestOutcome {
            service,
            status,
            duration: Duration::from_millis(ms),
            local: None,
            revision: None,
        }
    }

    #[test]
    fn a_window_gives_rate_errors_and_p99_of_what_happened_between_readings() {
        let m = Measures::default();
        m.track(["web"]);
        let t0 = Instant::now();
        m.record(&outcome("web", 200, 5));
        let first = m.read("web", t0).unwrap();
        for i in 0..100 {
            m.record(&outcome("web", if i < 10 { 503 } else { 200 }, 10));
        }
        m.record(&outcome("other", 500, 1));
        let w = m
            .read("web", t0 + Duration::from_secs(2))
            .unwrap()
            .since(&first);
        assert_eq!(w.requests, 100);
        assert!((w.rate - 50.0).abs() < 1e-9);
        assert!((w.error_percent - 10.0).abs() < 1e-9);
        let p99 = w.p99.unwrap();
        assert!(p99 >= Duration::from_millis(10) && p99 < Duration::from_millis(13));
        assert!(m.read("other", t0).is_none());
    }
}
