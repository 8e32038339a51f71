//! Files `up` leaves for the CLI: the API address and the token.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const TOKEN_FILE: &str = "token";
pub const ADDR_FILE: &str = "api.addr";
/// `https` when the API speaks TLS, else `http` (or absent, from an older `up`).
pub const SCHEME_FILE: &str = "api.scheme";
pub const LOCK_FILE: &str = "lock";

/// The state directory, held by one `bulwark up` for as long as this value lives (an
/// exclusive `flock` on its `lock` file, released by the kernel when the process dies).
pub struct Lock {
    dir: PathBuf,
    _file: nix::fcntl::Flock<fs::File>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the state directory {} is in use by another `bulwark up`{}; stop it first, or give \
         this one another state directory (--state-dir or BULWARK_STATE_DIR)",
        dir.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse { dir: PathBuf, pid: Option<u32> },
    #[error("cannot prepare the state directory {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Creates the state directory (mode 0700) and takes its lock. Nothing in the directory
/// changes unless the lock is taken, so a second `up` cannot disturb a running one.
pub fn lock(dir: &Path) -> Result<Lock, LockError> {
    let io_err = |source| LockError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err)?;
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err)?;
    let mut held = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    {
        Ok(held) => held,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let pid = fs::read_to_string(&path)
                .ok()
                .and_then(|p| p.trim().parse().ok());
            return Err(LockError::InUse {
                dir: dir.to_path_buf(),
                pid,
            });
        }
        Err((_, e)) => return Err(io_err(e.into())),
    };
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err)?;
    // Who holds it, for the message a second `up` prints.
    held.set_len(0).map_err(io_err)?;
    held.write_all(std::process::id().to_string().as_bytes())
        .map_err(io_err)?;
    Ok(Lock {
        dir: dir.to_path_buf(),
        _file: held,
    })
}

impl Lock {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Writes a fresh token file (mode 0600) into the locked state directory. The file is
/// written under a temporary name and renamed into place, so a reader sees the old token
/// or the new one, never a partial one.
pub fn create(lock: &Lock) -> io::Result<String> {
    let dir = lock.dir();
    let token = new_token();
    let tmp = dir.join(format!("{TOKEN_FILE}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(TOKEN_FILE))?;
    Ok(token)
}

/// A new random token: 32 bytes from the thread's CSPRNG, in hex.
pub fn new_token() -> String {
    (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// Writes the API's scheme, then its address (what clients wait for): `https` with `tls`.
pub fn write_addr(dir: &Path, addr: std::net::SocketAddr, tls: bool) -> io::Result<()> {
    let tmp = dir.join(format!("{SCHEME_FILE}.tmp"));
    fs::write(&tmp, if tls { "https" } else { "http" })?;
    fs::rename(tmp, dir.join(SCHEME_FILE))?;
    let tmp = dir.join(format!("{ADDR_FILE}.tmp"));
    fs::write(&tmp, addr.to_string())?;
    fs::rename(tmp, dir.join(ADDR_FILE))
}

/// The default state directory: `$BULWARK_STATE_DIR`, else `$XDG_STATE_HOME/bulwark`,
/// else `~/.local/state/bulwark`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BULWARK_STATE_DIR") {
        return d.into();
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("bulwark");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".local/state/bulwark")
}
