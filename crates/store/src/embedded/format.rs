//! The journal file itself: bulwark's marker and format version, how a new file is created
//! (under a temporary name, linked into place once its marker is committed) and how an
//! existing one is examined before it is opened for writing.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::backends::FileBackend;
use redb::{
    Builder, DatabaseError, Durability, ReadTransaction, ReadableDatabase, TableDefinition,
    TableError,
};

use super::{engine, open_error};
use crate::Error;

/// The magic string of the marker that identifies a bulwark journal.
pub const MAGIC: &str = "bulwark-journal";

/// The journal format this build writes, and the newest it can read.
///
/// Bump it when the table layout changes incompatibly; an older bulwark then refuses the file
/// with [`Error::Version`] instead of misreading it.
pub const FORMAT_VERSION: u32 = 1;

pub(super) const META: TableDefinition<&str, &str> = TableDefinition::new("bulwark.meta");
const META_MAGIC: &str = "magic";
const META_FORMAT: &str = "format";

/// redb's page cache. Its default (1 GiB) is sized for a database server; the journal is
/// written sequentially and read mostly at its tail, so a small cache serves it, and bulwark
/// must stay light next to the services it supervises.
const CACHE_BYTES: usize = 32 << 20;

pub(super) fn builder() -> Builder {
    let mut builder = Builder::new();
    builder.set_cache_size(CACHE_BYTES);
    builder
}

/// Looks at an existing file without writing to it: the file is opened read-only, so a
/// foreign or corrupt file is refused exactly as it was found. `Ok` means "safe to open for
/// writing": either the marker was verified, or the file was not shut down cleanly (e.g.
/// `kill -9` of the previous `bulwark up`) and redb will not read it before running its crash
/// recovery, which writes; the caller then checks the marker right after that recovery.
pub(super) fn precheck(path: &Path) -> Result<(), Error> {
    guarded(path, || {
        let db = match builder().open_read_only(path) {
            Ok(db) => db,
            Err(DatabaseError::RepairAborted) => return Ok(()),
            Err(e) => return Err(open_error(path, e)),
        };
        let txn = db.begin_read().map_err(|e| engine(path, "open", e))?;
        check_marker(&txn, path)
    })
}

/// Checks bulwark's marker in a snapshot of the file.
pub(super) fn check_marker(txn: &ReadTransaction, path: &Path) -> Result<(), Error> {
    let foreign = || Error::Foreign {
        path: path.to_path_buf(),
    };
    let corrupt = |detail: String| Error::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        // No marker table, or a table of that name with other types: someone else's database.
        Err(
            TableError::TableDoesNotExist(_)
            | TableError::TableTypeMismatch { .. }
            | TableError::TableIsMultimap(_)
            | TableError::TypeDefinitionChanged { .. },
        ) => return Err(foreign()),
        Err(e) => return Err(engine(path, "open", e)),
    };
    let get = |key: &str| -> Result<Option<String>, Error> {
        meta.get(key)
            .map(|v| v.map(|v| v.value().to_owned()))
            .map_err(|e| engine(path, "open", e))
    };
    if get(META_MAGIC)?.as_deref() != Some(MAGIC) {
        return Err(foreign());
    }
    let Some(format) = get(META_FORMAT)? else {
        return Err(corrupt("the journal marker has no format version".into()));
    };
    let found: u32 = format
        .parse()
        .map_err(|_| corrupt(format!("unreadable format version {format:?}")))?;
    if found == 0 {
        return Err(corrupt("format version 0 does not exist".into()));
    }
    if found > FORMAT_VERSION {
        return Err(Error::Version {
            path: path.to_path_buf(),
            found,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

/// Distinguishes temporary names of concurrent creations within one process.
static CREATE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Creates a new journal at `path`, which did not exist a moment ago.
///
/// The journal is initialized and its marker committed under a temporary name in the same
/// directory, then hard-linked to `path`. Linking fails if `path` appeared meanwhile (another
/// process won the race), so an existing file is never replaced; the caller then examines the
/// winner's file like any existing one.
pub(super) fn create(path: &Path) -> Result<(), Error> {
    let io_err = |op: &'static str| {
        move |source| Error::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    let file_name = path.file_name().ok_or_else(|| {
        io_err("create the journal")(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path has no file name",
        ))
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.creating-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        CREATE_SEQ.fetch_add(1, Ordering::Relaxed)
    ));

    let built = init_new(&tmp, path).and_then(|()| {
        match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            // Someone else created the journal first: theirs stands, ours is discarded.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            // File systems without hard links: rename, which would replace a file created in
            // the instant since the existence check, so check once more right before.
            Err(_) if !path.exists() => {
                fs::rename(&tmp, path).map_err(io_err("create the journal"))
            }
            Err(_) => Ok(()),
        }
    });
    // The temporary name is gone after a rename; otherwise remove it (best effort: a leftover
    // is a harmless hidden file, and a failure here must not mask the real outcome).
    let _ = fs::remove_file(&tmp);
    built?;
    // Make the new directory entry durable too, not just the file's contents.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync the state directory"))
}

/// Initializes a journal with its marker in the new file `tmp`.
fn init_new(tmp: &Path, path: &Path) -> Result<(), Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            op: "create the journal",
            source,
        })?;
    let backend = FileBackend::new(file).map_err(|e| open_error(path, e))?;
    let db = builder()
        .create_with_backend(backend)
        .map_err(|e| open_error(path, e))?;
    let mut txn = db.begin_write().map_err(|e| engine(path, "create", e))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| engine(path, "create", e))?;
    txn.set_two_phase_commit(true);
    {
        let mut meta = txn
            .open_table(META)
            .map_err(|e| engine(path, "create", e))?;
        let format = FORMAT_VERSION.to_string();
        for (key, value) in [(META_MAGIC, MAGIC), (META_FORMAT, format.as_str())] {
            meta.insert(key, value)
                .map_err(|e| engine(path, "create", e))?;
        }
    }
    txn.commit().map_err(|e| engine(path, "create", e))?;
    db.close().map_err(|e| engine(path, "create", e))
}

/// Runs an open step, turning a panic of the storage engine into [`Error::Corrupt`].
///
/// redb documents that opening a file damaged outside redb "may panic"; for a journal that
/// is a corrupt file to report, not a reason to crash bulwark. Only open steps are guarded:
/// they touch nothing shared, so nothing is left half-updated by the unwinding.
pub(super) fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown reason".to_owned());
            Err(Error::Corrupt {
                path: path.to_path_buf(),
                detail: format!("the storage engine failed while reading it: {message}"),
            })
        }
    }
}
