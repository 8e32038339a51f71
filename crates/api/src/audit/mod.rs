//! The audit log: every API call that changes something, and every call refused for its
//! token (401, 403), with who made it (the token's name), when, and how it ended; and
//! every action bulwark takes by itself ([`actions`]: restarts, ejections, automatic
//! rollbacks, remediations, chaos, autoscaling), by `bulwark`; kept in
//! the journal's `audit` log, apart from the events (pruning events never touches it), the
//! newest [`KEEP`] records, written in order by one thread. `bulwark audit` reads it; `--json` prints one JSON object per
//! line, the form log shippers and SIEMs ingest.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::tokens::Role;

pub mod actions;
mod cef;

/// The journal log.
pub const LOG: &str = "audit";
/// Records kept: the oldest go past this (a client flooding refused calls cannot fill
/// the disk). About 200 bytes each.
pub const KEEP: u64 = 1_000_000;
/// Longest path (with its query) kept in a record.
const MAX_PATH: usize = 512;

/// One audited call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its place in the log (increasing; set when read).
    #[serde(default)]
    pub id: u64,
    /// When it was answered (RFC 3339, UTC, milliseconds).
    pub at: String,
    /// The token's name (`owner` for the state directory's), or `-` without a valid one.
    pub who: String,
    /// The token's role, if any.
    pub role: Option<Role>,
    /// An API call's method (absent for bulwark's own actions).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
    /// An API call's path and query, cut at 512 bytes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// An API call's answer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub status: u16,
    /// What bulwark did by itself: `restart`, `stop`, `kill`, `start`, `eject`, `readmit`,
    /// `rollback`, `remediation`, `chaos`, `chaos-rollback`, `autoscale`, `audit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// What it acted on: a replica (`web/1`) or a service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// What caused it: the remediation rule, the experiment, `outlier detection`...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// For a call: `done` (2xx), `refused` (401, 403) or `failed` (any other status). For
    /// an action: its own word (`scheduled`, `done`, `dry-run`, `denied`, `started`...).
    pub outcome: String,
    /// Why, and the figures, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if takes a reference
fn is_zero(n: &u16) -> bool {
    *n == 0
}

impl Record {
    /// A record of `method path` answered `status` for `who`.
    pub fn new(who: Option<(&str, Role)>, method: &str, path: &str, status: u16) -> Record {
        let mut path = path.to_owned();
        if path.len() > MAX_PATH {
            let mut cut = MAX_PATH;
            while !path.is_char_boundary(cut) {
                cut -= 1;
            }
            path.truncate(cut);
        }
        Record {
            id: 0,
            at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            who: who.map_or_else(|| "-".to_owned(), |(n, _)| n.to_owned()),
            role: who.map(|(_, r)| r),
            method: method.to_owned(),
            path,
            status,
            action: None,
            target: None,
            by: None,
            outcome: match status {
                200..=299 => "done",
                401 | 403 => "refused",
                _ => "failed",
            }
            .to_owned(),
            detail: None,
        }
    }
}

/// Where audit records go: a bounded queue to one writer thread, so that a journal that
/// cannot write (a full disk) never holds up a call; what does not fit is dropped and
/// counted in the log.
pub struct Audit {
    queue: Option<std::sync::mpsc::SyncSender<Record>>,
    store: Option<Arc<dyn store::Store>>,
    /// Records queued, and records written (or given up on), for readers to wait on.
    queued: AtomicU64,
    written: tokio::sync::watch::Receiver<u64>,
    dropped: prometheus_client::metrics::counter::Counter,
}

/// Records waiting for the writer at most.
const QUEUE: usize = 4096;
/// Appends between trims of the log to [`KEEP`].
const TRIM_EVERY: u64 = 10_000;
/// How long a reader waits for the records queued before it to be written.
const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Audit {
    /// Records into `store` through a writer thread (`None`: nowhere).
    pub fn new(store: Option<Arc<dyn store::Store>>) -> Audit {
        let (written_tx, written) = tokio::sync::watch::channel(0);
        let queue = store.clone().and_then(|store| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Record>(QUEUE);
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || write_all(store.as_ref(), &rx, &written_tx))
                .map_err(|e| tracing::error!(error = %e, "cannot start the audit writer; nothing is audited"))
                .ok()
                .map(|_| tx)
        });
        Audit {
            queue,
            store,
            queued: AtomicU64::new(0),
            written,
            dropped: Default::default(),
        }
    }

    /// Queues `record` for the journal; never waits.
    pub fn record(&self, record: Record) {
        let Some(queue) = &self.queue else {
            return;
        };
        match queue.try_send(record) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::Release);
            }
            Err(std::sync::mpsc::TrySendError::Full(r)) => {
                let n = self.dropped.inc() + 1;
                if n.is_power_of_two() {
                    tracing::error!(dropped = n, record = ?r, "audit queue full (the journal is not writing); records dropped");
                }
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {}
        }
    }

    /// Registers `bulwark_audit_dropped_records_total`: records that did not fit the queue
    /// while the journal was not writing.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "bulwark_audit_dropped_records",
            "Audit records dropped because the journal was not writing and the queue was full",
            self.dropped.clone(),
        );
    }

    /// Waits (at most `wait`) until what is queued is written: at shutdown.
    pub async fn flush(&self, wait: std::time::Duration) {
        let target = self.queued.load(Ordering::Acquire);
        let mut written = self.written.clone();
        let _ = tokio::time::timeout(wait, written.wait_for(|w| *w >= target)).await;
    }

    /// Records after `after`, oldest first, at most `limit`, once those queued before the
    /// call are written (waiting at most 2 s).
    pub async fn read(&self, after: u64, limit: usize) -> Result<Vec<Record>, String> {
        let Some(store) = self.store.clone() else {
            return Ok(Vec::new());
        };
        let target = self.queued.load(Ordering::Acquire);
        let mut written = self.written.clone();
        let _ = tokio::time::timeout(READ_WAIT, written.wait_for(|w| *w >= target)).await;
        let raw = tokio::task::spawn_blocking(move || store.read(LOG, after, limit))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(raw
            .into_iter()
            .filter_map(|(id, bytes)| {
                let mut r: Record = serde_json::from_slice(&bytes).ok()?;
                r.id = id;
                Some(r)
            })
            .collect())
    }
}

