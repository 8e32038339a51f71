//! The stack-file language: one declaration per key, the reader and checks built from
//! it, validation into domain types, precise errors.
//!
//! Reading a stack file goes through three stages, each with one job:
//!
//! 1. toml parses the text into its generic spanned tree. A syntax error stops here.
//! 2. `schema` reads the tree against the declarations in `keys`: unknown keys, wrong
//!    types, out-of-range values and bad spellings are reported, defaults filled in, and
//!    every value keeps its byte span.
//! 3. `check` applies the rules between keys (exactly one of, cycles, address clashes)
//!    and builds the domain types ([`Stack`] and below).
//!
//! Stages 2 and 3 collect every problem instead of stopping at the first, so the user
//! fixes the whole file in one go. Byte spans become `LINE:COLUMN` only at the end.
//! The same declarations ([`declarations`]) give the reference, the JSON Schema and
//! `bulwark explain` (crate `reference`).

#![warn(missing_docs)]

mod check;
mod file;
mod keys;
mod model;
pub mod pem;
mod problem;
mod schema;

use std::path::{Path, PathBuf};

pub use model::*;
pub use problem::suggest;
pub use schema::{DurationRange, Key, NumberRange, Omitted, Shape, StringRule, TableDoc};

use problem::Problems;
use schema::Section;

/// A size as the stack file spells one: `"256MiB"`, `"4GiB"`, `"1000000"` (bytes), also
/// `kB`/`MB`/`GB` (powers of 1000). The error completes "is not a size" (it may be empty,
/// or name the units), for flags that take a size too.
pub fn parse_size(text: &str) -> Result<u64, String> {
    keys::remedy::size(text)
}

/// Every key of the stack file as declared: the top level's doc and keys, each sub-table
/// inside its key's [`Shape`].
pub fn declarations() -> TableDoc {
    keys::StackTable::table_doc()
}

/// A valid stack file, and what in it should still be written otherwise.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The stack.
    pub stack: Stack,
    /// Warnings (old spellings), in file order.
    pub warnings: Vec<Diagnostic>,
}

/// Reads and validates a stack file. Relative `cwd` values resolve against the file's
/// directory.
///
/// A file that cannot be read is reported as one [`Diagnostic`] at 1:1, so the caller
/// prints every failure the same way.
pub fn load(path: &Path) -> Result<Stack, Errors> {
    load_with_warnings(path).map(|l| l.stack)
}

/// [`load`], keeping the warnings.
pub fn load_with_warnings(path: &Path) -> Result<Loaded, Errors> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| Errors::one(path, "", 0..0, format!("cannot read the stack file: {e}")))?;
    parse_with_warnings(&source, path)
}

/// Validates source text; `path` is used for messages and to resolve relative `cwd`.
///
/// Reads only the files the stack names to be read at load (`env_files`, `secrets`, a
/// fallback's `body_file`, all bounded): call it off async workers. A relative `cwd` is
/// joined onto `path`'s directory as written, so with a relative `path` it stays relative
/// to the current directory — which is where that relative `path` points from, too.
pub fn parse(source: &str, path: &Path) -> Result<Stack, Errors> {
    parse_with_warnings(source, path).map(|l| l.stack)
}

/// [`parse`], keeping the warnings.
pub fn parse_with_warnings(source: &str, path: &Path) -> Result<Loaded, Errors> {
    parse_checked(source, path, true, Problems::default())
}

/// [`parse`] without reading the files the stack names: every other check holds, but
/// `env_files` add no variable, secrets and a fallback's `body_file` are empty, and
/// certificates and a container's root file system are not looked at. For the cluster's
/// scheduler and `status --etcd`, which read the applied stack on one machine while those
/// files are on the machines that run its replicas (each agent reads them when it loads
/// its copy). Never run what it returns.
pub fn parse_shape(source: &str, path: &Path) -> Result<Stack, Errors> {
    parse_checked(source, path, true, Problems::files_unread()).map(|l| l.stack)
}

/// The local settings of a cluster agent (`bulwark agent`): a stack file checked like any
/// other, except that it may have no service (its replicas come from the cluster, in a
/// later layer). The agent makes it from its flags (`[api] listen`).
pub fn parse_agent(source: &str, path: &Path) -> Result<Stack, Errors> {
    parse_checked(source, path, false, Problems::default()).map(|l| l.stack)
}

