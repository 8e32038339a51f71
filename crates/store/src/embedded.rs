//! The embedded store: one redb file in bulwark's state directory.
//!
//! Layout of the file (format version [`FORMAT_VERSION`]):
//! - `bulwark.meta` (`&str -> &str`): the marker, `magic = MAGIC` and `format = FORMAT_VERSION`.
//!   A file without it was not created by bulwark and is refused.
//! - `bulwark.seq` (`&str -> u64`): per log, the highest id ever assigned. Kept apart from the
//!   log itself so that trimming a log to nothing does not let ids restart at 1.
//! - `log.<name>` (`u64 -> bytes`): the records of log `<name>`, keyed by id.
//! - `kv.<name>` (`&str -> bytes`): namespace `<name>`.
//!
//! [`Store::export`] copies these tables, and only these (an unknown table is reported as
//! corruption), into a new file: see `embedded/export.rs`.
//!
//! User names are restricted to `[a-z0-9_-]` (see [`crate::name`]), so the `log.` / `kv.`
//! prefixes keep logs, namespaces and the internal tables (whose names contain a `.` after
//! `bulwark`) from ever sharing a table.

mod export;
mod format;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use redb::{
    Database, DatabaseError, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase,
    ReadableTable, ReadableTableMetadata, StorageError, TableDefinition, TableError,
    WriteTransaction,
};

use crate::{Error, Store, name};
pub use format::{FORMAT_VERSION, MAGIC};
use format::{builder, check_marker, create, guarded, precheck};

const SEQ: TableDefinition<&str, u64> = TableDefinition::new("bulwark.seq");

