//! Issue 17, acceptance 3: `bulwark top` in a real terminal (tmux: `send-keys` types,
//! `capture-pane` reads the screen) against a real stack: it shows the replicas, follows a
//! kill -9, restarts a replica after a y/n, says when the API is down and comes back with it,
//! survives a 20x5 terminal, and `q` ends it with the terminal given back.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(30);

/// A tmux server of its own (`-L`, its socket in a temp dir, no configuration file) running
/// `bulwark top` in a detached session; the server is killed on drop, pass or fail.
struct Tmux {
    socket: String,
    /// Holds top's stderr and its exit status once it ends.
    dir: tempfile::TempDir,
}

impl Tmux {
    /// `bulwark top` on `stack`, in a `width`x`height` terminal.
    fn top(stack: &Stack, width: u16, height: u16) -> Tmux {
        Tmux::top_with(stack, width, height, "")
    }

    /// [`Tmux::top`] with `env` (`NAME=value ...`, shell words) before the command.
    fn top_with(stack: &Stack, width: u16, height: u16, env: &str) -> Tmux {
        let dir = tempfile::tempdir().unwrap();
        let socket = format!("bulwark-top-{}", std::process::id());
        let tmux = Tmux { socket, dir };
        let script = format!(
            "env BULWARK_STATE_DIR='{}' {env} '{BULWARK}' top 2>'{}'; echo $? >'{}'",
            stack.state_dir().display(),
            tmux.file("stderr").display(),
            tmux.file("exit").display()
        );
        let (w, h) = (width.to_string(), height.to_string());
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            &w,
            "-y",
            &h,
            &script,
        ]);
        tmux
    }

    fn file(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Output {
        // TMUX_TMPDIR: the socket (`-L` names it) is made in the temp dir and goes with it.
        Command::new("tmux")
            .env("TMUX_TMPDIR", self.dir.path())
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs (scripts/test installs it)")
    }

    /// A tmux command that must succeed.
    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args);
        assert!(out.status.success(), "tmux {args:?}: {}", output_text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the terminal shows now.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    /// Waits until the screen satisfies `pred`, and returns it; on timeout, the panic shows
    /// the last screen.
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend(keys);
        self.run(&args);
    }

    /// The pid of `bulwark top` (the child of the pane's shell).
    fn top_pid(&self) -> u32 {
        let shell = self.run(&["list-panes", "-t", "top", "-F", "#{pane_pid}"]);
        let shell = shell.trim();
        let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
            .unwrap_or_default();
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no child of the pane's shell {shell}"))
    }

    fn alive(&self) -> bool {
        self.command(&["has-session", "-t", "top"]).status.success()
    }

    /// Sends `q`, waits for the session to end, and returns top's exit status and stderr.
    fn quit(&self) -> (String, String) {
        self.keys(&["q"]);
        eventually("top to end and its tmux session with it", WAIT, || {
            (!self.alive()).then_some(())
        });
        let read = |name| std::fs::read_to_string(self.file(name)).unwrap_or_default();
        (read("exit").trim().to_owned(), read("stderr"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Ends top too (SIGHUP), if a failed test left it running.
        let _ = self.command(&["kill-server"]);
    }
}

/// The cells of the table row showing `pid` after its service's name: index, pid, state,
/// ready, restarts, age, last exit.
fn row_of(screen: &str, pid: u32) -> Option<Vec<String>> {
    let pid = pid.to_string();
    screen.lines().find_map(|line| {
        let cells: Vec<String> = line
            .split_whitespace()
            .map(|c| c.trim_matches(['│', '>']))
            .filter(|c| !c.is_empty())
            .skip(1)
            .map(str::to_owned)
            .collect();
        (cells.get(1) == Some(&pid)).then_some(cells)
    })
}

fn pid_of(service: &serde_json::Value, index: usize) -> u32 {
    service["replicas"][index]["pid"].as_u64().unwrap() as u32
}

#[test]
fn top_shows_the_replicas_follows_a_kill_and_restarts_one_after_a_yes() {
    let stack = Stack::start(&Demo::new("web").replicas(3).ready_every("200ms").build());
    let web = stack.wait_ready("web", 3);
    let pids = replica_pids(&web);
    let tmux = Tmux::top(&stack, 160, 40);
    let screen = tmux.wait_for("every replica of web, ready", |s| {
        s.contains("3/3 ready") && pids.iter().all(|&p| row_of(s, p).is_some())
    });
    assert!(
        screen.contains(&format!("API http://{}", stack.api)),
        "{screen}"
    );
    for (i, &pid) in pids.iter().enumerate() {
        let row = row_of(&screen, pid).unwrap();
        assert_eq!(
            row[..5],
            [&i.to_string(), &pid.to_string(), "running", "yes", "0"]
        );
    }

    // kill -9 one replica: the screen shows it back, with a new pid, one restart and how
    // the last one ended; the event is listed as it happened.
    signal(pids[1], libc::SIGKILL);
    let web = stack.wait_service("web", "replica 1 back, ready", WAIT, |s| {
        s["replicas"][1]["pid"].as_u64() != Some(u64::from(pids[1]))
            && s["replicas"][1]["ready"] == true
    });
    let new_pid = pid_of(&web, 1);
    let screen = tmux.wait_for("replica 1's new pid, ready", |s| {
        row_of(s, new_pid).is_some_and(|r| r[3] == "yes")
    });
    let row = row_of(&screen, new_pid).unwrap();
    assert_eq!(row[0], "1");
    assert_eq!(row[4], "1", "one restart: {row:?}");
    assert_eq!(row[6..], ["signal", "9"], "{row:?}");
    assert!(
        row_of(&screen, pids[1]).is_none(),
        "the old pid is gone: {screen}"
    );
    assert!(
        screen.contains(&format!(
            "replica_exited     web/1 exit=signal 9 pid={}",
            pids[1]
        )),
        "{screen}"
    );

    // Select replica 1; Enter shows its stderr tail, Esc closes it.
    tmux.keys(&["j"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for("web/1's stderr window", |s| s.contains("web/1 stderr"));
    tmux.keys(&["Escape"]);
    tmux.wait_for("the window closed", |s| !s.contains("web/1 stderr"));
    // `r` asks first; `n` leaves the replica alone.
    tmux.keys(&["r"]);
    tmux.wait_for("the question", |s| {
        s.contains(&format!("Restart web/1 (pid {new_pid})? y/n"))
    });
    tmux.keys(&["n"]);
    tmux.wait_for("the question gone", |s| !s.contains("? y/n"));
    assert_eq!(
        pid_of(&stack.service("web"), 1),
        new_pid,
        "no restarted on n"
    );
    // `y` restarts it through the API.
    tmux.keys(&["r"]);
    tmux.wait_for("the question", |s| s.contains("Restart web/1"));
    tmux.keys(&["y"]);
    tmux.wait_for("the answer", |s| s.contains("restart of web/1 requested"));
    let web = stack.wait_service("web", "replica 1 restarted again", WAIT, |s| {
        s["replicas"][1]["pid"].as_u64() != Some(u64::from(new_pid))
            && s["replicas"][1]["ready"] == true
    });
    let third = pid_of(&web, 1);
    tmux.wait_for("the third pid", |s| row_of(s, third).is_some());
    assert!(
        stack
            .audit()
            .iter()
            .any(|r| r["path"] == "/v1/services/web/restart?replica=1" && r["status"] == 202),
        "the restart went through the API"
    );

    let (exit, stderr) = tmux.quit();
    assert_eq!(exit, "0", "top's exit status; its stderr: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn top_says_the_api_is_down_keeps_going_comes_back_and_survives_a_tiny_terminal() {
    let mut stack = Stack::start(&Demo::new("web").replicas(2).ready_every("200ms").build());
    let pids = replica_pids(&stack.wait_ready("web", 2));
    let tmux = Tmux::top(&stack, 160, 40);
    tmux.wait_for("both replicas", |s| {
        pids.iter().all(|&p| row_of(s, p).is_some())
    });

    // The API goes away: the header says so, the last answer stays on screen, top runs on.
    let old_api = stack.api;
    stack.terminate(WAIT);
    let screen = tmux.wait_for("the unreachable line", |s| {
        s.contains("API unreachable, retrying every")
    });
    assert!(
        screen.contains(&format!("cannot reach bulwark's API at {old_api}")),
        "{screen}"
    );
    assert!(screen.contains("stream down"), "{screen}");
    assert!(tmux.alive(), "top keeps running");
    // Without spinning: retries and redraws cost next to nothing over a few seconds.
    let top = tmux.top_pid();
    let before = cpu_time(top);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_time(top) - before;
    assert!(
        used < Duration::from_millis(500),
        "{used:?} of CPU in 3 s while the API is down"
    );

    // `up` again, on another port: top finds it through the state directory.
    stack.restart();
    let pids = replica_pids(&stack.wait_ready("web", 2));
    let screen = tmux.wait_for("the new stack's replicas", |s| {
        !s.contains("API unreachable") && pids.iter().all(|&p| row_of(s, p).is_some())
    });
    assert!(
        screen.contains(&format!("API http://{}", stack.api)),
        "{screen}"
    );

    // A 20x5 terminal: what fits, no panic; back to full size, everything again.
    tmux.run(&["resize-window", "-t", "top", "-x", "20", "-y", "5"]);
    let small = tmux.wait_for("a 20x5 frame", |s| {
        s.lines().count() <= 5
            && s.lines().all(|l| l.chars().count() <= 20)
            && s.contains("bulwark top")
    });
    assert!(tmux.alive(), "{small}");
    tmux.run(&["resize-window", "-t", "top", "-x", "120", "-y", "30"]);
    tmux.wait_for("the full view again", |s| {
        s.contains("Events") && pids.iter().all(|&p| row_of(s, p).is_some())
    });

    let (exit, stderr) = tmux.quit();
    assert_eq!(exit, "0", "top's exit status; its stderr: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn a_restart_the_token_may_not_make_is_refused_on_screen() {
    let stack = Stack::start(&Demo::new("web").ready_every("200ms").build());
    let pid = replica_pids(&stack.wait_ready("web", 1))[0];
    let out = stack.cli(&["token", "create", "watcher", "--role", "viewer"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let tmux = Tmux::top_with(&stack, 160, 40, &format!("BULWARK_TOKEN={token}"));
    tmux.wait_for("the replica, read with a viewer's token", |s| {
        row_of(s, pid).is_some()
    });
    tmux.keys(&["r"]);
    tmux.wait_for("the question", |s| s.contains("Restart web/0"));
    tmux.keys(&["y"]);
    let screen = tmux.wait_for("the refusal", |s| s.contains("restart of web/0 failed"));
    assert!(screen.contains("API answered 403 Forbidden"), "{screen}");
    assert_eq!(
        replica_pids(&stack.service("web")),
        [pid],
        "nothing restarted"
    );
    assert!(tmux.alive(), "a refusal ends nothing");
    let (exit, stderr) = tmux.quit();
    assert_eq!(exit, "0", "{stderr}");
}

#[test]
fn top_once_prints_one_frame_and_needs_a_running_stack() {
    let stack = Stack::start(&Demo::new("web").replicas(2).ready_every("200ms").build());
    let pids = replica_pids(&stack.wait_ready("web", 2));
    let out = stack.cli(&["top", "--once"]);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("API http://{}", stack.api)),
        "{text}"
    );
    assert!(text.contains("2/2 ready"), "{text}");
    for &p in &pids {
        let row = row_of(&text, p).unwrap_or_else(|| panic!("no row for {p}: {text}"));
        assert_eq!(row[2..5], ["running", "yes", "0"], "{row:?}");
    }
    assert!(text.contains("replica_ready"), "the latest events: {text}");
    assert!(
        !text.contains("q quit"),
        "no key hints in a printed frame: {text}"
    );

    // No running `up` behind the state directory: a clear error, at once.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(BULWARK)
        .args(["top", "--plain"])
        .env("BULWARK_STATE_DIR", empty.path())
        .output()
        .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("no running `bulwark up` found"), "{text}");
    // Without a terminal, the live view says what to use instead.
    let out = stack.cli(&["top"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("bulwark top needs a terminal"), "{text}");
}
