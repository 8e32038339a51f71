//! The store's error type.
//!
//! Messages are written for the operator reading `bulwark up`'s output: they name the file
//! and say what to do. No backend type appears in a variant, so callers cannot come to depend
//! on redb; the backend's own error survives only as an opaque `source`.

use std::path::PathBuf;

/// Everything that can go wrong opening or using a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file exists but is not a readable bulwark journal: not a database at all (random
    /// bytes, empty, truncated) or a database whose pages fail their checksums. The file was
    /// left exactly as it was found.
    #[error(
        "the journal {} is corrupt or is not a bulwark journal ({detail}); bulwark left it \
         untouched. Move it aside (bulwark will create a new journal) or restore it from a backup",
        path.display()
    )]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// What the storage engine found wrong.
        detail: String,
    },

    /// The file is a healthy database, but not one bulwark created: it lacks bulwark's marker.
    /// It was left exactly as it was found.
    #[error(
        "{} is a database that bulwark did not create (it has no bulwark journal marker); bulwark \
         left it untouched. Move it aside (bulwark will create a new journal) or point bulwark at \
         another state directory",
        path.display()
    )]
    Foreign {
        /// The database file.
        path: PathBuf,
    },

    /// The journal was written by a newer bulwark whose format this one does not understand.
    #[error(
        "the journal {} has format version {found}, but this bulwark understands only up to \
         version {supported}; run a newer bulwark, or move the file aside (bulwark will create a \
         new journal)",
        path.display()
    )]
    Version {
        /// The journal file.
        path: PathBuf,
        /// The format version written in the file.
        found: u32,
        /// The newest format version this bulwark reads.
        supported: u32,
    },

    /// Another process (or another `Embedded` in this one) has the journal open.
    #[error(
        "the journal {} is already in use by another process; is another `bulwark up` running \
         with the same state directory?",
        path.display()
    )]
    Locked {
        /// The journal file.
        path: PathBuf,
    },

    /// A log or namespace name outside the accepted alphabet (see [`crate::Store`]).
    #[error("invalid log or namespace name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// A file-system operation on the journal's path, or on the destination of an export,
    /// failed (permissions, missing directory, read-only file system, full disk...).
    #[error("journal {}: cannot {op}: {source}", path.display())]
    Io {
        /// The path the operation was on.
        path: PathBuf,
        /// The operation that failed, worded to follow "cannot".
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The storage engine failed an operation on an open journal (I/O error, full disk...).
    /// Nothing of the failed call was committed.
    #[error("journal {}: {op} failed: {source}", path.display())]
    Storage {
        /// The journal file.
        path: PathBuf,
        /// The operation that failed.
        op: &'static str,
        /// The storage engine's own error, kept opaque.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}
