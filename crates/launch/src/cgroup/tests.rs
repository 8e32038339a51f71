use super::*;

const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

#[test]
fn v1_controllers_nest_under_bulwarks_own_cgroup() {
    let own = "9:name=systemd:/\n8:pids:/\n4:memory:/sandbox/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n";
    let got = v1_dirs(HYBRID, own);
    assert_eq!(
        got,
        vec![
            (Controller::Cpu, PathBuf::from("/sys/fs/cgroup/cpu/")),
            (
                Controller::Cpuacct,
                PathBuf::from("/sys/fs/cgroup/cpuacct/")
            ),
            (
                Controller::Memory,
                PathBuf::from("/sys/fs/cgroup/memory/sandbox/abc")
            ),
            (Controller::Pids, PathBuf::from("/sys/fs/cgroup/pids/")),
        ]
    );
}

#[test]
fn a_combined_cpu_cpuacct_mount_and_a_containers_root_are_understood() {
    let mounts = "\
30 23 0:27 /docker/x /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
";
    let own = "3:cpu,cpuacct:/docker/x/inner\n";
    let got = v1_dirs(mounts, own);
    let dir = PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/inner");
    assert_eq!(
        got,
        vec![(Controller::Cpu, dir.clone()), (Controller::Cpuacct, dir)]
    );
}

#[test]
fn v2_is_the_unified_mount_and_bulwarks_path_in_it() {
    let mounts = "25 20 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
    let own = "0::/system.slice/bulwark.service\n";
    assert_eq!(v1_dirs(mounts, own), vec![]);
    assert_eq!(
        v2_dir(mounts, own),
        Some(PathBuf::from("/sys/fs/cgroup/system.slice/bulwark.service"))
    );
}

#[test]
fn keyed_files_are_read_by_key() {
    let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
    assert_eq!(replica::keyed(oom, "oom_kill"), Some(3));
    assert_eq!(replica::keyed(oom, "oom"), None);
}

#[test]
fn the_other_v1_hierarchies_and_hybrid_cgroup2_are_found_for_runcs_cgroups_beside_bulwarks() {
    let mounts = format!(
        "{HYBRID}\
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
42 31 0:39 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
43 31 0:40 / /sys/fs/cgroup/net_cls,net_prio rw,relatime - cgroup cgroup rw,net_cls,net_prio
"
    );
    let own = "10:net_cls,net_prio:/n\n9:name=systemd:/s\n8:pids:/\n5:devices:/d\n\
               4:memory:/sandbox/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n";
    let used = v1_dirs(&mounts, own);
    assert_eq!(
        v1_other_dirs(&mounts, own, &used),
        vec![
            PathBuf::from("/sys/fs/cgroup/unified/"),
            PathBuf::from("/sys/fs/cgroup/devices/d"),
            PathBuf::from("/sys/fs/cgroup/systemd/s"),
            PathBuf::from("/sys/fs/cgroup/net_cls,net_prio/n"),
        ]
    );
}

#[test]
fn a_process_in_bulwarks_own_cgroup_is_measured_and_signalled_alone() {
    // A child of the test shares its cgroup: it has none of its own, so nothing beside it
    // is listed (bulwark must never signal its own cgroup) and no cgroup usage is given.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("run sleep");
    let pid = child.id();
    assert_eq!(procs_with(pid), vec![pid]);
    assert_eq!(own_usage_of(pid), Usage::default());
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        procs_with(pid),
        Vec::<u32>::new(),
        "gone: nothing to signal"
    );
}

/// A killed bulwark's cgroups are removed however deep they go: a container's cgroup
/// (runc's) is a grandchild of `bulwark/<pid>`, and a process in it is killed first.
/// (Only one level was once removed: the dead bulwark's directory stayed.) Real cgroupfs,
/// as root.
#[test]
fn a_tree_of_cgroups_is_removed_depth_first_and_its_processes_killed() {
    let v1 = Path::new("/sys/fs/cgroup/pids");
    let root = if v1.is_dir() {
        v1
    } else {
        Path::new("/sys/fs/cgroup")
    };
    let top = root.join(format!("bulwark-test-tree-{}", std::process::id()));
    let deepest = top.join("replica/container");
    fs::create_dir_all(&deepest).expect("make cgroups (as root)");
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("run sleep");
    fs::write(deepest.join("cgroup.procs"), child.id().to_string()).unwrap();
    let empty = top.join("empty/inner");
    fs::create_dir_all(&empty).unwrap();
    remove_empty_tree(&top.join("empty"));
    assert!(!top.join("empty").exists(), "an empty tree goes whole");
    remove_tree(&top);
    let exited = child.wait().unwrap();
    let gone = !top.exists();
    if !gone {
        remove_tree(&top); // leave nothing behind whatever the outcome
    }
    assert!(gone, "{} is left", top.display());
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&exited),
        Some(9),
        "the process in the deepest cgroup was killed"
    );
}
