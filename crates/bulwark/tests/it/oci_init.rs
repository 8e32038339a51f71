//! Issue 14, "process-group semantics carry over" for containers: bulwark's init as a
//! container's PID 1 (`init = true`, the default) passes the stop signal on to a program
//! that has no handler for it and reaps the orphans it leaves, also in a rootfs that lacks
//! bulwark's libraries; `init = false` keeps the program as PID 1, deaf to SIGTERM.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{BULWARK, Demo, Stack, eventually, output_text, signal};
use crate::oci::{OciStack, container_pid, containers, copy_with_libraries, demo_rootfs};

/// The pid (on the host) of PID 1 of replica 0 of `service`'s running container.
fn pid_1(stack: &Stack, service: &str) -> u32 {
    let state = stack.state_dir();
    eventually(
        &format!("a running container of {service}"),
        Duration::from_secs(30),
        || {
            let id = containers(&state)
                .into_iter()
                .find(|id| id.starts_with(&format!("{service}-0-")))?;
            container_pid(&state, &id)
        },
    )
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `(pid, state, command line)` of each child of `parent`, zombies included (their
/// command line is empty), from /proc.
fn children(parent: u32) -> Vec<(u32, char, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if f.next().and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            out.push((pid, state, cmdline(pid)));
        }
    }
    out
}

/// The `at_ms` of the first event of `kind` about replica 0 of `service` that `pick`
/// accepts, with the event.
fn event(
    events: &[Value],
    kind: &str,
    service: &str,
    pick: impl Fn(&Value) -> bool,
) -> (u64, Value) {
    let e = events
        .iter()
        .find(|e| e["type"] == kind && e["service"] == service && pick(e))
        .unwrap_or_else(|| panic!("no {kind} of {service} in {events:?}"));
    (e["at_ms"].as_u64().unwrap(), e.clone())
}

/// How long a restart of `service`/`index` (its first stop and exit) took from its stop
/// signal to its exit, and the exit.
pub(crate) fn restart_and_time(stack: &Stack, service: &str, index: u64) -> (Duration, Value) {
    let target = format!("{service}/{index}");
    let out = stack.cli(&["restart", &target]);
    assert!(out.status.success(), "{}", output_text(&out));
    let events = eventually(
        &format!("{target} to exit after its restart"),
        Duration::from_secs(60),
        || {
            let events = stack.events();
            let stopping = events.iter().any(|e| {
                e["type"] == "replica_stopping"
                    && e["service"] == service
                    && e["reason"] == "restart requested"
            });
            let exited = events
                .iter()
                .any(|e| e["type"] == "replica_exited" && e["service"] == service);
            (stopping && exited).then_some(events)
        },
    );
    let (stop, _) = event(&events, "replica_stopping", service, |e| {
        e["reason"] == "restart requested"
    });
    let (exit, exited) = event(&events, "replica_exited", service, |_| true);
    (
        Duration::from_millis(exit.saturating_sub(stop)),
        exited["exit"].clone(),
    )
}

/// `bulwark demo` has no SIGTERM handler. Behind bulwark's init it stops on SIGTERM at
/// once (grace 10 s); as PID 1 itself (`init = false`) it ignores it and is killed when
/// its grace (2 s) is over.
#[test]
fn oci_init_passes_the_stop_signal_to_a_program_without_a_handler() {
    let mut stack = OciStack(Stack::prepare(""));
    let rootfs = demo_rootfs(stack.dir.path()).display().to_string();
    let toml = format!(
        "{}{}\n[api]\nlisten = \"127.0.0.1:0\"\n",
        Demo::new("web")
            .with("stop_grace = \"10s\"")
            .startup_probe()
            .with(&format!("[services.web.container]\nrootfs = \"{rootfs}\""))
            .build(),
        Demo::new("deaf")
            .with("stop_grace = \"2s\"")
            .startup_probe()
            .with(&format!(
                "[services.deaf.container]\nrootfs = \"{rootfs}\"\ninit = false"
            ))
            .build(),
    );
    std::fs::write(stack.dir.path().join("stack.toml"), toml).unwrap();
    stack.launch();
    stack.wait_ready("web", 1);
    stack.wait_ready("deaf", 1);
    // PID 1 is the init, the demo its child; without init, the demo is PID 1.
    let web = pid_1(&stack, "web");
    assert!(
        cmdline(web).contains("/.bulwark/init container-init -- "),
        "{}",
        cmdline(web)
    );
    let demo = children(web);
    assert!(
        demo.len() == 1 && demo[0].2.contains(" demo --port "),
        "{demo:?}"
    );
    let deaf = pid_1(&stack, "deaf");
    assert!(cmdline(deaf).contains(" demo --port "), "{}", cmdline(deaf));

    let (took, exit) = restart_and_time(&stack, "web", 0);
    eprintln!("web (init) stopped in {took:?}: {exit}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(
        exit["signal"] == 15 || exit["code"] == 0,
        "ended by the stop signal: {exit}"
    );
    let (took, exit) = restart_and_time(&stack, "deaf", 0);
    eprintln!("deaf (init = false) stopped in {took:?}: {exit}");
    assert!(took >= Duration::from_secs(2), "took {took:?}");
    assert_eq!(exit["signal"], 9, "{exit}");
    assert!(
        stack
            .events()
            .iter()
            .any(|e| e["type"] == "replica_killed" && e["service"] == "deaf"),
        "the grace ran out"
    );
    let web_killed = stack
        .events()
        .into_iter()
        .any(|e| e["type"] == "replica_killed" && e["service"] == "web");
    assert!(!web_killed, "the init's replica needed no SIGKILL");
}

