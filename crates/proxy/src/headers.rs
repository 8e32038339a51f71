//! The headers a proxy adds and removes on every request: hop-by-hop stripping, the
//! forwarding headers and the request id. They run once per request (and per response), so
//! they avoid what costs there: one pass instead of a lookup per hop-by-hop name, header
//! names built at compile time or once per policy, and values written as bytes rather than
//! through `format!` (measured with callgrind: `bench/run --only instructions`).

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Removes the hop-by-hop headers, and the fields `Connection` names (RFC 9110 §7.6.1:
/// an intermediary MUST). Most messages carry none: one pass over the names finds that,
/// and only the names present are looked up and removed. `Host` and the framing headers
/// are never removed on a client's say-so (a request without `Host` would be invalid).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let present = |h: &HeaderName| headers.keys().any(|k| k == h);
    if !HOP_BY_HOP.iter().any(present) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        // `close`, `keep-alive`, `upgrade`…: nothing to parse (or allocate) for the
        // options every HTTP/1 peer sends.
        .filter(|t| !t.eq_ignore_ascii_case(b"close"))
        .filter(|t| {
            !HOP_BY_HOP
                .iter()
                .any(|h| t.eq_ignore_ascii_case(h.as_str().as_bytes()))
        })
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .filter(|n| {
            ![
                header::HOST,
                header::CONTENT_LENGTH,
                header::TRANSFER_ENCODING,
            ]
            .contains(n)
        })
        .collect();
    for h in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(h);
    }
}

/// What RFC 9112 requires of a request's `Host` (§3.2) and framing (§7) that the HTTP/1
/// parser lets through; `Err` names why the request gets 400. On success, a request whose
/// target carries an authority (absolute-form, or HTTP/2's `:authority`) has `Host` set to
/// it (§3.2.2; RFC 9113 §8.3.1), so the replica sees the host the client asked for.
pub(crate) fn check_request(
    version: http::Version,
    uri: &http::Uri,
    h: &mut HeaderMap,
) -> Result<(), &'static str> {
    let mut hosts = h.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    if host.is_some_and(|v| !valid_host(v.as_bytes())) {
        return Err("invalid Host header");
    }
    // Even with an absolute-form target (HTTP/2 carries `:authority` instead).
    if host.is_none() && version == http::Version::HTTP_11 {
        return Err("missing Host header");
    }
    if let Some(a) = uri.authority() {
        if a.as_str().contains('@') {
            return Err("userinfo in the request target");
        }
        if let Ok(v) = HeaderValue::from_str(a.as_str()) {
            h.insert(header::HOST, v);
        }
    }
    if h.contains_key(header::TRANSFER_ENCODING) {
        let chunked = h
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
            .count();
        if chunked > 1 {
            return Err("Transfer-Encoding applies chunked more than once");
        }
    }
    Ok(())
}

/// `uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986 §3.2.2): a reg-name, an IPv4 address
/// or a bracketed IP literal, with an optional port; no userinfo, path or whitespace.
fn valid_host(v: &[u8]) -> bool {
    let (host, port) = match v.iter().rposition(|&b| b == b':') {
        // A colon inside brackets belongs to an IPv6 literal, not a port.
        Some(i) if !v[i..].contains(&b']') => (&v[..i], &v[i + 1..]),
        _ => (v, &[][..]),
    };
    let host_ok = if let Some(inner) = host.strip_prefix(b"[") {
        inner.strip_suffix(b"]").is_some_and(|lit| {
            !lit.is_empty()
                && lit
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b":.vV".contains(&b))
        })
    } else {
        host.iter().all(|&b| REG_NAME[b as usize])
    };
    host_ok && port.iter().all(u8::is_ascii_digit)
}

/// The bytes of a reg-name or IPv4 address (RFC 3986 unreserved, sub-delims and `%`), as
/// a table: checked for every byte of every request's `Host`.
const REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"-._~!$&'()*+,;=%";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

/// Whether the request asks for a protocol upgrade (WebSocket).
pub(crate) fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"))
}

/// `X-Forwarded-For` (appended), `Forwarded` (RFC 7239) and a request id under
/// `request_id` if the request has none.
pub(crate) fn forwarding_headers(h: &mut HeaderMap, peer: SocketAddr, request_id: &HeaderName) {
    let ip = peer.ip();
    let mut xff = Vec::with_capacity(48);
    if let Some(prev) = h.get(&X_FORWARDED_FOR) {
        xff.extend_from_slice(prev.as_bytes());
        xff.extend_from_slice(b", ");
    }
    push_ip(&mut xff, ip);
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(xff)) {
        h.insert(X_FORWARDED_FOR, v);
    }
    let mut fwd = Vec::with_capacity(64);
    fwd.extend_from_slice(b"for=");
    if ip.is_ipv6() {
        fwd.extend_from_slice(b"\"[");
        push_ip(&mut fwd, ip);
        fwd.extend_from_slice(b"]\"");
    } else {
        push_ip(&mut fwd, ip);
    }
    fwd.extend_from_slice(b";proto=http");
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(fwd)) {
        h.append(header::FORWARDED, v);
    }
    if !h.contains_key(request_id) {
        h.insert(request_id.clone(), new_request_id(rand::random()));
    }
}

/// 32 lowercase hex digits.
fn new_request_id(n: u128) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).expect("hex digits are a valid header value")
}

