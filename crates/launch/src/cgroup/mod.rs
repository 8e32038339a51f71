//! cgroups for replicas: bulwark's own parent per controller, one child per replica
//! incarnation, joined by the child itself before exec (see [`crate::spawn_placed`]).
//!
//! Layout. v1: `<mount of the controller>/<bulwark's own cgroup>/bulwark/<pid>/<replica>`
//! for each of `memory`, `cpu`, `cpuacct` and `pids` that is mounted (a combined
//! `cpu,cpuacct` mount is one directory). v2: one directory,
//! `<cgroup2 mount>/<bulwark's own cgroup>/bulwark/<pid>/<replica>`, with the controllers
//! enabled down the way. `<pid>` is bulwark's process id: at start, a `bulwark/<pid>` whose
//! bulwark is gone (killed with -9) is emptied and removed.
//!
//! Why under bulwark's own cgroup, not the hierarchy's root: bulwark may itself run in a
//! limited cgroup (a systemd unit, a container, a sandbox); its replicas stay inside those
//! limits, and the delegated subtree is the one place it may write.
//!
//! Everything here does blocking file I/O: call it from the launcher thread or the
//! blocking pool, never from an async worker.

mod replica;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use replica::{Limits, ReplicaCgroup, Usage};

/// Which cgroup hierarchy the machine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The controllers bulwark uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Controller {
    Memory,
    Cpu,
    /// CPU usage accounting (v1 only; v2's `cpu` has it).
    Cpuacct,
    Pids,
}

impl Controller {
    pub fn as_str(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Pids => "pids",
        }
    }
}

const CONTROLLERS: [Controller; 4] = [
    Controller::Memory,
    Controller::Cpu,
    Controller::Cpuacct,
    Controller::Pids,
];

