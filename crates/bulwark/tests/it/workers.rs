//! Issue 10, item 2: the proxy runs on worker threads of its own, each accepting on its
//! own socket of the exposed address.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::harness::*;
use crate::proxy::demo_stack;

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

/// The inodes of the sockets listening on `port` that `pid` holds.
fn listening(pid: u32, port: u16) -> BTreeSet<u64> {
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
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            let inode: u64 = f.get(9)?.parse().ok()?;
            (local_port == port && f.get(3) == Some(&"0A") && held.contains(&inode))
                .then_some(inode)
        })
        .collect()
}

#[test]
fn proxy_workers_each_accept_on_their_own_socket_and_keep_them_across_a_reload() {
    let port = free_port();
    let toml = demo_stack(port, 2);
    let mut stack = Stack::prepare(&toml);
    stack.launch_with(&["--workers", "3"]);
    stack.wait_ready("web", 2);
    let pid = stack.pid();
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

    // A reload that changes the policies rebinds nothing.
    std::fs::write(
        stack.dir.path().join("stack.toml"),
        format!(
            "{toml}\n[services.web.expose.retries]\nattempts = 3\n[api]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let out = stack.cli(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
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
