//! Remediation, anomaly and autoscaling metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DecisionLabels {
    pub rule: String,
    pub decision: String,
    /// The guard, or empty.
    pub guard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AnomalyLabels {
    pub service: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ForecastLabels {
    pub service: String,
    pub replica: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ServiceLabels {
    pub service: String,
}

#[derive(Clone, Default)]
pub(crate) struct Metrics {
    pub decisions: Family<DecisionLabels, Counter>,
    pub pending: Gauge,
    pub anomalies: Family<AnomalyLabels, Counter>,
    pub forecast: Family<ForecastLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub desired: Family<ServiceLabels, Gauge>,
    pub value: Family<ServiceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub goal: Family<ServiceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Metrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register(
            "bulwark_remediation_decisions",
            "Remediation decisions, by rule, decision and the guard that held one back",
            m.decisions.clone(),
        );
        registry.register(
            "bulwark_remediation_pending_approvals",
            "Remediation actions waiting for `bulwark approve`",
            m.pending.clone(),
        );
        registry.register(
            "bulwark_anomalies",
            "Anomalies detected, by service and kind",
            m.anomalies.clone(),
        );
        registry.register(
            "bulwark_anomaly_forecast_seconds",
            "Seconds until a replica's resource is forecast to reach its limit",
            m.forecast.clone(),
        );
        registry.register(
            "bulwark_autoscale_desired_replicas",
            "The replica count the autoscaler decided",
            m.desired.clone(),
        );
        registry.register(
            "bulwark_autoscale_value",
            "The autoscaler's measure per ready replica",
            m.value.clone(),
        );
        registry.register(
            "bulwark_autoscale_target",
            "The autoscaler's target per replica",
            m.goal.clone(),
        );
        m
    }
}
