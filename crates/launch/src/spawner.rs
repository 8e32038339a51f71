//! The launcher thread: the one thread every child process is forked from.

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Spawns `cmd` from the launcher thread, as the leader of a new process group with
/// `PR_SET_PDEATHSIG = SIGKILL`, registered with the caller's tokio runtime (pipes and
/// child reaping work as for a `Command::spawn` made on the caller's thread).
///
/// Must be called from within a tokio runtime. Never blocks the calling thread.
pub async fn spawn(mut cmd: Command) -> io::Result<Child> {
    cmd.process_group(0);
    set_parent_death_signal(&mut cmd);
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
