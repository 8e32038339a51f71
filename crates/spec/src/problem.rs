//! Problems found while reading a stack file, before they get a line and column.
//!
//! Both layers (`raw` and `validate`) record problems by byte span and keep going; only
//! `lib` turns spans into `FILE:LINE:COLUMN` once everything has been collected, so the
//! user sees every problem of the file in one run.

use std::ops::Range;

/// A byte range into the stack file's source text.
pub(crate) type Span = Range<usize>;

/// One problem at a byte span. The message is complete: it names the key it is about,
/// because the user reads it on a terminal, without the source next to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub span: Span,
    pub message: String,
    /// A warning: reported, but the file is still valid.
    pub warning: bool,
}

/// Collector shared by the reading and validating passes.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    found: Vec<Problem>,
    /// The files the stack names are not read ([`crate::parse_shape`]).
    files_unread: bool,
}

impl Problems {
    /// A collector for [`crate::parse_shape`]: the checks leave the stack's files unread.
    pub fn files_unread() -> Problems {
        Problems {
            files_unread: true,
            ..Problems::default()
        }
    }

    /// Whether the checks read the files the stack names (env files, secrets, bodies,
    /// certificates, a container's root file system).
    pub fn reads_files(&self) -> bool {
        !self.files_unread
    }

    pub fn push(&mut self, span: Span, message: impl Into<String>) {
        self.add(span, message.into(), false);
    }

    /// [`Problems::push`], then `None`: for a check that stops at the problem.
    pub fn fail<T>(&mut self, span: Span, message: impl Into<String>) -> Option<T> {
        self.push(span, message);
        None
    }

    /// Something that still reads, but should be written otherwise (an old spelling).
    pub fn warn(&mut self, span: Span, message: impl Into<String>) {
        self.add(span, message.into(), true);
    }

    fn add(&mut self, span: Span, message: String, warning: bool) {
        self.found.push(Problem {
            span,
            message,
            warning,
        });
    }

    /// No error so far (warnings do not count).
    pub fn is_empty(&self) -> bool {
        self.found.iter().all(|p| p.warning)
    }

    /// Problems in file order. The sort is stable, so problems at the same place keep
    /// the order in which they were found (outer before inner).
    pub fn into_sorted(mut self) -> Vec<Problem> {
        self.found.sort_by_key(|p| p.span.start);
        self.found
    }
}

/// The candidate closest to `given`, if it is close enough to be a plausible typo.
///
/// Two measures, because they fail differently: Jaro-Winkler rewards a shared prefix
/// (`replica` → `replicas`) but is harsh on short words, while Levenshtein catches one or
/// two slips anywhere (`on_failure` → `on-failure`). The Levenshtein distance must also
/// be under half the length of the longer word, or short words would "mean" anything
/// (`FOO` is two edits from `IO`).
pub fn suggest<'a>(given: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let given_lower = given.to_ascii_lowercase();
    candidates
        .into_iter()
        .filter_map(|candidate| {
            let lower = candidate.to_ascii_lowercase();
            let jw = strsim::jaro_winkler(&given_lower, &lower);
            let lev = strsim::levenshtein(&given_lower, &lower);
            let longer = given_lower.chars().count().max(lower.chars().count());
            let close = jw > 0.8 || (lev <= 2 && 2 * lev < longer);
            close.then_some((candidate, jw))
        })
        // On a tie the earlier candidate wins: candidates come in a meaningful order
        // (documentation order, file order), and the answer must not depend on luck.
        .reduce(|best, c| if c.1 > best.1 { c } else { best })
        .map(|(candidate, _)| candidate)
}

/// `"; did you mean `x`?"` when a candidate is close, otherwise the full list of what is
/// accepted, so the message always tells the user what to write instead.
pub(crate) fn hint(given: &str, candidates: &[&str], what: &str) -> String {
    match suggest(given, candidates.iter().copied()) {
        Some(s) => format!("; did you mean `{s}`?"),
        None if candidates.is_empty() => String::new(),
        None => format!("; {what} {}", backticked(candidates)),
    }
}

/// `` `a`, `b`, `c` ``.
pub(crate) fn backticked(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    quoted.join(", ")
}

/// `"a"`, `"b"` or `"c"`: how string values are listed in messages (they are strings in
/// the file, so they are shown quoted, ready to paste).
pub(crate) fn quoted_choices(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    match quoted.split_last() {
        Some((last, init)) if !init.is_empty() => format!("{} or {last}", init.join(", ")),
        _ => quoted.concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let keys = ["run", "replicas", "restart", "restart_rules", "env"];
        assert_eq!(suggest("replica", keys), Some("replicas"));
        assert_eq!(suggest("restart-rules", keys), Some("restart_rules"));
        assert_eq!(suggest("Replicas", keys), Some("replicas"));
        assert_eq!(suggest("x", keys), None);
        assert_eq!(suggest("rn", keys), Some("run"));
        assert_eq!(suggest("FOO", ["IO", "TERM"]), None);
        assert_eq!(suggest("TREM", ["IO", "TERM"]), Some("TERM"));
        assert_eq!(suggest("completely_else", keys), None);
        assert_eq!(
            suggest("on_failure", ["always", "on-failure", "never"]),
            Some("on-failure")
        );
    }

    #[test]
    fn choices() {
        assert_eq!(quoted_choices(&["a"]), "\"a\"");
        assert_eq!(quoted_choices(&["a", "b", "c"]), "\"a\", \"b\" or \"c\"");
    }
}
