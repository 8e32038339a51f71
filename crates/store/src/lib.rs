//! Durable state: a small [`Store`] trait with an embedded (redb) implementation.
//!
//! The store is bulwark's journal. Callers hand it opaque bytes (they serialize their own
//! events, alerts and incidents), so this crate knows nothing about event types, and nothing
//! about the backend leaks out of it: the trait and [`Error`] mention no redb type, so a
//! networked implementation (etcd) can slot in later without touching callers.
//!
//! Two shapes of data live in one store:
//! - **logs**: named append-only sequences of records with strictly increasing `u64` ids,
//!   trimmed from the old end to bound disk use;
//! - **namespaces**: named key-value maps holding current state (open incidents, alert
//!   states, silences).
//!
//! Leader election ([`Election`], [`LocalElection`]): one term per group at a time, with
//! fencing tokens that are ids of a log of this store, so they never repeat.
//!
//! Backups: [`Store::export`] writes a consistent copy of the whole journal (one instant's
//! committed state) to another file while the store keeps being written.
//!
//! Durability contract: when [`Store::append`], [`Store::put`], [`Store::delete`] or
//! [`Store::trim`] return `Ok`, the change has been committed to stable storage and survives a
//! `kill -9` of the process (and, as far as the OS's fsync is honest, a power loss).

#![warn(missing_docs)]

mod election;
mod embedded;
mod error;
mod name;

pub use election::{Election, ElectionError, LocalElection, Term};
pub use embedded::{Embedded, FORMAT_VERSION, MAGIC};
pub use error::Error;
pub use name::MAX_NAME_LEN;

/// A named append-only log of records with increasing `u64` ids, plus a small key-value map
/// per namespace.
///
/// Invariants every implementation upholds:
/// - ids within one log start at 1 and strictly increase; an id is never reused, not even
///   after [`trim`](Store::trim) removed it or the store was reopened, so a reader's
///   "everything after id N" cursor stays meaningful forever;
/// - a call that returned `Ok` is durable (see the crate docs); a call that returned `Err`
///   changed nothing (each call is one transaction);
/// - log and namespace names are non-empty, at most [`MAX_NAME_LEN`] bytes of
///   `[a-z0-9_-]`; any other name is [`Error::InvalidName`], never a panic;
/// - logs and namespaces are separate: a log and a namespace may share a name.
///
/// `Send + Sync + 'static` so it can be shared as `Arc<dyn Store>` between tasks.
pub trait Store: Send + Sync + 'static {
    /// Appends `records` to `log` in one durable transaction and returns their ids, in order.
    ///
    /// Either all records are committed or none are. An empty batch commits nothing and
    /// returns an empty vector.
    fn append(&self, log: &str, records: &[&[u8]]) -> Result<Vec<u64>, Error>;

    /// Records of `log` with id > `after`, oldest first, at most `limit` of them.
    ///
    /// A log that was never written reads as empty.
    fn read(&self, log: &str, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, Error>;

    /// The highest id ever assigned in `log` (0 when nothing was ever appended).
    ///
    /// Trimming does not lower it: it is the id the next append builds on.
    fn last_id(&self, log: &str) -> Result<u64, Error>;

    /// Removes the oldest records of `log` so that at most `keep` remain; returns how many were
    /// removed.
    fn trim(&self, log: &str, keep: u64) -> Result<u64, Error>;

    /// Inserts or replaces `key` in namespace `ns`.
    fn put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), Error>;

    /// The value of `key` in `ns`, if any.
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, Error>;

    /// Removes `key` from `ns`; returns whether it was present.
    fn delete(&self, ns: &str, key: &str) -> Result<bool, Error>;

    /// Every entry of `ns`, ordered by key (byte order).
    fn list(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, Error>;

    /// Writes a complete copy of the journal to `dest`, for backups of bulwark's own state,
    /// while the store stays in use.
    ///
    /// The copy holds exactly the committed state at one instant: every log with its records,
    /// their ids and its last-id counter, and every namespace; appends that commit during the
    /// export are either wholly in it or not at all. It is a journal that [`Embedded::open`]
    /// opens. `dest` (whose directory must exist) is replaced if it exists, and only once the
    /// copy is complete and on stable storage: on `Err`, `dest` is as it was (absent, or the
    /// old file), and the store itself is unaffected. `dest` must not be the journal itself.
    fn export(&self, dest: &std::path::Path) -> Result<(), Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Callers share the store across tasks and wrap its errors in `anyhow`.
    #[test]
    fn types_are_shareable() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Embedded>();
        shareable::<Error>();
        shareable::<std::sync::Arc<dyn Store>>();
    }
}
