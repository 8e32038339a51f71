//! A replica task's one handle on the world outside it: its row in the status table and
//! the bus.
//!
//! Invariant ("every state change is an event"): the replica task changes its status only
//! through these methods, and each method that changes what others act on publishes its
//! event right after the status changed, so a reader of the event finds the new status.
//! Three bookkeeping changes have no event of their own: a requested restart's count (its
//! `ReplicaStopping` and `ReplicaExited` came before), the final `Stopped` state (the
//! stack's `StackStopping`/`StackStopped` frame it) and a replica's sd_notify `STATUS=`
//! line (shown, acted on by nothing; a replica may send many, which should not flood the
//! journal).

use std::sync::Arc;

use bus::{EventKind, Exit, Load, ProbeKind};

use crate::ReplicaState;
use crate::logs::now_ms;
use crate::restarts::Decision;
use crate::supervisor::{ReplicaStatus, Shared};

pub(crate) struct Handle {
    shared: Arc<Shared>,
    service: String,
    index: u32,
}

impl Handle {
    pub fn new(shared: Arc<Shared>, service: String, index: u32) -> Self {
        Handle {
            shared,
            service,
            index,
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    /// The one place where status and events change together.
    fn change(&self, f: impl FnOnce(&mut ReplicaStatus), event: Option<EventKind>) {
        self.shared.update(&self.service, self.index, f);
        if let Some(kind) = event {
            self.shared.bus.publish(kind);
        }
    }

    fn name(&self) -> String {
        self.service.clone()
    }

    /// A new incarnation runs as `procs`, listening (eventually) on `addr`; `load` counts
    /// its in-flight requests.
    pub fn started(
        &self,
        procs: crate::driver::Processes,
        addr: std::net::SocketAddr,
        load: Arc<Load>,
        cgroup: Option<Arc<launch::cgroup::ReplicaCgroup>>,
    ) {
        self.shared.set_load(&self.service, self.index, load);
        self.change(
            |s| {
                s.cgroup = cgroup;
                s.pid = Some(procs.pid());
                s.runtime_pid = procs.runtime_pid();
                s.addr = Some(addr.ip());
                s.port = Some(addr.port());
                s.state = ReplicaState::Starting;
                s.ready = false;
                s.started_at_ms = Some(now_ms());
                s.notify_status = None;
            },
            Some(EventKind::ReplicaStarted {
                service: self.name(),
                index: self.index,
                pid: procs.pid(),
                port: addr.port(),
            }),
        );
    }

    /// The incarnation could not be spawned; returns the exit it counts as.
    pub fn spawn_failed(&self, error: String) -> Exit {
        let exit = Exit {
            code: None,
            signal: None,
        };
        self.change(
            |s| s.last_exit = Some(exit),
            Some(EventKind::SpawnFailed {
                service: self.name(),
                index: self.index,
                error,
            }),
        );
        exit
    }

    /// Startup passed.
    pub fn running(&self) {
        self.change(
            |s| {
                s.state = ReplicaState::Running;
                s.stderr_tail.clear();
            },
            Some(EventKind::ReplicaRunning {
                service: self.name(),
                index: self.index,
            }),
        );
    }

    pub fn ready(&self) {
        self.change(
            |s| s.ready = true,
            Some(EventKind::ReplicaReady {
                service: self.name(),
                index: self.index,
            }),
        );
    }

    pub fn unready(&self, reason: String) {
        self.change(
            |s| s.ready = false,
            Some(EventKind::ReplicaUnready {
                service: self.name(),
                index: self.index,
                reason,
            }),
        );
    }

    /// The replica's sd_notify `STATUS=` line.
    pub fn notify_status(&self, text: String) {
        self.change(|s| s.notify_status = Some(text), None);
    }

    /// A startup or liveness probe gave up on the replica (the stop follows).
    pub fn probe_failed(&self, probe: ProbeKind, reason: String) {
        self.shared.bus.publish(EventKind::ProbeFailed {
            service: self.name(),
            index: self.index,
            probe,
            reason,
        });
    }

    /// Out of the balancer; the stop signal follows.
    pub fn stopping(&self, reason: &str) {
        self.change(
            |s| {
                s.ready = false;
                s.state = ReplicaState::Stopping;
            },
            Some(EventKind::ReplicaStopping {
                service: self.name(),
                index: self.index,
                reason: reason.into(),
            }),
        );
    }

    /// The stop grace ran out and the group was SIGKILLed.
    pub fn killed(&self, pid: u32) {
        self.shared.bus.publish(EventKind::ReplicaKilled {
            service: self.name(),
            index: self.index,
            pid,
        });
    }

    /// The kernel's OOM killer killed `kills` processes of the incarnation, its leader
    /// among them (its exit follows).
    pub fn oom_killed(&self, pid: u32, memory_limit: Option<u64>, kills: u64) {
        self.shared.metrics.oom_killed(&self.service, self.index);
        self.shared.bus.publish(EventKind::ReplicaOomKilled {
            service: self.name(),
            index: self.index,
            pid,
            memory_limit,
            kills,
        });
    }

    /// A warm incarnation was checkpointed.
    pub fn checkpointed(&self, pid: u32, dump_ms: u64, bytes: u64) {
        self.shared.bus.publish(EventKind::ReplicaCheckpointed {
            service: self.name(),
            index: self.index,
            pid,
            dump_ms,
            bytes,
        });
    }

    /// A checkpoint failed; the replica runs on, its restarts stay cold.
    pub fn checkpoint_failed(&self, reason: String) {
        self.shared.bus.publish(EventKind::ReplicaCheckpointFailed {
            service: self.name(),
            index: self.index,
            reason,
        });
    }

    /// The incarnation about to start was restored from its slot's checkpoint.
    pub fn restored(&self, pid: u32, restore_ms: u64) {
        self.shared.bus.publish(EventKind::ReplicaRestored {
            service: self.name(),
            index: self.index,
            pid,
            restore_ms,
        });
    }

    /// No restore: a cold start follows.
    pub fn restore_failed(&self, reason: String) {
        self.shared.bus.publish(EventKind::ReplicaRestoreFailed {
            service: self.name(),
            index: self.index,
            reason,
        });
    }

    /// The incarnation's process is gone (group killed, leader reaped, cgroups removed).
    pub fn exited(&self, pid: u32, exit: Exit, uptime_ms: u64, oom_killed: bool) {
        self.change(
            |s| {
                s.cgroup = None;
                s.oom_killed = oom_killed;
                s.pid = None;
                s.runtime_pid = None;
                s.ready = false;
                s.last_exit = Some(exit);
            },
            Some(EventKind::ReplicaExited {
                service: self.name(),
                index: self.index,
                pid,
                exit,
                uptime_ms,
            }),
        );
    }

    /// The restart policy leaves the replica down.
    pub fn done(&self, exit: Exit) {
        self.change(
            |s| s.state = ReplicaState::Exited,
            Some(EventKind::ReplicaDone {
                service: self.name(),
                index: self.index,
                exit,
            }),
        );
    }

    /// OOM-killed, and `on_oom = "stop"` leaves it down.
    pub fn oom_stopped(&self, exit: Exit) {
        self.change(
            |s| s.state = ReplicaState::OomKilled,
            Some(EventKind::ReplicaDone {
                service: self.name(),
                index: self.index,
                exit,
            }),
        );
    }

    /// A restart was asked for: the next incarnation starts at once.
    pub fn restart_requested(&self) {
        self.shared.metrics.restarted(&self.service, self.index);
        self.change(|s| s.restarts += 1, None);
    }

    /// The replica waits out `d`'s delay before its next incarnation. While it is
    /// crash-looping its status carries `stderr_tail`; when it has just begun to, that is
    /// announced too.
    pub fn backing_off(&self, d: &Decision, exit: Exit, reason: String, stderr_tail: Vec<String>) {
        let looping = d.restart.crash_looping;
        let mut restarts = 0;
        self.shared.metrics.restarted(&self.service, self.index);
        self.change(
            |s| {
                s.restarts += 1;
                restarts = s.restarts;
                s.state = if looping {
                    ReplicaState::CrashLooping
                } else {
                    ReplicaState::Backoff
                };
                s.stderr_tail = stderr_tail.clone();
            },
            None,
        );
        if d.began_looping {
            tracing::warn!(service = self.service, index = self.index, %exit, "replica is crash-looping");
            self.shared.bus.publish(EventKind::CrashLooping {
                service: self.name(),
                index: self.index,
                restarts,
                last_exit: exit,
                stderr_tail,
            });
        }
        self.shared.bus.publish(EventKind::RestartScheduled {
            service: self.name(),
            index: self.index,
            delay_ms: d.restart.delay.as_millis() as u64,
            restarts,
            reason,
        });
    }

    /// The task ends: scaled away (`remove`), or stopped and kept listed.
    pub fn finished(&self, remove: bool) {
        if remove {
            self.shared.remove(&self.service, self.index);
        } else {
            self.change(
                |s| {
                    s.state = ReplicaState::Stopped;
                    s.ready = false;
                    s.pid = None;
                    s.runtime_pid = None;
                },
                None,
            );
        }
    }
}
