//! Issue 14, sd_notify for container replicas: the replica's notify socket is mounted into
//! its container (read-only rootfs, a non-root user), `READY=1` from inside gates its
//! readiness, `STATUS=` shows, `STOPPING=1` takes it out, its watchdog restarts it; a host
//! process writing to the same socket is not the replica, and its flood stalls nothing.
//!
//! The rootfs holds only the demo (`bulwark demo --notify-...` speaks the protocol).

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{Demo, Stack, eventually, free_port, get, output_text};
use crate::oci::{OciStack, container_pid, containers, demo_rootfs};
use crate::sdnotify::{at_ms, env_of, event, flood_while_calling};

/// Inside the container, where bulwark mounts the socket.
const IN_CONTAINER: &str = "/dev/bulwark/notify.sock";

/// A stack of one demo service `web` in a container (`container_extra` in its table),
/// started with `args`, exposed on `port`, with `notify` in `[services.web.notify]`;
/// checked, not launched.
fn prepare(args: &[&str], notify: &str, container_extra: &str, port: u16) -> (OciStack, PathBuf) {
    let stack = OciStack(Stack::prepare(""));
    let rootfs = demo_rootfs(stack.dir.path());
    let toml = Demo::with_args("web", args)
        .with("stop_grace = \"1s\"\n[services.web.backoff]\ninitial = \"100ms\"")
        .with(&format!(
            "[services.web.container]\nrootfs = \"{}\"\n{container_extra}\n\
             [services.web.notify]\n{notify}",
            rootfs.display()
        ))
        .expose(port)
        .build();
    let toml = format!("{toml}\n[api]\nlisten = \"127.0.0.1:0\"\n");
    std::fs::write(stack.dir.path().join("stack.toml"), &toml).unwrap();
    let check = stack.cli(&[
        "check",
        "-f",
        stack.dir.path().join("stack.toml").to_str().unwrap(),
    ]);
    assert!(check.status.success(), "{}", output_text(&check));
    (stack, rootfs)
}

/// The running container's id and its process (as the host numbers it).
fn running_container(stack: &Stack) -> (String, u32) {
    let state = stack.state_dir();
    eventually("a running container", Duration::from_secs(30), || {
        let id = containers(&state).into_iter().next()?;
        Some((id.clone(), container_pid(&state, &id)?))
    })
}

/// The replica's socket as the host sees it: the one file in the state's `notify/`.
fn host_socket(stack: &Stack) -> PathBuf {
    let dir = stack.state_dir().join("notify");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// `line` said by the demo inside the container, through its own port (not the proxy,
/// which holds an unready replica back).
fn say(replica_port: u16, line: &str) {
    let path = format!("/notify?say={}", line.replace('=', "%3D").replace(' ', "+"));
    let (code, body) = get(format!("127.0.0.1:{replica_port}").parse().unwrap(), &path);
    assert_eq!(code, 200, "{path}: {body}");
}

#[test]
fn a_container_is_ready_only_after_its_own_ready_1_and_a_host_process_cannot_speak_for_it() {
    let port = free_port();
    // Pings, but is never ready by itself; runs as nobody on a read-only root.
    let (mut stack, rootfs) = prepare(
        &["--notify-watchdog-every", "200ms"],
        "watchdog = \"2s\"",
        "user = \"65534:65534\"",
        port,
    );
    stack.launch();
    let r = stack.wait_notify_status("web", "starting");
    assert_eq!(r["ready"], false, "ready before READY=1: {r}");
    let replica_port = r["port"].as_u64().unwrap() as u16;
    let (_, inside) = running_container(&stack);
    assert_eq!(
        env_of(inside, "NOTIFY_SOCKET").as_deref(),
        Some(IN_CONTAINER)
    );
    assert_eq!(env_of(inside, "WATCHDOG_USEC").as_deref(), Some("2000000"));
    assert!(
        !rootfs.join("dev/bulwark").exists(),
        "the mount point was made in the rootfs, not in runc's /dev"
    );
    let socket = host_socket(&stack);
    assert_eq!(
        std::fs::metadata(&socket).unwrap().uid(),
        65534,
        "the container's user owns its socket"
    );

    // This test process, on the host, writes to the very socket the container sees.
    let host = UnixDatagram::unbound().unwrap();
    host.send_to(b"READY=1\nSTATUS=forged", &socket).unwrap();
    let (sent, latencies) = flood_while_calling(&stack, &socket, Duration::from_secs(2));
    let worst = latencies.iter().max().unwrap();
    println!("{sent} host datagrams in 2 s; worst status call {worst:?}");
    assert!(sent >= 500, "the flood sent only {sent} datagrams");
    assert!(
        *worst < Duration::from_millis(1_500),
        "the API stalled for {worst:?}"
    );
    // The container's own datagram comes after all of those on the same socket: once it
    // shows, they were read, and dropped.
    say(replica_port, "STATUS=told");
    let r = stack.wait_notify_status("web", "told");
    assert_eq!(
        r["ready"], false,
        "a host process made the replica ready: {r}"
    );
    assert_eq!(
        r["restarts"], 0,
        "a forged WATCHDOG=trigger restarted it: {r}"
    );
    let proxied = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get(proxied, "/").0, 503);
    assert!(
        stack
            .stderr()
            .contains("from outside the replica's container dropped"),
        "the dropped datagrams are not logged"
    );

    say(replica_port, "READY=1");
    eventually(
        "ready after its own READY=1",
        Duration::from_secs(10),
        || (stack.first_replica("web")["ready"] == true).then_some(()),
    );
    assert_eq!(get(proxied, "/").0, 200);
    let shown = output_text(&stack.cli(&["status"]));
    assert!(shown.contains("status: told"), "{shown}");

    // STOPPING=1: out of the balancer while the container still runs.
    say(replica_port, "STOPPING=1");
    eventually("unready after STOPPING=1", Duration::from_secs(10), || {
        (stack.first_replica("web")["ready"] == false).then_some(())
    });
    assert_eq!(get(proxied, "/").0, 503);
    assert_eq!(
        stack.first_replica("web")["pid"],
        r["pid"],
        "STOPPING=1 is no restart"
    );
    let events = stack.events();
    assert!(
        event(&events, |e| e["type"] == "replica_unready"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("STOPPING=1")))
        .is_some(),
        "no replica_unready event saying STOPPING=1: {events:?}"
    );
}

