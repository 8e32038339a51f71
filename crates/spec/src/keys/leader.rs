//! `[services.NAME.leader]`: one replica of the service is the leader, the others are
//! standbys (Patroni's model, on one machine). Declared here with its domain types.

use std::path::PathBuf;
use std::time::Duration;

use crate::schema::Omitted::Optional;
use crate::schema::{choice, command, duration, text};
use crate::section;

section! {
    /// Exactly one replica at a time is the leader, the others are standbys. The leader
    /// holds a fencing token, a number greater than every token before it (kept in the
    /// journal, so a restart of bulwark never hands one out again), which it finds in
    /// its token file (`BULWARK_FENCING_TOKEN_FILE`, rewritten on every change of role:
    /// `BULWARK_ROLE=leader` and `BULWARK_FENCING_TOKEN=N` lines, or `standby` and an
    /// empty token) and in the `Bulwark-Fencing-Token` header of the requests the proxy
    /// sends it. When the leader's process exits, or it is not ready for longer than
    /// `failover_after`, it is demoted first (`demote` runs, it leaves leader routing),
    /// then the standby ready the longest is promoted with a new token (`promote` runs
    /// before the proxy sends it leader traffic). A replica that comes back is a standby.
    pub(crate) struct LeaderTable {
        /// Run when a replica becomes the leader, in the service's context (environment
        /// and working directory, `{index}`, `{port}` and `{addr}` of that replica) with
        /// `BULWARK_ROLE=leader` and `BULWARK_FENCING_TOKEN`. A promotion that fails
        /// (non-zero exit, or past `command_timeout`) leaves that incarnation a standby
        /// (a `promote_failed` event); the other ready standbys are tried first, and it
        /// is tried again 5 s later.
        promote: Vec<String> = command(), Optional("nothing is run");
        /// Run when the leader loses its role (also when its process is already gone,
        /// so that it comes back as a standby), with `BULWARK_ROLE=standby` and the
        /// token it held in `BULWARK_FENCING_TOKEN`. Its failure is logged; the failover
        /// goes on.
        demote: Vec<String> = command(), Optional("nothing is run");
        /// How long `promote` or `demote` may take before its process group is killed.
        command_timeout: Duration = duration().positive(), r#""10s""#;
        /// Where the proxy sends requests: `leader` all to the leader (with
        /// `protocol = "tcp"`: every connection); `writes` unsafe methods (anything but
        /// GET, HEAD, OPTIONS and TRACE) to the leader and the others to every ready
        /// replica (HTTP only); `all` to every ready replica as without `[leader]`. Needs
        /// `expose`.
        route: LeaderRoute = choice(LeaderRoute::CHOICES), Optional("\"leader\" when exposed");
        /// The leader is deposed once it has not been ready for this long (a hung or
        /// overloaded leader); an exited one at once.
        failover_after: Duration = duration().positive(), r#""3s""#;
        /// The token file, relative to the service's working directory (`{index}` is
        /// substituted, so replicas sharing a directory each have their own).
        token_file: String = text("a file path such as \"leader-{index}.env\"", file), Optional("<state directory>/leader/SERVICE-INDEX.env");
    }
}

fn file(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains('\0') {
        Err("; give a file name, or omit it for one in bulwark's state directory".into())
    } else {
        Ok(s.to_owned())
    }
}

crate::spelled! {
    /// Which replicas of a service with `[leader]` the proxy sends requests to.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum LeaderRoute {
        /// Every request to the leader.
        Leader = "leader",
        /// Unsafe methods to the leader, safe ones (GET, HEAD, OPTIONS, TRACE) to every
        /// ready replica.
        Writes = "writes",
        /// Every ready replica, as without `[leader]`.
        All = "all",
    }
}

/// `[services.NAME.leader]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// Run on the new leader, with its token.
    pub promote: Option<Vec<String>>,
    /// Run on the old leader as it loses the role.
    pub demote: Option<Vec<String>>,
    /// Bound on each of them.
    pub command_timeout: Duration,
    /// Where the proxy sends requests (`All` when the service is not exposed).
    pub route: LeaderRoute,
    /// An unready leader is deposed after this long.
    pub failover_after: Duration,
    /// The token file, resolved against the service's `cwd` (`{index}` not yet
    /// substituted); `None`: in bulwark's state directory.
    pub token_file: Option<PathBuf>,
}
