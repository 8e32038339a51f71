//! `[[services.NAME.slo]]`: service level objectives in the stack file.
//!
//! Same style as `stack_file.rs`: a source text and the exact diagnostics it must produce
//! (`""` for valid input, which returns the validated `Stack`).

use std::path::Path;
use std::time::Duration;

use spec::{Slo, SloAlerts, SloKind};

mod common;
use common::{check, valid};

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 24 * 3600)
}

#[test]
fn every_slo_key() {
    let stack = valid(
        r#"
[services.web]
run = ["x"]
expose = { listen = "127.0.0.1:8080" }

[[services.web.slo]]
name = "availability"
kind = "availability"
objective = 99.9
period = "28d"
count_429_as_error = true
[services.web.slo.alerts]
page = false
ticket = true
min_requests = 50
no_data = "10m"

[[services.web.slo]]
name = "latency-p300"
kind = "latency"
objective = 99
threshold = "300ms"
period = "1h"
alerts = { no_data = "0s", min_requests = 0 }
"#,
    );
    let web = stack.service("web").expect("web");
    assert_eq!(web.slos.len(), 2);
    let availability = &web.slos[0];
    assert_eq!(availability.name, "availability");
    assert_eq!(availability.kind, SloKind::Availability { count_429: true });
    // The double nearest 0.999, as the file says 99.9 (not 99.9 / 100).
    assert_eq!(availability.objective, 0.999);
    assert!((availability.error_budget() - 0.001).abs() < 1e-12);
    assert_eq!(availability.period, days(28));
    assert_eq!(
        availability.alerts,
        SloAlerts {
            page: false,
            ticket: true,
            min_requests: 50,
            no_data: Duration::from_secs(600),
        }
    );
    let latency = &web.slos[1];
    assert_eq!(
        *latency,
        Slo {
            name: "latency-p300".into(),
            kind: SloKind::Latency {
                threshold: Duration::from_millis(300)
            },
            objective: 0.99,
            period: Duration::from_secs(3600),
            // "0s" switches the no-data alert off.
            alerts: SloAlerts {
                min_requests: 0,
                no_data: Duration::ZERO,
                ..SloAlerts::default()
            },
        }
    );
}

#[test]
fn slo_defaults() {
    let stack = valid(
        r#"
[services.web]
run = ["x"]
expose = { listen = "127.0.0.1:8080" }

[[services.web.slo]]
name = "availability"
kind = "availability"
objective = 99.5
"#,
    );
    let slo = &stack.services[0].slos[0];
    assert_eq!(slo.period, days(30));
    assert_eq!(slo.period, std::time::Duration::from_secs(30 * 24 * 3600));
    assert_eq!(slo.kind, SloKind::Availability { count_429: false });
    assert_eq!(
        slo.alerts,
        SloAlerts {
            page: true,
            ticket: true,
            min_requests: 10,
            no_data: Duration::ZERO,
        }
    );
    assert_eq!(slo.alerts, SloAlerts::default());

    // No `slo` key: no SLOs, and `expose` is not needed.
    let stack = valid("[services.web]\nrun = [\"x\"]\n");
    assert!(stack.services[0].slos.is_empty());
}

#[test]
fn unknown_slo_keys_with_did_you_mean() {
    check(
        r#"
[services.web]
run = ["x"]
expose = { listen = "127.0.0.1:8080" }

[[services.web.slo]]
name = "availability"
kind = "availability"
objetive = 99.9
count_429_as_errors = true

[services.web.slo.alerts]
pgae = true
min_request = 5
colour = "red"

[services.web.slos]
"#,
        "
        stack.toml:5:1: error: missing required field `objective` in [[services.web.slo]]; for example objective = 99.9
        stack.toml:8:1: error: unknown field `objetive` in [[services.web.slo]]; did you mean `objective`?
        stack.toml:9:1: error: unknown field `count_429_as_errors` in [[services.web.slo]]; did you mean `count_429_as_error`?
        stack.toml:12:1: error: unknown field `pgae` in [services.web.slo.alerts]; did you mean `page`?
        stack.toml:13:1: error: unknown field `min_request` in [services.web.slo.alerts]; did you mean `min_requests`?
        stack.toml:14:1: error: unknown field `colour` in [services.web.slo.alerts]; expected one of `page`, `ticket`, `min_requests`, `no_data`
        stack.toml:16:15: error: unknown field `slos` in [services.web]; did you mean `slo`?
        ",
    );
}

