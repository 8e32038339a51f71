//! One leader per service: who should lead, and when the leader has to go.
//!
//! The supervisor's election task (`runtime::leader`) reads its replicas into [`Member`]s
//! and asks [`decide`] what to do; it acts on the answer (demote, take a fresh fencing
//! token, promote) and asks again. The rules (Patroni's, on one machine):
//! - a leader stays while its incarnation runs and has not been unready for longer than
//!   `failover_after`;
//! - it is deposed when its incarnation is gone (exited, restarted, scaled away: a
//!   restarted process is a new incarnation and comes back as a standby) or unready past
//!   the bound;
//! - only a ready standby is promoted (its readiness probe is what says it has caught
//!   up); of those, the one ready the longest, then the lowest index;
//! - deposing and electing are two steps: the old leader is out before a new one is
//!   chosen, so there is never a moment with two.

use std::time::{Duration, Instant};

/// One replica as the election sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The replica's index in its service.
    pub index: u32,
    /// The running incarnation (its pid), `None` while no process runs.
    pub incarnation: Option<u32>,
    /// Its readiness (the readiness probe, and `READY=1` where asked for).
    pub ready: bool,
    /// Since when it has been ready (`ready`), or not ready (otherwise).
    pub since: Instant,
    /// A promotion of this incarnation failed recently: do not try it now.
    pub refused: bool,
}

/// The current leader: which replica's incarnation holds which token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leader {
    /// Its replica index.
    pub index: u32,
    /// The incarnation that was promoted.
    pub incarnation: u32,
    /// Its fencing token.
    pub token: u64,
}

/// Why a leader is deposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Its incarnation is gone (the process exited or was restarted, or the replica was
    /// scaled away).
    Exited,
    /// Not ready for longer than `failover_after`: hung, overloaded, or cut off.
    Unready,
}

impl Loss {
    /// The reason as events and logs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Loss::Exited => "exited",
            Loss::Unready => "unready",
        }
    }
}

/// What the election task does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The leader stays (or nobody can lead yet): nothing to do.
    Keep,
    /// Demote the leader and take it out of leader routing, for this reason.
    Depose(Loss),
    /// No leader: promote this replica (ready, and its promotion not refused).
    Elect(u32),
}

/// Decides the next step for one service. Pure: `now` and the members come in.
pub fn decide(
    members: &[Member],
    leader: Option<&Leader>,
    now: Instant,
    failover_after: Duration,
) -> Verdict {
    if let Some(l) = leader {
        let current = members
            .iter()
            .find(|m| m.index == l.index && m.incarnation == Some(l.incarnation));
        return match current {
            None => Verdict::Depose(Loss::Exited),
            Some(m) if !m.ready && now.saturating_duration_since(m.since) > failover_after => {
                Verdict::Depose(Loss::Unready)
            }
            Some(_) => Verdict::Keep,
        };
    }
    members
        .iter()
        .filter(|m| m.ready && m.incarnation.is_some() && !m.refused)
        .min_by_key(|m| (m.since, m.index))
        .map_or(Verdict::Keep, |m| Verdict::Elect(m.index))
}

/// When the answer of [`decide`] can next change with no change of the members: the
/// instant the leader's unready spell passes `failover_after` (`None`: only a change of
/// the members can change it).
pub fn next_check(
    members: &[Member],
    leader: Option<&Leader>,
    failover_after: Duration,
) -> Option<Instant> {
    let l = leader?;
    members
        .iter()
        .find(|m| m.index == l.index && m.incarnation == Some(l.incarnation) && !m.ready)
        .map(|m| m.since + failover_after + Duration::from_millis(1))
}

/// Until when a leader may act on a term held under a lease (cluster mode's etcd lease of
/// time to live `ttl`) that a keepalive confirmed until `until` (the keepalive was sent at
/// `until - ttl`; etcd cannot expire the lease before `until`): the *fence*, half the TTL
/// after that keepalive was sent. The other half is the margin for deposing the leader, a
/// paused process and the difference of clock rates; only this node's monotonic clock is
/// read. A shorter TTL granted by etcd (an earlier `until`) only brings the fence nearer.
pub fn lease_fence(until: Instant, ttl: Duration) -> Instant {
    until.checked_sub(ttl / 2).unwrap_or(until)
}

