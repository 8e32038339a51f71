//! A Grafana dashboard of the metrics bulwark exports on `/metrics` (`bulwark grafana`),
//! for users who already run Prometheus: one row of the [`PANELS`] table per panel, made
//! into JSON here, not kept as a JSON blob that could drift from the metric names.
//!
//! Queries use two dashboard variables: `$datasource` (a Prometheus data source) and
//! `$service` (multi-value, from `label_values(bulwark_replica_ready, service)`), and
//! Grafana's `$__rate_interval`.

use serde_json::{Value, json};

/// One panel: its title, unit (Grafana's unit ids), what it shows, and its queries as
/// `(legend, PromQL)`.
pub struct Panel {
    pub title: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
    pub queries: &'static [(&'static str, &'static str)],
    /// Shown only for a stack with an SLO (when the dashboard is made for one).
    pub slo: bool,
}

/// Every panel, in order (two per row).
pub const PANELS: &[Panel] = &[
    Panel {
        title: "Request rate",
        unit: "reqps",
        description: "Requests answered by the proxy, per second.",
        queries: &[(
            "{{service}}",
            r#"sum by (service) (rate(bulwark_proxy_requests_total{service=~"$service"}[$__rate_interval]))"#,
        )],
        slo: false,
    },
    Panel {
        title: "Error ratio (5xx)",
        unit: "percentunit",
        description: "Share of answers that were 5xx, bulwark's own 502/503/504 included.",
        queries: &[(
            "{{service}}",
            r#"sum by (service) (rate(bulwark_proxy_requests_total{service=~"$service", status_class="5xx"}[$__rate_interval])) / sum by (service) (rate(bulwark_proxy_requests_total{service=~"$service"}[$__rate_interval]))"#,
        )],
        slo: false,
    },
    Panel {
        title: "Latency p50 / p99",
        unit: "s",
        description: "Time from request received to response headers sent.",
        queries: &[
            (
                "{{service}} p50",
                r#"histogram_quantile(0.5, sum by (service, le) (rate(http_server_request_duration_seconds_bucket{service=~"$service"}[$__rate_interval])))"#,
            ),
            (
                "{{service}} p99",
                r#"histogram_quantile(0.99, sum by (service, le) (rate(http_server_request_duration_seconds_bucket{service=~"$service"}[$__rate_interval])))"#,
            ),
        ],
        slo: false,
    },
    Panel {
        title: "In flight",
        unit: "short",
        description: "Requests the proxy is working on (saturation).",
        queries: &[(
            "{{service}}",
            r#"sum by (service) (bulwark_proxy_inflight_requests{service=~"$service"})"#,
        )],
        slo: false,
    },
    Panel {
        title: "Replicas ready",
        unit: "short",
        description: "Replicas in their service's balancer.",
        queries: &[(
            "{{service}}",
            r#"sum by (service) (bulwark_replica_ready{service=~"$service"})"#,
        )],
        slo: false,
    },
    Panel {
        title: "Restarts",
        unit: "short",
        description: "Restarts of each replica (crashes, failed probes, requested restarts) within the interval.",
        queries: &[(
            "{{service}}/{{replica}}",
            r#"sum by (service, replica) (increase(bulwark_replica_restarts_total{service=~"$service"}[$__rate_interval]))"#,
        )],
        slo: false,
    },
    Panel {
        title: "Ejections",
        unit: "short",
        description: "Replicas ejected by outlier detection now, and ejections within the interval.",
        queries: &[
            (
                "{{service}} ejected now",
                r#"sum by (service) (bulwark_proxy_replica_state{service=~"$service", state="ejected"})"#,
            ),
            (
                "{{service}} ejections",
                r#"sum by (service) (increase(bulwark_proxy_policy_events_total{service=~"$service", event="ejection"}[$__rate_interval]))"#,
            ),
        ],
        slo: false,
    },
    Panel {
        title: "Tries per replica",
        unit: "reqps",
        description: "Tries the proxy sent to each replica (retries and hedges included), per second.",
        queries: &[(
            "{{service}}/{{replica}}",
            r#"sum by (service, replica) (rate(bulwark_proxy_replica_requests_total{service=~"$service"}[$__rate_interval]))"#,
        )],
        slo: false,
    },
    Panel {
        title: "SLO error budget left",
        unit: "percentunit",
        description: "Fraction of each SLO's error budget left over its period (negative once overspent).",
        queries: &[(
            "{{service}}/{{slo}}",
            r#"bulwark_slo_error_budget_remaining{service=~"$service"}"#,
        )],
        slo: true,
    },
    Panel {
        title: "SLO burn rate",
        unit: "short",
        description: "How fast each SLO's budget burns (1: spent exactly at the period's end) over the page alert's windows (the SRE Workbook's 5m and 1h, scaled to the SLO's period).",
        queries: &[(
            "{{service}}/{{slo}} {{window}}",
            r#"bulwark_slo_burn_rate{service=~"$service", window=~"5m|1h"}"#,
        )],
        slo: true,
    },
    Panel {
        title: "Firing alerts",
        unit: "short",
        description: "Alerts firing in bulwark's alert book (burn rates, no data, backups, rollouts).",
        queries: &[(
            "{{service}} {{severity}}",
            r#"sum by (service, severity) (bulwark_alerts_firing{service=~"$service"})"#,
        )],
        slo: false,
    },
    Panel {
        title: "CPU per replica",
        unit: "short",
        description: "Cores used by each replica's process.",
        queries: &[(
            "{{service}}/{{replica}}",
            r#"sum by (service, replica) (rate(bulwark_replica_cpu_seconds_total{service=~"$service"}[$__rate_interval]))"#,
        )],
        slo: false,
    },
    Panel {
        title: "Memory (RSS) per replica",
        unit: "bytes",
        description: "Resident memory of each replica's process.",
        queries: &[(
            "{{service}}/{{replica}}",
            r#"sum by (service, replica) (bulwark_replica_resident_memory_bytes{service=~"$service"})"#,
        )],
        slo: false,
    },
];

