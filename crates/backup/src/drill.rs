//! Restore drills: a snapshot restored into a scratch directory, a scratch replica of the
//! service started on it (never in the balancer), a check run against it until it passes;
//! the time from the start of the restore to the passing check is the measured RTO.

use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use spec::{Drill, DrillCheck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::repo::Repo;
use crate::{Error, Host};

/// Between attempts of the check: the scratch replica is starting, as a probe would wait.
const CHECK_EVERY: Duration = Duration::from_millis(200);
/// One attempt of a command check at most (within the drill's own timeout).
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long past the drill's timeout its backstop waits for the check to give up by itself
/// (and for a scratch replica killed then to be reaped).
const BACKSTOP_GRACE: Duration = Duration::from_secs(5);

/// How a drill went, measured.
pub(crate) struct Outcome {
    pub restore: Duration,
    pub rto: Duration,
}

/// Runs one drill of `snapshot` in `scratch` (created, and removed afterwards whatever
/// happens). `saved` are the paths the backup saves.
///
/// The restore is not cut short by the timeout (a blocking restore cannot be cancelled,
/// and one still writing must not meet the next drill's): the timeout is checked once it
/// is done, and bounds the scratch replica's start and check.
pub(crate) async fn run(
    drill: &Drill,
    service: &str,
    saved: &[PathBuf],
    repo: &Repo,
    snapshot: &str,
    host: &dyn Host,
    scratch: &Path,
) -> Result<Outcome, Error> {
    remove(scratch).await;
    let started = Instant::now();
    let restored = restore(saved, repo, snapshot, scratch).await;
    let result = match restored {
        Err(e) => Err(e),
        Ok(_) if started.elapsed() >= drill.timeout => Err(Error::Drill(format!(
            "the restore alone took longer than the drill's timeout of {}",
            humantime::format_duration(drill.timeout)
        ))),
        Ok(pairs) => {
            let left = drill.timeout - started.elapsed();
            let restore = started.elapsed();
            // A backstop only: the check gives up at `left` by itself, says why, and waits
            // for its scratch replica to be gone before it answers.
            match tokio::time::timeout(
                left + BACKSTOP_GRACE,
                start_and_check(drill, service, &pairs, host, scratch, left),
            )
            .await
            {
                Ok(Ok(())) => Ok(Outcome {
                    restore,
                    rto: started.elapsed(),
                }),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(Error::Drill(format!(
                    "it did not pass within its timeout of {}",
                    humantime::format_duration(drill.timeout)
                ))),
            }
        }
    };
    remove(scratch).await;
    result
}

/// Removes a scratch directory (a restored dataset: seconds of I/O, off the runtime).
async fn remove(dir: &Path) {
    let dir = dir.to_path_buf();
    let shown = dir.clone();
    let done = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    if let Ok(Err(e)) = done
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %shown.display(), error = %e, "cannot remove the drill's scratch directory");
    }
}

/// Restores every saved path into `scratch`; returns (saved path, restored copy) pairs.
/// Saved paths are resolved as the backup resolved them (symbolic links followed), so the
/// snapshot's tree has them.
async fn restore(
    saved: &[PathBuf],
    repo: &Repo,
    snapshot: &str,
    scratch: &Path,
) -> Result<Vec<(PathBuf, PathBuf)>, Error> {
    let (repo, snap, saved, scratch) = (
        repo.clone(),
        snapshot.to_owned(),
        saved.to_vec(),
        scratch.to_path_buf(),
    );
    tokio::task::spawn_blocking(move || {
        let mut pairs = Vec::new();
        for (i, p) in saved.iter().enumerate() {
            let stored = std::fs::canonicalize(p).unwrap_or_else(|_| absolute(p));
            let copy = scratch.join(restored_name(i, p));
            repo.restore(&snap, Some(&stored), &copy)?;
            // Both spellings point at the copy: the service names the path its own way.
            pairs.push((absolute(p), copy.clone()));
            if stored != absolute(p) {
                pairs.push((stored, copy));
            }
        }
        Ok(pairs)
    })
    .await
    .map_err(|e| Error::Drill(format!("the restore task failed: {e}")))?
}

/// Kills a scratch replica's whole process group when the drill ends, however it ends
/// (a timeout drops the future that owns this).
struct KillGroup(u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if self.0 != 0 {
            launch::signal_group(self.0, Signal::SIGKILL);
        }
    }
}

