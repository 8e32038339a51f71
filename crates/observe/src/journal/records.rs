//! Alerts, incidents and silences: the journal's record API and the one writer thread that
//! stores them in order, retrying failed background writes and pruning periodically.

use std::collections::BTreeMap;
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use store::Store;
use tokio::sync::oneshot;

use super::health::Shared;
use super::retention::prune;
use super::{
    ALERTS, INCIDENTS, Journal, JournalError, MAX_BACKOFF, MAX_DIRTY, MIN_BACKOFF, Options,
    SILENCES, incident_key, now_ms, to_json,
};
use crate::alert::{Alert, Silence};
use crate::incident::Incident;

/// A request to the writer thread.
pub(super) enum Op {
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

impl Journal {
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
pub(super) fn kv_writer(
    store: &dyn Store,
    shared: &Shared,
    options: &Options,
    rx: std_mpsc::Receiver<Op>,
) {
    let mut dirty: BTreeMap<(&'static str, String), Option<Vec<u8>>> = BTreeMap::new();
    let mut backoff = MIN_BACKOFF;
    // When what waits in `dirty` may be written again: new ops that arrive while the disk
    // fails only join `dirty`, they do not bring the retry forward.
    let mut next_retry = Instant::now();
    let mut next_prune = Instant::now() + options.prune_every;
    loop {
        let wait = if dirty.is_empty() {
            next_prune.saturating_duration_since(Instant::now())
        } else {
            next_retry.saturating_duration_since(Instant::now())
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
                        // The disk works: what waits need not wait for the backoff.
                        next_retry = Instant::now();
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
        if !dirty.is_empty() && Instant::now() >= next_retry {
            if flush_dirty(store, shared, &mut dirty) {
                backoff = MIN_BACKOFF;
            } else {
                backoff = (backoff * 2).min(MAX_BACKOFF);
                next_retry = Instant::now() + backoff;
            }
        }
        if Instant::now() >= next_prune {
            next_prune = Instant::now() + options.prune_every;
            match prune(store, now_ms(), options.retention) {
                Ok(pruned) => match pruned.error {
                    None => shared.succeeded(),
                    Some(e) => shared.failed("prune the journal", &e),
                },
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
