//! Issue 14, a container replica's processes: `status` shows the container's own process
//! (its PID 1 on the host) with runc's beside it, the resource sampler measures the
//! container rather than runc, and chaos `stop` and `kill` faults reach every process in
//! the container, not just runc.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Demo, Stack, eventually, free_port, get, output_text};
use crate::oci::{OciStack, container_pid, containers, demo_rootfs};
use crate::oci_init::restart_and_time;
use crate::resources::gauge;

/// The demo with a startup and a readiness probe (no liveness probe: a frozen replica is
/// left frozen, not restarted), `replicas` of them in containers, behind `port`, with
/// `extra` appended (experiments).
fn start(replicas: u32, port: u16, extra: &str) -> OciStack {
    let mut stack = OciStack(Stack::prepare(""));
    let rootfs = demo_rootfs(stack.dir.path()).display().to_string();
    let toml = format!(
        "{}{extra}\n[api]\nlisten = \"127.0.0.1:0\"\n",
        Demo::new("web")
            .replicas(replicas)
            .with("stop_grace = \"10s\"")
            .startup_probe()
            .ready_every("200ms")
            .with(&format!("[services.web.container]\nrootfs = \"{rootfs}\""))
            .expose(port)
            .build()
    );
    std::fs::write(stack.dir.path().join("stack.toml"), toml).unwrap();
    stack.launch();
    stack
}

fn replica(stack: &Stack, index: u64) -> Value {
    stack.service("web")["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["index"] == index)
        .cloned()
        .unwrap()
}

fn cmdline(pid: u64) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .replace('\0', " ")
}

/// The state letter of `/proc/PID/stat` (`T`: stopped), `?` once it is gone.
fn state(pid: u32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')')?.1.trim().chars().next())
        .unwrap_or('?')
}

/// `pid` and its descendants, from /proc (a container's processes, from its PID 1).
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        for t in std::fs::read_dir(format!("/proc/{parent}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            all.extend(
                kids.split_whitespace()
                    .filter_map(|k| k.parse::<u32>().ok()),
            );
        }
        i += 1;
    }
    all
}

/// `status` names the container's PID 1 as `pid` (what `runc state` says, PID 1 in its own
/// namespace) and runc as `runtime_pid`; events name the same pid; the memory the sampler
/// reports grows with what the demo in the container allocates (runc's would not).
#[test]
fn oci_status_shows_the_containers_process_and_the_sampler_measures_the_container() {
    let port = free_port();
    let stack = start(1, port, "");
    stack.wait_ready("web", 1);
    let r = replica(&stack, 0);
    let (pid, runc) = (
        r["pid"].as_u64().unwrap(),
        r["runtime_pid"].as_u64().unwrap(),
    );
    let state_dir = stack.state_dir();
    let id = containers(&state_dir).pop().expect("a container");
    assert_eq!(container_pid(&state_dir, &id), Some(pid as u32), "{r}");
    let nspid = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        nspid
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1")),
        "{nspid}"
    );
    assert!(cmdline(pid).contains("container-init"), "{}", cmdline(pid));
    assert!(
        cmdline(runc).contains("runc") && cmdline(runc).contains(&id),
        "{}",
        cmdline(runc)
    );
    let started = stack
        .events()
        .into_iter()
        .find(|e| e["type"] == "replica_started")
        .unwrap();
    assert_eq!(started["pid"], pid, "{started}");

    let metric = "bulwark_replica_resident_memory_bytes";
    let before = eventually("the container sampled", Duration::from_secs(20), || {
        gauge(&stack, metric, "web")
    });
    let demo_port = r["port"].as_u64().unwrap();
    let addr = format!("127.0.0.1:{demo_port}").parse().unwrap();
    assert_eq!(get(addr, "/fault/leak?mb=64").0, 200);
    let after = eventually(
        "the sampler to see the demo's 64 MiB",
        Duration::from_secs(20),
        || gauge(&stack, metric, "web").filter(|b| *b > before + 60.0 * 1048576.0),
    );
    eprintln!("container memory: {before} before the leak, {after} after");
}

/// `bulwark chaos status --json`.
fn chaos_status(stack: &Stack) -> Option<Value> {
    serde_json::from_slice(&stack.cli(&["chaos", "status", "--json"]).stdout).ok()
}

