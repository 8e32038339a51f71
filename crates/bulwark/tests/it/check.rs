//! Issue 2, acceptance 7: `bulwark check` points at each problem.

use crate::harness::BULWARK;

/// Runs `bulwark check` on `src` and compares stderr (with the temp path replaced by
/// `stack.toml`) and the exit status; an empty `expected` asks for success.
pub(crate) fn check(src: &str, expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stack.toml");
    std::fs::write(&file, src).unwrap();
    let out = std::process::Command::new(BULWARK)
        .args(["check", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr)
        .replace(&file.to_string_lossy().into_owned(), "stack.toml");
    if expected.is_empty() {
        assert!(out.status.success(), "{stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end(), expected.trim());
}

#[test]
fn check_reports_every_problem_with_its_location() {
    check(
        "[services.web]\nrun = [\"x\"]\nreplica = 3\n",
        "stack.toml:3:1: error: unknown field `replica` in [services.web]; did you mean `replicas`?",
    );
    check(
        "[services.web]\nrun = [\"x\"]\n[services.web.liveness]\nhttp = \"/h\"\nperiod = \"fast\"\nfailure_threshold = 0\n",
        r#"
stack.toml:5:10: error: `period` must be a duration such as "250ms" or "5s", found "fast" (expected a number)
stack.toml:6:21: error: `failure_threshold` must be at least 1, found 0
"#,
    );
    check(
        "[services.a]\nrun = [\"x\"]\ndepends_on = [\"b\"]\n[services.b]\nrun = [\"x\"]\ndepends_on = [\"a\"]\n",
        "stack.toml:3:14: error: dependency cycle: a -> b -> a",
    );
    check(
        "[services.web]\nrun = [\"x\"]\nrestart = \"alway\"\n",
        "stack.toml:3:11: error: `restart` must be \"always\", \"on-failure\" or \"never\", found \"alway\"; did you mean \"always\"?",
    );
    check(
        "[services.web\nrun = [\"x\"]\n",
        "stack.toml:1:14: error: invalid TOML: unclosed table, expected `]`",
    );
    // Every example checks clean.
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    for example in std::fs::read_dir(examples).unwrap() {
        let path = example.unwrap().path();
        // A directory holds a stack file and what it runs (examples/nginx).
        let file = if path.is_dir() {
            path.join("stack.toml")
        } else {
            path
        };
        check(&std::fs::read_to_string(file).unwrap(), "");
    }
}
