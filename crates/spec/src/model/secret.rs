//! Secret values and the redaction of credentials in URLs.

use std::fmt;

/// The value of a variable from `secrets`, read from its file when the stack was loaded.
///
/// Invariant: it is never formatted. `Debug` prints `<redacted>` (so a `{:?}` of a
/// [`Service`](crate::Service) in a log, an event or a fingerprint shows no value) and
/// there is no `Display` nor `Serialize`: the one way to the value is [`Secret::expose`],
/// which the replica's environment and the output redactor call.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value (tests and the stack-file reader).
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself: for the replica's environment and for redaction only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Secrets shorter than this are not redacted from replica output: a value of two or
/// three bytes would match ordinary text everywhere and garble every line.
pub const MIN_REDACTED: usize = 4;

/// What replaces a secret in text bulwark shows.
pub const REDACTED: &str = "***";

/// `url` as bulwark logs and reports it: userinfo (`user:pass@`) and the value of every
/// query parameter replaced by `***`, since either may carry a credential
/// (`https://user:pass@host/`, `?token=...`). The path is kept: it is what tells
/// webhooks apart.
pub fn redacted_url(url: &http::Uri) -> String {
    let mut out = String::new();
    if let Some(scheme) = url.scheme_str() {
        out.push_str(scheme);
        out.push_str("://");
    }
    if let Some(authority) = url.authority() {
        match authority.as_str().rsplit_once('@') {
            Some((_, host)) => {
                out.push_str(REDACTED);
                out.push('@');
                out.push_str(host);
            }
            None => out.push_str(authority.as_str()),
        }
    }
    out.push_str(url.path());
    if let Some(query) = url.query() {
        out.push('?');
        let parts: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}={REDACTED}"),
                None if pair.is_empty() => String::new(),
                // A bare `?abcdef` may itself be the token.
                None => REDACTED.to_owned(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter22");
        assert_eq!(format!("{s:?}"), "<redacted>");
        let map = std::collections::BTreeMap::from([("DB".to_owned(), s)]);
        assert_eq!(format!("{map:?}"), r#"{"DB": <redacted>}"#);
    }

    #[test]
    fn urls_lose_userinfo_and_query_values() {
        let show = |u: &str| redacted_url(&u.parse().unwrap());
        assert_eq!(
            show("http://alice:s3cret@hooks.example:8080/a/b?token=abc&x=1"),
            "http://***@hooks.example:8080/a/b?token=***&x=***"
        );
        assert_eq!(
            show("http://127.0.0.1:9000/hook"),
            "http://127.0.0.1:9000/hook"
        );
        assert_eq!(show("http://h/p?abcdef"), "http://h/p?***");
        assert_eq!(show("http://tok@h/"), "http://***@h/");
    }
}
