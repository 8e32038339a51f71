//! The scorecard from the outside: the score formula on hand-computed examples, the
//! hypothesis's verdicts, the run's verdict, and each renderer read back by a real parser.

use std::collections::BTreeMap;

use verify::{
    Case, Check, Hypothesis, P99Bound, Scorecard, default_weight, json, junit, markdown, score,
    table, write_all,
};

/// A case with the given weight and checks (true = passed), as a judge would leave it.
fn judged(service: &str, fault: &str, weight: u32, checks: &[bool]) -> Case {
    let mut case = Case::new(service, fault, format!("{fault} of {service}"));
    case.weight = weight;
    case.checks = checks
        .iter()
        .enumerate()
        .map(|(i, &passed)| Check {
            name: format!("check {i}"),
            passed,
            detail: if passed { "ok" } else { "not ok" }.to_owned(),
        })
        .collect();
    case.passed = checks.iter().all(|&passed| passed) && !checks.is_empty();
    case
}

/// A measured case that meets the default hypothesis: nothing lost, p99 300 ms against a
/// 100 ms baseline (bound 500 ms), recovered in 4.2 s.
fn measured() -> Case {
    let mut case = Case::new("web", "kill", "SIGKILL of replica web/1");
    case.sent = 1200;
    case.detect_ms = Some(120);
    case.recover_ms = Some(4200);
    case.p99_ms = 300.0;
    case.baseline_p99_ms = 100.0;
    case.budget_spent = Some(0.125);
    case
}

fn assert_close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-9, "got {got}, want {want}");
}

fn failed_names(case: &Case) -> Vec<&str> {
    case.failed_checks()
        .map(|check| check.name.as_str())
        .collect()
}

/// Two passed cases and a failed one, of different services and weights.
fn sample() -> Scorecard {
    let hypothesis = Hypothesis::default();
    let mut cases = Vec::new();
    for (service, fault) in [("web", "kill"), ("api", "http-abort"), ("db", "stop")] {
        let mut case = measured();
        case.service = service.to_owned();
        case.fault = fault.to_owned();
        case.weight = default_weight(fault);
        case.description = format!("{fault} of {service}/1");
        cases.push(case);
    }
    cases[2].lost = 3;
    cases[2].errors = BTreeMap::from([("503".to_owned(), 2), ("connect".to_owned(), 1)]);
    cases[2].recover_ms = None;
    for case in &mut cases {
        hypothesis.judge(case);
    }
    Scorecard::new(
        "stacks/shop.toml",
        "2026-12-02T12:45:56Z",
        200.0,
        cases,
        Some(50.0),
    )
}

#[test]
fn score_weighs_each_case_by_its_share_of_passed_checks() {
    // (10 × 200/3 + 5 × 100) / 15 = 3500 / 45
    let cases = [
        judged("web", "kill", 10, &[true, true, false]),
        judged("api", "http-delay", 5, &[true, true, true]),
    ];
    assert_close(score(&cases), 3500.0 / 45.0);
    // Swapping the weights moves the score towards the other case: (5 × 200/3 + 10 × 100) / 15.
    let cases = [
        judged("web", "kill", 5, &[true, true, false]),
        judged("api", "http-delay", 10, &[true, true, true]),
    ];
    assert_close(score(&cases), 4000.0 / 45.0);
}

#[test]
fn score_counts_a_case_without_checks_as_zero() {
    // (4 × 25 + 6 × 0) / 10
    let cases = [
        judged("web", "kill", 4, &[true, false, false, false]),
        judged("api", "stop", 6, &[]),
    ];
    assert_close(cases[0].probe_success_pct(), 25.0);
    assert_close(cases[1].probe_success_pct(), 0.0);
    assert_close(score(&cases), 10.0);
}

#[test]
fn score_with_equal_weights_is_the_mean_and_nothing_scores_zero() {
    let cases = [
        judged("a", "kill", 7, &[true, true]),
        judged("b", "kill", 7, &[false, false]),
        judged("c", "kill", 7, &[true, false]),
    ];
    assert_close(score(&cases), 50.0);
    assert_close(score(&[]), 0.0);
    assert_close(score(&[judged("a", "kill", 0, &[true])]), 0.0);
}

