//! `[services.NAME.notify]`: the replica speaks systemd's notify protocol (sd_notify(3)) on
//! the socket named by `NOTIFY_SOCKET`.

use std::time::Duration;

use crate::schema::{boolean, duration};
use crate::section;

section! {
    /// The replica speaks systemd's notify protocol (sd_notify(3)): bulwark gives each
    /// replica its own datagram socket in `NOTIFY_SOCKET` and accepts messages only from
    /// the replica's process group (with `[container]`: the socket is mounted at
    /// `/dev/bulwark/notify.sock` inside, and messages count only from the processes in the
    /// container's cgroup). `READY=1` makes it ready (together with the readiness
    /// probe, if any: both must pass), `RELOADING=1` unready until the next `READY=1`,
    /// `STOPPING=1` takes it out of the balancer for good, `STATUS=` is shown in
    /// `bulwark status` (up to 256 bytes), `WATCHDOG=1` feeds the watchdog.
    pub(crate) struct NotifyTable => #[derive(Debug, Clone, Copy, PartialEq, Eq)] pub struct Notify: Default {
        /// A replica counts as ready only after it sent `READY=1` (and passed its readiness
        /// probe, if any); `false` keeps the socket for `STATUS=`, `STOPPING=1` and the
        /// watchdog only.
        ready: bool = boolean(), "true";
        /// Liveness pushed by the replica: it must send `WATCHDOG=1` at least this often
        /// (it is told so in `WATCHDOG_USEC`, as systemd does; send at half of it), or it
        /// is restarted per its restart rules with a `probe_failed` event of probe
        /// `watchdog` ("watchdog timeout"); `WATCHDOG=trigger` restarts it at once. The
        /// first interval starts with `READY=1` (at spawn with `ready = false`). "0s" is
        /// no watchdog; otherwise at least 50ms.
        watchdog: Duration = duration(), r#""0s""#;
    }
}
