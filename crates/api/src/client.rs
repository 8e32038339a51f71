//! A client for this API, as the CLI uses it: finds a running `bulwark up` through its
//! state directory, sends the token with every request, and turns an error answer into
//! its message. When the API speaks TLS the server is verified against the CA file in
//! `BULWARK_CACERT` (never without), for the address's IP or `BULWARK_SERVER_NAME`, and
//! `BULWARK_CLIENT_CERT` with `BULWARK_CLIENT_KEY` are presented when set.

use std::net::{AddrParseError, IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use rustls_pki_types::ServerName;

use crate::state_dir::{ADDR_FILE, SCHEME_FILE, TOKEN_FILE};

/// How long connecting and receiving the response head may take (not a streamed body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response body [`Client::call`] reads.
pub const MAX_BODY: usize = 64 * 1024 * 1024;
/// The longest line [`Client::stream`] buffers while waiting for its newline.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// Why a call to the API failed; every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no running `bulwark up` found: cannot read {} (start one, or pass the --state-dir \
         it uses)",
        file.display()
    )]
    NotRunning {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} does not hold an address", file.display())]
    BadAddress {
        file: PathBuf,
        #[source]
        source: AddrParseError,
    },
    #[error(
        "cannot read the API token {} (it belongs to the user running `bulwark up`)",
        file.display()
    )]
    Token {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach bulwark's API at {addr}; is `bulwark up` running?")]
    Unreachable {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "bulwark's API at {addr} did not answer within {}s; is `bulwark up` stuck?",
        after.as_secs_f64()
    )]
    Timeout { addr: SocketAddr, after: Duration },
    #[error(
        "bulwark's API at {addr} speaks TLS; set BULWARK_CACERT to the PEM file of the CA \
         that signed its certificate (the CLI never connects without verifying it)"
    )]
    NoCa { addr: SocketAddr },
    /// A TLS setting of the environment that cannot be used.
    #[error("{0}")]
    TlsSetting(String),
    #[error(
        "TLS handshake with bulwark's API at {addr} failed (verified against BULWARK_CACERT \
         for the name {name})"
    )]
    Tls {
        addr: SocketAddr,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "bulwark's API at {addr} refused the TLS connection ({alert:?}): it takes clients with \
         a certificate from its [api.tls] client_ca; set BULWARK_CLIENT_CERT and \
         BULWARK_CLIENT_KEY to one"
    )]
    Refused {
        addr: SocketAddr,
        alert: rustls::AlertDescription,
    },
    #[error("the API's answer is larger than {limit} bytes; refusing to read it")]
    TooLarge { limit: usize },
    #[error("the API's event stream sent a line longer than {limit} bytes; stopping")]
    LineTooLong { limit: usize },
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("cannot read the API's answer")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Request(#[from] http::Error),
    /// The API answered with an error status; `message` is its `error` field (or the
    /// body, when it is not the API's JSON).
    #[error("API answered {status}: {message}")]
    Status { status: StatusCode, message: String },
}

/// Where a running `bulwark up` serves its API, and its token.
pub struct Client {
    addr: SocketAddr,
    /// Sent with every request: only `/metrics` is open without it.
    token: String,
    /// Bounds connecting and the response head of every request.
    timeout: Duration,
    /// When the API speaks TLS.
    tls: Option<TlsClient>,
}

/// How the client speaks TLS to the API.
struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    /// What the API's certificate must be valid for.
    name: ServerName<'static>,
}

