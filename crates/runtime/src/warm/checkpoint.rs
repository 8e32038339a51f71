//! When a warm incarnation is checkpointed, as a future the replica task polls.

use std::time::Duration;

use policy::warm::Stamp;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Dumped, Slot};

/// When a warm incarnation is checkpointed: once it has been ready for `after`, unless its
/// slot has a checkpoint already. Polled in the replica task's `select!`.
pub(crate) struct Checkpoint {
    state: State,
    after: Duration,
    job: Option<(Slot, u32, u16, Stamp)>,
}

enum State {
    /// Nothing to do (no `[warm]`, a checkpoint exists, or it was taken or tried).
    Off,
    /// Waiting for the replica to be ready.
    Waiting,
    Due(Instant),
    Dumping(JoinHandle<Result<Dumped, String>>),
}

impl Checkpoint {
    pub fn off() -> Checkpoint {
        Checkpoint {
            state: State::Off,
            after: Duration::ZERO,
            job: None,
        }
    }

    /// A checkpoint of `pid` into `slot` is wanted once it has been ready for `after`.
    pub fn wanted(slot: Slot, pid: u32, port: u16, stamp: Stamp, after: Duration) -> Checkpoint {
        Checkpoint {
            state: State::Waiting,
            after,
            job: Some((slot, pid, port, stamp)),
        }
    }

    pub fn ready(&mut self) {
        if matches!(self.state, State::Waiting)
            && let Some(wait) = policy::warm::checkpoint_in(false, Duration::ZERO, self.after)
        {
            self.state = State::Due(Instant::now() + wait);
        }
    }

    /// Not ready (any more): the warm-up starts again at the next ready.
    pub fn unready(&mut self) {
        if matches!(self.state, State::Due(_)) {
            self.state = State::Waiting;
        }
    }

    /// The dump's result, once it is due and done; pending forever otherwise.
    ///
    /// # Cancel safety
    /// Safe: dropped while waiting, the due time stays; dropped while dumping, the dump
    /// goes on in its own task and the next call awaits it.
    pub async fn next(&mut self) -> Result<Dumped, String> {
        loop {
            match &mut self.state {
                State::Due(at) => {
                    tokio::time::sleep_until(*at).await;
                    match self.job.take() {
                        Some((slot, pid, port, stamp)) => {
                            self.state = State::Dumping(slot.dump_detached(pid, port, stamp));
                        }
                        None => self.state = State::Off,
                    }
                }
                State::Dumping(h) => {
                    let r = h.await.map_err(|e| e.to_string()).and_then(|r| r);
                    self.state = State::Off;
                    return r;
                }
                State::Off | State::Waiting => std::future::pending::<()>().await,
            }
        }
    }
}
