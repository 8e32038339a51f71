//! The proxy's request outcomes per service and revision, for the analysis: cumulative
//! counts and a latency histogram per revision; a window is the difference of two
//! readings.
//!
//! Invariant: a service costs one atomic load per request unless a rollout arms it;
//! memory is [`BUCKETS`] counters per armed revision, and a revision's counts are dropped
//! when its rollout ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use bus::{OutcomeSink, RequestOutcome};
use policy::rollout::Sample;

use policy::{LATENCY_BUCKETS as BUCKETS, latency_bucket as bucket, latency_percentile};

/// One revision's counts since it was armed.
#[derive(Debug, Clone, PartialEq)]
pub struct Counts {
    total: u64,
    failed: u64,
    latency: Box<[u64; BUCKETS]>,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            total: 0,
            failed: 0,
            latency: Box::new([0; BUCKETS]),
        }
    }
}

impl Counts {
    /// What happened between `earlier` and `self`, with the latency at `percentile`
    /// (the top of its bucket, so at most ~19 % high).
    pub fn since(&self, earlier: &Counts, percentile: f64) -> Sample {
        let total = self.total.saturating_sub(earlier.total);
        let failed = self.failed.saturating_sub(earlier.failed);
        let diff: Vec<u64> = (0..BUCKETS)
            .map(|i| self.latency[i].saturating_sub(earlier.latency[i]))
            .collect();
        Sample {
            total,
            failed,
            latency: latency_percentile(&diff, percentile),
        }
    }
}

/// Outcomes of the services under rollout, by revision.
#[derive(Default)]
pub struct Versions {
    any: AtomicBool,
    /// Armed services and their revisions' counts.
    services: RwLock<HashMap<String, Mutex<HashMap<u32, Counts>>>>,
}

impl Versions {
    /// Starts counting `service`'s outcomes by revision (afresh).
    pub fn arm(&self, service: &str) {
        let mut s = self.services.write().unwrap_or_else(|e| e.into_inner());
        s.insert(service.to_owned(), Mutex::new(HashMap::new()));
        self.any.store(true, Ordering::Release);
    }

    /// Stops counting `service` and forgets its counts.
    pub fn disarm(&self, service: &str) {
        let mut s = self.services.write().unwrap_or_else(|e| e.into_inner());
        s.remove(service);
        self.any.store(!s.is_empty(), Ordering::Release);
    }

    /// `revision`'s counts so far.
    pub fn read(&self, service: &str, revision: u32) -> Counts {
        let s = self.services.read().unwrap_or_else(|e| e.into_inner());
        s.get(service)
            .and_then(|m| {
                m.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&revision)
                    .cloned()
            })
            .unwrap_or_default()
    }
}

impl OutcomeSink for Versions {
    fn record(&self, o: &RequestOutcome<'_>) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let Some(rev) = o.revision else {
            return;
        };
        let s = self.services.read().unwrap_or_else(|e| e.into_inner());
        let Some(m) = s.get(o.service) else {
            return;
        };
        let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
        let c = m.entry(rev).or_default();
        c.total += 1;
        c.failed += u64::from(o.status >= 500);
        c.latency[bucket(o.duration)] += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn out(service: &str, rev: Option<u32>, status: u16, ms: u64) -> RequestOutcome<'_> {
        RequestOutcome {
            service,
            status,
            duration: Duration::from_millis(ms),
            local: None,
            revision: rev,
        }
    }

    #[test]
    fn counts_by_revision_only_while_armed_and_windows_are_differences() {
        let v = Versions::default();
        v.record(&out("web", Some(1), 200, 5));
        assert_eq!(v.read("web", 1).total, 0, "not armed");
        v.arm("web");
        for _ in 0..90 {
            v.record(&out("web", Some(1), 200, 5));
        }
        let start = v.read("web", 2);
        for i in 0..10 {
            v.record(&out("web", Some(2), if i == 0 { 500 } else { 200 }, 150));
        }
        v.record(&out("web", None, 503, 1));
        v.record(&out("api", Some(2), 500, 1));
        let s = v.read("web", 2).since(&start, 99.0);
        assert_eq!((s.total, s.failed), (10, 1));
        let p = s.latency.expect("latency");
        assert!(
            p >= Duration::from_millis(150) && p < Duration::from_millis(180),
            "{p:?}"
        );
        assert_eq!(v.read("web", 1).since(&Counts::default(), 50.0).total, 90);
        v.disarm("web");
        assert_eq!(v.read("web", 1).total, 0);
    }
}
