//! The launcher thread: the one thread every child process is forked from.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};

use tokio::process::{Child, Command};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::reap;

type Job = Box<dyn FnOnce() + Send>;

/// The launcher's queue. The thread behind it is started on first use and never ends (the
/// sender lives in a static), so a child's parent-death signal fires only when the whole
/// process dies.
static LAUNCHER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

/// The soft `RLIMIT_NOFILE` bulwark started with, restored in children (see
/// [`crate::raise_nofile_limit`]). `u64::MAX`: not raised, nothing to restore.
pub(crate) static CHILD_NOFILE: AtomicU64 = AtomicU64::new(u64::MAX);

/// Set once bulwark lowered its own `oom_score_adj` ([`protect_self`]): children must not
/// inherit it, so each is given its own value (0 unless its [`Placement`] says otherwise).
static SELF_PROTECTED: AtomicBool = AtomicBool::new(false);

/// Where a child goes before it runs its program, done by the child itself between fork
/// and exec. Joining a cgroup there, rather than writing the pid into `cgroup.procs` after
/// the spawn, means no instruction of the program (and no process it forks) ever runs
/// outside the replica's limits.
#[derive(Debug, Default)]
pub struct Placement {
    /// `cgroup.procs` files to write the child into.
    pub cgroup_procs: Vec<CString>,
    /// Its `/proc/self/oom_score_adj`; `None`: 0 when bulwark protected itself, else
    /// inherited.
    pub oom_score_adj: Option<i32>,
    /// Descriptors of ours the child gets, as (ours, its number): `dup2`ed there, so they
    /// stay open across exec (CRIU's `--inherit-fd`). Ours must stay open until the spawn
    /// returns, and no target may be another pair's source.
    pub inherit: Vec<(RawFd, RawFd)>,
}

/// Lowers bulwark's own `oom_score_adj` to `adj` (negative values need root or
/// `CAP_SYS_RESOURCE`), so the kernel's OOM killer picks a replica before the supervisor.
/// Every child spawned afterwards is set back to its own value. Blocking file I/O.
pub fn protect_self(adj: i32) -> io::Result<()> {
    std::fs::write("/proc/self/oom_score_adj", adj.to_string())?;
    SELF_PROTECTED.store(true, Ordering::Relaxed);
    Ok(())
}

fn submit(job: Job) -> io::Result<()> {
    let mut launcher = LAUNCHER.lock().unwrap_or_else(|e| e.into_inner());
    if launcher.is_none() {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("bulwark-launcher".into())
            .spawn(move || {
                for job in rx {
                    // A panicking job must not take the launcher (and with it the parent
                    // of every child) down.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
            })?;
        *launcher = Some(tx);
    }
    launcher
        .as_ref()
        .and_then(|tx| tx.send(job).ok())
        .ok_or_else(|| io::Error::other("the launcher thread is gone"))
}

/// Spawns `cmd` from the launcher thread, as the leader of a new session (so of a new
/// process group) with `PR_SET_PDEATHSIG = SIGKILL`, registered with the caller's tokio runtime (pipes and
/// child reaping work as for a `Command::spawn` made on the caller's thread). The child
/// inherits no descriptor but its stdio (and, from [`spawn_placed`], those its
/// [`Placement`] hands it), whatever bulwark itself inherited.
///
/// Must be called from within a tokio runtime. Never blocks the calling thread.
pub async fn spawn(cmd: Command) -> io::Result<Child> {
    spawn_placed(cmd, Placement::default()).await
}

/// [`spawn`], with the child placed in its cgroups and given its `oom_score_adj` before
/// exec. A cgroup it cannot join fails the spawn with the operating system's error.
pub async fn spawn_placed(mut cmd: Command, placement: Placement) -> io::Result<Child> {
    new_session(&mut cmd);
    set_parent_death_signal(&mut cmd);
    let kept = placement
        .inherit
        .iter()
        .map(|&(_, theirs)| theirs)
        .collect();
    place(&mut cmd, placement);
    close_strays(&mut cmd, kept);
    let handle = Handle::try_current().map_err(io::Error::other)?;
    let (tx, rx) = oneshot::channel();
    submit(Box::new(move || {
        let _runtime = handle.enter();
        // Holding the table of our children across the spawn means the orphan reaper can
        // never see this child as a zombie that is not ours.
        let mut ours = reap::ours();
        let spawned = cmd.spawn();
        if let Ok(child) = &spawned
            && let Some(pid) = child.id()
        {
            ours.insert(pid, reap::start_time(pid).unwrap_or(0));
        }
        drop(ours);
        // If the caller gave up waiting, the child is dropped here, inside the runtime
        // context: kill_on_drop and tokio's orphan reaping apply as usual.
        let _ = tx.send(spawned);
    }))?;
    rx.await
        .map_err(|_| io::Error::other("the launcher thread dropped a spawn request"))?
}

/// Makes the child the leader of a session (and of a process group) of its own, as systemd
/// and Nomad start a service: no terminal of bulwark's, no signal meant for bulwark's
/// group, and a session whose leader is the child itself. A replica left in whatever
/// session bulwark was started in can belong to a session whose leader lies outside its
/// pid namespace (a CI job in a container, started by an agent outside it): `criu dump`
/// refuses such a process ("a session leader ... is outside of its pid namespace").
#[allow(unsafe_code)]
fn new_session(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe; the closure allocates nothing and touches no
    // lock. Registered first, before any other pre_exec of ours; std's own `process_group`
    // is not used (a group leader cannot call setsid).
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    let nofile = CHILD_NOFILE.load(Ordering::Relaxed);
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // async-signal-safe functions (prctl, getppid, getrlimit, setrlimit); it allocates
    // nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // bulwark may have died between fork and prctl; then nobody would kill us.
            if libc::getppid() != parent {
                return Err(io::Error::other(
                    "bulwark exited while starting the process",
                ));
            }
            // Give the child the file limit bulwark was started with: programs that loop
            // over every possible descriptor, or use select(2), expect the usual 1024.
            if nofile != u64::MAX {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                    lim.rlim_cur = (nofile as libc::rlim_t).min(lim.rlim_max);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                }
            }
            Ok(())
        });
    }
}

