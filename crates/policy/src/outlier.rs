//! Passive outlier detection (Envoy outlier detection, linkerd failure accrual) over the
//! replicas of one service.

use std::time::{Duration, Instant};

use crate::window::{Ring, later};

/// What one request to a replica came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Any response that is not a 5xx (4xx is the client's problem, not the replica's).
    Success,
    /// A 5xx response from the replica. 502/503/504 also count as gateway errors.
    Status5xx(u16),
    /// Connect failure, connection reset, or a 502/503/504: the replica is unreachable or
    /// overloaded. Counts toward both the 5xx and the gateway-error runs (Envoy maps
    /// connect failures to 503 when local-origin errors are not split out).
    GatewayError,
    /// The proxy's own per-try timeout fired. Counts like a gateway error (Envoy: 504).
    LocalTimeout,
}

impl Outcome {
    /// Classifies a response status: 502–504 → `GatewayError`, other 5xx → `Status5xx`,
    /// everything else → `Success`.
    pub fn from_status(status: u16) -> Self {
        match status {
            502..=504 => Outcome::GatewayError,
            500..=599 => Outcome::Status5xx(status),
            _ => Outcome::Success,
        }
    }

    /// Whether this outcome counts as a success for outlier detection.
    pub fn is_success(self) -> bool {
        self == Outcome::Success
    }

    fn is_gateway(self) -> bool {
        matches!(
            self,
            Outcome::GatewayError | Outcome::LocalTimeout | Outcome::Status5xx(502..=504)
        )
    }
}

/// Identifies a replica inside one [`OutlierDetector`]: a slot index plus a generation
/// that changes whenever the slot is reused.
///
/// Invariant: an id stays valid until [`OutlierDetector::remove`]; afterwards every call
/// with it is a no-op, so outcomes of requests still in flight to a replica that left are
/// never attributed to the replica that took its slot. 8 bytes, `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplicaId {
    index: u32,
    generation: u32,
}

impl ReplicaId {
    /// Slot index: small and dense (reused after removal), handy for the proxy's own tables.
    pub fn index(self) -> u32 {
        self.index
    }

    /// Changes every time the slot is reused, so an old id never reaches a new replica.
    pub fn generation(self) -> u32 {
        self.generation
    }
}

/// Why a replica was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectReason {
    /// `consecutive_5xx` 5xx responses in a row (Envoy `consecutive_5xx`).
    Consecutive5xx,
    /// `consecutive_gateway_errors` gateway errors in a row (Envoy
    /// `consecutive_gateway_failure`).
    ConsecutiveGatewayErrors,
    /// Success rate over the window below `success_rate_percent`.
    SuccessRate,
    /// The single re-admission probe failed (linkerd probation).
    FailedProbe,
}

/// A transition worth publishing on the event bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutlierEvent {
    /// A replica was taken out of rotation.
    Ejected {
        /// The replica taken out.
        replica: ReplicaId,
        /// When it may be probed for re-admission.
        until: Instant,
        /// The rule that ejected it.
        reason: EjectReason,
        /// How many times in a row (after decay) it has been ejected, this one included.
        times: u32,
    },
    /// Back in rotation: its probe succeeded, or it was re-admitted early so that an
    /// ejection does not leave the service without a healthy replica or over
    /// `max_ejection_percent` after another replica left.
    Readmitted {
        /// The replica back in rotation.
        replica: ReplicaId,
    },
}

/// A replica's standing as seen by the detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutlierState {
    /// In rotation.
    Active,
    /// Out of rotation until `until`; then the next [`OutlierDetector::try_admit`] lets
    /// one probe request through.
    Ejected {
        /// When the ejection ends.
        until: Instant,
    },
    /// One probe request is out; its outcome re-admits or re-ejects the replica.
    Probing,
}

