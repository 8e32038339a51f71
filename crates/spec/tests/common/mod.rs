//! The one `check` helper shared by the stack-file test files.

use std::path::Path;

use spec::Stack;

/// Parses `src` as `stack.toml` and compares the rendered diagnostics with `expected`.
///
/// A leading newline of `src` is dropped so that the first line of a raw string literal
/// is line 1. In `expected`, leading and trailing whitespace of each line is ignored, so
/// it can be indented with the test. `expected == ""` means the source must be valid.
#[track_caller]
pub fn check(src: &str, expected: &str) -> Option<Stack> {
    let src = src.strip_prefix('\n').unwrap_or(src);
    let expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match spec::parse(src, Path::new("stack.toml")) {
        Ok(stack) if expected.is_empty() => Some(stack),
        Ok(stack) => panic!(
            "expected diagnostics:\n{}\nbut the stack is valid: {stack:#?}",
            expected.join("\n")
        ),
        Err(errors) => {
            let actual = errors.to_string();
            assert_eq!(
                actual,
                expected.join("\n"),
                "\n--- actual ---\n{actual}\n--------------"
            );
            None
        }
    }
}

/// `check` for valid input.
#[track_caller]
pub fn valid(src: &str) -> Stack {
    check(src, "").expect("check passes only a valid stack through")
}
