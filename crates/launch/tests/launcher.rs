//! The launcher: children outlive the thread that asked for them, die with bulwark, and
//! bounded exec runs leave nothing behind.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

/// Whether `pid` runs (a zombie counts as dead).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}

fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn sleeper() -> Command {
    let mut c = Command::new("sleep");
    c.arg("30").stdin(Stdio::null());
    c
}

/// The regression: a child asked for from a thread that then exits must keep running.
/// Before the launcher, the child's parent-death signal was tied to the asking thread and
/// fired when tokio retired it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_outlives_the_thread_that_asked_for_it() {
    let handle = tokio::runtime::Handle::current();
    // A short-lived std thread, like a blocking-pool thread that tokio retires.
    let mut from_thread = std::thread::spawn(move || handle.block_on(launch::spawn(sleeper())))
        .join()
        .unwrap()
        .unwrap();
    // A block_in_place section, like the journal's writes: the worker thread is handed
    // over and may be retired later.
    let mut from_block = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(launch::spawn(sleeper()))
    })
    .unwrap();
    let pids = [from_thread.id().unwrap(), from_block.id().unwrap()];
    tokio::time::sleep(Duration::from_secs(3)).await;
    for pid in pids {
        assert!(
            alive(pid),
            "child {pid} died with the thread that spawned it"
        );
    }
    // Each leads its own session and process group (a replica in the test's session could
    // have a session leader outside its pid namespace, which `criu dump` refuses).
    for pid in pids {
        let p = Some(nix::unistd::Pid::from_raw(pid as i32));
        let pgid = nix::unistd::getpgid(p).unwrap();
        assert_eq!(pgid.as_raw() as u32, pid);
        let sid = nix::unistd::getsid(p).unwrap();
        assert_eq!(
            sid.as_raw() as u32,
            pid,
            "child {pid} is not a session leader"
        );
    }
    from_thread.kill().await.unwrap();
    from_block.kill().await.unwrap();
}

/// Run by `killing_the_owner_kills_its_children` in a process of its own: spawns a sleeper
/// through the launcher, prints its pid and waits to be killed.
#[tokio::test]
async fn helper_owner_process() {
    if std::env::var_os("LAUNCH_TEST_HELPER").is_none() {
        return;
    }
    let child = launch::spawn(sleeper()).await.unwrap();
    println!("child-pid {}", child.id().unwrap());
    tokio::time::sleep(Duration::from_secs(60)).await;
    drop(child);
}

#[test]
fn killing_the_owner_kills_its_children() {
    let mut owner = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_owner_process", "--nocapture"])
        .env("LAUNCH_TEST_HELPER", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(owner.stdout.take().unwrap()).lines();
    let pid: u32 = loop {
        let line = lines
            .next()
            .expect("the helper printed its child's pid")
            .unwrap();
        if let Some(p) = line.strip_prefix("child-pid ") {
            break p.trim().parse().unwrap();
        }
    };
    assert!(alive(pid));
    owner.kill().unwrap();
    owner.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survived = alive(pid);
    kill(pid);
    assert!(
        !survived,
        "the child {pid} outlived its owner (no parent-death signal)"
    );
}

#[tokio::test]
async fn exec_captures_output_bounded_and_feeds_stdin() {
    let out = launch::run_exec(
        Command::new("cat"),
        Some(b"hello"),
        Duration::from_secs(10),
        1024,
    )
    .await
    .unwrap();
    assert!(out.status.unwrap().success());
    assert_eq!(out.stdout, b"hello");

    let mut big = Command::new("head");
    big.args(["-c", "1000000", "/dev/zero"]);
    let out = launch::run_exec(big, None, Duration::from_secs(10), 10)
        .await
        .unwrap();
    assert!(out.status.unwrap().success(), "drained, never blocked");
    assert_eq!(out.stdout.len(), 10);
}

/// Runs `cmd` (fed `input`) with a 1 s timeout, and checks that it timed out and that the
/// run came back well within 5 s.
async fn run_into_timeout(cmd: Command, input: Option<&[u8]>) -> launch::ExecOutcome {
    let began = Instant::now();
    let out = launch::run_exec(cmd, input, Duration::from_secs(1), 64)
        .await
        .unwrap();
    assert!(out.timed_out());
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    out
}

#[tokio::test]
async fn exec_timeout_kills_the_whole_group() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "sleep 100 & echo $!; sleep 100"]);
    let out = run_into_timeout(cmd, None).await;
    let bg: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    eventually(
        "the background sleep to die",
        Duration::from_secs(5),
        || !alive(bg),
    );
}

#[tokio::test]
async fn exec_leftovers_are_killed_when_the_leader_exits() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "sleep 100 & echo $!"]);
    let out = launch::run_exec(cmd, None, Duration::from_secs(10), 64)
        .await
        .unwrap();
    assert!(out.status.unwrap().success());
    let bg: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    eventually("the leftover sleep to die", Duration::from_secs(5), || {
        !alive(bg)
    });
}

