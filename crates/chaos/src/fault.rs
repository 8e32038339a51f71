//! A fault and its undoing: signals to process groups, proxy injections, stressor
//! processes, a file that fills a disk.
//!
//! Invariant: whatever [`apply`] did, [`Applied::undo`] reverses (a stopped group is
//! continued, an injection removed, a stressor killed, the fill file deleted); a kill or a
//! restart has nothing to reverse, bulwark's supervision does the healing.

use std::path::PathBuf;
use std::sync::Arc;

use nix::sys::signal::Signal;
use proxy::{Injected, Injection};
use spec::{ChaosFault, Experiment, FaultAction};

use crate::{Host, Replica};

/// A fault in effect.
pub(crate) struct Applied {
    /// What was broken, in words.
    pub words: String,
    undo: Undo,
}

enum Undo {
    Nothing,
    /// SIGCONT to these process groups.
    Continue(Vec<u32>),
    Injection(Arc<Injected>, u64),
    Stressor(tokio::process::Child),
    File(PathBuf),
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
    host: &dyn Host,
    injected: &Arc<Injected>,
) -> Result<Applied, String> {
    let service = exp.target.service.as_str();
    let indexes: Vec<u32> = targets.iter().map(|r| r.index).collect();
    let on = who(service, targets);
    let (words, undo) = match &exp.fault {
        ChaosFault::Kill(sig) => {
            for pid in targets.iter().filter_map(|r| r.pid) {
                launch::signal_group(pid, *sig);
            }
            (format!("{} of {on}", sig.as_str()), Undo::Nothing)
        }
        ChaosFault::Stop => {
            let pids: Vec<u32> = targets.iter().filter_map(|r| r.pid).collect();
            for &pid in &pids {
                launch::signal_group(pid, Signal::SIGSTOP);
            }
            (format!("SIGSTOP of {on}"), Undo::Continue(pids))
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
            let child = stressor(host, &["cpu".into(), workers.to_string()]).await?;
            (
                format!("CPU stressor, {workers} busy threads"),
                Undo::Stressor(child),
            )
        }
        ChaosFault::Memory { mib } => {
            let child = stressor(host, &["memory".into(), mib.to_string()]).await?;
            (
                format!("memory stressor holding {mib} MiB"),
                Undo::Stressor(child),
            )
        }
        ChaosFault::DiskFill { path, leave } => {
            let file = fill_file(path, &exp.name);
            let (f, l) = (file.clone(), *leave);
            let filled = tokio::task::spawn_blocking(move || fill(&f, l))
                .await
                .map_err(|e| e.to_string())?;
            match filled {
                Ok(bytes) => (
                    format!(
                        "{} filled with {bytes} bytes, {leave} left free",
                        path.display()
                    ),
                    Undo::File(file),
                ),
                Err(e) => {
                    let _ = std::fs::remove_file(&file);
                    return Err(format!("cannot fill {}: {e}", path.display()));
                }
            }
        }
    };
    Ok(Applied { words, undo })
}

impl Applied {
    /// Reverses the fault.
    pub(crate) async fn undo(self) {
        match self.undo {
            Undo::Nothing => {}
            Undo::Continue(pids) => {
                for pid in pids {
                    launch::signal_group(pid, Signal::SIGCONT);
                }
            }
            Undo::Injection(injected, id) => injected.remove(id),
            Undo::Stressor(mut child) => {
                if let Some(pid) = child.id() {
                    launch::signal_group(pid, Signal::SIGKILL);
                }
                let _ = child.wait().await;
            }
            Undo::File(path) => {
                let _ = tokio::fs::remove_file(&path).await;
            }
        }
    }
}

/// `bulwark chaos-stress ARGS`, in a process group of its own that dies with bulwark.
async fn stressor(host: &dyn Host, args: &[String]) -> Result<tokio::process::Child, String> {
    let mut cmd = tokio::process::Command::new(host.bulwark());
    cmd.arg("chaos-stress").args(args).kill_on_drop(true);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    launch::spawn(cmd)
        .await
        .map_err(|e| format!("cannot start the stressor: {e}"))
}

/// The file experiment `name` fills `dir` with.
pub(crate) fn fill_file(dir: &std::path::Path, name: &str) -> PathBuf {
    dir.join(format!(".bulwark-chaos-fill-{name}"))
}

/// Grows `file` until its file system has `leave` bytes free; the bytes written.
fn fill(file: &std::path::Path, leave: u64) -> std::io::Result<u64> {
    use std::io::Write;
    let stat = nix::sys::statvfs::statvfs(file.parent().unwrap_or(std::path::Path::new(".")))
        .map_err(std::io::Error::from)?;
    let free = stat.blocks_available().saturating_mul(stat.fragment_size());
    let want = free.saturating_sub(leave);
    let mut f = std::fs::File::create(file)?;
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    while written < want {
        let n = (want - written).min(chunk.len() as u64) as usize;
        match f.write(&chunk[..n]) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            // A full disk is what was asked for.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => return Err(e),
        }
    }
    f.sync_all()?;
    Ok(written)
}
