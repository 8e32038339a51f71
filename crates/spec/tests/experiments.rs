//! `[[experiments]]`: targets, faults, steady-state probes, schedules, and `min_available`.

mod common;

use std::time::Duration;

use common::{check, valid};
use spec::{Amount, ChaosFault, ChaosSchedule, FaultAction, Pick, SteadyCheck, SteadyProbe};

const SERVICES: &str = r#"
[services.web]
run = ["x"]
replicas = 3
min_available = "50%"
expose = { listen = "127.0.0.1:18080" }
[[services.web.slo]]
name = "availability"
kind = "availability"
objective = 99.0
[services.db]
run = ["y"]
replicas = 2
min_available = 1
expose = { listen = "127.0.0.1:18081" }
[services.worker]
run = ["z"]
"#;

#[test]
// Long on purpose: one file of three experiments, checked field by field.
#[allow(clippy::too_many_lines)]
fn a_full_experiment_reads_with_its_defaults() {
    let stack = valid(&format!(
        r#"{SERVICES}
[[experiments]]
name = "kill-one"
target = {{ service = "web" }}
fault = {{ type = "kill" }}
rollbacks = [["true"], ["echo", "done"]]
[[experiments.steady_state]]
type = "error-ratio"
max = 0.01
[[experiments.steady_state]]
type = "burn-rate"
slo = "availability"
max = 14.4
[[experiments.steady_state]]
type = "ready"
service = "db"

[[experiments]]
name = "slow-db"
target = {{ service = "web", mode = "percent", value = 34 }}
fault = {{ type = "dependency", to = "db", delay = "200ms", percent = 50 }}
duration = "5s"
abort_when = {{ failure_threshold = 2, interval = "250ms" }}
schedule = {{ mean_interval = "1h", hours = "10:00-16:30", days = ["mon", "sat"], leashed = false }}

[[experiments]]
name = "nightly"
target = {{ service = "web", mode = "fixed", value = 2 }}
fault = {{ type = "http-abort" }}
schedule = {{ cron = "0 3 * * *" }}
"#
    ));
    let [kill, slow, nightly] = &stack.experiments[..] else {
        panic!("three experiments: {:?}", stack.experiments)
    };
    assert_eq!(
        stack
            .services
            .iter()
            .find(|s| s.name == "web")
            .unwrap()
            .min_available,
        Amount::Percent(50.0)
    );
    assert_eq!(Amount::Percent(50.0).of(3), 2);
    assert_eq!(Amount::Count(1).of(3), 1);
    assert_eq!(kill.fault, ChaosFault::Kill(spec::Signal::SIGKILL));
    assert_eq!(kill.target.pick, Pick::One);
    assert_eq!(kill.duration, Duration::from_secs(30));
    assert_eq!(kill.schedule, ChaosSchedule::OnDemand);
    assert_eq!(kill.rollbacks.len(), 2);
    assert_eq!(
        (kill.abort_when.failure_threshold, kill.abort_when.interval),
        (3, Duration::from_secs(1))
    );
    assert_eq!(
        kill.steady_state,
        vec![
            SteadyProbe {
                service: "web".into(),
                check: SteadyCheck::ErrorRatio {
                    max: 0.01,
                    window: Duration::from_secs(10),
                    min_requests: 20
                }
            },
            SteadyProbe {
                service: "web".into(),
                check: SteadyCheck::BurnRate {
                    slo: "availability".into(),
                    max: 14.4
                }
            },
            // `min` defaults to the probed service's replicas.
            SteadyProbe {
                service: "db".into(),
                check: SteadyCheck::Ready { min: 2 }
            },
        ]
    );
    assert_eq!(slow.target.pick, Pick::Percent(34.0));
    assert_eq!(
        slow.fault,
        ChaosFault::Dependency {
            to: "db".into(),
            action: FaultAction::Delay(Duration::from_millis(200)),
            percent: 50.0
        }
    );
    let ChaosSchedule::Monkey(m) = &slow.schedule else {
        panic!("{:?}", slow.schedule)
    };
    assert_eq!(
        (m.hours, m.leashed, m.min_gap),
        ((600, 990), false, Duration::from_secs(600))
    );
    assert_eq!(
        m.days,
        vec![jiff::civil::Weekday::Monday, jiff::civil::Weekday::Saturday]
    );
    assert_eq!(nightly.target.pick, Pick::Fixed(2));
    assert_eq!(
        nightly.fault,
        ChaosFault::Http {
            action: FaultAction::Abort(503),
            percent: 100.0
        }
    );
    assert!(matches!(&nightly.schedule, ChaosSchedule::Cron(c) if c.as_str() == "0 3 * * *"));
}

