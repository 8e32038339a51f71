//! `[services.NAME.expose.tls]` and `[services.NAME.expose.upstream_tls]`: TLS terminated
//! for clients, passed through by SNI, or spoken to the replicas; every file read as the
//! proxy will read it.

use std::path::Path;

use crate::keys::{ApiTable, ExposeTable, TlsTable, UpstreamTlsTable};
use crate::model::{CertFiles, ClientRole, Passthrough, SniName, Tls, UpstreamTls};
use crate::problem::{Problems, Span};
use crate::schema::Field;

/// What a passthrough service claims on its address, with where it was written, for the
/// rules between the services sharing one address.
pub(super) struct SniClaims {
    pub names: Vec<SniName>,
    /// `sni`'s value, else the `[expose.tls]` table.
    pub names_at: Span,
    pub default: bool,
    /// `default`'s value, else the `[expose.tls]` table.
    pub default_at: Span,
}

/// What `[expose.tls]` and `[expose.upstream_tls]` make, and the names claimed when TLS
/// is passed through; `upstream_tls` is for HTTP only (the caller reports it for TCP).
pub(super) type ExposeTls = (Option<Tls>, Option<Passthrough>, Option<UpstreamTls>);

/// `[expose.tls]` and `[expose.upstream_tls]`, built.
pub(super) fn expose_tls(
    raw: &ExposeTable,
    tcp: bool,
    base_dir: &Path,
    p: &mut Problems,
) -> (Option<ExposeTls>, Option<SniClaims>) {
    let (tls, claims) = match raw.tls.given() {
        Some(t) => client_tls(t.get_ref(), tcp, base_dir, p),
        None => (Some((None, None)), None),
    };
    let upstream_tls = match raw.upstream_tls.given() {
        Some(t) if !tcp => upstream_tls(t.get_ref(), base_dir, p).map(Some),
        _ => Some(None),
    };
    let built = tls
        .zip(upstream_tls)
        .map(|((tls, passthrough), upstream)| (tls, passthrough, upstream));
    (built, claims)
}

/// What `[expose.tls]` makes: TLS terminated, or passed through (at most one of them).
type ClientTls = (Option<Tls>, Option<Passthrough>);

/// The `[expose.tls]` table: TLS terminated (`tls`) or passed through by SNI.
pub(super) fn client_tls(
    t: &TlsTable,
    tcp: bool,
    base_dir: &Path,
    p: &mut Problems,
) -> (Option<ClientTls>, Option<SniClaims>) {
    match t.passthrough.get() {
        None => (None, None),
        Some(true) => match passthrough(t, tcp, p) {
            Some((pt, claims)) => (Some((None, Some(pt))), Some(claims)),
            None => (None, None),
        },
        Some(false) => {
            for (key, at) in [("sni", t.sni.span()), ("default", t.default.span())] {
                if let Some(at) = at {
                    p.push(
                        at,
                        format!(
                            "{}: `{key}` applies with `passthrough = true` (TLS forwarded by SNI); \
                             a listener that terminates TLS picks its certificate by the client's \
                             SNI name among `certificates`",
                            t.label
                        ),
                    );
                }
            }
            (tls(t, base_dir, p).map(|t| (Some(t), None)), None)
        }
    }
}

/// `passthrough = true`: TCP only, none of the keys of termination, and the names claimed.
fn passthrough(t: &TlsTable, tcp: bool, p: &mut Problems) -> Option<(Passthrough, SniClaims)> {
    let mut ok = true;
    if !tcp && let Some(at) = t.passthrough.span() {
        p.push(
            at,
            format!(
                "{}: `passthrough = true` needs protocol = \"tcp\": an HTTP listener must \
                 terminate TLS to read requests",
                t.label
            ),
        );
        ok = false;
    }
    let termination = [
        (
            "certificates",
            t.certificates.is_present(),
            t.certificates.span(),
        ),
        (
            "min_version",
            t.min_version.is_present(),
            t.min_version.span(),
        ),
        ("client_ca", t.client_ca.is_present(), t.client_ca.span()),
        (
            "client_verify",
            t.client_verify.is_present(),
            t.client_verify.span(),
        ),
    ];
    for (key, present, at) in termination {
        if present {
            p.push(
                at.unwrap_or(t.span.clone()),
                format!(
                    "{}: `{key}` cannot be used with `passthrough = true`: the TLS is passed \
                     through untouched, and the replicas hold the certificates and end it; \
                     remove `{key}`, or `passthrough` to terminate TLS in the proxy",
                    t.label
                ),
            );
            ok = false;
        }
    }
    let names = match &t.sni {
        Field::Given(n) => Some(n.get_ref().clone()),
        Field::Invalid => return None,
        _ => None,
    };
    let default = match &t.default {
        Field::Given(d) => *d.get_ref(),
        Field::Invalid => return None,
        _ => names.is_none(),
    };
    if names.is_none() && !default {
        p.push(
            t.default.span().unwrap_or(t.span.clone()),
            format!(
                "{}: with neither `sni` nor `default = true` this service takes no connection; \
                 name its SNI names in `sni`",
                t.label
            ),
        );
        ok = false;
    }
    let names = names.unwrap_or_default();
    let claims = SniClaims {
        names: names.clone(),
        names_at: t.sni.span().unwrap_or(t.span.clone()),
        default,
        default_at: t.default.span().unwrap_or(t.span.clone()),
    };
    ok.then_some((
        Passthrough {
            sni: names,
            default,
        },
        claims,
    ))
}