/// Why cgroups cannot be used: said at the key that needs them.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no cgroup hierarchy is mounted (neither v1 controllers nor cgroup2 in /proc/self/mountinfo)"
    )]
    NotMounted,
    #[error("the {0} cgroup controller is not available on this machine")]
    NoController(&'static str),
    #[error(
        "cannot write {path}: {source} (bulwark needs root, or a delegated cgroup, to set resources)"
    )]
    NotWritable { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

/// The machine's cgroups as bulwark uses them: where its parents are.
#[derive(Debug, Clone)]
pub struct Cgroups {
    pub version: Version,
    /// Per controller, bulwark's parent for this process (`…/bulwark/<pid>`). v2: every
    /// available controller maps to the same directory.
    parents: Vec<(Controller, PathBuf)>,
    /// `…/bulwark` (v1: in every mounted hierarchy), where stale parents of earlier
    /// processes are looked for.
    roots: BTreeSet<PathBuf>,
    /// v1: `…/bulwark/<pid>` in the other mounted hierarchies (devices, freezer, …),
    /// where runc makes a container's cgroup beside bulwark's; emptied with them.
    others: Vec<PathBuf>,
}

impl Cgroups {
    /// Reads `/proc/self/mountinfo` and `/proc/self/cgroup`. v1 wins when any of its
    /// controllers is mounted (a hybrid machine has an empty cgroup2 beside them).
    pub fn detect() -> Result<Cgroups, CgroupError> {
        let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
        let own = read(Path::new("/proc/self/cgroup"))?;
        let pid = std::process::id().to_string();
        let v1 = v1_dirs(&mountinfo, &own);
        if !v1.is_empty() {
            let other_roots: Vec<PathBuf> = v1_other_dirs(&mountinfo, &own, &v1)
                .into_iter()
                .map(|d| d.join("bulwark"))
                .collect();
            let others = other_roots.iter().map(|d| d.join(&pid)).collect();
            let roots: BTreeSet<PathBuf> = v1
                .iter()
                .map(|(_, d)| d.join("bulwark"))
                .chain(other_roots)
                .collect();
            let parents = v1
                .into_iter()
                .map(|(c, d)| (c, d.join("bulwark").join(&pid)))
                .collect();
            return Ok(Cgroups {
                version: Version::V1,
                parents,
                roots,
                others,
            });
        }
        let dir = v2_dir(&mountinfo, &own).ok_or(CgroupError::NotMounted)?;
        let available = read(&dir.join("cgroup.controllers")).unwrap_or_default();
        let parents = CONTROLLERS
            .iter()
            .filter(|c| **c != Controller::Cpuacct)
            .filter(|c| available.split_whitespace().any(|a| a == c.as_str()))
            .map(|c| (*c, dir.join("bulwark").join(&pid)))
            .collect();
        Ok(Cgroups {
            version: Version::V2,
            parents,
            roots: BTreeSet::from([dir.join("bulwark")]),
            others: Vec::new(),
        })
    }

    /// Whether `c` can be used (mounted on v1, available on v2).
    pub fn has(&self, c: Controller) -> bool {
        self.parents.iter().any(|(p, _)| *p == c)
    }

    /// The controller `limits` need and the machine lacks, if any.
    pub fn missing(&self, limits: &Limits) -> Option<CgroupError> {
        let need = [
            (limits.memory.is_some(), Controller::Memory),
            (limits.cpu_quota_us.is_some(), Controller::Cpu),
            (limits.pids.is_some(), Controller::Pids),
        ];
        need.into_iter()
            .find(|(needed, c)| *needed && !self.has(*c))
            .map(|(_, c)| CgroupError::NoController(c.as_str()))
    }

    /// Whether bulwark may make cgroups here, without making any (`bulwark check`).
    pub fn writable(&self) -> Result<(), CgroupError> {
        // Only the hierarchies bulwark writes limits in (runc makes the others' itself).
        let roots: BTreeSet<&Path> = self
            .parents
            .iter()
            .filter_map(|(_, d)| d.parent())
            .collect();
        for root in roots {
            let own = root.parent().unwrap_or(root);
            nix::unistd::access(own, nix::unistd::AccessFlags::W_OK).map_err(|e| {
                CgroupError::NotWritable {
                    path: own.to_owned(),
                    source: e.into(),
                }
            })?;
        }
        Ok(())
    }

    /// Makes this process's parents (enabling v2's controllers on the way) and removes
    /// what earlier, dead bulwark processes left. Returns the stale parents removed.
    pub fn prepare(&self) -> Result<Vec<PathBuf>, CgroupError> {
        let removed = self.remove_stale();
        for dir in self.dirs() {
            if self.version == Version::V2 {
                self.enable_v2_controllers(&dir)?;
            }
            fs::create_dir_all(&dir).map_err(|source| CgroupError::NotWritable {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(removed)
    }

    /// This process's parents, each once.
    fn dirs(&self) -> BTreeSet<PathBuf> {
        self.parents.iter().map(|(_, d)| d.clone()).collect()
    }

    /// On v2 a controller reaches a child only when every ancestor below the one that has
    /// it lists it in `cgroup.subtree_control`: bulwark's own cgroup (which fails with
    /// EBUSY when it holds processes and is not the root: v2's no-internal-process rule,
    /// hence `Delegate=yes` and a sub-cgroup for bulwark itself), `bulwark` and
    /// `bulwark/<pid>`.
    fn enable_v2_controllers(&self, parent: &Path) -> Result<(), CgroupError> {
        let wanted: Vec<String> = self
            .parents
            .iter()
            .map(|(c, _)| format!("+{}", c.as_str()))
            .collect();
        let bulwark = parent.parent().unwrap_or(parent);
        let own = bulwark.parent().unwrap_or(bulwark);
        for dir in [own, bulwark, parent] {
            fs::create_dir_all(dir).map_err(|source| CgroupError::NotWritable {
                path: dir.to_owned(),
                source,
            })?;
            let path = dir.join("cgroup.subtree_control");
            fs::write(&path, wanted.join(" "))
                .map_err(|source| CgroupError::NotWritable { path, source })?;
        }
        Ok(())
    }

    /// Removes `bulwark/<pid>` directories whose process is gone: what a bulwark killed
    /// with -9 left (its replicas died with it, by their parent-death signal; anything
    /// they left is killed here). When the pid now runs another program, only its empty
    /// cgroups are removed.
    fn remove_stale(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for root in &self.roots {
            let Ok(entries) = fs::read_dir(root) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Ok(pid) = name.parse::<u32>() else {
                    continue;
                };
                if pid == std::process::id() || is_bulwark(pid) {
                    continue;
                }
                if Path::new(&format!("/proc/{pid}")).exists() {
                    // The pid lives on as another program: a reused pid, or a bulwark
                    // under another name. Only empty cgroups go; nothing is killed.
                    remove_empty_tree(&e.path());
                } else {
                    remove_tree(&e.path());
                }
                if !e.path().exists() {
                    removed.push(e.path());
                }
            }
        }
        removed
    }

    /// Makes the cgroups of one replica incarnation, `name` (unique in this process),
    /// with `limits` written.
    pub fn create(&self, name: &str, limits: Limits) -> Result<ReplicaCgroup, CgroupError> {
        let others: Vec<PathBuf> = self.others.iter().map(|d| d.join(name)).collect();
        let relative = format!("bulwark/{}/{name}", std::process::id());
        ReplicaCgroup::create(
            self.version,
            &self.parents,
            name,
            limits,
            (relative, others),
        )
    }

    /// Removes this process's parents (at the end of `up`, once every replica is gone).
    pub fn remove_own(&self) {
        for dir in self.dirs().iter().chain(&self.others) {
            remove_tree(dir);
        }
    }

    /// This process's parents, for tests and messages.
    pub fn parent_dirs(&self) -> Vec<PathBuf> {
        self.dirs().into_iter().collect()
    }
}

/// A parent and the replica cgroups in it (a cgroup's files are not directories).
/// Depth first: a container's cgroup (runc's) is a child of its replica's, and rmdir
/// refuses a cgroup that still has children.
fn remove_tree(dir: &Path) {
    for child in fs::read_dir(dir).into_iter().flatten().flatten() {
        if child.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&child.path());
        }
    }
    replica::remove_dir(dir);
}

/// The directory of the cgroup `pid` is in, when it is a cgroup of its own: neither
/// this process's (where replicas without `resources` run) nor one above it. A replica with
/// `resources` has one (`bulwark/<pid>/<name>`), and so has a container (runc makes one per
/// container, a child of the replica's or of runc's own). v1: in the hierarchy of the
/// first of `controllers` that is mounted; v2: the unified one.
fn own_cgroup_of(pid: u32, controllers: &[Controller]) -> Option<PathBuf> {
    static MOUNTINFO: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static SELF: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let mountinfo =
        MOUNTINFO.get_or_init(|| fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    let me = SELF.get_or_init(|| fs::read_to_string("/proc/self/cgroup").unwrap_or_default());
    let theirs = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let pick = |own: &str| -> Option<PathBuf> {
        let v1 = v1_dirs(mountinfo, own);
        if v1.is_empty() {
            return v2_dir(mountinfo, own);
        }
        controllers
            .iter()
            .find_map(|c| v1.iter().find(|(d, _)| d == c).map(|(_, p)| p.clone()))
    };
    let (dir, mine) = (pick(&theirs)?, pick(me)?);
    (!mine.starts_with(&dir)).then_some(dir)
}

/// Memory (page cache included) and CPU charged to the cgroup of its own `pid` is in
/// (see `own_cgroup_of`), `None` each when it has none. This is what a `resources.memory`
/// limit is compared with and what a container uses, so the resource sampler reports it
/// instead of the single process's RSS and CPU. Reads procfs and cgroupfs (as cheap as the
/// sampler's /proc reads).
pub fn own_usage_of(pid: u32) -> Usage {
    let num = |dir: Option<PathBuf>, file: &str| -> Option<String> {
        fs::read_to_string(dir?.join(file)).ok()
    };
    let memory = own_cgroup_of(pid, &[Controller::Memory]);
    let cpu = own_cgroup_of(pid, &[Controller::Cpuacct, Controller::Cpu]);
    let v2 = cpu.as_ref().is_some_and(|d| d.join("cpu.stat").exists());
    Usage {
        memory_bytes: num(memory.clone(), "memory.usage_in_bytes")
            .or_else(|| num(memory, "memory.current"))
            .and_then(|s| s.trim().parse().ok()),
        cpu_seconds: if v2 {
            num(cpu, "cpu.stat")
                .and_then(|s| replica::keyed(&s, "usage_usec"))
                .map(|us| us as f64 / 1e6)
        } else {
            num(cpu, "cpuacct.usage")
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(|ns| ns as f64 / 1e9)
        },
        pids: None,
    }
}

/// Every process in the cgroup of its own `pid` is in and in the cgroups below it: a
/// container's processes, found from its PID 1 (they cannot leave it: no cgroupfs is
/// mounted inside). Just `pid` when it has no cgroup of its own (see `own_cgroup_of`), so
/// bulwark never signals its own cgroup's processes; empty once `pid` is gone.
pub fn procs_with(pid: u32) -> Vec<u32> {
    let Some(dir) = own_cgroup_of(
        pid,
        &[Controller::Pids, Controller::Memory, Controller::Cpu],
    ) else {
        return if Path::new(&format!("/proc/{pid}")).exists() {
            vec![pid]
        } else {
            Vec::new()
        };
    };
    let mut found = Vec::new();
    let mut dirs = vec![dir];
    while let Some(d) = dirs.pop() {
        if let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) {
            found.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        for child in fs::read_dir(&d).into_iter().flatten().flatten() {
            if child.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(child.path());
            }
        }
    }
    found
}

/// [`remove_tree`] without killing: a cgroup that holds a process stays (rmdir refuses).
fn remove_empty_tree(dir: &Path) {
    for child in fs::read_dir(dir).into_iter().flatten().flatten() {
        if child.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_tree(&child.path());
        }
    }
    let _ = fs::remove_dir(dir);
}

fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Whether `pid` runs a bulwark (its `comm`): a pid reused by another program does not
/// keep a stale directory alive.
fn is_bulwark(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "bulwark")
}

/// The directory of each v1 controller bulwark uses, for this process's own cgroup:
/// mount point + (own path relative to the mount's root).
fn v1_dirs(mountinfo: &str, own: &str) -> Vec<(Controller, PathBuf)> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut right = right.split_whitespace();
        if right.next() != Some("cgroup") {
            continue;
        }
        let options = right.nth(1).unwrap_or("");
        let left: Vec<&str> = left.split_whitespace().collect();
        let (Some(root), Some(mount)) = (left.get(3), left.get(4)) else {
            continue;
        };
        for c in CONTROLLERS {
            if !options.split(',').any(|o| o == c.as_str()) {
                continue;
            }
            let Some(path) = own_path(own, |list| list.split(',').any(|l| l == c.as_str())) else {
                continue;
            };
            out.push((c, Path::new(mount).join(relative(&path, root))));
        }
    }
    out
}

/// The directories of this process's cgroup in the v1 hierarchies other than those of
/// `used` (devices, freezer, `name=systemd`, …, and a hybrid machine's cgroup2 mount),
/// for what runc makes there.
fn v1_other_dirs(mountinfo: &str, own: &str, used: &[(Controller, PathBuf)]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut right = right.split_whitespace();
        // A hybrid machine's (empty) cgroup2 mount too: runc makes the container's there.
        let v2 = match right.next() {
            Some("cgroup") => false,
            Some("cgroup2") => true,
            _ => continue,
        };
        let options: Vec<&str> = right.nth(1).unwrap_or("").split(',').collect();
        let left: Vec<&str> = left.split_whitespace().collect();
        let (Some(root), Some(mount)) = (left.get(3), left.get(4)) else {
            continue;
        };
        let mine = |list: &str| {
            if v2 {
                list.is_empty()
            } else {
                !list.is_empty() && list.split(',').all(|l| options.contains(&l))
            }
        };
        let Some(path) = own_path(own, mine) else {
            continue;
        };
        let dir = Path::new(mount).join(relative(&path, root));
        if !used.iter().any(|(_, d)| *d == dir) && !out.contains(&dir) {
            out.push(dir);
        }
    }
    out
}

/// The cgroup2 directory of this process.
fn v2_dir(mountinfo: &str, own: &str) -> Option<PathBuf> {
    let line = mountinfo.lines().find(|l| {
        l.split_once(" - ")
            .is_some_and(|(_, r)| r.split_whitespace().next() == Some("cgroup2"))
    })?;
    let left: Vec<&str> = line.split_once(" - ")?.0.split_whitespace().collect();
    let (root, mount) = (left.get(3)?, left.get(4)?);
    let path = own_path(own, |list| list.is_empty())?;
    Some(Path::new(mount).join(relative(&path, root)))
}

/// The path of `/proc/self/cgroup`'s line whose controller list `pick` accepts.
fn own_path(own: &str, pick: impl Fn(&str) -> bool) -> Option<String> {
    own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
        pick(list).then(|| path.to_owned())
    })
}

/// `path` below the mount's `root` (a container sees its own cgroup as the mount's root).
fn relative(path: &str, root: &str) -> String {
    let rest = path.strip_prefix(root).unwrap_or(path);
    rest.trim_start_matches('/').to_owned()
}

#[cfg(test)]
mod tests;
