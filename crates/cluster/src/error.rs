/// What can go wrong talking to etcd. Each variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No etcd endpoint answered within the timeout.
    #[error(
        "cannot reach etcd at {urls} within {timeout_ms} ms: {detail}; check that etcd runs \
         there and that --etcd lists its client URLs (http://HOST:2379)"
    )]
    Unreachable {
        /// The URLs tried, comma-separated.
        urls: String,
        /// The timeout that ran out.
        timeout_ms: u64,
        /// The last error seen, in words.
        detail: String,
    },
    /// A URL given with `--etcd` is not one.
    #[error("--etcd: `{url}` is not an etcd client URL ({detail}); write http://HOST:2379")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why it is refused.
        detail: String,
    },
    /// Another live agent holds this node name.
    #[error(
        "node `{node}` is already registered by another live agent (its lease {lease:x}); \
         give this one another --node, or stop the other"
    )]
    NodeTaken {
        /// The node name.
        node: String,
        /// The other agent's lease.
        lease: i64,
    },
    /// A name (node, cluster, label) that cannot be part of a key.
    #[error("{what} `{name}` is not allowed: {why}")]
    BadName {
        /// Which kind of name.
        what: &'static str,
        /// The name as given.
        name: String,
        /// Why, and what is allowed.
        why: &'static str,
    },
    /// A record in etcd that this version cannot read (written by another program?).
    #[error("cannot read {key} in etcd: {detail}")]
    BadRecord {
        /// The key.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Someone else applied a stack at the same moment; nothing was stored.
    #[error("another apply changed the stack at the same time; run the command again")]
    Conflict,
    /// An etcd call failed.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// An etcd call did not answer in time.
    #[error("etcd did not answer `{call}` within {timeout_ms} ms")]
    Timeout {
        /// The call, in words.
        call: &'static str,
        /// The timeout.
        timeout_ms: u64,
    },
}

/// `fut`, or [`Error::Timeout`] after `timeout`.
pub(crate) async fn bounded<T>(
    call: &'static str,
    timeout: std::time::Duration,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(Error::from),
        Err(_) => Err(Error::Timeout {
            call,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

/// A read, tried again after a failure (a leader election, a member that went away: the
/// next try goes to another) until `timeout` has passed; each try gets a third of it (at
/// least 1 s), so one silent member cannot use the whole budget. Only for calls that are
/// safe to repeat.
pub(crate) async fn bounded_read<T, F, Fut>(
    call: &'static str,
    timeout: std::time::Duration,
    mut attempt: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let per_try = (timeout / 3).max(std::time::Duration::from_secs(1));
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let result = bounded(call, per_try.min(left), attempt()).await;
        match result {
            Ok(v) => return Ok(v),
            Err(e) if left <= per_try => return Err(e),
            Err(e) => tracing::debug!(call, "retrying after: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
