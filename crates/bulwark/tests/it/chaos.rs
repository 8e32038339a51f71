//! Chaos experiments on the real binary under open-loop load: a kill that costs nothing and
//! whose report matches the event timeline, an abort with rollbacks, the pre-flight gate,
//! halting, the monkey on and off its leash, every other fault type, and the scorecard
//! of `bulwark verify`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{BULWARK, Demo, Load, Stack, eventually, free_port, get, replicas_in};

/// Three demo replicas with the quickstart's probes, faster, behind `port`.
fn three(port: u16) -> Demo {
    Demo::new("web")
        .replicas(3)
        .quickstart_probes()
        .expose(port)
}

/// `bulwark chaos ARGS --json`, with its exit status.
fn chaos_json(stack: &Stack, args: &[&str]) -> (bool, Value) {
    let mut all = vec!["chaos"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = stack.cli(&all);
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
    (out.status.success(), v)
}

fn events_of(stack: &Stack, kind: &str) -> Vec<Value> {
    stack
        .events()
        .into_iter()
        .filter(|e| e["type"] == kind)
        .collect()
}

fn ms(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn killing_one_of_three_under_load_loses_nothing_and_the_report_matches_the_events() {
    let port = free_port();
    let done = tempfile::tempdir().unwrap();
    let marker = done.path().join("rolled-back");
    let toml = three(port)
        .with(&format!(
            r#"
[[experiments]]
name = "kill-one"
target = {{ service = "web" }}
fault = {{ type = "kill" }}
duration = "3s"
rollbacks = [["touch", "{}"]]
[[experiments.steady_state]]
type = "error-ratio"
max = 0.01
window = "2s"
"#,
            marker.display()
        ))
        .build();
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 3);
    let load = Load::start(&format!("http://127.0.0.1:{port}/"), 200, "6s");
    std::thread::sleep(Duration::from_secs(1));
    let (ok, report) = chaos_json(&stack, &["run", "kill-one"]);
    let load = load.finish();
    assert!(ok, "{report}");
    assert_eq!(report["outcome"], "passed", "{report}");
    assert_eq!(load["failed"]["total"], 0, "{load}");
    assert!(marker.exists(), "the rollback ran");
    assert_eq!(report["rollbacks"][0]["ok"], true, "{report}");

    // The report's figures are the event timeline's.
    let fault_at = ms(&report["fault_at_ms"]);
    let killed = report["replicas"][0].as_u64().unwrap();
    let started = &events_of(&stack, "experiment_started")[0];
    assert_eq!(started["name"], "kill-one");
    assert!(ms(&started["at_ms"]) >= fault_at, "{started} {report}");
    let exited = stack
        .events()
        .into_iter()
        .find(|e| {
            e["type"] == "replica_exited" && e["service"] == "web" && ms(&e["at_ms"]) >= fault_at
        })
        .expect("the kill is in the timeline");
    assert_eq!(exited["index"].as_u64(), Some(killed), "{exited}");
    assert_eq!(
        ms(&report["detect_ms"]),
        ms(&exited["at_ms"]) - fault_at,
        "{report}"
    );
    assert_eq!(report["detected_by"], "replica_exited");
    let ready = stack
        .events()
        .into_iter()
        .find(|e| {
            e["type"] == "replica_ready"
                && e["index"].as_u64() == Some(killed)
                && ms(&e["at_ms"]) > fault_at
        })
        .expect("the replacement became ready");
    assert_eq!(
        ms(&report["recover_ms"]),
        ms(&ready["at_ms"]) - fault_at,
        "{report}"
    );
    let ended = &events_of(&stack, "experiment_ended")[0];
    assert_eq!(
        (ended["outcome"].as_str(), ended["recover_ms"].as_u64()),
        (Some("passed"), report["recover_ms"].as_u64())
    );
    let shown = String::from_utf8_lossy(&stack.cli(&["events"]).stdout).into_owned();
    assert!(
        shown.contains("experiment_started") && shown.contains("kill-one"),
        "{shown}"
    );
}

#[test]
fn a_fault_that_breaks_the_steady_state_is_aborted_and_rolled_back() {
    let port = free_port();
    let done = tempfile::tempdir().unwrap();
    let (one, two) = (done.path().join("one"), done.path().join("two"));
    let toml = three(port)
        .with(&format!(
            r#"
[[experiments]]
name = "half-errors"
target = {{ service = "web", mode = "all" }}
fault = {{ type = "http-abort", status = 500, percent = 50 }}
duration = "60s"
abort_when = {{ failure_threshold = 2, interval = "250ms" }}
rollbacks = [["touch", "{}"], ["false"], ["touch", "{}"]]
[[experiments.steady_state]]
type = "error-ratio"
max = 0.05
window = "2s"
min_requests = 5
"#,
            one.display(),
            two.display()
        ))
        .build();
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 3);
    let load = Load::start(&format!("http://127.0.0.1:{port}/"), 100, "5s");
    std::thread::sleep(Duration::from_secs(1));
    let began = Instant::now();
    let (ok, report) = chaos_json(&stack, &["run", "half-errors"]);
    let took = began.elapsed();
    assert!(!ok, "an aborted experiment exits non-zero: {report}");
    assert_eq!(report["outcome"], "aborted", "{report}");
    // Aborted within failure_threshold x interval (500 ms), plus a second for the probes'
    // window to see the errors and for scheduling; a 60 s fault never ran its course.
    let ran = ms(&report["fault_end_ms"]) - ms(&report["fault_at_ms"]);
    assert!(ran <= 500 + 1000, "the fault lasted {ran} ms");
    assert!(took < Duration::from_secs(20), "{took:?}");
    // Every rollback ran, the failing one in the middle included.
    let rbs: Vec<bool> = report["rollbacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ok"] == true)
        .collect();
    assert_eq!(rbs, [true, false, true], "{report}");
    assert!(one.exists() && two.exists());
    let rolled: Vec<bool> = events_of(&stack, "experiment_rollback")
        .iter()
        .map(|e| e["ok"] == true)
        .collect();
    assert_eq!(rolled, [true, false, true], "every rollback is an event");
    assert_eq!(events_of(&stack, "experiment_aborted").len(), 1);
    drop(load);
    // Healthy again within 1 s of the fault's removal: no request fails after that.
    std::thread::sleep(Duration::from_secs(1));
    let after = Load::start(&format!("http://127.0.0.1:{port}/"), 100, "2s").finish();
    assert_eq!(after["failed"]["total"], 0, "{after}");
}