#[test]
fn objective_range() {
    check(
        r#"
[services.web]
run = ["x"]
expose = { listen = "127.0.0.1:8080" }

[[services.web.slo]]
name = "a"
kind = "availability"
objective = 100

[[services.web.slo]]
name = "b"
kind = "availability"
objective = 0

[[services.web.slo]]
name = "c"
kind = "availability"
objective = -5.0

[[services.web.slo]]
name = "d"
kind = "availability"
objective = 0.999

[[services.web.slo]]
name = "e"
kind = "availability"
objective = "99.9"

[[services.web.slo]]
name = "f"
kind = "availability"
objective = nan
"#,
        r#"
        stack.toml:8:13: error: `objective` must be greater than 0 and less than 100 (percent), found 100
        stack.toml:13:13: error: `objective` must be greater than 0 and less than 100 (percent), found 0
        stack.toml:18:13: error: `objective` must be greater than 0 and less than 100 (percent), found -5
        stack.toml:23:13: error: `objective` is a percentage: 0.999 means 0.999 % of requests; for 99.9 % write objective = 99.9
        stack.toml:28:13: error: `objective` must be a number, found a string
        stack.toml:33:13: error: `objective` must be greater than 0 and less than 100 (percent), found NaN
        "#,
    );
}

#[test]
fn kinds_and_thresholds() {
    check(
        r#"
[services.web]
run = ["x"]
expose = { listen = "127.0.0.1:8080" }

[[services.web.slo]]
name = "fast"
kind = "latency"
objective = 99

[[services.web.slo]]
name = "up"
kind = "availability"
objective = 99.9
threshold = "300ms"

[[services.web.slo]]
name = "slow"
kind = "latency"
objective = 99
threshold = "0ms"
count_429_as_error = true

[[services.web.slo]]
name = "what"
kind = "availabilty"
objective = 99

[[services.web.slo]]
name = "where"
objective = 99
threshold = 300
"#,
        r#"
        stack.toml:5:1: error: [[services.web.slo]]: kind = "latency" needs `threshold`: the latency a request must beat to count as good, for example threshold = "300ms"
        stack.toml:14:13: error: `threshold` is only for latency SLOs (kind = "latency"); an availability SLO counts failed requests, whatever their latency
        stack.toml:20:13: error: `threshold` must be greater than 0
        stack.toml:21:22: error: `count_429_as_error` is only for availability SLOs (kind = "availability"); a latency SLO counts successful requests only
        stack.toml:25:8: error: `kind` must be "availability" or "latency", found "availabilty"; did you mean "availability"?
        stack.toml:28:1: error: missing required field `kind` in [[services.web.slo]]; expected "availability" or "latency"
        stack.toml:31:13: error: `threshold` must be a duration such as "250ms" or "5s", found an integer
        "#,
    );
}

