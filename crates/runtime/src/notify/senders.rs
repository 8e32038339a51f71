//! Who may speak on a replica's notify socket, told from the sender's pid that the kernel
//! attaches to each datagram (`SO_PASSCRED`).
//!
//! That pid is translated into bulwark's pid namespace (the receiver's) by the kernel, so
//! for a process in a container it is its host pid, not the one it sees itself; a sender
//! whose pid has no number in bulwark's namespace arrives as 0 and is refused. A sender
//! cannot claim another pid without `CAP_SYS_ADMIN` (which a container does not keep
//! unless its `capabilities` list it).
//!
//! - A process replica: the sender must be in the replica's process group (the group it
//!   was started leading; its children inherit it).
//! - A container replica: its processes are in another pid namespace and their process
//!   groups are the container's business (an init, a shell), so the unit is the
//!   container's cgroup, as systemd's is the service's cgroup: the sender must be in it.
//!   bulwark names that cgroup itself (`linux.cgroupsPath`, relative to runc's cgroup,
//!   which is bulwark's), so `/proc/PID/cgroup` of a sender inside it reads bulwark's own
//!   line with that path appended (or below it), in at least one hierarchy. Only root or a
//!   cgroup's delegate can move a process into it, and either can enter the container too.

use nix::unistd::{Pid, getpgid};

/// Whom an incarnation's notify socket listens to.
#[derive(Debug, Clone)]
pub(crate) enum Senders {
    /// A process replica: the process group this pid leads.
    Group(u32),
    /// A container replica: the processes in its cgroup, given relative to bulwark's own
    /// (what runc was given as `cgroupsPath`).
    Cgroup(String),
}

impl Senders {
    /// How a refused sender is described in logs.
    pub(crate) fn outside(&self) -> &'static str {
        match self {
            Senders::Group(_) => "notify datagram from outside the replica's process group dropped",
            Senders::Cgroup(_) => "notify datagram from outside the replica's container dropped",
        }
    }
}

/// What a sender is checked against: a process group's leader, or where the container's
/// cgroup is in each of bulwark's hierarchies.
pub(crate) enum Admission {
    Group(u32),
    Cgroup(CgroupMatch),
}

impl Admission {
    /// Reads bulwark's own cgroups for a container (procfs: off the async workers).
    pub(crate) async fn new(senders: Senders) -> Admission {
        match senders {
            Senders::Group(leader) => Admission::Group(leader),
            Senders::Cgroup(relative) => {
                let own = tokio::task::spawn_blocking(|| {
                    std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default()
                })
                .await
                .unwrap_or_default();
                Admission::Cgroup(CgroupMatch::new(&own, &relative))
            }
        }
    }

    /// Whether the process `pid` (as the kernel gave it) may speak.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub(crate) async fn admits(&self, pid: Option<i32>) -> bool {
        let Some(pid) = pid.filter(|&p| p > 0) else {
            return false;
        };
        match self {
            Admission::Group(leader) => in_group(pid, *leader),
            Admission::Cgroup(m) => {
                // A small procfs file, but a file: read on the blocking pool, one at a
                // time (the reader awaits it), so a flood queues in the socket, not here.
                let text = tokio::task::spawn_blocking(move || {
                    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()
                })
                .await
                .ok()
                .flatten();
                text.is_some_and(|t| m.contains(&t))
            }
        }
    }
}

/// Whether `pid` is `leader` or in the process group it leads.
pub(crate) fn in_group(pid: i32, leader: u32) -> bool {
    pid as u32 == leader
        || getpgid(Some(Pid::from_raw(pid))).is_ok_and(|g| g.as_raw() as u32 == leader)
}

/// A container's cgroup as `/proc/PID/cgroup` shows it: per hierarchy (a line's
/// `ID:CONTROLLERS` prefix), bulwark's own path with the container's relative path
/// appended.
#[derive(Debug)]
pub(crate) struct CgroupMatch {
    paths: Vec<(String, String)>,
}

