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
        EventKind::ReplicaStopping { service, .. } => (service, "replica_stopping"),
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

// Long on purpose: the experiment's stages in order, sharing the watch state.
#[allow(clippy::too_many_lines)]
pub(crate) async fn lifecycle(
    inner: Arc<Inner>,
    exp: Experiment,
    id: u64,
    trigger: Trigger,
    targets: Vec<Replica>,
    mut halt: watch::Receiver<bool>,
) -> Report {
    let service = exp.target.service.clone();
    let mut events = inner.bus.follow("chaos experiment");
    let fault_at = now_ms();
    let t0 = Instant::now();
    let mut w = Watch::default();
    let applied = fault::apply(&exp, &targets, &*inner.host, &inner.injected).await;
    let words = match &applied {
        Ok(a) => a.words.clone(),
        Err(e) => format!("could not break anything: {e}"),
    };
    inner.bus.publish(EventKind::ExperimentStarted {
        service: service.clone(),
        name: exp.name.clone(),
        fault: words.clone(),
        replicas: targets.iter().map(|r| r.index).collect(),
        trigger: trigger.as_str().into(),
    });
    if let Err(e) = &applied {
        w.end = Some((Outcome::Failed, e.clone()));
    }

    // During the fault: probes on each tick (abort), reactions and recovery on events.
    let mut streaks = vec![Streak::default(); exp.steady_state.len()];
    let mut tick = tokio::time::interval(exp.abort_when.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut recover_tick = tokio::time::interval(RECOVERY_TICK);
    let end = tokio::time::Instant::from_std(t0 + exp.duration);
    while w.end.is_none() {
        tokio::select! {
            () = tokio::time::sleep_until(end) => break,
            changed = halt.changed() => {
                if changed.is_err() || *halt.borrow() {
                    w.end = Some((Outcome::Halted, "halted (`bulwark chaos halt` or `faults off`)".into()));
                }
            }
            _ = tick.tick() => {
                for (p, streak) in exp.steady_state.iter().zip(streaks.iter_mut()) {
                    let result = probe::check(p, &*inner.host, &inner.outcomes).await;
                    let passed = result.is_ok();
                    if let Err(why) = result {
                        w.failed(why.clone());
                        if streak.record(false, exp.abort_when.failure_threshold) {
                            let reason = format!(
                                "{why} ({} checks in a row)",
                                streak.failures()
                            );
                            inner.bus.publish(EventKind::ExperimentAborted {
                                service: service.clone(),
                                name: exp.name.clone(),
                                reason: reason.clone(),
                            });
                            w.end = Some((Outcome::Aborted, reason));
                            break;
                        }
                    } else {
                        streak.record(passed, exp.abort_when.failure_threshold);
                    }
                }
                recovery(&inner, &exp, now_ms(), &mut w).await;
            }
            _ = recover_tick.tick(), if w.detected.is_some() && w.recovered.is_none() => {
                recovery(&inner, &exp, now_ms(), &mut w).await;
            }
            Some(e) = events.next() => on_event(&inner, &exp, fault_at, &e, &mut w).await,
        }
    }
    let fault_end = now_ms();
    w.over = true;
    if let Ok(a) = applied {
        a.undo().await;
    }
    let rollbacks = rollback(&inner, &exp).await;

    // After the fault: until recovered, bounded (a halt does not wait: it must be quick).
    let halted = matches!(w.end, Some((Outcome::Halted, _)));
    if !halted && w.recovered.is_none() {
        let deadline = tokio::time::Instant::now() + RECOVERY_WINDOW;
        let mut tick = tokio::time::interval(RECOVERY_TICK);
        while w.recovered.is_none() {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                _ = tick.tick() => recovery(&inner, &exp, now_ms(), &mut w).await,
                Some(e) = events.next() => on_event(&inner, &exp, fault_at, &e, &mut w).await,
            }
        }
    }
    let window = Duration::from_millis(now_ms().saturating_sub(fault_at)) + Duration::from_secs(1);
    let tally = inner.outcomes.tally(&service, window, Instant::now());
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
        None => (Outcome::Passed, None),
    };
    let report = Report {
        id,
        name: exp.name.clone(),
        service: service.clone(),
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
    };
    inner.bus.publish(EventKind::ExperimentEnded {
        service: service.clone(),
        name: exp.name.clone(),
        outcome: outcome.as_str().into(),
        detect_ms: report.detect_ms,
        recover_ms: report.recover_ms,
    });
    inner.finish(&service, Some(report.clone()));
    report
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
        let result = probe::command_with(cmd, ROLLBACK_TIMEOUT, None).await;
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
