//! bulwark's init: PID 1 of a container whose service keeps `init = true` (the default),
//! as tini is Docker's `--init`.
//!
//! Why one is needed: the kernel delivers to the first process of a pid namespace only the
//! signals it has a handler for (and SIGKILL from outside). A program written as an ordinary
//! process, with no SIGTERM handler (`bulwark demo`), would ignore the stop signal as PID 1
//! and only die by SIGKILL once the grace is over; and the orphans its children leave are
//! re-parented to PID 1, which a program that does not expect them never reaps.
//!
//! What it does: blocks the catchable signals, starts the program as its child, in a
//! process group of its own, then waits for signals with `sigwait` (a blocked signal is
//! delivered even to a PID 1 that has no handler). SIGCHLD reaps every zombie, the
//! child's and the orphans'; any other signal is passed on to the child's process group
//! (as `tini -g`). Once the child has exited, the init exits with its status, or 128 + the
//! signal that killed it (as a shell reports it); the kernel then kills what is left in
//! the namespace. Blocking and single-threaded: `main` picks it before any tokio runtime
//! starts, so PID 1 has one thread and no timers.
//!
//! How it gets into a container: the bundle bind-mounts bulwark's own binary read-only at
//! [`BINARY`], with the shared libraries bulwark itself has mapped beside it, and runs it
//! through its own dynamic loader with `--library-path` (see `InitFiles`), so a rootfs
//! that lacks bulwark's libraries (or has other versions of them) runs it too, and the
//! program's own library search is untouched.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// The argv\[1\] that makes `bulwark` the init: `bulwark container-init -- PROGRAM ARGS…`.
pub const ARG: &str = "container-init";

/// Where the init's files are inside the container.
pub const DIR: &str = "/.bulwark";

/// The bulwark binary inside the container.
pub const BINARY: &str = "/.bulwark/init";

/// Signals the kernel raises for a fault of the thread itself: blocking them would turn a
/// crash into a hang, so they keep their default action (as tini does).
const SYNCHRONOUS: [Signal; 7] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGTRAP,
    Signal::SIGSYS,
    Signal::SIGABRT,
];

/// The init's body; returns its exit status. `args` follow [`ARG`].
pub fn main(args: &[OsString]) -> u8 {
    let args = match args.split_first() {
        Some((dashes, rest)) if dashes == "--" => rest,
        _ => args,
    };
    let Some((program, program_args)) = args.split_first() else {
        eprintln!(
            "usage: bulwark {ARG} -- PROGRAM [ARGS...] (a container's PID 1, started by bulwark)"
        );
        return 2;
    };
    let mut signals = SigSet::empty();
    for s in Signal::iterator() {
        if !SYNCHRONOUS.contains(&s) && s != Signal::SIGKILL && s != Signal::SIGSTOP {
            signals.add(s);
        }
    }
    if let Err(e) = signals.thread_block() {
        eprintln!("bulwark init: cannot block signals: {e}");
        return 1;
    }
    let mut cmd = std::process::Command::new(program);
    cmd.args(program_args).process_group(0);
    // The child inherits the blocked mask (std resets SIGPIPE's disposition, not the mask):
    // unblocked before exec, so the program gets its signals as if started by a shell.
    // SAFETY: sigprocmask is async-signal-safe and the closure touches no shared memory.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || signals.thread_unblock().map_err(std::io::Error::from));
    }
    let child = cmd.spawn();
    let child = match child {
        Ok(c) => c.id() as i32,
        Err(e) => {
            eprintln!(
                "bulwark init: cannot run {}: {e}",
                program.to_string_lossy()
            );
            // As a shell says it: 127 not found, 126 found but not runnable.
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(status) = reap(child) {
                    return status;
                }
            }
            // The group is gone only once the child is, which SIGCHLD reports.
            Ok(sig) => {
                let _ = killpg(Pid::from_raw(child), sig);
            }
            Err(_) => {}
        }
    }
}

/// Reaps every zombie child; returns the exit status the init takes when `child` was
/// one of them.
fn reap(child: i32) -> Option<u8> {
    let mut status = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == child => {
                status = Some(code as u8);
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == child => {
                status = Some(128 + sig as u8);
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return status,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return status,
        }
    }
}

/// The host files the init runs from: bulwark's binary, and, for a dynamically linked
/// one, its loader and the libraries it has mapped (read from `/proc/self/maps` of `up`,
/// which runs the same binary, so the set is exactly what the init will load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InitFiles {
    binary: PathBuf,
    loader: Option<PathBuf>,
    libraries: Vec<PathBuf>,
}

