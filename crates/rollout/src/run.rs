//! One rollout's life: the strategy's steps, the waits between them (replica changes,
//! commands, analysis ticks, timers, the progress deadline — never a poll), and the
//! rollback.

use std::sync::Arc;
use std::time::Duration;

use bus::{EventKind, Split};
use policy::rollout::{Rolling, SloGate, Thresholds, Verdict as Judged, judge};
use runtime::RevisionView;
use spec::{Pause, RolloutStrategy};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use crate::manager::{Rollouts, now_ms};
use crate::record::Revision;
use crate::stats::Counts;
use crate::{Command, Phase, Status, Verdict};

/// How long a rollback waits for the stable replicas to be ready before it stops the new
/// ones anyway.
const ROLLBACK_WAIT: Duration = Duration::from_secs(60);
/// Verdicts kept in the status.
const VERDICTS: usize = 20;

/// Why a rollout ends without its new revision.
pub(crate) enum End {
    /// Judged or timed out by bulwark.
    Failed(String),
    /// Asked to.
    Aborted(String),
}

/// What ended a wait.
#[derive(Debug, PartialEq, Eq)]
enum Wake {
    /// A replica changed, or a command that needs nothing of the caller.
    Changed,
    /// The caller's timer.
    Timer,
    /// `promote` (the caller decides what it ends).
    Promote,
    /// `pause`: timers stop.
    Paused,
    /// `resume`.
    Resumed,
}

pub(crate) struct Run {
    rollouts: Rollouts,
    spec: Arc<spec::Service>,
    service: String,
    revision: u32,
    from: u32,
    record: Revision,
    commands: mpsc::UnboundedReceiver<Command>,
    changed: Option<watch::Receiver<u64>>,
    status: watch::Sender<Status>,
    paused: bool,
    /// In a timed hold (a step's pause, blue-green's wait and scale-down delay): the
    /// progress deadline does not run.
    holding: bool,
    /// `promote --full` was asked for: no more steps.
    promote_full: bool,
    /// `promote` came while replicas were starting: the next hold ends at once.
    promote_next: bool,
    /// No progress by then fails the rollout.
    deadline: Instant,
    /// Progress so far: (new available, old running); any improvement moves the deadline.
    best: (u32, u32),
    next_tick: Instant,
    /// The counts at the start of the analysis window: (new, stable).
    window: (Counts, Counts),
    page_at_start: bool,
}