/// The dashboard's JSON (Grafana schema version 39). `with_slo`: include the SLO panels.
pub fn dashboard(title: &str, with_slo: bool) -> Value {
    let panels: Vec<Value> = PANELS
        .iter()
        .filter(|p| with_slo || !p.slo)
        .enumerate()
        .map(|(i, p)| panel(i, p))
        .collect();
    json!({
        "title": title,
        "uid": "bulwark",
        "tags": ["bulwark"],
        "schemaVersion": 39,
        "version": 1,
        "editable": true,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "templating": {"list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0
            },
            {
                "name": "service",
                "label": "Service",
                "type": "query",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "query": {"query": "label_values(bulwark_replica_ready, service)", "refId": "service"},
                "definition": "label_values(bulwark_replica_ready, service)",
                "refresh": 2,
                "multi": true,
                "includeAll": true,
                "allValue": ".*",
                "current": {"selected": true, "text": ["All"], "value": ["$__all"]},
                "sort": 1,
                "hide": 0
            }
        ]},
        "panels": panels,
    })
}

fn panel(i: usize, p: &Panel) -> Value {
    let targets: Vec<Value> = p
        .queries
        .iter()
        .zip('A'..)
        .map(|((legend, expr), id)| {
            json!({
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": expr,
                "legendFormat": legend,
                "refId": id.to_string(),
            })
        })
        .collect();
    json!({
        "id": i + 1,
        "type": "timeseries",
        "title": p.title,
        "description": p.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i / 2) * 8},
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": targets,
    })
}

/// PromQL words that are not metric names: functions are recognised by the `(` after
/// them; these are the rest, and the aggregations (which may be followed by `by (...)`).
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
];