/// Outlier detection settings. All percentages are integers `0..=100`.
///
/// Defaults: detection from Envoy (5 consecutive 5xx / gateway errors, 10 s interval,
/// panic threshold 50 %), penalties from linkerd (1 s base up to 1 min, re-admission
/// through one probe), because bulwark's replicas restart in seconds and Envoy's 30 s base
/// would keep a recovered replica idle for far longer than it was broken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierConfig {
    /// 5xx responses in a row that eject (Envoy `consecutive_5xx`: 5). 0 disables.
    pub consecutive_5xx: u32,
    /// Gateway errors in a row that eject (Envoy `consecutive_gateway_failure`: 5; Envoy
    /// ships it with 0 % enforcement, we enforce it). 0 disables.
    pub consecutive_gateway_errors: u32,
    /// Eject when the success rate over `success_rate_window` is below this (80 %).
    /// Envoy compares against the cluster mean − 1.9σ; a fixed floor is simpler to reason
    /// about and `max_ejection_percent` bounds the damage when every replica degrades
    /// together. 0 disables.
    pub success_rate_percent: u32,
    /// Fewest requests in the window before the success rate is judged (20; Envoy's
    /// `success_rate_request_volume` is 100 per 10 s, too many for small services).
    pub success_rate_min_requests: u32,
    /// Success-rate window (Envoy `interval`: 10 s), in 10 buckets.
    pub success_rate_window: Duration,
    /// First ejection (linkerd: 1 s; Envoy `base_ejection_time`: 30 s). The n-th ejection
    /// in a row lasts `n × base` (Envoy), capped by `max_ejection`.
    pub base_ejection: Duration,
    /// Cap (linkerd: 1 min; Envoy `max_ejection_time`: 300 s).
    pub max_ejection: Duration,
    /// Downward jitter: an ejection lasts `d × (1 − jitter × rand01)`, so replicas ejected
    /// together are probed apart (0.2, like the supervisor's restart backoff).
    pub jitter: f64,
    /// Each `decay_interval` spent healthy forgives one past ejection (Envoy decrements its
    /// ejection multiplier once per `interval`: 10 s).
    pub decay_interval: Duration,
    /// Never more than this share of the replicas ejected at once (50 %; Envoy: 10 %, but
    /// 10 % of a 3-replica service is nobody). With 50 % any service of ≥ 2 replicas can
    /// lose one.
    pub max_ejection_percent: u32,
    /// Below this share of healthy replicas [`OutlierDetector::panic`] says to spread
    /// traffic over all of them (Envoy `healthy_panic_threshold`: 50 %).
    pub panic_threshold_percent: u32,
    /// A probe with no recorded outcome after this long (request cancelled, outcome lost)
    /// is given up and another probe is allowed (10 s).
    pub probe_timeout: Duration,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_5xx: 5,
            consecutive_gateway_errors: 5,
            success_rate_percent: 80,
            success_rate_min_requests: 20,
            success_rate_window: Duration::from_secs(10),
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(60),
            jitter: 0.2,
            decay_interval: Duration::from_secs(10),
            max_ejection_percent: 50,
            panic_threshold_percent: 50,
            probe_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Active,
    Ejected {
        until: Instant,
    },
    /// A probe is out; another may go once `deadline` passes.
    Probing {
        deadline: Instant,
    },
}

#[derive(Debug, Clone)]
struct Tracker {
    state: State,
    /// Not ready = failing the supervisor's health checks: a member, not healthy, not
    /// routed to outside panic mode, and not judged by its outcomes.
    ready: bool,
    run_5xx: u32,
    run_gateway: u32,
    /// `[successes, requests]` over `success_rate_window`.
    window: Ring<2>,
    times_ejected: u32,
    /// When it last entered `Active`; the ejection count decays from there.
    active_since: Instant,
}

impl Tracker {
    fn healthy(&self) -> bool {
        self.ready && self.state == State::Active
    }

    fn ejected(&self) -> bool {
        self.state != State::Active
    }

    fn reset_counters(&mut self) {
        self.run_5xx = 0;
        self.run_gateway = 0;
        self.window.clear();
    }
}

#[derive(Debug, Clone)]
struct Slot {
    generation: u32,
    tracker: Option<Tracker>,
}