impl TlsClient {
    /// From `BULWARK_CACERT`, `BULWARK_CLIENT_CERT`, `BULWARK_CLIENT_KEY` and
    /// `BULWARK_SERVER_NAME` (else `addr`'s IP). Blocking: reads the files.
    fn from_env(addr: SocketAddr) -> Result<TlsClient, Error> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let ca = var("BULWARK_CACERT").ok_or(Error::NoCa { addr })?;
        let setting =
            |name: &str, e: &dyn std::fmt::Display| Error::TlsSetting(format!("{name}: {e}"));
        let mut roots = rustls::RootCertStore::empty();
        for cert in
            spec::pem::certificates(Path::new(&ca)).map_err(|e| setting("BULWARK_CACERT", &e))?
        {
            roots.add(cert).map_err(|e| setting("BULWARK_CACERT", &e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| setting("TLS", &e))?
            .with_root_certificates(roots);
        let mut config = match (var("BULWARK_CLIENT_CERT"), var("BULWARK_CLIENT_KEY")) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = spec::pem::certificates(Path::new(&cert))
                    .map_err(|e| setting("BULWARK_CLIENT_CERT", &e))?;
                let key = spec::pem::private_key(Path::new(&key))
                    .map_err(|e| setting("BULWARK_CLIENT_KEY", &e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| setting("BULWARK_CLIENT_CERT and BULWARK_CLIENT_KEY", &e))?
            }
            _ => {
                return Err(Error::TlsSetting(
                    "BULWARK_CLIENT_CERT and BULWARK_CLIENT_KEY go together: set both or \
                     neither"
                        .into(),
                ));
            }
        };
        // The client speaks HTTP/1.1 (a request per connection).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = match var("BULWARK_SERVER_NAME") {
            Some(n) => {
                let n = n.to_string_lossy().into_owned();
                ServerName::try_from(n.clone()).map_err(|_| {
                    setting(
                        "BULWARK_SERVER_NAME",
                        &format!("{n:?} is not a DNS name or an IP address"),
                    )
                })?
            }
            None => ServerName::IpAddress(addr.ip().into()),
        };
        Ok(TlsClient {
            config: Arc::new(config),
            name,
        })
    }
}

impl Client {
    pub fn new(addr: SocketAddr, token: String) -> Client {
        Client {
            addr,
            token,
            timeout: DEFAULT_TIMEOUT,
            tls: None,
        }
    }

    /// The API's address as a browser reaches it: `http://ADDR`, or over TLS
    /// `https://` with `BULWARK_SERVER_NAME` when set (what the certificate is valid for).
    pub fn base_url(&self) -> String {
        match self.tls.as_ref().map(|t| &t.name) {
            None => format!("http://{}", self.addr),
            Some(ServerName::DnsName(n)) => format!("https://{}:{}", n.as_ref(), self.addr.port()),
            Some(_) => format!("https://{}", self.addr),
        }
    }

    /// Replaces [`DEFAULT_TIMEOUT`].
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Reads the address, scheme and token that `bulwark up` wrote into `state_dir`; a
    /// token in `BULWARK_TOKEN` is used instead of the owner's. Over TLS, see the module's
    /// doc for what the environment must say.
    pub fn discover(state_dir: &Path) -> Result<Client, Error> {
        let mut client = Client::discover_plain(state_dir)?;
        let scheme = std::fs::read_to_string(state_dir.join(SCHEME_FILE)).unwrap_or_default();
        if scheme.trim() == "https" {
            client.tls = Some(TlsClient::from_env(client.addr)?);
        }
        Ok(client)
    }

    fn discover_plain(state_dir: &Path) -> Result<Client, Error> {
        let addr_file = state_dir.join(ADDR_FILE);
        let addr: SocketAddr = std::fs::read_to_string(&addr_file)
            .map_err(|source| Error::NotRunning {
                file: addr_file.clone(),
                source,
            })?
            .trim()
            .parse()
            .map_err(|source| Error::BadAddress {
                file: addr_file.clone(),
                source,
            })?;
        // A wildcard listen is reached (and its certificate checked) on loopback.
        let addr = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], addr.port()))
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
            }
            _ => addr,
        };
        if let Ok(token) = std::env::var("BULWARK_TOKEN")
            && !token.trim().is_empty()
        {
            return Ok(Client::new(addr, token.trim().to_owned()));
        }
        let token_file = state_dir.join(TOKEN_FILE);
        let token = std::fs::read_to_string(&token_file)
            .map_err(|source| Error::Token {
                file: token_file.clone(),
                source,
            })?
            .trim()
            .to_owned();
        Ok(Client::new(addr, token))
    }

    /// Sends one request on a new connection; a non-empty `body` is sent as JSON. Connecting
    /// and receiving the response head must finish within the timeout; the body is not bound
    /// by it (a followed stream lasts as long as the user wants).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, Error> {
        tokio::time::timeout(self.timeout, self.send_unbounded(method, path, body))
            .await
            .map_err(|_| Error::Timeout {
                addr: self.addr,
                after: self.timeout,
            })?
    }

    async fn send_unbounded(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, Error> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|source| Error::Unreachable {
                addr: self.addr,
                source,
            })?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.to_string())
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(body))?;
        let Some(tls) = &self.tls else {
            return exchange(stream, req).await;
        };
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        let stream = connector
            .connect(tls.name.clone(), stream)
            .await
            .map_err(|source| Error::Tls {
                addr: self.addr,
                name: tls.name.to_str().into_owned(),
                source,
            })?;
        // In TLS 1.3 the server refuses a client certificate (or its absence) after the
        // client's side of the handshake is done: the alert comes with the answer.
        exchange(stream, req).await.map_err(|e| match alert(&e) {
            Some(alert) => Error::Refused {
                addr: self.addr,
                alert,
            },
            None => e,
        })
    }

    /// One call: the response body on success, [`Error::Status`] otherwise.
    pub async fn call(&self, method: Method, path: &str, body: Bytes) -> Result<Bytes, Error> {
        let res = self.send(method, path, body).await?;
        let status = res.status();
        let body = read_limited(res.into_body()).await?;
        if !status.is_success() {
            return Err(status_error(status, &body));
        }
        Ok(body)
    }

    pub async fn get(&self, path: &str) -> Result<Bytes, Error> {
        self.call(Method::GET, path, Bytes::new()).await
    }

    pub async fn post(&self, path: &str) -> Result<Bytes, Error> {
        self.call(Method::POST, path, Bytes::new()).await
    }

    /// Follows a server-sent event stream, calling `each` with every `data:` payload.
    pub async fn stream(&self, path: &str, mut each: impl FnMut(&str)) -> Result<(), Error> {
        let res = self.send(Method::GET, path, Bytes::new()).await?;
        if !res.status().is_success() {
            let status = res.status();
            let body = read_limited(res.into_body()).await?;
            return Err(status_error(status, &body));
        }
        let mut body = res.into_body();
        let mut lines = Lines::default();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            lines.feed(&data, &mut each)?;
        }
        Ok(())
    }
}

