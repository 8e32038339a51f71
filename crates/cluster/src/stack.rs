//! The applied stack file and its revisions (see [`crate::keys`] for why revisions are keys
//! of their own rather than etcd's history).

use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, SortOrder, SortTarget, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::{Error, Etcd, Keys, error::bounded, error::bounded_read};

/// One applied stack file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackRevision {
    /// 1 for the first apply, then one more per apply that changed the file.
    pub revision: u64,
    /// The file's path as given to `apply`.
    pub file: String,
    /// Who applied it (`user@host`).
    pub by: String,
    /// When, ms since the Unix epoch.
    pub applied_at_ms: u64,
    /// The file's text.
    pub text: String,
    /// etcd's revision of the write (0 until read back).
    #[serde(default, skip_serializing)]
    pub etcd_revision: i64,
}

impl StackRevision {
    pub(crate) fn parse(kv: &KeyValue) -> Result<Self, Error> {
        let mut s: StackRevision =
            serde_json::from_slice(kv.value()).map_err(|e| Error::BadRecord {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                detail: e.to_string(),
            })?;
        s.etcd_revision = kv.mod_revision();
        Ok(s)
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A new revision was stored.
    Stored(StackRevision),
    /// The text is the applied one already: nothing was stored.
    Unchanged(StackRevision),
}

/// The applied stack, if any.
pub async fn current(etcd: &Etcd, keys: &Keys) -> Result<Option<StackRevision>, Error> {
    let resp = bounded_read("read the stack", etcd.timeout, || {
        let mut client = etcd.client.clone();
        async move { client.get(keys.stack(), None).await }
    })
    .await?;
    resp.kvs().first().map(StackRevision::parse).transpose()
}

/// Stores `text` (already checked by the caller, as `bulwark check` does) as the next
/// revision, atomically with the current key; refused with [`Error::Conflict`] if another
/// apply got in between.
pub async fn apply(
    etcd: &Etcd,
    keys: &Keys,
    file: &str,
    by: &str,
    text: &str,
) -> Result<Applied, Error> {
    let now = current(etcd, keys).await?;
    if let Some(c) = now.as_ref().filter(|c| c.text == text) {
        return Ok(Applied::Unchanged(c.clone()));
    }
    let next = StackRevision {
        revision: now.as_ref().map_or(1, |c| c.revision + 1),
        file: file.to_owned(),
        by: by.to_owned(),
        applied_at_ms: crate::now_ms(),
        text: text.to_owned(),
        etcd_revision: 0,
    };
    let value = serde_json::to_vec(&next).expect("a stack revision serializes");
    let seen = now.as_ref().map_or(0, |c| c.etcd_revision);
    let txn = Txn::new()
        .when([Compare::mod_revision(keys.stack(), CompareOp::Equal, seen)])
        .and_then([
            TxnOp::put(keys.stack(), value.clone(), None),
            TxnOp::put(keys.stack_revision(next.revision), value, None),
        ]);
    let mut client = etcd.client.clone();
    let resp = bounded("store the stack", etcd.timeout, client.txn(txn)).await?;
    if !resp.succeeded() {
        return Err(Error::Conflict);
    }
    let etcd_revision = resp.header().map_or(0, |h| h.revision());
    Ok(Applied::Stored(StackRevision {
        etcd_revision,
        ..next
    }))
}

/// Every stored revision, oldest first.
pub async fn history(etcd: &Etcd, keys: &Keys) -> Result<Vec<StackRevision>, Error> {
    let options = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Key, SortOrder::Ascend);
    let resp = bounded_read("read the stack's history", etcd.timeout, || {
        let (mut client, options) = (etcd.client.clone(), options.clone());
        async move { client.get(keys.stack_revisions(), Some(options)).await }
    })
    .await?;
    resp.kvs().iter().map(StackRevision::parse).collect()
}
