//! One replica's life: spawn, probe, serve, stop, and restart with backoff — forever,
//! until told to stop. It never gives up silently: a crash-looping replica keeps being
//! restarted at the maximum delay and says so in its status and on the bus.

use std::sync::Arc;

use bus::{EventKind, Exit, Load};
use nix::sys::signal::Signal;
use policy::CrashLoop;
use spec::{RestartAction, RestartPolicy, Service};
use tokio::process::Child;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::{Instant, sleep, timeout_at};

use crate::ReplicaState;
use crate::driver::{self, Identity, exit_of, signal_group};
use crate::logs::{Logs, Stream, now_ms};
use crate::probe::{self, Report, Target};
use crate::supervisor::Shared;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Drain, stop and start a new incarnation at once (no backoff).
    Restart,
    /// Drain and stop; the replica stays listed as stopped (shutdown).
    Stop,
    /// Drain and stop, then forget the replica (scale down).
    Remove,
}

enum Outcome {
    /// The process ended on its own, or was killed for failing a probe.
    Ended(Exit, String),
    /// We stopped it because we were asked to.
    Requested(Control, Exit),
}

/// Aborts the probe task when the incarnation ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether the restart policy (and exit-code rules, checked first) want a restart.
/// Death by a signal has no exit code: no rule matches it and it counts as a failure.
pub(crate) fn wants_restart(svc: &Service, exit: Exit) -> bool {
    if let Some(code) = exit.code
        && let Some(rule) = svc
            .restart_rules
            .iter()
            .find(|r| r.exit_codes.contains(&code))
    {
        return rule.action == RestartAction::Restart;
    }
    match svc.restart {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !exit.success(),
        RestartPolicy::Never => false,
    }
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    first_spec: Arc<Service>,
    logs: Arc<Logs>,
    index: u32,
    mut ctl: mpsc::UnboundedReceiver<Control>,
) {
    let owned_name = first_spec.name.clone();
    let name = owned_name.as_str();
    let mut svc = first_spec;
    let b = svc.backoff;
    let mut tracker = CrashLoop::new(
        policy::Backoff {
            initial: b.initial,
            max: b.max,
            multiplier: b.multiplier,
            jitter: b.jitter,
        },
        b.reset_after,
    );
    let mut restarting = false;
    let mut was_looping = false;
    let end = 'life: loop {
        // Restarts (not first starts) take a permit, held until startup passes, so a stack
        // where everything crashes at once restarts a few replicas at a time.
        let permit: Option<OwnedSemaphorePermit> = if restarting {
            tokio::select! {
                p = shared.restart_permits.clone().acquire_owned() => p.ok(),
                c = ctl.recv() => match c {
                    Some(Control::Restart) => None,
                    other => break 'life other.unwrap_or(Control::Stop),
                },
            }
        } else {
            None
        };
        // A reload may have changed the service: every incarnation runs the current spec.
        if let Some(current) = shared.spec(name) {
            svc = current;
        }
        let outcome =
            incarnation(&shared, &svc, &logs, index, &mut ctl, &mut tracker, permit).await;
        let (exit, reason) = match outcome {
            Outcome::Requested(Control::Restart, _) => {
                restarting = true;
                shared.metrics.restarted(name, index);
                shared.update(name, index, |s| s.restarts += 1);
                continue;
            }
            Outcome::Requested(other, _) => break 'life other,
            Outcome::Ended(exit, reason) => (exit, reason),
        };
        if !wants_restart(&svc, exit) {
            shared.update(name, index, |s| s.state = ReplicaState::Exited);
            shared.bus.publish(EventKind::ReplicaDone {
                service: name.into(),
                index,
                exit,
            });
            match ctl.recv().await {
                Some(Control::Restart) => {
                    restarting = true;
                    continue;
                }
                other => break 'life other.unwrap_or(Control::Stop),
            }
        }
        let d = tracker.ended(Instant::now().into_std(), rand::random::<f64>());
        let tail = if d.crash_looping {
            logs.stderr_tail(index, 10)
        } else {
            Vec::new()
        };
        let mut restarts = 0;
        shared.metrics.restarted(name, index);
        shared.update(name, index, |s| {
            s.restarts += 1;
            restarts = s.restarts;
            s.state = if d.crash_looping {
                ReplicaState::CrashLooping
            } else {
                ReplicaState::Backoff
            };
            s.stderr_tail = tail.clone();
        });
        if d.crash_looping && !was_looping {
            tracing::warn!(service = name, index, %exit, "replica is crash-looping");
            shared.bus.publish(EventKind::CrashLooping {
                service: name.into(),
                index,
                restarts,
                last_exit: exit,
                stderr_tail: tail,
            });
        }
        was_looping = d.crash_looping;
        shared.bus.publish(EventKind::RestartScheduled {
            service: name.into(),
            index,
            delay_ms: d.delay.as_millis() as u64,
            restarts,
            reason,
        });
        tokio::select! {
            () = sleep(d.delay) => {}
            c = ctl.recv() => match c {
                Some(Control::Restart) => {}
                other => break 'life other.unwrap_or(Control::Stop),
            },
        }
        restarting = true;
    };
    match end {
        Control::Remove => shared.remove(name, index),
        _ => shared.update(name, index, |s| {
            s.state = ReplicaState::Stopped;
            s.ready = false;
            s.pid = None;
        }),
    }
}

