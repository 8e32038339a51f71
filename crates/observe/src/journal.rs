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

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bus::{Bus, Event};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use store::{Embedded, Store};
use tokio::sync::{broadcast, oneshot, watch};

use crate::alert::{Alert, AlertState, Silence};
use crate::incident::{Incident, IncidentState};

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
            retention: spec::JournalSettings::DEFAULT_RETENTION,
            prune_every: Duration::from_secs(3600),
            max_pending: 10_000,
        }
    }
}

/// Whether the journal can write. `failing_since_ms` is set from the first failed write
/// until the next successful one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub failing_since_ms: Option<u64>,
    pub last_error: Option<String>,
    /// Failed writes since start.
    pub write_errors: u64,
    /// Events dropped since start because they could not be written in time.
    pub lost_events: u64,
}

impl Health {
    pub fn ok(&self) -> bool {
        self.failing_since_ms.is_none()
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

/// What both writers report to.
struct Shared {
    health: watch::Sender<Health>,
    write_errors: Counter,
    lost_events: Counter,
    healthy: Gauge,
}

impl Shared {
    fn failed(&self, what: &str, e: &dyn std::fmt::Display) {
        self.write_errors.inc();
        self.healthy.set(0);
        let error = format!("{what}: {e}");
        self.health.send_modify(|h| {
            h.write_errors += 1;
            if h.failing_since_ms.is_none() {
                tracing::error!(%error, "journal writes fail; retrying with backoff");
                h.failing_since_ms = Some(now_ms());
            }
            h.last_error = Some(error);
        });
    }

    fn succeeded(&self) {
        self.healthy.set(1);
        self.health.send_if_modified(|h| {
            let was = h.failing_since_ms.take();
            if let Some(since) = was {
                tracing::info!(
                    failing_for_ms = now_ms().saturating_sub(since),
                    "journal writes work again"
                );
                h.last_error = None;
            }
            was.is_some()
        });
    }

    fn lost(&self, n: u64) {
        self.lost_events.inc_by(n);
        self.health.send_modify(|h| h.lost_events += n);
    }
}

/// A request to the writer thread.
enum Op {
    /// `value: None` deletes. With `reply`, the caller learns the outcome and nothing is
    /// retried; without, a failed write is retried until it succeeds or is superseded.
    Write {
        ns: &'static str,
        key: String,
        value: Option<Vec<u8>>,
        reply: Option<oneshot::Sender<Result<bool, String>>>,
    },
    /// Answers once everything sent before is written (or has failed).
    Flush(oneshot::Sender<()>),
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
        prune(&*store, now_ms(), options.retention)?;
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
        let shared = Arc::new(Shared {
            health: watch::channel(Health::default()).0,
            write_errors: Counter::default(),
            lost_events: Counter::default(),
            healthy: Gauge::default(),
        });
        shared.healthy.set(1);
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

    /// Registers `bulwark_journal_write_errors_total`, `bulwark_journal_lost_events_total`
    /// and `bulwark_journal_healthy`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "bulwark_journal_write_errors",
            "Writes to the journal that failed (a full disk, typically); they are retried",
            self.shared.write_errors.clone(),
        );
        registry.register(
            "bulwark_journal_lost_events",
            "Events dropped because the journal could not write them in time",
            self.shared.lost_events.clone(),
        );
        registry.register(
            "bulwark_journal_healthy",
            "1 while journal writes succeed, 0 while they fail",
            self.shared.healthy.clone(),
        );
    }

    /// The highest event sequence number known to be on disk.
    pub fn persisted(&self) -> watch::Receiver<u64> {
        self.persisted.subscribe()
    }

    /// Whether writes succeed.
    pub fn health(&self) -> watch::Receiver<Health> {
        self.shared.health.subscribe()
    }

    /// Copies every event published on `bus` after the restored history into the journal,
    /// in batches, advancing [`persisted`](Self::persisted).
    pub fn spawn_event_writer(self: &Arc<Self>, bus: Arc<Bus>) -> tokio::task::JoinHandle<()> {
        let journal = self.clone();
        let done = *self.persisted.borrow();
        let sub = bus.subscribe(done);
        tokio::spawn(async move { EventWriter::new(journal, bus, sub, done).run().await })
    }

    pub fn put_alert(&self, a: &Alert) {
        self.send(ALERTS, a.id.clone(), Some(to_json(a)), None);
    }