/// `ip` as text; IPv4 digit by digit (the common case, per request), IPv6 through its
/// `Display`.
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if o >= 100 {
                    out.push(b'0' + o / 100);
                }
                if o >= 10 {
                    out.push(b'0' + o / 10 % 10);
                }
                out.push(b'0' + o % 10);
            }
        }
        IpAddr::V6(v6) => {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// The value of cookie `name`, if the request carries it.
pub(crate) fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const RID: HeaderName = HeaderName::from_static("x-request-id");

    #[test]
    fn hosts_that_rfc_3986_allows_and_those_it_does_not() {
        for ok in [
            "x",
            "example.com",
            "example.com:8080",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "[v1.fe]",
            "a-b_c~d%20",
            "",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok:?} is a valid host");
        }
        for bad in [
            "a b", "a/b", "u@h", "h:8o", "[::1", "[]", "a\tb", "h?q", "h#f", "[::1]x",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?} is not a valid host");
        }
    }

    fn checked(
        version: http::Version,
        uri: &str,
        hosts: &[&str],
    ) -> Result<HeaderMap, &'static str> {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(header::HOST, HeaderValue::from_str(v).unwrap());
        }
        check_request(version, &uri.parse().unwrap(), &mut h).map(|()| h)
    }

    #[test]
    fn host_rules_of_rfc_9112() {
        use http::version::Version;
        const HTTP_10: Version = Version::HTTP_10;
        const HTTP_11: Version = Version::HTTP_11;
        const HTTP_2: Version = Version::HTTP_2;
        assert_eq!(checked(HTTP_11, "/", &["x"]).unwrap()[header::HOST], "x");
        assert_eq!(
            checked(HTTP_11, "/", &[]).unwrap_err(),
            "missing Host header"
        );
        assert!(checked(HTTP_10, "/", &[]).is_ok(), "HTTP/1.0 needs no Host");
        assert_eq!(
            checked(HTTP_11, "/", &["x", "y"]).unwrap_err(),
            "more than one Host header"
        );
        assert_eq!(
            checked(HTTP_11, "/", &["a b"]).unwrap_err(),
            "invalid Host header"
        );
        // Absolute-form: the target's host wins over the Host header (§3.2.2).
        let h = checked(HTTP_11, "http://other.example:81/a", &["x"]).unwrap();
        assert_eq!(h[header::HOST], "other.example:81");
        assert_eq!(h.get_all(header::HOST).iter().count(), 1);
        assert!(checked(HTTP_11, "http://u@h/a", &["h"]).is_err());
        assert_eq!(
            checked(HTTP_11, "http://h/a", &[]).unwrap_err(),
            "missing Host header"
        );
        // HTTP/2: `:authority` becomes the Host an HTTP/1.1 replica sees.
        assert_eq!(
            checked(HTTP_2, "http://svc.local/a", &[]).unwrap()[header::HOST],
            "svc.local"
        );
    }

    #[test]
    fn chunked_twice_is_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("x"));
        h.append(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let uri: http::Uri = "/".parse().unwrap();
        assert!(check_request(http::Version::HTTP_11, &uri, &mut h).is_ok());
        h.append(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("Chunked"),
        );
        assert!(check_request(http::Version::HTTP_11, &uri, &mut h).is_err());
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked, chunked"),
        );
        assert!(check_request(http::Version::HTTP_11, &uri, &mut h).is_err());
    }

    #[test]
    fn fields_named_by_connection_are_removed_but_never_host() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Foo ,host"),
        );
        h.append(header::CONNECTION, HeaderValue::from_static("x-bar"));
        for n in ["x-foo", "x-bar", "x-kept", "keep-alive", "host"] {
            h.insert(n, HeaderValue::from_static("1"));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["host", "x-kept"]);
    }

    #[test]
    fn ipv4_digits_match_display() {
        for ip in [
            [0, 0, 0, 0],
            [127, 0, 0, 1],
            [10, 9, 99, 100],
            [255, 254, 100, 199],
        ] {
            let ip = Ipv4Addr::from(ip);
            let mut out = Vec::new();
            push_ip(&mut out, IpAddr::V4(ip));
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn forwarding_headers_append_and_quote_ipv6() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        forwarding_headers(&mut h, "10.1.2.3:4000".parse().unwrap(), &RID);
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 10.1.2.3");
        assert_eq!(h[header::FORWARDED], "for=10.1.2.3;proto=http");
        let id = h["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );

        // An id the client sent is kept; IPv6 is quoted and bracketed in `Forwarded`.
        let mut h = HeaderMap::new();
        h.insert(RID, HeaderValue::from_static("abc"));
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 1);
        forwarding_headers(&mut h, v6, &RID);
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h[header::FORWARDED], "for=\"[::1]\";proto=http");
        assert_eq!(h["x-request-id"], "abc");
    }

    #[test]
    fn a_clients_odd_or_long_forwarded_for_is_appended_to_not_lost() {
        // obs-text (bytes >= 0x80) is a valid header value that is not a `str`: it was
        // dropped when the value went through `to_str`; it is kept now.
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        );
        forwarding_headers(&mut h, "127.0.0.1:1".parse().unwrap(), &RID);
        assert_eq!(h["x-forwarded-for"].as_bytes(), b"caf\xe9, 127.0.0.1");
        let long = "1.2.3.4, ".repeat(2000);
        h.insert(X_FORWARDED_FOR, HeaderValue::from_str(&long).unwrap());
        forwarding_headers(&mut h, "127.0.0.1:1".parse().unwrap(), &RID);
        assert_eq!(h["x-forwarded-for"].len(), long.len() + 11);
    }

    #[test]
    fn request_ids_are_the_number_in_hex() {
        assert_eq!(new_request_id(0), "00000000000000000000000000000000");
        assert_eq!(
            new_request_id(u128::MAX),
            "ffffffffffffffffffffffffffffffff"
        );
        assert_eq!(
            new_request_id(0xab << 120 | 0x1f),
            "ab00000000000000000000000000001f"
        );
    }

    #[test]
    fn hop_by_hop_headers_go_and_others_stay() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("x"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), [header::HOST]);
    }
}
