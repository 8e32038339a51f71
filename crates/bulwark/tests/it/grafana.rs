//! `bulwark grafana`: every query of the dashboard reads metrics a running bulwark exports,
//! is valid PromQL and returns data, checked by the real promtool against scrapes of a
//! real stack under load.

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// Scrapes of `/metrics` recorded in order: each series' values, `None` where a scrape
/// lacked it.
struct Recorded {
    series: BTreeMap<String, Vec<Option<f64>>>,
    scrapes: usize,
}

impl Recorded {
    fn add(&mut self, text: &str) {
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap();
            let values = self
                .series
                .entry(series.to_owned())
                .or_insert_with(|| vec![None; self.scrapes]);
            values.push(value.is_finite().then_some(value));
        }
        self.scrapes += 1;
        for v in self.series.values_mut() {
            v.resize(self.scrapes, None);
        }
    }

    /// The metric names of every sample.
    fn names(&self) -> HashSet<String> {
        self.series
            .keys()
            .map(|s| s.split('{').next().unwrap().to_owned())
            .collect()
    }

    /// A `promtool test rules` file: the recorded values 15 s apart as input series, and
    /// for each `(name, expr)` a test that it returns at least one sample at the last
    /// scrape.
    fn promtool_test(&self, exprs: &[(String, String)]) -> String {
        let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let mut out = String::from(
            "rule_files: []\nevaluation_interval: 15s\ntests:\n  - interval: 15s\n    input_series:\n",
        );
        for (series, values) in &self.series {
            let values: Vec<String> = values
                .iter()
                .map(|v| v.map_or("_".to_owned(), |v| v.to_string()))
                .collect();
            out.push_str(&format!(
                "      - series: {}\n        values: {}\n",
                q(series),
                q(&values.join(" "))
            ));
        }
        out.push_str("    promql_expr_test:\n");
        let at = (self.scrapes - 1) * 15;
        for (_, expr) in exprs {
            out.push_str(&format!(
                "      - expr: {}\n        eval_time: {at}s\n        exp_samples:\n          - labels: '{{}}'\n            value: 1\n",
                q(&format!("count({expr}) > bool 0"))
            ));
        }
        out
    }
}

/// Every query of the dashboard as `(panel title, PromQL)`, with the variables a user's
/// Grafana would fill in.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = vec![];
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$service", "web");
            out.push((p["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    out
}

/// Runs `promtool test rules` on `test` in `dir`: success and its output.
fn promtool_test(dir: &std::path::Path, test: &str) -> (bool, String) {
    std::fs::write(dir.join("grafana.test.yml"), test).unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules", "grafana.test.yml"])
        .current_dir(dir)
        .output()
        .expect("promtool is missing: install Debian's prometheus package (scripts/test does)");
    (out.status.success(), output_text(&out))
}

#[test]
fn grafana_for_a_stack_file_leaves_out_slo_panels_without_an_slo_and_refuses_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stack.toml");
    std::fs::write(&file, Demo::new("web").build()).unwrap();
    let titles = |file: &std::path::Path| -> Vec<String> {
        let out = Command::new(BULWARK)
            .args(["grafana", "-f"])
            .arg(file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        let d: Value = serde_json::from_slice(&out.stdout).unwrap();
        d["panels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["title"].as_str().unwrap().to_owned())
            .collect()
    };
    let without = titles(&file);
    assert!(without.iter().all(|t| !t.contains("SLO")), "{without:?}");
    assert!(without.iter().any(|t| t == "Request rate"), "{without:?}");
    std::fs::write(
        &file,
        Demo::new("web")
            .expose(free_port())
            .with("[[services.web.slo]]\nname = \"a\"\nkind = \"availability\"\nobjective = 99.0")
            .build(),
    )
    .unwrap();
    let with = titles(&file);
    assert!(with.iter().any(|t| t == "SLO burn rate"), "{with:?}");

    std::fs::write(&file, "[services.web]\nreplicas = \"two\"\n").unwrap();
    let out = Command::new(BULWARK)
        .args(["grafana", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(out.stdout.is_empty());
    assert!(
        output_text(&out).contains("stack.toml:2"),
        "{}",
        output_text(&out)
    );
}

#[test]
fn every_panel_reads_exported_metrics_and_returns_data_in_promtool() {
    let out = Command::new(BULWARK).arg("grafana").output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let dashboard: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dashboard["schemaVersion"], 39);
    let vars = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter()
            .any(|v| v["name"] == "datasource" && v["query"] == "prometheus")
    );
    let service = vars.iter().find(|v| v["name"] == "service").unwrap();
    assert!(
        service["definition"]
            .as_str()
            .unwrap()
            .starts_with("label_values(bulwark_"),
        "{service}"
    );

    let port = free_port();
    let toml = crate::series::watched_web(port);
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 2);
    let load = Load::start(&format!("http://127.0.0.1:{port}/"), 100, "60s");

    // Six scrapes, each once more requests were answered and the replicas' resources
    // sampled.
    let mut recorded = Recorded {
        series: BTreeMap::new(),
        scrapes: 0,
    };
    let answered = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("bulwark_proxy_requests_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let mut last = 0.0;
    for i in 0..6 {
        let text = eventually(&format!("scrape {i}"), Duration::from_secs(30), || {
            let (code, text) = get(stack.api, "/metrics");
            (code == 200
                && answered(&text) > last
                && text.contains("bulwark_replica_resident_memory_bytes{"))
            .then_some(text)
        });
        last = answered(&text);
        recorded.add(&text);
    }
    drop(load);

    // Every metric a query reads is one the running bulwark exports.
    let exported = recorded.names();
    let missing = observe::grafana::missing(&dashboard, &exported);
    assert!(missing.is_empty(), "not on /metrics: {missing:?}");
    let bad = serde_json::json!({"panels": [{"title": "bad", "targets": [
        {"expr": "rate(bulwark_no_such_metric_total[1m])"}
    ]}]});
    assert_eq!(
        observe::grafana::missing(&bad, &exported),
        [("bad", "bulwark_no_such_metric_total".to_owned())],
        "the check finds a metric that does not exist"
    );

    // Every query parses and returns data over the recorded scrapes, in promtool.
    let exprs = queries(&dashboard);
    assert!(exprs.len() >= 13, "{exprs:?}");
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = promtool_test(dir.path(), &recorded.promtool_test(&exprs));
    assert!(ok, "promtool test rules:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");

    // The same check fails for a query that returns nothing, and for one that is not
    // PromQL.
    for (what, expr) in [
        ("no data", "rate(bulwark_no_such_metric_total[1m])"),
        ("not PromQL", "sum by (service (bulwark_replica_ready)"),
    ] {
        let one = [("bad".to_owned(), expr.to_owned())];
        let (ok, text) = promtool_test(dir.path(), &recorded.promtool_test(&one));
        assert!(!ok, "{what}: promtool passed {expr}:\n{text}");
    }
}
