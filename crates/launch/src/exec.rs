//! One bounded run of a short command: exec probes and exec alert sinks.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::task::JoinHandle;

use crate::reap::{exited, signal_group};

/// How a [`run_exec`] ended.
#[derive(Debug)]
pub struct ExecOutcome {
    /// The leader's exit status; `None` when it ran out of time (and the group was killed).
    pub status: Option<ExitStatus>,
    /// The first `capture` bytes of each stream (the rest is read and dropped).
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutcome {
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// `Ok` for exit 0; otherwise what went wrong in words: the time it was given (`limit`)
    /// ran out, or its exit status with the tail of its stderr.
    pub fn passed(&self, limit: Duration) -> Result<(), String> {
        match self.status {
            None => Err(format!(
                "still running after {}; its process group was killed",
                humantime::format_duration(limit)
            )),
            Some(s) if s.success() => Ok(()),
            Some(s) => {
                let tail = String::from_utf8_lossy(&self.stderr);
                let tail = tail.trim();
                Err(if tail.is_empty() {
                    format!("{s}")
                } else {
                    format!("{s}: {tail}")
                })
            }
        }
    }
}

/// Kills the group if the run is abandoned (its future dropped) before it is settled.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            signal_group(pid, Signal::SIGKILL);
        }
    }
}

/// Runs `cmd` (through [`crate::spawn`]: its own process group, parent-death signal) with
/// `stdin` written to it, for at most `limit`. The stdin write is inside the limit, so a
/// command that never reads its input cannot hold us. When the leader exits, whatever it
/// left running in its group is killed; when the limit passes, the whole group is killed.
/// Either way the group is signalled before the leader is reaped (no pid reuse).
///
/// Output is drained for the whole run (a chatty command never blocks on a full pipe) and
/// the first `capture` bytes of each stream are kept.
pub async fn run_exec(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    limit: Duration,
    capture: usize,
) -> io::Result<ExecOutcome> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = crate::spawn(cmd).await?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("the process ended before it could be watched"))?;
    let mut guard = GroupGuard(Some(pid));
    let stdout = child.stdout.take().map(|r| tokio::spawn(drain(r, capture)));
    let stderr = child.stderr.take().map(|r| tokio::spawn(drain(r, capture)));
    let input = child.stdin.take();
    let finished = tokio::time::timeout(limit, async {
        if let (Some(mut w), Some(bytes)) = (input, stdin) {
            // A command may exit without reading (EPIPE): that is its business.
            let _ = w.write_all(bytes).await;
            // `w` is dropped here: the command sees the end of its input.
        }
        exited(pid).await
    })
    .await;
    // The leader has exited (still unreaped) or ran out of time: kill the group now, while
    // its id is still ours, then reap.
    signal_group(pid, Signal::SIGKILL);
    guard.0 = None;
    let status = child.wait().await?;
    if let Ok(Err(e)) = finished {
        return Err(e);
    }
    Ok(ExecOutcome {
        status: finished.is_ok().then_some(status),
        stdout: collect(stdout).await,
        stderr: collect(stderr).await,
    })
}

async fn drain(mut r: impl AsyncRead + Unpin, capture: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = capture.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// The group is dead, so the pipes close at once — unless something escaped the group
/// (a `setsid` daemon) and holds them: then give up after a moment.
async fn collect(reader: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    let Some(mut h) = reader else {
        return Vec::new();
    };
    match tokio::time::timeout(Duration::from_millis(500), &mut h).await {
        Ok(Ok(v)) => v,
        _ => {
            h.abort();
            Vec::new()
        }
    }
}