#[tokio::test]
async fn exec_that_never_reads_stdin_does_not_hang() {
    let mut cmd = Command::new("sleep");
    cmd.arg("100");
    let input = vec![b'x'; 4 << 20];
    run_into_timeout(cmd, Some(&input)).await;
}

#[tokio::test]
async fn exited_does_not_reap() {
    let mut cmd = Command::new("true");
    cmd.stdin(Stdio::null());
    let mut child = launch::spawn(cmd).await.unwrap();
    let pid = child.id().unwrap();
    tokio::time::timeout(Duration::from_secs(10), launch::exited(pid))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state(pid), Some('Z'), "still a zombie, its pid reserved");
    assert!(child.wait().await.unwrap().success());
    assert_eq!(state(pid), None, "reaped by wait");
}

/// Zombie children of this process, by /proc.
fn zombie_children() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                let mut f = s
                    .rsplit_once(')')
                    .map(|(_, r)| r)
                    .unwrap_or("")
                    .split_whitespace();
                f.next() == Some("Z") && f.next() == Some(&me.to_string())
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_reaped_and_our_children_are_left_to_tokio() {
    launch::become_subreaper().unwrap();
    let reaper = launch::reap_orphans();
    // The grandchild is orphaned at once (its parent subshell exits), re-parents to us and
    // exits two seconds later. It must not hold the pipe: reading to the end would then
    // wait for its exit, and the reaper could take it before we saw it re-parented.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "(sleep 2 >/dev/null & echo $!); exit 3"])
        .stdout(Stdio::piped());
    let mut child = launch::spawn(cmd).await.unwrap();
    let pid = child.id().unwrap();
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stdout.as_mut().unwrap(), &mut out)
        .await
        .unwrap();
    let grandchild: u32 = out.trim().parse().unwrap();
    let me = std::process::id().to_string();
    eventually(
        "the orphan to re-parent to us",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .is_ok_and(|s| s.rsplit_once(')').unwrap().1.split_whitespace().nth(1) == Some(&me))
        },
    );
    launch::exited(pid).await.unwrap();
    eventually("the orphan to be reaped", Duration::from_secs(10), || {
        state(grandchild).is_none()
    });
    let zombies = zombie_children();
    assert_eq!(
        zombies,
        vec![pid],
        "only our own child is left, for tokio to reap"
    );
    assert_eq!(
        child.wait().await.unwrap().code(),
        Some(3),
        "its status was not stolen"
    );
    eventually("no zombie child", Duration::from_secs(5), || {
        zombie_children().is_empty()
    });
    reaper.abort();
}

/// Which of `fds` are open in the child `sh` (by `/proc/$$/fd`), as a line of numbers.
async fn open_in_child(fds: &[i32], placement: launch::Placement) -> String {
    let list = fds.iter().map(i32::to_string).collect::<Vec<_>>().join(" ");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "for n in {list}; do [ -e /proc/$$/fd/$n ] && printf '%s ' $n; done; echo"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let child = launch::spawn_placed(cmd, placement).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The regression: a descriptor bulwark inherited without close-on-exec (CI's agent gave
/// it a socket) reached every replica, so `criu dump` refused them (the socket's peer is
/// outside) and a stray pipe's reader saw EOF only once every replica was gone. Children
/// get their stdio and what a Placement hands them, nothing else.
#[tokio::test]
async fn children_inherit_no_stray_descriptor_but_what_they_are_handed() {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let (mut stray_r, stray_w) = std::io::pipe().unwrap();
    // A copy without close-on-exec, as a careless parent of bulwark would leave it.
    let leaked = nix::unistd::dup(&stray_w).unwrap();
    let flags = FdFlag::from_bits_truncate(fcntl(&leaked, FcntlArg::F_GETFD).unwrap());
    assert!(!flags.contains(FdFlag::FD_CLOEXEC));
    let (_handed_r, handed_w) = std::io::pipe().unwrap();
    let placement = launch::Placement {
        inherit: vec![(handed_w.as_raw_fd(), 40)],
        ..Default::default()
    };
    let stray = leaked.as_raw_fd();
    let open = open_in_child(&[stray, 40], placement).await;
    assert_eq!(open, "40", "stray fd {stray} and handed fd 40 in the child");

    // A child that lives on does not hold the stray pipe open: its reader sees EOF once
    // bulwark's own copies are closed.
    let mut long = launch::spawn(sleeper()).await.unwrap();
    drop((stray_w, leaked));
    let mut rest = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(stray_r.read_to_end(&mut rest).map(|_| ())));
    let eof = rx.recv_timeout(Duration::from_secs(10));
    kill(long.id().unwrap());
    let _ = long.wait().await;
    assert!(
        matches!(eof, Ok(Ok(()))),
        "no EOF on the stray pipe: {eof:?}"
    );
}