#[allow(unsafe_code)]
fn place(cmd: &mut Command, placement: Placement) {
    let adj = placement
        .oom_score_adj
        .or(SELF_PROTECTED.load(Ordering::Relaxed).then_some(0))
        .map(|a| CString::new(a.to_string()).unwrap_or_default());
    let procs = placement.cgroup_procs;
    let inherit = placement.inherit;
    if procs.is_empty() && adj.is_none() && inherit.is_empty() {
        return;
    }
    const ADJ_FILE: &std::ffi::CStr = c"/proc/self/oom_score_adj";
    // SAFETY: runs in the child between fork and exec; calls only open, write, close and
    // dup2 (async-signal-safe) on buffers made before the fork; allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for &(ours, theirs) in &inherit {
                if libc::dup2(ours, theirs) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for file in &procs {
                // "0" moves the writer itself.
                write_file(file, b"0")?;
            }
            if let Some(adj) = &adj {
                // Lowering below bulwark's own value needs privileges bulwark may lack;
                // then the child keeps what it inherited. Not a reason to fail the start.
                let _ = write_file(ADJ_FILE, adj.as_bytes());
            }
            Ok(())
        });
    }
}

/// Marks every descriptor of the child above stderr close-on-exec but those in `kept` (put
/// there by [`place`]): a child gets its stdio and what bulwark hands it, never what bulwark
/// inherited without close-on-exec from whoever started it (a CI agent's socket, a shell's
/// stray pipe). A stray listening socket kept a replica's old port bound; one whose peer is
/// outside the replica made `criu dump` refuse the replica; a stray pipe's reader waits for
/// an EOF that comes only when every replica holding it is gone.
#[allow(unsafe_code)]
fn close_strays(cmd: &mut Command, mut kept: Vec<RawFd>) {
    kept.retain(|fd| *fd > 2);
    kept.sort_unstable();
    kept.dedup();
    // SAFETY: runs in the child between fork and exec; calls only close_range, getrlimit
    // and fcntl (async-signal-safe) and reads a vector made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let mut from = 3;
            // Sorted, distinct and above 2: each is at or past `from`.
            for &fd in &kept {
                if fd > from {
                    cloexec_range(from, fd - 1);
                }
                from = fd + 1;
            }
            cloexec_range(from, RawFd::MAX);
            Ok(())
        });
    }
}

/// Sets close-on-exec on descriptors `first..=last` (open or not), in the child.
#[allow(unsafe_code)]
unsafe fn cloexec_range(first: RawFd, last: RawFd) {
    // SAFETY: plain system calls on integers.
    unsafe {
        let (lo, hi) = (first as libc::c_uint, last as libc::c_uint);
        if libc::syscall(libc::SYS_close_range, lo, hi, libc::CLOSE_RANGE_CLOEXEC) == 0 {
            return;
        }
        // Kernels before 5.11: one at a time, up to the file limit.
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let end = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur.min(last as libc::rlim_t + 1)
        } else {
            1024
        };
        for fd in first..end.min(RawFd::MAX as libc::rlim_t) as RawFd {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

/// open + write + close, for the child before exec.
#[allow(unsafe_code)]
unsafe fn write_file(path: &std::ffi::CStr, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated and `bytes` valid for its length.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        let err = (n < 0).then(io::Error::last_os_error);
        libc::close(fd);
        err.map_or(Ok(()), Err)
    }
}