#[test]
fn default_weights_per_fault_kind() {
    let weights: Vec<u32> = [
        "kill",
        "stop",
        "http-abort",
        "http-reset",
        "http-delay",
        "pause",
    ]
    .into_iter()
    .map(default_weight)
    .collect();
    assert_eq!(weights, [10, 8, 6, 6, 4, 5]);
    assert_eq!(Case::new("web", "stop", "").weight, 8);
}

#[test]
fn judge_passes_a_case_that_met_every_item() {
    let mut case = measured();
    case.checks = vec![Check {
        name: "stale".into(),
        passed: false,
        detail: String::new(),
    }];
    Hypothesis::default().judge(&mut case);
    let names: Vec<&str> = case
        .checks
        .iter()
        .map(|check| check.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "no request lost",
            "p99 at most 500 ms",
            "recovered within 30 s"
        ]
    );
    assert!(
        case.checks.iter().all(|check| check.passed),
        "{:?}",
        case.checks
    );
    assert!(case.passed);
    assert_eq!(case.checks[0].detail, "0 of 1200 lost");
    assert_eq!(case.checks[2].detail, "recovered in 4.2 s");
}

#[test]
fn judge_fails_a_case_that_lost_requests() {
    let mut case = measured();
    case.lost = 3;
    case.errors = BTreeMap::from([("503".to_owned(), 2), ("timeout".to_owned(), 1)]);
    Hypothesis::default().judge(&mut case);
    assert!(!case.passed);
    assert_eq!(failed_names(&case), ["no request lost"]);
    assert_eq!(case.checks[0].detail, "3 of 1200 lost (503: 2, timeout: 1)");

    let tolerant = Hypothesis {
        max_lost: 3,
        ..Hypothesis::default()
    };
    tolerant.judge(&mut case);
    assert!(case.passed, "{:?}", case.checks);
    assert_eq!(case.checks[0].name, "at most 3 requests lost");
}

#[test]
fn judge_bounds_p99_by_five_times_the_baseline_with_a_250_ms_floor() {
    let hypothesis = Hypothesis::default();
    // (baseline, p99, passes): the bound is 500 ms for a 100 ms baseline, 250 ms for 10 ms.
    let cases = [
        (100.0, 500.0, true),
        (100.0, 501.0, false),
        (10.0, 249.0, true),
        (10.0, 260.0, false),
        (100.0, f64::NAN, false),
    ];
    for (baseline, p99, passes) in cases {
        let mut case = measured();
        case.baseline_p99_ms = baseline;
        case.p99_ms = p99;
        hypothesis.judge(&mut case);
        assert_eq!(case.passed, passes, "baseline {baseline}, p99 {p99}");
        assert_eq!(
            case.checks[1].passed, passes,
            "baseline {baseline}, p99 {p99}"
        );
    }
    let mut case = measured();
    case.baseline_p99_ms = 10.0;
    case.p99_ms = 260.0;
    hypothesis.judge(&mut case);
    assert_eq!(failed_names(&case), ["p99 at most 250 ms"]);
    assert_eq!(
        case.checks[1].detail,
        "p99 260 ms during the fault, 10 ms before; bound max(5 × baseline, 250 ms)"
    );
}

#[test]
fn judge_with_a_fixed_p99_bound_ignores_the_baseline() {
    let hypothesis = Hypothesis {
        max_p99: P99Bound::Fixed(200.0),
        ..Hypothesis::default()
    };
    assert_close(hypothesis.max_p99.bound_ms(1000.0), 200.0);
    let mut case = measured();
    hypothesis.judge(&mut case);
    assert_eq!(failed_names(&case), ["p99 at most 200 ms"]);
}