async fn start_and_check(
    drill: &Drill,
    service: &str,
    pairs: &[(PathBuf, PathBuf)],
    host: &dyn Host,
    scratch: &Path,
    left: Duration,
) -> Result<(), Error> {
    let give_up = tokio::time::Instant::now() + left;
    let (svc, _) = host
        .service(service)
        .ok_or_else(|| Error::Service(format!("service `{service}` is not in the stack")))?;
    let port = runtime::free_port().map_err(|e| Error::Io {
        what: "pick a port for the scratch replica".into(),
        source: e,
    })?;
    let bulwark = host.bulwark();
    // The scratch replica is a process on the host, whatever the service's network.
    let id = runtime::Identity {
        service,
        index: 0,
        addr: std::net::Ipv4Addr::LOCALHOST.into(),
        port,
        bulwark: &bulwark,
    };
    let cwd = svc.cwd.clone().map_or_else(current_dir, |c| absolute(&c));
    let mut scratch_svc = (*svc).clone();
    for value in scratch_svc.env.values_mut() {
        *value = rewrite(value, &cwd, pairs);
    }
    // A service that runs inside a saved directory runs inside its restored copy.
    scratch_svc.cwd = Some(PathBuf::from(rewrite(&cwd.to_string_lossy(), &cwd, pairs)));
    let argv: Vec<String> = match &drill.run {
        Some(run) => run
            .iter()
            .map(|a| a.replace("{dir}", &scratch.to_string_lossy()))
            .collect(),
        None => svc.run.iter().map(|a| rewrite(a, &cwd, pairs)).collect(),
    };
    let mut cmd =
        runtime::command(&scratch_svc, &argv, &id).map_err(|e| Error::Drill(e.to_string()))?;
    let log = scratch.join("replica.log");
    let out = std::fs::File::create(&log).map_err(|e| Error::Io {
        what: format!("create {}", log.display()),
        source: e,
    })?;
    let err = out.try_clone().map_err(|e| Error::Io {
        what: format!("open {}", log.display()),
        source: e,
    })?;
    cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
    let mut child = launch::spawn(cmd).await.map_err(|e| {
        Error::Drill(format!(
            "cannot start the scratch replica {:?}: {e}",
            argv[0]
        ))
    })?;
    let pid = child.id().unwrap_or(0);
    // Dropped on every way out, a timeout included: the whole group dies with the drill.
    let group = KillGroup(pid);
    // The check runs in the service's context too (its directory and environment), with
    // `{port}` the scratch replica's.
    let check_cmd = |argv: &[String]| {
        let argv: Vec<String> = argv
            .iter()
            .map(|a| a.replace("{dir}", &scratch.to_string_lossy()))
            .collect();
        runtime::command(&scratch_svc, &argv, &id)
    };
    let checked =
        check_until_pass(&drill.check, port, &check_cmd, pid, give_up, drill.timeout).await;
    // The group is killed while its leader is unreaped; then the leader is reaped, so that
    // the drill's outcome is known only once its scratch replica is gone.
    drop(group);
    let _ = tokio::time::timeout(BACKSTOP_GRACE, child.wait()).await;
    checked.map_err(|why| {
        // The scratch replica ran with the service's secrets.
        let redactor = runtime::Redactor::of(&scratch_svc);
        let tail: Vec<String> = tail_lines(&log, 5)
            .iter()
            .map(|l| redactor.text(l))
            .collect();
        Error::Drill(if tail.is_empty() {
            why
        } else {
            format!(
                "{why}; the scratch replica's last output: {}",
                tail.join(" | ")
            )
        })
    })
}

/// The last `n` lines of a log file, reading at most its last 4 KiB.
fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(4096)));
    let mut bytes = Vec::new();
    let _ = file.take(4096).read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

/// Builds a check command from its arguments.
type MakeCommand<'a> = dyn Fn(&[String]) -> std::io::Result<tokio::process::Command> + Sync + 'a;

/// Runs the check until it passes; fails when the scratch replica (leader `pid`) exits
/// first. The exit is watched without reaping, so the group can still be killed safely.
async fn check_until_pass(
    check: &DrillCheck,
    port: u16,
    make: &MakeCommand<'_>,
    pid: u32,
    give_up: tokio::time::Instant,
    timeout: Duration,
) -> Result<(), String> {
    let last = std::sync::Mutex::new(String::from("the check never ran"));
    let checks = async {
        loop {
            match once(check, port, make).await {
                Ok(()) => return,
                Err(why) => {
                    *last
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = why
                }
            }
            tokio::time::sleep(CHECK_EVERY).await;
        }
    };
    tokio::select! {
        () = checks => Ok(()),
        _ = launch::exited(pid) => {
            let last = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Err(format!("the scratch replica exited before its check passed; last check: {last}"))
        }
        // Here rather than only around the drill, so the failure says why the check failed.
        () = tokio::time::sleep_until(give_up) => {
            let last = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Err(format!(
                "it did not pass within its timeout of {}; last check: {last}",
                humantime::format_duration(timeout)
            ))
        }
    }
}

