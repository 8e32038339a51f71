//! `[services.NAME.rollout]`: how a changed service reaches its new version.

use std::net::SocketAddr;
use std::time::Duration;

use super::MANY;
use crate::model::{Amount, Pause, RolloutStrategy, Sticky};
use crate::schema::Omitted::{self, Optional, Required};
use crate::schema::{
    address, choice, count_or_percent, duration, int, number, table, tables, text,
};
use crate::section;

section! {
    /// How a change that needs new processes (command, environment, probes…) reaches the
    /// replicas: `bulwark reload` and `bulwark rollout start` start a rollout, judged
    /// against the version it replaces and rolled back when it fails.
    pub(crate) struct RolloutTable {
        /// `rolling` replaces replicas a few at a time; `canary` sends a growing share of
        /// the traffic (`steps`) to new replicas beside the old ones; `blue-green` starts a
        /// whole new set beside the old one and switches all traffic at once.
        strategy: RolloutStrategy = choice(RolloutStrategy::CHOICES), r#""rolling""#;
        /// Rolling: replicas started above `replicas` at once (a count, or a percentage
        /// rounded up, as Kubernetes' `maxSurge`).
        max_surge: Amount = count_or_percent(1000), r#""25%""#;
        /// Rolling: replicas below `replicas` that may be unready at once (a percentage
        /// rounded down, as Kubernetes' `maxUnavailable`); never both 0.
        max_unavailable: Amount = count_or_percent(1000), r#""25%""#;
        /// A new replica counts as available only once it has stayed ready this long.
        min_ready: Duration = duration(), r#""0s""#;
        /// A step (or a rolling batch) that makes no progress for this long fails the
        /// rollout: new replicas that crash-loop or never become ready.
        progress_deadline: Duration = duration().positive().long(), r#""10m""#;
        /// Canary: the traffic steps, in order; after the last, the new version takes all.
        steps: Vec<StepTable> = tables::<StepTable>(),
            Optional("10 % for 1m, then 50 % for 1m");
        /// Canary and blue-green: keep a client on one version, by `header:NAME` or
        /// `cookie:NAME` (hashed); otherwise each request is assigned by weight.
        sticky: Sticky = text("\"header:NAME\" or \"cookie:NAME\"", sticky), Optional("per request");
        /// Blue-green: a listener that serves only the new version before promotion.
        preview_listen: SocketAddr = address(), Optional("no preview listener");
        /// Blue-green: promote by itself after the new version has been ready this long
        /// (unless its analysis fails); without it, `bulwark rollout promote` promotes.
        promote_after: Duration = duration(), Optional("wait for `bulwark rollout promote`");
        /// Blue-green: the old version is kept this long after promotion, for an instant
        /// rollback (`bulwark rollout undo`).
        scale_down_delay: Duration = duration(), r#""30s""#;
        /// How the new version is judged against the old one.
        analysis: AnalysisTable = table::<AnalysisTable>(), Omitted::Table;
    }
}

fn sticky(s: &str) -> Result<Sticky, String> {
    match s.split_once(':') {
        Some(("header", h)) if !h.is_empty() => Ok(Sticky::Header(h.to_ascii_lowercase())),
        Some(("cookie", c)) if !c.is_empty() => Ok(Sticky::Cookie(c.to_owned())),
        _ => Err(String::new()),
    }
}

section! {
    /// A canary step: a share of the traffic, held for a while.
    pub(crate) struct StepTable {
        /// The share of requests sent to the new version.
        weight: f64 = number(0.0, 100.0).unit("percent"), Required("weight = 10");
        /// How long the step lasts (analysis runs all through it), or "until-promoted".
        pause: Pause = text("a duration such as \"30s\", or \"until-promoted\"", pause), r#""1m""#;
        /// New replicas during the step.
        replicas: u32 = int(1, MANY), Optional("`weight` percent of `replicas`, rounded up");
    }
}

fn pause(s: &str) -> Result<Pause, String> {
    if s == "until-promoted" {
        return Ok(Pause::UntilPromoted);
    }
    humantime::parse_duration(s)
        .map(Pause::For)
        .map_err(|_| String::new())
}

section! {
    /// How a new version is judged: against the stable version over the same window, from
    /// the proxy's own request outcomes.
    pub(crate) struct AnalysisTable => #[derive(Debug, Clone, Copy, PartialEq)] pub struct Analysis: Default {
        /// `false`: no judgement, only the progress deadline.
        enabled: bool = crate::schema::boolean(), "true";
        /// A verdict is taken this often, over the requests since the step began.
        interval: Duration = duration().positive(), r#""5s""#;
        /// Requests the new version must have answered before a verdict; with fewer at the
        /// end of a step, the verdict is inconclusive and the rollout pauses.
        min_requests: u32 = int(1, MANY), "50";
        /// Fails when the new version's error ratio (5xx) exceeds the stable one's by more
        /// than this.
        max_error_increase: f64 = number(0.0, 100.0).unit("percentage points"), "1.0";
        /// Fails when the new version's latency percentile exceeds the stable one's times this.
        max_latency_ratio: f64 = number(1.0, 1000.0), "1.2";
        /// The latency percentile compared.
        latency_percentile: f64 = number(1.0, 99.99).unit("percent"), "99.0";
        /// Latency differences below this never fail (noise at sub-millisecond latencies).
        latency_floor: Duration = duration(), r#""10ms""#;
    }
}
