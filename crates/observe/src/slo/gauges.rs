//! The engine's own figures as gauges, for dashboards on Prometheus (`bulwark grafana`):
//! the error budget left and the burn rate of every window, as of the last evaluation.
//! The counters stay the source of truth for rules; these save a dashboard from knowing
//! each SLO's objective and period.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{SloReport, Window};

/// `bulwark_slo_error_budget_remaining{service,slo}`.
pub const METRIC_BUDGET: &str = "bulwark_slo_error_budget_remaining";
/// `bulwark_slo_burn_rate{service,slo,window}`.
pub const METRIC_BURN: &str = "bulwark_slo_burn_rate";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    service: String,
    slo: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BurnLabels {
    service: String,
    slo: String,
    /// The SRE Workbook's name of the window (`5m` ... `3d`, and `period`), scaled to the
    /// SLO's period as the alerts are.
    window: &'static str,
}

type F64Gauge = Gauge<f64, AtomicU64>;

#[derive(Debug, Default)]
pub(super) struct Gauges {
    budget: Family<BudgetLabels, F64Gauge>,
    burn: Family<BurnLabels, F64Gauge>,
}

impl Gauges {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            METRIC_BUDGET,
            "Fraction of the SLO's error budget left over its period (1 without requests, negative once overspent)",
            self.budget.clone(),
        );
        registry.register(
            METRIC_BURN,
            "How fast the SLO's error budget burns over each window (1: exactly spent at the period's end)",
            self.burn.clone(),
        );
    }

    /// Sets every gauge from an evaluation's reports.
    pub fn set(&self, reports: &[SloReport]) {
        for r in reports {
            let (service, slo) = (r.service.clone(), r.slo.clone());
            self.budget
                .get_or_create(&BudgetLabels {
                    service: service.clone(),
                    slo: slo.clone(),
                })
                .set(r.error_budget_remaining);
            for w in Window::ALL {
                self.burn
                    .get_or_create(&BurnLabels {
                        service: service.clone(),
                        slo: slo.clone(),
                        window: w.name(),
                    })
                    .set(r.burn_rate(w));
            }
        }
    }
}