async fn once(check: &DrillCheck, port: u16, make: &MakeCommand<'_>) -> Result<(), String> {
    match check {
        DrillCheck::Command(argv) => {
            let cmd = make(argv).map_err(|e| format!("cannot run {:?}: {e}", argv[0]))?;
            let out = launch::run_exec(cmd, None, CHECK_TIMEOUT, 2048)
                .await
                .map_err(|e| format!("cannot run {:?}: {e}", argv[0]))?;
            match out.status {
                Some(s) if s.success() => Ok(()),
                Some(s) => Err(format!(
                    "{s}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                None => Err("the check timed out".into()),
            }
        }
        DrillCheck::Http(path) => http_get(port, path).await,
    }
}

/// `GET path` on 127.0.0.1:`port`; passes on 2xx.
async fn http_get(port: u16, path: &str) -> Result<(), String> {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect to port {port}: {e}"))?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let mut head = [0u8; 64];
    let n = tokio::time::timeout(CHECK_TIMEOUT, conn.read(&mut head))
        .await
        .map_err(|_| format!("GET {path}: no answer"))?
        .map_err(|e| format!("GET {path}: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    match line.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') && code.len() == 3 => Ok(()),
        Some(code) => Err(format!("GET {path} answered {code}")),
        None => Err(format!("GET {path}: not an HTTP answer")),
    }
}

/// Where saved path number `i` is restored inside the scratch directory.
fn restored_name(i: usize, saved: &Path) -> String {
    let base = saved
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into());
    format!("{i}-{base}")
}

/// `arg` with every saved path in it replaced by its restored copy: the whole argument,
/// or the value of `--flag=VALUE` / `KEY=VALUE`, when it names a saved path or something
/// inside one (relative names resolve against the service's directory `cwd`).
pub(crate) fn rewrite(arg: &str, cwd: &Path, pairs: &[(PathBuf, PathBuf)]) -> String {
    if let Some(new) = replace_path(arg, cwd, pairs) {
        return new;
    }
    if let Some((key, value)) = arg.split_once('=')
        && let Some(new) = replace_path(value, cwd, pairs)
    {
        return format!("{key}={new}");
    }
    arg.to_owned()
}

fn replace_path(text: &str, cwd: &Path, pairs: &[(PathBuf, PathBuf)]) -> Option<String> {
    if text.is_empty() || text.starts_with('-') {
        return None;
    }
    let full = normalize(&cwd.join(text));
    // A bare word is a path only if it names something: `sleep` or `300` run inside a
    // saved directory are not files in it.
    if !text.contains('/') && std::fs::symlink_metadata(&full).is_err() {
        return None;
    }
    pairs.iter().find_map(|(saved, restored)| {
        let rest = full.strip_prefix(saved).ok()?;
        Some(if rest.as_os_str().is_empty() {
            restored.to_string_lossy().into_owned()
        } else {
            restored.join(rest).to_string_lossy().into_owned()
        })
    })
}

/// `path` made absolute against the current directory, `.` and `..` resolved lexically.
fn absolute(path: &Path) -> PathBuf {
    normalize(&current_dir().join(path))
}

fn current_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_paths_in_arguments_and_values_point_at_the_restored_copies() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("srv/db/data")).unwrap();
        std::fs::write(root.join("db.conf"), "").unwrap();
        let (data, conf) = (root.join("srv/db/data"), root.join("db.conf"));
        let pairs = vec![
            (data.clone(), PathBuf::from("/scratch/0-data")),
            (conf.clone(), PathBuf::from("/scratch/1-db.conf")),
        ];
        let cwd = root.join("srv/db");
        let cases = [
            ("data".to_owned(), "/scratch/0-data"),
            ("./data/".to_owned(), "/scratch/0-data"),
            (
                format!("{}/dump.rdb", data.display()),
                "/scratch/0-data/dump.rdb",
            ),
            ("--dir=data".to_owned(), "--dir=/scratch/0-data"),
            ("PGDATA=../db/data".to_owned(), "PGDATA=/scratch/0-data"),
            (conf.display().to_string(), "/scratch/1-db.conf"),
            ("database".to_owned(), "database"),
            ("--port".to_owned(), "--port"),
            ("{port}".to_owned(), "{port}"),
            (String::new(), ""),
        ];
        for (arg, want) in cases {
            assert_eq!(rewrite(&arg, &cwd, &pairs), want, "{arg}");
        }
        // Inside a saved directory, bare words that name nothing there are not paths.
        assert_eq!(rewrite("sleep", &data, &pairs), "sleep");
        assert_eq!(rewrite("300", &data, &pairs), "300");
        assert_eq!(rewrite(".", &data, &pairs), "/scratch/0-data");
    }
}
