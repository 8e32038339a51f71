//! The rules that recur between keys, each written once with its one wording, so that the
//! same mistake reads the same in every table: exactly one of several keys, a key another
//! key's value makes required, two durations in order.

use std::time::Duration;

use humantime::format_duration;

use crate::problem::{Problems, Span, backticked};
use crate::schema::{Field, Place};

/// Exactly one of `choices` (each a key, and how the message shows it) written in the
/// table: that key. Every key written counts, valid or not (the reader reported an invalid
/// one), so fixing the count does not reveal a new error in the key that stays. None or
/// several are reported at the table, or with `at_second` at the second key written.
pub(super) fn one_of<'k>(
    (span, label, written): Place<'_>,
    choices: &[(&'k str, &str)],
    at_second: bool,
    p: &mut Problems,
) -> Option<&'k str> {
    let chosen = |k: &String| choices.iter().map(|(c, _)| *c).find(|c| c == k);
    let found: Vec<_> = written
        .iter()
        .filter(|(k, _, _)| chosen(k).is_some())
        .collect();
    if let [(one, _, _)] = found.as_slice() {
        return chosen(one);
    }
    let at = match found.get(1) {
        Some((_, key, _)) if at_second => key.clone(),
        _ => span.clone(),
    };
    let found: Vec<&str> = found.iter().map(|(k, _, _)| k.as_str()).collect();
    let found = if found.is_empty() {
        "none".to_owned()
    } else {
        backticked(&found)
    };
    let ((_, last), init) = choices.split_last()?;
    let init: Vec<&str> = init.iter().map(|(_, shown)| *shown).collect();
    let choices = format!("{} or {last}", init.join(", "));
    p.fail(
        at,
        format!("{label} needs exactly one of {choices}, found {found}"),
    )
}

/// The value of a key that another key's value (`cond`, as the file writes it) requires:
/// left out, reported at the table with `what` to write; invalid, already reported.
pub(super) fn required<T: Clone>(
    field: &Field<T>,
    (span, label, _): Place<'_>,
    (cond, what): (impl std::fmt::Display, &str),
    p: &mut Problems,
) -> Option<T> {
    match field {
        Field::Absent => p.fail(span.clone(), format!("{label}: {cond} needs {what}")),
        f => f.get(),
    }
}

/// Two durations that must come in order, `low` not above `high`; `None` if they do not.
pub(super) fn ordered(
    at: Span,
    label: &str,
    (a, low): (&str, Duration),
    (b, high): (&str, Duration),
    p: &mut Problems,
) -> Option<()> {
    if low <= high {
        return Some(());
    }
    let (low, high) = (format_duration(low), format_duration(high));
    p.fail(
        at,
        format!("{label}: `{a}` ({low}) must not exceed `{b}` ({high})"),
    )
}
