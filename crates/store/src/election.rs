//! Leader election with fencing tokens: the [`Election`] trait, and [`LocalElection`], its
//! one-machine implementation over a [`Store`].
//!
//! A *group* (a service with `[services.NAME.leader]`) has at most one *term* at a time: a
//! holder (a replica) and a fencing token. Tokens only ever grow, across groups, terms and
//! restarts of bulwark, so whatever the leader writes to can refuse a write carrying a
//! token lower than one it has seen (the old leader's, come back from a pause).
//!
//! Who should lead is not decided here: the caller (`runtime::leader`, with
//! `policy::leader`) picks the candidate; the election grants a term to one holder at a
//! time and hands out the token. The etcd implementation (cluster mode, `cluster::
//! EtcdElection`) keeps the same contract with a lease: `campaign` is a transaction on the
//! group's key that succeeds only when it is absent (the token is the key's create
//! revision), `renew` checks the key is still the term's and its lease surely alive,
//! `resign` deletes the key, `observe` reads it. A term there can end without its holder
//! resigning (its lease expired, or may have: etcd cannot be reached), so the caller renews
//! often and at [`Election::valid_until`] at the latest, and waits for a group held by
//! someone else with [`Election::wait_free`].

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::{Error, Store};

/// One holder's leadership of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The group (a service name).
    pub group: String,
    /// Who holds it (a replica, `service/index`).
    pub holder: String,
    /// The fencing token: greater than every token handed out before, in any group.
    pub token: u64,
}

/// Why an election call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ElectionError {
    /// Someone else holds the group: resign (or wait for the term to end) first.
    #[error("{group} is led by {holder} with fencing token {token}; it must resign first")]
    Held {
        /// The group.
        group: String,
        /// The current holder.
        holder: String,
        /// Its token.
        token: u64,
    },
    /// The term is over (resigned, replaced, or its lease expired): stop acting as leader.
    #[error("the term of {holder} over {group} (fencing token {token}) is over")]
    Lost {
        /// The group.
        group: String,
        /// The former holder.
        holder: String,
        /// Its token.
        token: u64,
    },
    /// The store under the election failed; nothing was granted.
    #[error("the election's store failed: {0}")]
    Store(#[from] Error),
    /// The election's backend (etcd) cannot be reached or did not answer in time; nothing
    /// was granted, and a held term is neither confirmed nor lost (yet).
    #[error("the election cannot reach its backend: {0}")]
    Unavailable(String),
}

/// Grants one term at a time per group, each with a fresh fencing token.
///
/// Invariants every implementation upholds:
/// - at most one term per group at any time;
/// - a token is never handed out twice and is greater than every token before it
///   (persisted, so a restart of bulwark never reuses one);
/// - a call that returned `Err` granted nothing.
///
/// Calls may block (they write to stable storage): call them off async runtime workers.
pub trait Election: Send + Sync + 'static {
    /// Takes `group` for `candidate` if nobody holds it; returns the new term.
    fn campaign(&self, group: &str, candidate: &str) -> Result<Term, ElectionError>;

    /// Confirms that `term` still holds ([`ElectionError::Lost`] if not).
    fn renew(&self, term: &Term) -> Result<(), ElectionError>;

    /// Ends `term` (nothing happens if it is already over).
    fn resign(&self, term: &Term) -> Result<(), ElectionError>;

    /// The group's current term, if any.
    fn observe(&self, group: &str) -> Result<Option<Term>, ElectionError>;

    /// Blocks until `group` may be free (its term ended, or nobody held it), or `timeout`
    /// passed: what a candidate refused with [`ElectionError::Held`] waits on before it
    /// campaigns again. Returning early is allowed (the next campaign says).
    fn wait_free(&self, group: &str, timeout: Duration) -> Result<(), ElectionError>;

    /// The instant after which `term` may be over without anyone having said so (a lease
    /// not confirmed since), if it has one: the holder must renew by then, and stop acting
    /// as leader when that renewal fails. `None`: the term lasts until it is resigned or
    /// replaced. Never blocks.
    fn valid_until(&self, term: &Term) -> Option<Instant> {
        let _ = term;
        None
    }
}

/// The log whose record ids are the fencing tokens: one record per term granted.
const TERMS: &str = "leader-terms";
/// Records kept in [`TERMS`] (trimming never lowers the ids that follow).
const KEEP_TERMS: u64 = 1_000;

/// The one-machine [`Election`]: terms live in memory (a term ends with the bulwark that
/// granted it, whose replicas die with it), tokens are ids of an append-only log of the
/// store, which never reuses one even after trimming or a restart.
pub struct LocalElection {
    store: Arc<dyn Store>,
    terms: Mutex<BTreeMap<String, Term>>,
    /// Notified whenever a term ends.
    ended: Condvar,
}

impl std::fmt::Debug for LocalElection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalElection").finish_non_exhaustive()
    }
}

