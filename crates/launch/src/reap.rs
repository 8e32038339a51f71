//! Waiting for exits without reaping, signalling groups, and reaping orphans.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};

/// Children spawned by [`crate::spawn`] (pid → start time in clock ticks since boot), which
/// the orphan reaper must leave to tokio. Entries are dropped once the pid is gone or names
/// a different process.
static OURS: Mutex<Option<HashMap<u32, u64>>> = Mutex::new(None);

pub(crate) struct Ours(MutexGuard<'static, Option<HashMap<u32, u64>>>);

impl Ours {
    pub fn insert(&mut self, pid: u32, start: u64) {
        self.0.get_or_insert_with(HashMap::new).insert(pid, start);
    }
    fn map(&mut self) -> &mut HashMap<u32, u64> {
        self.0.get_or_insert_with(HashMap::new)
    }
}

/// Children that are not [`crate::spawn`]'s but someone waits for all the same (a process
/// CRIU restored as our child: [`claim`]). The orphan reaper leaves them alone.
static CLAIMED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Keeps the orphan reaper off `pid` until dropped: for a child of ours that
/// [`crate::spawn`] did not start (CRIU's `--restore-sibling` makes the restored process
/// our child), claimed *before* it can exist, so its exit status is the claimer's to take
/// with [`reap_claimed`].
pub struct Claim(u32);

pub fn claim(pid: u32) -> Claim {
    CLAIMED.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
    Claim(pid)
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = claimed.iter().position(|&p| p == self.0) {
            claimed.swap_remove(i);
        }
    }
}

/// Reaps our claimed child `pid` once it has exited ([`exited`]: on SIGCHLD, no thread
/// held for the child's life) and returns its status; an error when it is not our child.
pub async fn reap_claimed(claim: &Claim) -> io::Result<std::process::ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    exited(claim.0).await?;
    let pid = Pid::from_raw(claim.0 as i32);
    // A zombie by now (or not our child: ECHILD), so this does not block.
    let status = loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::EINTR) => continue,
            other => break other?,
        }
    };
    match status {
        WaitStatus::Exited(_, code) => Ok(std::process::ExitStatus::from_raw((code & 0xff) << 8)),
        WaitStatus::Signaled(_, sig, _) => Ok(std::process::ExitStatus::from_raw(sig as i32)),
        other => Err(io::Error::other(format!(
            "unexpected wait status {other:?}"
        ))),
    }
}

pub(crate) fn ours() -> Ours {
    Ours(OURS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// State, parent and start time of a process, from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields restart after the last ')'.
    let mut f = s.rsplit_once(')')?.1.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    // Field 22 (starttime) is the 20th after the name.
    let start = f.nth(17)?.parse().ok()?;
    Some((state, ppid, start))
}

pub(crate) fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|(_, _, start)| start)
}

/// Sends `sig` to the process group led by `pid`. A group that is already gone is fine.
///
/// Call it only while the leader is unreaped (running, or a zombie as [`exited`] leaves
/// it): then the group id cannot name anybody else's processes.
pub fn signal_group(pid: u32, sig: Signal) {
    let _ = killpg(Pid::from_raw(pid as i32), sig);
}

/// Resolves once our child `pid` has exited, *without reaping it*: the process stays a
/// zombie, so its pid (and the id of the process group it leads) cannot be reused until
/// the caller reaps it with `Child::wait`. In between, the caller can kill what is left
/// of the group safely.
///
/// How: `waitid(P_PID, pid, WEXITED | WNOWAIT | WNOHANG)` looks at the child's state
/// without consuming it, checked once after subscribing to SIGCHLD and again after each
/// SIGCHLD (a child's exit always raises one), so an exit is never missed and nothing
/// polls on a timer. A pid that is not (or no longer) our child counts as exited.
///
/// Needs a tokio runtime with I/O and signals enabled.
pub async fn exited(pid: u32) -> io::Result<()> {
    let mut sigchld = signal(SignalKind::child())?;
    loop {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
        match waitid(Id::Pid(Pid::from_raw(pid as i32)), flags) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) | Err(Errno::ECHILD) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        if sigchld.recv().await.is_none() {
            return Err(io::Error::other("SIGCHLD stream ended"));
        }
    }
}

/// Makes this process the reaper of its descendants' orphans (`PR_SET_CHILD_SUBREAPER`):
/// what a replica double-forks re-parents to bulwark instead of init, so it stays inside
/// bulwark's view and, as PID 1 in a container, someone reaps it. Pair it with
/// [`reap_orphans`].
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// Reaps zombie children that [`crate::spawn`] did not start (orphans re-parented to us),
/// on every SIGCHLD. Children spawned through [`crate::spawn`] are left to tokio, which
/// owns their exit status. Each pass reads /proc and takes the lock the launcher holds
/// across a fork, so it runs on the blocking pool, never on a runtime worker.
///
/// A process that runs this must spawn every child through [`crate::spawn`].
pub fn reap_orphans() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut sigchld = signal(SignalKind::child()).ok();
        loop {
            let _ = tokio::task::spawn_blocking(reap_once).await;
            match &mut sigchld {
                // Every exit raises SIGCHLD (several may wake us once): no polling needed.
                Some(s) => {
                    if s.recv().await.is_none() {
                        return;
                    }
                }
                None => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    })
}

/// One pass of the orphan reaper; returns how many it reaped.
pub(crate) fn reap_once() -> usize {
    let me = std::process::id();
    let mut ours = ours();
    let map = ours.map();
    map.retain(|&pid, start| start_time(pid).is_some_and(|s| s == *start));
    let mut reaped = 0;
    for pid in children(me) {
        let Some((state, ppid, start)) = stat(pid) else {
            continue;
        };
        if state != 'Z' || ppid != me || map.get(&pid) == Some(&start) {
            continue;
        }
        if CLAIMED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&pid)
        {
            continue;
        }
        if let Ok(s) = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG))
            && s != WaitStatus::StillAlive
        {
            reaped += 1;
        }
    }
    reaped
}

/// Our children: from `/proc/self/task/*/children` when the kernel has it, else a scan of
/// every process for our pid as parent.
fn children(me: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut listed = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(t.path().join("children")) {
                listed = true;
                found.extend(
                    list.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    if !listed && let Ok(dir) = std::fs::read_dir("/proc") {
        found.extend(
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&p| stat(p).is_some_and(|(_, ppid, _)| ppid == me)),
        );
    }
    found
}

/// What [`raise_nofile_limit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit bulwark started with (children get this one back).
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (capped by the kernel's `nr_open`
/// when the hard limit is unlimited). Children spawned afterwards get the original soft
/// limit back.
pub fn raise_nofile_limit() -> io::Result<NofileLimit> {
    let (before, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let ceiling = if hard == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20)
    } else {
        hard
    };
    let mut soft = before;
    if before < ceiling {
        setrlimit(Resource::RLIMIT_NOFILE, ceiling, hard)?;
        soft = ceiling;
        crate::spawner::CHILD_NOFILE.store(before, Ordering::Relaxed);
    }
    Ok(NofileLimit { before, soft, hard })
}