#[test]
fn judge_fails_a_case_that_did_not_recover_or_recovered_late() {
    let mut case = measured();
    case.recover_ms = None;
    Hypothesis::default().judge(&mut case);
    assert!(!case.passed);
    assert_eq!(failed_names(&case), ["recovered within 30 s"]);
    assert_eq!(
        case.checks[2].detail,
        "did not recover within the observation window"
    );

    case.recover_ms = Some(30_001);
    Hypothesis::default().judge(&mut case);
    assert_eq!(failed_names(&case), ["recovered within 30 s"]);
    case.recover_ms = Some(30_000);
    Hypothesis::default().judge(&mut case);
    assert!(case.passed, "{:?}", case.checks);
}

#[test]
fn a_run_passes_only_if_every_case_passed_and_the_score_reached_the_minimum() {
    let passed = || {
        vec![
            judged("web", "kill", 10, &[true, true, true]),
            judged("api", "stop", 8, &[true, true]),
        ]
    };
    let card = Scorecard::new("s.toml", "t", 100.0, passed(), None);
    assert_close(card.score, 100.0);
    assert!(card.passed);
    // The minimum is inclusive.
    assert!(Scorecard::new("s.toml", "t", 100.0, passed(), Some(100.0)).passed);

    // 2 of 3 checks of the weight-10 case: (10 × 200/3 + 8 × 100) / 18 = 81.5, above the
    // minimum, but a failed case fails the run.
    let mut cases = passed();
    cases[0] = judged("web", "kill", 10, &[true, true, false]);
    let card = Scorecard::new("s.toml", "t", 100.0, cases.clone(), Some(80.0));
    assert_close(card.score, 4400.0 / 54.0);
    assert!(!card.passed);
    assert!(!Scorecard::new("s.toml", "t", 100.0, cases, None).passed);

    // Nothing ran: the score is 0, which fails a minimum and passes without one.
    assert!(!Scorecard::new("s.toml", "t", 100.0, Vec::new(), Some(50.0)).passed);
    assert!(Scorecard::new("s.toml", "t", 100.0, Vec::new(), None).passed);
}

#[test]
fn table_aligns_the_columns_and_ends_with_the_score() {
    let card = sample();
    let text = table(&card);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 1 + 3 + 1, "{text}");
    assert_eq!(
        lines[0],
        "bulwark verify of stacks/shop.toml, started 2026-12-02T12:45:56Z, 200 req/s"
    );
    assert!(lines[1].starts_with("SERVICE  FAULT "), "{text}");
    // Every row has its verdict in the same column, the last one.
    let verdict = lines[1].find("VERDICT").expect("a VERDICT column");
    for row in &lines[2..5] {
        assert!(matches!(&row[verdict..], "PASS" | "FAIL"), "{text}");
    }
    assert_eq!(
        lines[4].split_whitespace().collect::<Vec<_>>(),
        [
            "db", "stop", "1200", "3", "120", "ms", "-", "300", "ms", "12.5%", "FAIL"
        ]
    );
    // (10 × 100 + 6 × 100 + 8 × 100/3) / 24
    assert_close(card.score, 5600.0 / 72.0);
    assert_eq!(lines[5], "score 77.8 / 100 (min 50): FAIL");
}

#[test]
fn markdown_has_one_row_per_case_and_lists_the_failed_checks() {
    let mut card = sample();
    card.cases[0].service = "we|b".to_owned();
    let text = markdown(&card);
    let rows: Vec<&str> = text.lines().filter(|line| line.starts_with('|')).collect();
    assert_eq!(rows.len(), 2 + card.cases.len(), "{text}");
    assert!(rows[1].starts_with("| --- | --- | ---: |"), "{text}");
    for (row, case) in rows[2..].iter().zip(&card.cases) {
        let service = case.service.replace('|', "\\|");
        assert!(
            row.starts_with(&format!("| {service} | {} |", case.fault)),
            "{text}"
        );
        // The escaped pipe does not add a column: 9 cells, 10 unescaped pipes.
        assert_eq!(row.replace("\\|", "").matches('|').count(), 10, "{row}");
    }
    assert!(
        text.contains("**score 77.8 / 100 (min 50): FAIL**"),
        "{text}"
    );
    let failed = text
        .split("## Failed checks")
        .nth(1)
        .expect("a failed-checks section");
    let items: Vec<&str> = failed
        .lines()
        .filter(|line| line.starts_with("- "))
        .collect();
    assert_eq!(items.len(), 2, "{failed}");
    assert!(
        items[0].starts_with("- db / stop (stop of db/1): no request lost: 3 of 1200 lost"),
        "{failed}"
    );
    assert!(
        items[1].contains("recovered within 30 s: did not recover within the observation window"),
        "{failed}"
    );

    let all_passed = Scorecard::new("s.toml", "t", 1.0, vec![measured_judged()], None);
    assert!(markdown(&all_passed).contains("None: every check passed."));
}