#[test]
fn wrong_targets_faults_and_probes_are_located() {
    check(
        &format!(
            r#"{SERVICES}
[[experiments]]
name = "a"
target = {{ service = "webb", mode = "one" }}
fault = {{ type = "kill" }}
[[experiments]]
name = "a"
target = {{ service = "web", mode = "fixed", value = 1.5 }}
fault = {{ type = "kill", delay = "1s" }}
[[experiments]]
name = "c"
target = {{ service = "worker" }}
fault = {{ type = "http-delay", delay = "1s" }}
[[experiments]]
name = "d"
target = {{ service = "web", mode = "percent" }}
fault = {{ type = "dependency", to = "web", status = 500 }}
[[experiments]]
name = "e"
target = {{ service = "web" }}
fault = {{ type = "http-delay" }}
[[experiments.steady_state]]
type = "burn-rate"
slo = "availabilty"
max = 2
[[experiments.steady_state]]
type = "error-ratio"
max = 2
[[experiments.steady_state]]
type = "latency"
service = "worker"
latency = "1s"
[[experiments.steady_state]]
type = "ready"
url = "http://127.0.0.1:1/"
"#
        ),
        r#"
        stack.toml:20:22: error: experiment on unknown service `webb`; did you mean `web`?
        stack.toml:23:8: error: duplicate experiment name `a`: each [[experiments]] needs a name of its own
        stack.toml:24:53: error: `value` must be a whole number of replicas, at least 1, found 1.5
        stack.toml:25:26: error: [experiments.fault]: `delay` does not apply to type = "kill"
        stack.toml:29:18: error: [experiments.fault]: type = "http-delay" acts through bulwark's proxy, and `worker` is not exposed over HTTP
        stack.toml:32:10: error: [experiments.target]: mode = "percent" needs `value`
        stack.toml:37:9: error: [experiments.fault]: type = "http-delay" needs `delay`
        stack.toml:40:7: error: `web` has no SLO named `availabilty`; did you mean `availability`?
        stack.toml:44:7: error: `max` of an error ratio must be between 0 and 1, found 2
        stack.toml:46:8: error: [[experiments.steady_state]]: type = "latency" is measured by bulwark's proxy, and `worker` has no `expose`
        stack.toml:51:1: error: [[experiments.steady_state]]: `url` does not apply to type = "ready"
        "#,
    );
}

#[test]
fn schedules_and_budgets_that_cannot_work_are_refused() {
    check(
        r#"
[services.web]
run = ["x"]
replicas = 2
min_available = 3
[[experiments]]
name = "a"
target = { service = "web" }
fault = { type = "stop" }
schedule = { cron = "0 0 30 2 *" }
[[experiments]]
name = "b"
target = { service = "web" }
fault = { type = "cpu" }
schedule = { cron = "@daily", leashed = false }
[[experiments]]
name = "c"
target = { service = "web" }
fault = { type = "memory", mib = 16 }
schedule = { mean_interval = "1h", hours = "17:00-09:00" }
[[experiments]]
name = "d"
target = { service = "web" }
fault = { type = "restart" }
schedule = { min_gap = "1h" }
[[experiments]]
name = "e"
target = { service = "web" }
fault = { type = "restart" }
schedule = { mean_interval = "1h", days = [] }
[[experiments]]
name = "f"
target = { service = "web" }
fault = { type = "kill", signal = "STOP" }
[[experiments]]
name = "g"
target = { service = "web" }
fault = { type = "kill" }
steady_state = [{ type = "error-ratio", max = 0.1, window = "10m" }]
"#,
        r#"
        stack.toml:4:17: error: [services.web]: min_available = 3 is more than replicas = 2, so no replica could ever be disrupted on purpose; lower it or use a percentage
        stack.toml:9:21: error: `cron` = "0 0 30 2 *" never fires
        stack.toml:14:31: error: [experiments.schedule]: `leashed` belongs to the monkey mode (`mean_interval`), not to `cron`
        stack.toml:19:44: error: `hours` must be a window such as "09:00-17:00", found "17:00-09:00" (the window must end after it starts)
        stack.toml:24:12: error: [experiments.schedule] needs exactly one of `cron = "0 3 * * *"` or `mean_interval = "1h"` (the monkey mode); leave it out to run only on `bulwark chaos run`
        stack.toml:29:43: error: [experiments.schedule]: `days` is empty, so the monkey would never act
        stack.toml:33:35: error: [experiments.fault]: SIGSTOP stops the replica and `kill` never continues it; use type = "stop", which does
        stack.toml:38:61: error: [[experiments.steady_state]]: `window` must be at most "5m" (bulwark keeps five minutes of outcomes)
        "#,
    );
}
