//! A fault and its undoing: signals to replicas (every process of each, as the host's
//! driver knows them), proxy injections, stressor processes, a file that fills a disk.
//!
//! Invariant: whatever [`apply`] did, [`Applied::undo`] reverses (a stopped group is
//! continued, an injection removed, a stressor killed, the fill file deleted); a kill or a
//! restart has nothing to reverse, bulwark's supervision does the healing.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::Signal;
use proxy::{Injected, Injection};
use spec::{ChaosFault, Experiment, FaultAction};

use crate::{Host, Replica};

/// A fault in effect.
pub(crate) struct Applied {
    /// What was broken, in words.
    pub words: String,
    /// `None` once undone.
    undo: Option<Undo>,
}

enum Undo {
    Nothing,
    /// SIGCONT to these replicas (index, pid) of the service, those still run by the same
    /// process (one restarted meanwhile is someone else's).
    Continue(Arc<dyn Host>, String, Vec<(u32, u32)>),
    Injection(Arc<Injected>, u64),
    Stressor(tokio::process::Child),
    /// The fill file, the flag that stops its writer, and the writer.
    File(
        PathBuf,
        Arc<AtomicBool>,
        Option<tokio::task::JoinHandle<()>>,
    ),
}

fn action_words(action: FaultAction) -> String {
    match action {
        FaultAction::Delay(d) => format!("{} ms delay", d.as_millis()),
        FaultAction::Abort(s) => format!("answers {s}"),
        FaultAction::Reset => "connections reset".into(),
    }
}

fn who(service: &str, targets: &[Replica]) -> String {
    let list: Vec<String> = targets
        .iter()
        .map(|r| format!("{service}/{}", r.index))
        .collect();
    list.join(", ")
}

/// Breaks what `exp` says on `targets` (ready replicas of its service).
pub(crate) async fn apply(
    exp: &Experiment,
    targets: &[Replica],
    host: &Arc<dyn Host>,
    injected: &Arc<Injected>,
) -> Result<Applied, String> {
    let service = exp.target.service.as_str();
    let indexes: Vec<u32> = targets.iter().map(|r| r.index).collect();
    let on = who(service, targets);
    let (words, undo) = match &exp.fault {
        ChaosFault::Kill(sig) => {
            signal(host, service, running(targets), *sig).await;
            (format!("{} of {on}", sig.as_str()), Undo::Nothing)
        }
        ChaosFault::Stop => {
            let stopped = running(targets);
            signal(host, service, stopped.clone(), Signal::SIGSTOP).await;
            let undo = Undo::Continue(host.clone(), service.to_owned(), stopped);
            (format!("SIGSTOP of {on}"), undo)
        }
        ChaosFault::Restart => {
            for r in targets {
                host.restart(service, r.index)?;
            }
            (format!("restart of {on}"), Undo::Nothing)
        }
        ChaosFault::Http { action, percent } => {
            let id = injected.add(Injection::Replica {
                service: service.to_owned(),
                replicas: indexes,
                action: *action,
                percent: *percent,
            });
            let words = format!("{} for {percent} % of tries to {on}", action_words(*action));
            (words, Undo::Injection(injected.clone(), id))
        }
        ChaosFault::Tcp(toxic) => {
            let id = injected.add(Injection::Toxic {
                service: service.to_owned(),
                replicas: indexes,
                toxic: toxic.clone(),
            });
            (
                format!("{:?} toxic on connections to {on}", toxic.kind),
                Undo::Injection(injected.clone(), id),
            )
        }
        ChaosFault::Dependency {
            to,
            action,
            percent,
        } => {
            let id = injected.add(Injection::Entry {
                service: to.clone(),
                action: *action,
                percent: *percent,
            });
            let words = format!(
                "{} for {percent} % of requests to {to}",
                action_words(*action)
            );
            (words, Undo::Injection(injected.clone(), id))
        }
        ChaosFault::Cpu { workers } => {
            let child = stressor(&**host, &["cpu".into(), workers.to_string()]).await?;
            (
                format!("CPU stressor, {workers} busy threads"),
                Undo::Stressor(child),
            )
        }
        ChaosFault::Memory { mib } => {
            let child = stressor(&**host, &["memory".into(), mib.to_string()]).await?;
            (
                format!("memory stressor holding {mib} MiB"),
                Undo::Stressor(child),
            )
        }
        ChaosFault::DiskFill { path, leave } => start_fill(&exp.name, path, *leave).await?,
    };
    Ok(Applied {
        words,
        undo: Some(undo),
    })
}