impl CgroupMatch {
    /// From bulwark's `/proc/self/cgroup` and the container's path relative to it.
    pub(crate) fn new(own: &str, relative: &str) -> CgroupMatch {
        let relative = relative.trim_matches('/');
        let paths = own
            .lines()
            .filter_map(|line| {
                let (hierarchy, path) = split_line(line)?;
                let path = format!("{}/{relative}", path.trim_end_matches('/'));
                Some((hierarchy.to_owned(), path))
            })
            .collect();
        CgroupMatch { paths }
    }

    /// Whether a process whose `/proc/PID/cgroup` reads `text` is in the container's
    /// cgroup, or below it, in some hierarchy.
    pub(crate) fn contains(&self, text: &str) -> bool {
        text.lines()
            .filter_map(split_line)
            .any(|(hierarchy, path)| {
                self.paths.iter().any(|(h, p)| {
                    h == hierarchy
                        && path
                            .strip_prefix(p.as_str())
                            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                })
            })
    }
}

/// `ID:CONTROLLERS:PATH` as (`ID:CONTROLLERS`, `PATH`); the path may hold colons.
fn split_line(line: &str) -> Option<(&str, &str)> {
    let first = line.find(':')?;
    let second = first + 1 + line[first + 1..].find(':')?;
    Some((&line[..second], &line[second + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_outside_the_group_are_refused() {
        let me = std::process::id();
        // pid 1 is in its own group, not in the test process's.
        assert!(!in_group(1, me));
        let own_group = getpgid(None).unwrap().as_raw() as u32;
        assert!(in_group(me as i32, own_group));
    }

    #[tokio::test]
    async fn pids_the_kernel_could_not_name_are_refused() {
        let any = Admission::Group(std::process::id());
        assert!(!any.admits(None).await);
        assert!(!any.admits(Some(0)).await);
        assert!(!any.admits(Some(-1)).await);
        let container = Admission::Cgroup(CgroupMatch::new("0::/\n", "c-1"));
        assert!(!container.admits(Some(0)).await);
        // This test process is in no container's cgroup.
        assert!(!container.admits(Some(std::process::id() as i32)).await);
    }

    const OWN_V1: &str = "9:name=systemd:/\n4:memory:/svc/x\n1:cpu,cpuacct:/\n0::/\n";

    #[test]
    fn a_container_process_is_in_the_container_cgroup_of_some_hierarchy() {
        let m = CgroupMatch::new(OWN_V1, "web-0-b42-3");
        assert!(m.contains("9:name=systemd:/web-0-b42-3\n4:memory:/svc/x/web-0-b42-3\n"));
        // Below it (a runtime's child cgroup), and in one hierarchy only.
        assert!(m.contains("4:memory:/svc/x/web-0-b42-3/sub\n1:cpu,cpuacct:/\n"));
        // Nested under a replica's cgroup, as runc is told with [resources].
        let nested = CgroupMatch::new(OWN_V1, "bulwark/42/web-0-7/container");
        assert!(nested.contains("1:cpu,cpuacct:/bulwark/42/web-0-7/container\n"));
        assert!(!nested.contains("1:cpu,cpuacct:/bulwark/42/web-0-7\n"));
    }

    #[test]
    fn host_processes_and_other_containers_are_not() {
        let m = CgroupMatch::new(OWN_V1, "web-0-b42-3");
        // bulwark's own cgroups, a sibling container whose name extends this one's, the
        // right path in the wrong hierarchy, garbage.
        assert!(!m.contains(OWN_V1));
        assert!(!m.contains("4:memory:/svc/x/web-0-b42-31\n"));
        assert!(!m.contains("9:name=systemd:/svc/x/web-0-b42-3\n"));
        assert!(!m.contains("5:devices:/web-0-b42-3\n"));
        assert!(!m.contains(""));
        assert!(!m.contains("garbage\n::\n:::\n"));
        // v2: one line; bulwark in the root cgroup.
        let v2 = CgroupMatch::new("0::/\n", "web-1-b7-0");
        assert!(v2.contains("0::/web-1-b7-0\n"));
        assert!(!v2.contains("0::/\n"));
        assert!(!v2.contains("0::/web-1-b7-00\n"));
    }
}
