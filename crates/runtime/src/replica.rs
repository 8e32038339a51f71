//! One replica's life: spawn, probe, serve, stop, and restart with backoff — forever,
//! until told to stop. It never gives up silently: a crash-looping replica keeps being
//! restarted at the maximum delay and says so in its status and on the bus.

use std::sync::Arc;

use bus::{Exit, Load};
use launch::cgroup::ReplicaCgroup;
use nix::sys::signal::Signal;
use spec::{OnOom, RestartAction, RestartPolicy, Service};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::{Instant, sleep, timeout_at};

use launch::signal_group;

use crate::driver::{self, Identity, Leader, exit_of};
use crate::handle::Handle;
use crate::logs::{Logs, Stream};
use crate::notify::{self, Notice, NotifySocket};
use crate::probe::{self, Report, Target};
use crate::resources;
use crate::restarts::Restarts;
use crate::supervisor::Shared;
use crate::warm::{self, Checkpoint};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Drain, stop and start a new incarnation at once (no backoff).
    Restart,
    /// Drain and stop; the replica stays listed as stopped (shutdown).
    Stop,
    /// Drain and stop, then forget the replica (scale down).
    Remove,
}

/// What a control message means while the replica waits (for a permit, out its backoff,
/// or after it exited for good): a restart goes on at once, anything else ends the task.
fn go_on(c: Option<Control>) -> Result<(), Control> {
    match c {
        Some(Control::Restart) => Ok(()),
        other => Err(other.unwrap_or(Control::Stop)),
    }
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

/// The replica task: runs incarnations until told to stop or to go away.
pub(crate) async fn run(
    shared: Arc<Shared>,
    first_spec: Arc<Service>,
    logs: Arc<Logs>,
    index: u32,
    ctl: mpsc::UnboundedReceiver<Control>,
) {
    let mut task = Task {
        h: Handle::new(shared, first_spec.name.clone(), index),
        restarts: Restarts::new(first_spec.backoff),
        svc: first_spec,
        logs,
        ctl,
        oom_killed: false,
    };
    let end = task.live().await;
    task.h.finished(end == Control::Remove);
}

/// One replica task's state between incarnations.
struct Task {
    h: Handle,
    /// The spec the current (or last) incarnation runs.
    svc: Arc<Service>,
    logs: Arc<Logs>,
    ctl: mpsc::UnboundedReceiver<Control>,
    restarts: Restarts,
    /// The kernel's OOM killer ended the last incarnation.
    oom_killed: bool,
}

impl Task {
    /// Incarnation after incarnation; returns the control message that ended the task.
    async fn live(&mut self) -> Control {
        let mut restarting = false;
        loop {
            // Restarts (not first starts) take a permit, held until startup passes, so a
            // stack where everything crashes at once restarts a few replicas at a time.
            let permit = if restarting {
                match self.restart_permit().await {
                    Ok(p) => p,
                    Err(end) => return end,
                }
            } else {
                None
            };
            // A reload may have changed the service: every incarnation runs the current
            // spec, backoff included.
            if let Some(current) = self.h.shared().replica_spec(&self.svc.name, self.h.index()) {
                self.svc = current;
            }
            self.restarts.follow(self.svc.backoff);
            let (exit, reason) = match self.incarnation(permit, restarting).await {
                Outcome::Requested(Control::Restart, _) => {
                    self.h.restart_requested();
                    restarting = true;
                    continue;
                }
                Outcome::Requested(end, _) => return end,
                Outcome::Ended(exit, reason) => (exit, reason),
            };
            if let Err(end) = self.after_end(exit, reason).await {
                return end;
            }
            restarting = true;
        }
    }

    /// A permit to restart, or `Ok(None)` when a restart request comes first.
    async fn restart_permit(&mut self) -> Result<Option<OwnedSemaphorePermit>, Control> {
        let permits = self.h.shared().restart_permits.clone();
        tokio::select! {
            p = permits.acquire_owned() => Ok(p.ok()),
            c = self.ctl.recv() => go_on(c).map(|()| None),
        }
    }

    /// After an incarnation ended on its own: leave it down (until a restart request), or
    /// wait out the backoff. `Err` ends the task.
    async fn after_end(&mut self, exit: Exit, reason: String) -> Result<(), Control> {
        if self.oom_killed && self.svc.on_oom == OnOom::Stop {
            self.h.oom_stopped(exit);
            return go_on(self.ctl.recv().await);
        }
        if !wants_restart(&self.svc, exit) {
            self.h.done(exit);
            return go_on(self.ctl.recv().await);
        }
        let d = self
            .restarts
            .ended(Instant::now().into_std(), rand::random::<f64>());
        let tail = if d.restart.crash_looping {
            self.logs.stderr_tail(self.h.index(), 10)
        } else {
            Vec::new()
        };
        self.h.backing_off(&d, exit, reason, tail);
        tokio::select! {
            () = sleep(d.restart.delay) => Ok(()),
            c = self.ctl.recv() => go_on(c),
        }
    }

    /// Runs one process from spawn (or restore) to exit.
    async fn incarnation(
        &mut self,
        mut permit: Option<OwnedSemaphorePermit>,
        restart: bool,
    ) -> Outcome {
        let index = self.h.index();
        self.restarts.started(Instant::now().into_std());
        self.oom_killed = false;
        let Spawned {
            mut child,
            procs,
            addr,
            cgroup,
            notify,
            container,
            mut checkpoint,
        } = match self.spawn(restart).await {
            Ok(spawned) => spawned,
            Err(error) => {
                tracing::error!(service = self.svc.name, index, %error, "spawn failed");
                let exit = self.h.spawn_failed(error.clone());
                return Outcome::Ended(exit, error);
            }
        };
        // The leader (runc for a container) is what is watched and signalled as a group.
        let pid = procs.leader;
        let load = Arc::new(Load::default());
        let started = Instant::now();
        self.h.started(procs, addr, load.clone(), cgroup.clone());
        // The secrets this incarnation was started with, whatever a reload changes later.
        let redactor = crate::Redactor::of(&self.svc);
        let (stdout, stderr) = child.take_output();
        if let Some(out) = stdout {
            let pump = self
                .logs
                .clone()
                .pump(index, Stream::Stdout, out, redactor.clone());
            tokio::spawn(pump);
        }
        if let Some(err) = stderr {
            tokio::spawn(self.logs.clone().pump(index, Stream::Stderr, err, redactor));
        }
        let (tx, reports) = mpsc::channel(16);
        // A channel of its own: a chatty replica must not crowd out the probes' reports
        // (the readiness probe drops a transition when its channel is full).
        let (notices_tx, notices) = mpsc::channel(16);
        let target = Arc::new(Target {
            service: self.svc.clone(),
            index,
            addr,
            bulwark: self.h.shared().bulwark.clone(),
            metrics: self.h.shared().metrics.clone(),
        });
        let _notify = notify.map(|sock| {
            let (cfg, service) = (self.svc.notify.unwrap_or_default(), self.svc.name.as_str());
            let senders = container
                .as_ref()
                .map_or(notify::Senders::Group(pid), |c| c.notify_senders());
            let reader = notify::run(sock, senders, cfg, notices_tx, service.into(), index);
            AbortOnDrop(tokio::spawn(reader))
        });
        let _probes = AbortOnDrop(tokio::spawn(probe::run(target, tx)));
        let outcome = self
            .watch(
                &mut child,
                procs,
                &load,
                [reports, notices],
                (&mut permit, &mut checkpoint),
            )
            .await;
        drop(permit);
        let outcome = match outcome {
            Outcome::Ended(exit, reason) => {
                Outcome::Ended(driver::ended(container, exit).await, reason)
            }
            Outcome::Requested(c, exit) => {
                Outcome::Requested(c, driver::ended(container, exit).await)
            }
        };
        // Every path of `watch` killed the group (children the replica left behind)
        // before reaping.
        let (Outcome::Ended(exit, _) | Outcome::Requested(_, exit)) = &outcome;
        let pid = procs.pid();
        tracing::info!(service = self.svc.name, index, pid, %exit, "replica exited");
        let uptime_ms = started.elapsed().as_millis() as u64;
        self.release(cgroup, pid, *exit).await;
        self.h.exited(pid, *exit, uptime_ms, self.oom_killed);
        match outcome {
            Outcome::Ended(exit, _) if self.oom_killed => {
                let reason = match self.svc.resources.memory {
                    Some(b) => format!("oom-killed (memory limit {b} bytes)"),
                    None => "oom-killed".to_owned(),
                };
                Outcome::Ended(exit, reason)
            }
            other => other,
        }
    }

    /// Once the incarnation's process is gone: whether the OOM killer ended it (said
    /// before its exit), then its cgroups removed.
    async fn release(&mut self, cgroup: Option<Arc<ReplicaCgroup>>, pid: u32, exit: Exit) {
        let Some(cgroup) = cgroup else {
            return;
        };
        let limit = cgroup.limits.memory;
        let kills = resources::finish(cgroup).await;
        // The OOM killer's signal is SIGKILL; a replica that died otherwise while one of its
        // children was OOM-killed was not itself.
        if kills > 0 && exit.signal == Some(Signal::SIGKILL as i32) {
            self.oom_killed = true;
            let (service, index) = (&self.svc.name, self.h.index());
            tracing::warn!(service, index, pid, kills, "replica OOM-killed");
            self.h.oom_killed(pid, limit, kills);
        }
    }

    /// Spawns the current spec on a free port, in its cgroups when it sets resources and
    /// with its notify socket if it speaks sd_notify; or restores a `[warm]` one.
    async fn spawn(&self, restart: bool) -> Result<Spawned, String> {
        let warm = match warm::start(&self.h, &self.svc, restart).await {
            Some((_, _, Some((restored, port, cgroup)))) => {
                return Ok(Spawned {
                    procs: driver::Processes {
                        leader: restored.pid,
                        container: None,
                    },
                    child: Leader::Restored(restored),
                    addr: (std::net::Ipv4Addr::LOCALHOST, port).into(),
                    cgroup,
                    notify: None,
                    container: None,
                    // Its slot has its checkpoint: nothing more to take.
                    checkpoint: Checkpoint::off(),
                });
            }
            Some((slot, stamp, None)) => Some((slot, stamp)),
            None => None,
        };
        let port = driver::free_port().map_err(|e| e.to_string())?;
        let notify = match self.svc.notify {
            // Making the directory (the first time) and the socket's file: off the
            // runtime's workers.
            Some(_) => {
                let shared = self.h.shared().clone();
                let bound = tokio::task::spawn_blocking(move || shared.notify_sockets().bind());
                Some(bound.await.map_err(|e| e.to_string())??)
            }
            None => None,
        };
        let shared = self.h.shared();
        let (cgroup, placement) =
            resources::prepare(&shared.cgroups, &self.svc, self.h.index()).await?;
        let id = Identity {
            service: &self.svc.name,
            index: self.h.index(),
            // The oci driver gives a container with a private network its own.
            addr: std::net::Ipv4Addr::LOCALHOST.into(),
            port,
            bulwark: &self.h.shared().bulwark,
        };
        let socket = notify.as_ref().map(NotifySocket::path);
        let nested = cgroup.as_deref().map(ReplicaCgroup::nested_path);
        // A replica of a `[leader]` service starts as a standby, whatever its token file
        // said before (a former leader's process, or a previous run of bulwark).
        let svc = crate::leader::with_token_file(shared, &self.svc, self.h.index());
        let standby = match crate::leader::token_file(shared, &self.svc, self.h.index()) {
            Some(path) => crate::leader::write_token_file(path, None).await,
            None => Ok(()),
        };
        let started = match standby {
            Ok(()) => driver::start(&svc, &id, &shared.oci, (placement, nested), socket).await,
            Err(e) => Err(std::io::Error::other(e)),
        };
        match started {
            Ok((child, procs, container)) => Ok(Spawned {
                checkpoint: match (warm, self.svc.warm) {
                    (Some((slot, stamp)), Some(w)) => {
                        Checkpoint::wanted(slot, procs.leader, port, stamp, w.after)
                    }
                    _ => Checkpoint::off(),
                },
                child: Leader::Spawned(child),
                procs,
                // A private network's container has an address of its own.
                addr: std::net::SocketAddr::new(
                    container
                        .as_ref()
                        .and_then(driver::oci::Container::addr)
                        .unwrap_or(std::net::Ipv4Addr::LOCALHOST)
                        .into(),
                    port,
                ),
                cgroup,
                notify,
                container,
            }),
            Err(e) => {
                if let Some(cgroup) = cgroup {
                    resources::finish(cgroup).await;
                }
                Err(e.to_string())
            }
        }
    }

    /// Follows a running incarnation: its exit, its probes' and its notify socket's
    /// reports (the permit goes once startup passed) and control messages, until the
    /// process is gone.
    async fn watch(
        &mut self,
        child: &mut Leader,
        procs: driver::Processes,
        load: &Load,
        [mut reports, mut notices]: [mpsc::Receiver<Report>; 2],
        (permit, checkpoint): (&mut Option<OwnedSemaphorePermit>, &mut Checkpoint),
    ) -> Outcome {
        let pid = procs.leader;
        // Learns of the leader's exit without reaping it (see `reap`).
        let exited = launch::exited(pid);
        tokio::pin!(exited);
        let mut gate = Gate::new(&self.svc);
        loop {
            // A closed channel (no notify socket) disables its branch.
            let report = tokio::select! {
                watched = &mut exited => {
                    let exit = match watched {
                        Ok(()) => reap(child, pid).await,
                        Err(e) => reap_unwatched(child, pid, &e).await,
                    };
                    return Outcome::Ended(exit, format!("replica ended: {exit}"));
                }
                Some(report) = reports.recv() => report,
                Some(report) = notices.recv() => report,
                dumped = checkpoint.next() => {
                    match dumped {
                        Ok(d) => self.h.checkpointed(d.pid, d.dump_ms, d.bytes),
                        Err(reason) => {
                            let (service, index) = (&self.svc.name, self.h.index());
                            tracing::warn!(service, index, %reason, "checkpoint failed");
                            self.h.checkpoint_failed(reason);
                        }
                    }
                    continue;
                }
                c = self.ctl.recv() => {
                    let c = c.unwrap_or(Control::Stop);
                    let reason = match c {
                        Control::Restart => "restart requested",
                        Control::Stop => "stack stopping",
                        Control::Remove => "scaled down",
                    };
                    let exit = self.stop(child, procs, Some(load), reason).await;
                    return Outcome::Requested(c, exit);
                }
            };
            match report {
                Report::Running => {
                    *permit = None;
                    self.h.running();
                }
                Report::Ready => {
                    checkpoint.ready();
                    gate.set(&self.h, |g| g.probe = true, String::new());
                }
                Report::Unready(reason) => {
                    checkpoint.unready();
                    gate.probe_failed(&self.h, reason);
                }
                Report::Notified(n) => gate.notified(&self.h, n),
                Report::Failed { probe, reason } => {
                    let (service, index) = (&self.svc.name, self.h.index());
                    tracing::warn!(service, index, %reason, "probe failed; restarting");
                    self.h.probe_failed(probe, reason.clone());
                    // A replica that failed its probe is broken: do not wait for its
                    // in-flight requests, which the proxy retries elsewhere.
                    let exit = self.stop(child, procs, None, &reason).await;
                    return Outcome::Ended(exit, reason);
                }
            }
        }
    }

    /// Graceful stop: out of the balancer, let in-flight work finish (when `drain` is
    /// given), then the stop signal to the leader's group (runc passes it on to the
    /// container's PID 1) and SIGCONT to every process (so a stopped one can act on it),
    /// then SIGKILL of the whole group once `stop_grace` is over. The grace covers drain
    /// and signal.
    async fn stop(
        &self,
        child: &mut Leader,
        procs: driver::Processes,
        drain: Option<&Load>,
        reason: &str,
    ) -> Exit {
        self.h.stopping(reason);
        let pid = procs.leader;
        let deadline = deadline_after(self.svc.stop_grace);
        if let Some(load) = drain {
            let _ = timeout_at(deadline, load.drained()).await;
        }
        signal_group(pid, self.svc.stop_signal);
        // A container's processes are not in runc's group: they are continued one by one
        // (cgroupfs reads, off the async workers).
        let _ = tokio::task::spawn_blocking(move || procs.signal(Signal::SIGCONT)).await;
        match timeout_at(deadline, launch::exited(pid)).await {
            Ok(Ok(())) => reap(child, pid).await,
            Ok(Err(e)) => reap_unwatched(child, pid, &e).await,
            Err(_) => {
                signal_group(pid, Signal::SIGKILL);
                let (service, index) = (&self.svc.name, self.h.index());
                tracing::warn!(service, index, pid, "stop grace expired; killed");
                self.h.killed(procs.pid());
                reap(child, pid).await
            }
        }
    }
}

/// Whether a replica is ready: its readiness probe passed (or it has none) and, when it
/// speaks sd_notify with `ready = true`, it said `READY=1` since it started or since its
/// last `RELOADING=1`, and not `STOPPING=1`. Both must pass; either failing takes it out.
struct Gate {
    probe: bool,
    notify: bool,
    stopping: bool,
}

impl Gate {
    fn new(svc: &Service) -> Self {
        Gate {
            probe: false,
            notify: !svc.notify.is_some_and(|n| n.ready),
            stopping: false,
        }
    }

    fn open(&self) -> bool {
        self.probe && self.notify && !self.stopping
    }

    /// Applies `f`; a change of the outcome goes through the handle (`reason` says why the
    /// replica went out).
    fn set(&mut self, h: &Handle, f: impl FnOnce(&mut Gate), reason: String) {
        let was = self.open();
        f(self);
        match (was, self.open()) {
            (false, true) => h.ready(),
            (true, false) => h.unready(reason),
            _ => {}
        }
    }

    /// The readiness probe failed: said as before notify existed, even by a replica that
    /// was not ready yet (its probe's first verdict).
    fn probe_failed(&mut self, h: &Handle, reason: String) {
        self.probe = false;
        h.unready(reason);
    }

    fn notified(&mut self, h: &Handle, n: Notice) {
        match n {
            Notice::Ready => self.set(h, |g| g.notify = true, String::new()),
            Notice::Reloading => self.set(
                h,
                |g| g.notify = false,
                "the replica said RELOADING=1".into(),
            ),
            Notice::Stopping => self.set(
                h,
                |g| g.stopping = true,
                "the replica said STOPPING=1: draining until it exits".into(),
            ),
            Notice::Status(text) => h.notify_status(text),
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
async fn reap(child: &mut Leader, pid: u32) -> Exit {
    signal_group(pid, Signal::SIGKILL);
    wait_exit(child).await
}

/// The fallback when the exit cannot be watched without reaping (no SIGCHLD stream):
/// reap, then kill leftovers, accepting the small pid-reuse window.
async fn reap_unwatched(child: &mut Leader, pid: u32, e: &std::io::Error) -> Exit {
    tracing::warn!(pid, error = %e, "cannot watch the replica without reaping it");
    let exit = wait_exit(child).await;
    signal_group(pid, Signal::SIGKILL);
    exit
}

/// Reaps the leader; an error waiting (the child was already reaped) is an unknown exit.
async fn wait_exit(child: &mut Leader) -> Exit {
    child.wait().await.map(exit_of).unwrap_or(Exit {
        code: None,
        signal: None,
    })
}

/// A started incarnation: its process, address, cgroups and notify socket.
struct Spawned {
    child: Leader,
    /// When a `[warm]` one is checkpointed.
    checkpoint: Checkpoint,
    procs: driver::Processes,
    /// Where it listens: 127.0.0.1, or its container's own address, and its port.
    addr: std::net::SocketAddr,
    cgroup: Option<Arc<ReplicaCgroup>>,
    notify: Option<NotifySocket>,
    /// The oci driver's container, deleted once the process has ended.
    container: Option<driver::oci::Container>,
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
