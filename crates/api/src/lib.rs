//! The local HTTP API served by `bulwark up`: JSON for everything the CLI shows, SSE for
//! live events and logs, `/metrics`, and mutating calls behind a bearer token.
//!
//! Architecture invariant: `api` holds no business logic; it translates HTTP to calls on
//! [`runtime::Supervisor`] and internal state to its own JSON types ([`json`]).
//! Security invariants: every request whose `Host` is not a loopback name is refused (DNS
//! rebinding; with `[api] allow_remote`, IP literals are accepted too); every request but
//! `/metrics` needs a token: the owner's, that `up` wrote, readable only by its user, into
//! the state directory, or one made by `bulwark token create` with a role ([`tokens`]) that
//! the call needs (403 otherwise); the server speaks HTTP/1.1 only, with a connection cap, a header-read timeout
//! and header and body size limits ([`server::Limits`], [`MAX_BODY_BYTES`]).
#![forbid(unsafe_code)]

pub mod audit;
mod backups;
pub mod client;
mod experiments;
pub mod json;
mod remedy;
mod rollouts;
mod routes;
mod security;
pub mod server;
pub mod state_dir;
pub mod switches;
pub mod tokens;

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