impl Run {
    pub fn new(
        rollouts: Rollouts,
        spec: Arc<spec::Service>,
        revision: u32,
        from: u32,
        record: Revision,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Run {
        let inner = &rollouts.inner;
        let service = spec.name.clone();
        if spec.expose.is_some() {
            inner.versions.arm(&service);
        }
        let now = Instant::now();
        let status = Status {
            service: service.clone(),
            revision,
            from,
            strategy: spec.rollout.strategy.as_str().into(),
            phase: Phase::Progressing,
            step: "starting".into(),
            weight: None,
            desired: spec.replicas,
            old: 0,
            old_ready: 0,
            new: 0,
            new_ready: 0,
            verdicts: vec![],
            analysis: None,
            started_ms: now_ms(),
            step_started_ms: now_ms(),
            message: None,
        };
        Run {
            changed: inner.sup.watch(&service),
            page_at_start: inner.host.paging(&service).is_some(),
            deadline: now + spec.rollout.progress_deadline,
            next_tick: now + spec.rollout.analysis.interval,
            status: watch::channel(status).0,
            window: (Counts::default(), Counts::default()),
            best: (0, u32::MAX),
            rollouts: rollouts.clone(),
            service,
            spec,
            revision,
            from,
            record,
            commands,
            paused: false,
            holding: false,
            promote_full: false,
            promote_next: false,
        }
    }

    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Runs the rollout to its end.
    pub async fn go(mut self) {
        self.begin_window();
        let result = match self.spec.rollout.strategy {
            RolloutStrategy::Rolling => self.rolling().await,
            RolloutStrategy::Canary => self.canary().await,
            RolloutStrategy::BlueGreen => self.blue_green().await,
        };
        match result {
            Ok(()) => self.complete(),
            Err(End::Failed(reason)) => self.roll_back(reason, true).await,
            Err(End::Aborted(reason)) => self.roll_back(reason, false).await,
        }
    }

    fn sup(&self) -> &runtime::Supervisor {
        &self.rollouts.inner.sup
    }

    fn publish(&self, kind: EventKind) {
        self.rollouts.inner.bus.publish(kind);
    }

    /// The service's replicas (those being removed are not in it).
    fn view(&self) -> RevisionView {
        self.sup().revisions(&self.service).unwrap_or(RevisionView {
            desired: 0,
            stable: self.from,
            replicas: vec![],
            split: None,
            min_available: spec::Amount::Count(0),
        })
    }

    /// New replicas ready for `min_ready`, and when the next one will be.
    fn available(&self, v: &RevisionView) -> (u32, Option<Instant>) {
        let min_ready = self.spec.rollout.min_ready;
        let now = std::time::Instant::now();
        let mut n = 0;
        let mut next: Option<std::time::Instant> = None;
        for r in v.of(self.revision) {
            if let Some(since) = r.ready_since {
                let at = since + min_ready;
                if at <= now {
                    n += 1;
                } else {
                    next = Some(next.map_or(at, |x: std::time::Instant| x.min(at)));
                }
            }
        }
        (n, next.map(Instant::from_std))
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        let v = self.view();
        self.status.send_modify(|s| {
            s.desired = v.desired;
            s.old = v
                .replicas
                .iter()
                .filter(|r| r.revision != self.revision)
                .count() as u32;
            s.old_ready = v
                .replicas
                .iter()
                .filter(|r| r.revision != self.revision && r.ready_since.is_some())
                .count() as u32;
            s.new = v.of(self.revision).count() as u32;
            s.new_ready = v
                .of(self.revision)
                .filter(|r| r.ready_since.is_some())
                .count() as u32;
            f(s);
        });
    }

    fn step(&self, text: String) {
        tracing::info!(service = %self.service, revision = self.revision, "rollout: {text}");
        self.publish(EventKind::RolloutStep {
            service: self.service.clone(),
            revision: self.revision,
            step: text.clone(),
        });
        self.update(|s| {
            s.step = text;
            s.step_started_ms = now_ms();
        });
    }

    fn begin_window(&mut self) {
        let v = &self.rollouts.inner.versions;
        self.window = (
            v.read(&self.service, self.revision),
            v.read(&self.service, self.from),
        );
        self.next_tick = Instant::now() + self.spec.rollout.analysis.interval;
    }

    /// The analysis over the window so far; `None` when nothing is judged.
    fn judge(&self) -> Option<Judged> {
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

    fn note_verdict(&self, j: &Judged) {
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

    fn pause(&mut self, reason: String) {
        self.paused = true;
        self.publish(EventKind::RolloutPaused {
            service: self.service.clone(),
            revision: self.revision,
            reason: reason.clone(),
        });
        self.update(|s| {
            s.phase = Phase::Paused;
            s.message = Some(reason);
        });
    }

    fn resume(&mut self) {
        self.paused = false;
        self.deadline = Instant::now() + self.spec.rollout.progress_deadline;
        self.update(|s| {
            s.phase = Phase::Progressing;
            s.message = None;
        });
    }

    /// Moves the deadline when the new revision gained an available replica or the old
    /// one lost a running one.
    fn progress(&mut self, v: &RevisionView) {
        let (avail, _) = self.available(v);
        let old = v
            .replicas
            .iter()
            .filter(|r| r.revision != self.revision)
            .count() as u32;
        if avail > self.best.0 || old < self.best.1 {
            self.best = (avail.max(self.best.0), old.min(self.best.1));
            self.deadline = Instant::now() + self.spec.rollout.progress_deadline;
        }
    }

    /// Waits for a replica change, a command, an analysis tick (judged here: a failure
    /// ends the rollout), `until`, or the progress deadline (which ends it too).
    async fn wait(&mut self, until: Option<Instant>) -> Result<Wake, End> {
        loop {
            let deadline = (!self.paused && !self.holding).then_some(self.deadline);
            let changed = async {
                match &mut self.changed {
                    Some(c) => {
                        if c.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = changed => {
                    let v = self.view();
                    self.progress(&v);
                    self.update(|_| {});
                    return Ok(Wake::Changed);
                }
                c = self.commands.recv() => match c {
                    Some(Command::Pause) if !self.paused => {
                        self.pause("paused by `bulwark rollout pause`".into());
                        return Ok(Wake::Paused);
                    }
                    Some(Command::Resume) if self.paused => {
                        self.resume();
                        return Ok(Wake::Resumed);
                    }
                    Some(Command::Promote { full }) => {
                        self.promote_full |= full;
                        if self.paused {
                            self.resume();
                        }
                        return Ok(Wake::Promote);
                    }
                    Some(Command::Abort) => {
                        return Err(End::Aborted("aborted by `bulwark rollout abort`".into()));
                    }
                    Some(_) => {}
                    None => return Err(End::Aborted("bulwark is stopping".into())),
                },
                () = sleep_until(self.next_tick) => {
                    self.next_tick = Instant::now() + self.spec.rollout.analysis.interval;
                    self.tick()?;
                }
                () = async { sleep_until(until.unwrap_or_else(far)).await }, if until.is_some() => {
                    return Ok(Wake::Timer);
                }
                () = async { sleep_until(deadline.unwrap_or_else(far)).await }, if deadline.is_some() => {
                    return Err(End::Failed(format!(
                        "no progress for {} (progress_deadline): {}",
                        humantime::format_duration(self.spec.rollout.progress_deadline),
                        self.stuck()
                    )));
                }
            }
        }
    }

    /// An analysis tick: a failed verdict or a new page alert ends the rollout.
    fn tick(&mut self) -> Result<(), End> {
        if !self.page_at_start
            && let Some(page) = self.rollouts.inner.host.paging(&self.service)
        {
            return Err(End::Failed(format!("a page alert fired: {page}")));
        }
        if let Some(j) = self.judge()
            && let Judged::Fail(reason) = &j
        {
            self.note_verdict(&j);
            return Err(End::Failed(format!("analysis failed: {reason}")));
        }
        Ok(())
    }

    /// Why the new replicas make no progress, in words.
    fn stuck(&self) -> String {
        let v = self.view();
        let new: Vec<_> = v.of(self.revision).collect();
        let failing = new.iter().filter(|r| r.failing || r.restarts > 0).count();
        let ready = new.iter().filter(|r| r.ready_since.is_some()).count();
        format!(
            "{} new replica(s), {ready} ready, {failing} crash-looping or restarted",
            new.len()
        )
    }

    /// Starts or stops new replicas until `want` run, then waits until they are available.
    async fn scale_new(&mut self, want: u32) -> Result<(), End> {
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
    fn stop_old(&mut self) {
        let v = self.view();
        let old: Vec<u32> = v
            .replicas
            .iter()
            .filter(|r| r.revision != self.revision)
            .map(|r| r.index)
            .collect();
        self.sup().remove_replicas(&self.service, &old);
    }

    fn split(&self, weight: f64) {
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
    async fn rolling(&mut self) -> Result<(), End> {
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
    async fn canary(&mut self) -> Result<(), End> {
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
    async fn hold(&mut self, pause: Pause) -> Result<(), End> {
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
    async fn promote(&mut self) -> Result<(), End> {
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
    async fn blue_green(&mut self) -> Result<(), End> {
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

    fn complete(&mut self) {
        self.sup().settle(&self.service, self.revision);
        self.rollouts.inner.versions.disarm(&self.service);
        self.finish(Phase::Completed, "completed", None);
        self.rollouts.ended(self.status.borrow().clone(), None);
    }

    /// Traffic back on the stable revision at once, the stable replicas back to full
    /// size, the new ones drained and stopped.
    async fn roll_back(&mut self, reason: String, automatic: bool) {
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
    async fn until(&mut self, give_up: Instant, done: impl Fn(&Run, &RevisionView) -> bool) {
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

    fn finish(&mut self, phase: Phase, outcome: &str, reason: Option<String>) {
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

fn far() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