/// The certificates, each file read as the proxy will read it: a file missing, unreadable
/// or without a PEM of its kind is a problem at its key.
fn tls(t: &TlsTable, base_dir: &Path, p: &mut Problems) -> Option<Tls> {
    let Some(list) = t.certificates.value() else {
        if !t.certificates.is_present() {
            p.push(
                t.span.clone(),
                format!(
                    "{} needs `certificates`, e.g. certificates = [{{ cert = \"web.pem\", key = \
                     \"web.key\" }}] (or, in TCP mode, `passthrough = true` to pass TLS through \
                     to the replicas)",
                    t.label
                ),
            );
        }
        return None;
    };
    if list.is_empty() {
        return p.fail(
            t.certificates.span().unwrap_or(t.span.clone()),
            format!(
                "{} needs at least one certificate in `certificates`",
                t.label
            ),
        );
    }
    let files: Option<Vec<CertFiles>> = list
        .iter()
        .map(|c| {
            let (cert, key) = (c.cert.given()?, c.key.given()?);
            let files = CertFiles {
                cert: base_dir.join(cert.get_ref()),
                key: base_dir.join(key.get_ref()),
            };
            let chain = pem(p, &files.cert, false)
                .map_err(|e| p.push(cert.span(), format!("{}: {e}", c.label)));
            let key_ok = pem(p, &files.key, true)
                .map_err(|e| p.push(key.span(), format!("{}: {e}", c.label)));
            (chain.is_ok() && key_ok.is_ok()).then_some(files)
        })
        .collect();
    let client_ca = match t.client_ca.given() {
        Some(ca) => {
            let path = base_dir.join(ca.get_ref());
            match pem(p, &path, false) {
                Ok(_) => Some(Some(path)),
                Err(e) => p.fail(ca.span(), format!("{}: {e}", t.label)),
            }
        }
        None => {
            if let Some(v) = t.client_verify.span() {
                p.push(
                    v,
                    "`client_verify` needs `client_ca`, the CAs of the client certificates",
                );
            }
            Some(None)
        }
    };
    Some(Tls {
        certificates: files?,
        min_version: t.min_version.get()?,
        client_ca: client_ca?,
        client_verify: t.client_verify.get()?,
    })
}

/// `ca` (or `insecure_skip_verify`), and `cert` with `key`; each file read as the proxy
/// will read it.
pub(super) fn upstream_tls(
    t: &UpstreamTlsTable,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<UpstreamTls> {
    let insecure = t.insecure_skip_verify.get()?;
    let file = |f: &Field<String>| f.given().map(|f| (f.span(), base_dir.join(f.get_ref())));
    let ca = file(&t.ca);
    let ca = match (ca, insecure) {
        (None, false) => {
            return p.fail(
                t.span.clone(),
                format!(
                    "{} needs `ca` (the CAs of the replicas' certificates) or `insecure_skip_verify = true`",
                    t.label
                ),
            );
        }
        (Some((span, _)), true) => {
            return p.fail(
                span,
                format!(
                    "{}: `insecure_skip_verify = true` verifies nothing, so `ca` would be unused; remove one",
                    t.label
                ),
            );
        }
        (Some((span, path)), false) => {
            if let Err(e) = pem(p, &path, false) {
                return p.fail(span, format!("{}: {e}", t.label));
            }
            Some(path)
        }
        (None, true) => None,
    };
    let client = match (file(&t.cert), file(&t.key)) {
        (None, None) => None,
        (Some((cert_span, cert)), Some((key_span, key))) => {
            let chain =
                pem(p, &cert, false).map_err(|e| p.push(cert_span, format!("{}: {e}", t.label)));
            let pk = pem(p, &key, true).map_err(|e| p.push(key_span, format!("{}: {e}", t.label)));
            chain.ok().zip(pk.ok())?;
            Some(CertFiles { cert, key })
        }
        _ => {
            return p.fail(
                t.span.clone(),
                format!("{} needs both `cert` and `key`, or neither", t.label),
            );
        }
    };
    Some(UpstreamTls {
        ca,
        server_name: t.server_name.given().map(|n| n.get_ref().clone()),
        insecure,
        client,
    })
}

/// `[api.tls]`: the listeners' rules, as an HTTP listener (`passthrough`, `sni` and
/// `default` are refused with their reason). `Some(None)`: none written.
pub(super) fn api_tls(raw: &ApiTable, base_dir: &Path, p: &mut Problems) -> Option<Option<Tls>> {
    match raw.tls.given() {
        Some(t) => Some(Some(client_tls(t.get_ref(), false, base_dir, p).0?.0?)),
        None if raw.tls.is_present() => None,
        None => Some(None),
    }
}

/// `[api] client_role` is the role of a client known by its certificate: it needs the CAs
/// of the client certificates.
pub(super) fn client_role(
    raw: &ApiTable,
    tls: Option<&Tls>,
    p: &mut Problems,
) -> Option<ClientRole> {
    if let Some(v) = raw.client_role.span()
        && tls.is_none_or(|t| t.client_ca.is_none())
    {
        return p.fail(
            v,
            "[api] client_role is the role of a client known by its certificate; it needs \
             [api.tls] client_ca, the CAs of the client certificates",
        );
    }
    raw.client_role.get()
}

/// Reads a PEM file as the proxy will (a certificate chain, or a private `key`); nothing
/// when the checks leave files unread ([`crate::parse_shape`]).
fn pem(p: &Problems, path: &Path, key: bool) -> Result<(), crate::pem::PemError> {
    match (p.reads_files(), key) {
        (false, _) => Ok(()),
        (true, false) => crate::pem::certificates(path).map(drop),
        (true, true) => crate::pem::private_key(path).map(drop),
    }
}