/// Runs one process from spawn to exit.
async fn incarnation(
    shared: &Arc<Shared>,
    svc: &Arc<Service>,
    logs: &Arc<Logs>,
    index: u32,
    ctl: &mut mpsc::UnboundedReceiver<Control>,
    tracker: &mut CrashLoop,
    mut permit: Option<OwnedSemaphorePermit>,
) -> Outcome {
    let name = svc.name.as_str();
    tracker.started(Instant::now().into_std());
    let spawned = match driver::free_port() {
        Ok(port) => {
            let id = Identity {
                service: name,
                index,
                port,
                bulwark: &shared.bulwark,
            };
            driver::spawn(svc, &id).await.map(|child| (child, port))
        }
        Err(e) => Err(e),
    };
    let (mut child, port) = match spawned {
        Ok(c) => c,
        Err(e) => {
            let error = e.to_string();
            tracing::error!(service = name, index, %error, "spawn failed");
            shared.bus.publish(EventKind::SpawnFailed {
                service: name.into(),
                index,
                error: error.clone(),
            });
            let exit = Exit {
                code: None,
                signal: None,
            };
            shared.update(name, index, |s| s.last_exit = Some(exit));
            return Outcome::Ended(exit, error);
        }
    };
    let pid = child.id().unwrap_or(0);
    let load = Arc::new(Load::default());
    shared.set_load(name, index, load.clone());
    let started = Instant::now();
    shared.update(name, index, |s| {
        s.pid = Some(pid);
        s.port = Some(port);
        s.state = ReplicaState::Starting;
        s.ready = false;
        s.started_at_ms = Some(now_ms());
    });
    shared.bus.publish(EventKind::ReplicaStarted {
        service: name.into(),
        index,
        pid,
        port,
    });
    if let Some(out) = child.stdout.take() {
        tokio::spawn(logs.clone().pump(index, Stream::Stdout, out));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(logs.clone().pump(index, Stream::Stderr, err));
    }
    let (tx, mut reports) = mpsc::channel(16);
    let target = Arc::new(Target {
        service: svc.clone(),
        index,
        port,
        bulwark: shared.bulwark.clone(),
        metrics: shared.metrics.clone(),
    });
    let _probes = AbortOnDrop(tokio::spawn(probe::run(target, tx)));

    // Learns of the leader's exit without reaping it (see `reap`).
    let exited = launch::exited(pid);
    tokio::pin!(exited);
    let outcome = loop {
        tokio::select! {
            watched = &mut exited => {
                let exit = match watched {
                    Ok(()) => reap(&mut child, pid).await,
                    Err(e) => reap_unwatched(&mut child, pid, &e).await,
                };
                break Outcome::Ended(exit, format!("replica ended: {exit}"));
            }
            Some(report) = reports.recv() => match report {
                Report::Running => {
                    permit = None;
                    shared.update(name, index, |s| {
                        s.state = ReplicaState::Running;
                        s.stderr_tail.clear();
                    });
                    shared.bus.publish(EventKind::ReplicaRunning { service: name.into(), index });
                }
                Report::Ready(true, _) => {
                    shared.update(name, index, |s| s.ready = true);
                    shared.bus.publish(EventKind::ReplicaReady { service: name.into(), index });
                }
                Report::Ready(false, reason) => {
                    shared.update(name, index, |s| s.ready = false);
                    shared.bus.publish(EventKind::ReplicaUnready { service: name.into(), index, reason });
                }
                Report::Failed(probe, reason) => {
                    tracing::warn!(service = name, index, %reason, "probe failed; restarting");
                    shared.bus.publish(EventKind::ProbeFailed {
                        service: name.into(), index, probe, reason: reason.clone(),
                    });
                    // A replica that failed its probe is broken: do not wait for its
                    // in-flight requests, which the proxy retries elsewhere.
                    let exit = stop(shared, svc, index, &mut child, pid, None, &reason).await;
                    break Outcome::Ended(exit, reason);
                }
            },
            c = ctl.recv() => {
                let c = c.unwrap_or(Control::Stop);
                let reason = match c {
                    Control::Restart => "restart requested",
                    Control::Stop => "stack stopping",
                    Control::Remove => "scaled down",
                };
                let exit = stop(shared, svc, index, &mut child, pid, Some(&load), reason).await;
                break Outcome::Requested(c, exit);
            }
        }
    };
    drop(permit);
    // Every path above killed the group (children the replica left behind) before reaping.
    let (Outcome::Ended(exit, _) | Outcome::Requested(_, exit)) = &outcome;
    let exit = *exit;
    shared.update(name, index, |s| {
        s.pid = None;
        s.ready = false;
        s.last_exit = Some(exit);
    });
    tracing::info!(service = name, index, pid, %exit, "replica exited");
    shared.bus.publish(EventKind::ReplicaExited {
        service: name.into(),
        index,
        pid,
        exit,
        uptime_ms: started.elapsed().as_millis() as u64,
    });
    outcome
}

