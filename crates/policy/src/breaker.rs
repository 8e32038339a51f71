//! Per-replica circuit breaker: closed → open → half-open (one probe) → closed/open, as in
//! linkerd's failure accrual (closed → open → probation with one probe).

use std::time::{Duration, Instant};

use crate::window::{Ring, later};

/// Trip on the failure ratio over a window, in addition to the consecutive-failure rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureRatio {
    /// Trip when `failures × 100 ≥ percent × requests` (default 50).
    pub percent: u32,
    /// ... and at least this many requests were seen in the window (default 20).
    pub min_requests: u32,
    /// Window, kept in 10 buckets (default 10 s).
    pub window: Duration,
}

impl Default for FailureRatio {
    fn default() -> Self {
        FailureRatio {
            percent: 50,
            min_requests: 20,
            window: Duration::from_secs(10),
        }
    }
}

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Failures in a row that open the breaker (5, Envoy's outlier default; linkerd
    /// uses 7). 0 disables this rule.
    pub consecutive_failures: u32,
    /// Optional ratio rule; off by default (the outlier detector already judges success
    /// rates per replica).
    pub failure_ratio: Option<FailureRatio>,
    /// First cool-down before the probe (5 s). Each further open without a successful
    /// probe in between doubles it ...
    pub base_cooldown: Duration,
    /// ... up to this cap (60 s, linkerd's maximum failure-accrual penalty).
    pub max_cooldown: Duration,
    /// A probe whose outcome was never recorded (cancelled request) is given up after
    /// this long and another probe is allowed (10 s). Prefer [`CircuitBreaker::cancel`].
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_ratio: None,
            base_cooldown: Duration::from_secs(5),
            max_cooldown: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(10),
        }
    }
}

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow; failures are counted.
    Closed,
    /// Requests are rejected until `until`; the first request after it becomes the probe.
    Open {
        /// When the cool-down ends and a probe may go.
        until: Instant,
    },
    /// One probe is out (or may go once its predecessor timed out).
    HalfOpen,
}

/// Permission to send one request. Report its result with
/// [`CircuitBreaker::record`], or hand it back with [`CircuitBreaker::cancel`] if the
/// request was abandoned before the replica answered.
#[must_use = "report the request's result with record() or cancel()"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    /// This request is the half-open probe: its result decides the breaker's state.
    pub probe: bool,
}

/// The breaker refused: fail fast (503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// When a request could next be let through (for `Retry-After`).
    pub retry_after: Duration,
}

/// State changes, for events and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerEvent {
    /// The breaker opened: requests are rejected until `until`.
    Opened {
        /// When the first request may go through again, as the half-open probe.
        until: Instant,
        /// Opens in a row without a successful probe, this one included.
        times: u32,
    },
    /// A probe succeeded: requests flow again and the cool-down starts over.
    Closed,
}

/// A circuit breaker for one replica.
///
/// Invariants (the legal transitions, checked by a property test):
/// `Closed → Open` (a failure completes the run or the ratio), `Open → HalfOpen` (the
/// first [`allow`](Self::allow) at or after `until`; it returns the probe permit),
/// `HalfOpen → Closed` (a success is recorded), `HalfOpen → Open` (a failure is
/// recorded; the cool-down doubles). Nothing else changes the state.
/// - While `Open`, [`allow`](Self::allow) rejects everything before `until`, and
///   results recorded are ignored (they belong to requests let through before it opened).
/// - While `HalfOpen`, at most one probe is out per `probe_timeout`; any recorded result
///   decides (a late result of an earlier request is as good a signal as the probe's).
/// - `opens` counts opens since the last close; the cool-down is
///   `min(base × 2^(opens−1), max)`.
///
/// Memory is fixed (a 10-bucket window only if the ratio rule is on); every call is
/// amortised O(1) and allocation-free. Keep one per replica behind a `Mutex`.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    run: u32,
    opens: u32,
    /// While half-open: when the outstanding probe is given up; `None` = none out.
    probe_deadline: Option<Instant>,
    /// `[failures, requests]`, only with a ratio rule.
    window: Option<Ring<2>>,
}