impl LocalElection {
    /// An election over `store` (bulwark's journal).
    pub fn new(store: Arc<dyn Store>) -> Self {
        LocalElection {
            store,
            terms: Mutex::new(BTreeMap::new()),
            ended: Condvar::new(),
        }
    }

    fn terms(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Term>> {
        self.terms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Election for LocalElection {
    fn campaign(&self, group: &str, candidate: &str) -> Result<Term, ElectionError> {
        // The lock is held across the append so two campaigns cannot both see no holder.
        let mut terms = self.terms();
        if let Some(t) = terms.get(group) {
            return Err(ElectionError::Held {
                group: group.to_owned(),
                holder: t.holder.clone(),
                token: t.token,
            });
        }
        let record = format!("{group}\n{candidate}");
        let ids = self.store.append(TERMS, &[record.as_bytes()])?;
        // One record appended: one id (the contract of `append`).
        let token = match ids.first() {
            Some(id) => *id,
            None => self.store.last_id(TERMS)?,
        };
        // Trimming is housekeeping: a failure leaves more history, never a reused token.
        let _ = self.store.trim(TERMS, KEEP_TERMS);
        let term = Term {
            group: group.to_owned(),
            holder: candidate.to_owned(),
            token,
        };
        terms.insert(group.to_owned(), term.clone());
        Ok(term)
    }

    fn renew(&self, term: &Term) -> Result<(), ElectionError> {
        match self.terms().get(&term.group) {
            Some(t) if t == term => Ok(()),
            _ => Err(ElectionError::Lost {
                group: term.group.clone(),
                holder: term.holder.clone(),
                token: term.token,
            }),
        }
    }

    fn resign(&self, term: &Term) -> Result<(), ElectionError> {
        let mut terms = self.terms();
        if terms.get(&term.group) == Some(term) {
            terms.remove(&term.group);
            self.ended.notify_all();
        }
        Ok(())
    }

    fn observe(&self, group: &str) -> Result<Option<Term>, ElectionError> {
        Ok(self.terms().get(group).cloned())
    }

    fn wait_free(&self, group: &str, timeout: Duration) -> Result<(), ElectionError> {
        let terms = self.terms();
        let _unused = self
            .ended
            .wait_timeout_while(terms, timeout, |t| t.contains_key(group))
            .unwrap_or_else(|e| e.into_inner());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Embedded;

    fn open(dir: &std::path::Path) -> Arc<dyn Store> {
        Arc::new(Embedded::open(&dir.join("journal.redb")).expect("open"))
    }

    #[test]
    fn one_term_at_a_time_and_tokens_grow_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = Vec::new();
        {
            let e = LocalElection::new(open(dir.path()));
            let a = e.campaign("db", "db/0").expect("free");
            assert!(matches!(
                e.campaign("db", "db/1"),
                Err(ElectionError::Held { token, .. }) if token == a.token
            ));
            assert_eq!(e.observe("db").unwrap(), Some(a.clone()));
            e.renew(&a).expect("still held");
            e.resign(&a).unwrap();
            assert!(matches!(e.renew(&a), Err(ElectionError::Lost { .. })));
            let b = e.campaign("db", "db/1").expect("free again");
            let other = e.campaign("cache", "cache/0").expect("another group");
            seen.extend([a.token, b.token, other.token]);
        }
        // A new bulwark over the same journal: no term survives, no token is reused.
        let e = LocalElection::new(open(dir.path()));
        assert_eq!(e.observe("db").unwrap(), None);
        let c = e.campaign("db", "db/2").unwrap();
        seen.push(c.token);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    }

    #[test]
    fn a_stale_term_cannot_resign_its_successor() {
        let dir = tempfile::tempdir().unwrap();
        let e = LocalElection::new(open(dir.path()));
        let a = e.campaign("db", "db/0").unwrap();
        e.resign(&a).unwrap();
        let b = e.campaign("db", "db/0").unwrap();
        e.resign(&a).unwrap();
        assert_eq!(e.observe("db").unwrap(), Some(b));
    }

    #[test]
    fn wait_free_returns_when_the_term_ends() {
        let dir = tempfile::tempdir().unwrap();
        let e = Arc::new(LocalElection::new(open(dir.path())));
        // Free: at once.
        e.wait_free("db", Duration::from_secs(30)).unwrap();
        let a = e.campaign("db", "db/0").unwrap();
        assert_eq!(e.valid_until(&a), None);
        let waiter = {
            let e = e.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                e.wait_free("db", Duration::from_secs(30)).unwrap();
                t.elapsed()
            })
        };
        // Whether the waiter already waits or not, it returns once the term is over.
        e.resign(&a).unwrap();
        let waited = waiter.join().unwrap();
        assert!(waited < Duration::from_secs(30), "{waited:?}");
        // Held: the timeout.
        let _b = e.campaign("db", "db/1").unwrap();
        let t = Instant::now();
        e.wait_free("db", Duration::from_millis(100)).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(100));
    }
}
