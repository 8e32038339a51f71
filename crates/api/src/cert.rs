//! The subject common name of a client certificate, the name an mTLS caller goes by in
//! the audit log. The certificate was verified by rustls before (its DER is well formed);
//! this walks just enough DER to find the CN, bounds-checked, and gives `None` for
//! anything unexpected rather than guessing.

/// The longest name kept; the rest is cut.
const MAX_NAME: usize = 64;

/// The first common name (OID 2.5.4.3) of the certificate's subject, with every character
/// but ASCII letters, digits and `-_.@ ` replaced by `?` (it ends up in log lines).
pub(crate) fn subject_cn(der: &[u8]) -> Option<String> {
    let (cert, _) = expect(0x30, der)?;
    let (tbs, _) = expect(0x30, cert)?;
    let mut rest = tbs;
    // `[0] version`, absent in version 1 certificates.
    if let Some((0xa0, _, after)) = tlv(rest) {
        rest = after;
    }
    // serialNumber, signature, issuer, validity; then subject.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (mut names, _) = expect(0x30, rest)?;
    while !names.is_empty() {
        let (set, after) = expect(0x31, names)?;
        names = after;
        let mut atvs = set;
        while !atvs.is_empty() {
            let (atv, after) = expect(0x30, atvs)?;
            atvs = after;
            let (oid, value) = expect(0x06, atv)?;
            if oid == [0x55, 0x04, 0x03] {
                let (tag, text, _) = tlv(value)?;
                // UTF8String, PrintableString, TeletexString, IA5String.
                if !matches!(tag, 0x0c | 0x13 | 0x14 | 0x16) {
                    return None;
                }
                return Some(clean(&String::from_utf8_lossy(text)));
            }
        }
    }
    None
}

fn clean(name: &str) -> String {
    name.chars()
        .take(MAX_NAME)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@ ".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// The content of the element at the start of `der` if its tag is `tag`, and what follows.
fn expect(tag: u8, der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (t, content, rest) = tlv(der)?;
    (t == tag).then_some((content, rest))
}

/// The tag, content and rest of the DER element at the start of `der` (definite lengths
/// of up to four bytes; single-byte tags).
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, der) = der.split_first()?;
    let (&first, der) = der.split_first()?;
    let (len, der) = if first < 0x80 {
        (usize::from(first), der)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || der.len() < n {
            return None;
        }
        let (bytes, der) = der.split_at(n);
        (
            bytes.iter().fold(0usize, |l, &b| (l << 8) | usize::from(b)),
            der,
        )
    };
    (der.len() >= len).then(|| (tag, &der[..len], &der[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl req -x509 -subj "/O=bulwark tests/CN=ops-laptop/OU=x"`.
    const WITH_CN: &str = "-----BEGIN CERTIFICATE-----
MIIBxzCCAW2gAwIBAgIUVE8hYO6oQkYKXMqEYxnljZScm/swCgYIKoZIzj0EAwIw
OTEWMBQGA1UECgwNYnVsd2FyayB0ZXN0czETMBEGA1UEAwwKb3BzLWxhcHRvcDEK
MAgGA1UECwwBeDAeFw0yNjEyMDQxODEyMzZaFw0zNjEyMDExODEyMzZaMDkxFjAU
BgNVBAoMDWJ1bHdhcmsgdGVzdHMxEzARBgNVBAMMCm9wcy1sYXB0b3AxCjAIBgNV
BAsMAXgwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATvdA6nc7o0SE0+7duvLfzO
5Zmy+MyXxqJZyMj15Dg3kXW02w+vpjVFB3ZfaXwDgtYvhYZ3OEXL7mF/UGSxPVSo
o1MwUTAdBgNVHQ4EFgQUBes1+QSQbjKzq+idlmQIG40OKLwwHwYDVR0jBBgwFoAU
Bes1+QSQbjKzq+idlmQIG40OKLwwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQD
AgNIADBFAiEA5p12fvt2sIc2WfAqbHQS/2OEEg1ZiRkhUo71kxNcP8ICIE+DNUUL
ec3wo5N2LE6L2pBSBSXdGIpj4xSGHvxwpqBV
-----END CERTIFICATE-----";
    /// `-subj "/O=no common name"`.
    const WITHOUT_CN: &str = "-----BEGIN CERTIFICATE-----
MIIBhzCCAS2gAwIBAgIUduC0w25MjAhBr1fikaJs5rc5CTYwCgYIKoZIzj0EAwIw
GTEXMBUGA1UECgwObm8gY29tbW9uIG5hbWUwHhcNMjYxMjA0MTgxMjM2WhcNMzYx
MjAxMTgxMjM2WjAZMRcwFQYDVQQKDA5ubyBjb21tb24gbmFtZTBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABJpQnQv0S90+WYvAbGDbmdZFnMZrSPKNsyuCXy2jQVhv
9tDp0YIzg7OdrWuBGivEsGhERVPQ1cwdMZFHSw1H6O2jUzBRMB0GA1UdDgQWBBTS
seQqkMR+CNAKGLNZnyG00aLktTAfBgNVHSMEGDAWgBTSseQqkMR+CNAKGLNZnyG0
0aLktTAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIFm/8owT7eZk
ol7Rf6/gMB8Pz4XbcnsJYjgv5LhBKY47AiEAzVFDYPtL8nBff5umyAHnd8g4dwPN
88fGH0itxWGH6QM=
-----END CERTIFICATE-----";

    fn der(pem: &str) -> Vec<u8> {
        let path = std::path::Path::new("test.pem");
        spec::pem::certificates_in(path, pem.as_bytes()).unwrap()[0].to_vec()
    }

    #[test]
    fn finds_the_subject_common_name() {
        assert_eq!(subject_cn(&der(WITH_CN)).as_deref(), Some("ops-laptop"));
        assert_eq!(subject_cn(&der(WITHOUT_CN)), None);
    }

    #[test]
    fn truncated_or_garbled_der_gives_none_without_panicking() {
        let good = der(WITH_CN);
        for cut in 0..good.len() {
            let _ = subject_cn(&good[..cut]);
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = subject_cn(&bad);
        }
        assert_eq!(subject_cn(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(subject_cn(b""), None);
    }

    #[test]
    fn names_are_cleaned_for_log_lines() {
        assert_eq!(clean("a b\nc\u{1b}[31m=é"), "a b?c??31m??");
        assert_eq!(clean(&"x".repeat(100)).len(), MAX_NAME);
    }
}