#[test]
fn the_gate_refuses_during_a_page_and_halt_stops_a_running_experiment_at_once() {
    let port = free_port();
    let done = tempfile::tempdir().unwrap();
    let marker = done.path().join("continued");
    let toml = three(port)
        .with(&format!(
            r#"
[[services.web.slo]]
name = "availability"
kind = "availability"
objective = 99.0
period = "1h"

[[experiments]]
name = "hang-one"
target = {{ service = "web" }}
fault = {{ type = "stop" }}
duration = "2m"
rollbacks = [["touch", "{}"]]
"#,
            marker.display()
        ))
        .build();
    let stack = Stack::start(&toml);
    let svc = stack.wait_ready("web", 3);

    // Halt: the experiment runs (a stopped replica), `chaos halt` undoes it at once.
    let (ok, started) = chaos_json(&stack, &["run", "hang-one", "--no-wait"]);
    assert!(ok, "{started}");
    let running = eventually("the experiment to run", Duration::from_secs(10), || {
        let (_, st) = chaos_json(&stack, &["status"]);
        st["running"][0]["replicas"][0].as_u64()
    });
    let pid = replicas_in(&svc)[running as usize]["pid"].as_u64().unwrap() as u32;
    eventually("the replica to be stopped", Duration::from_secs(5), || {
        (proc_state(pid) == 'T').then_some(())
    });
    let began = Instant::now();
    let (ok, halted) = chaos_json(&stack, &["halt"]);
    let took = began.elapsed();
    assert!(ok, "{halted}");
    assert_eq!(halted["halted"], 1, "{halted}");
    assert!(took < Duration::from_secs(1), "halt took {took:?}");
    assert!(marker.exists(), "the rollback ran before halt answered");
    assert_ne!(proc_state(pid), 'T', "the replica was continued");
    let (_, st) = chaos_json(&stack, &["status"]);
    assert_eq!(st["recent"][0]["outcome"], "halted", "{st}");
    assert_eq!(st["faults_on"], false);

    // Faults off: nothing starts until `faults on`.
    let (ok, refused) = chaos_json(&stack, &["run", "hang-one", "--no-wait"]);
    assert!(!ok, "{refused}");
    let out = stack.cli(&["chaos", "run", "hang-one"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("faults are off"),
        "{out:?}"
    );
    assert!(stack.cli(&["faults", "on"]).status.success());

    // A paging SLO: every replica answers 500, the page fires, the gate says no.
    for r in replicas_in(&stack.service("web")) {
        let p = r["port"].as_u64().unwrap();
        assert_eq!(
            get(
                format!("127.0.0.1:{p}").parse().unwrap(),
                "/fault/status?code=500&ratio=1"
            )
            .0,
            200
        );
    }
    let load = Load::start(&format!("http://127.0.0.1:{port}/"), 100, "30s");
    eventually("the page alert", Duration::from_secs(25), || {
        let (_, body) = stack.call("GET", "/v1/alerts", "127.0.0.1", true);
        body.contains("\"page\"").then_some(())
    });
    let out = stack.cli(&["chaos", "run", "hang-one"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("paging"), "{err}");
    drop(load);
    let refused = events_of(&stack, "experiment_refused");
    assert!(
        refused
            .iter()
            .any(|e| e["reason"].as_str().unwrap().contains("paging")),
        "{refused:?}"
    );
    assert_eq!(
        events_of(&stack, "experiment_started").len(),
        1,
        "only the halted one ever started"
    );
}

/// The state letter of `/proc/PID/stat` (`T`: stopped).
fn proc_state(pid: u32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .and_then(|rest| rest.trim().chars().next())
        })
        .unwrap_or('?')
}

