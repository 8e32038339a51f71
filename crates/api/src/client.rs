//! A client for this API, as the CLI uses it: finds a running `bulwark up` through its
//! state directory, sends the token with every request, and turns an error answer into
//! its message.

use std::net::{AddrParseError, SocketAddr};
use std::path::{Path, PathBuf};

use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::state_dir::{ADDR_FILE, TOKEN_FILE};

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
    #[error(transparent)]
    Http(#[from] hyper::Error),
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
}

impl Client {
    pub fn new(addr: SocketAddr, token: String) -> Client {
        Client { addr, token }
    }

    /// Reads the address and token that `bulwark up` wrote into `state_dir`.
    pub fn discover(state_dir: &Path) -> Result<Client, Error> {
        let addr_file = state_dir.join(ADDR_FILE);
        let addr = std::fs::read_to_string(&addr_file)
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
        let token_file = state_dir.join(TOKEN_FILE);
        let token = std::fs::read_to_string(&token_file)
            .map_err(|source| Error::Token {
                file: token_file.clone(),
                source,
            })?
            .trim()
            .to_owned();
        Ok(Client { addr, token })
    }

    /// Sends one request on a new connection; a non-empty `body` is sent as JSON.
    async fn send(
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
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.to_string())
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        Ok(sender.send_request(req.body(Full::new(body))?).await?)
    }

    /// One call: the response body on success, [`Error::Status`] otherwise.
    pub async fn call(&self, method: Method, path: &str, body: Bytes) -> Result<Bytes, Error> {
        let res = self.send(method, path, body).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
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
            let body = res.into_body().collect().await?.to_bytes();
            return Err(status_error(status, &body));
        }
        let mut body = res.into_body();
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line);
                if let Some(payload) = line.trim_end().strip_prefix("data:") {
                    each(payload.trim_start());
                }
            }
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
