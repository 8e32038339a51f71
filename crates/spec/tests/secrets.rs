//! `env_files` and `secrets`: read when the stack is loaded, with located errors that name
//! the file and never its content.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The diagnostics of `src` as `DIR/stack.toml`, with the directory shown as `DIR`.
fn errors(dir: &Path, src: &str) -> String {
    let src = src.strip_prefix('\n').unwrap_or(src);
    spec::parse(src, &dir.join("stack.toml"))
        .unwrap_err()
        .to_string()
        .replace(&dir.display().to_string(), "DIR")
}

#[test]
fn env_files_then_env_then_secrets_make_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a.env"), "A=from-a\nB=from-a\nC=from-a\n").unwrap();
    std::fs::write(d.join("b.env"), "# later wins\nB='from-b'\n").unwrap();
    private(&d.join("db"), "correct horse\r\n\n");
    let src = r#"
[services.web]
run = ["web"]
env_files = ["a.env", "b.env"]
env = { C = "from-env" }
secrets = { DB_PASSWORD = "db" }
"#;
    let stack = spec::parse(src, &d.join("stack.toml")).unwrap();
    let web = &stack.services[0];
    let env: Vec<(&str, &str)> = web
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, [("A", "from-a"), ("B", "from-b"), ("C", "from-env")]);
    assert_eq!(web.secrets["DB_PASSWORD"].expose(), "correct horse");
    // Nothing that formats the service shows the value.
    assert!(!format!("{web:?}").contains("horse"));
}

#[test]
fn unsafe_missing_and_odd_files_are_located_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("open"), "hunter2-value").unwrap();
    std::fs::set_permissions(d.join("open"), std::fs::Permissions::from_mode(0o640)).unwrap();
    private(&d.join("big"), &"x".repeat(64 * 1024 + 1));
    private(&d.join("empty"), "\n");
    std::fs::create_dir(d.join("adir")).unwrap();
    nix::unistd::mkfifo(
        &d.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    std::fs::write(d.join("bad.env"), "OK=1\n\nPASSWORD hunter2\n").unwrap();
    let got = errors(
        d,
        r#"
[services.web]
run = ["web"]
secrets = { OPEN = "open", BIG = "big", EMPTY = "empty", DIR = "adir", FIFO = "fifo", GONE = "gone" }
env_files = ["bad.env", "fifo"]
"#,
    );
    let expected = "\
DIR/stack.toml:3:20: error: `secrets.OPEN`: DIR/open is open to its group or others (mode 640); a secret must be readable by its owner only: run `chmod 600 DIR/open`
DIR/stack.toml:3:34: error: `secrets.BIG`: DIR/big holds 65537 bytes, more than the 64 KiB allowed
DIR/stack.toml:3:49: error: `secrets.EMPTY`: DIR/empty is empty
DIR/stack.toml:3:64: error: `secrets.DIR`: DIR/adir is a directory, not a regular file
DIR/stack.toml:3:79: error: `secrets.FIFO`: DIR/fifo is a FIFO, not a regular file
DIR/stack.toml:3:94: error: `secrets.GONE`: cannot read DIR/gone: No such file or directory (os error 2)
DIR/stack.toml:4:14: error: `env_files`: DIR/bad.env line 3: expected KEY=VALUE
DIR/stack.toml:4:25: error: `env_files`: DIR/fifo is a FIFO, not a regular file";
    assert_eq!(got, expected);
    assert!(!got.contains("hunter2"));
}

#[test]
fn a_secret_also_set_by_env_is_refused_and_a_short_one_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    private(&d.join("s"), "long-enough");
    private(&d.join("pin"), "123");
    std::fs::write(d.join("x.env"), "FROM_FILE=1\n").unwrap();
    let got = errors(
        d,
        r#"
[services.web]
run = ["web"]
env_files = ["x.env"]
env = { TOKEN = "plain" }
secrets = { TOKEN = "s", FROM_FILE = "s", "A=B" = "s" }
"#,
    );
    assert_eq!(
        got,
        "\
DIR/stack.toml:5:13: error: `secrets.TOKEN` is also set by `env`: a variable comes from one place; remove one of them
DIR/stack.toml:5:26: error: `secrets.FROM_FILE` is also set by a file of `env_files`: a variable comes from one place; remove one of them
DIR/stack.toml:5:43: error: invalid secret name \"A=B\": it must be non-empty and contain neither `=` nor a NUL character"
    );
    let loaded = spec::parse_with_warnings(
        "[services.web]\nrun = [\"web\"]\nsecrets = { PIN = \"pin\" }\n",
        &d.join("stack.toml"),
    )
    .unwrap();
    assert_eq!(loaded.stack.services[0].secrets["PIN"].expose(), "123");
    let warning = loaded.warnings[0].to_string();
    assert!(
        warning.contains("3:13: warning: `secrets.PIN` is shorter than 4 bytes"),
        "{warning}"
    );
    assert!(!warning.contains("123"), "{warning}");
}