/// Runs experiment `name` once none runs, returns the index of the replica it broke.
fn run_experiment(stack: &Stack, name: &str) -> u64 {
    eventually("no experiment running", Duration::from_secs(30), || {
        let idle = chaos_status(stack)?["running"].as_array()?.is_empty();
        idle.then_some(())
    });
    let out = stack.cli(&["chaos", "run", name, "--no-wait", "--json"]);
    assert!(out.status.success(), "{}", output_text(&out));
    eventually(&format!("{name} to run"), Duration::from_secs(10), || {
        chaos_status(stack)?["running"][0]["replicas"][0].as_u64()
    })
}

/// A `stop` experiment freezes every process of the container (its init and the demo,
/// state T): the replica stops answering, its readiness fails, the proxy serves from the
/// other; when the fault ends all of them run again and it is ready and answers. A frozen
/// container that is restarted stops at once. A `kill` experiment kills the container's
/// processes: the replica dies of SIGKILL and comes back.
#[test]
fn oci_chaos_stop_and_kill_reach_every_process_of_the_container() {
    let port = free_port();
    let experiments = r#"
[[experiments]]
name = "freeze"
target = { service = "web" }
fault = { type = "stop" }
duration = "5s"

[[experiments]]
name = "kill"
target = { service = "web" }
fault = { type = "kill" }
duration = "1s"
"#;
    let stack = start(2, port, experiments);
    stack.wait_ready("web", 2);
    let index = run_experiment(&stack, "freeze");
    let r = replica(&stack, index);
    let pid = r["pid"].as_u64().unwrap() as u32;
    let inside = tree(pid);
    assert!(inside.len() >= 2, "the init and the demo: {inside:?}");
    eventually(
        "every process of the container stopped",
        Duration::from_secs(5),
        || inside.iter().all(|&p| state(p) == 'T').then_some(()),
    );
    let runc = r["runtime_pid"].as_u64().unwrap() as u32;
    assert_ne!(state(runc), 'T', "runc is left alone");
    stack.wait_service(
        "web",
        "the frozen replica unready",
        Duration::from_secs(10),
        |s| s["replicas"][index as usize]["ready"] == false,
    );
    let proxied = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get(proxied, "/").0, 200, "the other replica serves");
    // The fault ends after 5 s: the same processes run and answer again.
    stack.wait_ready("web", 2);
    assert!(inside.iter().all(|&p| state(p) != 'T'), "{inside:?}");
    assert_eq!(
        replica(&stack, index)["pid"],
        u64::from(pid),
        "not restarted"
    );
    let own = format!("127.0.0.1:{}", r["port"]).parse().unwrap();
    assert_eq!(get(own, "/").0, 200);

    // A frozen container that is restarted is continued, so it acts on its stop signal at
    // once instead of being killed when its grace (10 s) is over.
    let index = run_experiment(&stack, "freeze");
    let frozen = tree(replica(&stack, index)["pid"].as_u64().unwrap() as u32);
    eventually("the container frozen again", Duration::from_secs(5), || {
        frozen.iter().all(|&p| state(p) == 'T').then_some(())
    });
    let (took, exit) = restart_and_time(&stack, "web", index);
    assert!(took < Duration::from_secs(5), "took {took:?}: {exit}");
    assert_eq!(exit["signal"], 15, "{exit}");
    stack.wait_ready("web", 2);

    // Each replica's processes before the kill: by the time the experiment says which
    // replica it hit, that replica may be dead and between incarnations (no pid).
    let before: Vec<(Value, Vec<u32>)> = (0..2)
        .map(|i| {
            let r = replica(&stack, i);
            let pids = tree(r["pid"].as_u64().unwrap() as u32);
            (r, pids)
        })
        .collect();
    let index = run_experiment(&stack, "kill");
    let (r, killed) = &before[index as usize];
    eventually(
        "the container's processes gone",
        Duration::from_secs(10),
        || {
            killed
                .iter()
                .all(|&p| matches!(state(p), '?' | 'Z'))
                .then_some(())
        },
    );
    let exited = eventually("the replica's exit", Duration::from_secs(10), || {
        stack
            .events()
            .into_iter()
            .find(|e| e["type"] == "replica_exited" && e["index"] == index && e["pid"] == r["pid"])
    });
    assert_eq!(exited["exit"]["signal"], 9, "{exited}");
    stack.wait_ready("web", 2);
}
