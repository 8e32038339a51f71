//! Every value of the fixtures, replaced in turn by each of a set of hostile values: an
//! import never panics, and whatever it writes, bulwark's own loader accepts.

use std::path::Path;

const HOSTILE: &[&str] = &[
    "\"\"",
    "~",
    "-1",
    "0",
    "99999999999999999999",
    "1e400",
    "\"\\0\"",
    "\"a\\0b\"",
    "[1, [2]]",
    "{a: 1}",
    "[]",
    "{}",
    "\"x y: z\"",
    "\"{port}\"",
    "\"'\"",
    "\"8000\"",
    "!!str 5",
    "\"é\\u0001\"",
    "0x7fffffffffffffff",
    "\"-\"",
    "\"/\"",
    "25h",
    "0s",
    "\"[::1]:1:2\"",
    "\"SIGKILL\"",
];

/// The text without each of its lines in turn, and each line with a value (`key: value`
/// or `- value`) with the value swapped for each of [`HOSTILE`].
fn mangled(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let mut without = lines.clone();
        without.remove(i);
        out.push(without.join("\n"));
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            continue;
        }
        let at = match (line.find(": "), trimmed.starts_with("- ")) {
            (Some(at), _) => at + 2,
            (None, true) => line.len() - trimmed.len() + 2,
            _ => continue,
        };
        for value in HOSTILE {
            let mut copy = lines.clone();
            let new = format!("{}{value}", &line[..at]);
            copy[i] = &new;
            out.push(copy.join("\n"));
        }
    }
    out
}

fn loads(stack: &str, source: &str) {
    if let Err(e) = spec::parse(stack, Path::new("stack.toml")) {
        panic!(
            "the import of\n{source}\n---\nwrote a stack file that does not load:\n{e}\n---\n{stack}"
        );
    }
}

#[test]
fn mangled_compose_files_import_or_fail_cleanly() {
    let fixture = include_str!("fixtures/compose.yaml");
    let variants = mangled(fixture);
    assert!(variants.len() > 500, "{}", variants.len());
    for text in variants {
        if let Ok(imported) = import::compose("compose.yaml", &text) {
            loads(&imported.stack, &text);
        }
    }
}

#[test]
fn mangled_kubernetes_manifests_import_or_fail_cleanly() {
    let deployment = include_str!("fixtures/deployment.yaml");
    let service = include_str!("fixtures/service.yaml");
    let mut n = 0;
    for (d, s) in mangled(deployment)
        .into_iter()
        .map(|d| (d, service.to_owned()))
        .chain(
            mangled(service)
                .into_iter()
                .map(|s| (deployment.to_owned(), s)),
        )
    {
        n += 1;
        let sources = [
            import::Source {
                name: "deployment.yaml",
                text: &d,
            },
            import::Source {
                name: "service.yaml",
                text: &s,
            },
        ];
        if let Ok(imported) = import::kubernetes(&sources) {
            loads(&imported.stack, &format!("{d}\n---\n{s}"));
        }
    }
    assert!(n > 1000, "{n}");
}
