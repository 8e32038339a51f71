//! TLS termination on a listener (rustls, ring): on an HTTP listener HTTP/2 and HTTP/1.1 by
//! ALPN (in TCP mode no ALPN), the certificate picked by the client's SNI name, and the
//! files read again when they change.
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

/// What a listener's handshakes use, swapped whole on a reload. Also serves the API's
/// `[api.tls]` (one TLS acceptor for every listener of bulwark's).
pub struct TlsListener {
    service: String,
    /// HTTP/2 and HTTP/1.1 offered by ALPN (an HTTP listener); none in TCP mode, whose
    /// replicas speak a protocol the proxy does not know.
    alpn: bool,
    config: ArcSwap<ServerConfig>,
    /// The files and settings the configuration was built from, and their bytes (a
    /// change event that leaves them alike reloads nothing).
    current: std::sync::Mutex<(spec::Tls, Option<Files>)>,
    changed: Notify,
}

/// TLS sessions kept for resumption per listener (rustls' default is 256).
const SESSIONS: usize = 1024;

/// Time for a writer to finish replacing a certificate and its key before they are read:
/// a file system event says that a file changed, not that the writer is done.
const SETTLE: Duration = Duration::from_millis(100);

impl TlsListener {
    /// Loads `tls`'s certificates for `service`'s listener (`service` names it in logs),
    /// offering HTTP by ALPN if `alpn`.
    pub fn new(service: &str, tls: &spec::Tls, alpn: bool) -> Result<Arc<TlsListener>, TlsError> {
        let files = Files::read(tls)?;
        let config = build(tls, &files, alpn)?;
        Ok(Arc::new(TlsListener {
            service: service.to_owned(),
            alpn,
            config: ArcSwap::from_pointee(config),
            current: std::sync::Mutex::new((tls.clone(), Some(files))),
            changed: Notify::new(),
        }))
    }

    /// The acceptor for a connection accepted now.
    pub fn acceptor(&self) -> TlsAcceptor {
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
            current.1 = None;
        }
        drop(current);
        self.changed.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (spec::Tls, Option<Files>)> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the files again (each once); swaps the configuration if they changed and
    /// load. Blocking: file reads.
    fn reload(&self) {
        let (tls, old) = self.lock().clone();
        let built = Files::read(&tls).map_err(TlsError::from).and_then(|files| {
            if old.as_ref() == Some(&files) {
                return Ok(None);
            }
            Ok(Some((build(&tls, &files, self.alpn)?, files)))
        });
        match built {
            Ok(None) => {}
            Ok(Some((config, files))) => {
                self.config.store(Arc::new(config));
                self.lock().1 = Some(files);
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
    pub async fn follow(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
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
            // File reads: off the async workers.
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.reload()).await;
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

/// The bytes of every file a configuration is built from, each read once: kept to tell a
/// real change from a touch.
#[derive(Clone, PartialEq)]
struct Files {
    /// Each certificate chain and its key, in the order of `certificates`.
    certs: Vec<(Vec<u8>, Vec<u8>)>,
    client_ca: Option<Vec<u8>>,
}

impl Files {
    fn read(tls: &spec::Tls) -> Result<Files, spec::pem::PemError> {
        Ok(Files {
            certs: tls
                .certificates
                .iter()
                .map(|c| Ok((spec::pem::read(&c.cert)?, spec::pem::read(&c.key)?)))
                .collect::<Result<_, spec::pem::PemError>>()?,
            client_ca: tls.client_ca.as_deref().map(spec::pem::read).transpose()?,
        })
    }
}

/// Who may connect: anyone, or clients with a certificate from `client_ca`.
fn client_verifier(
    tls: &spec::Tls,
    ca: Option<&[u8]>,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, TlsError> {
    let (Some(path), Some(ca)) = (&tls.client_ca, ca) else {
        return Ok(None);
    };
    let bad = |reason: String| TlsError::Ca {
        path: path.clone(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in spec::pem::certificates_in(path, ca)? {
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

/// A server configuration for `tls` from its files' bytes. Each has its own session
/// cache: a session resumed after a reload would keep the client certificate it was made
/// with, unchecked against a new `client_ca` or `client_verify`.
fn build(tls: &spec::Tls, files: &Files, alpn: bool) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let keys = tls
        .certificates
        .iter()
        .zip(&files.certs)
        .map(|(c, (chain, key))| certified_key(&provider, c, chain, key))
        .collect::<Result<Vec<_>, _>>()?;
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        spec::TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        spec::TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let clients = client_verifier(tls, files.client_ca.as_deref(), &provider)?;
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(TlsError::Versions)?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(BySni(keys)));
    if alpn {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSIONS);
    Ok(config)
}

/// The certificate of `files` from the bytes `chain` and `key` read from them.
fn certified_key(
    provider: &CryptoProvider,
    files: &spec::CertFiles,
    chain: &[u8],
    key: &[u8],
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = spec::pem::certificates_in(&files.cert, chain)?;
    let key = spec::pem::private_key_in(&files.key, key)?;
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
