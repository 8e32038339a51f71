//! The dashboard's logins: one-time login codes that `bulwark dashboard` asks for, and the
//! browser sessions a code (or a pasted token) is exchanged for. Both live in memory only
//! (a restart of `up` logs every browser out), both are bounded, and both are kept by the
//! SHA-256 of their value, as tokens are, so a lookup's timing says nothing about a value.
//!
//! A session carries the caller (token name and role) that made it: it can do what that
//! token could, no more, and is refused once that token is revoked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::tokens::TokenInfo;

/// How long a login code may be used.
pub const CODE_TTL: Duration = Duration::from_secs(60);
/// Login codes outstanding at most; one more is refused until one is used or expires.
pub const MAX_CODES: usize = 32;
/// How long a session lasts from login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions at most; one more ends the oldest.
pub const MAX_SESSIONS: usize = 1024;
/// The session cookie's name.
pub const COOKIE: &str = "bulwark_session";

/// Why a login code was not made.
#[derive(Debug, thiserror::Error)]
#[error("{MAX_CODES} login codes are outstanding; use one or wait a minute for them to expire")]
pub struct TooManyCodes;

struct Entry {
    caller: TokenInfo,
    expires: Instant,
}

#[derive(Default)]
struct Inner {
    codes: HashMap<[u8; 32], Entry>,
    sessions: HashMap<[u8; 32], Entry>,
}

/// The login codes and sessions of one API server.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// Whether `value` looks like something this module made (64 hex digits): anything else
/// is refused before it is hashed or looked up.
fn well_formed(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Sessions {
    /// A new one-time login code for `caller`, and when it expires (ms since the epoch).
    pub fn new_code(&self, caller: TokenInfo, now: Instant) -> Result<(String, u64), TooManyCodes> {
        let mut inner = self.lock();
        inner.codes.retain(|_, c| c.expires > now);
        if inner.codes.len() >= MAX_CODES {
            return Err(TooManyCodes);
        }
        let code = crate::state_dir::new_token();
        inner.codes.insert(
            digest(&code),
            Entry {
                caller,
                expires: now + CODE_TTL,
            },
        );
        let expires_ms = SystemTime::now()
            .checked_add(CODE_TTL)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Ok((code, expires_ms))
    }

    /// The caller a code was made for, if it exists and has not expired; it is used up
    /// either way.
    pub fn redeem(&self, code: &str, now: Instant) -> Option<TokenInfo> {
        if !well_formed(code) {
            return None;
        }
        let entry = self.lock().codes.remove(&digest(code))?;
        (entry.expires > now).then_some(entry.caller)
    }

    /// A new session for `caller`; when full, the session closest to its end is dropped.
    pub fn open(&self, caller: TokenInfo, now: Instant) -> String {
        let mut inner = self.lock();
        inner.sessions.retain(|_, s| s.expires > now);
        if inner.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = inner
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k)
        {
            inner.sessions.remove(&oldest);
        }
        let id = crate::state_dir::new_token();
        inner.sessions.insert(
            digest(&id),
            Entry {
                caller,
                expires: now + SESSION_TTL,
            },
        );
        id
    }

    /// Who a session belongs to, if it exists and has not expired.
    pub fn check(&self, id: &str, now: Instant) -> Option<TokenInfo> {
        if !well_formed(id) {
            return None;
        }
        let inner = self.lock();
        let s = inner.sessions.get(&digest(id))?;
        (s.expires > now).then(|| s.caller.clone())
    }

    /// Ends a session (logout); whether there was one.
    pub fn close(&self, id: &str) -> bool {
        well_formed(id) && self.lock().sessions.remove(&digest(id)).is_some()
    }

    /// Codes outstanding and sessions open (expired ones may still count until the next
    /// code or session is made).
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.codes.len(), inner.sessions.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The session id in a request's `Cookie` headers, if there is a well-formed one.
pub fn from_cookies(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, v)| *k == COOKIE && well_formed(v))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::Role;

    fn caller() -> TokenInfo {
        TokenInfo {
            name: "ci".into(),
            role: Role::Viewer,
            created: String::new(),
        }
    }

    #[test]
    fn a_code_is_used_once_and_expires() {
        let s = Sessions::default();
        let now = Instant::now();
        let (code, _) = s.new_code(caller(), now).unwrap();
        assert_eq!(s.redeem(&code, now).unwrap().name, "ci");
        assert!(s.redeem(&code, now).is_none(), "reused");
        let (late, _) = s.new_code(caller(), now).unwrap();
        assert!(s.redeem(&late, now + CODE_TTL).is_none(), "expired");
        assert!(s.redeem("garbage", now).is_none());
    }

    #[test]
    fn codes_and_sessions_are_bounded() {
        let s = Sessions::default();
        let now = Instant::now();
        for _ in 0..MAX_CODES {
            s.new_code(caller(), now).unwrap();
        }
        assert!(s.new_code(caller(), now).is_err());
        // Expired codes make room.
        assert!(s.new_code(caller(), now + CODE_TTL).is_ok());
        let first = s.open(caller(), now);
        for i in 1..=MAX_SESSIONS {
            s.open(caller(), now + Duration::from_millis(i as u64));
        }
        assert_eq!(s.counts().1, MAX_SESSIONS);
        assert!(s.check(&first, now).is_none(), "the oldest was dropped");
    }

    #[test]
    fn sessions_expire_and_close() {
        let s = Sessions::default();
        let now = Instant::now();
        let id = s.open(caller(), now);
        assert_eq!(s.check(&id, now).unwrap().role, Role::Viewer);
        assert!(s.check(&id, now + SESSION_TTL).is_none());
        assert!(s.close(&id));
        assert!(s.check(&id, now).is_none());
    }

    #[test]
    fn the_cookie_is_found_among_others_and_garbage_is_ignored() {
        let id = "a".repeat(64);
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            format!("x=1; {COOKIE}=zz; {COOKIE}={id}").parse().unwrap(),
        );
        assert_eq!(from_cookies(&h), Some(id.as_str()));
        h.insert(
            http::header::COOKIE,
            format!("{COOKIE}={}", "a".repeat(9000)).parse().unwrap(),
        );
        assert_eq!(from_cookies(&h), None);
    }
}
