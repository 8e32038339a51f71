//! Issue 10, item 2: the proxy runs on worker threads of its own, each accepting on its
//! own socket of the exposed address.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::harness::*;
use crate::resilience::reload;

/// The proxy's worker threads of `pid`: (thread id, context switches so far).
fn workers(pid: u32) -> Vec<(u32, u64)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("proxy-worker-") {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let switches = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum();
        let tid = dir.file_name().unwrap().to_str().unwrap().parse().unwrap();
        found.push((tid, switches));
    }
    found.sort_unstable();
    found
}

/// The sockets of `pid` in `/proc/net/tcp` whose fields pass `keep` (the fields of its
/// line: 1 local address, 2 remote address, 3 state), by inode.
fn sockets(pid: u32, keep: impl Fn(&[&str]) -> bool) -> BTreeSet<u64> {
    let held: BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| {
            let link = std::fs::read_link(fd.ok()?.path()).ok()?;
            let link = link.to_str()?;
            link.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let inode: u64 = f.get(9)?.parse().ok()?;
            (f.len() > 9 && held.contains(&inode) && keep(&f)).then_some(inode)
        })
        .collect()
}

/// The port of an address as `/proc/net/tcp` writes it (`0100007F:1F90`).
fn port_of(field: &str) -> Option<u16> {
    u16::from_str_radix(field.rsplit(':').next()?, 16).ok()
}

/// The inodes of the sockets listening on `port` that `pid` holds.
fn listening(pid: u32, port: u16) -> BTreeSet<u64> {
    sockets(pid, |f| port_of(f[1]) == Some(port) && f[3] == "0A")
}

/// How many connections `pid` has open to `port`.
fn connections_to(pid: u32, port: u16) -> usize {
    sockets(pid, |f| port_of(f[2]) == Some(port) && f[3] == "01").len()
}

#[test]
fn proxy_workers_each_accept_on_their_own_socket_and_keep_them_across_a_reload() {
    let port = free_port();
    // No HTTP probes: bulwark's only connections to the replicas are the proxy's.
    let toml = Demo::new("web").replicas(2).expose(port).build();
    let mut stack = Stack::prepare(&toml);
    stack.launch_with(&["--workers", "3"]);
    let web = stack.wait_ready("web", 2);
    let pid = stack.pid();
    // No connection is opened to a replica before a request needs one (an idle one would
    // hold a replica that serves one connection at a time); a request only uses its own
    // worker's connections.
    let ports: Vec<u16> = replicas_in(&web)
        .iter()
        .map(|r| r["port"].as_u64().unwrap() as u16)
        .collect();
    for port in &ports {
        assert_eq!(
            connections_to(pid, *port),
            0,
            "a connection before any request"
        );
    }
    let before = workers(pid);
    assert_eq!(before.len(), 3, "three proxy worker threads: {before:?}");
    let sockets = listening(pid, port);
    assert_eq!(sockets.len(), 3, "one listening socket per worker");

    // Connections from many source ports: the kernel spreads them over the sockets, and
    // each worker serves its own.
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..300 {
        assert_eq!(get(addr, "/").0, 200);
    }
    let after = workers(pid);
    for ((tid, was), (_, now)) in before.iter().zip(&after) {
        assert!(
            now > was,
            "worker thread {tid} served nothing ({was} -> {now} context switches)"
        );
    }
    // One request at a time: each worker opened one connection to each replica (about a
    // hundred requests each, balanced over two replicas) and reused it.
    for port in &ports {
        assert_eq!(connections_to(pid, *port), 3, "one connection per worker");
    }

    // A reload that changes the policies rebinds nothing.
    reload(
        &stack,
        &format!("{toml}\n[services.web.expose.retries]\nattempts = 3\n"),
    );
    assert_eq!(
        listening(pid, port),
        sockets,
        "the same sockets after a reload"
    );
    for _ in 0..20 {
        assert_eq!(get(addr, "/").0, 200);
    }

    // The workers' SO_REUSEPORT must not let a second bulwark take a share of the port.
    let mut second = Stack::prepare(&toml);
    let exit = second.launch_expecting_failure(Duration::from_secs(30));
    assert!(
        exit.is_some_and(|s| !s.success()),
        "a second bulwark on the same port must fail"
    );
    assert!(
        second
            .stderr()
            .contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        second.stderr()
    );
    assert_eq!(listening(pid, port), sockets);
}