impl InitFiles {
    /// The files of the running bulwark, whose binary is `binary`.
    pub fn of_this_process(binary: &Path) -> InitFiles {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        InitFiles::from_maps(binary, &maps)
    }

    /// The shared objects mapped in `maps` (the text of `/proc/PID/maps`): the loader is the
    /// one named `ld-*` (`ld-linux-x86-64.so.2`, `ld-musl-*.so.1`).
    fn from_maps(binary: &Path, maps: &str) -> InitFiles {
        let mut libraries: Vec<PathBuf> = Vec::new();
        for line in maps.lines() {
            // `address perms offset dev inode path`: the path is what follows the fifth field.
            let Some(path) = line.split_whitespace().nth(5) else {
                continue;
            };
            let path = Path::new(path);
            let is_object = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".so"));
            if path.is_absolute()
                && is_object
                && path != binary
                && !libraries.iter().any(|l| l == path)
            {
                libraries.push(path.to_owned());
            }
        }
        let loader = libraries
            .iter()
            .position(|l| {
                l.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("ld-"))
            })
            .map(|i| libraries.remove(i));
        InitFiles {
            binary: binary.to_owned(),
            loader,
            libraries,
        }
    }

    /// `(host file, path in the container)` for each bind mount, the binary first.
    pub fn mounts(&self) -> Vec<(PathBuf, String)> {
        let inside = |p: &Path| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            format!("{DIR}/{name}")
        };
        let mut out = vec![(self.binary.clone(), BINARY.to_owned())];
        out.extend(self.loader.iter().map(|l| (l.clone(), inside(l))));
        out.extend(self.libraries.iter().map(|l| (l.clone(), inside(l))));
        out
    }

    /// The container's argv: the init (through its loader, when it has one) and then
    /// `program`.
    pub fn argv(&self, program: Vec<String>) -> Vec<String> {
        let mut argv = Vec::new();
        if let Some(loader) = &self.loader {
            let name = loader.file_name().unwrap_or_default().to_string_lossy();
            argv.extend([format!("{DIR}/{name}"), "--library-path".into(), DIR.into()]);
        }
        argv.extend([BINARY.to_owned(), ARG.to_owned(), "--".to_owned()]);
        argv.extend(program);
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0000000-55d0c1000000 r--p 00000000 fe:01 123 /work/target/debug/bulwark
7f1a00000000-7f1a00020000 r--p 00000000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1a00020000-7f1a00040000 r-xp 00020000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1a00100000-7f1a00110000 r--p 00000000 fe:01 457 /usr/lib/x86_64-linux-gnu/libgcc_s.so.1
7f1a00200000-7f1a00210000 rw-p 00000000 00:00 0 \n\
7f1a00300000-7f1a00310000 rw-p 00000000 00:00 0 [heap]
7f1a00400000-7f1a00410000 r--p 00000000 fe:01 458 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0 [vdso]
";

    #[test]
    fn the_loader_and_libraries_come_from_the_maps_once_each() {
        let f = InitFiles::from_maps(Path::new("/work/target/debug/bulwark"), MAPS);
        let mounts: Vec<(String, String)> = f
            .mounts()
            .into_iter()
            .map(|(h, c)| (h.display().to_string(), c))
            .collect();
        let want = [
            ("/work/target/debug/bulwark", "/.bulwark/init"),
            (
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                "/.bulwark/ld-linux-x86-64.so.2",
            ),
            ("/usr/lib/x86_64-linux-gnu/libc.so.6", "/.bulwark/libc.so.6"),
            (
                "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/.bulwark/libgcc_s.so.1",
            ),
        ]
        .map(|(h, c)| (h.to_owned(), c.to_owned()));
        assert_eq!(mounts, want);
        assert_eq!(
            f.argv(vec!["/app".into(), "-v".into()]),
            [
                "/.bulwark/ld-linux-x86-64.so.2",
                "--library-path",
                "/.bulwark",
                "/.bulwark/init",
                "container-init",
                "--",
                "/app",
                "-v"
            ]
        );
    }

    #[test]
    fn a_static_binary_runs_without_a_loader() {
        let f = InitFiles::from_maps(Path::new("/bulwark"), "0-1 r-xp 0 fe:01 1 /bulwark\n");
        assert_eq!(f.mounts().len(), 1);
        assert_eq!(
            f.argv(vec!["/app".into()]),
            ["/.bulwark/init", "container-init", "--", "/app"]
        );
    }
}