fn measured_judged() -> Case {
    let mut case = measured();
    Hypothesis::default().judge(&mut case);
    case
}

#[test]
fn json_round_trips() {
    let mut card = sample();
    card.cases[1].budget_spent = None;
    card.cases[1].detect_ms = None;
    let text = json(&card);
    let back: Scorecard = serde_json::from_str(&text).expect("the JSON parses back");
    assert_eq!(back, card);
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(value["cases"][2]["errors"]["503"], 2);
    assert_eq!(value["min_score"], 50.0);
}

#[test]
fn junit_parses_with_one_testcase_per_case_and_a_failure_per_failed_case() {
    let mut card = sample();
    let nasty = r#"we<b> & "co" 'x'"#;
    card.cases[0].service = nasty.to_owned();
    card.cases[0].description = "line one\nline two\u{1b}".to_owned();
    let xml = junit(&card);
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suites: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    assert_eq!(suites.len(), 1);
    let suite = suites[0];
    assert_eq!(suite.attribute("name"), Some("bulwark verify"));
    assert_eq!(suite.attribute("tests"), Some("3"));
    assert_eq!(suite.attribute("failures"), Some("1"));
    // 1200 requests at 200 req/s, three times.
    assert_eq!(suite.attribute("time"), Some("18.000"));

    let cases: Vec<_> = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 3);
    assert_eq!(cases[0].attribute("classname"), Some(nasty));
    assert_eq!(cases[0].attribute("name"), Some("kill"));
    assert_eq!(cases[0].attribute("time"), Some("6.000"));
    let failures: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .collect();
    assert_eq!(failures.len(), 1);
    assert_eq!(
        failures[0].parent().and_then(|n| n.attribute("classname")),
        Some("db")
    );
    let message = failures[0].attribute("message").expect("a failure message");
    assert!(
        message.starts_with("no request lost: 3 of 1200 lost"),
        "{message}"
    );
    assert!(
        message.contains("; recovered within 30 s: did not recover"),
        "{message}"
    );

    let out = cases[0]
        .children()
        .find(|n| n.has_tag_name("system-out"))
        .and_then(|n| n.text())
        .expect("system-out");
    assert!(
        out.starts_with("line one\nline two\u{fffd}\nsent 1200, lost 0"),
        "{out}"
    );
    let property = |name| {
        suite
            .descendants()
            .find(|n| n.has_tag_name("property") && n.attribute("name") == Some(name))
            .and_then(|n| n.attribute("value"))
    };
    assert_eq!(property("stack"), Some("stacks/shop.toml"));
    assert_eq!(property("score"), Some("77.8"));
}

#[test]
fn write_all_writes_the_three_reports_into_a_new_directory() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let target = dir.path().join("nested/reports");
    let card = sample();
    let paths = write_all(&card, &target).expect("reports written");
    let names: Vec<_> = paths
        .iter()
        .map(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(names, ["verify.json", "verify.md", "verify.junit.xml"]);
    let read = |i: usize| std::fs::read_to_string(&paths[i]).expect("a written report");
    assert_eq!(read(0), json(&card));
    assert_eq!(read(1), markdown(&card));
    assert_eq!(read(2), junit(&card));
}
