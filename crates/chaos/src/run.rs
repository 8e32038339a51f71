//! One experiment after its gate: inject, watch (abort, detection, recovery), undo, roll
//! back, wait for recovery, report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{Event, EventKind};
use policy::chaos::Streak;
use spec::Experiment;
use tokio::sync::watch;

use crate::engine::Inner;
use crate::{
    Outcome, RECOVERY_WINDOW, Replica, Report, RollbackResult, Trigger, fault, now_ms, probe,
};

/// How long one rollback command may take.
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How often recovery is checked between events.
const RECOVERY_TICK: Duration = Duration::from_millis(250);
/// Failed checks kept in a report.
const FAILED_KEPT: usize = 20;

/// What the watch saw.
#[derive(Default)]
struct Watch {
    /// The fault has been removed.
    over: bool,
    detected: Option<(u64, String)>,
    recovered: Option<u64>,
    failed_checks: Vec<String>,
    end: Option<(crate::Outcome, String)>,
}

impl Watch {
    fn failed(&mut self, why: String) {
        if self.failed_checks.len() < FAILED_KEPT {
            self.failed_checks.push(why);
        }
    }
}

/// bulwark's reactions to a fault: the event's service and its name, for those that are.
fn reaction(e: &Event) -> Option<(&str, &'static str)> {
    Some(match &e.kind {
        EventKind::ReplicaExited { service, .. } => (service, "replica_exited"),
        EventKind::ReplicaUnready { service, .. } => (service, "replica_unready"),
        EventKind::ProbeFailed { service, .. } => (service, "probe_failed"),
        EventKind::ReplicaEjected { service, .. } => (service, "replica_ejected"),
        EventKind::RestartScheduled { service, .. } => (service, "restart_scheduled"),
        EventKind::AlertFiring { service, .. } => (service, "alert_firing"),
        _ => return None,
    })
}

/// Events after which the replicas may all be ready again.
fn may_have_recovered(e: &Event, service: &str) -> bool {
    matches!(&e.kind,
        EventKind::ReplicaReady { service: s, .. } | EventKind::ReplicaReadmitted { service: s, .. }
        if s == service)
}

/// Why a wait was cut short.
enum Cut {
    /// The fault's duration is over.
    End,
    /// `chaos halt` or `faults off`.
    Halt,
}

/// `fut`, unless the fault's end or a halt comes first: a probe that takes long (an HTTP
/// check or a command may be given minutes) never delays a halt or the end of the fault.
async fn unless<T>(
    fut: impl std::future::Future<Output = T>,
    end: tokio::time::Instant,
    halt: &mut watch::Receiver<bool>,
) -> Result<T, Cut> {
    tokio::select! {
        t = fut => Ok(t),
        () = tokio::time::sleep_until(end) => Err(Cut::End),
        _ = halt.wait_for(|h| *h) => Err(Cut::Halt),
    }
}

const HALTED: &str = "halted (`bulwark chaos halt`, `faults off` or `up` stopping)";

pub(crate) async fn lifecycle(
    inner: Arc<Inner>,
    exp: Experiment,
    id: u64,
    trigger: Trigger,
    targets: Vec<Replica>,
    mut halt: watch::Receiver<bool>,
) -> Report {
    let mut events = inner.bus.follow("chaos experiment");
    let mut w = Watch::default();
    // The gate took a while (its probes): look again before breaking anything.
    let targets = match recheck(&inner, &exp, targets, &halt) {
        Ok(t) => t,
        Err((outcome, why)) => {
            w.end = Some((outcome, why));
            Vec::new()
        }
    };
    let fault_at = now_ms();
    let applied = match &w.end {
        None => Some(fault::apply(&exp, &targets, &inner.host, &inner.injected).await),
        Some(_) => None,
    };
    let words = match &applied {
        Some(Ok(a)) => a.words.clone(),
        Some(Err(e)) => format!("could not break anything: {e}"),
        None => "nothing broken".to_owned(),
    };
    if let Some(Err(e)) = &applied {
        w.end = Some((Outcome::Failed, format!("could not break anything: {e}")));
    }
    inner.bus.publish(EventKind::ExperimentStarted {
        service: exp.target.service.clone(),
        name: exp.name.clone(),
        fault: words.clone(),
        replicas: targets.iter().map(|r| r.index).collect(),
        trigger: trigger.as_str().into(),
    });
    // The duration counts from the fault.
    let end = tokio::time::Instant::now() + exp.duration;
    watch_fault(&inner, &exp, fault_at, end, &mut halt, &mut events, &mut w).await;
    let fault_end = now_ms();
    w.over = true;
    if let Some(Ok(a)) = applied {
        a.undo().await;
    }
    let rollbacks = rollback(&inner, &exp).await;
    // After the fault: until recovered, bounded (a halt does not wait: it must be quick).
    if !matches!(w.end, Some((Outcome::Halted, _))) && w.recovered.is_none() {
        let deadline = tokio::time::Instant::now() + RECOVERY_WINDOW;
        let mut tick = tokio::time::interval(RECOVERY_TICK);
        while w.recovered.is_none() {
            let next = async {
                tokio::select! {
                    _ = tick.tick() => None,
                    e = events.next() => e,
                }
            };
            let Ok(e) = unless(next, deadline, &mut halt).await else {
                break;
            };
            let step = async {
                match e {
                    Some(e) => on_event(&inner, &exp, fault_at, &e, &mut w).await,
                    None => recovery(&inner, &exp, now_ms(), &mut w).await,
                }
            };
            if unless(step, deadline, &mut halt).await.is_err() {
                break;
            }
        }
    }
    let report = report(
        &inner,
        &exp,
        id,
        trigger,
        words,
        &targets,
        (fault_at, fault_end),
        w,
        rollbacks,
    );
    inner.bus.publish(EventKind::ExperimentEnded {
        service: exp.target.service.clone(),
        name: exp.name.clone(),
        outcome: report.outcome.as_str().into(),
        detect_ms: report.detect_ms,
        recover_ms: report.recover_ms,
    });
    report
}

