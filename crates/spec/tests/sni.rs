//! The SNI names a passthrough service claims: what `a.example` and `*.b.example` match.

use proptest::prelude::*;
use spec::SniName;

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?"
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..4).prop_map(|l| format!("{}.example", l.join(".")))
}

/// `s` with its letters' case flipped where `flips` says.
fn recase(s: &str, flips: &[bool]) -> String {
    s.chars()
        .zip(flips.iter().cycle())
        .map(|(c, f)| if *f { c.to_ascii_uppercase() } else { c })
        .collect()
}

#[test]
fn what_parses_and_what_does_not() {
    assert_eq!(
        SniName::parse("A.Example"),
        Some(SniName::Exact("a.example".into()))
    );
    assert_eq!(
        SniName::parse("*.b.example"),
        Some(SniName::Wildcard(".b.example".into()))
    );
    for bad in [
        "",
        "*",
        "*.",
        "a.*.example",
        "*a.example",
        "**.example",
        "10.0.0.1",
        "a..example",
        "a.example.",
        "a b.example",
    ] {
        assert_eq!(SniName::parse(bad), None, "{bad:?}");
    }
    assert_eq!(
        SniName::parse("*.b.example").unwrap().to_string(),
        "*.b.example"
    );
}

proptest! {
    /// An exact name matches itself in any case, and nothing longer or shorter.
    #[test]
    fn an_exact_name_matches_itself_only(n in name(), l in label(), flips in prop::collection::vec(any::<bool>(), 1..8)) {
        let exact = SniName::parse(&n).unwrap();
        prop_assert!(exact.matches(&n));
        prop_assert!(exact.matches(&recase(&n, &flips)));
        let longer = format!("{l}.{n}");
        prop_assert!(!exact.matches(&longer));
        prop_assert!(!exact.matches(&n[1..]));
    }

    /// A wildcard takes exactly one more label, in any case; not the suffix itself, not
    /// two labels, not a name that only ends with the same letters.
    #[test]
    fn a_wildcard_takes_one_label(n in name(), l in label(), m in label(), flips in prop::collection::vec(any::<bool>(), 1..8)) {
        let wild = SniName::parse(&format!("*.{n}")).unwrap();
        let one = format!("{l}.{n}");
        prop_assert!(wild.matches(&one));
        prop_assert!(wild.matches(&recase(&one, &flips)));
        let two = format!("{m}.{l}.{n}");
        let glued = format!("{l}{n}");
        prop_assert!(!wild.matches(&n));
        prop_assert!(!wild.matches(&two));
        prop_assert!(!wild.matches(&glued));
    }

    /// Matching never panics, whatever a client sends as its name.
    #[test]
    fn any_name_is_safe_to_match(n in name(), sent in any::<String>()) {
        let _ = SniName::parse(&n).unwrap().matches(&sent);
        let _ = SniName::parse(&format!("*.{n}")).unwrap().matches(&sent);
        let _ = SniName::parse(&sent);
    }
}
