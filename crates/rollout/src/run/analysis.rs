//! The analysis of a rollout: its window, the verdict, and what the status shows of it.

use bus::EventKind;
use policy::rollout::{SloGate, Thresholds, Verdict as Judged, judge};
use tokio::time::Instant;

use super::{Run, VERDICTS};
use crate::Verdict;
use crate::manager::now_ms;

impl Run {
    pub(super) fn begin_window(&mut self) {
        let v = &self.rollouts.inner.versions;
        self.window = (
            v.read(&self.service, self.revision),
            v.read(&self.service, self.from),
        );
        self.next_tick = Instant::now() + self.spec.rollout.analysis.interval;
    }

    /// The analysis over the window so far; `None` when nothing is judged.
    pub(super) fn judge(&self) -> Option<Judged> {
        let a = &self.spec.rollout.analysis;
        if !a.enabled || self.spec.expose.is_none() {
            return None;
        }
        let v = &self.rollouts.inner.versions;
        let new = v
            .read(&self.service, self.revision)
            .since(&self.window.0, a.latency_percentile);
        let stable = v
            .read(&self.service, self.from)
            .since(&self.window.1, a.latency_percentile);
        let gates: Vec<SloGate> = self
            .spec
            .slos
            .iter()
            .filter(|s| matches!(s.kind, spec::SloKind::Availability { .. }) && s.alerts.page)
            .map(|s| SloGate {
                budget: s.error_budget(),
                page_burn: 14.4,
            })
            .collect();
        let t = Thresholds {
            min_requests: u64::from(a.min_requests),
            max_error_increase: a.max_error_increase,
            max_latency_ratio: a.max_latency_ratio,
            latency_floor: a.latency_floor,
        };
        let j = judge(&new, &stable, &t, &gates);
        let figures = |s: &policy::rollout::Sample| {
            format!(
                "{} requests, {:.2} % errors, p{} {}",
                s.total,
                s.error_ratio() * 100.0,
                a.latency_percentile,
                s.latency.map_or_else(
                    || "-".to_owned(),
                    |d| format!("{:.1} ms", d.as_secs_f64() * 1e3)
                )
            )
        };
        let so_far = format!(
            "{} so far; new: {}; stable: {}",
            match &j {
                Judged::Pass => "pass",
                Judged::Fail(_) => "fail",
                Judged::Inconclusive(_) => "inconclusive",
            },
            figures(&new),
            figures(&stable)
        );
        self.status.send_modify(|s| s.analysis = Some(so_far));
        Some(j)
    }

    pub(super) fn note_verdict(&self, j: &Judged) {
        let (verdict, detail) = match j {
            Judged::Pass => ("pass", String::new()),
            Judged::Fail(d) => ("fail", d.clone()),
            Judged::Inconclusive(d) => ("inconclusive", d.clone()),
        };
        if verdict != "pass" {
            self.publish(EventKind::RolloutVerdict {
                service: self.service.clone(),
                revision: self.revision,
                verdict: verdict.into(),
                detail: detail.clone(),
            });
        }
        self.update(|s| {
            s.verdicts.push(Verdict {
                at_ms: now_ms(),
                verdict: verdict.into(),
                detail,
            });
            if s.verdicts.len() > VERDICTS {
                s.verdicts.remove(0);
            }
        });
    }
}
