//! How a rollout ends: completed, or rolled back (traffic first, then replicas), and the
//! record, event and status of its end.

use bus::EventKind;
use runtime::RevisionView;
use tokio::time::{Instant, sleep_until};

use super::{ROLLBACK_WAIT, Run};
use crate::Phase;
use crate::manager::now_ms;

impl Run {
    pub(super) fn complete(&mut self) {
        self.sup().settle(&self.service, self.revision);
        self.rollouts.inner.versions.disarm(&self.service);
        self.finish(Phase::Completed, "completed", None);
        self.rollouts.ended(self.status.borrow().clone(), None);
    }

    /// Traffic back on the stable revision at once, the stable replicas back to full
    /// size, the new ones drained and stopped.
    pub(super) async fn roll_back(&mut self, reason: String, automatic: bool) {
        tracing::warn!(service = %self.service, revision = self.revision, %reason, "rollout: rolling back");
        let inner = self.rollouts.inner.clone();
        if automatic {
            inner.host.raise(
                &self.service,
                format!(
                    "rollout of {} revision {} failed and is rolled back: {reason}",
                    self.service, self.revision
                ),
            );
        }
        self.publish(EventKind::RolloutAborted {
            service: self.service.clone(),
            revision: self.revision,
            reason: reason.clone(),
            automatic,
        });
        // Weight 0: every request to the stable side, or to any replica while none is
        // ready there.
        self.split(0.0);
        self.update(|s| {
            s.phase = Phase::RollingBack;
            s.step = "rolling back: traffic on the stable revision".into();
            s.message = Some(reason.clone());
        });
        let v = self.view();
        let old = v
            .replicas
            .iter()
            .filter(|r| r.revision != self.revision)
            .count() as u32;
        if old < v.desired {
            self.sup()
                .start_replicas(&self.service, self.from, v.desired - old);
        }
        let give_up = Instant::now() + ROLLBACK_WAIT;
        self.until(give_up, |run, v| {
            let ready = v
                .replicas
                .iter()
                .filter(|r| r.revision != run.revision && r.ready_since.is_some())
                .count() as u32;
            ready >= v.desired
        })
        .await;
        let new: Vec<u32> = self.view().of(self.revision).map(|r| r.index).collect();
        self.sup().remove_replicas(&self.service, &new);
        // The rollback is over once the new replicas have drained and stopped.
        self.until(give_up, |run, _| {
            run.sup().running_of(&run.service, run.revision) == 0
        })
        .await;
        self.sup().settle(&self.service, self.from);
        inner.versions.disarm(&self.service);
        let (phase, outcome) = if automatic {
            (Phase::RolledBack, "rolled-back")
        } else {
            (Phase::Aborted, "aborted")
        };
        self.finish(phase, outcome, Some(reason.clone()));
        if automatic {
            inner.host.clear(&self.service);
        }
        let drift = format!(
            "revision {} was {outcome} ({reason}); revision {} runs, which differs from the \
             stack file",
            self.revision, self.from
        );
        self.rollouts
            .ended(self.status.borrow().clone(), Some(drift));
    }

    /// Waits (without the rollout's commands or timers) until `done` holds or `give_up`.
    pub(super) async fn until(
        &mut self,
        give_up: Instant,
        done: impl Fn(&Run, &RevisionView) -> bool,
    ) {
        loop {
            if done(self, &self.view()) || Instant::now() >= give_up {
                return;
            }
            let changed = async {
                let alive = match &mut self.changed {
                    Some(c) => c.changed().await.is_ok(),
                    None => false,
                };
                if !alive {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = changed => {}
                () = sleep_until(give_up) => {}
            }
        }
    }

    pub(super) fn finish(&mut self, phase: Phase, outcome: &str, reason: Option<String>) {
        self.record.ended_ms = Some(now_ms());
        self.record.outcome = outcome.into();
        self.record.reason = reason.clone();
        self.rollouts.inner.records.save(&self.record);
        let stable = if phase == Phase::Completed {
            self.revision
        } else {
            self.from
        };
        self.publish(EventKind::RolloutEnded {
            service: self.service.clone(),
            revision: self.revision,
            outcome: outcome.into(),
            stable,
        });
        self.update(|s| {
            s.phase = phase;
            s.step = format!("{outcome}: revision {stable} runs");
            s.message = reason;
            if phase != Phase::Completed {
                s.weight = Some(0.0);
            }
        });
    }
}
