//! The local HTTP API served by `bulwark up`: JSON for everything the CLI shows, SSE for
//! live events and logs, `/metrics`, and mutating calls behind a bearer token.
//!
//! Architecture invariant: `api` holds no business logic; it translates HTTP to calls on
//! [`runtime::Supervisor`] and internal state to its own JSON types ([`json`]).
//! Security invariants: every request whose `Host` is not a loopback name is refused (DNS
//! rebinding); every mutating request needs the token that `up` wrote, readable only by
//! its user, into the state directory.
#![forbid(unsafe_code)]

pub mod json;
mod routes;
mod security;
pub mod state_dir;

pub use routes::{AppState, ReloadRequest, router};
pub use security::is_loopback_host;
