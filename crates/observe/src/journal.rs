//! The durable journal: events, alerts, incidents and silences in the embedded store in the
//! state directory, so a kill -9 of `bulwark up` loses nothing that was reported.
//!
//! Invariant: an event is shown by the API only once its sequence number is at or below
//! [`Journal::persisted`] (the writer's durable watermark), so anything a user saw is in the
//! file.

use std::path::Path;
use std::sync::Arc;

use bus::{Bus, Event};
use serde::Serialize;
use serde::de::DeserializeOwned;
use store::{Embedded, Store};
use tokio::sync::{broadcast, watch};

use crate::alert::{Alert, Silence};
use crate::incident::Incident;

const EVENTS: &str = "events";
const ALERTS: &str = "alerts";
const INCIDENTS: &str = "incidents";
const SILENCES: &str = "silences";
/// Events kept in the file; older ones are trimmed.
const KEEP_EVENTS: u64 = 100_000;

pub struct Journal {
    store: Arc<dyn Store>,
    persisted: watch::Sender<u64>,
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
}

impl Journal {
    /// Opens (or creates) the journal and reads back the last `history` events and every
    /// alert, incident and silence.
    pub fn open(path: &Path, history: usize) -> Result<(Arc<Journal>, Restored), JournalError> {
        let store: Arc<dyn Store> = Arc::new(Embedded::open(path)?);
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
        let list = |ns: &'static str| -> Result<Vec<(String, Vec<u8>)>, JournalError> {
            Ok(store.list(ns)?)
        };
        let mut restored = Restored {
            events,
            ..Default::default()
        };
        for (k, v) in list(ALERTS)? {
            restored.alerts.push(decode("alert", &k, &v)?);
        }
        for (k, v) in list(INCIDENTS)? {
            restored.incidents.push(decode("incident", &k, &v)?);
        }
        for (k, v) in list(SILENCES)? {
            restored.silences.push(decode("silence", &k, &v)?);
        }
        let seq = restored.events.last().map_or(0, |e| e.seq);
        Ok((
            Arc::new(Journal {
                store,
                persisted: watch::channel(seq).0,
            }),
            restored,
        ))
    }

    /// The highest event sequence number known to be on disk.
    pub fn persisted(&self) -> watch::Receiver<u64> {
        self.persisted.subscribe()
    }

    /// Copies every event published on `bus` after the restored history into the journal,
    /// in batches, advancing [`persisted`](Self::persisted).
    pub fn spawn_event_writer(self: &Arc<Self>, bus: Arc<Bus>) -> tokio::task::JoinHandle<()> {
        let journal = self.clone();
        let mut done = *self.persisted.borrow();
        let mut sub = bus.subscribe(done);
        tokio::spawn(async move {
            let mut pending: Vec<Arc<Event>> = std::mem::take(&mut sub.backlog);
            let mut since_trim = 0u64;
            loop {
                if pending.is_empty() {
                    match sub.live.recv().await {
                        Ok(e) => pending.push(e),
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            // Fell behind the live channel: catch up from the bus history.
                            sub = bus.subscribe(done);
                            pending = std::mem::take(&mut sub.backlog);
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
                while let Ok(e) = sub.live.try_recv() {
                    pending.push(e);
                }
                pending.retain(|e| e.seq > done);
                if pending.is_empty() {
                    continue;
                }
                let records: Vec<Vec<u8>> = pending
                    .iter()
                    .map(|e| serde_json::to_vec(&**e).unwrap_or_default())
                    .collect();
                let store = journal.store.clone();
                let trim = since_trim >= 10_000;
                let res = tokio::task::spawn_blocking(move || {
                    let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
                    store.append(EVENTS, &refs)?;
                    if trim {
                        store.trim(EVENTS, KEEP_EVENTS)?;
                    }
                    Ok::<_, store::Error>(())
                })
                .await;
                match res {
                    Ok(Ok(())) => {
                        since_trim = if trim {
                            0
                        } else {
                            since_trim + pending.len() as u64
                        };
                        done = pending.last().map_or(done, |e| e.seq);
                        journal.persisted.send_replace(done);
                        pending.clear();
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot write events to the journal; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "journal writer failed");
                        return;
                    }
                }
            }
        })
    }

    pub fn put_alert(&self, a: &Alert) {
        self.put(ALERTS, &a.id, a);
    }

    pub fn put_incident(&self, i: &Incident) {
        self.put(INCIDENTS, &format!("{:012}", i.id), i);
    }

    pub fn put_silence(&self, s: &Silence) {
        self.put(SILENCES, &s.id, s);
    }

    pub fn delete_silence(&self, id: &str) {
        if let Err(e) = self.store.delete(SILENCES, id) {
            tracing::error!(error = %e, "cannot delete a silence from the journal");
        }
    }

    /// Writes through at once: alerts and incidents are rare, and must be on disk before
    /// the API can show them.
    fn put<T: Serialize>(&self, ns: &str, key: &str, value: &T) {
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        let res = tokio::task::block_in_place(|| self.store.put(ns, key, &bytes));
        if let Err(e) = res {
            tracing::error!(error = %e, ns, key, "cannot write to the journal");
        }
    }
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
    use bus::EventKind;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_alerts_and_incidents_come_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.redb");
        {
            let (j, r) = Journal::open(&path, 100).unwrap();
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
            writer.abort();
            let _ = writer.await;
        }
        let (_j, r) = Journal::open(&path, 3).unwrap();
        let seqs: Vec<u64> = r.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5], "the last `history` events");
        assert_eq!(r.incidents.len(), 1);
        assert_eq!(r.incidents[0].title, "title");
        let bus = Bus::with_history(100, r.events);
        assert_eq!(bus.publish(EventKind::StackStopped).seq, 6);
    }
}
