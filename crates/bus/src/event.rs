use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// One thing that happened. `seq` is unique and increasing per bus.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Position in the bus's sequence: unique, increasing, starting at 1.
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The node whose agent published it (`bulwark agent --node`), so events gathered from
    /// several machines say where they happened; none under `bulwark up`. (`origin`, not
    /// `node`: the node events' own `node` is the node they are about.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Which probe an event is about: the stack file's own kinds.
pub use spec::ProbeKind;

/// How a process ended: an exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// The exit code, if the process exited by itself.
    pub code: Option<i32>,
    /// The number of the signal that killed the process, if one did.
    pub signal: Option<i32>,
}

impl Exit {
    /// Whether the process exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit status {code}"),
            (None, Some(sig)) => write!(f, "killed by signal {sig}"),
            (None, None) => f.write_str("unknown exit"),
        }
    }
}

/// Every state change in bulwark. Serialized with a `type` tag for the API and the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The stack was started: every service's replicas have been launched.
    StackUp {
        /// How many services the stack runs.
        services: usize,
    },
    /// Shutdown began: replicas are being drained and stopped.
    StackStopping,
    /// Every replica has stopped; bulwark is about to exit.
    StackStopped,
    /// A replica's process was spawned.
    ReplicaStarted {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
        /// The process id of the replica's process.
        pid: u32,
        /// The port the replica was told to listen on.
        port: u16,
    },
    /// Startup probe passed (or there is none): liveness and readiness now run.
    ReplicaRunning {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
    },
    /// A replica passed its readiness probe and now receives traffic.
    ReplicaReady {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
    },
    /// A replica stopped receiving traffic because its readiness probe failed.
    ReplicaUnready {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
        /// Why, in words (the failing probe's message).
        reason: String,
    },
    /// One probe of a replica failed (a transition may follow once its threshold is reached).
    ProbeFailed {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
        /// Which of the replica's probes failed.
        probe: ProbeKind,
        /// What went wrong, in words.
        reason: String,
    },
    /// A replica's process ended.
    ReplicaExited {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
        /// The process id of the replica's process.
        pid: u32,
        /// How the process ended.
        exit: Exit,
        /// How long the process ran, in milliseconds.
        uptime_ms: u64,
    },
    /// A replica will be started again after a backoff delay.
    RestartScheduled {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
        /// The backoff before the next start, in milliseconds.
        delay_ms: u64,
        /// Restarts of this replica so far, this one included.
        restarts: u32,
        /// Why the replica is restarted, in words.
        reason: String,
    },
    /// A replica keeps dying before it has been up for `reset_after`. bulwark keeps
    /// restarting it at the maximum backoff; it never gives up silently.
    CrashLooping {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
        /// Restarts of this replica so far.
        restarts: u32,
        /// How the latest incarnation ended.
        last_exit: Exit,
        /// The last lines the replica wrote to stderr, oldest first.
        stderr_tail: Vec<String>,
    },
    /// The kernel's OOM killer killed the replica's process: its cgroup's memory limit
    /// (`resources.memory`) was reached, or the machine ran out of memory. Its
    /// `replica_exited` (signal 9) follows, then what `on_oom` says.
    ReplicaOomKilled {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
        /// The process id of the replica's process.
        pid: u32,
        /// The replica's memory limit in bytes, if it had one.
        memory_limit: Option<u64>,
        /// The processes of the replica the OOM killer killed (usually 1).
        kills: u64,
    },
    /// A warm replica (`[services.NAME.warm]`) was checkpointed while it kept running:
    /// the next restart of its slot restores this image instead of a cold start.
    ReplicaCheckpointed {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
        /// The process id of the replica's process (a restore gives it back).
        pid: u32,
        /// How long `criu dump` took: the replica was frozen for most of it.
        dump_ms: u64,
        /// The size of the image on disk.
        bytes: u64,
    },
    /// A checkpoint of a warm replica failed; it keeps running, its restarts stay cold.
    ReplicaCheckpointFailed {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
        /// What CRIU said.
        reason: String,
    },
    /// A replica was restored from its slot's checkpoint instead of started cold; its
    /// `replica_started` follows.
    ReplicaRestored {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
        /// The restored process (the checkpointed one's pid).
        pid: u32,
        /// How long `criu restore` took.
        restore_ms: u64,
    },
    /// A restore from a checkpoint failed or was not possible (the spec or the binary
    /// changed); the replica is started cold instead.
    ReplicaRestoreFailed {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
        /// Why.
        reason: String,
    },
    /// The restart policy says not to restart; the replica stays down.
    ReplicaDone {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
        /// How the process ended.
        exit: Exit,
    },
    /// A replica is being stopped: it drains, then gets its stop signal.
    ReplicaStopping {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
        /// Why it is being stopped, in words.
        reason: String,
    },
    /// The replica did not stop within its grace; its process group was killed.
    ReplicaKilled {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
        /// The process id of the replica's process.
        pid: u32,
    },
    /// A replica's process could not be started at all.
    SpawnFailed {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
        /// The operating system's error, in words.
        error: String,
    },
    /// A replica became its service's leader (`[services.NAME.leader]`): its `promote`
    /// ran and the proxy now sends leader traffic to it with this token.
    LeaderElected {
        /// The service concerned.
        service: String,
        /// The new leader's index within its service.
        index: u32,
        /// Its fencing token, greater than every one before.
        token: u64,
        /// Why there was an election: `first` (no leader before), or how the previous one
        /// was lost (`exited`, `unready`).
        reason: String,
    },
    /// A leader lost its role: out of leader routing, then its `demote` ran. A new
    /// leader is elected once a standby is ready.
    LeaderLost {
        /// The service concerned.
        service: String,
        /// The former leader's index.
        index: u32,
        /// The token it held, never valid again.
        token: u64,
        /// `exited` (its process is gone or was restarted), `unready` (not ready past
        /// `failover_after`), `lost` (the election no longer grants its term: an
        /// expired lease), `removed` (`[leader]` left the stack file) or `shutdown`.
        reason: String,
    },
    /// A promotion failed: the replica stays a standby; the other ready standbys are
    /// tried first, and it is tried again 5 s later.
    PromoteFailed {
        /// The service concerned.
        service: String,
        /// The replica that was to be promoted.
        index: u32,
        /// The token it would have held (never valid).
        token: u64,
        /// What went wrong, in words.
        error: String,
    },
    /// A service's replica count was changed.
    Scaled {
        /// The service concerned.
        service: String,
        /// The replica count before.
        from: u32,
        /// The replica count after.
        to: u32,
    },
    /// The proxy stopped sending traffic to a replica that kept failing.
    ReplicaEjected {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
        /// The outlier rule that ejected it, in words.
        reason: String,
        /// How long, at most, before a single probe request may re-admit it.
        for_ms: u64,
    },
    /// The proxy sends traffic to a previously ejected replica again.
    ReplicaReadmitted {
        /// The service concerned.
        service: String,
        /// The replica's index within its service.
        index: u32,
    },
    /// The stack file was applied again without a restart.
    Reloaded {
        /// The names of the services whose configuration changed.
        changed: Vec<String>,
    },
    /// The global fault kill switch.
    FaultsToggled {
        /// Whether injected faults are now active.
        enabled: bool,
    },
    /// A run-time switch was set (`bulwark switch set`).
    SwitchChanged {
        /// The switch (`[switches.NAME]`).
        name: String,
        /// Its value before: `on`, `off` or a percentage such as `25%`.
        from: String,
        /// Its value now.
        to: String,
        /// Who set it, as the caller said.
        by: String,
    },
    /// An alert started firing.
    AlertFiring {
        /// The service concerned.
        service: String,
        /// The alert's name, unique within its service.
        name: String,
        /// How urgent the alert is (e.g. `page` or `ticket`).
        severity: String,
        /// A one-line description for people.
        summary: String,
        /// Whether a silence keeps this alert from being notified.
        silenced: bool,
    },
    /// A firing alert stopped firing.
    AlertResolved {
        /// The service concerned.
        service: String,
        /// The alert's name, unique within its service.
        name: String,
        /// How urgent the alert was.
        severity: String,
        /// How long it fired, in milliseconds.
        firing_ms: u64,
    },
    /// An incident was opened for a service.
    IncidentOpened {
        /// The service concerned.
        service: String,
        /// The incident's id, unique in this journal.
        id: u64,
        /// A one-line description of what broke.
        title: String,
    },
    /// An incident was resolved.
    IncidentResolved {
        /// The service concerned.
        service: String,
        /// The id of the resolved incident.
        id: u64,
        /// Detection to resolution.
        ttr_ms: u64,
    },
    /// A chaos experiment broke something on purpose.
    ExperimentStarted {
        /// The service concerned (the experiment's target).
        service: String,
        /// The experiment's name.
        name: String,
        /// What it broke, in words (`SIGKILL of web/1`).
        fault: String,
        /// The replicas hit.
        replicas: Vec<u32>,
        /// What started it: `manual`, `cron`, `monkey` or `verify`.
        trigger: String,
    },
    /// A chaos experiment was not started; nothing was broken.
    ExperimentRefused {
        /// The service concerned.
        service: String,
        /// The experiment's name.
        name: String,
        /// Which guard refused it, in words.
        reason: String,
    },
    /// A monkey on its leash: what it would have broken, had it been let loose.
    ExperimentLeashed {
        /// The service concerned.
        service: String,
        /// The experiment's name.
        name: String,
        /// What it would have broken.
        fault: String,
    },
    /// A chaos experiment stopped early: a steady-state probe failed too often, or it was
    /// halted.
    ExperimentAborted {
        /// The service concerned.
        service: String,
        /// The experiment's name.
        name: String,
        /// Why, in words.
        reason: String,
    },
    /// A rollback command of an experiment ran (one failing does not stop the others).
    ExperimentRollback {
        /// The service concerned.
        service: String,
        /// The experiment's name.
        name: String,
        /// The command's program.
        command: String,
        /// It exited 0 in time.
        ok: bool,
        /// Its exit and output tail when it failed.
        detail: String,
    },
    /// A chaos experiment is over: fault removed, rollbacks run.
    ExperimentEnded {
        /// The service concerned.
        service: String,
        /// The experiment's name.
        name: String,
        /// `passed` (the steady state held), `failed`, `aborted` or `halted`.
        outcome: String,
        /// From the fault to bulwark's first reaction, when it reacted.
        detect_ms: Option<u64>,
        /// From the fault to every replica ready and the steady state holding again.
        recover_ms: Option<u64>,
    },
    /// A voluntary disruption (a restart, a rollout's stop) waits: doing it now would
    /// leave fewer ready replicas than the service's `min_available`.
    BudgetWait {
        /// The service concerned.
        service: String,
        /// What waits, in words (`restart of web/1`).
        action: String,
        /// Ready replicas now.
        ready: u32,
        /// The disruption budget.
        min_available: u32,
    },
    /// A rollout began: `revision` of `service` is on its way to replace the stable one.
    RolloutStarted {
        /// The service concerned.
        service: String,
        /// The new revision.
        revision: u32,
        /// The revision it replaces.
        from: u32,
        /// `rolling`, `canary` or `blue-green`.
        strategy: String,
        /// What changed, a line per setting.
        changes: Vec<String>,
    },
    /// A rollout moved on: a canary step, a rolling batch, a blue-green set ready.
    RolloutStep {
        /// The service concerned.
        service: String,
        /// The new revision.
        revision: u32,
        /// Where it is, in words (`step 1 of 2: 10 % of requests`).
        step: String,
    },
    /// The analysis judged the new revision against the stable one.
    RolloutVerdict {
        /// The service concerned.
        service: String,
        /// The new revision.
        revision: u32,
        /// `pass`, `fail` or `inconclusive`.
        verdict: String,
        /// The figures behind it.
        detail: String,
    },
    /// A rollout holds where it is (`bulwark rollout pause`, an inconclusive analysis, a
    /// step that waits for promotion, the disruption budget).
    RolloutPaused {
        /// The service concerned.
        service: String,
        /// The new revision.
        revision: u32,
        /// Why, in words.
        reason: String,
    },
    /// A rollout failed or was aborted: traffic is back on the stable revision and the new
    /// replicas are being drained.
    RolloutAborted {
        /// The service concerned.
        service: String,
        /// The revision given up.
        revision: u32,
        /// Why, in words.
        reason: String,
        /// Decided by bulwark (analysis, alert, deadline) rather than asked for.
        automatic: bool,
    },
    /// A rollout is over.
    RolloutEnded {
        /// The service concerned.
        service: String,
        /// The revision rolled out (or given up).
        revision: u32,
        /// `completed`, `rolled-back` or `aborted`.
        outcome: String,
        /// The revision the service runs now.
        stable: u32,
    },
    /// A remediation decided something about an action: it acted, a guard held it back
    /// (`guard` says which), it waits for approval, it was approved or denied, it failed,
    /// it finished, or (dry run) it only recorded what it would have done.
    Remediation {
        /// The action's id, unique in this run (`bulwark approve ID`).
        id: u64,
        /// The rule's name (`default:replace-before-oom` for the default pack).
        rule: String,
        /// The service acted on.
        service: String,
        /// The replica acted on, if one.
        replica: Option<u32>,
        /// The actions, in order (`restart-service`, `run`...).
        actions: Vec<String>,
        /// `acted`, `skipped`, `waiting`, `approved`, `denied`, `failed`, `done` or
        /// `dry-run`.
        decision: String,
        /// The guard that held it back: `rate-limit`, `backoff`, `cooldown`,
        /// `max-concurrent`, `global-budget`, `disruption-budget`, `conflict`.
        guard: Option<String>,
        /// What triggered it, in words (`page alert web/availability`).
        trigger: String,
        /// The figures or the reason, in words.
        detail: String,
    },
    /// The anomaly detector found a slow failure on its way: a resource forecast to reach
    /// its limit, or a drift from the service's own baseline.
    AnomalyDetected {
        /// The service concerned.
        service: String,
        /// The replica, for a resource trend.
        replica: Option<u32>,
        /// `memory-leak`, `latency-drift`, `error-drift`, `fd-growth`, `thread-growth`.
        kind: String,
        /// How consistent the evidence is, from 0 to 1.
        confidence: f64,
        /// Milliseconds until the limit is reached, for a trend.
        forecast_ms: Option<u64>,
        /// The figures, in words.
        detail: String,
    },
    /// The autoscaler changed a service's replica count.
    Autoscaled {
        /// The service concerned.
        service: String,
        /// The count before.
        from: u32,
        /// The count now.
        to: u32,
        /// The target measure (`in_flight`, `request_rate`, `cpu`, `latency_p99`).
        target: String,
        /// The measure per ready replica that led to it.
        value: f64,
        /// Its target per replica.
        goal: f64,
        /// Why, in words (the HPA step: `up`, `down`, `limited-by-rate`, `failure-cover`...).
        reason: String,
    },
    /// A node of the cluster registered (cluster mode: `bulwark agent`), or registered
    /// again after it was lost.
    NodeJoined {
        /// The node's name.
        node: String,
        /// Its labels, `key=value`.
        labels: Vec<String>,
        /// Its agent's API address.
        address: String,
    },
    /// A node of the cluster was lost: its agent's lease expired (killed, hung, or cut off
    /// from etcd). Its replicas, later, are rescheduled elsewhere.
    NodeLost {
        /// The node's name.
        node: String,
    },
    /// A node left the cluster on purpose (its agent was stopped and revoked its lease).
    NodeLeft {
        /// The node's name.
        node: String,
    },
    /// This agent won the cluster's scheduler key: it places replicas until its lease ends.
    SchedulerElected {
        /// This agent's node.
        node: String,
    },
    /// The scheduler changed the placement of replicas over nodes (cluster mode).
    PlacementChanged {
        /// The applied stack's revision it placed.
        stack_revision: u64,
        /// Every replica that moved: `web/2 h2 -> h0 (node lost)`, `web/5 - -> h1 (new)`.
        moves: Vec<String>,
        /// Every wanted replica no node may take, with the reason.
        unplaced: Vec<String>,
    },
    /// A reader skipped events: it fell behind the bus (`reader` names it: the journal, the
    /// incident tracker, an event stream...), or the journal could not store them. `missed`
    /// events are absent from what that reader saw or kept.
    Gap {
        /// Which reader skipped events.
        reader: String,
        /// How many events it skipped.
        missed: u64,
    },
}

