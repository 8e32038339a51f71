//! What `bulwark up` does for services that run in containers (the oci driver) before
//! and after its own life: runc must be there (and root, for a private network),
//! containers and private network namespaces a killed bulwark left behind are deleted,
//! and a janitor deletes this bulwark's containers and namespaces if it is killed in turn.
//!
//! Why a janitor process: a replica's `runc run` dies with bulwark (its parent-death
//! signal), but runc cannot take its container down with it when killed, and nothing
//! inside bulwark runs after a kill -9. The janitor is this binary (`bulwark
//! oci-janitor ROOT PID`, not a user command), started in its own process group so a signal
//! to bulwark's group spares it. It blocks reading a pipe whose other end only bulwark
//! holds; the end of input means bulwark has exited, however it exited, and the janitor
//! then deletes the containers that bulwark made (their ids carry its pid), then their
//! network namespaces (named after them, beside runc's root), and exits. After a clean
//! shutdown the supervisor has deleted them all already and the janitor finds none.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;
use runtime::netns;
use runtime::oci::{self, OciDirs};

/// The janitor's argv\[1\].
pub const JANITOR: &str = "oci-janitor";

/// How long the janitor keeps trying: a `runc run` killed while creating its container
/// may leave one that shows up in `runc list` a moment later.
const JANITOR_ROUNDS: u32 = 10;

/// Kept for bulwark's whole life: dropping it (or bulwark's death) releases the janitor.
pub struct Janitor {
    _pipe: ChildStdin,
}

/// Called by `bulwark up` before the supervisor starts. Without container services it
/// does nothing and returns `None`.
pub async fn prepare(stack: &spec::Stack, dirs: &OciDirs) -> anyhow::Result<Option<Janitor>> {
    if !stack.services.iter().any(|s| s.container.is_some()) {
        return Ok(None);
    }
    let runc = oci::runc().await?;
    tracing::debug!(runc = %runc.display(), "containers run through runc");
    let private = stack
        .services
        .iter()
        .filter(|s| s.container.as_ref().map(|c| c.network) == Some(spec::Network::Private));
    let refused: Vec<String> = if nix::unistd::geteuid().is_root() {
        Vec::new()
    } else {
        private.map(|s| oci::needs_root(&s.name)).collect()
    };
    anyhow::ensure!(refused.is_empty(), refused.join("\n"));
    let root = dirs.runc_root();
    let stale = oci::remove_all(&root, None)
        .await
        .with_context(|| format!("cannot delete the containers left in {}", root.display()))?;
    if !stale.is_empty() {
        tracing::warn!(
            containers = stale.join(", "),
            "deleted containers left behind by a bulwark that was killed"
        );
    }
    let stale = netns::remove_all(&dirs.netns(), None)
        .await
        .with_context(|| {
            format!(
                "cannot remove the namespaces left in {}",
                dirs.netns().display()
            )
        })?;
    if !stale.is_empty() {
        tracing::warn!(
            namespaces = stale.join(", "),
            "removed private networks left behind by a bulwark that was killed"
        );
    }
    // Opens a file and forks: off the async workers.
    let pipe = tokio::task::spawn_blocking(move || spawn_janitor(&root))
        .await
        .context("starting the container janitor")??;
    Ok(Some(Janitor { _pipe: pipe }))
}

/// Starts the janitor for runc's `root`; its stderr goes to `janitor.log` beside it.
///
/// Spawned directly, not through the launcher: the janitor must outlive bulwark (no
/// parent-death signal), and nobody waits for it (the orphan reaper takes it if it ends
/// first).
fn spawn_janitor(root: &Path) -> anyhow::Result<ChildStdin> {
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let log_path = root.with_file_name("janitor.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut child = std::process::Command::new(
        std::env::current_exe().context("cannot find this program's path")?,
    )
    .arg(JANITOR)
    .arg(root)
    .arg(std::process::id().to_string())
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(log)
    .process_group(0)
    .spawn()
    .context("cannot start the container janitor")?;
    child.stdin.take().context("the janitor has no stdin")
}

/// The janitor's body: waits for the end of its input, then deletes the containers its
/// bulwark made under runc's `root` (a bulwark started since, on the same state
/// directory, has containers there too).
pub fn janitor(args: &[std::ffi::OsString]) -> ExitCode {
    let [root, owner] = args else {
        eprintln!("usage: bulwark {JANITOR} RUNC_ROOT BULWARK_PID (started by bulwark up)");
        return ExitCode::from(2);
    };
    let root = PathBuf::from(root);
    let Some(owner) = owner.to_str().and_then(|o| o.parse::<u32>().ok()) else {
        eprintln!("bulwark {JANITOR}: BULWARK_PID must be a process id");
        return ExitCode::from(2);
    };
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async {
        for _ in 0..JANITOR_ROUNDS {
            match oci::remove_all(&root, Some(owner)).await {
                // Its containers gone, their namespaces (`oci/netns`, beside `oci/runc`).
                Ok(ids) if ids.is_empty() => {
                    let dir = root.with_file_name("netns");
                    return match netns::remove_all(&dir, Some(owner)).await {
                        Ok(_) => ExitCode::SUCCESS,
                        Err(e) => {
                            eprintln!("bulwark is gone; cannot remove its namespaces: {e}");
                            ExitCode::FAILURE
                        }
                    };
                }
                Ok(ids) => eprintln!("bulwark is gone: deleted containers {}", ids.join(", ")),
                Err(e) => eprintln!("bulwark is gone; cannot delete its containers: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        ExitCode::FAILURE
    })
}
