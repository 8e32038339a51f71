use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use std::sync::Arc;

use crate::audit::{Audit, Record};
use crate::json::error;
use crate::session::{self, Sessions};
use crate::tokens::{Role, TokenInfo, Tokens};

/// The header a state-changing request authenticated by the dashboard's session cookie
/// must carry: a page of another site can make a browser send the cookie (a form post),
/// but not a custom header without a CORS preflight, which this API never allows.
pub const CSRF_HEADER: &str = "x-bulwark-csrf";

/// What the gate checks callers against.
#[derive(Clone)]
pub(crate) struct Gate {
    pub(crate) tokens: Arc<Tokens>,
    pub(crate) audit: Arc<Audit>,
    pub(crate) sessions: Arc<Sessions>,
}

/// Largest request body the API reads (a silence is a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What a `Host` header names, once parsed strictly.
#[derive(Debug, PartialEq, Eq)]
enum Host<'a> {
    Name(&'a str),
    Ip(std::net::IpAddr),
}

/// Parses `name[:port]`, `ipv4[:port]` or `[ipv6][:port]`; anything else (an IPv6 literal
/// followed by more than a port, a bare IPv6, an empty or non-numeric port, characters
/// that no host name has) is `None`.
fn parse_host(host: &str) -> Option<Host<'_>> {
    let port_ok = |p: &str| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    };
    if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(port_ok)) {
            return None;
        }
        return inside
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|ip| Host::Ip(ip.into()));
    }
    let name = match host.split_once(':') {
        Some((name, port)) if port_ok(port) => name,
        Some(_) => return None,
        None => host,
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return None;
    }
    Some(match name.parse::<std::net::Ipv4Addr>() {
        Ok(ip) => Host::Ip(ip.into()),
        Err(_) => Host::Name(name),
    })
}

