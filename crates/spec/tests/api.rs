//! `[api]` and `[api.tls]` (issue 18): TLS off loopback, mTLS roles, located errors.

use std::path::Path;

use spec::{ClientRole, ClientVerify};

/// Parses `src` as DIR/stack.toml, with a certificate and key in DIR (PEM that reads; not
/// a usable key, which only `up` finds out); errors with DIR for the directory.
fn parse_in(dir: &Path, src: &str) -> Result<spec::Loaded, String> {
    let pem = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n";
    std::fs::write(dir.join("api.pem"), pem).unwrap();
    std::fs::write(dir.join("api.key"), key).unwrap();
    std::fs::write(dir.join("ca.pem"), pem).unwrap();
    let src = format!("[services.web]\nrun = [\"x\"]\n{src}");
    spec::parse_with_warnings(&src, &dir.join("stack.toml"))
        .map_err(|e| e.to_string().replace(&dir.display().to_string(), "DIR"))
}

const CERTS: &str = "certificates = [{ cert = \"api.pem\", key = \"api.key\" }]";

#[test]
fn a_non_loopback_api_needs_tls_and_says_what_to_add() {
    let dir = tempfile::tempdir().unwrap();
    let err = parse_in(dir.path(), "[api]\nlisten = \"0.0.0.0:7700\"\n").unwrap_err();
    assert_eq!(
        err,
        "DIR/stack.toml:4:10: error: [api] listen = \"0.0.0.0:7700\" is not a loopback \
         address, and the API would speak plain HTTP, showing its bearer token to the \
         network: add an [api.tls] table, e.g. `tls = { certificates = [{ cert = \
         \"api.pem\", key = \"api.key\" }] }` (with `client_ca` for mTLS), or listen on \
         127.0.0.1"
    );
    let err = parse_in(dir.path(), "[api]\nlisten = \"[::]:7700\"\n").unwrap_err();
    assert!(
        err.contains("DIR/stack.toml:4:10: error: [api] listen = \"[::]:7700\""),
        "{err}"
    );

    let loaded = parse_in(
        dir.path(),
        &format!("[api]\nlisten = \"0.0.0.0:7700\"\n[api.tls]\n{CERTS}\n"),
    )
    .unwrap();
    let api = loaded.stack.api;
    assert!(loaded.warnings.is_empty());
    let tls = api.tls.unwrap();
    assert_eq!(tls.certificates[0].cert, dir.path().join("api.pem"));
    assert_eq!(tls.client_ca, None);
    assert_eq!(api.client_role, ClientRole::Viewer);
}

#[test]
fn tls_on_loopback_is_fine_and_its_files_are_checked_where_written() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = parse_in(dir.path(), &format!("[api.tls]\n{CERTS}\n")).unwrap();
    assert!(loaded.stack.api.listen.ip().is_loopback());
    assert!(loaded.stack.api.tls.is_some());
    let err = parse_in(
        dir.path(),
        "[api]\nlisten = \"0.0.0.0:7700\"\ntls = { certificates = [{ cert = \"gone.pem\", key = \"api.key\" }] }\n",
    )
    .unwrap_err();
    // The missing file is the problem; no second error about plain HTTP.
    assert_eq!(
        err,
        "DIR/stack.toml:5:34: error: [[api.tls.certificates]]: DIR/gone.pem: cannot read it: \
         No such file or directory (os error 2)"
    );
}

#[test]
fn client_role_names_the_role_of_a_certificate_and_needs_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = parse_in(
        dir.path(),
        &format!("[api]\nclient_role = \"operator\"\n[api.tls]\n{CERTS}\nclient_ca = \"ca.pem\"\n"),
    )
    .unwrap();
    let api = loaded.stack.api;
    assert_eq!(api.client_role, ClientRole::Operator);
    let tls = api.tls.unwrap();
    assert_eq!(tls.client_ca, Some(dir.path().join("ca.pem")));
    assert_eq!(tls.client_verify, ClientVerify::Required);

    let err = parse_in(
        dir.path(),
        &format!("[api]\nclient_role = \"admin\"\n[api.tls]\n{CERTS}\n"),
    )
    .unwrap_err();
    assert_eq!(
        err,
        "DIR/stack.toml:4:15: error: [api] client_role is the role of a client known by its \
         certificate; it needs [api.tls] client_ca, the CAs of the client certificates"
    );
    let err = parse_in(dir.path(), "[api]\nclient_role = \"root\"\n").unwrap_err();
    assert!(err.starts_with("DIR/stack.toml:4:15: error:"), "{err}");
    assert!(err.contains("viewer") && err.contains("operator"), "{err}");
}

#[test]
fn allow_remote_is_accepted_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = parse_in(
        dir.path(),
        &format!("[api]\nlisten = \"0.0.0.0:7700\"\nallow_remote = true\n[api.tls]\n{CERTS}\n"),
    )
    .unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("`allow_remote` in [api] is deprecated and has no effect"),
        "{warnings:?}"
    );
}