impl Applied {
    /// Reverses the fault.
    pub(crate) async fn undo(mut self) {
        match self.undo.take() {
            Some(Undo::Stressor(mut child)) => {
                if let Some(pid) = child.id() {
                    launch::signal_group(pid, Signal::SIGKILL);
                }
                let _ = child.wait().await;
            }
            Some(Undo::Continue(host, service, stopped)) => {
                signal(&host, &service, stopped, Signal::SIGCONT).await;
            }
            Some(Undo::File(path, stop, writer)) => {
                stop.store(true, Ordering::Release);
                if let Some(w) = writer {
                    let _ = w.await;
                }
                let _ = tokio::fs::remove_file(&path).await;
            }
            Some(other) => undo_now(other),
            None => {}
        }
    }
}

/// `(index, pid)` of the targets that run.
fn running(targets: &[Replica]) -> Vec<(u32, u32)> {
    targets
        .iter()
        .filter_map(|r| r.pid.map(|pid| (r.index, pid)))
        .collect()
}

/// `sig` to every process of each replica `(index, pid)` still run by `pid`, on the
/// blocking pool (the host may read procfs and cgroupfs).
async fn signal(host: &Arc<dyn Host>, service: &str, replicas: Vec<(u32, u32)>, sig: Signal) {
    let (host, service) = (host.clone(), service.to_owned());
    let _ = tokio::task::spawn_blocking(move || {
        for (index, pid) in replicas {
            host.signal(&service, index, pid, sig);
        }
    })
    .await;
}

/// What can be undone without waiting (a dropped fault: reads procfs in place).
fn undo_now(undo: Undo) {
    match undo {
        Undo::Nothing => {}
        Undo::Continue(host, service, stopped) => {
            for (index, pid) in stopped {
                host.signal(&service, index, pid, Signal::SIGCONT);
            }
        }
        Undo::Injection(injected, id) => injected.remove(id),
        Undo::Stressor(child) => {
            if let Some(pid) = child.id() {
                launch::signal_group(pid, Signal::SIGKILL);
            }
        }
        Undo::File(path, stop, _) => {
            stop.store(true, Ordering::Release);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Starts filling `path` (a writer on the blocking pool) until `leave` bytes are left.
async fn start_fill(
    name: &str,
    path: &std::path::Path,
    leave: u64,
) -> Result<(String, Undo), String> {
    let file = fill_file(path, name);
    let f = tokio::fs::File::create(&file)
        .await
        .map_err(|e| format!("cannot create {}: {e}", file.display()))?
        .into_std()
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let (dir, flag, left) = (path.to_path_buf(), stop.clone(), leave);
    // The disk fills while the fault lasts; undoing stops the writer first.
    let writer = tokio::task::spawn_blocking(move || {
        if let Err(e) = fill(f, &dir, left, &flag) {
            tracing::warn!(dir = %dir.display(), error = %e, "disk fill stopped");
        }
    });
    Ok((
        format!("{} filled until {leave} bytes are left", path.display()),
        Undo::File(file, stop, Some(writer)),
    ))
}

/// A fault whose run ended some other way (its task panicked or was cancelled) is undone
/// here, without waiting.
impl Drop for Applied {
    fn drop(&mut self) {
        if let Some(undo) = self.undo.take() {
            undo_now(undo);
        }
    }
}

/// `bulwark chaos-stress ARGS`, in a process group of its own that dies with bulwark.
async fn stressor(host: &dyn Host, args: &[String]) -> Result<tokio::process::Child, String> {
    let mut cmd = tokio::process::Command::new(host.bulwark());
    cmd.arg("chaos-stress").args(args).kill_on_drop(true);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let mut child = launch::spawn(cmd)
        .await
        .map_err(|e| format!("cannot start the stressor: {e}"))?;
    // One that cannot allocate what it was asked exits at once: that is no fault.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    match child.try_wait() {
        Ok(None) => Ok(child),
        Ok(Some(status)) => Err(format!("the stressor exited at once ({status})")),
        Err(e) => Err(format!("the stressor: {e}")),
    }
}

/// The file experiment `name` fills `dir` with.
pub(crate) fn fill_file(dir: &std::path::Path, name: &str) -> PathBuf {
    dir.join(format!(".bulwark-chaos-fill-{name}"))
}

/// Grows `f` (in `dir`) until the file system has `leave` bytes free, or `stop` is set.
fn fill(
    mut f: std::fs::File,
    dir: &std::path::Path,
    leave: u64,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    use std::io::Write;
    let stat = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let free = stat.blocks_available().saturating_mul(stat.fragment_size());
    let want = free.saturating_sub(leave);
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    while written < want && !stop.load(Ordering::Acquire) {
        let n = (want - written).min(chunk.len() as u64) as usize;
        match f.write(&chunk[..n]) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            // A full disk is what was asked for.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => return Err(e),
        }
    }
    f.sync_all()
}
