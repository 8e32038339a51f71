use std::sync::Arc;

use proptest::prelude::*;

use super::*;

/// The first flight of a real rustls client for `name`: its hello.
fn hello_for(name: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).unwrap();
    }
    out
}

/// Feeds `bytes` cut at `cuts`; the outcome and how many bytes were fed.
fn feed_in_pieces(bytes: &[u8], cuts: &[usize]) -> (Result<Option<Hello>, HelloError>, usize) {
    let mut reader = HelloReader::default();
    let mut at = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(bytes.len());
    points.sort_unstable();
    for end in points {
        if end <= at {
            continue;
        }
        let piece = &bytes[at..end.min(at + reader.room())];
        at += piece.len();
        match reader.feed(piece) {
            Ok(None) if at < bytes.len() => {}
            other => return (other, at),
        }
    }
    (Ok(None), at)
}

#[test]
fn a_real_hello_gives_its_name_and_its_bytes_untouched() {
    let bytes = hello_for("a.example");
    let hello = HelloReader::default().feed(&bytes).unwrap().unwrap();
    assert_eq!(hello.name.as_deref(), Some("a.example"));
    assert_eq!(hello.bytes, bytes);
}

#[test]
fn a_hello_without_sni_has_no_name() {
    // rustls sends no SNI for an IP address.
    let bytes = hello_for("127.0.0.1");
    let hello = HelloReader::default().feed(&bytes).unwrap().unwrap();
    assert_eq!(hello.name, None);
}

#[test]
fn what_is_not_a_hello_is_refused() {
    let http = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";
    assert!(matches!(
        HelloReader::default().feed(http),
        Err(HelloError::Invalid(_))
    ));
    assert!(matches!(
        HelloReader::default().feed(&[]),
        Err(HelloError::Closed)
    ));
    // A record header announcing a hello longer than the bound: more is wanted until
    // the bound, then refused.
    let mut reader = HelloReader::default();
    let mut big = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfc];
    big.resize(MAX_HELLO, 0);
    assert!(matches!(
        reader.feed(&big),
        Err(HelloError::TooLong) | Err(HelloError::Invalid(_))
    ));
    assert!(matches!(reader.feed(&[0]), Err(HelloError::TooLong)));
}

#[test]
fn exact_names_win_over_wildcards_then_the_default() {
    let p = |s| SniName::parse(s).unwrap();
    let mut names = vec![
        (p("*.b.example"), 0),
        (p("x.b.example"), 1),
        (p("a.example"), 2),
    ];
    names.sort_by_key(|(n, _)| matches!(n, SniName::Wildcard(_)));
    assert_eq!(claimant(&names, None, Some("x.b.example")), Some(1));
    assert_eq!(claimant(&names, None, Some("Y.B.example")), Some(0));
    assert_eq!(claimant(&names, None, Some("A.EXAMPLE")), Some(2));
    assert_eq!(claimant(&names, None, Some("y.x.b.example")), None);
    assert_eq!(claimant(&names, Some(2), Some("c.example")), Some(2));
    assert_eq!(claimant(&names, Some(0), None), Some(0));
    assert_eq!(claimant(&names, None, None), None);
}

proptest! {
    /// However the network cuts a hello, it is read whole, with its name, byte for byte.
    #[test]
    fn a_hello_cut_anywhere_reads_the_same(cuts in prop::collection::vec(any::<usize>(), 0..12)) {
        let bytes = hello_for("svc.b.example");
        let (got, fed) = feed_in_pieces(&bytes, &cuts);
        let hello = got.unwrap().unwrap();
        prop_assert_eq!(fed, bytes.len());
        prop_assert_eq!(hello.name.as_deref(), Some("svc.b.example"));
        prop_assert_eq!(hello.bytes, bytes);
    }

    /// Arbitrary bytes never panic the reader, and it never takes more than the bound.
    #[test]
    fn arbitrary_bytes_are_bounded(
        bytes in prop::collection::vec(any::<u8>(), 0..(2 * MAX_HELLO)),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let (_, fed) = feed_in_pieces(&bytes, &cuts);
        prop_assert!(fed <= MAX_HELLO);
    }

    /// A hello's first bytes, then nothing: always more wanted, never a name made up.
    #[test]
    fn a_partial_hello_wants_more(cut in 1usize..100) {
        let bytes = hello_for("a.example");
        let cut = cut.min(bytes.len() - 1);
        prop_assert!(matches!(HelloReader::default().feed(&bytes[..cut]), Ok(None)));
    }
}
