//! The scorecard for people and machines: a terminal table, Markdown, JSON, and the files
//! `bulwark verify` leaves behind. JUnit XML is in `junit.rs`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::human::{maybe_millis, millis, percent, short, verdict};
use crate::junit::junit;
use crate::report::{Case, Scorecard};

/// The columns of the table and of the Markdown, in order.
const COLUMNS: [&str; 9] = [
    "service", "fault", "sent", "lost", "detect", "recover", "p99", "budget", "verdict",
];

/// Which columns hold figures, right-aligned in the terminal.
const NUMERIC: [bool; 9] = [false, false, true, true, true, true, true, true, false];

/// One case's cells, in the order of [`COLUMNS`].
fn cells(case: &Case) -> [String; 9] {
    [
        case.service.clone(),
        case.fault.clone(),
        case.sent.to_string(),
        case.lost.to_string(),
        maybe_millis(case.detect_ms),
        maybe_millis(case.recover_ms),
        millis(case.p99_ms),
        percent(case.budget_spent),
        verdict(case.passed).to_owned(),
    ]
}

/// "score 93.3 / 100 (min 80): PASS".
fn score_line(card: &Scorecard) -> String {
    let min = card
        .min_score
        .map_or_else(String::new, |min| format!(" (min {})", short(min)));
    format!(
        "score {:.1} / 100{min}: {}",
        card.score,
        verdict(card.passed)
    )
}

/// The scorecard as an aligned plain-text table for a terminal: a line naming the run, one
/// row per case (service, fault, sent, lost, detect, recover, p99, budget, verdict), then
/// the score and verdict: "score 93.3 / 100 (min 80): PASS".
pub fn table(card: &Scorecard) -> String {
    let header = COLUMNS.map(str::to_uppercase);
    let rows: Vec<[String; 9]> = card.cases.iter().map(cells).collect();
    let mut widths = header.clone().map(|cell| cell.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = format!(
        "bulwark verify of {}, started {}, {} req/s\n",
        card.stack,
        card.started,
        short(card.load_rate)
    );
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = " ".repeat(widths[i] - cell.chars().count());
            if NUMERIC[i] {
                let _ = write!(line, "{pad}{cell}  ");
            } else {
                let _ = write!(line, "{cell}{pad}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(&score_line(card));
    out.push('\n');
    out
}

/// The scorecard as GitHub Markdown: the run, a table with the same columns as [`table`],
/// the score, and a section listing every failed check with what was measured.
pub fn markdown(card: &Scorecard) -> String {
    let mut out = String::from("# bulwark verify\n\n");
    let _ = writeln!(
        out,
        "Stack {}, started {}, open-loop load of {} req/s.\n",
        md(&card.stack),
        md(&card.started),
        short(card.load_rate)
    );
    let header: Vec<&str> = COLUMNS.to_vec();
    let rule: Vec<&str> = NUMERIC
        .iter()
        .map(|&numeric| if numeric { "---:" } else { "---" })
        .collect();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "| {} |", rule.join(" | "));
    for case in &card.cases {
        let row: Vec<String> = cells(case).iter().map(|cell| md(cell)).collect();
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    let _ = writeln!(out, "\n**{}**\n", score_line(card));
    out.push_str("## Failed checks\n\n");
    let mut any = false;
    for case in &card.cases {
        for check in case.failed_checks() {
            any = true;
            let _ = writeln!(
                out,
                "- {} / {} ({}): {}: {}",
                md(&case.service),
                md(&case.fault),
                md(&case.description),
                md(&check.name),
                md(&check.detail)
            );
        }
        if !case.passed && case.checks.is_empty() {
            any = true;
            let _ = writeln!(
                out,
                "- {} / {}: not judged",
                md(&case.service),
                md(&case.fault)
            );
        }
    }
    if !any {
        out.push_str("None: every check passed.\n");
    }
    out
}

/// Text made inert for a Markdown table cell or list item: punctuation Markdown or a GFM
/// table would read as syntax is backslash-escaped (CommonMark allows that before any
/// ASCII punctuation), and line breaks, which would end the row, become spaces.
fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '&' | '#' | '~' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The scorecard as pretty-printed JSON, the schema being [`Scorecard`]'s fields; it reads
/// back with `serde_json::from_str::<Scorecard>`. Figures that are not numbers (NaN) are
/// written as `null`, as JSON has no such number.
pub fn json(card: &Scorecard) -> String {
    // Cannot fail: every map key is a string and serde_json writes non-finite floats as null.
    let mut out = serde_json::to_string_pretty(card).expect("a scorecard serializes to JSON");
    out.push('\n');
    out
}

/// Writes `verify.json`, `verify.md` and `verify.junit.xml` into `dir`, creating it (and
/// its parents) if needed, and returns their paths in that order.
///
/// # Errors
///
/// The first error creating the directory or writing a file; files written before it stay.
pub fn write_all(card: &Scorecard, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let files = [
        ("verify.json", json(card)),
        ("verify.md", markdown(card)),
        ("verify.junit.xml", junit(card)),
    ];
    let mut paths = Vec::with_capacity(files.len());
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_cells_are_inert() {
        assert_eq!(md("a|b"), "a\\|b");
        assert_eq!(md("<b>x</b>"), "\\<b\\>x\\</b\\>");
        assert_eq!(md("two\nlines"), "two lines");
        assert_eq!(md("web/1 ok"), "web/1 ok");
    }
}