/// A rootfs with a shell and `sleep` (and their libraries), not bulwark's libraries.
fn shell_rootfs(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("shell-rootfs");
    for (host, inside) in [("/bin/sh", "bin/sh"), ("/bin/sleep", "bin/sleep")] {
        let real = std::fs::canonicalize(host).unwrap();
        copy_with_libraries(&root, &real);
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy(&real, root.join(inside)).unwrap();
    }
    for d in ["proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    // The point of this rootfs: one of bulwark's libraries at least is not in it.
    let ldd = Command::new("ldd").arg(BULWARK).output().unwrap();
    let missing = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
        .filter(|lib| !root.join(lib.trim_start_matches('/')).exists())
        .count();
    assert!(
        missing > 0,
        "the shell's rootfs has all of bulwark's libraries"
    );
    root
}

/// Five orphans (`sleep 1000`, their parent shells gone) are re-parented to PID 1; killed,
/// they are reaped by the init, and stay zombies under a PID 1 that is the program.
#[test]
fn oci_init_reaps_orphans_in_a_rootfs_without_bulwarks_libraries() {
    let mut stack = OciStack(Stack::prepare(""));
    let rootfs = shell_rootfs(stack.dir.path()).display().to_string();
    let service = |name: &str, extra: &str| {
        format!(
            r#"
[services.{name}]
run = ["/bin/sh", "-c", "for i in 1 2 3 4 5; do /bin/sh -c '/bin/sleep 1000 &'; done; exec /bin/sleep 1001"]
stop_grace = "1s"
[services.{name}.container]
rootfs = "{rootfs}"
{extra}
"#
        )
    };
    let toml = format!(
        "{}{}\n[api]\nlisten = \"127.0.0.1:0\"\n",
        service("reaped", ""),
        service("zombies", "init = false")
    );
    std::fs::write(stack.dir.path().join("stack.toml"), toml).unwrap();
    stack.launch();
    for (name, reaped) in [("reaped", true), ("zombies", false)] {
        let pid1 = pid_1(&stack, name);
        let orphans = eventually(
            &format!("{name}: five orphans under PID 1"),
            Duration::from_secs(20),
            || {
                let o: Vec<u32> = children(pid1)
                    .into_iter()
                    .filter(|(_, _, cmd)| cmd == "/bin/sleep 1000")
                    .map(|(pid, ..)| pid)
                    .collect();
                (o.len() == 5).then_some(o)
            },
        );
        for &o in &orphans {
            signal(o, libc::SIGKILL);
        }
        let zombies = |pid1| -> Vec<u32> {
            children(pid1)
                .into_iter()
                .filter(|(pid, state, _)| *state == 'Z' && orphans.contains(pid))
                .map(|(pid, ..)| pid)
                .collect()
        };
        if reaped {
            eventually(
                "the init to reap the orphans",
                Duration::from_secs(10),
                || {
                    orphans
                        .iter()
                        .all(|o| !Path::new(&format!("/proc/{o}")).exists())
                        .then_some(())
                },
            );
            assert!(
                cmdline(pid1).contains("container-init"),
                "{}",
                cmdline(pid1)
            );
        } else {
            eventually("five zombies under PID 1", Duration::from_secs(10), || {
                (zombies(pid1).len() == 5).then_some(())
            });
        }
    }
    // Still there: nobody reaps them but PID 1, which is `sleep`.
    let pid1 = pid_1(&stack, "zombies");
    let left = children(pid1).iter().filter(|c| c.1 == 'Z').count();
    assert_eq!(left, 5, "{:?}", children(pid1));
    let status = stack.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}");
}
