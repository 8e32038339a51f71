//! API tokens with roles. `up` writes the owner's token (role `admin`) into the state
//! directory, as before; `bulwark token create NAME --role ROLE` adds more, each shown once
//! and kept only as its SHA-256 in the journal's `tokens` namespace (a restart keeps them,
//! a copy of the journal reveals none); `revoke` removes one, refused from the next request
//! on.
//!
//! Roles (each includes the ones before): `viewer` reads (every GET); `operator` also acts
//! (restart, scale, silences, faults, rollouts, chaos, switches, approvals, backups);
//! `admin` also reloads the stack and manages tokens.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::http::Method;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The journal namespace.
const NAMESPACE: &str = "tokens";
/// The name the state directory's token goes by.
pub const OWNER: &str = "owner";
/// Tokens at most (a bound on what the API keeps in memory and lists).
pub const MAX_TOKENS: usize = 1000;

/// What a token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Reads and acts.
    Operator,
    /// Everything, reloads and tokens included.
    Admin,
}

impl Role {
    /// Its name in the CLI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The role a call needs: reads are for viewers, reloads and tokens for admins, every
    /// other change for operators.
    pub fn needed(method: &Method, path: &str) -> Role {
        if path == "/v1/dashboard/codes" {
            // A login code carries its asker's role: any token may ask for one.
            Role::Viewer
        } else if path == "/v1/reload"
            || path == "/v1/tokens"
            || path.starts_with("/v1/tokens/")
            || path == "/v1/audit"
        {
            Role::Admin
        } else if method == Method::GET || method == Method::HEAD {
            Role::Viewer
        } else {
            Role::Operator
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}: viewer, operator or admin")),
        }
    }
}

/// A token as listed: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    /// When it was created (RFC 3339); empty for the owner's.
    pub created: String,
}

/// What the journal keeps of a token.
#[derive(Serialize, Deserialize)]
struct Stored {
    role: Role,
    sha256: String,
    created: String,
}

/// Why a token could not be created or revoked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token name {0:?}: 1 to 64 ASCII letters, digits, `-` and `_`, and not `owner`")]
    BadName(String),
    #[error("a token named {0:?} exists; revoke it first")]
    Exists(String),
    #[error("no token named {0:?}")]
    Unknown(String),
    #[error("at most {MAX_TOKENS} tokens")]
    TooMany,
    #[error("the journal cannot store it: {0}")]
    Store(String),
}