/// Whether a Host header value names this machine's loopback interface.
pub fn is_loopback_host(host: &str) -> bool {
    match parse_host(host) {
        Some(Host::Name(n)) => n.eq_ignore_ascii_case("localhost"),
        Some(Host::Ip(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Whether the API accepts a request with this Host: a loopback name, or, when the API
/// speaks TLS, any well-formed one. The check stops DNS rebinding (a page of
/// evil.example whose name comes to resolve to 127.0.0.1); over TLS the browser already
/// refuses a certificate that is not valid for evil.example.
fn host_allowed(host: &str, any_host: bool) -> bool {
    is_loopback_host(host) || (any_host && parse_host(host).is_some())
}

/// Who a client is by its verified TLS certificate, when `[api.tls] client_ca` asks for
/// one: set on each of its requests by the server, used when the request has no token.
#[derive(Debug, Clone)]
pub(crate) struct CertCaller(pub(crate) TokenInfo);

/// The API's gate: the Host, the token and its role, the body's declared size; then the
/// call, and the audit record of a call that changes something or was refused.
pub(crate) async fn guard(
    Gate {
        tokens,
        audit,
        sessions,
    }: Gate,
    any_host: bool,
    mut req: Request,
    next: Next,
) -> Response {
    // HTTP/2 (over TLS) names the host in `:authority`, which hyper puts in the URI.
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    if !host_allowed(host, any_host) {
        return error(
            StatusCode::FORBIDDEN,
            &format!(
                "Host {host:?} is not a loopback name; bulwark's API answers only requests \
                 addressed to localhost, 127.0.0.1 or [::1]"
            ),
        )
        .into_response();
    }
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    // Everything but the metrics and the dashboard's page and login needs the token: logs,
    // events and stderr tails often hold secrets.
    let caller = if req.uri().path() == "/metrics" || crate::ui::is_open(req.uri().path()) {
        None
    } else {
        match authorize(&tokens, &sessions, &req) {
            Ok(caller) => Some(caller),
            Err((res, caller)) => {
                let who = caller.as_ref().map(|c| (c.name.as_str(), c.role));
                audit.record(Record::new(
                    who,
                    method.as_str(),
                    &path,
                    res.status().as_u16(),
                ));
                return res;
            }
        }
    };
    if let Some(c) = &caller {
        req.extensions_mut().insert(c.clone());
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let res = if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        )
        .into_response()
    } else {
        next.run(req).await
    };
    if let Some(c) = caller.filter(|_| method != Method::GET && method != Method::HEAD) {
        let who = Some((c.name.as_str(), c.role));
        audit.record(Record::new(
            who,
            method.as_str(),
            &path,
            res.status().as_u16(),
        ));
    }
    res
}

/// Who calls, if their token is valid (or, without a token, their client certificate)
/// and its role enough for the call; else the answer (401 or 403), with the caller if
/// known. A wrong token is refused even from a client with a valid certificate.
#[allow(clippy::result_large_err)]
fn authorize(
    tokens: &Tokens,
    sessions: &Sessions,
    req: &Request,
) -> Result<TokenInfo, (Response, Option<TokenInfo>)> {
    let cookie = session::from_cookies(req.headers());
    let caller = match (bearer(req.headers()), cookie) {
        (Some(token), _) => tokens.check(token),
        (None, Some(id)) => {
            return by_session(tokens, sessions, id, req)
                .unwrap_or_else(|| Err((unauthorized(), None)));
        }
        (None, None) => req.extensions().get::<CertCaller>().map(|c| c.0.clone()),
    };
    let Some(caller) = caller else {
        return Err((unauthorized(), None));
    };
    role_enough(caller, req)
}

/// The 401 of a request without a valid token, session or certificate.
fn unauthorized() -> Response {
    let mut res = error(
        StatusCode::UNAUTHORIZED,
        "this call needs `Authorization: Bearer TOKEN` (only /metrics is open), a dashboard \
         session (`bulwark dashboard`) or, when [api.tls] has client_ca, a client certificate; \
         the owner's token is in the state directory of `bulwark up` (the CLI reads it, or \
         BULWARK_TOKEN)",
    )
    .into_response();
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
    res
}

/// The caller of a request authenticated by the session cookie `id`, named
/// `session:<token name>`; `None` when the session is unknown, expired, or its token was
/// revoked since. A state-changing request without [`CSRF_HEADER`] is refused (403).
#[allow(clippy::result_large_err)]
fn by_session(
    tokens: &Tokens,
    sessions: &Sessions,
    id: &str,
    req: &Request,
) -> Option<Result<TokenInfo, (Response, Option<TokenInfo>)>> {
    let owner = sessions.check(id, std::time::Instant::now())?;
    if !tokens.has(&owner.name) {
        return None;
    }
    let caller = TokenInfo {
        name: format!("session:{}", owner.name),
        ..owner
    };
    let safe = req.method() == Method::GET || req.method() == Method::HEAD;
    if !safe && !req.headers().contains_key(CSRF_HEADER) {
        let res = error(
            StatusCode::FORBIDDEN,
            "a request that changes something, authenticated by the dashboard's session \
             cookie, must carry the header `X-Bulwark-Csrf: 1` (cross-site requests cannot)",
        )
        .into_response();
        return Some(Err((res, Some(caller))));
    }
    Some(role_enough(caller, req))
}

/// `caller`, if their role is enough for the call; else 403 naming both.
#[allow(clippy::result_large_err)]
fn role_enough(
    caller: TokenInfo,
    req: &Request,
) -> Result<TokenInfo, (Response, Option<TokenInfo>)> {
    let needed = Role::needed(req.method(), req.uri().path());
    if caller.role < needed {
        let res = error(
            StatusCode::FORBIDDEN,
            &format!(
                "token {:?} has the role {}; {} {} needs {}",
                caller.name,
                caller.role.as_str(),
                req.method(),
                req.uri().path(),
                needed.as_str()
            ),
        )
        .into_response();
        return Err((res, Some(caller)));
    }
    Ok(caller)
}

/// The bearer token of a request. Tokens are looked up by their SHA-256, so what a
/// lookup's timing could reveal is about the digest, never the token.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names() {
        for ok in [
            "localhost",
            "localhost:7700",
            "127.0.0.1:1",
            "127.9.9.9",
            "[::1]:80",
            "[::1]",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:7700",
            "10.0.0.1:7700",
            "localhost.evil.com",
            "[::2]:1",
            "[::1]evil.com",
            "[::1].evil.com:80",
            "[::1]:",
            "[::1]:80x",
            "[::1]:99999",
            "[::1",
            "::1",
            "localhost:",
            "localhost:x",
            "localhost:80:80",
            "127.0.0.1:80 ",
            "localhost/evil",
            "127.0.0.1@evil.com",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn over_tls_any_well_formed_host_is_accepted() {
        assert!(!host_allowed("10.0.0.1:7700", false));
        assert!(!host_allowed("api.example:7700", false));
        assert!(host_allowed("10.0.0.1:7700", true));
        assert!(host_allowed("[fd00::1]:7700", true));
        assert!(host_allowed("api.example", true));
        assert!(!host_allowed("[fd00::1]evil", true));
        assert!(!host_allowed("api.example/x", true));
    }

    #[test]
    fn bearer_token_must_match_exactly() {
        let tokens = Tokens::new("abc", None);
        let check = |h: &HeaderMap| bearer(h).and_then(|t| tokens.check(t));
        let mut h = HeaderMap::new();
        assert!(check(&h).is_none());
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(check(&h).unwrap().role, Role::Admin);
        for wrong in ["Bearer abd", "Bearer abcd", "Bearer ", "abc", "Basic abc"] {
            h.insert(header::AUTHORIZATION, wrong.parse().unwrap());
            assert!(check(&h).is_none(), "{wrong}");
        }
        assert!(Tokens::new("", None).check("").is_none());
    }
}
