//! One replica incarnation's cgroups: made with its limits, read for usage and OOM kills,
//! emptied and removed when it is gone.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{CgroupError, Controller, Version};

/// What the kernel enforces on a replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes.
    pub memory: Option<u64>,
    /// Microseconds of CPU per 100 ms period.
    pub cpu_quota_us: Option<u64>,
    pub pids: Option<u32>,
}

/// The CFS period quotas are a share of.
const CPU_PERIOD_US: u64 = 100_000;

/// A replica's current use of its cgroups.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Memory charged to it (page cache included), bytes.
    pub memory_bytes: Option<u64>,
    /// CPU used since it started, seconds.
    pub cpu_seconds: Option<f64>,
    /// Processes and threads now.
    pub pids: Option<u64>,
}

/// The cgroups of one replica incarnation (one directory per controller on v1).
#[derive(Debug)]
pub struct ReplicaCgroup {
    version: Version,
    dirs: Vec<(Controller, PathBuf)>,
    pub limits: Limits,
    /// Its path relative to bulwark's own cgroup (`bulwark/<pid>/<name>`), the same in
    /// every hierarchy: what runc is given for a container inside it.
    relative: String,
    /// v1: its directories in the hierarchies bulwark does not use, where runc makes a
    /// container's cgroups too; removed with it.
    others: Vec<PathBuf>,
    /// v1: an eventfd the kernel signals on each OOM in its memory cgroup or below.
    /// v1's `oom_kill` counter is the victim's cgroup's, which for a container is runc's
    /// child cgroup, removed by runc as the container ends.
    oom_events: Option<OwnedFd>,
    /// OOM events read from `oom_events` so far.
    ooms_seen: AtomicU64,
    /// Set by [`ReplicaCgroup::remove`], so a drop after it touches no file.
    removed: AtomicBool,
}

impl ReplicaCgroup {
    pub(super) fn create(
        version: Version,
        parents: &[(Controller, PathBuf)],
        name: &str,
        limits: Limits,
        (relative, others): (String, Vec<PathBuf>),
    ) -> Result<ReplicaCgroup, CgroupError> {
        let mut made = ReplicaCgroup {
            version,
            dirs: Vec::new(),
            limits,
            relative,
            others,
            oom_events: None,
            ooms_seen: AtomicU64::new(0),
            removed: AtomicBool::new(false),
        };
        for (c, parent) in parents {
            let dir = parent.join(name);
            if !made.dirs.iter().any(|(_, d)| *d == dir) {
                fs::create_dir_all(&dir).map_err(|source| CgroupError::NotWritable {
                    path: dir.clone(),
                    source,
                })?;
            }
            made.dirs.push((*c, dir));
        }
        // Dropped on error: the directories made so far are removed.
        made.write_limits()?;
        if version == Version::V1 {
            made.oom_events = made.dir(Controller::Memory).and_then(watch_oom);
        }
        Ok(made)
    }

    fn write_limits(&self) -> Result<(), CgroupError> {
        let v1 = self.version == Version::V1;
        let l = self.limits;
        if let Some(bytes) = l.memory {
            let file = if v1 {
                "memory.limit_in_bytes"
            } else {
                "memory.max"
            };
            self.write(Controller::Memory, file, &bytes.to_string())?;
            if !v1 {
                // Swap would let a replica run past its limit, slowly, instead of failing.
                let _ = self.write(Controller::Memory, "memory.swap.max", "0");
            }
        }
        if let Some(quota) = l.cpu_quota_us {
            if v1 {
                self.write(
                    Controller::Cpu,
                    "cpu.cfs_period_us",
                    &CPU_PERIOD_US.to_string(),
                )?;
                self.write(Controller::Cpu, "cpu.cfs_quota_us", &quota.to_string())?;
            } else {
                self.write(
                    Controller::Cpu,
                    "cpu.max",
                    &format!("{quota} {CPU_PERIOD_US}"),
                )?;
            }
        }
        if let Some(n) = l.pids {
            self.write(Controller::Pids, "pids.max", &n.to_string())?;
        }
        Ok(())
    }

