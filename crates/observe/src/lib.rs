//! Observability: the metrics registry and its exposition, and metrics derived from the
//! event bus.
//!
//! Architecture invariant: `observe` records and reports; it never decides remediation.
#![forbid(unsafe_code)]

use std::sync::Arc;

use bus::Bus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders every registered metric in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
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
    let mut live = bus.subscribe(u64::MAX).live;
    tokio::spawn(async move {
        loop {
            match live.recv().await {
                Ok(event) => {
                    let name = serde_name(&event.kind);
                    family.get_or_create(&EventLabels { r#type: name }).inc();
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
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
            text = encode(&reg);
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
        task.abort();
    }
}
