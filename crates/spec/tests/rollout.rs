//! `[services.NAME.rollout]`: strategies, their keys, defaults, and what cannot work.

mod common;

use std::time::Duration;

use common::{check, valid};
use spec::{Amount, Pause, RolloutStrategy, Sticky};

#[test]
fn a_rollout_reads_with_kubernetes_defaults_and_each_strategy_its_keys() {
    let stack = valid(
        r#"
[services.plain]
run = ["x"]
[services.web]
run = ["x"]
replicas = 4
expose = { listen = "127.0.0.1:18080" }
[services.web.rollout]
strategy = "canary"
sticky = "cookie:session"
steps = [{ weight = 5, pause = "10s" }, { weight = 50, pause = "until-promoted", replicas = 2 }]
analysis = { interval = "2s", min_requests = 100, max_error_increase = 0.5 }
[services.api]
run = ["x"]
expose = { listen = "127.0.0.1:18081" }
[services.api.rollout]
strategy = "blue-green"
preview_listen = "127.0.0.1:18082"
promote_after = "1m"
"#,
    );
    let r = &stack
        .services
        .iter()
        .find(|s| s.name == "plain")
        .unwrap()
        .rollout;
    assert_eq!(r.strategy, RolloutStrategy::Rolling);
    assert_eq!(
        (r.max_surge, r.max_unavailable),
        (Amount::Percent(25.0), Amount::Percent(25.0))
    );
    assert_eq!(r.progress_deadline, Duration::from_secs(600));
    assert_eq!(r.analysis.min_requests, 50);
    let web = stack.services.iter().find(|s| s.name == "web").unwrap();
    let r = &web.rollout;
    assert_eq!(r.sticky, Some(Sticky::Cookie("session".into())));
    assert_eq!(r.steps.len(), 2);
    assert_eq!(r.steps[0].pause, Pause::For(Duration::from_secs(10)));
    assert_eq!(r.steps[0].replicas_of(4), 1, "5 % of 4, rounded up");
    assert_eq!(r.steps[1].pause, Pause::UntilPromoted);
    assert_eq!(r.steps[1].replicas_of(4), 2);
    assert_eq!(
        (r.analysis.min_requests, r.analysis.max_error_increase),
        (100, 0.5)
    );
    assert_eq!(r.analysis.interval, Duration::from_secs(2));
    let api = stack.services.iter().find(|s| s.name == "api").unwrap();
    assert_eq!(api.rollout.strategy, RolloutStrategy::BlueGreen);
    assert_eq!(
        api.rollout.preview_listen,
        Some("127.0.0.1:18082".parse().unwrap())
    );
    assert_eq!(api.rollout.promote_after, Some(Duration::from_secs(60)));
    assert_eq!(
        Amount::Percent(25.0).of_down(3),
        0,
        "max_unavailable rounds down"
    );
    assert_eq!(Amount::Percent(25.0).of(3), 1, "max_surge rounds up");
}

#[test]
fn rollouts_that_cannot_work_are_refused_with_their_location() {
    check(
        r#"
[services.a]
run = ["x"]
rollout = { max_surge = 0, max_unavailable = 0 }
[services.b]
run = ["x"]
rollout = { strategy = "canary" }
[services.c]
run = ["x"]
expose = { listen = "127.0.0.1:18080", protocol = "tcp" }
rollout = { strategy = "blue-green" }
[services.d]
run = ["x"]
expose = { listen = "127.0.0.1:18081" }
rollout = { steps = [{ weight = 10 }], preview_listen = "127.0.0.1:18082", sticky = "query:x" }
[services.e]
run = ["x"]
expose = { listen = "127.0.0.1:18083" }
rollout = { strategy = "canary", steps = [{ weight = 101, pause = "soon" }] }
"#,
        r#"
stack.toml:3:25: error: [services.a.rollout]: max_surge and max_unavailable are both 0, so a rolling update could neither start a new replica nor stop an old one; allow one of them
stack.toml:6:24: error: [services.b.rollout]: strategy = "canary" shifts traffic in bulwark's proxy, but the service has no `expose`; add [services.b.expose] or use strategy = "rolling"
stack.toml:10:24: error: [services.c.rollout]: strategy = "blue-green" splits HTTP requests; a TCP service (protocol = "tcp") can only use strategy = "rolling"
stack.toml:14:21: error: [services.d.rollout]: `steps` applies to strategy = "canary" only; remove it or change the strategy
stack.toml:14:57: error: [services.d.rollout]: `preview_listen` applies to strategy = "blue-green" only; remove it or change the strategy
stack.toml:14:85: error: `sticky` must be "header:NAME" or "cookie:NAME", found "query:x"
stack.toml:18:54: error: `weight` must be between 0 and 100 (percent), found 101
stack.toml:18:67: error: `pause` must be a duration such as "30s", or "until-promoted", found "soon"
"#,
    );
}