/// The one event bus: a bounded history for late readers plus a broadcast for live ones.
///
/// Invariant: a subscriber gets every event with `seq > since` exactly once and in order,
/// unless it falls more than the channel capacity behind (then it is told it lagged).
pub struct Bus {
    inner: Mutex<History>,
    tx: broadcast::Sender<Arc<Event>>,
    origin: OnceLock<String>,
}

struct History {
    next_seq: u64,
    events: VecDeque<Arc<Event>>,
    capacity: usize,
}

/// What [`Bus::subscribe`] returns: the history to catch up on, then the live channel.
pub struct Subscription {
    /// Events already in history after `since`.
    pub backlog: Vec<Arc<Event>>,
    /// Every event published after the subscription, in order.
    pub live: broadcast::Receiver<Arc<Event>>,
}

impl Bus {
    /// An empty bus that keeps the last `history` events for late subscribers.
    pub fn new(history: usize) -> Self {
        Self::with_history(history, Vec::new())
    }

    /// A bus whose history starts with `past` (oldest first, e.g. read back from the
    /// journal); new events continue its sequence numbers.
    pub fn with_history(history: usize, past: Vec<Event>) -> Self {
        Self::with_channel(history, LIVE_CAPACITY, past)
    }

    /// Like [`with_history`](Self::with_history) with a live channel of `live` events: a
    /// subscriber further behind than that is told it lagged.
    pub fn with_channel(history: usize, live: usize, past: Vec<Event>) -> Self {
        let (tx, _) = broadcast::channel(live.max(1));
        let capacity = history.max(1);
        let next_seq = past.last().map_or(1, |e| e.seq + 1);
        let skip = past.len().saturating_sub(capacity);
        Bus {
            inner: Mutex::new(History {
                next_seq,
                events: past.into_iter().skip(skip).map(Arc::new).collect(),
                capacity,
            }),
            tx,
            origin: OnceLock::new(),
        }
    }

