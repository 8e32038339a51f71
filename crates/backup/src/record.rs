//! What bulwark remembers about a backup between runs and restarts: which snapshots were
//! read back intact or found damaged, the last run, verification and drill. Kept in the
//! journal's `backups` namespace, one JSON value per backup.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The journal namespace.
const NAMESPACE: &str = "backups";

/// Everything remembered about one backup.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Marks by snapshot id.
    pub marks: BTreeMap<String, Mark>,
    /// Packs found damaged (hex ids): a new snapshot that reuses their data is damaged
    /// too, however well its own new data reads back.
    #[serde(default)]
    pub damaged_packs: BTreeSet<String>,
    /// Verification runs so far; run k reads part `k % parts + 1`.
    pub verify_round: u32,
    /// The last backup run, successful or not.
    pub last_run: Option<RunRecord>,
    /// When the last successful run ended (ms since the epoch).
    pub last_success_ms: Option<u64>,
    /// The last verification.
    pub last_verify: Option<VerifyRecord>,
    /// The last drill.
    pub last_drill: Option<DrillRecord>,
    /// Backup runs by result.
    pub runs_ok: u64,
    /// Failed backup runs.
    pub runs_failed: u64,
}

/// What is known of one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    /// When its data was read back intact (ms since the epoch).
    pub verified_ms: Option<u64>,
    /// Data it needs was found damaged.
    pub damaged: bool,
    /// When it was taken (ms since the epoch), for the RPO.
    pub time_ms: u64,
}

/// One backup run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// When it started (ms since the epoch).
    pub at_ms: u64,
    /// How long it took.
    pub duration_ms: u64,
    /// The snapshot written, if one was.
    pub snapshot: Option<String>,
    /// Bytes of the files saved.
    pub bytes: u64,
    /// Bytes added to the repository.
    pub added: u64,
    /// What failed, if anything did.
    pub error: Option<String>,
}

/// One verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyRecord {
    /// When it started (ms since the epoch).
    pub at_ms: u64,
    /// The part read (1-based) and the number of parts.
    pub part: (u32, u32),
    /// Packs read and checked.
    pub packs_read: usize,
    /// What was found wrong.
    pub problems: Vec<String>,
    /// Snapshots newly marked damaged.
    pub damaged: Vec<String>,
}

/// One restore drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// When it started (ms since the epoch).
    pub at_ms: u64,
    /// The snapshot restored.
    pub snapshot: Option<String>,
    /// Whether the check passed in time.
    pub passed: bool,
    /// Start of the restore to the passing check: the measured RTO.
    pub rto_ms: Option<u64>,
    /// How long the restore itself took.
    pub restore_ms: Option<u64>,
    /// What failed, if it did.
    pub error: Option<String>,
}

impl Record {
    /// The newest snapshot read back intact and not since found damaged: (id, time_ms).
    pub fn newest_verified(&self) -> Option<(&str, u64)> {
        self.marks
            .iter()
            .filter(|(_, m)| m.verified_ms.is_some() && !m.damaged)
            .max_by_key(|(_, m)| m.time_ms)
            .map(|(id, m)| (id.as_str(), m.time_ms))
    }
}

/// Reads and writes records; without a journal they live in memory only.
pub(crate) struct Records {
    store: Option<Arc<dyn store::Store>>,
}

impl Records {
    pub fn new(store: Option<Arc<dyn store::Store>>) -> Records {
        Records { store }
    }

    /// The stored record of `name`, or an empty one (a missing or unreadable record is
    /// not fatal: marks are rebuilt as the repository is read back).
    pub fn load(&self, name: &str) -> Record {
        let Some(store) = &self.store else {
            return Record::default();
        };
        match store.get(NAMESPACE, name) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(backup = name, error = %e, "unreadable backup record; starting afresh");
                Record::default()
            }),
            Ok(None) => Record::default(),
            Err(e) => {
                tracing::warn!(backup = name, error = %e, "cannot read the backup record");
                Record::default()
            }
        }
    }

    /// Stores `record`; a failure is logged (the journal reports its own health).
    pub fn save(&self, name: &str, record: &Record) {
        let Some(store) = &self.store else {
            return;
        };
        let bytes = serde_json::to_vec(record).unwrap_or_default();
        if let Err(e) = store.put(NAMESPACE, name, &bytes) {
            tracing::warn!(backup = name, error = %e, "cannot store the backup record");
        }
    }
}