    pub fn put_incident(&self, i: &Incident) {
        self.send(INCIDENTS, incident_key(i.id), Some(to_json(i)), None);
    }

    /// Stores a silence; an error means it is not stored (and must not be acted on).
    pub async fn put_silence(&self, s: &Silence) -> Result<(), JournalError> {
        self.call(SILENCES, s.id.clone(), Some(to_json(s))).await?;
        Ok(())
    }

    /// Removes a silence; whether it was in the journal.
    pub async fn remove_silence(&self, id: &str) -> Result<bool, JournalError> {
        self.call(SILENCES, id.to_owned(), None).await
    }

    /// Removes a silence in the background (an expired one), retrying if it fails.
    pub fn delete_silence(&self, id: &str) {
        self.send(SILENCES, id.to_owned(), None, None);
    }

    /// Waits until every alert, incident and silence change sent so far was written or
    /// failed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.op(Op::Flush(tx)) {
            let _ = rx.await;
        }
    }

    async fn call(
        &self,
        ns: &'static str,
        key: String,
        value: Option<Vec<u8>>,
    ) -> Result<bool, JournalError> {
        let (tx, rx) = oneshot::channel();
        self.send(ns, key, value, Some(tx));
        match rx.await {
            Ok(Ok(existed)) => Ok(existed),
            Ok(Err(e)) => Err(JournalError::Unavailable(e)),
            Err(_) => Err(JournalError::Unavailable("its writer stopped".into())),
        }
    }

    fn send(
        &self,
        ns: &'static str,
        key: String,
        value: Option<Vec<u8>>,
        reply: Option<oneshot::Sender<Result<bool, String>>>,
    ) {
        self.op(Op::Write {
            ns,
            key,
            value,
            reply,
        });
    }

    fn op(&self, op: Op) -> bool {
        let kv = self.kv.lock().unwrap_or_else(|e| e.into_inner());
        kv.as_ref().is_some_and(|tx| tx.send(op).is_ok())
    }
}

impl Drop for Journal {
    /// Lets the writer thread finish what it holds and close the store, so the file can be
    /// opened again (its lock released) once the journal is gone.
    fn drop(&mut self) {
        self.kv.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self
            .kv_thread
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = t.join();
        }
    }
}

