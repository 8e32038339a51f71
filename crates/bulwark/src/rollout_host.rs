//! What rollouts see of the observability plane: page alerts, and their own
//! rollout-failed page.

use observe::alert::Severity;
use observe::plane::Plane;

/// The alert a failed rollout raises (and resolves once rolled back).
const ALERT: &str = "rollout-failed";

pub struct RolloutHost {
    pub plane: Plane,
}

impl rollout::Host for RolloutHost {
    fn paging(&self, service: &str) -> Option<String> {
        crate::chaos_host::paging(&self.plane, service, |a| a.name != ALERT)
            .map(|a| format!("page alert {}: {}", a.name, a.summary))
    }

    fn raise(&self, service: &str, summary: String) {
        self.plane.raise(service, ALERT, Severity::Page, summary);
    }

    fn clear(&self, service: &str) {
        self.plane.clear(service, ALERT, Severity::Page);
    }
}
