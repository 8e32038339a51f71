//! The stack-file language: raw TOML types, validation into domain types, precise errors.
//!
//! Reading a stack file goes through three stages, each with one job:
//!
//! 1. toml parses the text into its generic spanned tree. A syntax error stops here.
//! 2. `raw` walks the tree: unknown keys and wrongly typed values are reported, and
//!    what remains is kept with its byte spans.
//! 3. `validate` checks meaning (ranges, durations, references, cycles, address
//!    clashes), fills in defaults and builds the domain types ([`Stack`] and below).
//!
//! Stages 2 and 3 collect every problem instead of stopping at the first, so the user
//! fixes the whole file in one go. Byte spans become `LINE:COLUMN` only at the end.

#![warn(missing_docs)]

mod expose;
mod model;
mod problem;
mod raw;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use model::*;

use problem::Problems;

/// Reads and validates a stack file. Relative `cwd` values resolve against the file's
/// directory.
///
/// A file that cannot be read is reported as one [`Diagnostic`] at 1:1, so the caller
/// prints every failure the same way.
pub fn load(path: &Path) -> Result<Stack, Errors> {
    match std::fs::read_to_string(path) {
        Ok(source) => parse(&source, path),
        Err(e) => Err(Errors {
            diagnostics: vec![Diagnostic {
                file: path.to_path_buf(),
                line: 1,
                column: 1,
                message: format!("cannot read the stack file: {e}"),
            }],
        }),
    }
}

/// Validates source text; `path` is used for messages and to resolve relative `cwd`.
///
/// Does not touch the file system: a relative `cwd` is joined onto `path`'s directory
/// as written, so with a relative `path` it stays relative to the current directory —
/// which is where that relative `path` points from, too.
pub fn parse(source: &str, path: &Path) -> Result<Stack, Errors> {
    let mut problems = Problems::default();
    // After a syntax error, toml's recovered tree is a guess, and checking it would bury
    // the real problem under errors that are not there: report the syntax error alone.
    let doc = match toml::de::DeTable::parse(source) {
        Ok(doc) => doc,
        Err(e) => {
            problems.push(
                e.span().unwrap_or(0..0),
                format!("invalid TOML: {}", e.message()),
            );
            return Err(Errors::new(path, source, problems));
        }
    };
    let raw = raw::read(&doc, &mut problems);
    let base_dir = path.parent().unwrap_or(Path::new(""));
    match validate::validate(raw, base_dir, &mut problems) {
        Some(stack) if problems.is_empty() => Ok(stack),
        _ => Err(Errors::new(path, source, problems)),
    }
}

/// All problems found in a stack file, in file order, each with a location.
///
/// Display prints one per line, `FILE:LINE:COLUMN: error: MESSAGE`, without a trailing
/// newline. Never empty when returned by [`load`] or [`parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Lines(diagnostics))]
pub struct Errors {
    /// Every problem found, sorted by position in the file.
    pub diagnostics: Vec<Diagnostic>,
}

impl Errors {
    fn new(file: &Path, source: &str, problems: Problems) -> Errors {
        let lines = LineIndex::new(source);
        let diagnostics = problems
            .into_sorted()
            .into_iter()
            .map(|p| {
                let (line, column) = lines.position(p.span.start);
                Diagnostic {
                    file: file.to_path_buf(),
                    line,
                    column,
                    message: p.message,
                }
            })
            .collect();
        Errors { diagnostics }
    }
}

struct Lines<'a>(&'a [Diagnostic]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// One problem. `line` and `column` are 1-based; `column` counts characters, not
/// bytes, as editors do, so `FILE:LINE:COLUMN` jumps to the right place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The stack file the problem is in.
    pub file: PathBuf,
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column of the problem, counted in characters.
    pub column: usize,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Byte offset → 1-based line and column.
struct LineIndex<'a> {
    source: &'a str,
    /// Byte offset at which each line starts.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(source: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { source, starts }
    }

    /// Offsets past the end or inside a character are clamped rather than trusted:
    /// a slightly-off position is better than a panic while reporting an error.
    fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.source.len());
        while !self.source.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts.get(line.wrapping_sub(1)).copied().unwrap_or(0);
        let column = self
            .source
            .get(start..offset)
            .map_or(0, |s| s.chars().count());
        (line.max(1), column + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::LineIndex;

    #[test]
    fn positions() {
        let index = LineIndex::new("ab\nc\u{e9}d\n");
        assert_eq!(index.position(0), (1, 1));
        assert_eq!(index.position(2), (1, 3));
        assert_eq!(index.position(3), (2, 1));
        // After the two-byte `é`: column counts characters.
        assert_eq!(index.position(6), (2, 3));
        // Inside `é`: clamped to its start.
        assert_eq!(index.position(5), (2, 2));
        assert_eq!(index.position(8), (3, 1));
        assert_eq!(index.position(100), (3, 1));
    }
}