fn parse_checked(
    source: &str,
    path: &Path,
    services_required: bool,
    mut problems: Problems,
) -> Result<Loaded, Errors> {
    let raw: keys::StackTable = read_root(source, path, &mut problems)?;
    let base_dir = path.parent().unwrap_or(Path::new(""));
    match check::stack(raw, base_dir, services_required, &mut problems) {
        Some(stack) if problems.is_empty() => Ok(Loaded {
            stack,
            warnings: Errors::new(path, source, problems).diagnostics,
        }),
        _ => Err(Errors::new(path, source, problems)),
    }
}

/// Reads a file of `[[experiments]]` kept apart from the stack file, checked against the
/// running stack's `services`; relative paths resolve against `path`'s directory.
pub fn parse_experiments(
    source: &str,
    path: &Path,
    services: &[Service],
) -> Result<Vec<Experiment>, Errors> {
    let mut problems = Problems::default();
    let raw: keys::ExperimentsFile = read_root(source, path, &mut problems)?;
    let known: Vec<&Service> = services.iter().collect();
    let base_dir = path.parent().unwrap_or(Path::new(""));
    match check::chaos::experiments(&raw.experiments, &known, base_dir, &mut problems) {
        Some(list) if problems.is_empty() => Ok(list),
        _ => Err(Errors::new(path, source, problems)),
    }
}

/// `source` read as the table `S`, its problems in `p`. After a syntax error, toml's
/// recovered tree is a guess, and checking it would bury the real problem under errors that
/// are not there: the syntax error is reported alone.
fn read_root<S: Section>(source: &str, path: &Path, p: &mut Problems) -> Result<S, Errors> {
    let doc = toml::de::DeTable::parse(source).map_err(|e| {
        let message = format!("invalid TOML: {}", e.message());
        Errors::one(path, source, e.span().unwrap_or(0..0), message)
    })?;
    let mut root = schema::Table::new(Some(doc.get_ref()), doc.span(), String::new(), "");
    root.label = "at the top level".into();
    Ok(S::read(&root, p))
}

/// All problems found in a stack file (warnings too), in file order, each with a location.
///
/// Display prints one per line, `FILE:LINE:COLUMN: error: MESSAGE`, without a trailing
/// newline. Never empty when returned by [`load`] or [`parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", diagnostics.iter().map(Diagnostic::to_string).collect::<Vec<_>>().join("\n"))]
pub struct Errors {
    /// Every problem found, sorted by position in the file.
    pub diagnostics: Vec<Diagnostic>,
}

impl Errors {
    fn new(file: &Path, source: &str, problems: Problems) -> Errors {
        let diagnostics = problems
            .into_sorted()
            .into_iter()
            .map(|p| {
                let (line, column) = position(source, p.span.start);
                Diagnostic {
                    file: file.to_path_buf(),
                    line,
                    column,
                    message: p.message,
                    warning: p.warning,
                }
            })
            .collect();
        Errors { diagnostics }
    }

    /// The one problem that stops a file from being read at all.
    fn one(file: &Path, source: &str, span: problem::Span, message: String) -> Errors {
        let mut problems = Problems::default();
        problems.push(span, message);
        Errors::new(file, source, problems)
    }
}

/// One problem. `line` and `column` are 1-based; `column` counts characters, not
/// bytes, as editors do, so `FILE:LINE:COLUMN` jumps to the right place.
///
/// Display prints `FILE:LINE:COLUMN: error: MESSAGE` (or `warning:`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}:{line}:{column}: {}: {message}",
    file.display(),
    if *warning { "warning" } else { "error" }
)]
pub struct Diagnostic {
    /// The stack file the problem is in.
    pub file: PathBuf,
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column of the problem, counted in characters.
    pub column: usize,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
    /// A warning: the file is still valid.
    pub warning: bool,
}

/// Byte offset → 1-based line and column, the column counted in characters. Offsets past
/// the end or inside a character are clamped rather than trusted: a slightly-off position
/// is better than a panic while reporting an error.
fn position(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::position;

    #[test]
    fn positions() {
        let source = "ab\nc\u{e9}d\n";
        assert_eq!(position(source, 0), (1, 1));
        assert_eq!(position(source, 2), (1, 3));
        assert_eq!(position(source, 3), (2, 1));
        // After the two-byte `é`: column counts characters.
        assert_eq!(position(source, 6), (2, 3));
        // Inside `é`: clamped to its start.
        assert_eq!(position(source, 5), (2, 2));
        assert_eq!(position(source, 8), (3, 1));
        assert_eq!(position(source, 100), (3, 1));
    }
}
