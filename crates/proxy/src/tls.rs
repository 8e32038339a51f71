//! TLS termination on an HTTP listener (rustls, ring): HTTP/2 and HTTP/1.1 by ALPN, the
//! certificate picked by the client's SNI name, and the files read again when they change.
//!
//! Invariant: a handshake uses the configuration current when its connection was
//! accepted; a reload (a file changed, or the stack file's `tls` table) only swaps what
//! new connections get, so open connections never notice. A reload that fails (a file
//! half written, a key that does not match its certificate) keeps the previous
//! certificates and says why in the log.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{DnsName, ServerName};
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsAcceptor;

/// Why a listener's certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file that does not read.
    #[error(transparent)]
    Pem(#[from] spec::pem::PemError),
    /// A private key rustls cannot sign with.
    #[error("{}: unusable private key: {source}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// A key that is not the certificate's.
    #[error("{} is not the private key of {}: {source}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The protocol versions asked for are not supported by the crypto provider.
    #[error("TLS versions: {0}")]
    Versions(rustls::Error),
    /// A CA file holds no usable CA certificate.
    #[error("{}: no usable CA certificate: {reason}", path.display())]
    Ca {
        /// The CA file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// `upstream_tls` without exactly one of `ca` and `insecure_skip_verify`.
    #[error("upstream_tls needs exactly one of `ca` and `insecure_skip_verify = true`")]
    Verification,
    /// `upstream_tls.server_name` is not a DNS name or an IP address.
    #[error("server_name {0:?} is not a DNS name or an IP address")]
    ServerName(String),
}

/// What a listener's handshakes use, swapped whole on a reload.
pub(crate) struct TlsListener {
    service: String,
    config: ArcSwap<ServerConfig>,
    /// The files and settings the configuration was built from, and their bytes (a
    /// change event that leaves them alike reloads nothing).
    current: std::sync::Mutex<(spec::Tls, Vec<u8>)>,
    changed: Notify,
}

/// TLS sessions kept for resumption per listener (rustls' default is 256).
const SESSIONS: usize = 1024;

/// Time for a writer to finish replacing a certificate and its key before they are read:
/// a file system event says that a file changed, not that the writer is done.
const SETTLE: Duration = Duration::from_millis(100);

impl TlsListener {
    /// Loads `tls`'s certificates for `service`'s listener.
    pub(crate) fn new(service: &str, tls: &spec::Tls) -> Result<Arc<TlsListener>, TlsError> {
        let (config, bytes) = build(tls)?;
        Ok(Arc::new(TlsListener {
            service: service.to_owned(),
            config: ArcSwap::from_pointee(config),
            current: std::sync::Mutex::new((tls.clone(), bytes)),
            changed: Notify::new(),
        }))
    }

    /// The acceptor for a connection accepted now.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.load_full())
    }

    /// Applies the stack file's `tls` table (on every reload of the stack): the files are
    /// read again, and the configuration rebuilt if they or the table changed; the files
    /// are watched from now on.
    pub(crate) fn set(&self, tls: &spec::Tls) {
        let mut current = self.lock();
        if current.0 != *tls {
            current.0 = tls.clone();
            // Settings besides the files (`min_version`, `client_verify`) changed too:
            // rebuild even if the files' bytes are the same.
            current.1.clear();
        }
        drop(current);
        self.changed.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (spec::Tls, Vec<u8>)> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the files again; swaps the configuration if they changed and load.
    fn reload(&self) {
        let (tls, old) = self.lock().clone();
        if read_all(&tls).is_ok_and(|now| now == old) {
            return;
        }
        match build(&tls) {
            Ok((config, bytes)) => {
                self.config.store(Arc::new(config));
                self.lock().1 = bytes;
                tracing::info!(service = %self.service, "TLS certificates reloaded");
            }
            Err(e) => tracing::warn!(
                service = %self.service,
                error = %e,
                "TLS certificates not reloaded; the previous ones are still served"
            ),
        }
    }

    /// Watches the files' directories and reloads on every change until `stop` turns
    /// true (also after `set` changed the files). A directory that cannot be watched is
    /// logged; its files are then read again on `bulwark reload` only.
    pub(crate) async fn follow(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut watching: Option<(Vec<PathBuf>, Option<notify::RecommendedWatcher>)> = None;
        loop {
            let dirs = self.dirs();
            if watching.as_ref().is_none_or(|(d, _)| *d != dirs) {
                watching = Some((dirs.clone(), self.watch(&dirs)));
            }
            tokio::select! {
                () = self.changed.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            tokio::time::sleep(SETTLE).await;
            self.reload();
        }
    }

    /// The directories of the current files.
    fn dirs(&self) -> Vec<PathBuf> {
        let current = self.lock();
        let tls = &current.0;
        let dirs: std::collections::BTreeSet<PathBuf> = tls
            .certificates
            .iter()
            .flat_map(|c| [&c.cert, &c.key])
            .chain(tls.client_ca.as_ref())
            .filter_map(|f| f.parent().map(PathBuf::from))
            .collect();
        dirs.into_iter().collect()
    }

    /// A watcher of `dirs` that wakes `follow` on any change but a read.
    fn watch(self: &Arc<Self>, dirs: &[PathBuf]) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher;
        let me = Arc::downgrade(self);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access())
                    && let Some(me) = me.upgrade()
                {
                    me.changed.notify_one();
                }
            })
            .map_err(
                |e| tracing::warn!(service = %self.service, error = %e, "cannot watch TLS files"),
            )
            .ok()?;
        for dir in dirs {
            if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(service = %self.service, dir = %dir.display(), error = %e, "cannot watch TLS files");
            }
        }
        Some(watcher)
    }
}