/// Writes alerts, incidents and silences in the order they come; retries failed background
/// writes with backoff, keeping only the newest value per key; prunes periodically.
fn kv_writer(store: &dyn Store, shared: &Shared, options: &Options, rx: std_mpsc::Receiver<Op>) {
    let mut dirty: BTreeMap<(&'static str, String), Option<Vec<u8>>> = BTreeMap::new();
    let mut backoff = MIN_BACKOFF;
    let mut next_prune = std::time::Instant::now() + options.prune_every;
    loop {
        let wait = if dirty.is_empty() {
            next_prune.saturating_duration_since(std::time::Instant::now())
        } else {
            backoff
        };
        match rx.recv_timeout(wait) {
            Ok(Op::Write {
                ns,
                key,
                value,
                reply: Some(reply),
            }) => {
                let res = write_kv(store, ns, &key, value.as_deref());
                match &res {
                    Ok(_) => {
                        shared.succeeded();
                        // Superseded: the caller's value is newer than any left to retry.
                        dirty.remove(&(ns, key));
                    }
                    Err(e) => shared.failed("write to the journal", e),
                }
                let _ = reply.send(res.map_err(|e| e.to_string()));
            }
            Ok(Op::Write { ns, key, value, .. }) => {
                if dirty.len() >= MAX_DIRTY && !dirty.contains_key(&(ns, key.clone())) {
                    tracing::error!(ns, %key, "too many journal writes wait for the disk; dropping one");
                    continue;
                }
                dirty.insert((ns, key), value);
            }
            Ok(Op::Flush(done)) => {
                flush_dirty(store, shared, &mut dirty);
                let _ = done.send(());
                continue;
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                flush_dirty(store, shared, &mut dirty);
                return;
            }
        }
        if flush_dirty(store, shared, &mut dirty) {
            backoff = MIN_BACKOFF;
        } else {
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        if std::time::Instant::now() >= next_prune {
            next_prune = std::time::Instant::now() + options.prune_every;
            match prune(store, now_ms(), options.retention) {
                Ok(_) => shared.succeeded(),
                Err(e) => shared.failed("prune the journal", &e),
            }
        }
    }
}

/// Writes what waits; stops at the first failure. Whether everything was written.
fn flush_dirty(
    store: &dyn Store,
    shared: &Shared,
    dirty: &mut BTreeMap<(&'static str, String), Option<Vec<u8>>>,
) -> bool {
    while let Some(((ns, key), value)) = dirty.pop_first() {
        if let Err(e) = write_kv(store, ns, &key, value.as_deref()) {
            shared.failed("write to the journal", &e);
            dirty.insert((ns, key), value);
            return false;
        }
        shared.succeeded();
    }
    true
}

/// A put, or a delete returning whether the key existed.
fn write_kv(
    store: &dyn Store,
    ns: &str,
    key: &str,
    value: Option<&[u8]>,
) -> Result<bool, store::Error> {
    match value {
        Some(v) => store.put(ns, key, v).map(|()| true),
        None => store.delete(ns, key),
    }
}

/// Removes resolved alerts, ended incidents and silences that ended more than `retention`
/// before `now_ms`; returns how many records were removed.
fn prune(store: &dyn Store, now_ms: u64, retention: Duration) -> Result<usize, JournalError> {
    let cutoff = now_ms.saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
    let mut removed = 0;
    for (k, v) in store.list(ALERTS)? {
        let a: Alert = decode("alert", &k, &v)?;
        if a.state == AlertState::Resolved && a.resolved_at_ms.is_some_and(|t| t < cutoff) {
            removed += usize::from(store.delete(ALERTS, &k)?);
        }
    }
    for (k, v) in store.list(INCIDENTS)? {
        let i: Incident = decode("incident", &k, &v)?;
        if i.state == IncidentState::Resolved && i.resolved_at_ms.is_some_and(|t| t < cutoff) {
            removed += usize::from(store.delete(INCIDENTS, &k)?);
        }
    }
    for (k, v) in store.list(SILENCES)? {
        let s: Silence = decode("silence", &k, &v)?;
        if s.ends_at_ms < cutoff {
            removed += usize::from(store.delete(SILENCES, &k)?);
        }
    }
    if removed > 0 {
        tracing::info!(removed, ?retention, "pruned the journal");
    }
    Ok(removed)
}

/// The event writer's state: what waits for the disk, bounded.
struct EventWriter {
    journal: Arc<Journal>,
    bus: Arc<Bus>,
    live: broadcast::Receiver<Arc<Event>>,
    pending: VecDeque<Arc<Event>>,
    /// Highest sequence number on disk.
    done: u64,
    /// Highest sequence number taken from the bus (pending, written or dropped).
    queued: u64,
    /// Dropped events not yet marked in the journal.
    lost: u64,
    since_trim: u64,
}

impl EventWriter {
    fn new(journal: Arc<Journal>, bus: Arc<Bus>, sub: bus::Subscription, done: u64) -> Self {
        let mut w = EventWriter {
            journal,
            bus,
            live: sub.live,
            pending: VecDeque::new(),
            done,
            queued: done,
            lost: 0,
            since_trim: 0,
        };
        for e in sub.backlog {
            w.push(e);
        }
        w
    }

    fn push(&mut self, e: Arc<Event>) {
        if e.seq <= self.queued {
            return;
        }
        self.queued = e.seq;
        self.pending.push_back(e);
        if self.pending.len() > self.journal.options.max_pending {
            self.pending.pop_front();
            self.drop_events(1);
        }
    }

    fn drop_events(&mut self, n: u64) {
        if self.lost == 0 {
            tracing::warn!(
                "the journal cannot keep up; dropping the oldest events that wait to be written"
            );
        }
        self.lost += n;
        self.journal.shared.lost(n);
    }

    /// Fell behind the live channel: catch up from the bus history; what is no longer
    /// there is lost.
    fn resync(&mut self) {
        let sub = self.bus.subscribe(self.queued);
        self.live = sub.live;
        if let Some(first) = sub.backlog.first()
            && first.seq > self.queued + 1
        {
            self.drop_events(first.seq - self.queued - 1);
        }
        for e in sub.backlog {
            self.push(e);
        }
    }

    fn drain(&mut self) -> bool {
        loop {
            match self.live.try_recv() {
                Ok(e) => self.push(e),
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.resync(),
                Err(broadcast::error::TryRecvError::Empty) => return true,
                Err(broadcast::error::TryRecvError::Closed) => return false,
            }
        }
    }

    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            if self.pending.is_empty() {
                match self.live.recv().await {
                    Ok(e) => self.push(e),
                    Err(broadcast::error::RecvError::Lagged(_)) => self.resync(),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
            if !self.drain() && self.pending.is_empty() {
                return;
            }
            if self.pending.is_empty() {
                continue;
            }
            let n = self.pending.len().min(BATCH);
            let records: Vec<Vec<u8>> =
                self.pending.iter().take(n).map(|e| to_json(&**e)).collect();
            let store = self.journal.store.clone();
            let trim = self.since_trim >= 10_000;
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
                    self.since_trim = if trim { 0 } else { self.since_trim + n as u64 };
                    let last = self.pending.drain(..n).next_back();
                    self.done = last.map_or(self.done, |e| e.seq);
                    self.journal.persisted.send_replace(self.done);
                    self.journal.shared.succeeded();
                    backoff = MIN_BACKOFF;
                    if self.lost > 0 {
                        // Marked once writing works again: the marker is itself an event
                        // and reaches the journal behind what was kept.
                        self.bus
                            .record_gap("journal", std::mem::take(&mut self.lost));
                    }
                }
                Ok(Err(e)) => {
                    self.journal
                        .shared
                        .failed("write events to the journal", &e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    tracing::error!(error = %e, "journal writer failed");
                    return;
                }
            }
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn incident_key(id: u64) -> String {
    format!("{id:012}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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

    const DAY_MS: u64 = 24 * 3600 * 1000;

    fn alert(id: &str, state: AlertState, resolved_at_ms: Option<u64>) -> Alert {
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

    fn incident(id: u64, resolved_at_ms: Option<u64>) -> Incident {
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

    fn silence(id: &str, ends_at_ms: u64) -> Silence {
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

    fn keys(store: &dyn Store, ns: &str) -> Vec<String> {
        store
            .list(ns)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_prunes_old_resolved_alerts_and_ended_incidents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.redb");
        let now = now_ms();
        let one_day = Options {
            retention: Duration::from_secs(24 * 3600),
            ..Options::default()
        };
        {
            let (j, _) = Journal::open(&path, 100, Options::default()).unwrap();
            j.put_alert(&alert("old", AlertState::Resolved, Some(now - 2 * DAY_MS)));
            j.put_alert(&alert("recent", AlertState::Resolved, Some(now - 1000)));
            j.put_alert(&alert("firing", AlertState::Firing, None));
            j.put_incident(&incident(1, Some(now - 3 * DAY_MS)));
            j.put_incident(&incident(2, Some(now - 1000)));
            j.put_incident(&incident(3, None));
            j.put_silence(&silence("ended", now - 2 * DAY_MS))
                .await
                .unwrap();
            j.put_silence(&silence("later", now + DAY_MS))
                .await
                .unwrap();
            j.flush().await;
        }
        // At open: what is past the retention is gone, the rest comes back.
        let (j, r) = Journal::open(&path, 100, one_day.clone()).unwrap();
        let mut alerts: Vec<&str> = r.alerts.iter().map(|a| a.id.as_str()).collect();
        alerts.sort();
        assert_eq!(alerts, ["firing", "recent"]);
        let mut incidents: Vec<u64> = r.incidents.iter().map(|i| i.id).collect();
        incidents.sort();
        assert_eq!(incidents, [2, 3]);
        let silences: Vec<&str> = r.silences.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(silences, ["later"]);
        assert_eq!(keys(&*j.store, ALERTS), ["firing", "recent"]);
        drop(j);

        // Periodically while running: a record that ages past the retention goes too.
        let store: Arc<dyn Store> = Arc::new(Embedded::open(&path).unwrap());
        let (j, _) = Journal::with_store(
            store.clone(),
            100,
            Options {
                prune_every: Duration::from_millis(50),
                ..one_day
            },
        )
        .unwrap();
        j.put_alert(&alert("aged", AlertState::Resolved, Some(now - 5 * DAY_MS)));
        j.flush().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while keys(&*store, ALERTS).contains(&"aged".to_owned()) {
            assert!(std::time::Instant::now() < deadline, "never pruned");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(keys(&*store, ALERTS), ["firing", "recent"]);
    }

    /// A store whose writes fail while `fail` is set, like a full disk.
    struct Flaky {
        inner: Embedded,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Flaky {
        fn check(&self) -> Result<(), store::Error> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(store::Error::Io {
                    path: "journal.redb".into(),
                    op: "write",
                    source: std::io::Error::from_raw_os_error(28), // ENOSPC
                });
            }
            Ok(())
        }
    }

    impl Store for Flaky {
        fn append(&self, log: &str, records: &[&[u8]]) -> Result<Vec<u64>, store::Error> {
            self.check()?;
            self.inner.append(log, records)
        }
        fn read(
            &self,
            log: &str,
            after: u64,
            limit: usize,
        ) -> Result<Vec<(u64, Vec<u8>)>, store::Error> {
            self.inner.read(log, after, limit)
        }
        fn last_id(&self, log: &str) -> Result<u64, store::Error> {
            self.inner.last_id(log)
        }
        fn trim(&self, log: &str, keep: u64) -> Result<u64, store::Error> {
            self.check()?;
            self.inner.trim(log, keep)
        }
        fn put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), store::Error> {
            self.check()?;
            self.inner.put(ns, key, value)
        }
        fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, store::Error> {
            self.inner.get(ns, key)
        }
        fn delete(&self, ns: &str, key: &str) -> Result<bool, store::Error> {
            self.check()?;
            self.inner.delete(ns, key)
        }
        fn list(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, store::Error> {
            self.inner.list(ns)
        }
    }

    async fn wait_health(j: &Journal, what: &str, f: impl Fn(&Health) -> bool) -> Health {
        let mut h = j.health();
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            h.wait_for(|h| f(h)).await.unwrap().clone()
        })
        .await;
        got.unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", *j.health().borrow()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_disk_bounds_memory_refuses_silences_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let flaky = Arc::new(Flaky {
            inner: Embedded::open(&dir.path().join("journal.redb")).unwrap(),
            fail: true.into(),
        });
        let store: Arc<dyn Store> = flaky.clone();
        let (j, _) = Journal::with_store(
            store.clone(),
            100,
            Options {
                max_pending: 5,
                ..Options::default()
            },
        )
        .unwrap();
        let mut reg = Registry::default();
        j.register(&mut reg);
        let bus = Arc::new(Bus::new(1000));
        let writer = j.spawn_event_writer(bus.clone());
        for _ in 0..20 {
            bus.publish(EventKind::StackStopping);
        }
        let h = wait_health(&j, "failing with events lost", |h| {
            !h.ok() && h.lost_events == 15
        })
        .await;
        assert!(h.write_errors > 0);
        assert!(
            h.last_error.as_deref().unwrap().contains("No space left"),
            "{h:?}"
        );
        let text = crate::encode_openmetrics(&reg);
        assert!(
            !text.contains("bulwark_journal_write_errors_total 0"),
            "{text}"
        );
        assert!(
            text.contains("bulwark_journal_lost_events_total 15"),
            "{text}"
        );
        assert!(text.contains("bulwark_journal_healthy 0"), "{text}");
        // A silence that cannot be stored is refused, not acknowledged.
        let err = j.put_silence(&silence("s1", now_ms() + DAY_MS)).await;
        assert!(matches!(err, Err(JournalError::Unavailable(_))), "{err:?}");
        // An alert waits for the disk instead.
        j.put_alert(&alert("waiting", AlertState::Firing, None));
        assert_eq!(*j.persisted().borrow(), 0);

        flaky.fail.store(false, std::sync::atomic::Ordering::SeqCst);
        wait_health(&j, "recovery", Health::ok).await;
        j.put_silence(&silence("s2", now_ms() + DAY_MS))
            .await
            .unwrap();
        j.flush().await;
        let mut p = j.persisted();
        // The 5 kept events, then the marker of the 15 lost ones.
        tokio::time::timeout(Duration::from_secs(10), p.wait_for(|s| *s >= 21))
            .await
            .unwrap()
            .unwrap();
        let written: Vec<Event> = store
            .read(EVENTS, 0, 100)
            .unwrap()
            .iter()
            .map(|(_, b)| serde_json::from_slice(b).unwrap())
            .collect();
        let seqs: Vec<u64> = written.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [16, 17, 18, 19, 20, 21]);
        assert!(
            matches!(&written[5].kind, EventKind::Gap { reader, missed: 15 } if reader == "journal"),
            "{:?}",
            written[5]
        );
        assert_eq!(keys(&*store, ALERTS), ["waiting"]);
        assert_eq!(keys(&*store, SILENCES), ["s2"]);
        assert!(crate::encode_openmetrics(&reg).contains("bulwark_journal_healthy 1"));
        writer.abort();
    }
}
