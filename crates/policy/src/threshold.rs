/// Turns a stream of probe results into healthy/unhealthy transitions, with Kubernetes'
/// `success_threshold` / `failure_threshold` semantics.
///
/// Invariant: `healthy` changes only after `success` consecutive successes (to healthy) or
/// `failure` consecutive failures (to unhealthy). It starts unknown (`None`).
#[derive(Debug, Clone)]
pub struct Threshold {
    success: u32,
    failure: u32,
    ok_run: u32,
    fail_run: u32,
    healthy: Option<bool>,
}

/// A change of health reported by [`Threshold::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Enough consecutive successes: the target became healthy.
    Healthy,
    /// Enough consecutive failures: the target became unhealthy.
    Unhealthy,
}

impl Threshold {
    /// A tracker needing `success` successes or `failure` failures in a row (each at least 1)
    /// to change state.
    pub fn new(success: u32, failure: u32) -> Self {
        Threshold {
            success: success.max(1),
            failure: failure.max(1),
            ok_run: 0,
            fail_run: 0,
            healthy: None,
        }
    }

    /// The current health; `None` until the first threshold is reached.
    pub fn healthy(&self) -> Option<bool> {
        self.healthy
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.fail_run
    }

    /// Feeds one probe result and returns the transition it caused, if any.
    pub fn record(&mut self, ok: bool) -> Option<Transition> {
        if ok {
            self.fail_run = 0;
            self.ok_run = self.ok_run.saturating_add(1);
            if self.ok_run >= self.success && self.healthy != Some(true) {
                self.healthy = Some(true);
                return Some(Transition::Healthy);
            }
        } else {
            self.ok_run = 0;
            self.fail_run = self.fail_run.saturating_add(1);
            if self.fail_run >= self.failure && self.healthy != Some(false) {
                self.healthy = Some(false);
                return Some(Transition::Unhealthy);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &mut Threshold, results: &str) -> Vec<Option<Transition>> {
        results.chars().map(|c| t.record(c == '+')).collect()
    }

    #[test]
    fn needs_consecutive_results_both_ways() {
        let mut t = Threshold::new(2, 3);
        use Transition::*;
        assert_eq!(
            run(&mut t, "+-+++--+---+"),
            vec![
                None,
                None,
                None,
                Some(Healthy),
                None,
                None,
                None,
                None,
                None,
                None,
                Some(Unhealthy),
                None
            ]
        );
        assert_eq!(t.healthy(), Some(false));
    }

    #[test]
    fn first_failures_reach_unhealthy_from_unknown() {
        let mut t = Threshold::new(1, 2);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(Transition::Unhealthy));
        assert_eq!(t.record(false), None, "no repeated transition");
        assert_eq!(t.failures(), 3);
    }
}