/// A [`Store`] kept in one redb file.
///
/// Invariants:
/// - the file at `path` carries bulwark's marker with a format version this build reads; it
///   was checked by [`Embedded::open`] before anything was written to the file;
/// - every mutation is one redb write transaction committed with [`Durability::Immediate`] and
///   2-phase commit, so `Ok` means on stable storage, and a crash never leaves a half-applied
///   call; redb serializes write transactions, so concurrent callers need no extra lock;
/// - the file is locked by redb for as long as this value lives: a second `open` of the same
///   file, from this process or another, fails with [`Error::Locked`].
///
/// - after an I/O error (a full disk, typically) the storage engine refuses every later
///   operation until the file is closed; the next call then closes and reopens it (checking
///   the marker, with redb's crash recovery if needed, but without [`Embedded::open`]'s
///   whole-file checks, and never creating the file), so the store recovers by itself once
///   the cause is gone.
///
/// Cheap to share: wrap it in an `Arc` (`Arc<dyn Store>`); all methods take `&self`.
pub struct Embedded {
    /// `None` only between closing a failed database and reopening it.
    db: RwLock<Option<Database>>,
    /// An I/O error left `db` unusable: reopen it before the next call.
    failed: AtomicBool,
    path: PathBuf,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Embedded {
    /// Opens the journal at `path`, creating it if the file does not exist.
    ///
    /// The parent directory must exist. A new journal is built under a temporary name next to
    /// `path` and linked into place only once its marker is committed, so a crash during
    /// creation never leaves a marker-less file at `path` that the next start would refuse as
    /// foreign.
    ///
    /// An existing file is examined read-only before it is opened for writing, and refused,
    /// byte-for-byte untouched, when it is:
    /// - not a database (random bytes, truncated) → [`Error::Corrupt`];
    /// - empty (0 bytes) → [`Error::Corrupt`]: a journal is never empty (redb writes its header
    ///   before bulwark links a new journal into place), so an empty file was truncated or made
    ///   by something else, and silently initializing it could hide lost history;
    /// - a database without bulwark's marker → [`Error::Foreign`];
    /// - a journal of a newer format → [`Error::Version`].
    ///
    /// Opening for writing runs redb's integrity check (checksums of every committed page), so
    /// corruption is reported as [`Error::Corrupt`] here rather than surfacing later. That reads
    /// the whole file once per start, which is affordable because logs are bounded by
    /// [`Store::trim`].
    ///
    /// One exception to "untouched": a file left open by a killed process cannot be read
    /// without redb's crash recovery, which rewrites its header and allocator state (no data is
    /// lost; the recovered state is the last committed one). Such a file is recovered first and
    /// its marker checked afterwards, so a foreign database that itself crashed would be
    /// recovered before being refused as [`Error::Foreign`].
    pub fn open(path: &Path) -> Result<Self, Error> {
        let path = path.to_path_buf();
        match fs::metadata(&path) {
            Ok(meta) if !meta.is_file() => {
                return Err(Error::Corrupt {
                    path,
                    detail: "it is not a regular file".into(),
                });
            }
            Ok(meta) if meta.len() == 0 => {
                return Err(Error::Corrupt {
                    path,
                    detail: "the file is empty (0 bytes)".into(),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => create(&path)?,
            Err(source) => {
                return Err(Error::Io {
                    path,
                    op: "inspect the file",
                    source,
                });
            }
        }

        precheck(&path)?;
        let db = guarded(&path, || {
            builder()
                .set_check_integrity_on_open(true)
                .open(&path)
                .map_err(|e| open_error(&path, e))
        })?;
        // Checked again even after a successful precheck: cheap, and it covers the
        // NeedsRecovery path, where this is the first look at the marker.
        let txn = db.begin_read().map_err(|e| engine(&path, "open", e))?;
        check_marker(&txn, &path)?;
        drop(txn);
        Ok(Self {
            db: RwLock::new(Some(db)),
            failed: AtomicBool::new(false),
            path,
        })
    }

    /// Runs `f` on the open database, first reopening it if an I/O error failed it; an I/O
    /// error from `f` marks it for reopening.
    fn with_db<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, Error> {
        if self.failed.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
        // Reachable under concurrency: after our reopen succeeded, another caller's operation
        // can fail and a third caller's reopen fail too, leaving `None` before this read lock.
        let Some(db) = guard.as_ref() else {
            drop(guard);
            self.failed.store(true, Ordering::Release);
            return Err(Error::Io {
                path: self.path.clone(),
                op: "reopen the journal",
                source: io::Error::other("the journal is closed after an earlier I/O error"),
            });
        };
        f(db).map_err(|e| {
            if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
                self.failed.store(true, Ordering::Release);
            }
            engine(&self.path, op, e)
        })
    }

    /// Closes the failed database and opens the file again.
    ///
    /// A short path compared with [`Embedded::open`], since it runs on every retry while the
    /// disk is full: the file was checked when it was first opened, so there is no precheck
    /// and no whole-file integrity check (redb still runs its crash recovery if the failed
    /// handle left the file needing it), only the marker is checked again. The file is never
    /// created: a journal that vanished is an error, not a new empty journal.
    fn reopen(&self) -> Result<(), Error> {
        let mut guard = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if !self.failed.load(Ordering::Acquire) {
            return Ok(()); // another caller reopened it meanwhile
        }
        // The old handle holds redb's file lock: it must be gone before the file is opened.
        if let Some(old) = guard.take() {
            let _ = old.close();
        }
        let path = &self.path;
        let db = guarded(path, || {
            // `Builder::open` opens an existing file only; it never creates one.
            let db = builder().open(path).map_err(|e| match e {
                DatabaseError::Storage(StorageError::Io(source))
                    if source.kind() == io::ErrorKind::NotFound =>
                {
                    Error::Io {
                        path: path.clone(),
                        op: "reopen the journal (the file is gone)",
                        source,
                    }
                }
                other => open_error(path, other),
            })?;
            let txn = db.begin_read().map_err(|e| engine(path, "reopen", e))?;
            check_marker(&txn, path)?;
            drop(txn);
            Ok(db)
        })?;
        *guard = Some(db);
        self.failed.store(false, Ordering::Release);
        Ok(())
    }

    /// The journal file this store writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a write transaction and commits it durably; an error from `f` aborts it.
    fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, Error> {
        self.with_db(op, |db| {
            let mut txn = db.begin_write()?;
            // Immediate is redb's default; stated so that the durability contract does not
            // depend on a default. 2-phase commit makes a damaged newest commit an error on the
            // next open instead of a silent fallback to the previous one.
            txn.set_durability(Durability::Immediate)?;
            txn.set_two_phase_commit(true);
            // On error `txn` is dropped here, which aborts it: nothing of the call is committed.
            let out = f(&txn)?;
            txn.commit()?;
            Ok(out)
        })
    }

    /// Runs `f` on a read snapshot.
    fn read_txn<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, Error> {
        self.with_db(op, |db| f(&db.begin_read()?))
    }
}

impl Store for Embedded {
    fn append(&self, log: &str, records: &[&[u8]]) -> Result<Vec<u64>, Error> {
        name::validate(log)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let table = log_table(log);
        self.write("append", |txn| {
            let mut seq = txn.open_table(SEQ)?;
            let mut records_table = txn.open_table(log_def(&table))?;
            let mut id = next_base(seq.get(log)?.map(|g| g.value()), &records_table)?;
            let mut ids = Vec::with_capacity(records.len());
            for record in records {
                id = id.checked_add(1).ok_or_else(|| {
                    redb::Error::Corrupted(format!("the id counter of log {log:?} overflowed"))
                })?;
                records_table.insert(id, *record)?;
                ids.push(id);
            }
            seq.insert(log, id)?;
            Ok(ids)
        })
    }

    fn read(&self, log: &str, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        name::validate(log)?;
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let table = log_table(log);
        self.read_txn("read", |txn| {
            let Some(records) = open_existing(txn, log_def(&table))? else {
                return Ok(Vec::new());
            };
            // Capped so that a "read everything" limit does not reserve memory up front.
            let mut out = Vec::with_capacity(limit.min(1024));
            for entry in records.range(first..)?.take(limit) {
                let (id, value) = entry?;
                out.push((id.value(), value.value().to_vec()));
            }
            Ok(out)
        })
    }

    fn last_id(&self, log: &str) -> Result<u64, Error> {
        name::validate(log)?;
        let table = log_table(log);
        self.read_txn("read the last id", |txn| {
            let counter = match open_existing(txn, SEQ)? {
                Some(seq) => seq.get(log)?.map(|g| g.value()),
                None => None,
            };
            match open_existing(txn, log_def(&table))? {
                Some(records) => next_base(counter, &records),
                None => Ok(counter.unwrap_or(0)),
            }
        })
    }

    fn trim(&self, log: &str, keep: u64) -> Result<u64, Error> {
        name::validate(log)?;
        let table = log_table(log);
        self.write("trim", |txn| {
            let mut records = txn.open_table(log_def(&table))?;
            let len = records.len()?;
            if len <= keep {
                return Ok(0);
            }
            let remove = len - keep;
            // The id of the newest record to remove: the `remove`-th from the oldest end.
            let mut cutoff = None;
            let mut seen = 0u64;
            for entry in records.iter()? {
                let (id, _) = entry?;
                seen += 1;
                if seen == remove {
                    cutoff = Some(id.value());
                    break;
                }
            }
            let Some(cutoff) = cutoff else {
                return Err(redb::Error::Corrupted(format!(
                    "log {log:?} reports {len} records but holds fewer"
                )));
            };
            records.retain_in(..=cutoff, |_, _| false)?;
            Ok(remove)
        })
    }

    fn put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), Error> {
        name::validate(ns)?;
        let table = kv_table(ns);
        self.write("put", |txn| {
            txn.open_table(kv_def(&table))?.insert(key, value)?;
            Ok(())
        })
    }

    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        name::validate(ns)?;
        let table = kv_table(ns);
        self.read_txn("get", |txn| {
            let Some(entries) = open_existing(txn, kv_def(&table))? else {
                return Ok(None);
            };
            Ok(entries.get(key)?.map(|v| v.value().to_vec()))
        })
    }

    fn delete(&self, ns: &str, key: &str) -> Result<bool, Error> {
        name::validate(ns)?;
        let table = kv_table(ns);
        self.write("delete", |txn| {
            let removed = txn.open_table(kv_def(&table))?.remove(key)?.is_some();
            Ok(removed)
        })
    }

    fn list(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        name::validate(ns)?;
        let table = kv_table(ns);
        self.read_txn("list", |txn| {
            let Some(entries) = open_existing(txn, kv_def(&table))? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for entry in entries.iter()? {
                let (key, value) = entry?;
                out.push((key.value().to_owned(), value.value().to_vec()));
            }
            Ok(out)
        })
    }

    fn export(&self, dest: &Path) -> Result<(), Error> {
        // Renaming the copy onto the live journal would leave this store writing to an
        // unlinked file.
        if let (Ok(a), Ok(b)) = (fs::metadata(dest), fs::metadata(&self.path)) {
            use std::os::unix::fs::MetadataExt;
            if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
                return Err(Error::Io {
                    path: dest.to_path_buf(),
                    op: "export the journal onto itself",
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "the destination is the journal being exported",
                    ),
                });
            }
        }
        let mut written = Ok(());
        self.with_db("export", |db| {
            match export::export(&db.begin_read()?, dest) {
                Ok(()) => Ok(()),
                Err(export::Fail::Source(e)) => Err(e),
                Err(export::Fail::Dest(e)) => {
                    written = Err(e);
                    Ok(())
                }
            }
        })?;
        written
    }
}

