//! One rollout's life: the strategy's steps, the waits between them (replica changes,
//! commands, analysis ticks, timers, the progress deadline — never a poll), and the
//! rollback.

mod analysis;
mod ending;
mod strategies;

use std::sync::Arc;
use std::time::Duration;

use bus::EventKind;
use policy::rollout::Verdict as Judged;
use runtime::RevisionView;
use spec::RolloutStrategy;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use crate::manager::{Rollouts, now_ms};
use crate::record::Revision;
use crate::stats::Counts;
use crate::{Command, Phase, Status};

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
            if !self.sup().in_stack(&self.service) {
                return Err(End::Aborted("the service left the stack".into()));
            }
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
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
