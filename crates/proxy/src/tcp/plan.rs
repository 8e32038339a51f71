//! Which toxics one connection gets, decided once when it opens.

use std::time::Duration;

use spec::{Direction, Toxic, ToxicKind};

/// The toxics acting on one connection, merged per direction.
///
/// Invariant: built once per connection by [`Plan::decide`] and never changed; a reload of
/// the toxic list affects only connections opened after it. Whether a toxic *acts* at a
/// given moment is `planned && faults_enabled`: the global kill switch is read per chunk,
/// so turning it off stops every toxic at once, also on open connections (and turning it
/// back on resumes the planned ones).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Plan {
    /// Client to replica.
    pub up: Flow,
    /// Replica to client.
    pub down: Flow,
    /// `reset_peer`: reset both sockets (RST) this long after the connection opened.
    pub reset: Option<Duration>,
    /// `timeout` with a non-zero timeout: close both sockets this long after opening.
    pub close: Option<Duration>,
}

/// The toxics acting on one direction of a connection.
///
/// Merging when several toxics of one kind apply to the same direction: latencies, jitters
/// and slow-close delays add up (as chained toxics would), the lowest bandwidth and data
/// limit win, and the first slicer wins.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Flow {
    /// `timeout`: data read in this direction is dropped (as Toxiproxy does).
    pub stall: bool,
    /// `latency`: each chunk waits `latency ± jitter`.
    pub latency: Option<Latency>,
    /// `bandwidth`: bytes per second (a rate of 0 means no limit, as in Toxiproxy).
    pub rate: Option<u64>,
    pub slicer: Option<Slicer>,
    /// `limit_data`: the connection closes once this many bytes passed this way.
    pub limit: Option<u64>,
    /// `slow_close`: the end of stream (FIN) is passed on this much later.
    pub slow_close: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Latency {
    pub latency: Duration,
    pub jitter: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Slicer {
    pub average: usize,
    pub variation: usize,
    pub delay: Duration,
}

impl Plan {
    /// Rolls each toxic once: it applies when `roll() < toxicity`, with `roll` uniform in
    /// `[0, 1)`, so a toxicity of 0 (or NaN) never applies and 1 always does.
    pub fn decide(toxics: &[Toxic], mut roll: impl FnMut() -> f64) -> Plan {
        let mut plan = Plan::default();
        for t in toxics {
            if !(t.toxicity > 0.0 && roll() < t.toxicity) {
                continue;
            }
            let flow = match t.direction {
                Direction::Upstream => &mut plan.up,
                Direction::Downstream => &mut plan.down,
            };
            match t.kind {
                ToxicKind::Latency { latency, jitter } => {
                    let l = flow.latency.get_or_insert(Latency {
                        latency: Duration::ZERO,
                        jitter: Duration::ZERO,
                    });
                    l.latency = l.latency.saturating_add(latency);
                    l.jitter = l.jitter.saturating_add(jitter);
                }
                ToxicKind::Bandwidth { rate: 0 } => {}
                ToxicKind::Bandwidth { rate } => {
                    flow.rate = Some(flow.rate.map_or(rate, |r| r.min(rate)));
                }
                ToxicKind::ResetPeer { timeout } => {
                    plan.reset = Some(plan.reset.map_or(timeout, |r| r.min(timeout)));
                }
                ToxicKind::Timeout { timeout } => {
                    flow.stall = true;
                    if !timeout.is_zero() {
                        plan.close = Some(plan.close.map_or(timeout, |c| c.min(timeout)));
                    }
                }
                ToxicKind::SlowClose { delay } => {
                    flow.slow_close =
                        Some(flow.slow_close.unwrap_or_default().saturating_add(delay));
                }
                ToxicKind::Slicer {
                    average_size,
                    size_variation,
                    delay,
                } => {
                    flow.slicer.get_or_insert(Slicer {
                        average: average_size,
                        variation: size_variation,
                        delay,
                    });
                }
                ToxicKind::LimitData { bytes } => {
                    flow.limit = Some(flow.limit.map_or(bytes, |l| l.min(bytes)));
                }
            }
        }
        plan
    }
}

impl Flow {
    /// Whether any toxic acts on this direction (if not, the copy loop skips every check).
    pub fn any(&self) -> bool {
        *self != Flow::default()
    }
}

impl Latency {
    /// `latency ± jitter`, uniformly, never below zero.
    pub fn sample(&self) -> Duration {
        if self.jitter.is_zero() {
            return self.latency;
        }
        let j = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX / 2);
        let offset = rand::random_range(0..=j.saturating_mul(2));
        let up = Duration::from_nanos(offset);
        self.latency
            .saturating_add(up)
            .saturating_sub(Duration::from_nanos(j))
    }
}

