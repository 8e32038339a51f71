//! Retention: resolved alerts, ended incidents and expired silences older than
//! [`Options::retention`](super::Options::retention) are pruned.

use std::time::Duration;

use store::Store;

use super::{ALERTS, INCIDENTS, JournalError, SILENCES, decode};
use crate::alert::{Alert, AlertState, Silence};
use crate::incident::{Incident, IncidentState};

/// What [`prune`] left in the journal, decoded, so that opening reads every record once.
#[derive(Default)]
pub(super) struct Pruned {
    pub(super) alerts: Vec<Alert>,
    pub(super) incidents: Vec<Incident>,
    pub(super) silences: Vec<Silence>,
    /// How many records were removed.
    pub(super) removed: usize,
    /// The first failed delete (a full disk, typically). Pruning stops there; what it could
    /// not remove is still in the journal and so among the survivors.
    pub(super) error: Option<store::Error>,
}

/// Removes resolved alerts, ended incidents and silences that ended more than `retention`
/// before `now_ms`; returns the records that remain.
///
/// A record that cannot be read, or a namespace that cannot be listed, is an error; a delete
/// that fails is not: it is reported in [`Pruned::error`], like any other failed write that
/// the journal retries later.
pub(super) fn prune(
    store: &dyn Store,
    now_ms: u64,
    retention: Duration,
) -> Result<Pruned, JournalError> {
    let cutoff = now_ms.saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
    let mut out = Pruned::default();
    // Deletes `key` unless an earlier delete failed; whether it is gone.
    let remove = |out: &mut Pruned, ns: &str, key: &str| -> bool {
        if out.error.is_some() {
            return false;
        }
        match store.delete(ns, key) {
            Ok(existed) => {
                out.removed += usize::from(existed);
                true
            }
            Err(e) => {
                out.error = Some(e);
                false
            }
        }
    };
    for (k, v) in store.list(ALERTS)? {
        let a: Alert = decode("alert", &k, &v)?;
        let old = a.state == AlertState::Resolved && a.resolved_at_ms.is_some_and(|t| t < cutoff);
        if !(old && remove(&mut out, ALERTS, &k)) {
            out.alerts.push(a);
        }
    }
    for (k, v) in store.list(INCIDENTS)? {
        let i: Incident = decode("incident", &k, &v)?;
        let old =
            i.state == IncidentState::Resolved && i.resolved_at_ms.is_some_and(|t| t < cutoff);
        if !(old && remove(&mut out, INCIDENTS, &k)) {
            out.incidents.push(i);
        }
    }
    for (k, v) in store.list(SILENCES)? {
        let s: Silence = decode("silence", &k, &v)?;
        if !(s.ends_at_ms < cutoff && remove(&mut out, SILENCES, &k)) {
            out.silences.push(s);
        }
    }
    if out.removed > 0 {
        tracing::info!(removed = out.removed, ?retention, "pruned the journal");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use store::Embedded;

    use super::super::tests::{DAY_MS, alert, incident, keys, silence};
    use super::super::{Journal, Options, now_ms};
    use super::*;

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

    /// A full disk at start: the prune's deletes fail, yet the journal opens (so `up`
    /// starts), restores what is still in the file and reports itself unhealthy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_prune_at_open_is_reported_not_fatal() {
        use super::super::health::tests::Flaky;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.redb");
        let now = now_ms();
        {
            let (j, _) = Journal::open(&path, 100, Options::default()).unwrap();
            j.put_alert(&alert("old", AlertState::Resolved, Some(now - 2 * DAY_MS)));
            j.put_alert(&alert("firing", AlertState::Firing, None));
            j.flush().await;
        }
        let store: Arc<dyn Store> = Arc::new(Flaky {
            inner: Embedded::open(&path).unwrap(),
            fail: true.into(),
        });
        let (j, r) = Journal::with_store(
            store.clone(),
            100,
            Options {
                retention: Duration::from_secs(24 * 3600),
                ..Options::default()
            },
        )
        .unwrap();
        let h = j.health().borrow().clone();
        assert!(!h.ok(), "{h:?}");
        assert!(
            h.last_error
                .as_deref()
                .unwrap()
                .contains("prune the journal"),
            "{h:?}"
        );
        let mut alerts: Vec<&str> = r.alerts.iter().map(|a| a.id.as_str()).collect();
        alerts.sort();
        assert_eq!(
            alerts,
            ["firing", "old"],
            "what could not be pruned is still there"
        );
        assert_eq!(keys(&*store, ALERTS), ["firing", "old"]);
    }
}
