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

/// The bytes of `path`, or the error that names it.
pub fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|e| pem_error(path, rustls_pki_types::pem::Error::Io(e)))
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