/// Right before the fault: not halted, the targets still ready (with their current
/// processes), and the disruption budget still allowing it.
fn recheck(
    inner: &Inner,
    exp: &Experiment,
    targets: Vec<Replica>,
    halt: &watch::Receiver<bool>,
) -> Result<Vec<Replica>, (Outcome, String)> {
    if *halt.borrow() || !*inner.faults.borrow() {
        return Err((Outcome::Halted, HALTED.into()));
    }
    let service = exp.target.service.as_str();
    let now = inner.host.replicas(service).unwrap_or_default();
    let fresh: Vec<Replica> = now
        .iter()
        .filter(|r| r.ready && targets.iter().any(|t| t.index == r.index))
        .copied()
        .collect();
    if fresh.is_empty() {
        return Err((
            Outcome::Failed,
            "its target replicas stopped being ready before the fault".into(),
        ));
    }
    let (desired, budget) = inner
        .host
        .budget(service)
        .unwrap_or((0, spec::Amount::Count(0)));
    let ready = now.iter().filter(|r| r.ready).count();
    let min = budget.of(desired) as usize;
    if exp.fault.disrupts_replicas() && ready.saturating_sub(fresh.len()) < min {
        return Err((
            Outcome::Failed,
            format!(
                "breaking {} of {ready} ready replicas would leave fewer than min_available = {min}",
                fresh.len()
            ),
        ));
    }
    Ok(fresh)
}

