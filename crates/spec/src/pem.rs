//! The PEM files of TLS certificates and keys, read alike by `bulwark check` and by the
//! proxy (at start and whenever they change).

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file that does not read, with the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct PemError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, and what to do.
    pub reason: String,
}

fn error(path: &Path, reason: impl std::fmt::Display) -> PemError {
    PemError {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// What pki-types' error says, without its "I/O error: " prefix.
fn pem_error(path: &Path, e: rustls_pki_types::pem::Error) -> PemError {
    match e {
        rustls_pki_types::pem::Error::Io(io) => error(path, format!("cannot read it: {io}")),
        e => error(path, e),
    }
}

/// The largest PEM file read: a certificate chain is a few KiB, a CA bundle a few
/// hundred.
pub const MAX_PEM: u64 = 1024 * 1024;

/// The bytes of `path`, or the error that names it: a regular file of at most
/// [`MAX_PEM`] bytes, opened without blocking (a FIFO is refused at once).
pub fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    use crate::file::FileError;
    crate::file::read_bounded(path, MAX_PEM, false).map_err(|e| match e {
        FileError::Io(e) => pem_error(path, rustls_pki_types::pem::Error::Io(e)),
        FileError::NotRegular(what) => error(path, format!("it is {what}, not a regular file")),
        FileError::TooLarge(_) | FileError::Grew => {
            error(path, "it holds more than the 1 MiB a PEM file may have")
        }
        FileError::OpenToOthers(mode) => error(path, format!("mode {mode:03o} is refused")),
    })
}

/// The certificates of a PEM file, in order (a chain: leaf first).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    certificates_in(path, &read(path)?)
}

/// [`certificates`] of the bytes `pem`, read from `path`.
pub fn certificates_in(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let list = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if list.is_empty() {
        return Err(error(
            path,
            "no certificate in it (a PEM block `-----BEGIN CERTIFICATE-----`)",
        ));
    }
    Ok(list)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    private_key_in(path, &read(path)?)
}

/// [`private_key`] of the bytes `pem`, read from `path`.
pub fn private_key_in(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => error(
            path,
            "no private key in it (a PEM block `-----BEGIN PRIVATE KEY-----`)",
        ),
        e => pem_error(path, e),
    })
}