/// Also with bulwark itself under a service manager: its `NOTIFY_SOCKET` reaches neither
/// the container nor runc (which would proxy the container's `READY=1` to the manager).
#[test]
fn a_container_whose_watchdog_stops_is_restarted_with_the_event() {
    // READY=1 1 s after the demo starts; WATCHDOG=1 every 200 ms until 4 s after it.
    let args = [
        "--notify-ready-after",
        "1s",
        "--notify-watchdog-every",
        "200ms",
        "--notify-stop-watchdog-after",
        "4s",
    ];
    let (mut stack, _) = prepare(&args, "watchdog = \"1s\"", "", free_port());
    let manager_path = stack.dir.path().join("manager.sock");
    let manager = UnixDatagram::bind(&manager_path).unwrap();
    manager.set_nonblocking(true).unwrap();
    stack.env("NOTIFY_SOCKET", manager_path.to_str().unwrap());
    stack.launch();
    let first = eventually("a ready replica", Duration::from_secs(30), || {
        let r = stack.first_replica("web");
        (r["ready"] == true).then_some(r)
    });
    assert_eq!(first["notify_status"], "ready");
    let (id, inside) = running_container(&stack);
    assert_eq!(
        env_of(inside, "NOTIFY_SOCKET").as_deref(),
        Some(IN_CONTAINER)
    );
    let failed = eventually("a watchdog timeout", Duration::from_secs(30), || {
        event(&stack.events(), |e| {
            e["type"] == "probe_failed" && e["probe"] == "watchdog"
        })
    });
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("watchdog timeout: no WATCHDOG=1 within 1s"),
        "{failed}"
    );
    let events = stack.events();
    let started = event(&events, |e| e["type"] == "replica_started").unwrap();
    let ready = event(&events, |e| e["type"] == "replica_ready").unwrap();
    let ready_after = at_ms(&ready) - at_ms(&started);
    let timeout_after = at_ms(&failed) - at_ms(&started);
    println!(
        "container ready {ready_after} ms after start; watchdog timeout after {timeout_after} ms"
    );
    // `replica_started` comes once runc has started the container (its pid file), a few ms
    // after the demo began counting its 1 s.
    assert!(
        ready_after >= 900,
        "ready {ready_after} ms after start, before READY=1"
    );
    // The last ping goes out 3.8-4 s after the demo starts (later than the replica, by
    // runc's start), and the watchdog is 1 s.
    assert!(
        (4_600..=4_000 + 1_000 + 4_000).contains(&timeout_after),
        "watchdog timeout {timeout_after} ms after start"
    );
    let second = eventually("a new incarnation", Duration::from_secs(30), || {
        let r = stack.first_replica("web");
        (r["restarts"] == 1 && r["pid"].is_u64() && r["pid"] != first["pid"]).then_some(r)
    });
    assert!(
        !containers(&stack.state_dir()).contains(&id),
        "the old container is still there"
    );
    // It speaks on a socket of its own again, and is ready again only after its READY=1.
    eventually("the new incarnation ready", Duration::from_secs(30), || {
        (stack.first_replica("web")["ready"] == true).then_some(())
    });
    let events = stack.events();
    let pid = &second["pid"];
    let restarted = event(&events, |e| {
        e["type"] == "replica_started" && e["pid"] == *pid
    })
    .expect("the new incarnation's replica_started");
    let ready_again = event(&events, |e| {
        e["type"] == "replica_ready" && at_ms(e) >= at_ms(&restarted)
    })
    .expect("the new incarnation's replica_ready");
    let again_after = at_ms(&ready_again) - at_ms(&restarted);
    assert!(
        again_after >= 900,
        "ready again {again_after} ms after its start"
    );
    let mut told = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = manager.recv(&mut buf) {
        told.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(told.iter().any(|m| m.starts_with("READY=1")), "{told:?}");
    assert!(
        !told.iter().any(|m| m.contains("MAINPID=")),
        "the manager was told of a container's process: {told:?}"
    );
}
