//! Observability: the metrics registry and its exposition, and metrics derived from the
//! event bus.
//!
//! Architecture invariant: `observe` records and reports; it never decides remediation.
#![forbid(unsafe_code)]

pub mod slo;

pub mod alert;
pub mod grafana;
pub mod incident;
pub mod journal;
pub mod notify;
pub mod plane;
pub mod resources;
pub mod series;

use std::sync::Arc;

use bus::Bus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The content type of [`encode_openmetrics`]'s output.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`encode_prometheus`]'s output.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every registered metric in the OpenMetrics text format.
pub fn encode_openmetrics(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// Renders every registered metric in the Prometheus text format 0.0.4, which is what
/// Prometheus' own tools (`promtool check metrics`) and most scrapers read by default.
///
/// The two formats differ in what matters here only in naming: OpenMetrics names a counter
/// family without `_total` (`# TYPE x counter`, samples `x_total`) and ends with `# EOF`;
/// the Prometheus format names the family after its samples.
pub fn encode_prometheus(registry: &Registry) -> String {
    let om = encode_openmetrics(registry);
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + counters.len() * 16);
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        if let Some((prefix, rest)) = meta
            && let Some((name, tail)) = rest.split_once(' ')
            && counters.contains(name)
        {
            out.push_str(prefix);
            out.push_str(name);
            out.push_str("_total ");
            out.push_str(tail);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    r#type: String,
}

/// Counts every event on the bus by type (`bulwark_events_total{type=...}`).
pub fn count_events(bus: &Arc<Bus>, registry: &mut Registry) -> tokio::task::JoinHandle<()> {
    let family = Family::<EventLabels, Counter>::default();
    registry.register(
        "bulwark_events",
        "Events published on bulwark's bus, by type",
        family.clone(),
    );
    let mut live = bus.follow("event counter");
    tokio::spawn(async move {
        while let Some(event) = live.next().await {
            let name = serde_name(&event.kind);
            family.get_or_create(&EventLabels { r#type: name }).inc();
        }
    })
}

fn serde_name(kind: &bus::EventKind) -> String {
    // The `type` tag is the event's stable name; reuse it rather than keep a second list.
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::Object(m)) => m
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or("unknown")
            .to_owned(),
        _ => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_counted_by_type() {
        let bus = Arc::new(Bus::new(16));
        let mut reg = Registry::default();
        let task = count_events(&bus, &mut reg);
        bus.publish(bus::EventKind::StackStopping);
        bus.publish(bus::EventKind::StackStopping);
        bus.publish(bus::EventKind::StackStopped);
        let mut text = String::new();
        for _ in 0..100 {
            text = encode_openmetrics(&reg);
            if text.contains("type=\"stack_stopped\"} 1") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(
            text.contains("bulwark_events_total{type=\"stack_stopping\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("bulwark_events_total{type=\"stack_stopped\"} 1"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"));
        let prom = encode_prometheus(&reg);
        assert!(
            prom.contains("# TYPE bulwark_events_total counter"),
            "{prom}"
        );
        assert!(
            prom.contains("# HELP bulwark_events_total Events"),
            "{prom}"
        );
        assert!(!prom.contains("# EOF"));
        task.abort();
    }
}
