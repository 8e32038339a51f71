//! Issue 14, "resources for both drivers, through cgroups": a replica in a container runs
//! inside its `[resources]` limits (runc makes the container's cgroup inside the replica's),
//! an OOM kill in it is reported and restarted, and no cgroup or container outlives `up`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{Stack, output_text};
use crate::oci::{OciStack, container_pid, containers, copy_with_libraries, demo_rootfs};
use crate::resources::{cgroup_parents, oom_events, replica, replica_cgroups};

/// Adds `/bin/sh` (the host's, with the libraries `ldd` names) to `rootfs`.
fn add_shell(rootfs: &Path) {
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    copy_with_libraries(rootfs, &sh);
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy(&sh, rootfs.join("bin/sh")).unwrap();
}

/// `…/bulwark/<pid>` of `up` in the v1 hierarchies bulwark does not use itself (devices,
/// freezer, …, and a hybrid machine's cgroup2 mount), where runc makes the container's
/// cgroups too. None on v2.
fn other_parents(pid: u32) -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let used = ["memory", "cpu", "cpuacct", "pids"];
    own.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
            if list.split(',').any(|c| used.contains(&c)) {
                return None;
            }
            // A hybrid machine's cgroup2 mount (`0::`) is `unified`.
            let dir = if list.is_empty() {
                "unified"
            } else {
                list.trim_start_matches("name=")
            };
            Some(PathBuf::from(format!(
                "/sys/fs/cgroup/{dir}{}/bulwark/{pid}",
                path.trim_end_matches('/')
            )))
        })
        .filter(|p| p.parent().is_some_and(Path::exists))
        .collect()
}

/// Replica 0's first incarnation doubles a shell string past 64 MiB (a file in a writable
/// mount remembers it ran); later incarnations, and replica 1, serve the demo.
#[test]
fn a_container_replica_past_its_memory_limit_is_oom_killed_reported_and_restarted() {
    let mut stack = OciStack(Stack::prepare(""));
    let rootfs = demo_rootfs(stack.dir.path());
    add_shell(&rootfs);
    let data = stack.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let toml = format!(
        r#"
[services.web]
run = ["/bin/sh", "-c", "if [ \"$BULWARK_INDEX\" = 0 ] && [ ! -e /data/ran ]; then : > /data/ran; x=0123456789abcdef; while :; do x=$x$x; done; fi; exec {{bulwark}} demo --port {{port}}"]
replicas = 2
[services.web.backoff]
initial = "100ms"
[services.web.resources]
memory = "64MiB"
pids = 64
[services.web.container]
rootfs = "{}"
mounts = [{{ source = "data", target = "/data", read_only = false }}]
[api]
listen = "127.0.0.1:0"
"#,
        rootfs.display()
    );
    std::fs::write(stack.dir.path().join("stack.toml"), toml).unwrap();
    stack.launch();
    let svc = stack.wait_service(
        "web",
        "replica 0 OOM-killed and both ready",
        Duration::from_secs(90),
        |s| {
            let r = replica(s, 0);
            r["restarts"] == 1
                && r["last_exit"]["oom_killed"] == true
                && r["ready"] == true
                && replica(s, 1)["ready"] == true
                // Usage is sampled: wait for a figure of each.
                && [r, replica(s, 1)]
                    .iter()
                    .all(|r| r["resources"]["memory_bytes"].as_u64().is_some_and(|b| b > 0))
        },
    );
    assert!(
        data.join("ran").exists(),
        "the first incarnation ran the hog"
    );
    let r0 = replica(&svc, 0);
    assert_eq!(r0["last_exit"]["signal"], 9, "{r0}");
    assert_eq!(
        replica(&svc, 1)["restarts"],
        0,
        "the sibling was not restarted"
    );
    for r in [&r0, &replica(&svc, 1)] {
        let res = &r["resources"];
        assert_eq!(
            res["memory_limit_bytes"],
            64 << 20,
            "status shows the limit: {r}"
        );
        let used = res["memory_bytes"].as_u64().unwrap_or(0);
        assert!(used < 64 << 20, "the usage is under the limit: {r}");
        assert!(res["pids"].as_u64().is_some_and(|n| n >= 1), "{r}");
    }
    let events = oom_events(&stack, "web");
    assert_eq!(events.len(), 1, "one OOM kill: {events:?}");
    assert_eq!(events[0]["index"].as_u64(), Some(0), "{events:?}");
    let human = output_text(&stack.cli(&["status"]));
    assert!(
        human.contains("oom-killed") && human.contains("/ 64.0 MiB"),
        "{human}"
    );

    // Each container's process is in a `container` cgroup inside its replica's memory
    // cgroup, whose limit bulwark wrote.
    let (state, up) = (stack.state_dir(), stack.pid());
    each_container_in_its_limited_cgroup(&state, up);

    let others = other_parents(up);
    assert!(stack.terminate(Duration::from_secs(30)).success());
    assert_eq!(
        containers(&state),
        Vec::<String>::new(),
        "no container is left"
    );
    for p in cgroup_parents(up).iter().chain(&others) {
        assert!(!p.exists(), "{} is left after SIGTERM", p.display());
    }
}

/// Each of the 2 containers' process is in the `container` child of its replica's memory
/// cgroup, which has the 64 MiB limit.
fn each_container_in_its_limited_cgroup(state: &Path, up: u32) {
    let ids = containers(state);
    assert_eq!(ids.len(), 2, "{ids:?}");
    let memory: Vec<PathBuf> = replica_cgroups(up)
        .into_iter()
        .filter(|d| d.join("memory.limit_in_bytes").exists() || d.join("memory.max").exists())
        .collect();
    assert_eq!(memory.len(), 2, "one memory cgroup per replica: {memory:?}");
    for id in &ids {
        let pid = container_pid(state, id).unwrap().to_string();
        let holder = memory.iter().find(|d| {
            std::fs::read_to_string(d.join("container/cgroup.procs"))
                .is_ok_and(|p| p.lines().any(|l| l == pid))
        });
        let holder =
            holder.unwrap_or_else(|| panic!("container {id} ({pid}) in none of {memory:?}"));
        let limit = std::fs::read_to_string(holder.join("memory.limit_in_bytes"))
            .or_else(|_| std::fs::read_to_string(holder.join("memory.max")))
            .unwrap();
        assert_eq!(limit.trim(), (64u64 << 20).to_string());
    }
}
