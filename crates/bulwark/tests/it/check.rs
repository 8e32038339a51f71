//! Issue 2, acceptance 7: `bulwark check` points at each problem.

use crate::harness::BULWARK;

/// Runs `bulwark check` on `src`; returns its exit code and stderr, with the temp path
/// replaced by `stack.toml`.
pub(crate) fn check_output(src: &str) -> (Option<i32>, String) {
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
    (out.status.code(), stderr)
}

/// Runs `bulwark check` on `src` and compares stderr (with the temp path replaced by
/// `stack.toml`) and the exit status; an empty `expected` asks for success.
pub(crate) fn check(src: &str, expected: &str) {
    let (code, stderr) = check_output(src);
    if expected.is_empty() {
        assert_eq!(code, Some(0), "{stderr}");
        return;
    }
    assert_eq!(code, Some(2), "{stderr}");
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
stack.toml:5:10: error: `period` must be a duration such as "250ms" or "5s", found "fast" (expected number at 0)
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

/// Issue 16: `[services.NAME.placement]` mistakes are located at the element that is
/// wrong, all in one run; a valid table checks clean although `up` does not act on it.
#[test]
fn check_points_at_each_bad_placement_rule() {
    let services = "[services.db]\nrun = [\"x\"]\n[services.web]\nrun = [\"x\"]\n";
    check(
        &format!(
            "{services}[services.web.placement]\nspread = [\"node\", \"rack\", \"node\"]\n\
             constraints = [\"zone=a\", \"disk==ssd\"]\nanti_affinity = [\"dbb\"]\n\
             [services.db.placement]\nconstraints = [\"zone=a\", \"zone!=a\"]\nmax_per_node = 0\n"
        ),
        r#"
stack.toml:6:27: error: [services.web.placement]: `node` is listed twice in `spread`; list each domain once
stack.toml:7:26: error: elements of `constraints` must be a constraint such as "zone=a" or "disk!=hdd", found "disk==ssd" (`==` is not an operator: write `=` or `!=`)
stack.toml:8:18: error: [services.web.placement] anti_affinity names unknown service `dbb`; did you mean `db`?
stack.toml:10:26: error: [services.db.placement]: constraints "zone=a" and "zone!=a" cannot both hold on one node, so no replica could ever be placed; remove one of them
stack.toml:11:16: error: `max_per_node` must be between 1 and 1000, found 0
"#,
    );
    check(
        &format!(
            "{services}[services.web.resources]\nmemory = \"64MiB\"\ncpu = 0.5\n\
             [services.web.placement]\nspread = [\"zone\"]\nconstraints = [\"disk!=hdd\"]\n\
             anti_affinity = [\"db\"]\nmax_per_node = 2\n"
        ),
        "",
    );
}
