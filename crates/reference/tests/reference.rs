//! The generated reference (`docs/stack-file.md`) must match the declarations: a changed
//! key, default or doc fails here until the file is regenerated with
//! `BULWARK_BLESS=1 cargo test -p reference --test reference`.

use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/stack-file.md")
}

/// `Err` with what to do when `generated` differs from the committed file.
fn fresh(generated: &str, committed: &str) -> Result<(), String> {
    if generated == committed {
        return Ok(());
    }
    let line = generated
        .lines()
        .zip(committed.lines())
        .position(|(a, b)| a != b)
        .map_or_else(|| "at its end".to_owned(), |i| format!("at line {}", i + 1));
    Err(format!(
        "docs/stack-file.md is stale (first difference {line}); regenerate it with \
         BULWARK_BLESS=1 cargo test -p reference --test reference"
    ))
}

#[test]
fn the_reference_is_up_to_date() {
    let generated = reference::reference();
    if std::env::var_os("BULWARK_BLESS").is_some() {
        std::fs::write(committed_path(), &generated).expect("write docs/stack-file.md");
    }
    let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
    if let Err(e) = fresh(&generated, &committed) {
        panic!("{e}");
    }
}

#[test]
fn a_changed_default_makes_the_reference_stale() {
    let committed = std::fs::read_to_string(committed_path()).expect("docs/stack-file.md");
    let mut keys = reference::keys();
    let (_, connect) = keys
        .iter_mut()
        .find(|(path, _)| path == "services.NAME.expose.timeouts.connect")
        .expect("the key exists");
    assert_eq!(connect.default, spec::Omitted::Value(r#""1s""#));
    connect.default = spec::Omitted::Value(r#""2s""#);
    let changed = reference::reference_of(&keys);
    let err = fresh(&changed, &committed).expect_err("a changed default must be caught");
    assert!(err.contains("stale"), "{err}");
    // And the unchanged declarations are what the file says.
    assert_eq!(
        reference::reference_of(&reference::keys()),
        reference::reference()
    );
}

#[test]
fn every_key_is_in_the_reference_and_the_schema() {
    let reference = reference::reference();
    let schema = reference::json_schema().to_string();
    for (path, key) in reference::keys() {
        assert!(
            reference.contains(&format!("| `{}` |", key.name)),
            "{path} is not in the reference"
        );
        assert!(
            schema.contains(&format!("\"{}\":", key.name)),
            "{path} is not in the JSON Schema"
        );
    }
}

#[test]
fn explain_finds_keys_by_path_or_suffix() {
    let text = reference::explain("services.web.expose.retries.attempts").expect("found");
    assert!(
        text.starts_with("services.NAME.expose.retries.attempts"),
        "{text}"
    );
    assert!(text.contains("default: 2"), "{text}");
    assert!(
        text.contains("[services.web.expose.retries]\nattempts = 2"),
        "{text}"
    );
    assert_eq!(reference::explain("retries.attempts"), Ok(text));
    let period = reference::explain("startup.period").expect("found");
    assert!(period.contains("startup: \"250ms\""), "{period}");
    let ambiguous = reference::explain("period").expect_err("ambiguous");
    assert!(ambiguous.contains("ambiguous"), "{ambiguous}");
    let typo = reference::explain("retries.atempts").expect_err("unknown");
    assert!(typo.contains("did you mean"), "{typo}");
}

#[test]
fn per_table_defaults_are_shown_per_table() {
    let schema = reference::json_schema();
    let service = &schema["properties"]["services"]["additionalProperties"]["properties"];
    assert_eq!(
        service["startup"]["properties"]["period"]["default"],
        "250ms"
    );
    assert_eq!(service["liveness"]["properties"]["period"]["default"], "1s");
    assert_eq!(
        service["startup"]["properties"]["failure_threshold"]["default"],
        120
    );
    let reference = reference::reference();
    let startup = &reference[reference
        .find("## `[services.NAME.startup]`")
        .expect("startup")..];
    let startup = &startup[..startup[3..].find("\n## ").map_or(startup.len(), |i| i + 3)];
    assert!(
        startup.contains("| `period` | duration > 0, at most 24h | `\"250ms\"` |"),
        "{startup}"
    );
}