/// Outlier detector for one service's replica set.
///
/// Invariants (checked by property tests):
/// - `members` / `ejected` / `healthy` always equal the number of replicas present /
///   `Ejected` or `Probing` / `Active` and ready, kept incrementally so that every call is
///   O(1) (membership changes O(members) at worst);
/// - an ejection happens only while at least two replicas are healthy, so **an ejection
///   never takes out the last healthy replica**;
/// - an ejection happens only if afterwards `ejected × 100 ≤ max_ejection_percent ×
///   members`; when a replica leaves or stops being ready and this bound, or "some replica
///   is healthy while one could be re-admitted", would break, the ejected replica whose
///   penalty ends first is re-admitted at once (a [`OutlierEvent::Readmitted`] is
///   returned). So at every moment both bounds hold;
/// - an ejected replica receives at most one request (the probe) per `probe_timeout`
///   until its probe succeeds; outcomes arriving while it is `Ejected` belong to requests
///   sent before the ejection and are ignored.
///
/// Memory: one slot (≈ 300 bytes, including a 10-bucket window) per replica slot ever
/// used. Hot calls ([`record`](Self::record), [`try_admit`](Self::try_admit),
/// [`panic`](Self::panic)) neither allocate nor scan; keep the detector behind one
/// `Mutex` per service.
#[derive(Debug, Clone)]
pub struct OutlierDetector {
    config: OutlierConfig,
    slots: Vec<Slot>,
    free: Vec<u32>,
    members: u32,
    ejected: u32,
    healthy: u32,
}

impl OutlierDetector {
    /// Percentages above 100 are treated as 100.
    pub fn new(config: OutlierConfig) -> Self {
        let mut config = config;
        config.max_ejection_percent = config.max_ejection_percent.min(100);
        config.panic_threshold_percent = config.panic_threshold_percent.min(100);
        config.success_rate_percent = config.success_rate_percent.min(100);
        OutlierDetector {
            config,
            slots: Vec::new(),
            free: Vec::new(),
            members: 0,
            ejected: 0,
            healthy: 0,
        }
    }

