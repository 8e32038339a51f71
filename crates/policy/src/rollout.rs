//! Rollout decisions: how far a rolling update may go, and the analysis verdict that
//! compares a new revision with the stable one.

use std::time::Duration;

/// Where a rolling update stands, in replica counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rolling {
    /// Replicas the service wants.
    pub desired: u32,
    /// Replicas allowed above `desired` at once (`max_surge`, resolved).
    pub surge: u32,
    /// Replicas allowed below `desired` among the available (`max_unavailable`,
    /// resolved).
    pub unavailable: u32,
    /// The disruption budget (`min_available`, resolved).
    pub min_available: u32,
    /// Old replicas running (not being stopped).
    pub old_live: u32,
    /// Of which ready.
    pub old_ready: u32,
    /// New replicas running.
    pub new_live: u32,
    /// Of which ready for `min_ready`.
    pub new_available: u32,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RollingStep {
    /// New replicas to start.
    pub start: u32,
    /// Old replicas to stop, unready ones first.
    pub stop: u32,
}

impl Rolling {
    /// The most available replicas that must remain: `desired - unavailable`, raised to
    /// the disruption budget, never above `desired`.
    pub fn floor(&self) -> u32 {
        self.desired
            .saturating_sub(self.unavailable)
            .max(self.min_available)
            .min(self.desired)
    }

    /// Kubernetes' rolling update: start new replicas while the total stays within
    /// `desired + surge`; stop old ones (unready first) while the available count stays at
    /// or above [`Rolling::floor`].
    pub fn next(&self) -> RollingStep {
        let total = self.old_live + self.new_live;
        let ceiling = self.desired + self.surge;
        let start = self
            .desired
            .saturating_sub(self.new_live)
            .min(ceiling.saturating_sub(total));
        let available = self.old_ready + self.new_available;
        let unready_old = self.old_live - self.old_ready.min(self.old_live);
        // Old replicas beyond what `desired` needs once new ones are up go as the
        // available count allows; unready old ones cost no availability.
        let spare = available.saturating_sub(self.floor());
        let stop = (unready_old + spare).min(self.old_live);
        RollingStep { start, stop }
    }

    /// Every new replica is available and no old one runs.
    pub fn done(&self) -> bool {
        self.old_live == 0 && self.new_available >= self.desired
    }
}

/// One revision's requests over an analysis window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    /// Requests answered.
    pub total: u64,
    /// Of which failed (5xx).
    pub failed: u64,
    /// The compared latency percentile, if any request was answered.
    pub latency: Option<Duration>,
}

impl Sample {
    /// `failed / total` (0 without requests).
    pub fn error_ratio(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.failed as f64 / self.total as f64
        }
    }
}

/// The thresholds of an analysis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Requests the new revision must have answered before any verdict.
    pub min_requests: u64,
    /// Percentage points the new error ratio may exceed the stable one by.
    pub max_error_increase: f64,
    /// How many times the stable latency the new one may reach.
    pub max_latency_ratio: f64,
    /// Latency differences below this never fail.
    pub latency_floor: Duration,
}

/// An SLO of the service, as the analysis applies it to the new revision alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SloGate {
    /// The error budget as a fraction (`1 - objective`).
    pub budget: f64,
    /// The burn rate that pages (14.4 in the Workbook's fastest window).
    pub page_burn: f64,
}

/// The analysis' answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing wrong seen.
    Pass,
    /// The new revision is worse: roll back.
    Fail(String),
    /// Too few requests to say: hold.
    Inconclusive(String),
}

/// Compares the new revision with the stable one over the same window.
pub fn judge(new: &Sample, stable: &Sample, t: &Thresholds, slos: &[SloGate]) -> Verdict {
    if new.total < t.min_requests {
        return Verdict::Inconclusive(format!(
            "{} requests reached the new revision, {} are needed for a verdict",
            new.total, t.min_requests
        ));
    }
    // Without enough stable requests to compare with, the new revision is held to an
    // error-free baseline and its latency is not judged.
    let baseline = stable.total >= t.min_requests;
    let stable_ratio = if baseline { stable.error_ratio() } else { 0.0 };
    let increase = (new.error_ratio() - stable_ratio) * 100.0;
    if increase > t.max_error_increase {
        return Verdict::Fail(format!(
            "error ratio {:.2} % against the stable revision's {:.2} % (at most {} point(s) more \
             allowed)",
            new.error_ratio() * 100.0,
            stable_ratio * 100.0,
            t.max_error_increase
        ));
    }
    for g in slos {
        let burn = if g.budget > 0.0 {
            new.error_ratio() / g.budget
        } else if new.failed > 0 {
            f64::INFINITY
        } else {
            0.0
        };
        if burn >= g.page_burn {
            return Verdict::Fail(format!(
                "the new revision alone burns its SLO's error budget {burn:.1}x as fast as \
                 allowed (pages at {}x)",
                g.page_burn
            ));
        }
    }
    if let (true, Some(n), Some(s)) = (baseline, new.latency, stable.latency)
        && n.as_secs_f64() > s.as_secs_f64() * t.max_latency_ratio
        && n.saturating_sub(s) > t.latency_floor
    {
        return Verdict::Fail(format!(
            "latency {} ms against the stable revision's {} ms (at most {}x allowed)",
            n.as_millis(),
            s.as_millis(),
            t.max_latency_ratio
        ));
    }
    Verdict::Pass
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Thresholds {
        Thresholds {
            min_requests: 50,
            max_error_increase: 1.0,
            max_latency_ratio: 1.2,
            latency_floor: Duration::from_millis(10),
        }
    }

    fn s(total: u64, failed: u64, ms: u64) -> Sample {
        Sample {
            total,
            failed,
            latency: Some(Duration::from_millis(ms)),
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(
            judge(&s(100, 0, 5), &s(900, 0, 5), &t(), &[]),
            Verdict::Pass
        );
        assert!(matches!(
            judge(&s(10, 5, 5), &s(900, 0, 5), &t(), &[]),
            Verdict::Inconclusive(_)
        ));
        assert!(
            matches!(judge(&s(100, 10, 5), &s(900, 0, 5), &t(), &[]), Verdict::Fail(m) if m.contains("error ratio"))
        );
        // One point more is allowed.
        assert_eq!(
            judge(&s(1000, 15, 5), &s(1000, 6, 5), &t(), &[]),
            Verdict::Pass
        );
        assert!(
            matches!(judge(&s(100, 0, 160), &s(900, 0, 10), &t(), &[]), Verdict::Fail(m) if m.contains("latency"))
        );
        // Within the floor: sub-millisecond noise never fails.
        assert_eq!(
            judge(&s(100, 0, 3), &s(900, 0, 1), &t(), &[]),
            Verdict::Pass
        );
        // Without a baseline, latency is not judged and errors are held to none.
        assert_eq!(
            judge(&s(100, 0, 500), &s(10, 0, 1), &t(), &[]),
            Verdict::Pass
        );
        let gate = SloGate {
            budget: 0.0001,
            page_burn: 14.4,
        };
        assert!(
            matches!(judge(&s(1000, 5, 5), &s(1000, 0, 5), &t(), &[gate]), Verdict::Fail(m) if m.contains("SLO"))
        );
        assert_eq!(
            judge(&s(1000, 5, 5), &s(1000, 0, 5), &t(), &[]),
            Verdict::Pass
        );
    }
}