    /// Stamps every event published from now on with `node`, the node of the cluster
    /// agent this bus belongs to; once (a later call is ignored).
    pub fn set_origin(&self, node: &str) {
        let _ = self.origin.set(node.to_owned());
    }

    /// The node this bus stamps its events with, if it belongs to a cluster agent.
    pub fn origin(&self) -> Option<&str> {
        self.origin.get().map(String::as_str)
    }

    /// Stamps `kind` with the next sequence number and the wall-clock time, keeps it in
    /// history and sends it to live subscribers.
    pub fn publish(&self, kind: EventKind) -> Arc<Event> {
        let at_ms = crate::now_ms();
        // Sequence assignment, history append and broadcast happen under one lock so that
        // `subscribe` sees either the event in the backlog or on the live channel, never
        // both and never neither.
        let mut h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let event = Arc::new(Event {
            seq: h.next_seq,
            at_ms,
            origin: self.origin.get().cloned(),
            kind,
        });
        h.next_seq += 1;
        if h.events.len() == h.capacity {
            h.events.pop_front();
        }
        h.events.push_back(event.clone());
        let _ = self.tx.send(event.clone());
        event
    }

    /// Events with `seq > since` from history, and a receiver for everything after.
    pub fn subscribe(&self, since: u64) -> Subscription {
        let h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let backlog = h.events.iter().filter(|e| e.seq > since).cloned().collect();
        Subscription {
            backlog,
            live: self.tx.subscribe(),
        }
    }

