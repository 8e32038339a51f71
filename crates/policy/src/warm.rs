//! Warm restarts: whether a replica's slot is restored from its checkpoint or started cold,
//! and when a warm replica is checkpointed. The I/O (CRIU, the image on disk) is the
//! runtime's; what follows from what it found is decided here.

use std::time::Duration;

/// What a checkpoint was taken from, and what a start would run: a restore is only right
/// when both are the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// A hash of the service's settings that shape the process (command, environment,
    /// secrets, directory, probes, resources, `[warm]`).
    pub spec: u64,
    /// A hash of the program's file identity (device, inode, size, modification time).
    pub binary: u64,
}

/// How the next incarnation of a warm slot starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From the checkpoint.
    Restore,
    /// Cold, as without `[warm]`; the reason, if there was a checkpoint to refuse.
    Cold(Option<Cold>),
}

/// Why a checkpoint is not restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cold {
    /// The service's spec changed since (a reload).
    SpecChanged,
    /// The program's binary changed since.
    BinaryChanged,
    /// This is the slot's first start: nothing of it has run to be restored.
    FirstStart,
}

impl std::fmt::Display for Cold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cold::SpecChanged => "the service's spec changed since the checkpoint",
            Cold::BinaryChanged => "the program's binary changed since the checkpoint",
            Cold::FirstStart => "a first start is always cold",
        })
    }
}

/// Restore when the slot has a checkpoint taken under the stamp a start would run, and this
/// is a restart (a first start, also after a scale-up or bulwark's own start, is cold).
pub fn start(checkpoint: Option<Stamp>, now: Stamp, restart: bool) -> Start {
    match checkpoint {
        None => Start::Cold(None),
        Some(_) if !restart => Start::Cold(Some(Cold::FirstStart)),
        Some(c) if c.spec != now.spec => Start::Cold(Some(Cold::SpecChanged)),
        Some(c) if c.binary != now.binary => Start::Cold(Some(Cold::BinaryChanged)),
        Some(_) => Start::Restore,
    }
}

/// When to checkpoint an incarnation that became ready `ready_for` ago: `None` when it has
/// a checkpoint already (restored from one, or taken), else how long until it has been
/// ready for `after`.
pub fn checkpoint_in(
    has_checkpoint: bool,
    ready_for: Duration,
    after: Duration,
) -> Option<Duration> {
    (!has_checkpoint).then(|| after.saturating_sub(ready_for))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Stamp = Stamp { spec: 1, binary: 2 };

    #[test]
    fn a_restart_restores_only_a_checkpoint_of_the_same_spec_and_binary() {
        assert_eq!(start(Some(A), A, true), Start::Restore);
        assert_eq!(start(None, A, true), Start::Cold(None));
        assert_eq!(
            start(Some(A), A, false),
            Start::Cold(Some(Cold::FirstStart))
        );
        let spec = Stamp { spec: 9, ..A };
        assert_eq!(
            start(Some(A), spec, true),
            Start::Cold(Some(Cold::SpecChanged))
        );
        let binary = Stamp { binary: 9, ..A };
        assert_eq!(
            start(Some(A), binary, true),
            Start::Cold(Some(Cold::BinaryChanged))
        );
    }

    #[test]
    fn a_checkpoint_is_taken_once_after_the_warm_up() {
        let s = Duration::from_secs;
        assert_eq!(checkpoint_in(false, s(0), s(2)), Some(s(2)));
        assert_eq!(checkpoint_in(false, s(3), s(2)), Some(s(0)));
        assert_eq!(checkpoint_in(true, s(0), s(2)), None);
    }
}