/// `HH:MM-HH:MM` covering the next half hour of the machine's local time, or a window
/// that excludes now.
fn window(covering_now: bool) -> String {
    let now = jiff::Zoned::now();
    let m = i32::from(now.hour()) * 60 + i32::from(now.minute());
    let (a, b) = if covering_now {
        ((m - 1).max(0), (m + 30).min(1440))
    } else if m >= 720 {
        (0, 60)
    } else {
        (1380, 1440)
    };
    format!("{:02}:{:02}-{:02}:{:02}", a / 60, a % 60, b / 60, b % 60)
}

/// Three replicas and two monkeys killing one: one whose window is now (leashed or
/// not), one whose window excludes now and that is loose.
fn monkeys(port: u16, leashed: bool) -> String {
    let all_days = r#"["mon", "tue", "wed", "thu", "fri", "sat", "sun"]"#;
    three(port)
        .with(&format!(
            r#"
[[experiments]]
name = "inside"
target = {{ service = "web" }}
fault = {{ type = "kill" }}
duration = "200ms"
schedule = {{ mean_interval = "1s", min_gap = "500ms", days = {all_days}, hours = "{now}", leashed = {leashed} }}

[[experiments]]
name = "outside"
target = {{ service = "web" }}
fault = {{ type = "kill" }}
duration = "200ms"
schedule = {{ mean_interval = "1s", min_gap = "0s", days = {all_days}, hours = "{other}", leashed = false }}
"#,
            now = window(true),
            other = window(false)
        ))
        .build()
}

