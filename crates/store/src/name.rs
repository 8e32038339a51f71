//! Validation of log and namespace names.

use crate::Error;

/// Longest accepted log or namespace name, in bytes.
///
/// Names become table names inside the journal file; the bound keeps a caller that passes
/// data where a name belongs (an id, a JSON blob) from quietly creating odd tables.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a log or namespace name: non-empty, at most [`MAX_NAME_LEN`] bytes, only
/// `[a-z0-9_-]`.
///
/// The restricted alphabet is what lets the embedded store prefix names (`log.`, `kv.`) to
/// form table names without any chance of two names mapping to the same table or colliding
/// with its internal tables, whose names contain characters outside it.
pub(crate) fn validate(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name.len() > MAX_NAME_LEN {
        "is longer than 64 bytes"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        "may only contain a-z, 0-9, '_' and '-'"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in [
            "events",
            "a",
            "alerts_v2",
            "incident-state",
            "0",
            &"x".repeat(64),
        ] {
            assert!(validate(ok).is_ok(), "{ok:?} should be valid");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "Events",
            "a.b",
            "a:b",
            "a b",
            "a/b",
            "ünï",
            "log\0",
            &"x".repeat(65),
        ] {
            assert!(
                matches!(validate(bad), Err(Error::InvalidName { .. })),
                "{bad:?} should be rejected"
            );
        }
    }
}