    /// The sequence number of the newest event (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_seq
            - 1
    }

    /// Every event still in history, oldest first.
    pub fn history(&self) -> Vec<Arc<Event>> {
        self.subscribe(0).backlog
    }

    /// Records that `reader` skipped `missed` events: logs a warning and publishes a
    /// [`EventKind::Gap`] marker, so whoever reads the stream later sees that something is
    /// missing instead of a silent hole.
    pub fn record_gap(&self, reader: &str, missed: u64) -> Arc<Event> {
        tracing::warn!(
            reader,
            missed,
            "an event reader fell behind and skipped events"
        );
        self.publish(EventKind::Gap {
            reader: reader.to_owned(),
            missed,
        })
    }

    /// A live reader named `reader` that records a gap marker whenever it falls behind.
    pub fn follow(self: &Arc<Self>, reader: &'static str) -> Follower {
        Follower {
            live: self.tx.subscribe(),
            bus: self.clone(),
            reader,
            missed: 0,
        }
    }
}

/// Capacity of the live channel: how far a subscriber may fall behind before it lags.
const LIVE_CAPACITY: usize = 4096;

/// Live events for one reader, from the moment it was created. When the reader falls behind
/// the live channel, the skipped events are logged and marked on the bus with an
/// [`EventKind::Gap`] (which the reader then receives in turn), never skipped silently.
pub struct Follower {
    live: broadcast::Receiver<Arc<Event>>,
    bus: Arc<Bus>,
    reader: &'static str,
    /// Skipped events not yet marked.
    missed: u64,
}

