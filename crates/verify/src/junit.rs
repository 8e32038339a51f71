//! The scorecard as JUnit XML, the report format every CI system reads.

use std::fmt::Write as _;

use crate::human::{maybe_millis, millis, percent, short};
use crate::report::{Case, Scorecard};

/// The scorecard as JUnit XML: one `<testsuites>` holding one `<testsuite name="bulwark
/// verify">`, with the run's stack, start, load rate and score as properties, and one
/// `<testcase classname="SERVICE" name="FAULT">` per case. A failed case carries a
/// `<failure>` whose message lists its failed checks; every case carries its figures in
/// `<system-out>`.
///
/// A case's `time` is how long the load ran through it, `sent / load_rate` seconds (0 when
/// the rate is 0), since the load is open-loop and a case has no other duration recorded.
pub fn junit(card: &Scorecard) -> String {
    let tests = card.cases.len();
    let failures = card.cases.iter().filter(|case| !case.passed).count();
    let time: f64 = card
        .cases
        .iter()
        .map(|case| seconds(case, card.load_rate))
        .sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"bulwark verify\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"{time:.3}\">"
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"bulwark verify\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{time:.3}\">"
    );
    out.push_str("    <properties>\n");
    let mut properties = vec![
        ("stack", card.stack.clone()),
        ("started", card.started.clone()),
        ("load_rate", short(card.load_rate)),
        ("score", format!("{:.1}", card.score)),
    ];
    if let Some(min) = card.min_score {
        properties.push(("min_score", short(min)));
    }
    for (name, value) in properties {
        let _ = writeln!(
            out,
            "      <property name=\"{name}\" value=\"{}\"/>",
            attr(&value)
        );
    }
    out.push_str("    </properties>\n");
    for case in &card.cases {
        testcase(&mut out, case, card.load_rate);
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// How long the load ran through `case`, in seconds.
fn seconds(case: &Case, load_rate: f64) -> f64 {
    if load_rate > 0.0 && load_rate.is_finite() {
        case.sent as f64 / load_rate
    } else {
        0.0
    }
}

fn testcase(out: &mut String, case: &Case, load_rate: f64) {
    let _ = writeln!(
        out,
        "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
        attr(&case.service),
        attr(&case.fault),
        seconds(case, load_rate)
    );
    if !case.passed {
        let failed: Vec<String> = case
            .failed_checks()
            .map(|check| format!("{}: {}", check.name, check.detail))
            .collect();
        // A case can fail with no failed check only if it was never judged.
        let message = if failed.is_empty() {
            "not judged".to_owned()
        } else {
            failed.join("; ")
        };
        let _ = writeln!(
            out,
            "      <failure type=\"hypothesis\" message=\"{}\">{}</failure>",
            attr(&message),
            text(&failed.join("\n"))
        );
    }
    let _ = writeln!(
        out,
        "      <system-out>{}</system-out>",
        text(&figures(case))
    );
    out.push_str("    </testcase>\n");
}

/// A case's figures and checks, one per line.
fn figures(case: &Case) -> String {
    let errors = if case.errors.is_empty() {
        "none".to_owned()
    } else {
        let classes: Vec<String> = case
            .errors
            .iter()
            .map(|(class, count)| format!("{class}: {count}"))
            .collect();
        classes.join(", ")
    };
    let mut out = format!(
        "{}\nsent {}, lost {}, errors {errors}\ndetect {}, recover {}\np99 {} (baseline {}), budget spent {}\nweight {}, {} of {} checks passed\n",
        case.description,
        case.sent,
        case.lost,
        maybe_millis(case.detect_ms),
        maybe_millis(case.recover_ms),
        millis(case.p99_ms),
        millis(case.baseline_p99_ms),
        percent(case.budget_spent),
        case.weight,
        case.checks.len() - case.failed_checks().count(),
        case.checks.len(),
    );
    for check in &case.checks {
        let mark = if check.passed { "pass" } else { "FAIL" };
        let _ = writeln!(out, "[{mark}] {}: {}", check.name, check.detail);
    }
    out
}

/// `s` as XML character data.
fn text(s: &str) -> String {
    escape(s, false)
}

/// `s` as an XML attribute value in double quotes. Tabs and line breaks are written as
/// references, or a parser would normalize them to spaces.
fn attr(s: &str) -> String {
    escape(s, true)
}

/// The five markup characters as entities, and characters XML 1.0 forbids (control
/// characters other than tab and line breaks, U+FFFE, U+FFFF) as U+FFFD: a report must
/// parse whatever a service name or an error message held.
fn escape(s: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' if attribute => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
            // A bare CR in text would be read back as LF.
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_forbidden_characters_are_escaped() {
        assert_eq!(
            text(r#"a<b>&"c"'d'"#),
            "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;"
        );
        assert_eq!(text("bell\u{7}esc\u{1b}"), "bell\u{fffd}esc\u{fffd}");
        assert_eq!(text("two\nlines\r"), "two\nlines&#13;");
        assert_eq!(attr("two\nlines\ttab"), "two&#10;lines&#9;tab");
        assert_eq!(text("web/1 ok é"), "web/1 ok é");
    }
}