/// A replica that says it leads, as one proxy sees it in cluster mode: this node's
/// promoted leader, or another node's endpoint published with a fencing token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The replica as the proxy numbers it (another node's: above every local index).
    pub replica: u32,
    /// The token it was promoted with.
    pub token: u64,
    /// Ready, reachable from here: a claim that is not is never routed to.
    pub ready: bool,
}

/// Which claim a proxy sends leader traffic to: of the ready ones, the greatest token.
///
/// Why the greatest: tokens only grow and each is handed out once, and a term is granted
/// only while no other is held; so two claims at once are an old leader's, still published
/// (its node's endpoint rewrite comes after its resignation, or its node is lost and its
/// lease not expired yet), and the new one's. The old claim is never chosen over the new
/// one, and it cannot outlive its node's lease, which held its term (no new term before it
/// expires). A claim that is not ready is passed over, never replaced by an older one.
pub fn routed(claims: &[Claim]) -> Option<Claim> {
    let newest = claims.iter().map(|c| c.token).max()?;
    claims
        .iter()
        .filter(|c| c.token == newest && c.ready)
        .min_by_key(|c| c.replica)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_fence_is_half_the_ttl_after_the_keepalive_was_sent() {
        let sent = crate::epoch();
        let ttl = Duration::from_secs(5);
        assert_eq!(
            lease_fence(sent + ttl, ttl),
            sent + Duration::from_millis(2500)
        );
        assert!(lease_fence(sent + Duration::from_secs(4), ttl) < sent + ttl / 2);
    }

    const BOUND: Duration = Duration::from_secs(3);

    fn member(t0: Instant, index: u32, ready: bool, since_ms: u64) -> Member {
        Member {
            index,
            incarnation: Some(100 + index),
            ready,
            since: t0 + Duration::from_millis(since_ms),
            refused: false,
        }
    }

    #[test]
    fn the_first_leader_is_the_longest_ready() {
        let t0 = crate::epoch();
        let ms = [
            member(t0, 0, true, 500),
            member(t0, 1, true, 100),
            member(t0, 2, false, 0),
        ];
        let at = t0 + Duration::from_secs(1);
        assert_eq!(decide(&ms, None, at, BOUND), Verdict::Elect(1));
        let none_ready = [member(t0, 0, false, 0), member(t0, 1, false, 0)];
        assert_eq!(decide(&none_ready, None, at, BOUND), Verdict::Keep);
    }

    #[test]
    fn a_leader_unready_past_the_bound_is_deposed_not_before() {
        let t0 = crate::epoch();
        let ms = [member(t0, 0, false, 1_000), member(t0, 1, true, 0)];
        let l = Leader {
            index: 0,
            incarnation: 100,
            token: 7,
        };
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(decide(&ms, Some(&l), at(4_000), BOUND), Verdict::Keep);
        assert_eq!(
            decide(&ms, Some(&l), at(4_001), BOUND),
            Verdict::Depose(Loss::Unready)
        );
        assert_eq!(next_check(&ms, Some(&l), BOUND), Some(at(4_001)));
    }

    #[test]
    fn a_restarted_leader_is_a_new_incarnation_and_deposed() {
        let t0 = crate::epoch();
        let mut ms = [member(t0, 0, true, 0), member(t0, 1, true, 0)];
        let l = Leader {
            index: 0,
            incarnation: 100,
            token: 7,
        };
        ms[0].incarnation = Some(555);
        assert_eq!(
            decide(&ms, Some(&l), t0, BOUND),
            Verdict::Depose(Loss::Exited)
        );
    }

    #[test]
    fn a_refused_promotion_is_not_tried_again() {
        let t0 = crate::epoch();
        let mut ms = [member(t0, 0, true, 0), member(t0, 1, true, 10)];
        ms[0].refused = true;
        assert_eq!(decide(&ms, None, t0, BOUND), Verdict::Elect(1));
        ms[1].refused = true;
        assert_eq!(decide(&ms, None, t0, BOUND), Verdict::Keep);
    }

    fn arb_member() -> impl Strategy<Value = Member> {
        (
            0u32..6,
            proptest::option::of(1u32..4),
            any::<bool>(),
            0u64..10_000,
            any::<bool>(),
        )
            .prop_map(|(index, inc, ready, since, refused)| Member {
                index,
                incarnation: inc,
                ready,
                since: crate::epoch() + Duration::from_millis(since),
                refused,
            })
    }

    proptest! {
        /// Whoever is elected is a ready, running standby whose promotion was not refused,
        /// and nobody is elected while a leader is in place.
        #[test]
        fn elected_only_when_none_leads_and_only_the_ready(
            members in proptest::collection::vec(arb_member(), 0..8),
            leader in proptest::option::of((0u32..6, 1u32..4)),
            now_ms in 0u64..20_000,
        ) {
            let now = crate::epoch() + Duration::from_millis(now_ms);
            let leader = leader.map(|(index, incarnation)| Leader { index, incarnation, token: 1 });
            match decide(&members, leader.as_ref(), now, BOUND) {
                Verdict::Elect(i) => {
                    prop_assert!(leader.is_none(), "elected {} while a leader leads", i);
                    prop_assert!(members.iter().any(|m| m.index == i && m.ready
                        && m.incarnation.is_some() && !m.refused));
                }
                Verdict::Depose(Loss::Exited) => {
                    let l = leader.expect("a leader to depose");
                    prop_assert!(!members.iter().any(|m| m.index == l.index
                        && m.incarnation == Some(l.incarnation)));
                }
                Verdict::Depose(Loss::Unready) => {
                    let l = leader.expect("a leader to depose");
                    let m = members.iter().find(|m| m.index == l.index
                        && m.incarnation == Some(l.incarnation)).expect("its incarnation");
                    prop_assert!(!m.ready && now.saturating_duration_since(m.since) > BOUND);
                }
                Verdict::Keep => {
                    if leader.is_none() {
                        prop_assert!(!members.iter().any(|m| m.ready
                            && m.incarnation.is_some() && !m.refused));
                    }
                }
            }
        }

        /// A leader whose incarnation runs and is ready is never deposed, whatever the
        /// others do.
        #[test]
        fn a_ready_leader_stays(
            members in proptest::collection::vec(arb_member(), 0..8),
            now_ms in 0u64..20_000,
        ) {
            let mut members = members;
            members.push(Member { index: 9, incarnation: Some(9), ready: true,
                since: crate::epoch(), refused: false });
            let l = Leader { index: 9, incarnation: 9, token: 3 };
            let now = crate::epoch() + Duration::from_millis(now_ms);
            prop_assert_eq!(decide(&members, Some(&l), now, BOUND), Verdict::Keep);
        }
    }

    fn claim(replica: u32, token: u64, ready: bool) -> Claim {
        Claim {
            replica,
            token,
            ready,
        }
    }

    #[test]
    fn the_greatest_token_is_routed_and_an_older_claim_never_replaces_it() {
        assert_eq!(routed(&[]), None);
        let old = claim(1 << 24, 40, true);
        let new = claim(0, 57, true);
        assert_eq!(routed(&[old, new]), Some(new));
        assert_eq!(routed(&[new, old]), Some(new));
        // The newest leader not ready: nobody (the old one was deposed before it).
        let unready = claim(0, 57, false);
        assert_eq!(routed(&[old, unready]), None);
        assert_eq!(routed(&[old]), Some(old));
    }

    proptest! {
        /// Whatever the claims, the one routed is ready and holds the greatest token.
        #[test]
        fn the_routed_claim_is_ready_and_the_newest(
            claims in proptest::collection::vec((0u32..4, 1u64..6, any::<bool>()), 0..6),
        ) {
            let claims: Vec<Claim> = claims.into_iter().map(|(r, t, ok)| claim(r, t, ok)).collect();
            let max = claims.iter().map(|c| c.token).max();
            match routed(&claims) {
                Some(c) => {
                    prop_assert!(c.ready);
                    prop_assert_eq!(Some(c.token), max);
                }
                None => prop_assert!(
                    claims.iter().filter(|c| Some(c.token) == max).all(|c| !c.ready)
                ),
            }
        }
    }
}