#[test]
fn a_leashed_monkey_breaks_nothing_and_a_loose_one_acts_only_inside_its_window() {
    let stack = Stack::start(&monkeys(free_port(), true));
    let pids = |s: &Value| -> Vec<u64> {
        replicas_in(s)
            .iter()
            .map(|r| r["pid"].as_u64().unwrap())
            .collect()
    };
    let before = pids(&stack.wait_ready("web", 3));
    eventually(
        "two leashed would-be faults",
        Duration::from_secs(20),
        || (events_of(&stack, "experiment_leashed").len() >= 2).then_some(()),
    );
    assert_eq!(
        before,
        pids(&stack.service("web")),
        "a leashed monkey kills nothing"
    );
    assert!(events_of(&stack, "experiment_started").is_empty());
    let leashed = events_of(&stack, "experiment_leashed");
    assert!(leashed.iter().all(|e| e["name"] == "inside"), "{leashed:?}");
    drop(stack);

    // Let loose inside its window: it kills at about its rate, never closer than min_gap.
    let stack = Stack::start(&monkeys(free_port(), false));
    stack.wait_ready("web", 3);
    let began = Instant::now();
    let starts = eventually("three monkey faults", Duration::from_secs(30), || {
        let s = events_of(&stack, "experiment_started");
        (s.len() >= 3).then_some(s)
    });
    // Each run lasts 200 ms plus the replacement's recovery; the mean gap is 1 s.
    let per_fault = began.elapsed() / 3;
    assert!(
        per_fault < Duration::from_secs(8),
        "{per_fault:?} per fault"
    );
    assert!(
        starts
            .iter()
            .all(|e| e["name"] == "inside" && e["trigger"] == "monkey"),
        "{starts:?}"
    );
    let ended: Vec<u64> = events_of(&stack, "experiment_ended")
        .iter()
        .map(|e| ms(&e["at_ms"]))
        .collect();
    let at: Vec<u64> = starts.iter().map(|e| ms(&e["at_ms"])).collect();
    for (next, end) in at.iter().skip(1).zip(&ended) {
        assert!(
            next - end >= 500,
            "min_gap kept: started {at:?}, ended {ended:?}"
        );
    }
    assert!(
        events_of(&stack, "experiment_refused")
            .iter()
            .all(|e| e["name"] != "outside"),
        "the monkey outside its window never tried"
    );
}

#[test]
fn every_other_fault_type_acts_and_is_undone() {
    let (web, db, tcp) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{}{}{}",
        three(web).build(),
        Demo::new("db")
            .replicas(2)
            .ready_every("200ms")
            .expose(db)
            .build(),
        Demo::with_args("raw", &["--tcp"])
            .replicas(2)
            .expose(tcp)
            .with("protocol = \"tcp\"")
            .build()
    );
    let experiments = r#"
[[experiments]]
name = "dep"
target = { service = "web" }
fault = { type = "dependency", to = "db", status = 503 }
duration = "1500ms"
[[experiments]]
name = "slow-tcp"
target = { service = "raw", mode = "all" }
fault = { type = "tcp", toxic = { type = "latency", latency = "300ms" } }
duration = "2s"
[[experiments]]
name = "burn"
target = { service = "web" }
fault = { type = "cpu", workers = 1 }
duration = "1500ms"
[[experiments]]
name = "hog"
target = { service = "web" }
fault = { type = "memory", mib = 32 }
duration = "1500ms"
[[experiments]]
name = "slow"
target = { service = "web", mode = "all" }
fault = { type = "http-delay", delay = "400ms" }
duration = "1500ms"
"#;
    let stack = Stack::start(&format!("{toml}{experiments}"));
    stack.wait_ready("web", 3);
    stack.wait_ready("db", 2);
    stack.wait_ready("raw", 2);
    let db_addr = format!("127.0.0.1:{db}").parse().unwrap();

    // Dependency: the listener of `db` answers 503 while it lasts, then 200 again.
    let run = background(&stack, "dep");
    eventually("db to fail", Duration::from_secs(5), || {
        (get(db_addr, "/").0 == 503).then_some(())
    });
    assert_eq!(run.wait(), "passed");
    assert_eq!(get(db_addr, "/").0, 200);

    // TCP: a round trip through the listener takes the toxic's latency, then it does not;
    // a connection that drew the toxic is closed when it ends.
    let run = background(&stack, "slow-tcp");
    std::thread::sleep(Duration::from_millis(500));
    assert!(echo_rtt(tcp) >= Duration::from_millis(300));
    let mut pooled = std::net::TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    assert_eq!(run.wait(), "passed");
    assert!(echo_rtt(tcp) < Duration::from_millis(300));
    pooled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut pooled, &mut rest).expect("closed, not timed out");

    // Stressors: a process of ours while they last, gone after.
    for (name, arg) in [("burn", "cpu"), ("hog", "memory")] {
        let run = background(&stack, name);
        eventually(
            &format!("the {arg} stressor"),
            Duration::from_secs(5),
            || stressors(&stack, arg).then_some(()),
        );
        assert_eq!(run.wait(), "passed");
        assert!(!stressors(&stack, arg), "the {arg} stressor was stopped");
    }

    // HTTP delay on every replica: a request takes at least the delay, then it does not.
    let run = background(&stack, "slow");
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(get(format!("127.0.0.1:{web}").parse().unwrap(), "/").0, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(run.wait(), "passed");
    let t = Instant::now();
    get(format!("127.0.0.1:{web}").parse().unwrap(), "/");
    assert!(t.elapsed() < Duration::from_millis(400));
    drop(dir);
}

