//! `[services.NAME.expose.auth]`: an external authorization check before a request is
//! forwarded (Envoy's `ext_authz`, Traefik's ForwardAuth, nginx's `auth_request`), and
//! what the proxy does when the check cannot be made: fail closed or fail open.

use std::time::Duration;

use crate::model::AuthFailure;
use crate::schema::Omitted::Required;
use crate::schema::{choice, duration, list, text};
use crate::section;

section! {
    /// Ask an HTTP endpoint before forwarding each request: it gets a GET with the
    /// client's `forward_headers` and the request's method, URI, host and address
    /// (`X-Forwarded-Method`, `X-Forwarded-Uri`, `X-Forwarded-Host`, `X-Forwarded-For`).
    /// A 2xx lets the request through; a 5xx, no answer within `timeout`, an answer over
    /// 64 KiB, or more than `limits.max_inflight` checks at once is a failure that
    /// `on_error` decides; any other answer (401, 403, a redirect to a login page) goes to
    /// the client as the auth service gave it.
    pub(crate) struct AuthTable => #[derive(Debug, Clone, PartialEq)] pub struct Auth {
        /// The auth endpoint (plain HTTP: another service of the stack, or a local
        /// sidecar).
        url: http::Uri = text("an http:// URL such as \"http://127.0.0.1:9001/check\"", auth_url),
            Required(r#"url = "http://127.0.0.1:9001/check""#);
        /// How long the check may take, connection included (the request's own deadline
        /// still applies).
        timeout: Duration = duration().positive(), r#""1s""#;
        /// The client's headers sent to the auth endpoint.
        forward_headers: Vec<http::HeaderName> = list(text("a header name", header_name)),
            r#"["authorization", "cookie"]"#;
        /// Headers of the auth endpoint's 2xx answer copied into the request forwarded to
        /// the replicas (`x-user`...); a client's own values of these are always removed.
        upstream_headers: Vec<http::HeaderName> = list(text("a header name", header_name)), "[]";
        /// With no decision (the auth endpoint down, slow or answering 5xx): `deny`
        /// answers 503 (fail closed); `allow` forwards the request unauthenticated (fail
        /// open). Both are counted in `bulwark_proxy_policy_events_total`
        /// (`auth_unavailable`, `auth_failed_open`).
        on_error: AuthFailure = choice(AuthFailure::CHOICES),
            r#""deny""#;
    }
}

fn auth_url(s: &str) -> Result<http::Uri, String> {
    let uri = s
        .parse::<http::Uri>()
        .map_err(|_| " (not a URL)".to_owned())?;
    if uri.scheme_str() != Some("http") {
        return Err(" (https is not supported yet: reach the auth service over loopback)".into());
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(" (no host)".into());
    }
    Ok(uri)
}

fn header_name(s: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(s.as_bytes()).map_err(|_| String::new())
}
