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

/// How a drill went, measured.
pub(crate) struct Outcome {
    pub restore: Duration,
    pub rto: Duration,
}

/// Runs one drill of `snapshot` in `scratch` (created, and removed afterwards whatever
/// happens). `saved` are the paths the backup saves.
pub(crate) async fn run(
    drill: &Drill,
    service: &str,
    saved: &[PathBuf],
    repo: &Repo,
    snapshot: &str,
    host: &dyn Host,
    scratch: &Path,
) -> Result<Outcome, Error> {
    let _ = std::fs::remove_dir_all(scratch);
    let result = tokio::time::timeout(
        drill.timeout,
        attempt(drill, service, saved, repo, snapshot, host, scratch),
    )
    .await
    .unwrap_or_else(|_| {
        Err(Error::Drill(format!(
            "it did not pass within its timeout of {}",
            humantime::format_duration(drill.timeout)
        )))
    });
    if let Err(e) = std::fs::remove_dir_all(scratch)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %scratch.display(), error = %e, "cannot remove the drill's scratch directory");
    }
    result
}

async fn attempt(
    drill: &Drill,
    service: &str,
    saved: &[PathBuf],
    repo: &Repo,
    snapshot: &str,
    host: &dyn Host,
    scratch: &Path,
) -> Result<Outcome, Error> {
    let started = Instant::now();
    let pairs: Vec<(PathBuf, PathBuf)> = saved
        .iter()
        .enumerate()
        .map(|(i, p)| (absolute(p), scratch.join(restored_name(i, p))))
        .collect();
    let (repo2, snap, jobs) = (repo.clone(), snapshot.to_owned(), pairs.clone());
    tokio::task::spawn_blocking(move || {
        jobs.iter()
            .try_for_each(|(from, to)| repo2.restore(&snap, Some(from), to))
    })
    .await
    .map_err(|e| Error::Drill(format!("the restore task failed: {e}")))??;
    let restore = started.elapsed();

    let (svc, _) = host
        .service(service)
        .ok_or_else(|| Error::Service(format!("service `{service}` is not in the stack")))?;
    let port = runtime::free_port().map_err(|e| Error::Io {
        what: "pick a port for the scratch replica".into(),
        source: e,
    })?;
    let bulwark = host.bulwark();
    let id = runtime::Identity {
        service,
        index: 0,
        port,
        bulwark: &bulwark,
    };
    let cwd = svc.cwd.clone().map_or_else(current_dir, |c| absolute(&c));
    let mut scratch_svc = (*svc).clone();
    for value in scratch_svc.env.values_mut() {
        *value = rewrite(value, &cwd, &pairs);
    }
    let argv: Vec<String> = match &drill.run {
        Some(run) => run
            .iter()
            .map(|a| a.replace("{dir}", &scratch.to_string_lossy()))
            .collect(),
        None => svc.run.iter().map(|a| rewrite(a, &cwd, &pairs)).collect(),
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
    // The check runs in the service's context too (its directory and environment), with
    // `{port}` the scratch replica's.
    let check_cmd = |argv: &[String]| {
        let argv: Vec<String> = argv
            .iter()
            .map(|a| a.replace("{dir}", &scratch.to_string_lossy()))
            .collect();
        runtime::command(&scratch_svc, &argv, &id)
    };
    let checked = check_until_pass(&drill.check, port, &check_cmd, &mut child).await;
    // Scratch: no grace, the whole group goes.
    if pid != 0 {
        launch::signal_group(pid, Signal::SIGKILL);
    }
    let _ = child.wait().await;
    checked.map_err(|why| {
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Error::Drill(if tail.is_empty() {
            why
        } else {
            format!(
                "{why}; the scratch replica's last output: {}",
                tail.join(" | ")
            )
        })
    })?;
    Ok(Outcome {
        restore,
        rto: started.elapsed(),
    })
}

/// Runs the check until it passes; fails when the scratch replica exits first.
/// Builds a check command from its arguments.
type MakeCommand<'a> = dyn Fn(&[String]) -> std::io::Result<tokio::process::Command> + Sync + 'a;

async fn check_until_pass(
    check: &DrillCheck,
    port: u16,
    make: &MakeCommand<'_>,
    child: &mut tokio::process::Child,
) -> Result<(), String> {
    let mut last = String::from("the check never ran");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the scratch replica exited ({status}); last check: {last}"
            ));
        }
        match once(check, port, make).await {
            Ok(()) => return Ok(()),
            Err(why) => last = why,
        }
        tokio::time::sleep(CHECK_EVERY).await;
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
        let pairs = vec![
            (
                PathBuf::from("/srv/db/data"),
                PathBuf::from("/scratch/0-data"),
            ),
            (
                PathBuf::from("/etc/db.conf"),
                PathBuf::from("/scratch/1-db.conf"),
            ),
        ];
        let cwd = Path::new("/srv/db");
        let cases = [
            ("data", "/scratch/0-data"),
            ("./data/", "/scratch/0-data"),
            ("/srv/db/data/dump.rdb", "/scratch/0-data/dump.rdb"),
            ("--dir=data", "--dir=/scratch/0-data"),
            ("PGDATA=../db/data", "PGDATA=/scratch/0-data"),
            ("/etc/db.conf", "/scratch/1-db.conf"),
            ("database", "database"),
            ("--port", "--port"),
            ("{port}", "{port}"),
            ("", ""),
        ];
        for (arg, want) in cases {
            assert_eq!(rewrite(arg, cwd, &pairs), want, "{arg}");
        }
    }
}
