//! Backup metrics, computed from the records at each scrape (ages stay current without a
//! timer): last success, duration, size, age and verified state of the newest snapshot,
//! drill RTO, damaged snapshots, runs by result.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::engine::{Backups, now_ms};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    backup: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    backup: String,
    result: &'static str,
}

#[derive(Debug)]
struct BackupCollector(Backups);

impl std::fmt::Debug for Backups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.inner.jobs.keys()).finish()
    }
}

/// One value per backup of a gauge.
type Rows = Vec<(Labels, f64)>;

impl Collector for BackupCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = now_ms();
        let mut success = Rows::new();
        let mut duration = Rows::new();
        let mut size = Rows::new();
        let mut age = Rows::new();
        let mut verified = Rows::new();
        let mut damaged = Rows::new();
        let mut rto = Rows::new();
        let mut runs = Vec::new();
        for (name, job) in &self.0.inner.jobs {
            let r = job.record();
            let l = Labels {
                backup: name.clone(),
            };
            if let Some(t) = r.last_success_ms {
                success.push((l.clone(), t as f64 / 1000.0));
            }
            if let Some(run) = r.last_run.as_ref().filter(|run| run.error.is_none()) {
                duration.push((l.clone(), run.duration_ms as f64 / 1000.0));
                size.push((l.clone(), run.bytes as f64));
            }
            let newest = r.newest_verified().map(|(_, t)| t);
            if let Some(t) = newest {
                age.push((l.clone(), now.saturating_sub(t) as f64 / 1000.0));
            }
            verified.push((l.clone(), f64::from(u8::from(newest.is_some()))));
            damaged.push((
                l.clone(),
                r.marks.values().filter(|m| m.damaged).count() as f64,
            ));
            if let Some(ms) = r.last_drill.as_ref().and_then(|d| d.rto_ms) {
                rto.push((l.clone(), ms as f64 / 1000.0));
            }
            for (result, n) in [("ok", r.runs_ok), ("failed", r.runs_failed)] {
                runs.push((
                    ResultLabels {
                        backup: name.clone(),
                        result,
                    },
                    n,
                ));
            }
        }
        let gauges = [
            (
                "bulwark_backup_last_success_timestamp_seconds",
                "When the last successful backup ended (Unix time)",
                success,
            ),
            (
                "bulwark_backup_duration_seconds",
                "How long the last successful backup took",
                duration,
            ),
            (
                "bulwark_backup_size_bytes",
                "Bytes of the files the last successful backup saved",
                size,
            ),
            (
                "bulwark_backup_age_seconds",
                "Age of the newest verified, undamaged snapshot",
                age,
            ),
            (
                "bulwark_backup_verified",
                "1 when a verified, undamaged snapshot exists",
                verified,
            ),
            (
                "bulwark_backup_damaged_snapshots",
                "Snapshots that need data found damaged",
                damaged,
            ),
            (
                "bulwark_backup_drill_rto_seconds",
                "The last passing restore drill's measured RTO",
                rto,
            ),
        ];
        for (name, help, rows) in gauges {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, value) in &rows {
                ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "bulwark_backup_runs",
            "Backup runs by result",
            None,
            MetricType::Counter,
        )?;
        for (labels, n) in &runs {
            ConstCounter::new(*n).encode(metric.encode_family(labels)?)?;
        }
        Ok(())
    }
}

impl Backups {
    /// Registers the backup metrics.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(BackupCollector(self.clone())));
    }
}