/// `chaos run NAME` in the background.
struct Running(std::process::Child);

impl Running {
    fn wait(self) -> String {
        let out = self.0.wait_with_output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["outcome"].as_str().unwrap_or("?").to_owned()
    }
}

fn background(stack: &Stack, name: &str) -> Running {
    Running(
        Command::new(BULWARK)
            .args(["chaos", "run", name, "--json"])
            .env("BULWARK_STATE_DIR", stack.state_dir())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Whether a `bulwark chaos-stress KIND` of this stack runs.
fn stressors(stack: &Stack, kind: &str) -> bool {
    stack.descendants().iter().any(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&format!("chaos-stress\0{kind}")))
            .unwrap_or(false)
    })
}

/// One line through the TCP demo (an echo server) behind `port`.
fn echo_rtt(port: u16) -> Duration {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut banner = String::new();
    r.read_line(&mut banner).unwrap();
    let t = Instant::now();
    s.write_all(b"ping\n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "ping\n");
    t.elapsed()
}

#[test]
fn a_disk_fill_leaves_what_it_was_told_and_gives_it_back() {
    // A small tmpfs of our own: the test location the fault fills.
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("disk");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    assert!(mounted, "mounting a tmpfs needs root (CI runs as root)");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mnt);
    let port = free_port();
    let toml = three(port)
        .with(&format!(
            r#"
[[experiments]]
name = "fill"
target = {{ service = "web" }}
fault = {{ type = "disk-fill", path = "{}", leave = 1048576 }}
duration = "1500ms"
[[experiments]]
name = "nowhere"
target = {{ service = "web" }}
fault = {{ type = "disk-fill", path = "{}/missing" }}
duration = "500ms"
"#,
            mnt.display(),
            mnt.display()
        ))
        .build();
    // A fill file left by a bulwark killed during the fault is removed when `up` starts.
    let leftover = mnt.join(".bulwark-chaos-fill-fill");
    std::fs::write(&leftover, vec![0u8; 4 << 20]).unwrap();
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 3);
    assert!(!leftover.exists(), "the leftover fill file was removed");
    let run = background(&stack, "fill");
    let free = eventually("the disk to fill", Duration::from_secs(10), || {
        let f = free_bytes(&mnt);
        (f <= 2 << 20).then_some(f)
    });
    assert!(free >= 512 << 10, "{free} bytes left, 1 MiB asked");
    assert_eq!(run.wait(), "passed");
    assert!(free_bytes(&mnt) >= 7 << 20, "the space came back");
    // A directory that is not there: the run says so and breaks nothing.
    let (ok, report) = chaos_json(&stack, &["run", "nowhere"]);
    assert!(!ok, "{report}");
    assert_eq!(report["outcome"], "failed", "{report}");
    assert!(
        report["reason"].as_str().unwrap().contains("cannot create"),
        "{report}"
    );
}

