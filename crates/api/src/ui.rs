//! The dashboard: a page of plain ES modules under `crates/api/ui/`, embedded in the
//! binary, served at `/ui/` with a strict Content-Security-Policy; the login that turns a
//! one-time code from `bulwark dashboard` (or a pasted token) into a session cookie.
//!
//! The page and its assets are open (they hold no data); every call the page makes goes
//! through the API's gate like the CLI's, authenticated by the session cookie.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;

use crate::AppState;
use crate::json::error;
use crate::security::CSRF_HEADER;
use crate::session::{COOKIE, SESSION_TTL, Sessions};
use crate::tokens::TokenInfo;

/// Each asset: its name under `/ui/`, its content type, its text.
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", HTML, include_str!("../ui/index.html")),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../ui/style.css"),
    ),
    ("app.js", JS, include_str!("../ui/app.js")),
    ("api.js", JS, include_str!("../ui/api.js")),
    ("dom.js", JS, include_str!("../ui/dom.js")),
    ("chart.js", JS, include_str!("../ui/chart.js")),
    ("login.js", JS, include_str!("../ui/login.js")),
    ("overview.js", JS, include_str!("../ui/overview.js")),
    ("oncall.js", JS, include_str!("../ui/oncall.js")),
    ("service.js", JS, include_str!("../ui/service.js")),
];
const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Scripts and styles from this origin only: no inline script, no eval, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// Whether `path` is served without a caller: the page, its assets and the login.
/// Architecture invariant: nothing but these routes lives under `/ui/` (the router
/// matches raw paths, so `/ui/../v1/status` is no route, not `/v1/status`).
pub(crate) fn is_open(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

/// The dashboard's routes, and `POST /v1/dashboard/codes` (behind the gate).
pub(crate) fn routes(sessions: Arc<Sessions>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route("/ui/login", get(|| async { asset("index.html") }))
        .route(
            "/ui/{file}",
            get(|Path(f): Path<String>| async move { asset(&f) }),
        )
        .route("/ui/session", post(login).delete(logout))
        .route("/v1/dashboard/codes", post(new_code))
        .layer(Extension(sessions))
}

fn asset(name: &str) -> Response {
    let Some((_, kind, text)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no dashboard file {name:?}"),
        )
        .into_response();
    };
    let mut res = (*text).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    // Assets are in the binary: a browser revalidates them so an upgrade shows at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// `POST /v1/dashboard/codes`: a one-time login code with the caller's role, for a token
/// holder (not a session: a browser logs in with a code, it does not make them).
async fn new_code(Extension(sessions): Extension<Arc<Sessions>>, req: Request) -> Response {
    let Some(caller) = req.extensions().get::<TokenInfo>().cloned() else {
        return error(StatusCode::UNAUTHORIZED, "no caller").into_response();
    };
    if caller.name.starts_with("session:") {
        return error(
            StatusCode::FORBIDDEN,
            "login codes are made with a token (`bulwark dashboard`), not from a session",
        )
        .into_response();
    }
    match sessions.new_code(caller, Instant::now()) {
        Ok((code, expires_ms)) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "code": code, "expires_ms": expires_ms })),
        )
            .into_response(),
        Err(e) => error(StatusCode::TOO_MANY_REQUESTS, &e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    code: Option<String>,
    token: Option<String>,
}

/// `POST /ui/session` with `{"code": …}` or `{"token": …}`: a session cookie with the
/// role of the code's asker or of the token. Needs [`CSRF_HEADER`], so another site cannot
/// log a browser in under its own token.
async fn login(
    State(s): State<Arc<AppState>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if !headers.contains_key(CSRF_HEADER) {
        return error(
            StatusCode::FORBIDDEN,
            "a login must carry `X-Bulwark-Csrf: 1`",
        )
        .into_response();
    }
    let bytes = match crate::routes::read_body(body).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let login: Login = match serde_json::from_slice(&bytes) {
        Ok(l) => l,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, &format!("login: {e}")).into_response();
        }
    };
    let now = Instant::now();
    let caller = match (&login.code, &login.token) {
        (Some(code), None) => sessions.redeem(code.trim(), now),
        (None, Some(token)) => s.tokens.check(token.trim()),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "login: send either `code` or `token`",
            )
            .into_response();
        }
    };
    let Some(caller) = caller else {
        return error(
            StatusCode::UNAUTHORIZED,
            "this login code is unknown, used or expired (codes last 60 s), or the token is \
             wrong; run `bulwark dashboard` for a new link",
        )
        .into_response();
    };
    s.audit.record(crate::audit::Record::new(
        Some((&format!("session:{}", caller.name), caller.role)),
        "POST",
        "/ui/session",
        201,
    ));
    let shown = serde_json::json!({ "name": caller.name, "role": caller.role.as_str() });
    let id = sessions.open(caller, now);
    let secure = if s.any_host { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        SESSION_TTL.as_secs()
    );
    let mut res = (StatusCode::CREATED, Json(shown)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// `DELETE /ui/session`: ends the cookie's session and clears the cookie.
async fn logout(Extension(sessions): Extension<Arc<Sessions>>, headers: HeaderMap) -> Response {
    if !headers.contains_key(CSRF_HEADER) {
        return error(
            StatusCode::FORBIDDEN,
            "a logout must carry `X-Bulwark-Csrf: 1`",
        )
        .into_response();
    }
    if let Some(id) = crate::session::from_cookies(&headers) {
        sessions.close(id);
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("bulwark_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    res
}
