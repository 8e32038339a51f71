//! [`Store::export`](crate::Store::export) for the embedded store: a complete, consistent
//! copy of the journal, made while bulwark keeps writing (for backups of bulwark's own
//! state).
//!
//! The copy is read from one read transaction, so it holds exactly the state of one commit
//! (redb's readers see a snapshot and do not block writers). It is written as a fresh
//! journal under a temporary name next to the destination, committed durably, fsynced, and
//! only then renamed onto the destination, whose directory is fsynced last: at the
//! destination there is either the old file (or nothing) or the complete copy, never a
//! half-written one. The copy is one write transaction, so its dirty pages are held until
//! the commit; journals are kept small by [`Store::trim`](crate::Store::trim).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use redb::backends::FileBackend;
use redb::{
    Durability, Key, ReadTransaction, ReadableTable, TableDefinition, TableHandle, Value,
    WriteTransaction,
};

use super::format::{META, builder};
use super::{SEQ, kv_def, log_def};
use crate::Error;

/// Why an export failed: reading the journal (an error of the source, which the caller maps
/// like any failed read) or writing the copy (already an [`Error`] naming the destination).
pub(super) enum Fail {
    Source(redb::Error),
    Dest(Error),
}

fn source(e: impl Into<redb::Error>) -> Fail {
    Fail::Source(e.into())
}

/// Distinguishes temporary names of concurrent exports within one process.
static EXPORT_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes the state `txn` sees as a new journal at `dest` (see the module docs).
pub(super) fn export(txn: &ReadTransaction, dest: &Path) -> Result<(), Fail> {
    let io_err = |op: &'static str| {
        move |source| {
            Fail::Dest(Error::Io {
                path: dest.to_path_buf(),
                op,
                source,
            })
        }
    };
    let Some(file_name) = dest.file_name() else {
        return Err(io_err("export the journal")(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path has no file name",
        )));
    };
    let dir = match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.exporting-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        EXPORT_SEQ.fetch_add(1, Ordering::Relaxed)
    ));

    let written = write_copy(txn, &tmp, dest).and_then(|()| {
        fs::rename(&tmp, dest).map_err(io_err("move the export into place"))?;
        // Make the new directory entry durable too, not just the file's contents.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync the export's directory"))
    });
    if written.is_err() {
        // Best effort: the temporary file is all that a failure can leave.
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Creates the journal `tmp` and copies every table `txn` sees into it, in one durable
/// commit; errors of the copy name `dest`, the file the caller asked for.
fn write_copy(txn: &ReadTransaction, tmp: &Path, dest: &Path) -> Result<(), Fail> {
    let dest_err = |op: &'static str| move |e| Fail::Dest(dest_error(dest, op, e));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(|e| dest_err("create the export")(redb::Error::Io(e)))?;
    let backend = FileBackend::new(file).map_err(|e| dest_err("create the export")(e.into()))?;
    let db = builder()
        .create_with_backend(backend)
        .map_err(|e| dest_err("create the export")(e.into()))?;
    let mut out = db
        .begin_write()
        .map_err(|e| dest_err("write the export")(e.into()))?;
    out.set_durability(Durability::Immediate)
        .map_err(|e| dest_err("write the export")(e.into()))?;
    out.set_two_phase_commit(true);

    for table in txn.list_tables().map_err(source)? {
        let name = table.name();
        if name == META.name() {
            copy(txn, &out, META, dest)?;
        } else if name == SEQ.name() {
            copy(txn, &out, SEQ, dest)?;
        } else if name.starts_with("log.") {
            copy(txn, &out, log_def(name), dest)?;
        } else if name.starts_with("kv.") {
            copy(txn, &out, kv_def(name), dest)?;
        } else {
            return Err(Fail::Source(redb::Error::Corrupted(format!(
                "the journal holds a table bulwark does not know: {name:?}"
            ))));
        }
    }
    out.commit()
        .map_err(|e| dest_err("write the export")(e.into()))?;
    db.close()
        .map_err(|e| dest_err("write the export")(e.into()))?;
    // The commit was durable already; this also covers the file's metadata (its length).
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| dest_err("sync the export")(redb::Error::Io(e)))
}

/// Copies one table, every entry, into a table of the same name and types (created even if
/// it is empty, so the copy has the same tables).
fn copy<K: Key + 'static, V: Value + 'static>(
    txn: &ReadTransaction,
    out: &WriteTransaction,
    def: TableDefinition<'_, K, V>,
    dest: &Path,
) -> Result<(), Fail> {
    let write = |e: redb::Error| Fail::Dest(dest_error(dest, "write the export", e));
    let from = txn.open_table(def).map_err(source)?;
    let mut to = out.open_table(def).map_err(|e| write(e.into()))?;
    for entry in from.iter().map_err(source)? {
        let (k, v) = entry.map_err(source)?;
        to.insert(k.value(), v.value())
            .map_err(|e| write(e.into()))?;
    }
    Ok(())
}

/// An error of the copy, on `dest`: the operating system's error as [`Error::Io`] (a full
/// disk reads "cannot write the export: No space left on device"), others as
/// [`Error::Storage`].
fn dest_error(dest: &Path, op: &'static str, e: redb::Error) -> Error {
    let path: PathBuf = dest.to_path_buf();
    match e {
        redb::Error::Io(source) => Error::Io { path, op, source },
        other => Error::Storage {
            path,
            op,
            source: Box::new(other),
        },
    }
}
