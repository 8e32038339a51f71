//! The small files a stack file names (env files, secrets, PEM certificates and keys,
//! fallback bodies), read one way: opened without blocking, so a FIFO or a device is
//! refused at once instead of hanging `check`, `up` or a reload until a writer comes;
//! regular files only; bounded, so a huge file (or one that grows while read) is refused
//! rather than read whole.

use std::io::Read;
use std::path::Path;

/// Why a file was not read.
#[derive(Debug)]
pub(crate) enum FileError {
    /// It could not be opened or read.
    Io(std::io::Error),
    /// It is not a regular file: what it is ("a FIFO", "a directory"...).
    NotRegular(&'static str),
    /// `private` was asked and its group or others may use it: its mode.
    OpenToOthers(u32),
    /// It holds more than the limit: its size.
    TooLarge(u64),
    /// It was within the limit when opened and grew past it while read.
    Grew,
}

/// Reads the regular file `path`, of at most `limit` bytes. `private`: like ssh with a
/// key, refuse a file its group or others may use.
pub(crate) fn read_bounded(path: &Path, limit: u64, private: bool) -> Result<Vec<u8>, FileError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(FileError::Io)?;
    let meta = file.metadata().map_err(FileError::Io)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(FileError::NotRegular(if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a device"
        }));
    }
    let mode = meta.permissions().mode() & 0o777;
    if private && mode & 0o077 != 0 {
        return Err(FileError::OpenToOthers(mode));
    }
    if meta.len() > limit {
        return Err(FileError::TooLarge(meta.len()));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(FileError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(FileError::Grew);
    }
    Ok(bytes)
}
