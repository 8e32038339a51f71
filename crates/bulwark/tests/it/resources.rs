//! Issue 14, acceptance 2, 3 and 4: per-replica cgroups (memory, CPU, pids), OOM kills
//! reported and handled by `on_oom`, and no cgroup left behind by `up`, stopped or killed.
//!
//! These run where cgroups can be written (root, v1 or v2); that is the machines tests run
//! on (CI runs as root). The cgroups are looked for where `up` makes them: under the test's
//! own cgroup (which `up` inherits), in `bulwark/<pid of up>`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// A replica that grows a bytearray by 4 MiB every 10 ms, but only in its first
/// incarnation (a file in the stack's directory remembers it ran): later ones just sleep.
fn hog(marker: &std::path::Path) -> String {
    let marker = marker.display();
    format!(
        "import os, time\n\
         m = '{marker}.' + os.environ['BULWARK_INDEX']\n\
         if os.path.exists(m):\n    time.sleep(3600)\n\
         open(m, 'w').close()\n\
         b = bytearray()\n\
         while True:\n    b += bytearray(4 << 20)\n    time.sleep(0.01)\n"
    )
}

/// Where `up` (process `pid`) keeps its cgroups: one directory per controller on v1, one
/// on v2.
pub(crate) fn cgroup_parents(pid: u32) -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let path = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        return vec![PathBuf::from(format!(
            "/sys/fs/cgroup{}/bulwark/{pid}",
            path.trim_end_matches('/')
        ))];
    }
    own.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
            let wanted = ["memory", "cpu", "cpuacct", "pids"];
            list.split(',').any(|c| wanted.contains(&c)).then(|| {
                PathBuf::from(format!(
                    "/sys/fs/cgroup/{list}{}/bulwark/{pid}",
                    path.trim_end_matches('/')
                ))
            })
        })
        .collect()
}

