//! `[services.NAME.expose.fallback]` and `[switches.NAME]`: graceful degradation,
//! declared once like every other key.

use std::time::Duration;

use toml::Spanned;

use super::{MANY, directory};
use crate::model::SwitchValue;
use crate::schema::Omitted::Optional;
use crate::schema::{boolean, duration, int, map, string, text};
use crate::section;

/// Largest fallback body (`body` or `body_file`): it is kept in memory and sent whole.
pub(crate) const MAX_FALLBACK_BODY: u64 = 1024 * 1024;

section! {
    /// What a client gets when no replica can answer (none ready, all ejected or behind
    /// open breakers, every try failed with 502, 503 or 504, or the request deadline
    /// passed), and what a route whose switch is off gets: a stale copy when `stale` is on
    /// and one is at hand (`bulwark-fallback: stale`), else a static answer (`status`,
    /// `headers`, `body` or `body_file`; `bulwark-fallback: static`) or the request
    /// forwarded to another service (`service`; `bulwark-fallback: service`).
    pub(crate) struct FallbackTable {
        /// The static answer's status code.
        status: u16 = int(200, 599), Optional("503 with `headers`, `body` or `body_file`");
        /// The static answer's headers.
        headers: Vec<(Spanned<String>, Spanned<String>)> = map("NAME", string().quote_hint()),
            Optional("");
        /// The static answer's body (at most 1 MiB).
        body: String = string(), Optional("empty");
        /// A file holding the static answer's body, read when the stack file is loaded
        /// (relative to its directory; at most 1 MiB).
        body_file: String = text("a file path", directory), Optional("");
        /// Forward the request to this service's proxy instead (a static site, a degraded
        /// version); not with a static answer. A streamed request body (over
        /// `retries.max_body`) cannot be sent twice: such a request gets the first error.
        service: String = string().non_empty(), Optional("");
        /// Keep copies of GET responses the replica marks cacheable (`Cache-Control`
        /// without `no-store` or `private`) and serve them, with an `Age` header, when no
        /// replica can answer.
        stale: bool = boolean(), "false";
        /// Copies kept at most; the least recently used go first.
        stale_max_entries: u32 = int(1, 10_000_000), "1000";
        /// Bytes of copied bodies kept at most.
        stale_max_bytes: u64 = int(1, MANY * 16).unit("bytes"), "16777216";
        /// A response whose body is larger is not copied (it still streams to the client).
        stale_max_entry_bytes: u64 = int(1, MANY).unit("bytes"), "1048576";
        /// How old a copy may be when served; a response's `stale-if-error=N` (RFC 5861)
        /// replaces it.
        stale_max_age: Duration = duration().long().positive(), r#""1h""#;
    }
}

section! {
    /// A run-time switch: `bulwark switch set NAME on|off|PERCENT` changes it (the value
    /// set outlives restarts, in the journal). A route with `switch = "NAME"` sends the
    /// requests for which it is off to the service's fallback; replicas see every switch
    /// in the `bulwark-switches` request header (`name=on,other=off`).
    pub(crate) struct SwitchTable {
        /// `on`, `off`, or a percentage such as `"25%"`: on for that share of requests,
        /// chosen by a hash of the request id header (or the client's address).
        default: SwitchValue = text("\"on\", \"off\" or a percentage such as \"25%\"", switch_value),
            r#""on""#;
        /// What the switch turns on or off, shown by `bulwark switch list`.
        doc: String = string(), Optional("");
    }
}

pub(crate) fn switch_value(s: &str) -> Result<SwitchValue, String> {
    s.parse::<SwitchValue>().map_err(|_| {
        if s.trim().ends_with('%') {
            " (a percentage is from 0% to 100%)".to_owned()
        } else {
            String::new()
        }
    })
}
