//! `[[remediations]]`, `[anomaly]`, `[services.NAME.autoscale]`: triggers, actions, guards
//! and bounds, and what cannot work.

mod common;

use std::time::Duration;

use common::{check, valid};
use spec::{
    Action, AlertSeverity, AnomalyKind, Bound, MetricKind, RemedyMode, ScaleTarget, ScaleTo,
    SwitchValue, Trigger,
};

#[test]
fn a_pack_for_a_web_service_reads_with_its_defaults() {
    let stack = valid(
        r#"
[services.web]
run = ["x"]
replicas = 2
expose = { listen = "127.0.0.1:18080" }
anomaly = { memory_limit = "256MiB" }
[services.web.autoscale]
max = 8
request_rate = 100
[switches.recommendations]
[[remediations]]
name = "restart-on-page"
when = { alert = "page", service = "web" }
do = [{ action = "restart-service" }, { action = "run", command = ["./runbook.sh"] }]
mode = "approve"
[[remediations]]
name = "shed-when-slow"
when = { metric = "latency-p99", service = "web", above = 500, for = "2m" }
do = [{ action = "switch", switch = "recommendations", state = "off" }, { action = "silence" }]
[anomaly]
sample_every = "1s"
"#,
    );
    let web = stack.service("web").unwrap();
    assert_eq!(web.anomaly.memory_limit, Some(256 << 20));
    let a = web.autoscale.unwrap();
    assert_eq!((a.min, a.max), (1, 8));
    assert_eq!(a.target, ScaleTarget::RequestRate(100.0));
    assert_eq!(a.down_window, Duration::from_secs(300));
    assert_eq!(a.up_replicas, 4);
    let [first, second] = &stack.remediations[..] else {
        panic!("two rules")
    };
    assert_eq!(
        first.when,
        Trigger::Alert {
            severity: AlertSeverity::Page,
            slo: None
        }
    );
    assert_eq!(first.service.as_deref(), Some("web"));
    assert_eq!(first.mode, RemedyMode::Approve);
    assert_eq!(first.guards.limit, 3);
    assert_eq!(first.guards.cooldown, Duration::from_secs(300));
    assert_eq!(first.approve_timeout, Duration::from_secs(900));
    assert_eq!(first.actions[0], Action::RestartService { service: None });
    assert_eq!(
        second.when,
        Trigger::Metric {
            metric: MetricKind::LatencyP99,
            bound: Bound::Above(500.0),
            hold: Duration::from_secs(120)
        }
    );
    assert_eq!(
        second.actions,
        vec![
            Action::Switch {
                name: "recommendations".into(),
                value: SwitchValue::Off
            },
            Action::Silence {
                hold: Duration::from_secs(3600)
            }
        ]
    );
    assert_eq!(stack.anomaly.sample_every, Duration::from_secs(1));
    assert!(stack.anomaly.replace_before_oom);
    assert_eq!(stack.remediation.budget_burst, 5);
}

#[test]
fn a_rule_without_a_trigger_or_with_two_is_refused_where_it_is() {
    check(
        r#"
[services.web]
run = ["x"]
[[remediations]]
name = "a"
when = { service = "web" }
do = [{ action = "restart-service" }]
[[remediations]]
name = "b"
when = { alert = "page", anomaly = "memory-leak" }
do = [{ action = "restart-service" }]
"#,
        r#"
stack.toml:5:8: error: remediation `a`: a trigger is exactly one of `alert`, `event`, `anomaly`, `probe` or `metric`
stack.toml:9:8: error: remediation `b`: a trigger is exactly one of `alert`, `event`, `anomaly`, `probe` or `metric`, not alert and anomaly
"#,
    );
}

