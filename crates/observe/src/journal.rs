//! The durable journal: events, alerts, incidents and silences in the embedded store in the
//! state directory, so a kill -9 of `bulwark up` loses nothing that was reported.
//!
//! Invariant: an event is shown by the API only once its sequence number is at or below
//! [`Journal::persisted`] (the writer's durable watermark), so anything a user saw is in the
//! file — except while the journal is failing (see [`Health`]): then the API serves the
//! in-memory history and says so, because hiding what happens during a full disk is worse.
//!
//! No write runs on a runtime worker: events go through `spawn_blocking`, alerts, incidents
//! and silences through one dedicated writer thread (which keeps their order).
//!
//! A write that fails (a full disk) never makes memory grow without bound: events waiting
//! for the disk are capped at [`Options::max_pending`] (the oldest are dropped, counted, and
//! marked with a [`bus::EventKind::Gap`] once writing works again); alert and incident states
//! waiting for the disk are kept once per key. Writes are retried with backoff, and
//! [`Health`] says whether the journal is failing, since when, and why.

mod events;
mod health;
mod records;
mod retention;

use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::Event;
use bus::now_ms;
use serde::Serialize;
use serde::de::DeserializeOwned;
use store::{Embedded, Store};
use tokio::sync::watch;

use crate::alert::{Alert, Silence};
use crate::incident::Incident;

pub use health::Health;
use health::Shared;
use records::{Op, kv_writer};
use retention::prune;

const EVENTS: &str = "events";
const ALERTS: &str = "alerts";
const INCIDENTS: &str = "incidents";
const SILENCES: &str = "silences";
/// Events kept in the file; older ones are trimmed.
const KEEP_EVENTS: u64 = 100_000;
/// Most events written in one transaction.
const BATCH: usize = 1000;
/// Retry delays of a failing write.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Most alert/incident/silence states waiting for a failing disk (one per key).
const MAX_DIRTY: usize = 10_000;

/// How the journal bounds what it keeps.
#[derive(Debug, Clone)]
pub struct Options {
    /// Resolved alerts, ended incidents and expired silences older than this are pruned, when
    /// the journal opens and then every [`prune_every`](Self::prune_every).
    pub retention: Duration,
    pub prune_every: Duration,
    /// Most events kept in memory while they cannot be written.
    pub max_pending: usize,
}

impl Options {
    pub fn new(settings: &spec::JournalSettings) -> Options {
        Options {
            retention: settings.retention,
            ..Options::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retention: spec::JournalSettings::default().retention,
            prune_every: Duration::from_secs(3600),
            max_pending: 10_000,
        }
    }
}

pub struct Journal {
    store: Arc<dyn Store>,
    persisted: watch::Sender<u64>,
    shared: Arc<Shared>,
    options: Options,
    /// Alerts, incidents and silences to the writer thread; `None` once dropped.
    kv: Mutex<Option<std_mpsc::Sender<Op>>>,
    kv_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What a previous run left.
#[derive(Default)]
pub struct Restored {
    pub events: Vec<Event>,
    pub alerts: Vec<Alert>,
    pub incidents: Vec<Incident>,
    pub silences: Vec<Silence>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(
        "journal record {what} {key} is unreadable ({error}); move the journal aside to start a new one"
    )]
    Decode {
        what: &'static str,
        key: String,
        error: String,
    },
    /// A write the caller waits for could not be stored.
    #[error(
        "the journal cannot store this change ({0}); nothing was changed. Free space in the \
         state directory (see `bulwark status`) and retry"
    )]
    Unavailable(String),
}

impl Journal {
    /// The store under the journal, for other records of bulwark's own (backups keep
    /// theirs in a namespace of it) and for consistent copies ([`Store::export`]).
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Opens (or creates) the journal and reads back the last `history` events and every
    /// alert, incident and silence (after pruning those past the retention).
    pub fn open(
        path: &Path,
        history: usize,
        options: Options,
    ) -> Result<(Arc<Journal>, Restored), JournalError> {
        Self::with_store(Arc::new(Embedded::open(path)?), history, options)
    }

