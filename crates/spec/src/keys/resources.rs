//! `[services.NAME.resources]`: what the kernel lets each replica use, through cgroups.
//! (`on_oom` and `priority`, the service's QoS keys, are in `[services.NAME]`.)

use super::remedy::size;
use crate::schema::Omitted::Optional;
use crate::schema::{int, number, text};
use crate::section;

/// The smallest `memory` limit: below it a replica cannot even start its runtime, and the
/// kernel's OOM killer would be all it ever meets.
pub(crate) const MIN_MEMORY: u64 = 4 << 20;

section! {
    /// Limits of each replica of the service, enforced by the kernel: bulwark puts every
    /// replica in cgroups of its own (v1 or v2, detected at start; `bulwark up` must be
    /// able to write them, which usually means root). `bulwark status` shows each
    /// replica's limits and usage.
    pub(crate) struct ResourcesTable {
        /// Memory of the replica's processes (page cache included), such as `"64MiB"` or
        /// `"1GiB"`; at least 4 MiB. Past it the kernel's OOM killer kills a process of
        /// the replica, reported as `oom-killed`; `on_oom` says what follows.
        memory: u64 = text("a size such as \"64MiB\" or \"1GiB\"", memory), Optional("no limit");
        /// CPU time, in cores (`0.2`: a fifth of one core), as a CFS quota over a 100 ms
        /// period: a busy replica is paused for the rest of each period.
        cpu: f64 = number(0.001, 1024.0).unit("cores"), Optional("no limit");
        /// Processes and threads the replica may have at once; a fork past it fails.
        pids: u32 = int(1, 4_194_304), Optional("no limit");
    }
}

/// A size of at least [`MIN_MEMORY`].
pub(crate) fn memory(s: &str) -> Result<u64, String> {
    match size(s)? {
        b if b < MIN_MEMORY => Err(" (at least \"4MiB\")".to_owned()),
        b => Ok(b),
    }
}