#[test]
fn names_periods_and_alerts() {
    check(
        r#"
[services.web]
run = ["x"]
expose = { listen = "127.0.0.1:8080" }

[[services.web.slo]]
name = "availability"
kind = "availability"
objective = 99.9
period = "30s"

[[services.web.slo]]
name = "availability"
kind = "availability"
objective = 99.9
period = "30 days"

[[services.web.slo]]
name = "Latency P99"
kind = "availability"
objective = 99.9

[[services.web.slo]]
kind = "availability"
objective = 99.9
alerts = { page = "yes", min_requests = -1, no_data = "10" }

[[services.web.slo]]
name = ""
kind = "availability"
objective = 99.9
period = "0s"
alerts = 3
"#,
        r#"
        stack.toml:9:10: error: `period` must be at least 1m, found "30s"; SLO periods are usually "30d" or "28d", and short ones such as "1h" are for trying things out
        stack.toml:12:8: error: duplicate SLO name `availability` in service `web`: each [[services.web.slo]] needs a name of its own
        stack.toml:18:8: error: `name` must be a name of lowercase ASCII letters, digits, `-` and `_`, found "Latency P99"
        stack.toml:22:1: error: missing required field `name` in [[services.web.slo]]; for example name = "availability"
        stack.toml:25:19: error: `page` must be a boolean, found a string
        stack.toml:25:41: error: `min_requests` must be at least 0, found -1
        stack.toml:25:55: error: `no_data` must be a duration such as "250ms" or "5s", found "10" (time unit needed, for example 10sec or 10ms)
        stack.toml:28:8: error: `name` must be a name of lowercase ASCII letters, digits, `-` and `_`, found ""
        stack.toml:31:10: error: `period` must be at least 1m, found "0s"; SLO periods are usually "30d" or "28d", and short ones such as "1h" are for trying things out
        stack.toml:32:10: error: `alerts` must be a table ([services.web.slo.alerts]), found an integer
        "#,
    );
}

#[test]
fn slos_need_expose() {
    check(
        r#"
[services.web]
run = ["x"]

[[services.web.slo]]
name = "availability"
kind = "availability"
objective = 99.9

[services.api]
run = ["y"]
expose = { listen = "127.0.0.1" }

[[services.api.slo]]
name = "availability"
kind = "availability"
objective = 99.9
"#,
        r#"
        stack.toml:4:1: error: service `web` has SLOs but no [services.web.expose]: SLIs are measured by bulwark's proxy from the requests it forwards, so only an exposed service can have an SLO; add [services.web.expose] with a `listen` address, or remove the [[services.web.slo]] tables
        stack.toml:11:21: error: `listen` must be an IP:PORT address such as "127.0.0.1:8080", found "127.0.0.1"
        "#,
    );
}

#[test]
fn slo_shapes() {
    check(
        r#"
[services.web]
run = ["x"]
expose = { listen = "127.0.0.1:8080" }

[services.web.slo]
name = "availability"
kind = "availability"
objective = 99.9

[services.api]
run = ["y"]
expose = { listen = "127.0.0.1:8081" }
slo = [1, { name = "ok", kind = "availability", objective = 99 }]
"#,
        r#"
        stack.toml:5:1: error: `slo` must be an array of tables ([[services.web.slo]]), found a table
        stack.toml:13:8: error: each entry of `slo` must be a table ([[services.api.slo]]), found an integer
        "#,
    );
}

#[test]
fn mangled_slo_tables_never_panic() {
    // Every single-character deletion and a spread of insertions: each must give a
    // `Stack` or located diagnostics, never a panic or an empty error.
    let source = r#"[services.web]
run = ["x"]
expose = { listen = "127.0.0.1:8080" }

[[services.web.slo]]
name = "availability"
kind = "availability"
objective = 99.9
period = "30d"
count_429_as_error = false
[services.web.slo.alerts]
page = true
min_requests = 10
no_data = "10m"

[[services.web.slo]]
name = "latency"
kind = "latency"
objective = 99
threshold = "300ms"
"#;
    let inserts = [
        "\"", "[", "]", "=", "\n", "0", "x", "é", "#", ",", "{", "-1", ".",
    ];
    for (i, _) in source.char_indices() {
        let mut deleted = source.to_owned();
        deleted.remove(i);
        let mut inserted = source.to_owned();
        inserted.insert_str(i, inserts[i % inserts.len()]);
        for variant in [deleted, inserted] {
            let lines = variant.lines().count() + 1;
            if let Err(errors) = spec::parse(&variant, Path::new("stack.toml")) {
                assert!(!errors.diagnostics.is_empty(), "{variant}");
                for d in &errors.diagnostics {
                    assert!(
                        d.line >= 1 && d.line <= lines && d.column >= 1,
                        "{d}\n{variant}"
                    );
                }
            }
        }
    }
}
