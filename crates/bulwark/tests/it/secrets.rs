//! Issue 18, acceptance 4: a value set through `secrets` reaches the replica and nothing
//! bulwark shows: no API response, CLI output, log line, event or journal byte holds it,
//! even when the replica prints it (whole, or in two writes). Unsafe secret files are
//! refused with the file named, at once.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{BULWARK, Receiver, Stack, eventually, output_text, replicas_in};

/// A value no test output could hold by chance.
fn unique(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    format!("{prefix}-{:016x}", h.finish())
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Prints the secret to stdout, to stderr, and in two writes 300 ms apart, says whether it
/// got the file's value, then serves as `bulwark demo`.
const WEB: &str = r#"
if [ "$DB_PASSWORD" = "$(cat "$SECRET_FILE")" ]; then echo match; else echo mismatch; fi > "$OUT.tmp"
echo "greeting=$GREETING base=$BASE" >> "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "to stdout: $DB_PASSWORD"
echo "to stderr: $DB_PASSWORD" >&2
printf 'split: %.6s' "$DB_PASSWORD"
sleep 0.3
printf '%s end\n' "${DB_PASSWORD#??????}"
exec "$0" demo --port "$1"
"#;

fn stack_toml(dir: &Path, hook: &str) -> String {
    format!(
        r#"
[services.web]
run = ["sh", "-c", '''{WEB}''', "{{bulwark}}", "{{port}}"]
env_files = ["base.env", "over.env"]
env = {{ OUT = "{out}", SECRET_FILE = "{secret}", BASE = "from-env" }}
secrets = {{ DB_PASSWORD = "db_password" }}

[services.crashy]
run = ["sh", "-c", 'echo "boom $API_KEY" >&2; exit 3']
secrets = {{ API_KEY = "api_key" }}
[services.crashy.backoff]
initial = "50ms"
max = "200ms"

[services.probed]
run = ["sleep", "600"]
secrets = {{ API_KEY = "api_key" }}
[services.probed.readiness]
exec = ["sh", "-c", 'echo "probe saw $API_KEY" >&2; exit 1']
period = "200ms"

[[remediations]]
name = "tell-someone"
when = {{ event = "crash-looping", service = "crashy" }}
do = [{{ action = "webhook", url = "{hook}", timeout = "2s" }}]
"#,
        out = dir.join("received").display(),
        secret = dir.join("db_password").display(),
    )
}

/// Every GET route of the API, with the services of this stack.
const ROUTES: &[&str] = &[
    "/v1/status",
    "/v1/events?sync=true",
    "/v1/logs/web",
    "/v1/logs/crashy",
    "/v1/logs/probed",
    "/v1/slo",
    "/v1/alerts",
    "/v1/incidents",
    "/v1/silences",
    "/metrics",
    "/v1/backups",
    "/v1/chaos",
    "/v1/chaos/status",
    "/v1/rollouts/web",
    "/v1/rollouts/web/history",
    "/v1/rollouts/crashy/history",
    "/v1/switches",
    "/v1/actions",
    "/v1/tokens",
    "/v1/audit",
    "/v1/series",
    "/v1/series?service=web",
];

/// What the API and the CLI show of this stack, route by route and command by command.
fn everything_shown(stack: &Stack) -> Vec<(String, String)> {
    let mut shown = Vec::new();
    for route in ROUTES {
        let (code, body) = stack.call("GET", route, "127.0.0.1", true);
        assert_eq!(code, 200, "GET {route}: {body}");
        shown.push((format!("GET {route}"), body));
    }
    let file = stack.dir.path().join("stack.toml");
    let file = file.to_str().unwrap();
    let commands: &[&[&str]] = &[
        &["status"],
        &["events"],
        &["logs", "web"],
        &["logs", "crashy"],
        &["logs", "probed"],
        &["actions"],
        &["rollout", "history", "web"],
        &["audit"],
        &["check", "-f", file],
        &["explain", "services.web.secrets"],
    ];
    for args in commands {
        let out = stack.cli(args);
        assert!(out.status.success(), "bulwark {args:?}: {out:?}");
        let text = output_text(&out);
        shown.push((format!("bulwark {}", args.join(" ")), text));
    }
    shown
}

fn assert_absent(secrets: &[&str], shown: &[(String, String)]) {
    for (what, text) in shown {
        for s in secrets {
            assert!(!text.contains(s), "{what} shows a secret:\n{text}");
        }
    }
}

/// Every file under `dir`, as raw bytes.
fn files_under(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn received(dir: &Path) -> String {
    eventually(
        "the replica to report what it received",
        Duration::from_secs(30),
        || std::fs::read_to_string(dir.join("received")).ok(),
    )
}

#[test]
fn a_secret_reaches_the_replica_and_nothing_bulwark_shows_or_journals() {
    let rx = Receiver::start();
    let (db, key) = (unique("db-pw"), unique("api-key"));
    let (hook_pw, hook_token) = (unique("hook-pw"), unique("hook-token"));
    let hook = rx
        .url
        .replace("http://", &format!("http://admin:{hook_pw}@"))
        + &format!("?token={hook_token}");
    let mut stack = Stack::prepare("");
    let dir = stack.dir.path().to_owned();
    std::fs::write(
        dir.join("stack.toml"),
        stack_toml(&dir, &hook) + "\n[api]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    write_private(&dir.join("db_password"), &format!("{db}\n"));
    write_private(&dir.join("api_key"), &key);
    std::fs::write(
        dir.join("base.env"),
        "# base\nGREETING=from-base\nBASE=kept\n",
    )
    .unwrap();
    std::fs::write(dir.join("over.env"), "export GREETING=\"from over\"\n").unwrap();
    stack.launch();

    // The replica got the file's value (trailing newline trimmed), and the env files in
    // order with `env` last.
    let got = received(&dir);
    assert_eq!(got, "match\ngreeting=from over base=from-env\n");
    stack.wait_ready("web", 1);

    // It printed the value whole on both streams and in two writes: every time hidden.
    let logs = eventually("the split line", Duration::from_secs(20), || {
        let (_, body) = stack.call("GET", "/v1/logs/web", "127.0.0.1", true);
        body.contains("end").then_some(body)
    });
    for line in ["to stdout: ***", "to stderr: ***", "split: *** end"] {
        assert!(logs.contains(line), "{line:?} not in {logs}");
    }
    // The crash loop's stderr tail (status, events), the failing exec probe's output
    // (events) and the webhook's report (actions, events) are redacted too.
    stack.wait_service("crashy", "crash looping", Duration::from_secs(30), |s| {
        replicas_in(s).iter().any(|r| r["crash_looping"] == true)
    });
    let post = rx
        .next(Duration::from_secs(30))
        .expect("the remediation webhook's POST");
    assert_eq!(post["rule"], "tell-someone", "{post}");
    let events = eventually(
        "the probe's and webhook's events",
        Duration::from_secs(30),
        || {
            let (_, body) = stack.call("GET", "/v1/events?sync=true", "127.0.0.1", true);
            (body.contains("probe saw ***") && body.contains("answered")).then_some(body)
        },
    );
    assert!(events.contains("boom ***"), "{events}");
    assert!(events.contains("http://***@127.0.0.1"), "{events}");
    assert!(events.contains("token=***"), "{events}");
    assert_eq!(
        stack.service("web")["secrets"],
        serde_json::json!(["DB_PASSWORD"])
    );

    // A rotated secret rolls out on reload, and the new value is as hidden as the old.
    let db2 = unique("db-pw-rotated");
    std::fs::remove_file(dir.join("received")).unwrap();
    write_private(&dir.join("db_password"), &db2);
    let out = stack.cli(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    assert!(received(&dir).starts_with("match\n"));
    let history = stack.cli(&["rollout", "history", "web"]);
    let history = String::from_utf8_lossy(&history.stdout).into_owned();
    assert!(
        history.contains("secrets.DB_PASSWORD: changed"),
        "{history}"
    );

    let all: &[&str] = &[&db, &db2, &key, &hook_pw, &hook_token];
    assert_absent(all, &everything_shown(&stack));

    // bulwark's own output (replica lines echoed, tracing) and every journal byte.
    stack.terminate(Duration::from_secs(30));
    assert_absent(
        all,
        &[
            ("up's stdout".into(), stack.stdout()),
            ("up's stderr".into(), stack.stderr()),
        ],
    );
    assert!(
        stack.stdout().contains("web/0 | to stdout: ***"),
        "{}",
        stack.stdout()
    );
    let mut files = Vec::new();
    files_under(&stack.state_dir(), &mut files);
    // The journal does hold the redacted events: the scan reads the real records.
    assert!(
        files.iter().any(|(_, b)| contains(b, b"probe saw ***")),
        "no journal file holds the probe's event: {:?}",
        files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    for (path, bytes) in &files {
        for s in all {
            assert!(!contains(bytes, s.as_bytes()), "{path} holds a secret");
        }
    }
}

/// `bulwark check -f` on a stack whose `secrets.DB` (or `env_files`) is `file`, within a
/// deadline (a FIFO must not block it): its exit code and stderr.
fn check_with(dir: &Path, key: &str) -> (Option<i32>, String) {
    std::fs::write(
        dir.join("stack.toml"),
        format!("[services.web]\nrun = [\"true\"]\n{key}\n"),
    )
    .unwrap();
    let mut child = std::process::Command::new(BULWARK)
        .args(["check", "-f"])
        .arg(dir.join("stack.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = eventually("check to answer", Duration::from_secs(10), || {
        child.try_wait().unwrap()
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

#[test]
fn unsafe_secret_and_env_files_are_refused_at_once_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secret = d.join("db");
    std::fs::write(&secret, "hunter2-long-enough").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = check_with(d, "secrets = { DB = \"db\" }");
    assert_eq!(code, Some(2), "{err}");
    let path = secret.display();
    assert!(err.contains("stack.toml:3:"), "{err}");
    assert!(err.contains("`secrets.DB`"), "{err}");
    assert!(err.contains("mode 644"), "{err}");
    assert!(err.contains(&format!("chmod 600 {path}")), "{err}");
    assert!(!err.contains("hunter2"), "{err}");

    // `up` refuses it the same way, before starting anything.
    let mut stack = Stack::prepare("[services.web]\nrun = [\"true\"]\nsecrets = { DB = \"db\" }\n");
    std::fs::copy(&secret, stack.dir.path().join("db")).unwrap();
    std::fs::set_permissions(
        stack.dir.path().join("db"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let status = stack.launch_expecting_failure(Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{}", stack.stderr());
    assert!(stack.stderr().contains("chmod 600"), "{}", stack.stderr());

    // A FIFO would block a plain open until a writer came: refused at once instead.
    nix::unistd::mkfifo(
        &d.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    for key in ["secrets = { DB = \"fifo\" }", "env_files = [\"fifo\"]"] {
        let started = Instant::now();
        let (code, err) = check_with(d, key);
        assert_eq!(code, Some(2), "{key}: {err}");
        assert!(err.contains("is a FIFO, not a regular file"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{key}: {:?}",
            started.elapsed()
        );
    }

    // Missing, empty, and an env file with a bad line (cited by number, not content).
    let (_, err) = check_with(d, "secrets = { DB = \"nope\" }");
    assert!(
        err.contains("`secrets.DB`: cannot read") && err.contains("nope"),
        "{err}"
    );
    write_private(&d.join("empty"), "\n");
    let (_, err) = check_with(d, "secrets = { DB = \"empty\" }");
    assert!(err.contains("is empty"), "{err}");
    std::fs::write(d.join("bad.env"), "A=1\nPASSWORD hunter2\n").unwrap();
    let (_, err) = check_with(d, "env_files = [\"bad.env\"]");
    assert!(err.contains("bad.env line 2: expected KEY=VALUE"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}