/// Graceful stop: out of the balancer, let in-flight work finish (when `drain` is given),
/// then the stop signal (and SIGCONT, so a stopped process can act on it), then SIGKILL
/// of the whole group once `stop_grace` is over. The grace covers drain and signal.
async fn stop(
    shared: &Arc<Shared>,
    svc: &Service,
    index: u32,
    child: &mut Child,
    pid: u32,
    drain: Option<&Load>,
    reason: &str,
) -> Exit {
    let name = svc.name.as_str();
    shared.update(name, index, |s| {
        s.ready = false;
        s.state = ReplicaState::Stopping;
    });
    shared.bus.publish(EventKind::ReplicaStopping {
        service: name.into(),
        index,
        reason: reason.into(),
    });
    let deadline = deadline_after(svc.stop_grace);
    if let Some(load) = drain {
        let _ = timeout_at(deadline, load.drained()).await;
    }
    signal_group(pid, svc.stop_signal);
    signal_group(pid, Signal::SIGCONT);
    match timeout_at(deadline, launch::exited(pid)).await {
        Ok(Ok(())) => reap(child, pid).await,
        Ok(Err(e)) => reap_unwatched(child, pid, &e).await,
        Err(_) => {
            signal_group(pid, Signal::SIGKILL);
            tracing::warn!(service = name, index, pid, "stop grace expired; killed");
            shared.bus.publish(EventKind::ReplicaKilled {
                service: name.into(),
                index,
                pid,
            });
            reap(child, pid).await
        }
    }
}

