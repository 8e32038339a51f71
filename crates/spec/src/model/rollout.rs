//! Rollouts, after validation.

use std::net::SocketAddr;
use std::time::Duration;

use super::Amount;
pub use crate::keys::rollout::Analysis;

crate::spelled! {
    /// How a changed service reaches its new version.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum RolloutStrategy {
        /// Replace replicas a few at a time (`max_surge`, `max_unavailable`).
        Rolling = "rolling",
        /// Shift traffic to new replicas by steps.
        Canary = "canary",
        /// A whole new set beside the old one; all traffic switches at once.
        BlueGreen = "blue-green",
    }
}

/// How long a canary step lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// This long, then the next step (if the analysis passes).
    For(Duration),
    /// Until `bulwark rollout promote`.
    UntilPromoted,
}

/// What keeps a client on one version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sticky {
    /// The value of this request header (lowercase).
    Header(String),
    /// The value of this cookie.
    Cookie(String),
}

/// One canary step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Percent of requests to the new version.
    pub weight: f64,
    /// How long it lasts.
    pub pause: Pause,
    /// New replicas during the step (`weight` percent of `replicas`, rounded up, when not
    /// given).
    pub replicas: Option<u32>,
}

impl Step {
    /// New replicas this step runs when the service wants `desired`: at least one.
    pub fn replicas_of(&self, desired: u32) -> u32 {
        self.replicas.unwrap_or_else(|| {
            let n = (f64::from(desired) * self.weight / 100.0).ceil() as u32;
            n.clamp(1, desired.max(1))
        })
    }
}

/// `[services.NAME.rollout]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Rolling, canary or blue-green.
    pub strategy: RolloutStrategy,
    /// Rolling: replicas above `replicas` at once (rounded up).
    pub max_surge: Amount,
    /// Rolling: replicas below `replicas` that may be unavailable (rounded down).
    pub max_unavailable: Amount,
    /// How long a new replica stays ready before it counts as available.
    pub min_ready: Duration,
    /// No progress for this long fails the rollout.
    pub progress_deadline: Duration,
    /// Canary steps; non-empty for a canary.
    pub steps: Vec<Step>,
    /// What keeps a client on one version.
    pub sticky: Option<Sticky>,
    /// Blue-green: the listener serving only the new version before promotion.
    pub preview_listen: Option<SocketAddr>,
    /// Blue-green: promote by itself after this long.
    pub promote_after: Option<Duration>,
    /// Blue-green: how long the old version is kept after promotion.
    pub scale_down_delay: Duration,
    /// How the new version is judged.
    pub analysis: Analysis,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            strategy: RolloutStrategy::Rolling,
            max_surge: Amount::Percent(25.0),
            max_unavailable: Amount::Percent(25.0),
            min_ready: Duration::ZERO,
            progress_deadline: Duration::from_secs(600),
            steps: default_steps(),
            sticky: None,
            preview_listen: None,
            promote_after: None,
            scale_down_delay: Duration::from_secs(30),
            analysis: Analysis::default(),
        }
    }
}

/// 10 % for a minute, then 50 % for a minute.
pub fn default_steps() -> Vec<Step> {
    [10.0, 50.0]
        .into_iter()
        .map(|weight| Step {
            weight,
            pause: Pause::For(Duration::from_secs(60)),
            replicas: None,
        })
        .collect()
}

impl Amount {
    /// How many of `total`, a percentage rounded down (Kubernetes' `maxUnavailable`).
    pub fn of_down(self, total: u32) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => (f64::from(total) * p / 100.0)
                .floor()
                .clamp(0.0, f64::from(total)) as u32,
        }
    }
}
