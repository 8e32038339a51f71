//! `[services.NAME.warm]`: warm restarts, a replica restored from a checkpoint of an
//! earlier, warmed-up one instead of a cold start. Declared here with its domain types.

use std::time::Duration;

use crate::schema::{choice, duration};
use crate::section;

section! {
    /// Warm restarts (like `podman container checkpoint` / `restore`, done by bulwark
    /// itself): once a replica has been ready for `after`, it is checkpointed once with
    /// CRIU while it keeps running (it is frozen for the tens of milliseconds the dump
    /// takes; open TCP connections are restored closed). When that replica's process dies
    /// and is restarted, it is restored from the checkpoint instead of started cold: same
    /// pid, port, memory and warm caches, so it is ready in milliseconds rather than after
    /// its start-up time. A restore that fails for any reason is a `warm_restore_failed`
    /// event and a cold start. The checkpoint is dropped when the service's spec (on
    /// reload) or its program's binary changes. Process driver only (not with
    /// `[container]` or `[notify]`); needs root and CRIU 4 (`BULWARK_CRIU`, else
    /// /usr/local/lib/bulwark/criu/criu as `scripts/criu/install` builds it, else `criu`
    /// on PATH); `bulwark check` says which it found.
    pub(crate) struct WarmTable => #[derive(Debug, Clone, Copy, PartialEq, Eq)] pub struct Warm: Default {
        /// How replicas are restored: `criu` (Checkpoint/Restore In Userspace).
        restore: Restore = choice(Restore::CHOICES), r#""criu""#;
        /// How long a replica must have been ready (warming its caches, JIT, pools)
        /// before its checkpoint is taken.
        after: Duration = duration(), r#""1s""#;
    }
}

crate::spelled! {
    /// What restores a warm replica.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub enum Restore {
        /// CRIU: `criu dump --leave-running`, then `criu restore`.
        #[default]
        Criu = "criu",
    }
}