fn free_bytes(p: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The quickstart as shipped, on ports of its own.
fn quickstart(port: u16) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/quickstart.toml"
    ))
    .unwrap();
    assert!(text.contains("127.0.0.1:8080"));
    format!(
        "{}\n[api]\nlisten = \"127.0.0.1:0\"\n",
        text.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
    )
}

fn verify(file: &Path, faults: &str, report: &Path) -> std::process::Output {
    Command::new(BULWARK)
        .args(["verify", "-f"])
        .arg(file)
        .args([
            "--faults",
            faults,
            "--fault-duration",
            "2s",
            "--settle",
            "500ms",
            "--report",
        ])
        .arg(report)
        .output()
        .unwrap()
}

#[test]
fn verify_scores_the_quickstart_and_names_what_fails_on_a_single_replica() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quickstart.toml");
    std::fs::write(&file, quickstart(free_port())).unwrap();
    let out = verify(
        &file,
        "kill,stop,http-abort,http-reset,http-delay",
        &dir.path().join("ok"),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for fault in ["kill", "stop", "http-abort", "http-reset", "http-delay"] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("web") && l.contains(fault) && l.ends_with("PASS")),
            "{table}"
        );
    }
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("ok/verify.json")).unwrap())
            .unwrap();
    assert_eq!(json["cases"].as_array().unwrap().len(), 5);
    assert_eq!(json["score"], 100.0);
    for case in json["cases"].as_array().unwrap() {
        assert_eq!(case["lost"], 0, "{case}");
        assert!(case["sent"].as_u64().unwrap() >= 1000, "{case}");
    }
    let md = std::fs::read_to_string(dir.path().join("ok/verify.md")).unwrap();
    assert_eq!(
        md.lines().filter(|l| l.starts_with("| web")).count(),
        5,
        "{md}"
    );
    let xml = std::fs::read_to_string(dir.path().join("ok/verify.junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 5);
    assert!(
        doc.descendants().all(|n| !n.has_tag_name("failure")),
        "{xml}"
    );

    // One replica and no retries: a kill loses requests; the failing case is named.
    let single = dir.path().join("single.toml");
    let toml = Demo::new("web")
        .startup_probe()
        .ready_every("200ms")
        .expose(free_port())
        .with("[services.web.expose.retries]\nattempts = 1\n")
        .build();
    std::fs::write(
        &single,
        format!("{toml}\n[api]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let out = verify(&single, "kill", &dir.path().join("bad"));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("kill") && l.ends_with("FAIL")),
        "{table}"
    );
    let xml = std::fs::read_to_string(dir.path().join("bad/verify.junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let failed: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase") && n.children().any(|c| c.has_tag_name("failure")))
        .map(|n| n.attribute("name").unwrap_or("?").to_owned())
        .collect();
    assert_eq!(failed, ["kill"], "{xml}");

    // A stack whose `up` cannot start (its port is taken) fails at once, with up's words.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let toml = Demo::new("web").expose(port).build();
    std::fs::write(
        &single,
        format!("{toml}\n[api]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let began = Instant::now();
    let out = verify(&single, "kill", &dir.path().join("none"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("exited") && err.contains(&port.to_string()),
        "{err}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "{:?}",
        began.elapsed()
    );
}

#[test]
fn a_file_of_experiments_is_checked_against_the_stack_with_located_errors() {
    let port = free_port();
    let stack = Stack::start(
        &Demo::new("web")
            .replicas(2)
            .ready_every("200ms")
            .expose(port)
            .build(),
    );
    stack.wait_ready("web", 2);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exp.toml");
    std::fs::write(
        &file,
        "[[experiments]]\nname = \"x\"\ntarget = { service = \"webb\" }\nfault = { type = \"kill\" }\n",
    )
    .unwrap();
    let stack_file = stack.dir.path().join("stack.toml");
    let out = Command::new(BULWARK)
        .args(["check", "-f"])
        .arg(&stack_file)
        .arg("--experiments")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let want = format!(
        "{}:3:22: error: experiment on unknown service `webb`; did you mean `web`?",
        file.display()
    );
    assert!(err.contains(&want), "{err}");
    // The running stack says the same, naming the same file.
    let out = stack.cli(&["chaos", "run", "x", "-f", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&want),
        "{out:?}"
    );
    // Commands from a client are not run: rollbacks in a posted file are refused.
    let with_rollback = std::fs::read_to_string(&file)
        .unwrap()
        .replace("webb", "web")
        + "rollbacks = [[\"touch\", \"/tmp/x\"]]\n";
    let posted = dir.path().join("posted.toml");
    std::fs::write(&posted, with_rollback).unwrap();
    let out = stack.cli(&["chaos", "run", "x", "-f", posted.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("may not run commands"),
        "{out:?}"
    );
    // Fixed, it runs against the running stack: a SIGKILL of one replica, replaced.
    let fixed = std::fs::read_to_string(&file)
        .unwrap()
        .replace("webb", "web")
        + "duration = \"500ms\"\n";
    std::fs::write(&file, fixed).unwrap();
    let out = stack.cli(&["chaos", "run", "x", "-f", file.to_str().unwrap(), "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "passed", "{report}");
    assert_eq!(report["kind"], "kill");
    assert!(report["recover_ms"].as_u64().is_some(), "{report}");
}

#[test]
fn a_halt_during_the_gate_breaks_nothing_and_the_budget_counts_an_outage_by_the_proxy() {
    let port = free_port();
    let toml = Demo::new("web")
        .replicas(2)
        .with("min_available = 1")
        .ready_every("200ms")
        .expose(port)
        .with(
            r#"
[[experiments]]
name = "slow-gate"
target = { service = "web" }
fault = { type = "kill" }
steady_state = [{ type = "command", run = ["sleep", "2"], timeout = "10s" }]

[[experiments]]
name = "all-abort"
target = { service = "web", mode = "all" }
fault = { type = "http-abort", status = 503 }

[[experiments]]
name = "caller-leaves"
target = { service = "web" }
fault = { type = "kill" }
duration = "500ms"
steady_state = [{ type = "command", run = ["sleep", "1"], timeout = "10s" }]
"#,
        )
        .build();
    let stack = Stack::start(&toml);
    let pids = |s: &Value| -> Vec<u64> {
        replicas_in(s)
            .iter()
            .map(|r| r["pid"].as_u64().unwrap())
            .collect()
    };
    let before = pids(&stack.wait_ready("web", 2));

    // Halted while its gate's probe runs: nothing is killed, the report says halted.
    let run = background(&stack, "slow-gate");
    std::thread::sleep(Duration::from_millis(500));
    let (ok, halted) = chaos_json(&stack, &["halt"]);
    assert!(ok, "{halted}");
    assert_eq!(run.wait(), "halted");
    assert_eq!(
        pids(&stack.service("web")),
        before,
        "a halted experiment breaks nothing"
    );
    assert!(stack.cli(&["faults", "on"]).status.success());

    // Every try to every replica answering 503 is an outage: min_available = 1 refuses it.
    let out = stack.cli(&["chaos", "run", "all-abort"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("min_available"),
        "{err}"
    );
    assert_eq!(
        get(format!("127.0.0.1:{port}").parse().unwrap(), "/").0,
        200
    );

    // A caller that goes away during the gate (its connection dropped) neither leaves the
    // service taken nor cuts the experiment short: it runs to its end, and the next starts.
    let Running(mut caller) = background(&stack, "caller-leaves");
    std::thread::sleep(Duration::from_millis(300));
    caller.kill().unwrap();
    caller.wait().unwrap();
    let st = eventually("the experiment to end", Duration::from_secs(60), || {
        let (_, st) = chaos_json(&stack, &["status"]);
        (st["running"].as_array().is_some_and(Vec::is_empty)
            && st["recent"][0]["name"] == "caller-leaves")
            .then_some(st)
    });
    assert_eq!(st["recent"][0]["outcome"], "passed", "{st}");
    stack.wait_ready("web", 2);
    assert_eq!(background(&stack, "caller-leaves").wait(), "passed");
}
