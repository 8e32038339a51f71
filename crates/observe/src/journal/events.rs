//! The event writer: copies the bus into the journal in batches through `spawn_blocking`,
//! holding at most [`Options::max_pending`](super::Options::max_pending) events while the disk
//! fails, and marking what it had to drop with a gap event.

use std::collections::VecDeque;
use std::sync::Arc;

use bus::{Bus, Event};
use tokio::sync::broadcast;

use super::{BATCH, EVENTS, Journal, KEEP_EVENTS, MAX_BACKOFF, MIN_BACKOFF, to_json};

impl Journal {
    /// Copies every event published on `bus` after the restored history into the journal,
    /// in batches, advancing [`persisted`](Self::persisted).
    pub fn spawn_event_writer(self: &Arc<Self>, bus: Arc<Bus>) -> tokio::task::JoinHandle<()> {
        let journal = self.clone();
        let done = *self.persisted.borrow();
        let sub = bus.subscribe(done);
        tokio::spawn(async move { EventWriter::new(journal, bus, sub, done).run().await })
    }
}

/// The event writer's state: what waits for the disk, bounded.
struct EventWriter {
    journal: Arc<Journal>,
    bus: Arc<Bus>,
    live: broadcast::Receiver<Arc<Event>>,
    pending: VecDeque<Pending>,
    /// Highest sequence number on disk.
    done: u64,
    /// Highest sequence number taken from the bus (pending, written or dropped).
    queued: u64,
    /// Dropped events not yet marked in the journal.
    lost: u64,
    since_trim: u64,
}

/// An event waiting for the disk, encoded once when it was queued so that retries do not
/// encode it again.
struct Pending {
    seq: u64,
    json: Arc<[u8]>,
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
        self.pending.push_back(Pending {
            seq: e.seq,
            json: to_json(&*e).into(),
        });
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
            let records: Vec<Arc<[u8]>> = self
                .pending
                .iter()
                .take(n)
                .map(|p| p.json.clone())
                .collect();
            let store = self.journal.store.clone();
            let trim = self.since_trim >= 10_000;
            let res = tokio::task::spawn_blocking(move || {
                let refs: Vec<&[u8]> = records.iter().map(|r| &**r).collect();
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
                    self.done = last.map_or(self.done, |p| p.seq);
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