fn log_table(log: &str) -> String {
    format!("log.{log}")
}

fn kv_table(ns: &str) -> String {
    format!("kv.{ns}")
}

fn log_def(table: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(table)
}

fn kv_def(table: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(table)
}

/// The id the next append counts up from: the stored counter, or the newest record if that is
/// higher. The two agree in any file this crate wrote; taking the maximum means a damaged
/// counter can never make an id repeat.
fn next_base(
    counter: Option<u64>,
    records: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<u64, redb::Error> {
    let newest = records.last()?.map(|(id, _)| id.value()).unwrap_or(0);
    Ok(counter.unwrap_or(0).max(newest))
}

/// Opens a table in a read snapshot; `None` if it was never created (nothing written yet).
fn open_existing<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<'_, K, V>,
) -> Result<Option<ReadOnlyTable<K, V>>, redb::Error> {
    match txn.open_table(def) {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Classifies a failure to open the file as a database.
fn open_error(path: &Path, e: DatabaseError) -> Error {
    let path_buf = path.to_path_buf();
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            Error::Locked { path: path_buf }
        }
        // bulwark has only ever written the current redb format.
        DatabaseError::UpgradeRequired(version) => Error::Corrupt {
            path: path_buf,
            detail: format!("it is a database in the old redb file format {version}"),
        },
        DatabaseError::Storage(StorageError::Corrupted(detail)) => Error::Corrupt {
            path: path_buf,
            detail,
        },
        // redb reports "not a database" (bad magic number) as InvalidData.
        DatabaseError::Storage(StorageError::Io(source))
            if source.kind() == io::ErrorKind::InvalidData =>
        {
            Error::Corrupt {
                path: path_buf,
                detail: source.to_string(),
            }
        }
        // A file cut short inside redb's header.
        DatabaseError::Storage(StorageError::Io(source))
            if source.kind() == io::ErrorKind::UnexpectedEof =>
        {
            Error::Corrupt {
                path: path_buf,
                detail: format!("the file ends early; it was probably truncated ({source})"),
            }
        }
        DatabaseError::Storage(StorageError::Io(source)) => Error::Io {
            path: path_buf,
            op: "open",
            source,
        },
        other => engine(path, "open", other),
    }
}