/// The TLS alert the server ended a connection with, if that is what `e` is.
fn alert(e: &Error) -> Option<rustls::AlertDescription> {
    let Error::Http(e) = e else { return None };
    let io = std::error::Error::source(e)?.downcast_ref::<std::io::Error>()?;
    match io.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

/// Sends `req` over `io` (HTTP/1.1) and receives the response head.
async fn exchange<IO>(io: IO, req: Request<Full<Bytes>>) -> Result<hyper::Response<Incoming>, Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    Ok(sender.send_request(req).await?)
}

/// Reads a whole response body of at most [`MAX_BODY`] bytes.
async fn read_limited(body: Incoming) -> Result<Bytes, Error> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(Error::TooLarge { limit: MAX_BODY }),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(e) => Err(Error::Http(*e)),
            Err(e) => Err(Error::Body(e)),
        },
    }
}

/// Splits a server-sent event stream into lines, holding at most [`MAX_LINE`] bytes of an
/// unfinished one.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    /// Adds `data`, calling `each` with the payload of every complete `data:` line. Only the
    /// new bytes are searched for a newline: the unfinished rest held before has none.
    fn feed(&mut self, data: &[u8], each: &mut impl FnMut(&str)) -> Result<(), Error> {
        let mut scan = self.buf.len();
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(i) = self.buf[scan..].iter().position(|&b| b == b'\n') {
            let end = scan + i;
            let line = String::from_utf8_lossy(&self.buf[start..end]);
            if let Some(payload) = line.trim_end().strip_prefix("data:") {
                each(payload.trim_start());
            }
            start = end + 1;
            scan = start;
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            return Err(Error::LineTooLong { limit: MAX_LINE });
        }
        Ok(())
    }
}

fn status_error(status: StatusCode, body: &[u8]) -> Error {
    let message = serde_json::from_slice::<crate::json::Error>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    Error::Status { status, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts and holds every connection without ever answering.
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let client = Client::new(addr, "t".into()).with_timeout(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let err = client.get("/v1/status").await.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let err = client.stream("/v1/events?follow=true", |_| {}).await;
        assert!(matches!(err, Err(Error::Timeout { .. })), "{err:?}");
        server.abort();
    }

    #[test]
    fn lines_split_across_chunks_and_bound_an_unfinished_line() {
        let mut got = Vec::new();
        let mut lines = Lines::default();
        let mut each = |p: &str| got.push(p.to_owned());
        lines.feed(b"data: a\r\nda", &mut each).unwrap();
        lines.feed(b"ta: b\n\nevent: x\ndata:c", &mut each).unwrap();
        lines.feed(b"\n", &mut each).unwrap();
        assert_eq!(got, ["a", "b", "c"]);

        let mut lines = Lines::default();
        let chunk = vec![b'x'; 1024 * 1024];
        let mut res = Ok(());
        for _ in 0..=MAX_LINE / chunk.len() {
            res = lines.feed(&chunk, &mut |_| {});
        }
        assert!(matches!(res, Err(Error::LineTooLong { .. })), "{res:?}");
    }
}