    /// The settings this detector was built with.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// A replica joins, ready and in rotation.
    pub fn add(&mut self, now: Instant) -> ReplicaId {
        let tracker = Tracker {
            state: State::Active,
            ready: true,
            run_5xx: 0,
            run_gateway: 0,
            window: Ring::new(self.config.success_rate_window, 10),
            times_ejected: 0,
            active_since: now,
        };
        self.members += 1;
        self.healthy += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.tracker = Some(tracker);
            ReplicaId {
                index,
                generation: slot.generation,
            }
        } else {
            self.slots.push(Slot {
                generation: 0,
                tracker: Some(tracker),
            });
            ReplicaId {
                index: (self.slots.len() - 1) as u32,
                generation: 0,
            }
        }
    }

    /// A replica leaves. Its id becomes stale. May re-admit another replica to keep the
    /// bounds (see the type's invariants).
    pub fn remove(&mut self, id: ReplicaId, now: Instant) -> Option<OutlierEvent> {
        let slot = self.slot_mut(id)?;
        let t = slot.tracker.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        self.members -= 1;
        if t.ejected() {
            self.ejected -= 1;
        }
        if t.healthy() {
            self.healthy -= 1;
        }
        self.repair(now)
    }

    /// The supervisor's readiness for the replica (health checks). A replica that is not
    /// ready counts as a member but not as healthy; its outcomes are ignored. May re-admit
    /// another replica if this one was the last healthy one.
    pub fn set_ready(&mut self, id: ReplicaId, ready: bool, now: Instant) -> Option<OutlierEvent> {
        let t = self.tracker_mut(id)?;
        if t.ready == ready {
            return None;
        }
        let was = t.healthy();
        t.ready = ready;
        let is = t.healthy();
        match (was, is) {
            (false, true) => self.healthy += 1,
            (true, false) => self.healthy -= 1,
            _ => {}
        }
        self.repair(now)
    }

    /// Feeds the outcome of one request to `id`, finished at `now`. `rand01` in `[0, 1)`
    /// jitters the ejection time if this outcome ejects.
    pub fn record(
        &mut self,
        id: ReplicaId,
        outcome: Outcome,
        now: Instant,
        rand01: f64,
    ) -> Option<OutlierEvent> {
        let c = self.config;
        let t = self.tracker_mut(id)?;
        if !t.ready {
            return None;
        }
        match t.state {
            State::Ejected { .. } => None,
            State::Probing { .. } => {
                if outcome.is_success() {
                    t.state = State::Active;
                    t.active_since = now;
                    t.reset_counters();
                    self.ejected -= 1;
                    self.healthy += 1;
                    Some(OutlierEvent::Readmitted { replica: id })
                } else {
                    // Already counted as ejected: bounds are unaffected.
                    Some(self.eject(id, EjectReason::FailedProbe, now, rand01))
                }
            }
            State::Active => {
                let ok = outcome.is_success();
                if ok {
                    t.run_5xx = 0;
                    t.run_gateway = 0;
                } else {
                    t.run_5xx = t.run_5xx.saturating_add(1);
                    t.run_gateway = if outcome.is_gateway() {
                        t.run_gateway.saturating_add(1)
                    } else {
                        0
                    };
                }
                let [succ, total] = t.window.add([u64::from(ok), 1], now);
                if ok {
                    return None;
                }
                let reason = if c.consecutive_gateway_errors > 0
                    && t.run_gateway >= c.consecutive_gateway_errors
                {
                    EjectReason::ConsecutiveGatewayErrors
                } else if c.consecutive_5xx > 0 && t.run_5xx >= c.consecutive_5xx {
                    EjectReason::Consecutive5xx
                } else if c.success_rate_percent > 0
                    && total >= u64::from(c.success_rate_min_requests.max(1))
                    && succ * 100 < u64::from(c.success_rate_percent) * total
                {
                    EjectReason::SuccessRate
                } else {
                    return None;
                };
                if !self.may_eject() {
                    // Keep the counters: the next failure asks again.
                    return None;
                }
                self.ejected += 1;
                self.healthy -= 1;
                Some(self.eject(id, reason, now, rand01))
            }
        }
    }

    /// Whether a request may be sent to `id` now, consuming the probe slot of an ejected
    /// replica whose penalty is over: exactly one request is let through, and its outcome
    /// (via [`record`](Self::record)) re-admits or re-ejects it. Call it only for the
    /// replica actually chosen; use [`admissible`](Self::admissible) to filter candidates.
    /// In [`panic`](Self::panic) mode the proxy routes to any member regardless.
    pub fn try_admit(&mut self, id: ReplicaId, now: Instant) -> bool {
        let probe_timeout = self.config.probe_timeout;
        let Some(t) = self.tracker_mut(id) else {
            return false;
        };
        if !t.ready {
            return false;
        }
        match t.state {
            State::Active => true,
            State::Ejected { until } | State::Probing { deadline: until } if now >= until => {
                t.state = State::Probing {
                    deadline: later(now, probe_timeout),
                };
                true
            }
            _ => false,
        }
    }

    /// Whether [`try_admit`](Self::try_admit) would say yes, without consuming anything.
    pub fn admissible(&self, id: ReplicaId, now: Instant) -> bool {
        match self.tracker(id) {
            Some(t) if t.ready => match t.state {
                State::Active => true,
                State::Ejected { until } | State::Probing { deadline: until } => now >= until,
            },
            _ => false,
        }
    }

    /// Too few healthy replicas (`healthy × 100 < panic_threshold_percent × members`):
    /// the proxy should spread traffic over all members, ejected or not ready included,
    /// rather than overload the few left (Envoy's panic mode).
    pub fn panic(&self) -> bool {
        u64::from(self.healthy) * 100
            < u64::from(self.config.panic_threshold_percent) * u64::from(self.members)
    }

    /// Where the replica stands now; `None` for an id that was removed.
    pub fn state(&self, id: ReplicaId) -> Option<OutlierState> {
        self.tracker(id).map(|t| match t.state {
            State::Active => OutlierState::Active,
            State::Ejected { until } => OutlierState::Ejected { until },
            State::Probing { .. } => OutlierState::Probing,
        })
    }

    /// Readiness as last set (`None` for a stale id).
    pub fn is_ready(&self, id: ReplicaId) -> Option<bool> {
        self.tracker(id).map(|t| t.ready)
    }

    /// Replicas present.
    pub fn members(&self) -> u32 {
        self.members
    }

    /// Replicas `Ejected` or `Probing`.
    pub fn ejected(&self) -> u32 {
        self.ejected
    }

    /// Replicas `Active` and ready.
    pub fn healthy(&self) -> u32 {
        self.healthy
    }

    /// Ids of all present replicas (for the proxy's panic-mode fallback and for tests).
    pub fn ids(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.tracker.as_ref().map(|_| ReplicaId {
                index: i as u32,
                generation: s.generation,
            })
        })
    }

    fn may_eject(&self) -> bool {
        self.healthy >= 2
            && (u64::from(self.ejected) + 1) * 100
                <= u64::from(self.config.max_ejection_percent) * u64::from(self.members)
    }

    /// Puts `id` (Active or Probing; counters already adjusted) into `Ejected`.
    fn eject(
        &mut self,
        id: ReplicaId,
        reason: EjectReason,
        now: Instant,
        rand01: f64,
    ) -> OutlierEvent {
        let c = self.config;
        let t = self.tracker_mut(id).expect("caller checked the id");
        if t.state == State::Active {
            let periods = now.saturating_duration_since(t.active_since).as_nanos()
                / c.decay_interval.as_nanos().max(1);
            t.times_ejected = t
                .times_ejected
                .saturating_sub(u32::try_from(periods).unwrap_or(u32::MAX));
        }
        t.times_ejected = t.times_ejected.saturating_add(1);
        let base = c
            .base_ejection
            .saturating_mul(t.times_ejected)
            .min(c.max_ejection);
        let jitter = c.jitter * rand01;
        let d = if jitter.is_finite() && jitter > 0.0 {
            base.mul_f64(1.0 - jitter.min(1.0))
        } else {
            base
        };
        let until = later(now, d);
        t.state = State::Ejected { until };
        t.reset_counters();
        OutlierEvent::Ejected {
            replica: id,
            until,
            reason,
            times: t.times_ejected,
        }
    }

    /// Restores the bounds after a member left or stopped being ready (one re-admission
    /// always suffices: one change moves each bound by at most one replica).
    fn repair(&mut self, now: Instant) -> Option<OutlierEvent> {
        let pct = u64::from(self.config.max_ejection_percent);
        let over_cap = u64::from(self.ejected) * 100 > pct * u64::from(self.members);
        let starved = self.healthy == 0;
        if !over_cap && !starved {
            return None;
        }
        // Prefer a ready replica (re-admitting it restores health), then the earliest end.
        let key = |t: &Tracker| {
            let end = match t.state {
                State::Ejected { until } => Some(until),
                _ => None, // probing: its penalty is already over
            };
            (!t.ready, end)
        };
        let (index, _) = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.tracker.as_ref().map(|t| (i, t)))
            .filter(|(_, t)| t.ejected() && (over_cap || t.ready))
            .min_by_key(|(_, t)| key(t))?;
        let slot = &mut self.slots[index];
        let id = ReplicaId {
            index: index as u32,
            generation: slot.generation,
        };
        let t = slot.tracker.as_mut().expect("filtered on presence");
        t.state = State::Active;
        t.active_since = now;
        t.reset_counters();
        self.ejected -= 1;
        if t.ready {
            self.healthy += 1;
        }
        Some(OutlierEvent::Readmitted { replica: id })
    }

    fn slot_mut(&mut self, id: ReplicaId) -> Option<&mut Slot> {
        self.slots
            .get_mut(id.index as usize)
            .filter(|s| s.generation == id.generation)
    }

    fn tracker_mut(&mut self, id: ReplicaId) -> Option<&mut Tracker> {
        self.slot_mut(id)?.tracker.as_mut()
    }

    fn tracker(&self, id: ReplicaId) -> Option<&Tracker> {
        self.slots
            .get(id.index as usize)
            .filter(|s| s.generation == id.generation)?
            .tracker
            .as_ref()
    }
}

#[cfg(test)]
mod tests;
