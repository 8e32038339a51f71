//! Bulkhead accounting: how many requests may run, wait, or must be refused. The proxy
//! counts and does the waiting (tokio); this only decides.

use std::time::Duration;

/// What to do with an arriving request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Run it now.
    Now,
    /// Wait for a slot, at most `queue_timeout`, then fail with 503.
    Queue,
    /// Refuse at once (503): running and waiting are both full.
    Reject,
}

/// Limits for one bulkhead (per service or per replica).
///
/// Defaults: Envoy's circuit-breaker thresholds, `max_requests` 1024 and
/// `max_pending_requests` 1024; queue timeout 1 s (HAProxy's `timeout queue` falls back to
/// `timeout connect`, typically seconds; failing fast at 1 s leaves the client time to
/// retry elsewhere).
///
/// Invariant: `admit` is `Now` only if `inflight < max_inflight` and nobody is queued (an
/// arrival never overtakes a waiter), `Queue` only if `queued < max_queue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyLimit {
    /// How many requests may run at once.
    pub max_inflight: usize,
    /// 0 = no queue: refuse as soon as `max_inflight` are running.
    pub max_queue: usize,
    /// How long a queued request waits for a slot before it is refused.
    pub queue_timeout: Duration,
}

impl Default for ConcurrencyLimit {
    fn default() -> Self {
        ConcurrencyLimit {
            max_inflight: 1024,
            max_queue: 1024,
            queue_timeout: Duration::from_secs(1),
        }
    }
}

impl ConcurrencyLimit {
    /// Decision for a request arriving while `inflight` run and `queued` wait.
    pub fn admit(&self, inflight: usize, queued: usize) -> Admit {
        if inflight < self.max_inflight && queued == 0 {
            Admit::Now
        } else if queued < self.max_queue {
            Admit::Queue
        } else {
            Admit::Reject
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_then_queues_then_rejects() {
        let l = ConcurrencyLimit {
            max_inflight: 2,
            max_queue: 1,
            queue_timeout: Duration::from_millis(100),
        };
        assert_eq!(l.admit(0, 0), Admit::Now);
        assert_eq!(l.admit(1, 0), Admit::Now);
        assert_eq!(l.admit(2, 0), Admit::Queue);
        assert_eq!(l.admit(2, 1), Admit::Reject);
        assert_eq!(
            l.admit(1, 1),
            Admit::Reject,
            "no overtaking, and the queue is full"
        );
        let no_queue = ConcurrencyLimit { max_queue: 0, ..l };
        assert_eq!(no_queue.admit(2, 0), Admit::Reject);
        assert_eq!(ConcurrencyLimit::default().admit(1023, 0), Admit::Now);
    }
}