impl Follower {
    /// The next event; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Arc<Event>> {
        loop {
            // The marker is published once the reader has caught up: publishing while the
            // channel is full would push out the very events the reader is about to read,
            // and lag it again.
            if self.missed > 0 && self.live.is_empty() {
                self.bus
                    .record_gap(self.reader, std::mem::take(&mut self.missed));
            }
            match self.live.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.missed = self.missed.saturating_add(missed);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agents_events_carry_its_node_and_older_events_read_without_one() {
        let bus = Bus::new(8);
        let before = bus.publish(EventKind::StackStopping);
        assert_eq!(before.origin, None);
        assert_eq!(bus.origin(), None);
        assert!(!serde_json::to_string(&*before).unwrap().contains("origin"));
        bus.set_origin("h0");
        bus.set_origin("h1");
        assert_eq!(bus.origin(), Some("h0"));
        let after = bus.publish(EventKind::StackStopped);
        assert_eq!(after.origin.as_deref(), Some("h0"));
        let json = serde_json::to_value(&*after).unwrap();
        assert_eq!(json["origin"], "h0");
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back.origin.as_deref(), Some("h0"));
        let old: Event =
            serde_json::from_str(r#"{"seq":1,"at_ms":2,"type":"stack_stopped"}"#).unwrap();
        assert_eq!(old.origin, None);
    }

    #[tokio::test]
    async fn subscriber_sees_backlog_then_live_without_gap() {
        let bus = Bus::new(2);
        for _ in 0..3 {
            bus.publish(EventKind::StackStopping);
        }
        let mut sub = bus.subscribe(1);
        // capacity 2: event 1 was dropped from history; 2 and 3 remain
        let seqs: Vec<u64> = sub.backlog.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        bus.publish(EventKind::StackStopped);
        assert_eq!(sub.live.recv().await.unwrap().seq, 4);
    }

    #[test]
    fn history_restored_from_a_journal_continues_the_sequence() {
        let old = Bus::new(8);
        old.publish(EventKind::StackStopping);
        old.publish(EventKind::StackStopped);
        let json: Vec<String> = old
            .history()
            .iter()
            .map(|e| serde_json::to_string(&**e).unwrap())
            .collect();
        let past: Vec<Event> = json
            .iter()
            .map(|j| serde_json::from_str(j).unwrap())
            .collect();
        let bus = Bus::with_history(8, past);
        assert_eq!(bus.last_seq(), 2);
        assert_eq!(bus.publish(EventKind::StackStopping).seq, 3);
        assert_eq!(bus.last_seq(), 3);
        assert_eq!(bus.history().len(), 3);
    }

    #[tokio::test]
    async fn a_lagging_follower_records_a_gap_marker() {
        let bus = Arc::new(Bus::with_channel(100, 4, Vec::new()));
        let mut f = bus.follow("test reader");
        for _ in 0..10 {
            bus.publish(EventKind::StackStopping);
        }
        // 10 events into a channel of 4: the first 6 are gone for this reader.
        let mut seen = Vec::new();
        while let Ok(Some(e)) =
            tokio::time::timeout(std::time::Duration::from_millis(100), f.next()).await
        {
            seen.push(e);
        }
        let gap = seen
            .iter()
            .find(|e| matches!(e.kind, EventKind::Gap { .. }))
            .expect("a gap marker reaches the reader");
        match &gap.kind {
            EventKind::Gap { reader, missed } => {
                assert_eq!(reader, "test reader");
                assert_eq!(*missed, 6);
            }
            _ => unreachable!(),
        }
        let plain: Vec<u64> = seen
            .iter()
            .filter(|e| !matches!(e.kind, EventKind::Gap { .. }))
            .map(|e| e.seq)
            .collect();
        assert_eq!(plain, vec![7, 8, 9, 10]);
        // The marker is on the bus for every later reader (and the journal) too.
        assert!(
            bus.history()
                .iter()
                .any(|e| matches!(e.kind, EventKind::Gap { missed: 6, .. }))
        );
        let json = serde_json::to_value(&**gap).unwrap();
        assert_eq!(json["type"], "gap");
        assert_eq!(json["missed"], 6);
    }

    #[test]
    fn events_serialize_with_a_type_tag() {
        let bus = Bus::new(8);
        let e = bus.publish(EventKind::ReplicaExited {
            service: "web".into(),
            index: 1,
            pid: 42,
            exit: Exit {
                code: None,
                signal: Some(9),
            },
            uptime_ms: 5,
        });
        let json = serde_json::to_value(&*e).unwrap();
        assert_eq!(json["type"], "replica_exited");
        assert_eq!(json["exit"]["signal"], 9);
        assert_eq!(json["seq"], 1);
    }
}
