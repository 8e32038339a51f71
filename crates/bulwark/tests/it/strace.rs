//! A process's system calls counted by strace (the real tool), for tests of what a request
//! costs the proxy in the kernel.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::harness::{die_with_test, signal};

/// Calls to one system call, and how many of them failed.
#[derive(Debug)]
pub struct Syscalls {
    pub calls: u64,
    pub errors: u64,
}

impl Syscalls {
    /// The calls to `name` by every thread of `pid` while `during` runs.
    pub fn count(pid: u32, name: &str, during: impl FnOnce()) -> Syscalls {
        let out = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-c", "-e", &format!("trace={name}"), "-o"])
            .arg(out.path())
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_test(&mut cmd);
        let mut strace = cmd.spawn().expect("strace (Debian: strace)");
        // "Process N attached with T threads": every thread is traced from then on.
        let mut err = BufReader::new(strace.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("attached") {
            line.clear();
            let n = err.read_line(&mut line).unwrap();
            assert!(n > 0, "strace ended before it attached to {pid}");
        }
        during();
        signal(strace.id(), libc::SIGINT);
        strace.wait().unwrap();
        let summary = std::fs::read_to_string(out.path()).unwrap();
        Syscalls::parse(&summary, name)
            .unwrap_or_else(|| panic!("no {name} line in strace's summary:\n{summary}"))
    }

    /// The `name` row of `strace -c`'s table (`% time seconds usecs/call calls errors
    /// syscall`, errors empty when none failed).
    fn parse(summary: &str, name: &str) -> Option<Syscalls> {
        summary.lines().find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.last() != Some(&name) || cols.len() < 5 {
                return None;
            }
            let errors = if cols.len() == 6 {
                cols[4].parse().ok()?
            } else {
                0
            };
            Some(Syscalls {
                calls: cols[3].parse().ok()?,
                errors,
            })
        })
    }
}