/// `now + d`, saturating: a huge (user-supplied) duration means "practically never"
/// instead of an overflow panic.
pub(crate) fn deadline_after(d: std::time::Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// About 30 years, as tokio's own "far future".
const FAR_FUTURE: std::time::Duration = std::time::Duration::from_secs(86_400 * 365 * 30);

/// Kills what is left of the replica's process group, then reaps the leader.
///
/// The order is the point: the leader must be reaped only after its group is signalled.
/// While the leader is an unreaped zombie its pid, and so its process-group id, cannot be
/// given to another process; once reaped, a `killpg` on that id could hit an unrelated
/// group that reused it. So we learn of the exit without reaping (`launch::exited`:
/// `waitid(P_PID, pid, WEXITED | WNOWAIT)` on each SIGCHLD), kill the group, and only then
/// let tokio reap the leader. The exit status is the leader's own: SIGKILL does nothing
/// to a zombie.
async fn reap(child: &mut Child, pid: u32) -> Exit {
    signal_group(pid, Signal::SIGKILL);
    child.wait().await.map(exit_of).unwrap_or(Exit {
        code: None,
        signal: None,
    })
}

/// The fallback when the exit cannot be watched without reaping (no SIGCHLD stream):
/// reap, then kill leftovers, accepting the small pid-reuse window.
async fn reap_unwatched(child: &mut Child, pid: u32, e: &std::io::Error) -> Exit {
    tracing::warn!(pid, error = %e, "cannot watch the replica without reaping it");
    let exit = child.wait().await.map(exit_of).unwrap_or(Exit {
        code: None,
        signal: None,
    });
    signal_group(pid, Signal::SIGKILL);
    exit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(restart: RestartPolicy, rules: Vec<spec::RestartRule>) -> Service {
        let toml = "[services.s]\nrun = [\"true\"]\n";
        let mut stack = spec::parse(toml, std::path::Path::new("t.toml")).expect("valid");
        let mut s = stack.services.remove(0);
        s.restart = restart;
        s.restart_rules = rules;
        s
    }

    const EXIT0: Exit = Exit {
        code: Some(0),
        signal: None,
    };
    const EXIT1: Exit = Exit {
        code: Some(1),
        signal: None,
    };
    const KILLED: Exit = Exit {
        code: None,
        signal: Some(9),
    };

    #[test]
    fn restart_policies_for_exit_0_exit_1_and_signal() {
        use RestartPolicy::*;
        let table = [
            (Always, [true, true, true]),
            (OnFailure, [false, true, true]),
            (Never, [false, false, false]),
        ];
        for (policy, want) in table {
            let s = svc(policy, vec![]);
            let got = [EXIT0, EXIT1, KILLED].map(|e| wants_restart(&s, e));
            assert_eq!(got, want, "{policy:?}");
        }
    }

    #[test]
    fn exit_code_rules_come_first_and_never_match_signals() {
        let rules = vec![
            spec::RestartRule {
                exit_codes: vec![3],
                action: RestartAction::Stop,
            },
            spec::RestartRule {
                exit_codes: vec![0],
                action: RestartAction::Restart,
            },
        ];
        let s = svc(RestartPolicy::OnFailure, rules);
        assert!(!wants_restart(
            &s,
            Exit {
                code: Some(3),
                signal: None
            }
        ));
        assert!(
            wants_restart(&s, EXIT0),
            "rule overrides on-failure for exit 0"
        );
        assert!(wants_restart(&s, EXIT1));
        assert!(wants_restart(&s, KILLED));
    }

    #[tokio::test]
    async fn deadlines_from_huge_durations_saturate_instead_of_panicking() {
        let now = Instant::now();
        for d in [
            std::time::Duration::MAX,
            std::time::Duration::from_secs(u64::MAX / 2),
            FAR_FUTURE * 2,
        ] {
            let at = deadline_after(d);
            assert!(
                at >= now + std::time::Duration::from_secs(86_400 * 365),
                "{d:?}"
            );
        }
        let short = deadline_after(std::time::Duration::from_secs(1));
        assert!(short <= Instant::now() + std::time::Duration::from_secs(1));
    }
}
