//! The stack-file language as users meet it outside `up`: the JSON Schema (checked with a
//! real validator, python-jsonschema), the generated reference, `explain`, and the warning
//! an old spelling gets from `check`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::BULWARK;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bulwark(args: &[&str]) -> std::process::Output {
    Command::new(BULWARK).args(args).output().unwrap()
}

/// Validates each TOML file against the schema with python-jsonschema (Draft 7, the draft
/// Taplo reads); returns one line per file: `PATH: ok` or `PATH: MESSAGE; ...`.
fn validate(schema: &Path, files: &[PathBuf]) -> Vec<String> {
    const SCRIPT: &str = r#"
import json, sys, tomllib, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft7Validator.check_schema(schema)
validator = jsonschema.Draft7Validator(schema)
for path in sys.argv[2:]:
    errors = sorted(e.message for e in validator.iter_errors(tomllib.load(open(path, "rb"))))
    print(path + ": " + ("; ".join(errors) if errors else "ok"))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(schema)
        .args(files)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_json_schema_accepts_the_examples_and_fixtures_and_rejects_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("bulwark.schema.json");
    let out = bulwark(&["schema"]);
    assert!(out.status.success());
    std::fs::write(&schema, &out.stdout).unwrap();

    let mut valid: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    valid.push(repo().join("crates/bulwark/tests/fixtures/every_table.toml"));
    for file in &valid {
        let check = bulwark(&["check", "-f", file.to_str().unwrap()]);
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    for line in validate(&schema, &valid) {
        assert!(line.ends_with(": ok"), "{line}");
    }

    let mistakes = [
        (
            "unknown.toml",
            "[services.web]\nrun = [\"x\"]\nreplica = 3\n",
            "'replica' was unexpected",
        ),
        (
            "choice.toml",
            "[services.web]\nrun = [\"x\"]\nrestart = \"sometimes\"\n",
            "is not one of",
        ),
        (
            "type.toml",
            "[services.web]\nrun = \"x\"\n",
            "is not of type 'array'",
        ),
        (
            "required.toml",
            "[services.web]\nreplicas = 2\n",
            "'run' is a required property",
        ),
        (
            "range.toml",
            "[services.web]\nrun = [\"x\"]\nreplicas = 5000\n",
            "is greater than the maximum",
        ),
        (
            "duration.toml",
            "[services.web]\nrun = [\"x\"]\nstop_grace = \"soon\"\n",
            "does not match",
        ),
    ];
    let files: Vec<PathBuf> = mistakes
        .iter()
        .map(|(name, text, _)| {
            let f = dir.path().join(name);
            std::fs::write(&f, text).unwrap();
            f
        })
        .collect();
    for (line, (name, _, expected)) in validate(&schema, &files).iter().zip(mistakes) {
        assert!(
            line.contains(name) && line.contains(expected),
            "{name}: {line}"
        );
        // bulwark itself refuses each one too.
        let check = bulwark(&["check", "-f", dir.path().join(name).to_str().unwrap()]);
        assert_eq!(check.status.code(), Some(2), "{name}");
    }
}

#[test]
fn the_reference_is_what_schema_markdown_prints() {
    let out = bulwark(&["schema", "--markdown"]);
    assert!(out.status.success());
    let committed = std::fs::read_to_string(repo().join("docs/stack-file.md")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);
}

#[test]
fn explain_prints_a_keys_doc_type_default_and_example() {
    let out = bulwark(&["explain", "services.web.expose.timeouts.connect"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for part in [
        "services.NAME.expose.timeouts.connect",
        "type:    duration > 0",
        "default: \"1s\"",
        "connect = \"1s\"",
    ] {
        assert!(text.contains(part), "{part} in {text}");
    }
    let out = bulwark(&["explain", "timeouts.conect"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did you mean `services.NAME.expose.timeouts.connect`?"),
        "{err}"
    );
}

#[test]
fn an_old_spelling_is_a_warning_that_names_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stack.toml");
    std::fs::write(
        &file,
        "[services.web]\nrun = [\"x\"]\n[services.web.expose]\nlisten = \"127.0.0.1:0\"\nbalance = \"round_robin\"\n",
    )
    .unwrap();
    let out = bulwark(&["check", "-f", file.to_str().unwrap()]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":5:11: warning: `balance`: \"round_robin\" is the old spelling of \"round-robin\"; write \"round-robin\""),
        "{err}"
    );
}

/// Taplo (the engine of Even Better TOML) reads the schema through the `#:schema` line the
/// README suggests, and flags what `bulwark check` would refuse.
#[test]
fn taplo_checks_a_stack_file_against_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bulwark.schema.json"),
        bulwark(&["schema"]).stdout,
    )
    .unwrap();
    let fixture =
        std::fs::read_to_string(repo().join("crates/bulwark/tests/fixtures/every_table.toml"))
            .unwrap();
    let lint = |name: &str, body: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, format!("#:schema ./bulwark.schema.json\n{body}")).unwrap();
        let out = Command::new("taplo")
            .args(["lint", "--no-auto-config"])
            .arg(&file)
            .current_dir(dir.path())
            .output()
            .expect("taplo is installed by scripts/test");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, log) = lint("good.toml", &fixture);
    assert!(ok, "{log}");
    let (ok, log) = lint(
        "bad.toml",
        "[services.web]\nrun = [\"x\"]\nrestart = \"sometimes\"\n",
    );
    assert!(!ok && log.contains("\"sometimes\" is not one of"), "{log}");
}
