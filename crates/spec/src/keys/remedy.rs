//! `[[remediations]]`, `[remediation]`, `[anomaly]`, `[services.NAME.anomaly]` and
//! `[services.NAME.autoscale]`: automated repair, declared once like every other key.

use std::time::Duration;

use super::{MANY, slo_name, webhook_url};
use crate::model::{
    ActionKind, AlertSeverity, AnomalyKind, ApproveTimeout, EventType, MetricKind, RemedyMode,
};
use crate::schema::Omitted::{Optional, Required};
use crate::schema::{boolean, choice, command, duration, int, number, string, table, tables, text};
use crate::section;

section! {
    /// An automated remediation: when something happens (`when`), do these actions in
    /// order (`do`), within guards: a rate limit with exponential back-off, a cooldown,
    /// `max_concurrent`, the global action budget (`[remediation]`) and the service's
    /// disruption budget (`min_available`). Every decision is an event, journalled and
    /// listed by `bulwark actions`.
    pub(crate) struct RemediationTable {
        /// Unique among remediations; names the rule in events, metrics and `bulwark actions`.
        name: String = text("a name of lowercase ASCII letters, digits, `-` and `_`", slo_name),
            Required(r#"name = "restart-on-page""#);
        /// What triggers the rule: exactly one of `alert`, `event`, `anomaly`, `probe`,
        /// `metric`, optionally narrowed to one `service`.
        when: WhenTable = table::<WhenTable>(), Required(r#"when = { alert = "page", service = "web" }"#);
        /// The actions, in order; one failing stops the rest (and is reported).
        actions as "do": Vec<ActionTable> = tables::<ActionTable>(),
            Required(r#"do = [{ action = "restart-service" }]"#);
        /// `auto` acts; `approve` waits for `bulwark approve ID` (or `deny`); `dry-run`
        /// only records what it would have done.
        mode: RemedyMode = choice(RemedyMode::CHOICES), r#""auto""#;
        /// At most this many actions of this rule start within `per`.
        limit: u32 = int(1, MANY), "3";
        /// The rate limit's window.
        per: Duration = duration().positive().long(), r#""1h""#;
        /// While its trigger persists, the rule's second action waits this long after the
        /// first, the third twice as long, and so on up to `backoff_max`; `0s`: no back-off.
        backoff: Duration = duration().long(), r#""1m""#;
        /// The longest back-off.
        backoff_max: Duration = duration().long(), r#""30m""#;
        /// No new action of this rule within this long after the last one ended.
        cooldown: Duration = duration().long(), r#""5m""#;
        /// Actions of this rule running at once.
        max_concurrent: u32 = int(1, 1000), "1";
        /// `approve`: how long an action waits for `bulwark approve` or `deny`.
        approve_timeout: Duration = duration().positive().long(), r#""15m""#;
        /// `approve`: what happens when nobody answered in time: `deny` (nothing is done)
        /// or `act` (it is done).
        on_timeout: ApproveTimeout = choice(ApproveTimeout::CHOICES), r#""deny""#;
    }
}

section! {
    /// A remediation's trigger.
    pub(crate) struct WhenTable {
        /// An SLO burn-rate alert fires: `page`, `ticket` or `any`.
        alert: AlertSeverity = choice(AlertSeverity::CHOICES), Optional("");
        /// With `alert`: only this SLO's alerts.
        slo: String = text("an SLO name", slo_name), Optional("every SLO of the service");
        /// An event happens: `crash-looping`, `replica-exited`, `replica-ejected`,
        /// `spawn-failed`, `replica-unready`, `rollout-aborted`, `incident-opened`.
        event: EventType = choice(EventType::CHOICES), Optional("");
        /// The anomaly detector reports: `memory-leak`, `latency-drift`, `error-drift`,
        /// `fd-growth`, `thread-growth`.
        anomaly: AnomalyKind = choice(AnomalyKind::CHOICES), Optional("");
        /// A probe of a replica fails: `liveness`, `readiness`, `startup`, or `watchdog` (a
        /// `[services.NAME.notify]` watchdog timed out).
        probe: crate::ProbeKind = choice(crate::ProbeKind::CHOICES), Optional("");
        /// A measure of the service stays `above` or `below` a value `for` a while:
        /// `in-flight` and `request-rate` (per ready replica), `error-ratio` (percent),
        /// `latency-p99` (milliseconds), `cpu` (cores per replica), `memory` (MiB, the
        /// largest replica), `ready` (ready replicas).
        metric: MetricKind = choice(MetricKind::CHOICES), Optional("");
        /// With `metric`: the condition holds while the measure is above this.
        above: f64 = number(-1e15, 1e15), Optional("");
        /// With `metric`: the condition holds while the measure is below this.
        below: f64 = number(-1e15, 1e15), Optional("");
        /// With `metric`: how long the condition must hold.
        hold as "for": Duration = duration().long(), r#""1m""#;
        /// Only this service's alerts, events, anomalies or probes (required by `metric`).
        service: String = string().non_empty(), Optional("any service");
    }
}

section! {
    /// One action of a remediation: `action` and the keys of that action. `service`
    /// defaults to the service the trigger concerns; a replica, to the replica it names
    /// (else the longest-running one).
    pub(crate) struct ActionTable {
        /// `restart-replica`, `replace-replica` (a fresh one started and ready before the
        /// old one drains and stops), `restart-service` (one replica at a time), `scale`,
        /// `eject` (out of the proxy's rotation `for` a while), `drain` (out of rotation
        /// until its requests finish, then `for` a while), `rollback` (the service's
        /// rollout under way), `switch`, `silence` (the triggering alert, `for` a while),
        /// `run` (a runbook command), `webhook`.
        kind as "action": ActionKind = choice(ActionKind::CHOICES), Required(r#"action = "restart-service""#);
        /// The service acted on.
        service: String = string().non_empty(), Optional("the trigger's service");
        /// `scale`: the replica count to set.
        to: u32 = int(0, 1000), Optional("");
        /// `scale`: replicas to add (negative: to remove).
        step: i64 = int(-1000, 1000), Optional("");
        /// `switch`: the switch to set.
        switch: String = string().non_empty(), Optional("needed by `switch`");
        /// `switch`: its new value, `on`, `off` or a percentage such as `"10%"`.
        state: crate::SwitchValue = text("\"on\", \"off\" or a percentage such as \"25%\"", super::degrade::switch_value),
            Optional("needed by `switch`");
        /// `eject`, `drain`, `silence`: how long.
        hold as "for": Duration = duration().positive().long(), Optional("30s for `eject` and `drain`, 1h for `silence`");
        /// `run`: the command, given the trigger as JSON on stdin and in `BULWARK_*`
        /// environment variables; its output lands in the incident's timeline.
        command: Vec<String> = command(), Optional("needed by `run`");
        /// `webhook`: POSTed the trigger as JSON.
        url: http::Uri = text("an http:// URL such as \"http://127.0.0.1:9000/hook\"", webhook_url),
            Optional("needed by `webhook`");
        /// `run`, `webhook`, `replace-replica`, `drain`: how long the action may take before
        /// it counts as failed (a command's process group is then killed).
        timeout: Duration = duration().positive().long(), r#""1m""#;
    }
}

section! {
    /// Stack-wide limits on automated actions.
    pub(crate) struct RemediationSettingsTable => #[derive(Debug, Clone, PartialEq)] pub struct RemediationSettings: Default {
        /// Run the `[[remediations]]` and the default pack; `false` records nothing and acts
        /// on nothing.
        enabled: bool = boolean(), "true";
        /// The global action budget: actions started per hour across every rule…
        budget_per_hour: f64 = number(0.001, 1_000_000.0).unit("actions per hour"), "30";
        /// …and at most this many at once after a quiet time (a token bucket).
        budget_burst: u32 = int(1, MANY), "5";
    }
}

section! {
    /// Anomaly detection: per replica, trends of memory, file descriptors and threads
    /// (a robust line fit over `window`, forecast to a limit), and drift of each
    /// service's latency and error ratio against its own baseline.
    pub(crate) struct AnomalyTable => #[derive(Debug, Clone, PartialEq)] pub struct AnomalySettings: Default {
        /// Detect anomalies (and run the default pack below).
        enabled: bool = boolean(), "true";
        /// How often replicas' memory, CPU, descriptors and threads are sampled.
        sample_every: Duration = duration().positive(), r#""5s""#;
        /// The trend is fitted over this much recent history.
        window: Duration = duration().positive().long(), r#""10m""#;
        /// A resource forecast to reach its limit within this long is an anomaly.
        horizon: Duration = duration().positive().long(), r#""30m""#;
        /// Samples needed before a trend is trusted.
        min_samples: u32 = int(3, 100_000), "12";
        /// How consistent the trend must be (the share of sample pairs that agree with it).
        min_confidence: f64 = number(0.0, 1.0), "0.8";
        /// Latency drift: the service's p99 this many times its own baseline…
        latency_ratio: f64 = number(1.0, 1000.0).above_min(), "2.0";
        /// …and above this.
        latency_floor: Duration = duration(), r#""10ms""#;
        /// Error drift: the error ratio this many percentage points above its baseline.
        error_increase: f64 = number(0.0, 100.0).above_min().unit("percentage points"), "5.0";
        /// The default pack: a replica forecast to run out of memory within `horizon` is
        /// replaced by a fresh one before it does (started and ready first, then the old
        /// one drains and stops), within the disruption budget and the action budget.
        replace_before_oom: bool = boolean(), "true";
    }
}

section! {
    /// What the anomaly detector forecasts a service's replicas against.
    pub(crate) struct ServiceAnomalyTable {
        /// Look for anomalies in this service.
        enabled: bool = boolean(), "true";
        /// The memory a replica may reach, such as `"256MiB"` or `"2GiB"`; the memory
        /// forecast aims at it.
        memory_limit: u64 = text("a size such as \"256MiB\" or \"2GiB\"", size), Optional("the machine's memory");
    }
}

section! {
    /// Autoscaling, as Kubernetes' HorizontalPodAutoscaler: every `interval`, the replica
    /// count is set so that the target measure per replica comes back to its value, within
    /// `min` and `max`, stabilised and rate-limited; replicas that crash or are ejected are
    /// covered by extra ones while they are down.
    pub(crate) struct AutoscaleTable {
        /// Fewest replicas.
        min: u32 = int(1, 1000), "1";
        /// Most replicas.
        max: u32 = int(1, 1000), Required("max = 10");
        /// Target: requests in flight per ready replica (one target key in all).
        in_flight: f64 = number(0.0, 1e9).above_min(), Optional("");
        /// Target: requests per second per ready replica.
        request_rate: f64 = number(0.0, 1e9).above_min().unit("requests per second"), Optional("");
        /// Target: CPU per replica, in cores (`0.5`: half a core).
        cpu: f64 = number(0.0, 1024.0).above_min().unit("cores"), Optional("");
        /// Target: the service's p99 latency.
        latency_p99: Duration = duration().positive(), Optional("");
        /// How often the count is decided.
        interval: Duration = duration().positive(), r#""15s""#;
        /// No change while the measure is within this share of the target.
        tolerance: f64 = number(0.0, 1.0), "0.1";
        /// Scale up to the lowest recommendation of this window (`0s`: at once).
        up_window: Duration = duration().long(), r#""0s""#;
        /// Scale down to the highest recommendation of this window.
        down_window: Duration = duration().long(), r#""5m""#;
        /// Within `period`, the count may grow by this percentage…
        up_percent: f64 = number(0.0, 100_000.0).above_min().unit("percent"), "100";
        /// …or by this many replicas, whichever is more.
        up_replicas: u32 = int(0, 1000), "4";
        /// Within `period`, the count may shrink by this percentage.
        down_percent: f64 = number(0.0, 100.0).above_min().unit("percent"), "100";
        /// The rate policies' period.
        period: Duration = duration().positive(), r#""15s""#;
        /// Replicas that crash or are ejected are covered by extra ones (within `max`)
        /// until they are back.
        cover_failures: bool = boolean(), "true";
    }
}

/// `"256MiB"`, `"2GiB"`, `"512KiB"`, `"1000000"` (bytes), also `MB`/`GB` (powers of 1000).
pub(crate) fn size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| String::new())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(" (units: B, KiB, MiB, GiB, TiB, kB, MB, GB)".to_owned()),
    };
    n.checked_mul(mult)
        .filter(|&b| b > 0)
        .ok_or_else(|| " (a size above 0 and below 16 EiB)".to_owned())
}
