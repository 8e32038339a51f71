//! Whether the journal can write: [`Health`], shared by both writers, and its metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Journal, now_ms};

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

/// What both writers report to.
pub(super) struct Shared {
    health: watch::Sender<Health>,
    write_errors: Counter,
    lost_events: Counter,
    healthy: Gauge,
}

impl Shared {
    pub(super) fn new() -> Shared {
        let shared = Shared {
            health: watch::channel(Health::default()).0,
            write_errors: Counter::default(),
            lost_events: Counter::default(),
            healthy: Gauge::default(),
        };
        shared.healthy.set(1);
        shared
    }

    pub(super) fn failed(&self, what: &str, e: &dyn std::fmt::Display) {
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

    pub(super) fn succeeded(&self) {
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

    pub(super) fn lost(&self, n: u64) {
        self.lost_events.inc_by(n);
        self.health.send_modify(|h| h.lost_events += n);
    }
}

impl Journal {
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

    /// Whether writes succeed.
    pub fn health(&self) -> watch::Receiver<Health> {
        self.shared.health.subscribe()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bus::{Bus, Event, EventKind};
    use store::{Embedded, Store};

    use super::super::tests::{DAY_MS, alert, keys, silence};
    use super::super::{ALERTS, EVENTS, JournalError, Options, SILENCES};
    use super::*;
    use crate::alert::AlertState;

    /// A store whose writes fail while `fail` is set, like a full disk.
    pub(in super::super) struct Flaky {
        pub(in super::super) inner: Embedded,
        pub(in super::super) fail: std::sync::atomic::AtomicBool,
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
        fn export(&self, dest: &std::path::Path) -> Result<(), store::Error> {
            self.inner.export(dest)
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