/// The replica cgroups (directories) under `up`'s parents.
pub(crate) fn replica_cgroups(pid: u32) -> Vec<PathBuf> {
    cgroup_parents(pid)
        .iter()
        .flat_map(|p| std::fs::read_dir(p).into_iter().flatten().flatten())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// Stops `up` with SIGTERM (as a user would) and checks it left no cgroup behind; a test
/// that fails before this leaves its cgroups to the next `up`, which removes them.
fn stop_clean(stack: &mut Stack) {
    let up = stack.pid();
    assert!(stack.terminate(Duration::from_secs(30)).success());
    for p in cgroup_parents(up) {
        assert!(!p.exists(), "{} is left", p.display());
    }
}

/// Replica `index` of a service's status; null while it is not listed yet.
pub(crate) fn replica(service: &Value, index: u64) -> Value {
    replicas_in(service)
        .iter()
        .find(|r| r["index"] == index)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Whether the service lists `n` replicas, all running.
fn all_running(service: &Value, n: usize) -> bool {
    let r = replicas_in(service);
    r.len() == n && r.iter().all(|r| r["state"] == "running")
}

pub(crate) fn oom_events(stack: &Stack, service: &str) -> Vec<Value> {
    stack
        .events()
        .into_iter()
        .filter(|e| e["type"] == "replica_oom_killed" && e["service"] == service)
        .collect()
}

#[test]
fn a_replica_past_its_memory_limit_is_oom_killed_reported_counted_and_restarted() {
    let stack_dir = tempfile::tempdir().unwrap();
    let script = hog(&stack_dir.path().join("ran"));
    // Replica 0 allocates past 64 MiB; replica 1, its sibling, serves HTTP.
    let toml = format!(
        r#"
[services.web]
run = ["sh", "-c", "if [ \"$BULWARK_INDEX\" = 0 ]; then exec python3 -c \"$HOG\"; else exec {{bulwark}} demo --port {{port}}; fi"]
replicas = 2
env = {{ HOG = {script:?} }}
[services.web.backoff]
initial = "100ms"
[services.web.resources]
memory = "64MiB"
"#
    );
    let mut stack = Stack::start(&toml);
    let svc = stack.wait_service(
        "web",
        "replica 0 OOM-killed and running again",
        Duration::from_secs(60),
        |s| {
            let r = replica(s, 0);
            r["restarts"] == 1
                && r["state"] == "running"
                && r["last_exit"]["oom_killed"] == true
                && replica(s, 1)["ready"] == true
        },
    );
    let sibling = replica(&svc, 1);
    let r0 = replica(&svc, 0);
    assert_eq!(r0["last_exit"]["signal"], 9, "{r0}");
    assert_eq!(
        r0["resources"]["memory_limit_bytes"],
        64 << 20,
        "status shows the limit: {r0}"
    );
    assert!(
        r0["resources"]["memory_bytes"].as_u64().unwrap() < 64 << 20,
        "{r0}"
    );

    let events = oom_events(&stack, "web");
    assert_eq!(events.len(), 1, "one OOM kill: {events:?}");
    assert_eq!(
        (
            events[0]["index"].as_u64(),
            events[0]["memory_limit"].as_u64()
        ),
        (Some(0), Some(64 << 20))
    );
    let (code, metrics) = get(stack.api, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("bulwark_replica_oom_kills_total{service=\"web\",replica=\"0\"} 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("oom"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let human = output_text(&stack.cli(&["status"]));
    assert!(human.contains("oom-killed"), "{human}");
    assert!(human.contains("/ 64.0 MiB"), "{human}");

    // The sibling kept its process and serves.
    let now = stack.service("web");
    assert_eq!(
        replica(&now, 1)["pid"],
        sibling["pid"],
        "the sibling was not restarted"
    );
    assert_eq!(replica(&now, 1)["restarts"], 0);
    let port = sibling["port"].as_u64().unwrap() as u16;
    let (code, _) = get(format!("127.0.0.1:{port}").parse().unwrap(), "/");
    assert_eq!(code, 200, "the sibling serves");
    // Its own cgroup holds it, with its limit.
    let pid = stack.pid();
    let limits: Vec<String> = replica_cgroups(pid)
        .iter()
        .filter_map(|d| {
            std::fs::read_to_string(d.join("memory.limit_in_bytes"))
                .or_else(|_| std::fs::read_to_string(d.join("memory.max")))
                .ok()
        })
        .collect();
    assert_eq!(limits.len(), 2, "one memory cgroup per replica: {limits:?}");
    assert!(
        limits.iter().all(|l| l.trim() == (64u64 << 20).to_string()),
        "{limits:?}"
    );
    stop_clean(&mut stack);
}

#[test]
fn with_on_oom_stop_an_oom_killed_replica_stays_down() {
    let stack_dir = tempfile::tempdir().unwrap();
    let script = hog(&stack_dir.path().join("ran"));
    let toml = format!(
        r#"
[services.hog]
run = ["python3", "-c", {script:?}]
on_oom = "stop"
priority = "low"
[services.hog.resources]
memory = "32MiB"
"#
    );
    let mut stack = Stack::start(&toml);
    let svc = stack.wait_service(
        "hog",
        "oom-killed and left down",
        Duration::from_secs(60),
        |s| replica(s, 0)["state"] == "oom-killed",
    );
    let r = replica(&svc, 0);
    assert_eq!(
        (r["pid"].is_null(), r["restarts"].as_u64()),
        (true, Some(0)),
        "{r}"
    );
    assert_eq!(r["last_exit"]["oom_killed"], true);
    // The state can show before the replica's last event is published: wait for that event.
    let events = eventually(
        "the replica's replica_done",
        Duration::from_secs(10),
        || {
            let events = stack.events();
            let done = events
                .iter()
                .any(|e| e["service"] == "hog" && e["type"] == "replica_done");
            done.then_some(events)
        },
    );
    let kinds: Vec<&str> = events
        .iter()
        .filter(|e| e["service"] == "hog")
        .filter_map(|e| e["type"].as_str())
        .collect();
    let oom = kinds
        .iter()
        .position(|k| *k == "replica_oom_killed")
        .expect("an OOM event");
    assert_eq!(
        &kinds[oom..oom + 3],
        ["replica_oom_killed", "replica_exited", "replica_done"],
        "{kinds:?}"
    );
    assert!(!kinds.contains(&"restart_scheduled"), "{kinds:?}");
    // It stays down: a restart asked for by hand starts it again (the second incarnation
    // only sleeps), and no replica cgroup is left of the first.
    let out = stack.cli(&["restart", "hog"]);
    assert!(out.status.success(), "{}", output_text(&out));
    stack.wait_service(
        "hog",
        "running after a manual restart",
        Duration::from_secs(30),
        |s| replica(s, 0)["state"] == "running",
    );
    // `priority = "low"`: the kernel's first pick under memory pressure.
    let pid = replica(&stack.service("hog"), 0)["pid"].as_u64().unwrap();
    let adj = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
    assert_eq!(adj.trim(), "500");
    // bulwark itself goes after every replica: -900 where it may lower its score (with
    // CAP_SYS_RESOURCE), else it says it cannot.
    let own = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", stack.pid())).unwrap();
    if has_cap_sys_resource() {
        assert_eq!(own.trim(), "-900");
    } else {
        let said = stack.stderr() + &stack.stdout();
        assert!(
            said.contains("cannot lower bulwark's own oom_score_adj"),
            "{said}"
        );
    }
    let names: std::collections::BTreeSet<_> = replica_cgroups(stack.pid())
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        1,
        "only the new incarnation's cgroups: {names:?}"
    );
    stop_clean(&mut stack);
}

#[test]
fn a_cpu_quota_of_a_fifth_holds_a_busy_loop_to_20_percent_of_a_core() {
    let toml = r#"
[services.spin]
run = ["sh", "-c", "while :; do :; done"]
[services.spin.resources]
cpu = 0.2
"#;
    let mut stack = Stack::start(toml);
    let svc = stack.wait_service("spin", "running", Duration::from_secs(30), |s| {
        replica(s, 0)["state"] == "running"
    });
    let pid = replica(&svc, 0)["pid"].as_u64().unwrap() as u32;
    let status_cpu = |s: &Value| replica(s, 0)["resources"]["cpu_seconds"].as_f64().unwrap();
    let (t0, c0, s0) = (
        Instant::now(),
        cpu_time(pid),
        status_cpu(&stack.service("spin")),
    );
    // A measurement window, not a wait for a condition: the share is what is measured.
    std::thread::sleep(Duration::from_secs(5));
    let (t1, c1, s1) = (
        Instant::now(),
        cpu_time(pid),
        status_cpu(&stack.service("spin")),
    );
    let wall = (t1 - t0).as_secs_f64();
    let share = (c1 - c0).as_secs_f64() / wall;
    assert!(
        (0.15..=0.25).contains(&share),
        "the loop used {:.1} % of a core",
        share * 100.0
    );
    let reported = (s1 - s0) / wall;
    // The figure itself, for the record (`--no-capture` shows it).
    eprintln!(
        "cpu quota 0.2: the loop used {:.1} % of a core, status says {:.1} %",
        share * 100.0,
        reported * 100.0
    );
    assert!(
        (0.15..=0.25).contains(&reported),
        "status says {:.1} %",
        reported * 100.0
    );
    assert_eq!(
        replica(&stack.service("spin"), 0)["resources"]["cpu_limit_cores"],
        0.2
    );
    stop_clean(&mut stack);
}

/// Forks 200 sleeping children (bounded, so a broken limit cannot take the machine), going
/// on when a fork fails, then says how many it made and sleeps.
const BOMB: &str = "import os, time
made = refused = 0
for _ in range(200):
    try:
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        made += 1
    except OSError:
        refused += 1
print(f'forked {made}, refused {refused}', flush=True)
time.sleep(3600)
";

#[test]
fn a_pids_limit_stops_a_fork_bomb_without_harming_the_others_or_bulwark() {
    let port = free_port();
    let toml = format!(
        r#"
[services.bomb]
run = ["python3", "-c", {BOMB:?}]
replicas = 2
[services.bomb.resources]
pids = 32
{}"#,
        Demo::new("web").expose(port).build()
    );
    let mut stack = Stack::start(&toml);
    stack.wait_ready("web", 1);
    let web_pid = replica_pids(&stack.service("web"));
    // Each replica is its process and 31 children: the 32 its limit allows.
    eventually("both bombs to give up", Duration::from_secs(60), || {
        let out = stack.stdout();
        (out.matches("forked 31, refused 169").count() == 2).then_some(())
    });
    let svc = stack.service("bomb");
    for r in replicas_in(&svc) {
        assert_eq!(
            (
                r["resources"]["pids"].as_u64(),
                r["resources"]["pids_limit"].as_u64()
            ),
            (Some(32), Some(32)),
            "{r}"
        );
        assert_eq!(
            (r["state"].as_str(), r["restarts"].as_u64()),
            (Some("running"), Some(0)),
            "{r}"
        );
    }
    // bulwark answers, the other service's replica kept its pid and serves.
    let (code, _) = get(format!("127.0.0.1:{port}").parse().unwrap(), "/");
    assert_eq!(code, 200);
    assert_eq!(replica_pids(&stack.service("web")), web_pid);
    stop_clean(&mut stack);
    assert_eq!(
        stack.descendants(),
        Vec::<u32>::new(),
        "nothing of the bombs is left"
    );
}

#[test]
fn no_cgroup_is_left_after_up_stops_or_is_killed_and_started_again() {
    let toml = r#"
[services.s]
run = ["sleep", "600"]
replicas = 2
[services.s.resources]
memory = "16MiB"
pids = 8
cpu = 0.5
"#;
    let mut stack = Stack::start(toml);
    stack.wait_service("s", "2 running", Duration::from_secs(30), |s| {
        all_running(s, 2)
    });
    let first = stack.pid();
    let dirs = replica_cgroups(first);
    assert!(dirs.len() >= 2, "{dirs:?}");
    // kill -9: the replicas die with `up` (parent-death signal); their cgroups stay until
    // the next `up` removes them.
    signal(first, libc::SIGKILL);
    stack.restart();
    stack.wait_service("s", "2 running again", Duration::from_secs(30), |s| {
        all_running(s, 2)
    });
    for p in cgroup_parents(first) {
        assert!(!p.exists(), "{} of the killed up is left", p.display());
    }
    let second = stack.pid();
    assert!(stack.terminate(Duration::from_secs(30)).success());
    for p in cgroup_parents(second) {
        assert!(!p.exists(), "{} is left after SIGTERM", p.display());
    }
}

/// Runs what follows in a private mount namespace where /sys/fs/cgroup is an empty,
/// read-only directory: cgroups that cannot be written, as for a user who is not root.
const NO_CGROUPS: [&str; 7] = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    "mount -t tmpfs -o ro none /sys/fs/cgroup && exec \"$0\" \"$@\"",
];

#[test]
fn limits_that_cannot_be_enforced_are_refused_by_up_and_warned_by_check_at_the_key() {
    let toml = "[services.s]\nrun = [\"sleep\", \"60\"]\n[services.s.resources]\npids = 4\n";
    let mut stack = Stack::prepare(toml);
    let status = stack.launch_via_expecting_failure(&NO_CGROUPS, Duration::from_secs(30));
    let err = stack.stderr();
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{err}");
    assert!(
        err.contains(
            "stack.toml: [services.s.resources]: cannot be enforced on this machine: cannot write"
        ),
        "{err}"
    );
    assert!(err.contains("needs root"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let file = stack.dir.path().join("stack.toml");
    let out = std::process::Command::new(NO_CGROUPS[0])
        .args(&NO_CGROUPS[1..])
        .arg(env!("CARGO_BIN_EXE_bulwark"))
        .args(["check", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "a valid file is valid: {text}");
    assert!(
        text.contains("warning: ") && text.contains("[services.s.resources]: cannot be enforced"),
        "{text}"
    );
}

/// The value of `metric{service="NAME",...}` on `/metrics`.
pub(crate) fn gauge(stack: &Stack, metric: &str, service: &str) -> Option<f64> {
    let (_, text) = get(stack.api, "/metrics");
    let prefix = format!("{metric}{{service=\"{service}\"");
    text.lines()
        .find(|l| l.starts_with(&prefix))?
        .rsplit_once(' ')?
        .1
        .parse()
        .ok()
}

#[test]
fn the_sampler_measures_a_replica_in_its_memory_cgroup_as_its_limit_does() {
    // The leader is a shell; its child holds 40 MiB. With a memory cgroup the replica's
    // memory is the cgroup's (what the limit and the anomaly forecast are against).
    let run = r#"run = ["sh", "-c", "python3 -c 'b = bytearray(40 << 20); import time; time.sleep(600)' & wait"]"#;
    let toml = format!(
        "[services.limited]\n{run}\n[services.limited.resources]\nmemory = \"128MiB\"\n\
         [services.plain]\n{run}\n"
    );
    let mut stack = Stack::start(&toml);
    let metric = "bulwark_replica_resident_memory_bytes";
    let limited = eventually(
        "the limited replica measured with its child",
        Duration::from_secs(60),
        || gauge(&stack, metric, "limited").filter(|b| *b > 40.0 * 1048576.0),
    );
    let plain = gauge(&stack, metric, "plain").expect("the plain replica is measured");
    assert!(
        plain < 20.0 * 1048576.0,
        "without a cgroup, the leader's RSS only: {plain}"
    );
    let status = replica(&stack.service("limited"), 0);
    let in_status = status["resources"]["memory_bytes"].as_f64().unwrap();
    assert!(
        (in_status - limited).abs() < 16.0 * 1048576.0,
        "{in_status} vs {limited}"
    );
    stop_clean(&mut stack);
}

/// Whether this process (and so the `up` it starts) may lower an `oom_score_adj`.
fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = u64::from_str_radix(field(&status, "CapEff:"), 16).unwrap();
    const CAP_SYS_RESOURCE: u32 = 24;
    eff & (1 << CAP_SYS_RESOURCE) != 0
}