impl CircuitBreaker {
    /// A closed breaker with no history.
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            config,
            state: BreakerState::Closed,
            run: 0,
            opens: 0,
            probe_deadline: None,
            window: config.failure_ratio.map(|r| Ring::new(r.window, 10)),
        }
    }

    /// The stored state. An `Open` breaker whose `until` has passed stays `Open` until the
    /// next [`allow`](Self::allow) turns it half-open.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Failures in a row while closed.
    pub fn failures(&self) -> u32 {
        self.run
    }

    /// The cool-down the next open would get.
    pub fn next_cooldown(&self) -> Duration {
        let doublings = self.opens.min(31);
        self.config
            .base_cooldown
            .saturating_mul(1 << doublings)
            .min(self.config.max_cooldown)
    }

    /// May a request go to the replica now?
    pub fn allow(&mut self, now: Instant) -> Result<Permit, Rejected> {
        match self.state {
            BreakerState::Closed => Ok(Permit { probe: false }),
            BreakerState::Open { until } => {
                if now >= until {
                    self.state = BreakerState::HalfOpen;
                    self.probe_deadline = Some(later(now, self.config.probe_timeout));
                    Ok(Permit { probe: true })
                } else {
                    Err(Rejected {
                        retry_after: until - now,
                    })
                }
            }
            BreakerState::HalfOpen => match self.probe_deadline {
                Some(deadline) if now < deadline => Err(Rejected {
                    retry_after: deadline - now,
                }),
                _ => {
                    self.probe_deadline = Some(later(now, self.config.probe_timeout));
                    Ok(Permit { probe: true })
                }
            },
        }
    }

    /// The request behind `permit` was abandoned without a result from the replica
    /// (client went away): a probe slot is freed at once.
    pub fn cancel(&mut self, permit: Permit) {
        if permit.probe && self.state == BreakerState::HalfOpen {
            self.probe_deadline = None;
        }
    }

    /// The result of a request let through by [`allow`](Self::allow).
    pub fn record(&mut self, success: bool, now: Instant) -> Option<BreakerEvent> {
        match self.state {
            BreakerState::Open { .. } => None,
            BreakerState::HalfOpen => {
                if success {
                    self.close();
                    Some(BreakerEvent::Closed)
                } else {
                    Some(self.open(now))
                }
            }
            BreakerState::Closed => {
                let ratio_trips = match (&mut self.window, self.config.failure_ratio) {
                    (Some(w), Some(r)) => {
                        let [failures, total] = w.add([u64::from(!success), 1], now);
                        !success
                            && total >= u64::from(r.min_requests.max(1))
                            && failures * 100 >= u64::from(r.percent) * total
                    }
                    _ => false,
                };
                if success {
                    self.run = 0;
                    return None;
                }
                self.run = self.run.saturating_add(1);
                let run_trips = self.config.consecutive_failures > 0
                    && self.run >= self.config.consecutive_failures;
                (run_trips || ratio_trips).then(|| self.open(now))
            }
        }
    }

    fn open(&mut self, now: Instant) -> BreakerEvent {
        let until = later(now, self.next_cooldown());
        self.opens = self.opens.saturating_add(1);
        self.state = BreakerState::Open { until };
        self.probe_deadline = None;
        self.run = 0;
        BreakerEvent::Opened {
            until,
            times: self.opens,
        }
    }

    fn close(&mut self) {
        self.state = BreakerState::Closed;
        self.opens = 0;
        self.run = 0;
        self.probe_deadline = None;
        if let Some(w) = &mut self.window {
            w.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn fail(b: &mut CircuitBreaker, n: usize, now: Instant) -> Option<BreakerEvent> {
        (0..n).map(|_| b.record(false, now)).last().flatten()
    }

    #[test]
    fn opens_after_five_failures_and_probes_after_cooldown() {
        let t0 = crate::epoch();
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        assert_eq!(b.allow(t0), Ok(Permit { probe: false }));
        assert_eq!(fail(&mut b, 4, t0), None);
        assert_eq!(b.failures(), 4);
        assert_eq!(
            b.record(false, t0),
            Some(BreakerEvent::Opened {
                until: t0 + 5 * S,
                times: 1
            })
        );
        assert_eq!(b.state(), BreakerState::Open { until: t0 + 5 * S });
        assert_eq!(b.allow(t0 + S), Err(Rejected { retry_after: 4 * S }));
        assert_eq!(
            b.record(true, t0 + S),
            None,
            "late results ignored while open"
        );
        assert_eq!(b.allow(t0 + 5 * S), Ok(Permit { probe: true }));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(
            b.allow(t0 + 5 * S),
            Err(Rejected {
                retry_after: 10 * S
            }),
            "one probe"
        );
        assert_eq!(b.record(true, t0 + 6 * S), Some(BreakerEvent::Closed));
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.next_cooldown(), 5 * S, "a close resets the growth");
    }

    #[test]
    fn failed_probes_double_the_cooldown_up_to_the_cap() {
        let t0 = crate::epoch();
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        fail(&mut b, 5, t0);
        let mut now = t0 + 5 * S;
        let mut cooldowns = vec![];
        for _ in 0..6 {
            assert!(b.allow(now).unwrap().probe);
            match b.record(false, now) {
                Some(BreakerEvent::Opened { until, .. }) => {
                    cooldowns.push((until - now).as_secs());
                    now = until;
                }
                e => panic!("{e:?}"),
            }
        }
        assert_eq!(cooldowns, vec![10, 20, 40, 60, 60, 60]);
    }

    #[test]
    fn success_resets_the_run() {
        let t0 = crate::epoch();
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        fail(&mut b, 4, t0);
        b.record(true, t0);
        assert_eq!(fail(&mut b, 4, t0), None);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn cancelled_or_lost_probe_frees_the_slot() {
        let t0 = crate::epoch();
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        fail(&mut b, 5, t0);
        let p = b.allow(t0 + 5 * S).unwrap();
        assert!(b.allow(t0 + 6 * S).is_err());
        b.cancel(p);
        let p2 = b.allow(t0 + 6 * S).unwrap();
        assert!(p2.probe);
        assert!(b.allow(t0 + 15 * S).is_err());
        assert!(
            b.allow(t0 + 16 * S).unwrap().probe,
            "lost probe given up after 10 s"
        );
        // cancelling a non-probe permit changes nothing
        b.cancel(Permit { probe: false });
        assert!(b.allow(t0 + 16 * S).is_err());
    }

    #[test]
    fn failure_ratio_trips_without_a_run() {
        let t0 = crate::epoch();
        let mut b = CircuitBreaker::new(BreakerConfig {
            failure_ratio: Some(FailureRatio::default()),
            ..Default::default()
        });
        // alternate ok/fail: 50 % failures; trips at the 20th request (a failure)
        let mut n = 0u32;
        let ev = loop {
            let ok = n.is_multiple_of(2);
            let now = t0 + Duration::from_millis(u64::from(n) * 100);
            n += 1;
            if let Some(e) = b.record(ok, now) {
                break e;
            }
        };
        assert_eq!(n, 20);
        assert!(matches!(ev, BreakerEvent::Opened { times: 1, .. }));
    }
}
