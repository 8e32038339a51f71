//! The local HTTP API served by `bulwark up`: JSON for everything the CLI shows, SSE for
//! live events and logs, `/metrics`, and mutating calls behind a bearer token.
//!
//! Architecture invariant: `api` holds no business logic; it translates HTTP to calls on
//! [`runtime::Supervisor`] and internal state to its own JSON types ([`json`]).
//! Security invariants: plain HTTP only on a loopback address (a non-loopback `listen`
//! needs `[api.tls]`, checked by `spec`); every request whose `Host` is not a loopback
//! name is refused unless the API speaks TLS (DNS rebinding); every request but
//! `/metrics` needs a token: the owner's, that `up` wrote, readable only by its user, into
//! the state directory, or one made by `bulwark token create` with a role ([`tokens`]) that
//! the call needs (403 otherwise) — or, without a token, a client certificate verified
//! against `[api.tls] client_ca`, with `[api] client_role` (viewer unless said). The server
//! speaks HTTP/1.1 (and HTTP/2 when TLS negotiates it by ALPN), with a connection cap, a
//! TLS-handshake and header-read timeout and header and body size limits
//! ([`server::Limits`], [`MAX_BODY_BYTES`]).
#![forbid(unsafe_code)]

pub mod audit;
mod backups;
mod cert;
pub mod client;
mod experiments;
pub mod json;
mod remedy;
mod rollouts;
mod routes;
mod security;
mod series;
pub mod server;
pub mod session;
pub mod state_dir;
pub mod switches;
pub mod tokens;
mod ui;

pub use routes::{AppState, ReloadRequest, router};

/// Entry points for the fuzz targets in `fuzz/` (cargo fuzz); not an API.
#[doc(hidden)]
pub mod fuzz {
    /// Parses a request's `Host`, query and silence body as the routes do; `now_ms` is
    /// the wall clock in ms since the epoch.
    pub fn parse_untrusted(host: &str, uri: &str, body: &[u8], now_ms: u64) {
        crate::routes::parse_untrusted(host, uri, body, now_ms);
    }
}
pub use security::{MAX_BODY_BYTES, is_loopback_host};