/// Maps an engine error on an open journal; the redb error itself stays an opaque source.
fn engine(path: &Path, op: &'static str, e: impl Into<redb::Error>) -> Error {
    let path = path.to_path_buf();
    match e.into() {
        redb::Error::Corrupted(detail) => Error::Corrupt { path, detail },
        redb::Error::DatabaseAlreadyOpen => Error::Locked { path },
        other => Error::Storage {
            path,
            op,
            source: Box::new(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marks the database failed, as an I/O error from redb would.
    fn fail(store: &Embedded) {
        store.failed.store(true, Ordering::Release);
    }

    #[test]
    fn reopen_after_a_failure_keeps_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.redb");
        let store = Embedded::open(&path).unwrap();
        store.put("ns", "k", b"v").unwrap();
        fail(&store);
        assert_eq!(store.get("ns", "k").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(!store.failed.load(Ordering::Acquire));
        store.put("ns", "k2", b"w").unwrap();
    }

    #[test]
    fn reopen_never_creates_a_vanished_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.redb");
        let store = Embedded::open(&path).unwrap();
        store.put("ns", "k", b"v").unwrap();
        fail(&store);
        fs::remove_file(&path).unwrap();
        let err = store.get("ns", "k").unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert!(!path.exists(), "no new empty journal was created");
        // Still failed: the next call tries again (and fails again) instead of panicking.
        assert!(store.get("ns", "k").is_err());
    }
}