    /// [`open`](Self::open) on any store.
    pub fn with_store(
        store: Arc<dyn Store>,
        history: usize,
        options: Options,
    ) -> Result<(Arc<Journal>, Restored), JournalError> {
        let last = store.last_id(EVENTS)?;
        let from = last.saturating_sub(history as u64);
        let mut events = Vec::new();
        let mut after = from;
        loop {
            let batch = store.read(EVENTS, after, 4096)?;
            let Some((id, _)) = batch.last() else { break };
            after = *id;
            for (id, bytes) in batch {
                events.push(decode::<Event>("event", &id.to_string(), &bytes)?);
            }
        }
        // A failed delete (a full disk) does not keep `up` from starting: it is reported
        // through the health state, as the periodic prune reports it, and retried then.
        let pruned = prune(&*store, now_ms(), options.retention)?;
        let shared = Arc::new(Shared::new());
        if let Some(e) = &pruned.error {
            shared.failed("prune the journal", e);
        }
        let restored = Restored {
            events,
            alerts: pruned.alerts,
            incidents: pruned.incidents,
            silences: pruned.silences,
        };
        let seq = restored.events.last().map_or(0, |e| e.seq);
        let (tx, rx) = std_mpsc::channel();
        let thread = {
            let (store, shared, options) = (store.clone(), shared.clone(), options.clone());
            std::thread::Builder::new()
                .name("journal-writer".into())
                .spawn(move || kv_writer(&*store, &shared, &options, rx))
                .map_err(|e| JournalError::Unavailable(format!("cannot start its writer: {e}")))?
        };
        Ok((
            Arc::new(Journal {
                store,
                persisted: watch::channel(seq).0,
                shared,
                options,
                kv: Mutex::new(Some(tx)),
                kv_thread: Mutex::new(Some(thread)),
            }),
            restored,
        ))
    }

    /// The highest event sequence number known to be on disk.
    pub fn persisted(&self) -> watch::Receiver<u64> {
        self.persisted.subscribe()
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn incident_key(id: u64) -> String {
    format!("{id:012}")
}

fn decode<T: DeserializeOwned>(
    what: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, JournalError> {
    serde_json::from_slice(bytes).map_err(|e| JournalError::Decode {
        what,
        key: key.to_owned(),
        error: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertState;
    use crate::incident::IncidentState;
    use bus::{Bus, EventKind};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_alerts_and_incidents_come_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.redb");
        {
            let (j, r) = Journal::open(&path, 100, Options::default()).unwrap();
            assert!(r.events.is_empty());
            let bus = Arc::new(Bus::new(100));
            let writer = j.spawn_event_writer(bus.clone());
            for _ in 0..5 {
                bus.publish(EventKind::StackStopping);
            }
            let mut p = j.persisted();
            tokio::time::timeout(std::time::Duration::from_secs(10), p.wait_for(|s| *s >= 5))
                .await
                .unwrap()
                .unwrap();
            let mut inc = crate::incident::Incidents::new();
            let c = inc.trigger("web", "t", "title".into(), None, 10);
            j.put_incident(c.incident());
            j.flush().await;
            writer.abort();
            let _ = writer.await;
        }
        let (_j, r) = Journal::open(&path, 3, Options::default()).unwrap();
        let seqs: Vec<u64> = r.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5], "the last `history` events");
        assert_eq!(r.incidents.len(), 1);
        assert_eq!(r.incidents[0].title, "title");
        let bus = Bus::with_history(100, r.events);
        assert_eq!(bus.publish(EventKind::StackStopped).seq, 6);
    }

    pub(super) const DAY_MS: u64 = 24 * 3600 * 1000;

    pub(super) fn alert(id: &str, state: AlertState, resolved_at_ms: Option<u64>) -> Alert {
        Alert {
            id: id.into(),
            fingerprint: format!("web/{id}/page"),
            service: "web".into(),
            name: id.into(),
            severity: crate::alert::Severity::Page,
            summary: String::new(),
            state,
            started_at_ms: 1,
            resolved_at_ms,
            notified: true,
        }
    }

    pub(super) fn incident(id: u64, resolved_at_ms: Option<u64>) -> Incident {
        let mut inc = crate::incident::Incidents::new();
        let mut i = inc
            .trigger("web", "t", "title".into(), None, 1)
            .incident()
            .clone();
        i.id = id;
        if let Some(at) = resolved_at_ms {
            i.state = IncidentState::Resolved;
            i.resolved_at_ms = Some(at);
        }
        i
    }

    pub(super) fn silence(id: &str, ends_at_ms: u64) -> Silence {
        Silence {
            id: id.into(),
            service: "web".into(),
            name: None,
            severity: None,
            starts_at_ms: 1,
            ends_at_ms,
            comment: String::new(),
        }
    }

    pub(super) fn keys(store: &dyn Store, ns: &str) -> Vec<String> {
        store
            .list(ns)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }
}