/// Records written in one journal transaction at most.
const BATCH: usize = 1024;

/// The writer: appends what is queued in batches (one transaction, one sync each),
/// retrying with backoff while the journal fails.
fn write_all(
    store: &dyn store::Store,
    rx: &std::sync::mpsc::Receiver<Record>,
    written: &tokio::sync::watch::Sender<u64>,
) {
    let mut count = 0u64;
    while let Ok(first) = rx.recv() {
        let batch: Vec<Vec<u8>> = std::iter::once(first)
            .chain(rx.try_iter().take(BATCH - 1))
            .filter_map(|r| serde_json::to_vec(&r).ok())
            .collect();
        let records: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        let mut wait = std::time::Duration::from_millis(100);
        while let Err(e) = store.append(LOG, &records) {
            tracing::error!(error = %e, "cannot write audit records to the journal; retrying");
            std::thread::sleep(wait);
            wait = (wait * 2).min(std::time::Duration::from_secs(5));
        }
        let before = count;
        count += records.len() as u64;
        if count / TRIM_EVERY != before / TRIM_EVERY
            && let Err(e) = store.trim(LOG, KEEP)
        {
            tracing::warn!(error = %e, "cannot trim the audit log");
        }
        written.send_replace(count);
    }
}

/// `GET /v1/audit?after=ID&limit=N` (admin): records after `after`, at most `limit` (1000
/// by default, 10 000 at most).
pub(crate) fn routes() -> axum::Router<Arc<crate::AppState>> {
    axum::Router::new().route("/v1/audit", axum::routing::get(list))
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

async fn list(
    axum::extract::State(s): axum::extract::State<Arc<crate::AppState>>,
    page: Result<axum::extract::Query<Page>, axum::extract::rejection::QueryRejection>,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let page = match page {
        Ok(axum::extract::Query(p)) => p,
        Err(e) => {
            return crate::json::error(StatusCode::BAD_REQUEST, &format!("audit: {e}"))
                .into_response();
        }
    };
    let limit = page.limit.unwrap_or(1000).min(10_000);
    match s.audit.read(page.after, limit).await {
        Ok(records) => axum::Json(records).into_response(),
        Err(e) => crate::json::error(StatusCode::SERVICE_UNAVAILABLE, &e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_are_read_back_in_order_once_written_with_long_paths_cut() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn store::Store> =
            Arc::new(store::Embedded::open(&dir.path().join("j.redb")).unwrap());
        let audit = Audit::new(Some(store));
        audit.record(Record::new(
            Some(("ci", Role::Operator)),
            "POST",
            "/v1/reload",
            403,
        ));
        let long = format!("/v1/silences?x={}", "é".repeat(600));
        audit.record(Record::new(None, "DELETE", &long, 401));
        audit.record(Record::new(
            Some(("owner", Role::Admin)),
            "POST",
            "/v1/reload",
            200,
        ));
        let got = audit.read(0, 10).await.unwrap();
        assert_eq!(got.len(), 3, "a read waits for what was queued before it");
        assert_eq!(
            (got[0].who.as_str(), got[0].outcome.as_str()),
            ("ci", "refused")
        );
        assert_eq!((got[1].who.as_str(), got[1].role), ("-", None));
        assert!(got[1].path.len() <= MAX_PATH && got[1].path.starts_with("/v1/silences"));
        assert_eq!(got[2].outcome, "done");
        assert!(got[0].id < got[1].id && got[1].id < got[2].id);
        assert_eq!(
            audit.read(got[1].id, 10).await.unwrap(),
            vec![got[2].clone()]
        );
    }
}
