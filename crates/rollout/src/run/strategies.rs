//! The strategies: rolling, canary (steps and their holds, then promotion) and
//! blue-green.

use bus::Split;
use policy::rollout::{Rolling, Verdict as Judged};
use spec::Pause;
use tokio::time::Instant;

use super::{End, Run, Wake};

impl Run {
    /// Starts or stops new replicas until `want` run, then waits until they are available.
    pub(super) async fn scale_new(&mut self, want: u32) -> Result<(), End> {
        self.holding = false;
        self.deadline = Instant::now() + self.spec.rollout.progress_deadline;
        let v = self.view();
        let mut new: Vec<u32> = v.of(self.revision).map(|r| r.index).collect();
        if (new.len() as u32) < want {
            let n = want - new.len() as u32;
            self.sup().start_replicas(&self.service, self.revision, n);
        } else if new.len() as u32 > want {
            new.sort_unstable();
            let extra = new.split_off(want as usize);
            self.sup().remove_replicas(&self.service, &extra);
        }
        loop {
            let v = self.view();
            let (avail, next) = self.available(&v);
            if avail >= want && !self.paused {
                return Ok(());
            }
            if self.wait(next).await? == Wake::Promote {
                // The replicas must be up before any traffic moves: the promotion ends
                // the hold that follows.
                self.promote_next = true;
            }
        }
    }

    /// Stops every old replica (the new ones carry all traffic).
    pub(super) fn stop_old(&mut self) {
        let v = self.view();
        let old: Vec<u32> = v
            .replicas
            .iter()
            .filter(|r| r.revision != self.revision)
            .map(|r| r.index)
            .collect();
        self.sup().remove_replicas(&self.service, &old);
    }

    pub(super) fn split(&self, weight: f64) {
        self.sup().set_split(
            &self.service,
            Some(Split {
                canary: self.revision,
                weight,
                sticky: self.spec.rollout.sticky.clone(),
            }),
        );
        self.update(|s| s.weight = Some(weight));
    }

    /// Kubernetes' rolling update, judged as it goes (an inconclusive verdict does not
    /// hold it: there are no steps to wait at).
    pub(super) async fn rolling(&mut self) -> Result<(), End> {
        self.step("rolling: replacing replicas".into());
        loop {
            let v = self.view();
            let ro = &self.spec.rollout;
            let (new_available, next) = self.available(&v);
            let old: Vec<_> = v
                .replicas
                .iter()
                .filter(|r| r.revision != self.revision)
                .collect();
            let surge = ro.max_surge.of(v.desired);
            // Both resolving to 0 (percentages of a few replicas): Kubernetes then lets
            // one be unavailable.
            let unavailable = match ro.max_unavailable.of_down(v.desired) {
                0 if surge == 0 => 1,
                n => n,
            };
            let r = Rolling {
                desired: v.desired,
                surge,
                unavailable,
                min_available: v.min_available.of(v.desired),
                old_live: old.len() as u32,
                old_ready: old.iter().filter(|r| r.ready_since.is_some()).count() as u32,
                new_live: v.of(self.revision).count() as u32,
                new_available,
            };
            if r.done() {
                return Ok(());
            }
            if !self.paused {
                let step = r.next();
                if step.start > 0 {
                    self.sup()
                        .start_replicas(&self.service, self.revision, step.start);
                }
                if step.stop > 0 {
                    // Unready first, then the highest index.
                    let mut old: Vec<(bool, u32)> = old
                        .iter()
                        .map(|r| (r.ready_since.is_some(), r.index))
                        .collect();
                    old.sort_by_key(|&(ready, i)| (ready, std::cmp::Reverse(i)));
                    let stop: Vec<u32> = old
                        .iter()
                        .take(step.stop as usize)
                        .map(|&(_, i)| i)
                        .collect();
                    self.sup().remove_replicas(&self.service, &stop);
                }
                if step.start > 0 || step.stop > 0 {
                    let text = format!(
                        "rolling: {} new of {} available, {} old left",
                        new_available,
                        v.desired,
                        r.old_live - step.stop
                    );
                    self.update(|s| s.step = text);
                    continue;
                }
            }
            self.wait(next).await?;
        }
    }