/// The metric names an expression reads: identifiers outside label matchers (`{...}`),
/// range selectors (`[...]`) and grouping lists (`by (...)`, `on (...)`...), that are
/// neither a function nor a keyword. Good enough for the expressions of [`PANELS`]; not a
/// PromQL parser (promtool is the parser in the tests).
pub fn metrics_of(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    // Skips from an opening bracket to its closing one (quotes respected).
    let skip = |mut i: usize, open: char, close: char| {
        let mut depth = 0;
        let mut quoted = false;
        while i < chars.len() {
            let c = chars[i];
            if quoted {
                if c == '\\' {
                    i += 1;
                } else if c == '"' {
                    quoted = false;
                }
            } else if c == '"' {
                quoted = true;
            } else if c == open {
                depth += 1;
            } else if c == close {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            i += 1;
        }
        i
    };
    let mut skip_group = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => i = skip(i, '{', '}'),
            '[' => i = skip(i, '[', ']'),
            '"' => {
                // A string outside a selector (`label_replace`'s arguments).
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '(' if skip_group => {
                i = skip(i, '(', ')');
                skip_group = false;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                if matches!(
                    word.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) {
                    skip_group = true;
                } else if next != Some(&'(') && !KEYWORDS.contains(&word.as_str()) {
                    names.push(word);
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // A number (`0.99`, `1e3`): its letters are not a name.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Every `(panel title, metric)` whose metric is not in `exported` (the sample names of a
/// scrape of `/metrics`).
pub fn missing<'a>(
    dashboard: &'a Value,
    exported: &std::collections::HashSet<String>,
) -> Vec<(&'a str, String)> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        let title = p["title"].as_str().unwrap_or("?");
        for t in p["targets"].as_array().into_iter().flatten() {
            for m in metrics_of(t["expr"].as_str().unwrap_or("")) {
                if !exported.contains(&m) {
                    out.push((title, m));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_what_an_expression_reads() {
        let e = r#"histogram_quantile(0.99, sum by (service, le) (rate(http_server_request_duration_seconds_bucket{service=~"$service", le!="a{b}"}[$__rate_interval])))"#;
        assert_eq!(
            metrics_of(e),
            ["http_server_request_duration_seconds_bucket"]
        );
        let e = r#"sum by (service) (rate(a_total{x="5xx"}[1m])) / on (service) group_left sum without (replica) (b) > bool 0.5e1 or c:recorded offset 5m"#;
        assert_eq!(metrics_of(e), ["a_total", "b", "c:recorded"]);
        assert_eq!(metrics_of("up"), ["up"]);
    }

    #[test]
    fn a_panel_naming_a_metric_not_exported_is_found() {
        let d = dashboard("t", true);
        let mut exported: std::collections::HashSet<String> = PANELS
            .iter()
            .flat_map(|p| p.queries.iter().flat_map(|(_, e)| metrics_of(e)))
            .collect();
        assert!(missing(&d, &exported).is_empty());
        exported.remove("bulwark_replica_ready");
        assert_eq!(
            missing(&d, &exported),
            [("Replicas ready", "bulwark_replica_ready".to_owned())]
        );
    }

    #[test]
    fn the_dashboard_has_its_variables_and_every_panel_a_place_and_a_query() {
        let d = dashboard("bulwark", true);
        assert_eq!(d["schemaVersion"], 39);
        let vars = d["templating"]["list"].as_array().unwrap();
        assert_eq!(vars[0]["type"], "datasource");
        assert_eq!(vars[0]["query"], "prometheus");
        assert!(
            vars[1]["definition"]
                .as_str()
                .unwrap()
                .starts_with("label_values(")
        );
        let panels = d["panels"].as_array().unwrap();
        assert_eq!(panels.len(), PANELS.len());
        let ids: std::collections::HashSet<u64> =
            panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
        assert_eq!(ids.len(), panels.len(), "ids are unique");
        for p in panels {
            assert!(!p["targets"].as_array().unwrap().is_empty(), "{p}");
            assert_eq!(p["datasource"]["uid"], "${datasource}");
        }
        let without = dashboard("bulwark", false);
        let n = without["panels"].as_array().unwrap().len();
        assert_eq!(n, PANELS.iter().filter(|p| !p.slo).count());
    }
}