    fn dir(&self, c: Controller) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(d, _)| *d == c)
            .map(|(_, p)| p.as_path())
    }

    fn write(&self, c: Controller, file: &str, value: &str) -> Result<(), CgroupError> {
        let Some(dir) = self.dir(c) else {
            return Err(CgroupError::NoController(c.as_str()));
        };
        let path = dir.join(file);
        fs::write(&path, value).map_err(|source| CgroupError::NotWritable { path, source })
    }

    fn read(&self, c: Controller, file: &str) -> Option<String> {
        fs::read_to_string(self.dir(c)?.join(file)).ok()
    }

    /// The `cgroup.procs` files the child writes itself into before exec (one per
    /// directory).
    pub fn procs_files(&self) -> Vec<CString> {
        let mut seen: Vec<&Path> = Vec::new();
        let mut out = Vec::new();
        for (_, d) in &self.dirs {
            if seen.contains(&d.as_path()) {
                continue;
            }
            seen.push(d);
            if let Ok(c) = CString::new(d.join("cgroup.procs").as_os_str().as_bytes()) {
                out.push(c);
            }
        }
        out
    }

    /// Where a container runtime puts the container's own cgroup so that it is inside
    /// this one (its limits hold the container): a child, `container`, given relative to
    /// the runtime's own cgroup, which must be bulwark's (runc is not placed in this one).
    pub fn nested_path(&self) -> String {
        format!("{}/container", self.relative)
    }

    /// The directories, each once (for messages and tests).
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.dirs.iter().map(|(_, d)| d.clone()).collect();
        out.dedup();
        out
    }

    /// What the replica uses now; a figure the machine does not offer is `None`.
    pub fn usage(&self) -> Usage {
        let num = |c, f| self.read(c, f).and_then(|s| s.trim().parse::<u64>().ok());
        let v1 = self.version == Version::V1;
        Usage {
            memory_bytes: num(
                Controller::Memory,
                if v1 {
                    "memory.usage_in_bytes"
                } else {
                    "memory.current"
                },
            ),
            cpu_seconds: if v1 {
                num(Controller::Cpuacct, "cpuacct.usage").map(|ns| ns as f64 / 1e9)
            } else {
                self.read(Controller::Cpu, "cpu.stat")
                    .and_then(|s| keyed(&s, "usage_usec"))
                    .map(|us| us as f64 / 1e6)
            },
            pids: num(Controller::Pids, "pids.current"),
        }
    }

    /// Processes of the replica the kernel's OOM killer killed so far (v1:
    /// `memory.oom_control`'s `oom_kill`, kernel 4.13 on; v2: `memory.events`).
    pub fn oom_kills(&self) -> u64 {
        let file = if self.version == Version::V1 {
            "memory.oom_control"
        } else {
            "memory.events"
        };
        let counted = self
            .read(Controller::Memory, file)
            .and_then(|s| keyed(&s, "oom_kill"))
            .unwrap_or(0);
        if let Some(fd) = &self.oom_events {
            self.ooms_seen.fetch_add(drain(fd), Ordering::Relaxed);
        }
        counted.max(self.ooms_seen.load(Ordering::Relaxed))
    }

    /// Kills whatever is left in it and removes its directories (waiting up to a second
    /// for the killed to exit). Idempotent.
    pub fn remove(&self) {
        if self.removed.swap(true, Ordering::Relaxed) {
            return;
        }
        // The v1 eventfd is signalled when its cgroup goes too: read what it says first.
        let _ = self.oom_kills();
        for d in self.dirs().iter().chain(&self.others) {
            remove_dir(d);
        }
    }
}

/// An eventfd registered for `memory.oom_control` of the v1 memory cgroup `dir`
/// (`cgroup.event_control`), or `None` when the kernel refuses.
#[allow(unsafe_code)]
fn watch_oom(dir: &Path) -> Option<OwnedFd> {
    // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor we own.
    let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` was just opened and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let control = fs::File::open(dir.join("memory.oom_control")).ok()?;
    let line = format!("{} {}", fd.as_raw_fd(), control.as_raw_fd());
    match fs::write(dir.join("cgroup.event_control"), line) {
        Ok(()) => Some(fd),
        Err(error) => {
            tracing::debug!(dir = %dir.display(), %error, "cannot watch a cgroup's OOM events");
            None
        }
    }
}

/// The events an eventfd counted since it was last read (0 when none: it is non-blocking).
#[allow(unsafe_code)]
fn drain(fd: &OwnedFd) -> u64 {
    let mut count = [0u8; 8];
    // SAFETY: reads at most 8 bytes into `count`, which is 8 bytes long.
    let n = unsafe { libc::read(fd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
    if n == 8 { u64::from_ne_bytes(count) } else { 0 }
}

impl Drop for ReplicaCgroup {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `key value` lines (`memory.events`, `cpu.stat`, `memory.oom_control`).
pub(super) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// SIGKILLs every process in `dir`, then removes it, retrying while the killed exit.
/// A directory that is not there is fine.
pub(super) fn remove_dir(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a replica's cgroup");
                return;
            }
        }
    }
}
