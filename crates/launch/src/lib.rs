//! Process launching for bulwark: every child process (replica, exec probe, exec alert
//! sink) is spawned here.
//!
//! Why a crate of its own: `PR_SET_PDEATHSIG` fires when the *thread* that spawned a child
//! exits, not when the process does. Tokio retires threads on its own schedule (a worker
//! that enters `block_in_place` is replaced, an idle blocking-pool thread ends after 10 s),
//! so a child spawned from whatever thread an async task happened to run on could be
//! killed with SIGKILL at a random later moment. [`spawn`] hands every spawn to one
//! dedicated thread that lives as long as the process, so the death signal means "bulwark
//! died" and nothing else.
//!
//! Invariants:
//! - every child leads its own session (so its own process group) and carries
//!   `PR_SET_PDEATHSIG = SIGKILL`;
//! - a child joins its cgroups ([`cgroup`]) and gets its `oom_score_adj` itself, before
//!   exec ([`spawn_placed`]): it never runs a line of its program outside its limits;
//! - no function here blocks a runtime worker: the spawn runs on the launcher thread and
//!   callers await a reply;
//! - a process group is signalled only while its leader is unreaped (alive or a zombie),
//!   so its id cannot have been reused by an unrelated process ([`exited`] waits for an
//!   exit without reaping);
//! - [`reap_orphans`] reaps only zombies this crate did not spawn and nobody [`claim`]ed,
//!   so it never steals an exit status from tokio or from a claimer (a process CRIU
//!   restored as our child).

pub mod cgroup;
mod exec;
mod reap;
mod spawner;

pub use exec::{ExecOutcome, run_exec};
pub use reap::{
    Claim, NofileLimit, become_subreaper, claim, exited, raise_nofile_limit, reap_claimed,
    reap_orphans, signal_group,
};
pub use spawner::{Placement, protect_self, spawn, spawn_placed};