/// The bytes of every file, in order (to tell a real change from a touch).
fn read_all(tls: &spec::Tls) -> std::io::Result<Vec<u8>> {
    let mut all = Vec::new();
    for c in &tls.certificates {
        all.extend(std::fs::read(&c.cert)?);
        all.extend(std::fs::read(&c.key)?);
    }
    if let Some(ca) = &tls.client_ca {
        all.extend(std::fs::read(ca)?);
    }
    Ok(all)
}

/// Who may connect: anyone, or clients with a certificate from `client_ca`.
fn client_verifier(
    tls: &spec::Tls,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, TlsError> {
    let Some(path) = &tls.client_ca else {
        return Ok(None);
    };
    let bad = |reason: String| TlsError::Ca {
        path: path.clone(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in spec::pem::certificates(path)? {
        roots.add(ca).map_err(|e| bad(e.to_string()))?;
    }
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    );
    let builder = match tls.client_verify {
        spec::ClientVerify::Required => builder,
        spec::ClientVerify::Optional => builder.allow_unauthenticated(),
    };
    builder.build().map(Some).map_err(|e| bad(e.to_string()))
}

/// A server configuration for `tls`, with the bytes it was read from. Each has its own
/// session cache: a session resumed after a reload would keep the client certificate it
/// was made with, unchecked against a new `client_ca` or `client_verify`.
fn build(tls: &spec::Tls) -> Result<(ServerConfig, Vec<u8>), TlsError> {
    let bytes = read_all(tls).unwrap_or_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let keys = tls
        .certificates
        .iter()
        .map(|c| certified_key(&provider, c))
        .collect::<Result<Vec<_>, _>>()?;
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        spec::TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        spec::TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let clients = client_verifier(tls, &provider)?;
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(TlsError::Versions)?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(BySni(keys)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSIONS);
    Ok((config, bytes))
}

fn certified_key(
    provider: &CryptoProvider,
    files: &spec::CertFiles,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = spec::pem::certificates(&files.cert)?;
    let key = spec::pem::private_key(&files.key)?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::Key {
            path: files.key.clone(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|source| TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
    Ok(Arc::new(certified))
}

/// The first certificate valid for the client's SNI name, else the first one. Costs one
/// certificate parse per certificate tried, per handshake: listeners have a few.
#[derive(Debug)]
struct BySni(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello
            .server_name()
            .and_then(|n| DnsName::try_from(n).ok())
            .map(|n| ServerName::DnsName(n.to_owned()));
        name.and_then(|name| {
            self.0.iter().find(|k| {
                k.end_entity_cert()
                    .ok()
                    .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                    .is_some_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
            })
        })
        .or(self.0.first())
        .cloned()
    }
}
