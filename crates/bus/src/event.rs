use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// One thing that happened. `seq` is unique and increasing per bus.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Which probe an event is about: the stack file's own kinds.
pub use spec::ProbeKind;

/// How a process ended: an exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl Exit {
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
    StackUp {
        services: usize,
    },
    StackStopping,
    StackStopped,
    ReplicaStarted {
        service: String,
        index: u32,
        pid: u32,
        port: u16,
    },
    /// Startup probe passed (or there is none): liveness and readiness now run.
    ReplicaRunning {
        service: String,
        index: u32,
    },
    ReplicaReady {
        service: String,
        index: u32,
    },
    ReplicaUnready {
        service: String,
        index: u32,
        reason: String,
    },
    ProbeFailed {
        service: String,
        index: u32,
        probe: ProbeKind,
        reason: String,
    },
    ReplicaExited {
        service: String,
        index: u32,
        pid: u32,
        exit: Exit,
        uptime_ms: u64,
    },
    RestartScheduled {
        service: String,
        index: u32,
        delay_ms: u64,
        restarts: u32,
        reason: String,
    },
    /// A replica keeps dying before it has been up for `reset_after`. bulwark keeps
    /// restarting it at the maximum backoff; it never gives up silently.
    CrashLooping {
        service: String,
        index: u32,
        restarts: u32,
        last_exit: Exit,
        stderr_tail: Vec<String>,
    },
    /// The restart policy says not to restart; the replica stays down.
    ReplicaDone {
        service: String,
        index: u32,
        exit: Exit,
    },
    ReplicaStopping {
        service: String,
        index: u32,
        reason: String,
    },
    /// The replica did not stop within its grace; its process group was killed.
    ReplicaKilled {
        service: String,
        index: u32,
        pid: u32,
    },
    SpawnFailed {
        service: String,
        index: u32,
        error: String,
    },
    Scaled {
        service: String,
        from: u32,
        to: u32,
    },
    /// The proxy stopped sending traffic to a replica that kept failing.
    ReplicaEjected {
        service: String,
        index: u32,
        reason: String,
        /// How long, at most, before a single probe request may re-admit it.
        for_ms: u64,
    },
    ReplicaReadmitted {
        service: String,
        index: u32,
    },
    /// The stack file was applied again without a restart.
    Reloaded {
        changed: Vec<String>,
    },
    /// The global fault kill switch.
    FaultsToggled {
        enabled: bool,
    },
    AlertFiring {
        service: String,
        name: String,
        severity: String,
        summary: String,
        silenced: bool,
    },
    AlertResolved {
        service: String,
        name: String,
        severity: String,
        firing_ms: u64,
    },
    IncidentOpened {
        service: String,
        id: u64,
        title: String,
    },
    IncidentResolved {
        service: String,
        id: u64,
        /// Detection to resolution.
        ttr_ms: u64,
    },
    /// A reader skipped events: it fell behind the bus (`reader` names it: the journal, the
    /// incident tracker, an event stream...), or the journal could not store them. `missed`
    /// events are absent from what that reader saw or kept.
    Gap {
        reader: String,
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
}

struct History {
    next_seq: u64,
    events: VecDeque<Arc<Event>>,
    capacity: usize,
}

pub struct Subscription {
    /// Events already in history after `since`.
    pub backlog: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
}

impl Bus {
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
        }
    }

    pub fn publish(&self, kind: EventKind) -> Arc<Event> {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // Sequence assignment, history append and broadcast happen under one lock so that
        // `subscribe` sees either the event in the backlog or on the live channel, never
        // both and never neither.
        let mut h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let event = Arc::new(Event {
            seq: h.next_seq,
            at_ms,
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