/// During the fault: probes on each tick (abort), reactions and recovery on events; every
/// wait cut short by the fault's end or a halt.
async fn watch_fault(
    inner: &Inner,
    exp: &Experiment,
    fault_at: u64,
    end: tokio::time::Instant,
    halt: &mut watch::Receiver<bool>,
    events: &mut bus::Follower,
    w: &mut Watch,
) {
    let mut streaks = vec![Streak::default(); exp.steady_state.len()];
    let mut tick = tokio::time::interval(exp.abort_when.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut recover_tick = tokio::time::interval(RECOVERY_TICK);
    while w.end.is_none() {
        let probing = w.detected.is_some() && w.recovered.is_none();
        let next = async {
            tokio::select! {
                _ = tick.tick() => Step::Probe,
                _ = recover_tick.tick(), if probing => Step::Recovery,
                e = events.next() => e.map_or(Step::Recovery, Step::Event),
            }
        };
        let step = match unless(next, end, halt).await {
            Ok(step) => step,
            Err(cut) => return halted(cut, w),
        };
        let work = async {
            match step {
                Step::Probe => {
                    probe_round(inner, exp, &mut streaks, w).await;
                    recovery(inner, exp, now_ms(), w).await;
                }
                Step::Recovery => recovery(inner, exp, now_ms(), w).await,
                Step::Event(e) => on_event(inner, exp, fault_at, &e, w).await,
            }
        };
        if let Err(cut) = unless(work, end, halt).await {
            return halted(cut, w);
        }
    }
}

enum Step {
    Probe,
    Recovery,
    Event(Arc<Event>),
}

fn halted(cut: Cut, w: &mut Watch) {
    if let Cut::Halt = cut {
        w.end = Some((Outcome::Halted, HALTED.into()));
    }
}

/// One check of every probe; a streak reaching the threshold aborts the experiment.
async fn probe_round(inner: &Inner, exp: &Experiment, streaks: &mut [Streak], w: &mut Watch) {
    for (p, streak) in exp.steady_state.iter().zip(streaks.iter_mut()) {
        let result = probe::check(p, &*inner.host, &inner.outcomes).await;
        let Err(why) = result else {
            streak.record(true, exp.abort_when.failure_threshold);
            continue;
        };
        w.failed(why.clone());
        if streak.record(false, exp.abort_when.failure_threshold) {
            let reason = format!("{why} ({} checks in a row)", streak.failures());
            inner.bus.publish(EventKind::ExperimentAborted {
                service: exp.target.service.clone(),
                name: exp.name.clone(),
                reason: reason.clone(),
            });
            w.end = Some((Outcome::Aborted, reason));
            return;
        }
    }
}

/// The report of a run that has ended.
#[allow(clippy::too_many_arguments)]
fn report(
    inner: &Inner,
    exp: &Experiment,
    id: u64,
    trigger: Trigger,
    words: String,
    targets: &[Replica],
    (fault_at, fault_end): (u64, u64),
    mut w: Watch,
    rollbacks: Vec<RollbackResult>,
) -> Report {
    let service = exp.target.service.as_str();
    let window = Duration::from_millis(now_ms().saturating_sub(fault_at));
    let tally = inner.outcomes.tally(service, window, Instant::now());
    let failed_rollback = rollbacks.iter().find(|r| !r.ok);
    let (outcome, reason) = match w.end.take() {
        Some((o, why)) => (o, Some(why)),
        None if w.recovered.is_none() => (
            Outcome::Failed,
            Some(format!(
                "{service} did not recover within {} s of the fault's end",
                RECOVERY_WINDOW.as_secs()
            )),
        ),
        None if !w.failed_checks.is_empty() => (Outcome::Failed, Some(w.failed_checks[0].clone())),
        None if failed_rollback.is_some() => (
            Outcome::Failed,
            failed_rollback
                .map(|r| format!("rollback {:?} failed: {}", r.command.join(" "), r.detail)),
        ),
        None => (Outcome::Passed, None),
    };
    Report {
        id,
        name: exp.name.clone(),
        service: service.to_owned(),
        trigger,
        fault: words,
        kind: exp.fault.kind().as_str().into(),
        replicas: targets.iter().map(|r| r.index).collect(),
        fault_at_ms: fault_at,
        fault_end_ms: fault_end,
        ended_ms: now_ms(),
        detect_ms: w.detected.as_ref().map(|(t, _)| t.saturating_sub(fault_at)),
        detected_by: w.detected.map(|(_, by)| by),
        recover_ms: w.recovered.map(|t| t.saturating_sub(fault_at)),
        outcome,
        reason,
        failed_checks: w.failed_checks,
        rollbacks,
        requests: tally.total,
        failed_requests: tally.failed,
    }
}

/// The first reaction of bulwark to the fault is its detection; readiness events may end
/// the recovery.
async fn on_event(inner: &Inner, exp: &Experiment, fault_at: u64, e: &Event, w: &mut Watch) {
    let service = exp.target.service.as_str();
    if e.at_ms < fault_at {
        return;
    }
    if w.detected.is_none()
        && let Some((s, name)) = reaction(e)
        && s == service
    {
        w.detected = Some((e.at_ms, name.to_owned()));
    }
    if may_have_recovered(e, service) {
        recovery(inner, exp, e.at_ms, w).await;
    }
}

/// Recovered at `at`: bulwark has reacted (or the fault is over), every desired replica is
/// ready, and the steady state holds.
async fn recovery(inner: &Inner, exp: &Experiment, at: u64, w: &mut Watch) {
    if w.recovered.is_some() || (w.detected.is_none() && !w.over) {
        return;
    }
    let service = exp.target.service.as_str();
    let desired = inner.host.budget(service).map_or(0, |(d, _)| d);
    let ready = inner
        .host
        .replicas(service)
        .map_or(0, |r| r.iter().filter(|r| r.ready).count());
    if (ready as u32) < desired {
        return;
    }
    for p in &exp.steady_state {
        if probe::check(p, &*inner.host, &inner.outcomes)
            .await
            .is_err()
        {
            return;
        }
    }
    w.recovered = Some(at);
}

/// Every rollback, in order; one failing does not stop the others.
async fn rollback(inner: &Inner, exp: &Experiment) -> Vec<RollbackResult> {
    let mut out = Vec::new();
    for cmd in &exp.rollbacks {
        let result = probe::command(cmd, ROLLBACK_TIMEOUT).await;
        inner.bus.publish(EventKind::ExperimentRollback {
            service: exp.target.service.clone(),
            name: exp.name.clone(),
            command: cmd[0].clone(),
            ok: result.is_ok(),
            detail: result.clone().err().unwrap_or_default(),
        });
        out.push(RollbackResult {
            command: cmd.clone(),
            ok: result.is_ok(),
            detail: result.err().unwrap_or_default(),
        });
    }
    out
}
