//! TLS from the proxy to a service's replicas (`expose.upstream_tls`): their certificates
//! verified against the configured CAs for `server_name` (or the replica's IP address),
//! ALPN for the protocol spoken to them, and the proxy's own client certificate if given.
//!
//! Fails closed: a configuration that does not load (a file gone since `check`) makes
//! every connect to the service's replicas fail with the reason; requests are never sent
//! in plain text instead.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::tls::TlsError;

/// How a service's replicas are reached: plain TCP, TLS, or not at all (its TLS
/// configuration did not load; the reason is every connect's error).
#[derive(Clone)]
pub(crate) enum Upstream {
    Plain,
    Tls(Arc<Connector>),
    Broken(Arc<str>),
}

impl Upstream {
    /// The way to `expose`'s replicas; a TLS configuration that does not load is logged
    /// and kept as [`Upstream::Broken`].
    pub(crate) fn new(expose: &spec::Expose) -> Upstream {
        let Some(tls) = &expose.upstream_tls else {
            return Upstream::Plain;
        };
        match Connector::new(tls, expose.upstream_http2) {
            Ok(c) => Upstream::Tls(Arc::new(c)),
            Err(e) => {
                tracing::error!(listen = %expose.listen, error = %e, "TLS to the replicas cannot be set up; requests to them fail");
                Upstream::Broken(format!("TLS to the replicas: {e}").into())
            }
        }
    }
}

/// A TLS client configuration for one service's replicas.
pub(crate) struct Connector {
    connector: TlsConnector,
    name: Option<ServerName<'static>>,
}

impl Connector {
    fn new(tls: &spec::UpstreamTls, http2: bool) -> Result<Connector, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Versions)?;
        let builder = match (&tls.ca, tls.insecure) {
            (Some(ca), false) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in spec::pem::certificates(ca)? {
                    roots.add(cert).map_err(|e| TlsError::Ca {
                        path: ca.clone(),
                        reason: e.to_string(),
                    })?;
                }
                builder.with_root_certificates(roots)
            }
            (None, true) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))),
            // `check` refuses both; never fall back to no verification.
            (Some(_), true) | (None, false) => return Err(TlsError::Verification),
        };
        let mut config = match &tls.client {
            Some(files) => {
                let chain = spec::pem::certificates(&files.cert)?;
                let key = spec::pem::private_key(&files.key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|source| TlsError::Mismatch {
                        cert: files.cert.clone(),
                        key: files.key.clone(),
                        source,
                    })?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![if http2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        let name = match &tls.server_name {
            Some(n) => {
                Some(ServerName::try_from(n.clone()).map_err(|_| TlsError::ServerName(n.clone()))?)
            }
            None => None,
        };
        Ok(Connector {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// The TLS handshake with the replica at `addr` over `tcp`.
    pub(crate) async fn connect(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        self.connector.connect(name, tcp).await
    }
}

/// `insecure_skip_verify`: any certificate is taken, but the handshake's signatures are
/// still checked (the connection is encrypted to whoever holds the key it presented).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connection to a replica: plain TCP, or TLS over it.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
