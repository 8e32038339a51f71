//! The steady-state hypothesis: what a stack must keep up while a fault runs.

use std::fmt::Write as _;

use crate::human::{millis, short};
use crate::report::{Case, Check};

/// The steady-state hypothesis every case is judged against: how many requests a fault
/// may cost, how slow clients may get, and how soon the service must be whole again.
///
/// The default is bulwark's promise: no request lost; a client p99 of at most
/// max(5 × the baseline p99, 250 ms) during the fault; recovery within 30 s.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// The most requests a case may lose.
    pub max_lost: u64,
    /// The highest client p99 allowed during a fault.
    pub max_p99: P99Bound,
    /// The longest a service may take to recover (full ready count and steady state
    /// again), in milliseconds.
    pub max_recover_ms: u64,
}

impl Default for Hypothesis {
    fn default() -> Self {
        Hypothesis {
            max_lost: 0,
            max_p99: P99Bound::Relative {
                factor: 5.0,
                floor_ms: 250.0,
            },
            max_recover_ms: 30_000,
        }
    }
}

/// The bound on a case's client p99, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub enum P99Bound {
    /// The same bound for every service.
    Fixed(f64),
    /// max(factor × the case's baseline p99, floor_ms). Relative, so a service that is slow
    /// by nature is not failed for it; with a floor, so that normal jitter on top of a
    /// sub-millisecond baseline is not a failure either.
    Relative {
        /// The multiple of the baseline p99 allowed.
        factor: f64,
        /// The bound never goes below this, in milliseconds.
        floor_ms: f64,
    },
}

impl P99Bound {
    /// The bound for a case whose p99 before the fault was `baseline_p99_ms`. A baseline
    /// that is not a number leaves a relative bound at its floor.
    pub fn bound_ms(&self, baseline_p99_ms: f64) -> f64 {
        match *self {
            P99Bound::Fixed(ms) => ms,
            P99Bound::Relative { factor, floor_ms } => (factor * baseline_p99_ms).max(floor_ms),
        }
    }
}

impl Hypothesis {
    /// Judges a measured case: replaces its `checks` with one per item of the hypothesis
    /// (requests lost, p99, recovery), and sets `passed` when all of them pass. A case
    /// whose `recover_ms` is missing did not recover within the observation window and
    /// fails the recovery check; a p99 that is not a number fails the p99 check.
    pub fn judge(&self, case: &mut Case) {
        case.checks = vec![
            self.lost_check(case),
            self.p99_check(case),
            self.recovery_check(case),
        ];
        case.passed = case.checks.iter().all(|check| check.passed);
    }

    fn lost_check(&self, case: &Case) -> Check {
        let name = match self.max_lost {
            0 => "no request lost".to_owned(),
            1 => "at most 1 request lost".to_owned(),
            n => format!("at most {n} requests lost"),
        };
        let mut detail = format!("{} of {} lost", case.lost, case.sent);
        if !case.errors.is_empty() {
            let classes: Vec<String> = case
                .errors
                .iter()
                .map(|(class, count)| format!("{class}: {count}"))
                .collect();
            let _ = write!(detail, " ({})", classes.join(", "));
        }
        Check {
            name,
            passed: case.lost <= self.max_lost,
            detail,
        }
    }

    fn p99_check(&self, case: &Case) -> Check {
        let bound = self.max_p99.bound_ms(case.baseline_p99_ms);
        let mut detail = format!(
            "p99 {} during the fault, {} before",
            millis(case.p99_ms),
            millis(case.baseline_p99_ms)
        );
        if let P99Bound::Relative { factor, floor_ms } = self.max_p99 {
            let _ = write!(
                detail,
                "; bound max({} × baseline, {})",
                short(factor),
                millis(floor_ms)
            );
        }
        Check {
            name: format!("p99 at most {}", millis(bound)),
            // Written so that NaN fails: a p99 nobody measured proves nothing.
            passed: case.p99_ms <= bound,
            detail,
        }
    }

    fn recovery_check(&self, case: &Case) -> Check {
        let name = format!("recovered within {}", millis(self.max_recover_ms as f64));
        match case.recover_ms {
            Some(ms) => Check {
                name,
                passed: ms <= self.max_recover_ms,
                detail: format!("recovered in {}", millis(ms as f64)),
            },
            None => Check {
                name,
                passed: false,
                detail: "did not recover within the observation window".to_owned(),
            },
        }
    }
}
