//! Files `up` leaves for the CLI: the API address and the token.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const TOKEN_FILE: &str = "token";
pub const ADDR_FILE: &str = "api.addr";

/// Creates the state directory (mode 0700) and a fresh token file (mode 0600).
pub fn create(dir: &Path) -> io::Result<String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let path = dir.join(TOKEN_FILE);
    // Remove first: an existing file keeps its old mode when opened for writing.
    let _ = fs::remove_file(&path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(token.as_bytes())?;
    Ok(token)
}

pub fn write_addr(dir: &Path, addr: std::net::SocketAddr) -> io::Result<()> {
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