    /// Canary steps, each judged at its end; then every replica moves to the new revision.
    pub(super) async fn canary(&mut self) -> Result<(), End> {
        let steps = self.spec.rollout.steps.clone();
        let desired = self.view().desired;
        // New replicas take no request until their step gives them a share.
        self.split(0.0);
        for (i, step) in steps.iter().enumerate() {
            if self.promote_full {
                break;
            }
            self.scale_new(step.replicas_of(desired)).await?;
            self.split(step.weight);
            self.begin_window();
            self.step(format!(
                "step {} of {}: {} % of requests",
                i + 1,
                steps.len(),
                step.weight
            ));
            self.hold(step.pause).await?;
        }
        self.promote().await
    }

    /// Holds a step for its pause, judging all along; at its end a passing verdict moves
    /// on, an inconclusive one pauses (until resumed, which starts the pause afresh, or
    /// promoted).
    pub(super) async fn hold(&mut self, pause: Pause) -> Result<(), End> {
        self.holding = true;
        if std::mem::take(&mut self.promote_next) {
            return Ok(());
        }
        let fresh = || match pause {
            Pause::For(d) => Some(Instant::now() + d),
            Pause::UntilPromoted => None,
        };
        let mut end = fresh();
        if end.is_none() {
            self.pause("the step waits for `bulwark rollout promote`".into());
        }
        loop {
            match self.wait(end.filter(|_| !self.paused)).await? {
                // Resuming a step that waits for promotion goes on, as promoting does.
                Wake::Promote => return Ok(()),
                Wake::Resumed => match fresh() {
                    None => return Ok(()),
                    restart => end = restart,
                },
                Wake::Timer => {
                    let j = self.judge().unwrap_or(Judged::Pass);
                    self.note_verdict(&j);
                    match j {
                        Judged::Pass => return Ok(()),
                        Judged::Fail(reason) => {
                            return Err(End::Failed(format!("analysis failed: {reason}")));
                        }
                        Judged::Inconclusive(reason) => {
                            self.pause(format!("analysis inconclusive: {reason}"));
                        }
                    }
                }
                Wake::Changed | Wake::Paused => {}
            }
        }
    }

    /// Every replica on the new revision: scale it to `desired`, send it all traffic,
    /// stop the old ones.
    pub(super) async fn promote(&mut self) -> Result<(), End> {
        let desired = self.view().desired;
        self.step("promoting: new revision to full size".into());
        self.scale_new(desired).await?;
        self.split(100.0);
        self.stop_old();
        self.step("promoted: all requests on the new revision".into());
        Ok(())
    }

    /// A whole new set beside the old one; the preview listener serves it; promotion
    /// switches all traffic at once; the old set stays for `scale_down_delay`.
    pub(super) async fn blue_green(&mut self) -> Result<(), End> {
        self.split(0.0);
        let desired = self.view().desired;
        self.step("blue-green: starting the new set".into());
        self.scale_new(desired).await?;
        self.begin_window();
        let ro = self.spec.rollout.clone();
        self.holding = true;
        let fresh = || ro.promote_after.map(|d| Instant::now() + d);
        let mut until = fresh();
        if until.is_none() {
            self.pause("the new set is ready (and on the preview listener); waiting for `bulwark rollout promote`".into());
        } else {
            self.step("blue-green: new set ready on the preview listener".into());
        }
        loop {
            match self.wait(until.filter(|_| !self.paused)).await? {
                Wake::Promote => break,
                Wake::Resumed => match fresh() {
                    None => break,
                    restart => until = restart,
                },
                // Promoted unless the analysis fails: the preview may see too few
                // requests for a verdict, and waiting would never end.
                Wake::Timer => match self.judge() {
                    Some(Judged::Fail(reason)) => {
                        return Err(End::Failed(format!("analysis failed: {reason}")));
                    }
                    _ => break,
                },
                Wake::Changed | Wake::Paused => {}
            }
        }
        self.split(100.0);
        self.step(format!(
            "promoted: all requests on the new set; the old set stays {} for an instant undo",
            humantime::format_duration(ro.scale_down_delay)
        ));
        let end = Instant::now() + ro.scale_down_delay;
        while self.wait(Some(end)).await? != Wake::Timer {}
        self.stop_old();
        Ok(())
    }
}