impl Slicer {
    /// `average ± variation` bytes, at least 1.
    pub fn size(&self) -> usize {
        let lo = self.average.saturating_sub(self.variation);
        let hi = self.average.saturating_add(self.variation);
        rand::random_range(lo..=hi).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toxic(kind: ToxicKind, toxicity: f64, direction: Direction) -> Toxic {
        Toxic {
            kind,
            toxicity,
            direction,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn toxicity_zero_never_applies_and_one_always_does() {
        let lat = ToxicKind::Latency {
            latency: ms(10),
            jitter: ms(0),
        };
        let never = [toxic(lat.clone(), 0.0, Direction::Upstream)];
        let always = [toxic(lat, 1.0, Direction::Upstream)];
        // The extreme rolls of [0, 1).
        for roll in [0.0, 0.999_999] {
            assert_eq!(Plan::decide(&never, || roll), Plan::default());
            assert!(Plan::decide(&always, || roll).up.latency.is_some());
        }
        let half = [toxic(
            ToxicKind::LimitData { bytes: 1 },
            0.5,
            Direction::Downstream,
        )];
        assert!(Plan::decide(&half, || 0.49).down.any());
        assert!(!Plan::decide(&half, || 0.5).down.any());
    }

    #[test]
    fn toxics_merge_per_direction() {
        let toxics = [
            toxic(
                ToxicKind::Latency {
                    latency: ms(10),
                    jitter: ms(1),
                },
                1.0,
                Direction::Downstream,
            ),
            toxic(
                ToxicKind::Latency {
                    latency: ms(20),
                    jitter: ms(2),
                },
                1.0,
                Direction::Downstream,
            ),
            toxic(ToxicKind::Bandwidth { rate: 500 }, 1.0, Direction::Upstream),
            toxic(ToxicKind::Bandwidth { rate: 100 }, 1.0, Direction::Upstream),
            toxic(ToxicKind::Bandwidth { rate: 0 }, 1.0, Direction::Downstream),
            toxic(
                ToxicKind::Timeout { timeout: ms(0) },
                1.0,
                Direction::Upstream,
            ),
            toxic(
                ToxicKind::Timeout { timeout: ms(300) },
                1.0,
                Direction::Downstream,
            ),
            toxic(
                ToxicKind::ResetPeer { timeout: ms(50) },
                1.0,
                Direction::Downstream,
            ),
            toxic(ToxicKind::LimitData { bytes: 9 }, 1.0, Direction::Upstream),
            toxic(ToxicKind::LimitData { bytes: 7 }, 1.0, Direction::Upstream),
        ];
        let plan = Plan::decide(&toxics, || 0.0);
        assert_eq!(
            plan.down.latency,
            Some(Latency {
                latency: ms(30),
                jitter: ms(3)
            })
        );
        assert_eq!(plan.up.rate, Some(100));
        assert_eq!(plan.down.rate, None, "rate 0 is no limit");
        assert!(plan.up.stall && plan.down.stall);
        assert_eq!(plan.close, Some(ms(300)), "timeout 0 never closes");
        assert_eq!(plan.reset, Some(ms(50)));
        assert_eq!(plan.up.limit, Some(7));
        assert_eq!(plan.up.latency, None);
    }

    #[test]
    fn samples_stay_in_range() {
        let l = Latency {
            latency: ms(10),
            jitter: ms(4),
        };
        let s = Slicer {
            average: 3,
            variation: 5,
            delay: ms(0),
        };
        for _ in 0..1000 {
            let d = l.sample();
            assert!(d >= ms(6) && d <= ms(14), "{d:?}");
            let n = s.size();
            assert!((1..=8).contains(&n), "{n}");
        }
        let big = Latency {
            latency: ms(1),
            jitter: ms(5),
        };
        for _ in 0..100 {
            assert!(big.sample() <= ms(6));
        }
    }
}