#[test]
fn actions_missing_their_keys_or_naming_unknown_things_are_refused() {
    check(
        r#"
[services.web]
run = ["x"]
[switches.feature]
[[remediations]]
name = "a"
when = { event = "crash-looping", service = "wbe" }
do = [{ action = "switch", switch = "featur", state = "off" }, { action = "run" }, { action = "scale" }]
"#,
        r#"
stack.toml:6:45: error: remediation `a`, when: unknown service `wbe`; name a [services.NAME] of this stack
"#,
    );
    check(
        r#"
[services.web]
run = ["x"]
[switches.feature]
[[remediations]]
name = "a"
when = { event = "crash-looping" }
do = [{ action = "switch", switch = "featur", state = "off" }, { action = "run" }, { action = "scale" }, { action = "reboot" }]
mode = "yolo"
"#,
        r#"
stack.toml:7:37: error: remediation `a`, do[0]: unknown switch `featur`; did you mean `feature`? declare it with a [switches.featur] table
stack.toml:7:64: error: remediation `a`, do[1]: action `run` needs `command`
stack.toml:7:84: error: remediation `a`, do[2]: action `scale` needs exactly one of `to` or `step`
stack.toml:7:117: error: `action` must be "restart-replica", "replace-replica", "restart-service", "scale", "eject", "drain", "rollback", "switch", "silence", "run" or "webhook", found "reboot"
stack.toml:8:8: error: `mode` must be "auto", "approve" or "dry-run", found "yolo"
"#,
    );
}

#[test]
fn autoscale_needs_one_target_and_bounds_that_hold_the_start_count() {
    check(
        r#"
[services.a]
run = ["x"]
replicas = 12
autoscale = { max = 10, cpu = 0.5 }
[services.b]
run = ["x"]
autoscale = { max = 4 }
[services.c]
run = ["x"]
autoscale = { min = 5, max = 4, in_flight = 3 }
"#,
        r#"
stack.toml:4:13: error: [services.a.autoscale]: the service starts with replicas = 12, outside min = 1 and max = 10; set replicas within them
stack.toml:7:13: error: [services.b.autoscale]: give exactly one target: `in_flight`, `request_rate`, `cpu` or `latency_p99`
stack.toml:10:21: error: [services.c.autoscale]: min = 5 is more than max = 4
"#,
    );
}

#[test]
fn absurd_values_are_refused_with_their_range() {
    check(
        r#"
[services.web]
run = ["x"]
anomaly = { memory_limit = "12 parsecs" }
[services.web.autoscale]
max = 1001
request_rate = -3
[anomaly]
min_confidence = 2
"#,
        r#"
stack.toml:3:28: error: `memory_limit` must be a size such as "256MiB" or "2GiB", found "12 parsecs" (units: B, KiB, MiB, GiB, TiB, kB, MB, GB)
stack.toml:5:7: error: `max` must be between 1 and 1000, found 1001
stack.toml:6:16: error: `request_rate` must be greater than 0 and at most 1000000000 (requests per second), found -3
stack.toml:8:18: error: `min_confidence` must be between 0 and 1, found 2
"#,
    );
    let stack = valid(
        r#"
[services.web]
run = ["x"]
[[remediations]]
name = "leak"
when = { anomaly = "memory-leak" }
do = [{ action = "replace-replica" }, { action = "scale", step = -1, service = "web" }]
"#,
    );
    assert_eq!(
        stack.remediations[0].when,
        Trigger::Anomaly(AnomalyKind::MemoryLeak)
    );
    assert_eq!(
        stack.remediations[0].actions[1],
        Action::Scale {
            service: Some("web".into()),
            to: ScaleTo::By(-1)
        }
    );
}

#[test]
fn a_scale_action_on_an_autoscaled_service_is_refused_whichever_way_it_names_it() {
    check(
        r#"
[services.web]
run = ["x"]
autoscale = { max = 4, cpu = 0.5 }
[[remediations]]
name = "a"
when = { alert = "page", service = "web" }
do = [{ action = "scale", step = 2 }]
[[remediations]]
name = "b"
when = { alert = "page" }
do = [{ action = "scale", step = 2 }]
"#,
        r#"
stack.toml:7:7: error: remediation `a`, do[0]: service `web` is autoscaled, so its autoscaler would undo a `scale` action; change [services.web.autoscale] instead
stack.toml:11:7: error: remediation `b`, do[0]: a `scale` action with no `service` scales whichever service triggered it, and `web` is autoscaled (its autoscaler would undo it); add `service = "NAME"` to the action or to `when`
"#,
    );
}