/// The tokens the API accepts, by the SHA-256 of their value.
pub struct Tokens {
    by_hash: RwLock<HashMap<[u8; 32], TokenInfo>>,
    store: Option<Arc<dyn store::Store>>,
    /// Held by `create` and `revoke` around their journal writes, so that the map's
    /// lock, which every request takes, is never held across a disk write.
    changing: std::sync::Mutex<()>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Tokens {
    /// The owner's token (`admin`) and those kept in `store`. Reads the journal: call it
    /// off the async workers.
    pub fn new(owner: &str, store: Option<Arc<dyn store::Store>>) -> Tokens {
        let mut by_hash = HashMap::new();
        if let Some(s) = &store {
            match s.list(NAMESPACE) {
                Ok(list) => {
                    for (name, bytes) in list {
                        match serde_json::from_slice::<Stored>(&bytes)
                            .ok()
                            .and_then(|t| Some((unhex(&t.sha256)?, t)))
                        {
                            Some((hash, t)) => {
                                by_hash.insert(
                                    hash,
                                    TokenInfo {
                                        name,
                                        role: t.role,
                                        created: t.created,
                                    },
                                );
                            }
                            None => {
                                tracing::warn!(token = %name, "unreadable token in the journal; it is not accepted")
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the API tokens from the journal; only the owner's is accepted")
                }
            }
        }
        if !owner.is_empty() {
            by_hash.insert(
                digest(owner),
                TokenInfo {
                    name: OWNER.into(),
                    role: Role::Admin,
                    created: String::new(),
                },
            );
        }
        Tokens {
            by_hash: RwLock::new(by_hash),
            store,
            changing: std::sync::Mutex::new(()),
        }
    }

    /// Who presents `token`, if anyone.
    pub fn check(&self, token: &str) -> Option<TokenInfo> {
        let hash = digest(token);
        self.read().get(&hash).cloned()
    }

    /// Whether a token named `name` is accepted (a session made with it lasts only as long).
    pub fn has(&self, name: &str) -> bool {
        self.read().values().any(|t| t.name == name)
    }

    /// A new token named `name` with `role`; its value is returned once and never again.
    pub fn create(&self, name: &str, role: Role) -> Result<String, TokenError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name != OWNER
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(TokenError::BadName(name.to_owned()));
        }
        let token = crate::state_dir::new_token();
        let hash = digest(&token);
        let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        {
            let map = self.read();
            if map.values().any(|t| t.name == name) {
                return Err(TokenError::Exists(name.to_owned()));
            }
            if map.len() >= MAX_TOKENS {
                return Err(TokenError::TooMany);
            }
        }
        if let Some(s) = &self.store {
            let stored = Stored {
                role,
                sha256: hex(&hash),
                created: created.clone(),
            };
            let bytes =
                serde_json::to_vec(&stored).map_err(|e| TokenError::Store(e.to_string()))?;
            s.put(NAMESPACE, name, &bytes)
                .map_err(|e| TokenError::Store(e.to_string()))?;
        }
        self.write().insert(
            hash,
            TokenInfo {
                name: name.to_owned(),
                role,
                created,
            },
        );
        Ok(token)
    }

    /// Revokes `name`: removed from the journal, then refused from the next request on
    /// (a journal that cannot delete it leaves it valid, and says so).
    pub fn revoke(&self, name: &str) -> Result<(), TokenError> {
        if name == OWNER {
            return Err(TokenError::BadName(name.to_owned()));
        }
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        if !self.read().values().any(|t| t.name == name) {
            return Err(TokenError::Unknown(name.to_owned()));
        }
        if let Some(s) = &self.store {
            s.delete(NAMESPACE, name)
                .map_err(|e| TokenError::Store(format!("{e}; the token is still valid")))?;
        }
        self.write().retain(|_, t| t.name != name);
        Ok(())
    }

    /// Every token but the owner's, by name.
    pub fn list(&self) -> Vec<TokenInfo> {
        let mut list: Vec<TokenInfo> = self
            .read()
            .values()
            .filter(|t| t.name != OWNER)
            .cloned()
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<[u8; 32], TokenInfo>> {
        self.by_hash.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<[u8; 32], TokenInfo>> {
        self.by_hash.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The body of `POST /v1/tokens`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateToken {
    pub name: String,
    pub role: Role,
}

/// The answer to `POST /v1/tokens`: the only time the token is shown.
#[derive(Debug, Serialize, Deserialize)]
pub struct Created {
    pub name: String,
    pub role: Role,
    pub token: String,
}

pub(crate) fn routes() -> axum::Router<Arc<crate::AppState>> {
    use axum::routing::{delete, get};
    axum::Router::new()
        .route("/v1/tokens", get(list).post(create))
        .route("/v1/tokens/{name}", delete(revoke))
}

async fn list(
    axum::extract::State(s): axum::extract::State<Arc<crate::AppState>>,
) -> axum::Json<Vec<TokenInfo>> {
    axum::Json(s.tokens.list())
}

async fn create(
    axum::extract::State(s): axum::extract::State<Arc<crate::AppState>>,
    body: axum::body::Body,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let bytes = match crate::routes::read_body(body).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let req: CreateToken = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return crate::json::error(StatusCode::BAD_REQUEST, &format!("token: {e}"))
                .into_response();
        }
    };
    let tokens = s.tokens.clone();
    // The journal write blocks: off the async workers.
    let name = req.name.clone();
    match tokio::task::spawn_blocking(move || tokens.create(&name, req.role)).await {
        Ok(Ok(token)) => (
            StatusCode::CREATED,
            axum::Json(Created {
                name: req.name,
                role: req.role,
                token,
            }),
        )
            .into_response(),
        Ok(Err(e)) => token_error(e),
        Err(e) => {
            crate::json::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()).into_response()
        }
    }
}

async fn revoke(
    axum::extract::State(s): axum::extract::State<Arc<crate::AppState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let tokens = s.tokens.clone();
    match tokio::task::spawn_blocking(move || tokens.revoke(&name)).await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => token_error(e),
        Err(e) => {
            crate::json::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()).into_response()
        }
    }
}

fn token_error(e: TokenError) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let status = match e {
        TokenError::BadName(_) => StatusCode::BAD_REQUEST,
        TokenError::Exists(_) | TokenError::TooMany => StatusCode::CONFLICT,
        TokenError::Unknown(_) => StatusCode::NOT_FOUND,
        TokenError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    crate::json::error(status, &e.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_needs_the_role_it_says() {
        assert_eq!(Role::needed(&Method::GET, "/v1/status"), Role::Viewer);
        assert_eq!(Role::needed(&Method::GET, "/v1/logs/web"), Role::Viewer);
        assert_eq!(
            Role::needed(&Method::POST, "/v1/services/web/restart"),
            Role::Operator
        );
        assert_eq!(
            Role::needed(&Method::DELETE, "/v1/silences/3"),
            Role::Operator
        );
        assert_eq!(Role::needed(&Method::POST, "/v1/reload"), Role::Admin);
        assert_eq!(Role::needed(&Method::GET, "/v1/tokens"), Role::Admin);
        assert_eq!(Role::needed(&Method::DELETE, "/v1/tokens/ci"), Role::Admin);
        assert_eq!(Role::needed(&Method::GET, "/v1/audit"), Role::Admin);
        assert_eq!(
            Role::needed(&Method::POST, "/v1/dashboard/codes"),
            Role::Viewer
        );
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
    }

    #[test]
    fn tokens_are_created_checked_listed_and_revoked_and_only_their_hash_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn store::Store> =
            Arc::new(store::Embedded::open(&dir.path().join("j.redb")).unwrap());
        let tokens = Tokens::new("owner-secret", Some(store.clone()));
        assert_eq!(tokens.check("owner-secret").unwrap().role, Role::Admin);
        let ci = tokens.create("ci", Role::Viewer).unwrap();
        assert_eq!(tokens.check(&ci).unwrap().name, "ci");
        assert!(matches!(
            tokens.create("ci", Role::Admin),
            Err(TokenError::Exists(_))
        ));
        assert!(matches!(
            tokens.create("owner", Role::Admin),
            Err(TokenError::BadName(_))
        ));
        assert!(matches!(
            tokens.create("a b", Role::Admin),
            Err(TokenError::BadName(_))
        ));
        let kept = store.get(NAMESPACE, "ci").unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&kept).contains(&ci));
        // A restart reads it back.
        let again = Tokens::new("owner-secret", Some(store.clone()));
        assert_eq!(again.check(&ci).unwrap().role, Role::Viewer);
        assert_eq!(again.list().len(), 1);
        again.revoke("ci").unwrap();
        assert!(again.check(&ci).is_none());
        assert!(matches!(again.revoke("ci"), Err(TokenError::Unknown(_))));
        assert!(
            Tokens::new("owner-secret", Some(store))
                .check(&ci)
                .is_none()
        );
        assert!(tokens.check("nope").is_none());
    }
}
