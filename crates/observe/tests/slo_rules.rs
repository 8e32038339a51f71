//! The exported Prometheus rules, checked by the real `promtool`: `check rules` accepts
//! them and `test rules` shows the alerts fire when and only when they should.
//!
//! `promtool` is required: install it with `apt-get install -y prometheus` (Debian and
//! Ubuntu). Without it these tests fail rather than skip, so CI cannot pass unchecked.

use std::path::Path;
use std::process::Command;

use observe::slo::{ALERT_BURN, ALERT_NO_DATA, rules, rules_test, stack_slos};

fn stack(src: &str) -> spec::Stack {
    spec::parse(src, Path::new("stack.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `promtool ARGS` in `dir`; panics with its output (and the files) on failure.
#[track_caller]
fn promtool(dir: &Path, args: &[&str]) -> String {
    let output = match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run `promtool` ({e}): these tests need Prometheus' promtool to check \
             the exported SLO rules; install it with `apt-get update && apt-get install -y \
             prometheus` (Debian/Ubuntu) or put a promtool binary on PATH"
        ),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        let rules = std::fs::read_to_string(dir.join("rules.yml")).unwrap_or_default();
        let tests = std::fs::read_to_string(dir.join("rules_test.yml")).unwrap_or_default();
        panic!(
            "promtool {} failed:\n{text}\n--- rules.yml ---\n{rules}\n--- rules_test.yml ---\n{tests}",
            args.join(" ")
        );
    }
    text
}

/// Writes the rules and their test for `stack`, then runs `check rules` and `test rules`.
fn check_and_test(stack: &spec::Stack) -> (String, String) {
    check_and_test_slos(&stack_slos(stack))
}

fn check_and_test_slos(slos: &[(&str, &spec::Slo)]) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules_text = rules(slos);
    let test_text = rules_test(slos, "rules.yml");
    std::fs::write(dir.path().join("rules.yml"), &rules_text).expect("write rules");
    std::fs::write(dir.path().join("rules_test.yml"), &test_text).expect("write test");
    let checked = promtool(dir.path(), &["check", "rules", "rules.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    promtool(dir.path(), &["test", "rules", "rules_test.yml"]);
    (rules_text, test_text)
}

#[test]
fn workbook_periods_pass_promtool() {
    let stack = stack(
        r#"
[services.web]
run = ["x"]
expose = { listen = "127.0.0.1:8080" }

[[services.web.slo]]
name = "availability"
kind = "availability"
objective = 99.9
[services.web.slo.alerts]
no_data = "10m"

[[services.web.slo]]
name = "latency"
kind = "latency"
objective = 99
threshold = "300ms"
period = "28d"
alerts = { page = false, min_requests = 1000 }

[services.api]
run = ["y"]
expose = { listen = "127.0.0.1:8081" }

[[services.api.slo]]
name = "true"
kind = "availability"
objective = 99.5
period = "7d"
count_429_as_error = true
alerts = { ticket = false, min_requests = 0 }
"#,
    );
    let (rules, test) = check_and_test(&stack);

    // The Workbook's windows and factors, exactly, for the 30-day SLO.
    for window in ["5m", "30m", "1h", "6h", "3d"] {
        assert!(
            rules.contains(&format!("record: \"bulwark_slo:error_ratio:rate{window}\"")),
            "{window}\n{rules}"
        );
    }
    assert!(rules.contains(
        "bulwark_slo:error_ratio:rate1h{service=\"web\", slo=\"availability\"} > (14.4 * (1 - 0.999))"
    ));
    assert!(rules.contains(
        "bulwark_slo:error_ratio:rate30m{service=\"web\", slo=\"availability\"} > (6 * (1 - 0.999))"
    ));
    assert!(rules.contains(
        "bulwark_slo:error_ratio:rate3d{service=\"web\", slo=\"availability\"} > (1 * (1 - 0.999))"
    ));
    // The minimum-traffic guard on the long window.
    assert!(rules.contains(
        "(increase(bulwark_slo_requests_total{service=\"web\", slo=\"availability\"}[1h])) >= 10"
    ));
    // 28 days: every window × 28/30; 6h → 5h36m, 3d → 2d19h12m. Its page is off, so
    // the page windows are not recorded for it.
    assert!(rules.contains("bulwark_slo:error_ratio:rate5h36m"));
    assert!(rules.contains("bulwark_slo:error_ratio:rate2d19h12m"));
    assert!(!rules.contains("rate4m40s"));
    // An SLO named "true" stays a string in YAML.
    assert!(rules.contains("slo: \"true\""));
    // Each case checks two evaluation times. web/availability: a burst page, a steady
    // page, a steady ticket, no data; web/latency (page off): a steady ticket;
    // api (ticket off): a burst page, a steady page.
    assert_eq!(
        test.matches(&format!("alertname: \"{ALERT_BURN}\""))
            .count(),
        2 * 6
    );
    assert_eq!(
        test.matches(&format!("alertname: \"{ALERT_NO_DATA}\""))
            .count(),
        2
    );
    // Series intervals: 30 d: 5m / 5 = 1m; 28 d: 4m40s / 5 = 56s → 20s; 7 d: 70s / 5 =
    // 14s → 10s. The evaluation interval is the smallest.
    assert!(test.contains("interval: 1m\n"), "{test}");
    assert!(test.contains("interval: 20s\n"), "{test}");
    assert!(test.contains("evaluation_interval: 10s\n"), "{test}");
}

#[test]
fn short_periods_pass_promtool() {
    // A 1-hour SLO pages on 14.4x over 5 s and 417 ms; a 1-minute one over 83 ms and
    // 7 ms. Prometheus could never scrape that fast, but the rules must still be right.
    let stack = stack(
        r#"
[services.web]
run = ["x"]
expose = { listen = "127.0.0.1:8080" }

[[services.web.slo]]
name = "hourly"
kind = "availability"
objective = 99
period = "1h"
alerts = { no_data = "2s" }

[[services.web.slo]]
name = "minutely"
kind = "latency"
threshold = "50ms"
objective = 90
period = "1m"
"#,
    );
    // One SLO at a time: the test file has one evaluation interval, and the 1-minute
    // SLO's 1 ms would make the 1-hour SLO's case crawl (see `rules_test`).
    let slos = stack_slos(&stack);
    let (rules, test) = check_and_test_slos(&slos[..1]);
    assert!(rules.contains("bulwark_slo:error_ratio:rate5s"), "{rules}");
    assert!(
        rules.contains("bulwark_slo:error_ratio:rate417ms"),
        "{rules}"
    );
    // 417ms / 5 = 83ms, rounded down to 20ms.
    assert!(test.contains("evaluation_interval: 20ms"), "{test}");
    let (rules, test) = check_and_test_slos(&slos[1..]);
    assert!(
        rules.contains("bulwark_slo:error_ratio:rate83ms"),
        "{rules}"
    );
    assert!(rules.contains("bulwark_slo:error_ratio:rate7ms"), "{rules}");
    // 7ms / 5, rounded down to 1ms.
    assert!(test.contains("evaluation_interval: 1ms"), "{test}");
    // Both in one file is valid too, only slower to test: check it without testing it.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("rules.yml"), observe::slo::rules(&slos)).expect("write rules");
    promtool(dir.path(), &["check", "rules", "rules.yml"]);
}

#[test]
fn no_slos_give_valid_empty_files() {
    let stack = stack("[services.web]\nrun = [\"x\"]\n");
    let (rules, test) = check_and_test(&stack);
    assert!(rules.contains("groups: []"), "{rules}");
    assert!(test.contains("tests: []"), "{test}");
}

#[test]
fn the_rule_file_reads_well() {
    // A golden excerpt: what a user sees for the most common SLO.
    let stack = stack(
        r#"
[services.web]
run = ["x"]
expose = { listen = "127.0.0.1:8080" }

[[services.web.slo]]
name = "availability"
kind = "availability"
objective = 99.9
alerts = { ticket = false }
"#,
    );
    let text = rules(&stack_slos(&stack));
    let expected = r#"groups:
  # web/availability: availability 99.9 % over 30d
  - name: "bulwark-slo-web-availability"
    rules:
      - record: "bulwark_slo:error_ratio:rate5m"
        expr: |
          sum by (service, slo) (rate(bulwark_slo_errors_total{service="web", slo="availability"}[5m]))
          /
          sum by (service, slo) (rate(bulwark_slo_requests_total{service="web", slo="availability"}[5m]))
      - record: "bulwark_slo:error_ratio:rate30m"
        expr: |
          sum by (service, slo) (rate(bulwark_slo_errors_total{service="web", slo="availability"}[30m]))
          /
          sum by (service, slo) (rate(bulwark_slo_requests_total{service="web", slo="availability"}[30m]))
      - record: "bulwark_slo:error_ratio:rate1h"
        expr: |
          sum by (service, slo) (rate(bulwark_slo_errors_total{service="web", slo="availability"}[1h]))
          /
          sum by (service, slo) (rate(bulwark_slo_requests_total{service="web", slo="availability"}[1h]))
      - record: "bulwark_slo:error_ratio:rate6h"
        expr: |
          sum by (service, slo) (rate(bulwark_slo_errors_total{service="web", slo="availability"}[6h]))
          /
          sum by (service, slo) (rate(bulwark_slo_requests_total{service="web", slo="availability"}[6h]))
      - alert: "BulwarkSloBurnRate"
        expr: |
          (
              bulwark_slo:error_ratio:rate1h{service="web", slo="availability"} > (14.4 * (1 - 0.999))
            and on (service, slo)
              bulwark_slo:error_ratio:rate5m{service="web", slo="availability"} > (14.4 * (1 - 0.999))
            and on (service, slo)
              sum by (service, slo) (increase(bulwark_slo_requests_total{service="web", slo="availability"}[1h])) >= 10
          )
          or
          (
              bulwark_slo:error_ratio:rate6h{service="web", slo="availability"} > (6 * (1 - 0.999))
            and on (service, slo)
              bulwark_slo:error_ratio:rate30m{service="web", slo="availability"} > (6 * (1 - 0.999))
            and on (service, slo)
              sum by (service, slo) (increase(bulwark_slo_requests_total{service="web", slo="availability"}[6h])) >= 10
          )
        labels:
          severity: "page"
          service: "web"
          slo: "availability"
        annotations:
          summary: "web/availability: error budget burning fast"
          description: "SLO availability 99.9 % over 30d: burn rate above 14.4x over 1h and 5m, or above 6x over 6h and 30m."
"#;
    let body = &text[text.find("groups:").expect("groups")..];
    assert_eq!(body, expected, "\n{text}");
}
