//! Data-driven tests of the stack-file language.
//!
//! Every case goes through [`check`]: a source text and the exact diagnostics it must
//! produce (as `bulwark check -f stack.toml` prints them), or `""` for valid input, in
//! which case the validated `Stack` is returned for assertions on its properties.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use spec::{
    Api, Backoff, Balance, Probe, ProbeAction, ProbeKind, RestartAction, RestartPolicy,
    RestartRule, Signal, SupervisorSettings,
};

mod common;
use common::{check, valid};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

// ---------------------------------------------------------------------------------
// Valid files

#[test]
fn quickstart() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.toml");
    let stack = spec::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stack.services.len(), 1);
    let web = stack.service("web").expect("web");
    assert_eq!(web.run, ["{bulwark}", "demo", "--port", "{port}"]);
    assert_eq!(web.replicas, 3);
    assert_eq!(web.restart, RestartPolicy::Always);
    assert_eq!(web.env.get("GREETING").map(String::as_str), Some("hello"));
    assert_eq!(
        web.backoff,
        Backoff {
            initial: ms(250),
            max: secs(30),
            reset_after: secs(60),
            multiplier: 2.0,
            jitter: 0.2,
        }
    );
    let healthz = ProbeAction::Http {
        path: "/healthz".into(),
    };
    assert_eq!(
        web.startup,
        Some(Probe {
            action: healthz.clone(),
            period: ms(200),
            timeout: secs(1),
            initial_delay: Duration::ZERO,
            failure_threshold: 50,
            success_threshold: 1,
        })
    );
    assert_eq!(
        web.liveness,
        Some(Probe {
            action: healthz,
            period: secs(1),
            timeout: ms(500),
            initial_delay: Duration::ZERO,
            failure_threshold: 3,
            success_threshold: 1,
        })
    );
    assert_eq!(
        web.readiness,
        Some(Probe {
            period: ms(500),
            ..Probe::defaults(
                ProbeKind::Readiness,
                ProbeAction::Http {
                    path: "/ready".into()
                }
            )
        })
    );
    let expose = web.expose.as_ref().expect("expose");
    assert_eq!(expose.listen, addr("127.0.0.1:8080"));
    assert_eq!(expose.balance, Balance::P2c);
    assert_eq!(stack.api, Api::default());
    assert_eq!(stack.supervisor, SupervisorSettings::default());
}

#[test]
fn defaults() {
    let stack = valid(
        r#"
[services.app]
run = ["./app", "--port", "{port}", "{index}", "{service}", "{bulwark}"]
"#,
    );
    assert_eq!(stack.api.listen, addr("127.0.0.1:7700"));
    assert_eq!(stack.supervisor.max_concurrent_restarts, 8);
    let app = &stack.services[0];
    assert_eq!(app.name, "app");
    // Templates are the runtime's business: kept verbatim.
    assert_eq!(
        app.run,
        [
            "./app",
            "--port",
            "{port}",
            "{index}",
            "{service}",
            "{bulwark}"
        ]
    );
    assert_eq!(app.replicas, 1);
    assert_eq!(app.restart, RestartPolicy::Always);
    assert!(app.restart_rules.is_empty());
    assert!(app.env.is_empty());
    assert_eq!(app.cwd, None);
    assert_eq!(app.stop_signal, Signal::SIGTERM);
    assert_eq!(app.stop_grace, secs(10));
    assert_eq!(app.backoff, Backoff::default());
    assert_eq!(app.startup, None);
    assert_eq!(app.liveness, None);
    assert_eq!(app.readiness, None);
    assert!(app.depends_on.is_empty());
    assert_eq!(app.expose, None);
}

#[test]
fn probe_defaults_per_kind() {
    let stack = valid(
        r#"
[services.app]
run = ["./app"]
startup = { tcp = true }
liveness = { exec = ["./check", "--live"] }
readiness = { http = "/ready", success_threshold = 2 }
"#,
    );
    let app = &stack.services[0];
    let startup = app.startup.as_ref().expect("startup");
    assert_eq!(startup.action, ProbeAction::Tcp);
    assert_eq!(startup.period, ms(250));
    assert_eq!(startup.timeout, secs(1));
    assert_eq!(startup.initial_delay, Duration::ZERO);
    assert_eq!(startup.failure_threshold, 120);
    assert_eq!(startup.success_threshold, 1);
    let liveness = app.liveness.as_ref().expect("liveness");
    assert_eq!(
        liveness,
        &Probe::defaults(
            ProbeKind::Liveness,
            ProbeAction::Exec {
                command: vec!["./check".into(), "--live".into()]
            }
        )
    );
    assert_eq!(liveness.period, secs(1));
    assert_eq!(liveness.failure_threshold, 3);
    // Readiness, unlike the others, may ask for several successes.
    assert_eq!(app.readiness.as_ref().map(|p| p.success_threshold), Some(2));
}

#[test]
fn every_key() {
    let stack = valid(
        r#"
[api]
listen = "127.0.0.1:0"

[supervisor]
max_concurrent_restarts = 2

[services.worker]
run = ["python3", "worker.py"]
replicas = 0
restart = "on-failure"
restart_rules = [
  { exit_codes = [0, 3], action = "stop" },
  { exit_codes = [255], action = "restart" },
]
env = { MODE = "batch", EMPTY = "" }
cwd = "/srv/worker"
stop_signal = "int"
stop_grace = "1m30s"

[services.worker.backoff]
initial = "100ms"
max = "100ms"
reset_after = "0s"
multiplier = 1
jitter = 0

[services.worker.liveness]
exec = ["true"]
period = "2s"
timeout = "1500ms"
initial_delay = "5s"
failure_threshold = 10
success_threshold = 1

[services.web]
run = ["./web"]
restart = "never"
stop_signal = "SIGQUIT"

[services.web.expose]
listen = "[::1]:9000"
balance = "round-robin"
"#,
    );
    assert_eq!(stack.api.listen, addr("127.0.0.1:0"));
    assert_eq!(stack.supervisor.max_concurrent_restarts, 2);
    let worker = stack.service("worker").expect("worker");
    assert_eq!(worker.replicas, 0);
    assert_eq!(worker.restart, RestartPolicy::OnFailure);
    assert_eq!(
        worker.restart_rules,
        [
            RestartRule {
                exit_codes: vec![0, 3],
                action: RestartAction::Stop
            },
            RestartRule {
                exit_codes: vec![255],
                action: RestartAction::Restart
            },
        ]
    );
    assert_eq!(worker.env.len(), 2);
    assert_eq!(worker.env["EMPTY"], "");
    assert_eq!(worker.cwd, Some(PathBuf::from("/srv/worker")));
    assert_eq!(worker.stop_signal, Signal::SIGINT);
    assert_eq!(worker.stop_grace, secs(90));
    assert_eq!(
        worker.backoff,
        Backoff {
            initial: ms(100),
            max: ms(100),
            reset_after: Duration::ZERO,
            multiplier: 1.0,
            jitter: 0.0,
        }
    );
    let liveness = worker.liveness.as_ref().expect("liveness");
    assert_eq!(liveness.period, secs(2));
    assert_eq!(liveness.timeout, ms(1500));
    assert_eq!(liveness.initial_delay, secs(5));
    assert_eq!(liveness.failure_threshold, 10);
    let web = stack.service("web").expect("web");
    assert_eq!(web.restart, RestartPolicy::Never);
    assert_eq!(web.stop_signal, Signal::SIGQUIT);
    let expose = web.expose.as_ref().expect("expose");
    assert_eq!(expose.listen, addr("[::1]:9000"));
    assert_eq!(expose.balance, Balance::RoundRobin);
}

#[test]
fn expose_without_readiness_gets_a_tcp_probe() {
    let stack = valid(
        r#"
[services.web]
run = ["./web"]
expose = { listen = "127.0.0.1:8080" }
"#,
    );
    assert_eq!(
        stack.services[0].readiness,
        Some(Probe::defaults(ProbeKind::Readiness, ProbeAction::Tcp))
    );
}

#[test]
fn dependency_order() {
    // web -> api -> db; cache is independent. Dependencies come first; otherwise the
    // earliest service in the file goes first.
    let stack = valid(
        r#"
[services.web]
run = ["w"]
depends_on = ["api", "cache"]

[services.api]
run = ["a"]
depends_on = ["db"]

[services.cache]
run = ["c"]

[services.db]
run = ["d"]

[services.zzz]
run = ["z"]
"#,
    );
    let names: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["cache", "db", "api", "web", "zzz"]);
    assert_eq!(
        stack.service("web").expect("web").depends_on,
        ["api", "cache"]
    );
}

#[test]
fn file_order_without_dependencies() {
    // toml sorts keys; the file's order must survive anyway.
    let stack = valid(
        r#"
[services.zeta]
run = ["z"]
[services.alpha]
run = ["a"]
[services.mid]
run = ["m"]
"#,
    );
    let names: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha", "mid"]);
}

#[test]
fn signal_spellings() {
    for (given, signal) in [
        ("TERM", Signal::SIGTERM),
        ("sigterm", Signal::SIGTERM),
        ("Hup", Signal::SIGHUP),
        ("USR1", Signal::SIGUSR1),
        ("SIGUSR2", Signal::SIGUSR2),
        ("kill", Signal::SIGKILL),
    ] {
        let stack = valid(&format!(
            "[services.a]\nrun = [\"x\"]\nstop_signal = \"{given}\"\n"
        ));
        assert_eq!(stack.services[0].stop_signal, signal, "{given}");
    }
}

#[test]
fn relative_cwd_resolves_against_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("stack.toml");
    std::fs::write(
        &file,
        "[services.a]\nrun = [\"x\"]\ncwd = \"app/data\"\n[services.b]\nrun = [\"y\"]\ncwd = \"/abs\"\n",
    )
    .expect("write");
    let stack = spec::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        stack.service("a").and_then(|s| s.cwd.clone()),
        Some(dir.path().join("app/data"))
    );
    assert_eq!(
        stack.service("b").and_then(|s| s.cwd.clone()),
        Some(PathBuf::from("/abs"))
    );
}

// ---------------------------------------------------------------------------------
// Errors

#[test]
fn unreadable_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.toml");
    let errors = spec::load(&missing).expect_err("missing file");
    assert_eq!(errors.diagnostics.len(), 1);
    let d = &errors.diagnostics[0];
    assert_eq!(
        (d.file.as_path(), d.line, d.column),
        (missing.as_path(), 1, 1)
    );
    assert!(
        d.message.starts_with("cannot read the stack file: "),
        "{}",
        d.message
    );
}

#[test]
fn unknown_keys_with_did_you_mean() {
    check(
        r#"
[services.web]
run = ["x"]
replica = 3
Restart = "always"

[services.web.liveness]
http = "/healthz"
perod = "1s"

[servics.db]
run = ["y"]

[supervisor]
max_concurent_restarts = 2
"#,
        "
        stack.toml:3:1: error: unknown field `replica` in [services.web]; did you mean `replicas`?
        stack.toml:4:1: error: unknown field `Restart` in [services.web]; did you mean `restart`?
        stack.toml:8:1: error: unknown field `perod` in [services.web.liveness]; did you mean `period`?
        stack.toml:10:2: error: unknown field `servics` at the top level; did you mean `services`?
        stack.toml:14:1: error: unknown field `max_concurent_restarts` in [supervisor]; did you mean `max_concurrent_restarts`?
        ",
    );
}

#[test]
fn unknown_key_without_a_close_match_lists_the_keys() {
    check(
        r#"
[services.web]
run = ["x"]

[services.web.expose]
listen = "127.0.0.1:8080"
colour = "red"
"#,
        "
        stack.toml:6:1: error: unknown field `colour` in [services.web.expose]; expected one of `listen`, `protocol`, `balance`, `hash_on`, `weights`, `slow_start`, `prefer_local`, `upstream`, `request_id_header`, `timeouts`, `retries`, `hedge`, `outlier`, `breaker`, `limits`, `rate_limit`, `faults`, `toxics`, `routes`, `fallback`, `tls`, `upstream_tls`, `auth`
        ",
    );
}

#[test]
fn several_errors_are_reported_together() {
    check(
        r#"
[services.web]
run = "./server --port {port}"
replicas = "3"
restart = "alway"
stop_grace = "10 parsecs"
stop_signal = "TREM"

[services.web.liveness]
http = "healthz"
failure_threshold = 0
"#,
        r#"
        stack.toml:2:7: error: `run` must be an array of strings, found a string; write it as run = ["./server", "--port", "{port}"]
        stack.toml:3:12: error: `replicas` must be an integer, found a string
        stack.toml:4:11: error: `restart` must be "always", "on-failure" or "never", found "alway"; did you mean "always"?
        stack.toml:5:14: error: `stop_grace` must be a duration such as "250ms" or "5s", found "10 parsecs" (unknown time unit "parsecs", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations))
        stack.toml:6:15: error: `stop_signal` must be a signal name such as "SIGTERM", "INT" or "QUIT", found "TREM"; did you mean "SIGTERM"?
        stack.toml:9:8: error: `http` must be a path starting with `/`, found "healthz"; did you mean "/healthz"?
        stack.toml:10:21: error: `failure_threshold` must be at least 1, found 0
        "#,
    );
}

#[test]
fn bad_durations() {
    check(
        r#"
[services.web]
run = ["x"]
stop_grace = 10

[services.web.readiness]
tcp = true
period = "0s"
timeout = "5"
initial_delay = ""

[services.web.backoff]
initial = "0ms"
reset_after = "1 minute and a bit"
"#,
        r#"
        stack.toml:3:14: error: `stop_grace` must be a duration such as "250ms" or "5s", found an integer
        stack.toml:7:10: error: `period` must be greater than 0
        stack.toml:8:11: error: `timeout` must be a duration such as "250ms" or "5s", found "5" (time unit needed, for example 5sec or 5ms)
        stack.toml:9:17: error: `initial_delay` must be a duration such as "250ms" or "5s", found "" (value was empty)
        stack.toml:12:11: error: `initial` must be greater than 0
        stack.toml:13:15: error: `reset_after` must be a duration such as "250ms" or "5s", found "1 minute and a bit" (expected number at 9)
        "#,
    );
}

#[test]
fn wrong_types() {
    check(
        r#"
[services.web]
run = ["x", 2]
env = { PORT = 8080, DEBUG = true, LIST = ["a"] }
depends_on = "db"
backoff = "fast"
liveness = 1
restart_rules = { exit_codes = [1] }
cwd = 7

[services.db]
run = ["y"]
expose = { listen = 8080, balance = "p2c" }
"#,
        r#"
        stack.toml:2:13: error: elements of `run` must be a string, found an integer
        stack.toml:3:16: error: `env.PORT` must be a string, found an integer; quote it: PORT = "8080"
        stack.toml:3:30: error: `env.DEBUG` must be a string, found a boolean; quote it: DEBUG = "true"
        stack.toml:3:43: error: `env.LIST` must be a string, found an array
        stack.toml:4:14: error: `depends_on` must be an array of strings, found a string; write it as depends_on = ["db"]
        stack.toml:5:11: error: `backoff` must be a table ([services.web.backoff]), found a string
        stack.toml:6:12: error: `liveness` must be a table ([services.web.liveness]), found an integer
        stack.toml:7:17: error: `restart_rules` must be an array of tables ([[services.web.restart_rules]]), found a table
        stack.toml:8:7: error: `cwd` must be a directory path, found an integer
        stack.toml:12:21: error: `listen` must be an IP:PORT address such as "127.0.0.1:8080", found an integer
        "#,
    );
}

#[test]
fn thresholds() {
    check(
        r#"
[services.web]
run = ["x"]

[services.web.liveness]
http = "/healthz"
success_threshold = 2

[services.web.startup]
http = "/healthz"
success_threshold = 3
failure_threshold = 0

[services.web.readiness]
http = "/ready"
success_threshold = 0
"#,
        "
        stack.toml:6:21: error: `success_threshold` must be 1 for liveness probes, found 2 (as in Kubernetes, only readiness probes may require several consecutive successes)
        stack.toml:10:21: error: `success_threshold` must be 1 for startup probes, found 3 (as in Kubernetes, only readiness probes may require several consecutive successes)
        stack.toml:11:21: error: `failure_threshold` must be at least 1, found 0
        stack.toml:15:21: error: `success_threshold` must be at least 1, found 0
        ",
    );
}

#[test]
fn probe_actions() {
    check(
        r#"
[services.web]
run = ["x"]

[services.web.readiness]
http = "/ready"
tcp = true

[services.web.liveness]
period = "1s"

[services.web.startup]
exec = []

[services.db]
run = ["y"]
liveness = { tcp = false }
readiness = { exec = ["", "--flag"], http = 5, tcp = true }
"#,
        r#"
        stack.toml:6:1: error: [services.web.readiness] needs exactly one of `http = "/path"`, `tcp = true` or `exec = ["cmd", "arg"]`, found `http`, `tcp`
        stack.toml:8:1: error: [services.web.liveness] needs exactly one of `http = "/path"`, `tcp = true` or `exec = ["cmd", "arg"]`, found none
        stack.toml:12:8: error: `exec` must not be empty: it is the program to run and its arguments
        stack.toml:16:20: error: `tcp = false` is not a probe action; use `tcp = true` to probe by connecting to the replica's port, or set `http` or `exec` instead
        stack.toml:17:23: error: the first element of `exec` is the program to run and must not be empty
        stack.toml:17:38: error: [services.db.readiness] needs exactly one of `http = "/path"`, `tcp = true` or `exec = ["cmd", "arg"]`, found `exec`, `http`, `tcp`
        stack.toml:17:45: error: `http` must be a path starting with `/`, found an integer
        "#,
    );
}

#[test]
fn backoff_limits() {
    check(
        r#"
[services.web]
run = ["x"]

[services.web.backoff]
initial = "1m"
max = "30s"
multiplier = 0.5
jitter = 1.0

[services.db]
run = ["y"]
backoff = { max = "100ms", multiplier = inf, jitter = -0.1 }
"#,
        r#"
        stack.toml:5:11: error: [services.web.backoff]: `initial` (1m) must not exceed `max` (30s)
        stack.toml:7:14: error: `multiplier` must be at least 1, found 0.5
        stack.toml:8:10: error: `jitter` must be at least 0 and less than 1, found 1
        stack.toml:12:19: error: [services.db.backoff]: `initial` (250ms) must not exceed `max` (100ms)
        stack.toml:12:41: error: `multiplier` must be at least 1, found inf
        stack.toml:12:55: error: `jitter` must be at least 0 and less than 1, found -0.1
        "#,
    );
}

#[test]
fn notify_tables_and_their_watchdog_bounds() {
    let stack = spec::parse(
        "[services.a]\nrun = [\"x\"]\n[services.a.notify]\nwatchdog = \"2s\"\n\
         [services.b]\nrun = [\"x\"]\n[services.b.notify]\n\
         [services.c]\nrun = [\"x\"]\n",
        std::path::Path::new("stack.toml"),
    )
    .expect("valid");
    let notify: Vec<_> = stack.services.iter().map(|s| s.notify).collect();
    assert_eq!(
        notify,
        [
            Some(spec::Notify {
                ready: true,
                watchdog: std::time::Duration::from_secs(2)
            }),
            Some(spec::Notify::default()),
            None
        ]
    );
    check(
        r#"
[services.web]
run = ["x"]

[services.web.notify]
watchdog = "10ms"
ready = "yes"
"#,
        r#"
        stack.toml:5:12: error: [services.web.notify]: watchdog = "10ms" is shorter than 50ms, which no replica can keep up with reliably (it pings at half of it); use "50ms" or more, or "0s" for no watchdog
        stack.toml:6:9: error: `ready` must be a boolean, found a string
        "#,
    );
}

#[test]
fn unknown_dependency() {
    check(
        r#"
[services.web]
run = ["x"]
depends_on = ["dbb", "web", "db", "db", "queue"]

[services.db]
run = ["y"]
"#,
        "
        stack.toml:3:15: error: `depends_on` names unknown service `dbb`; did you mean `db`?
        stack.toml:3:22: error: service `web` depends on itself
        stack.toml:3:35: error: `db` is listed twice in `depends_on`
        stack.toml:3:41: error: `depends_on` names unknown service `queue`; services are `db`
        ",
    );
}

#[test]
fn dependency_cycle() {
    check(
        r#"
[services.a]
run = ["x"]
depends_on = ["b"]

[services.b]
run = ["x"]
depends_on = ["c"]

[services.c]
run = ["x"]
depends_on = ["a"]

[services.d]
run = ["x"]
depends_on = ["e", "a"]

[services.e]
run = ["x"]
depends_on = ["d"]
"#,
        "
        stack.toml:3:14: error: dependency cycle: a -> b -> c -> a
        stack.toml:15:14: error: dependency cycle: d -> e -> d
        ",
    );
}

#[test]
fn duplicate_listen_addresses() {
    check(
        r#"
[api]
listen = "127.0.0.1:9999"

[services.web]
run = ["x"]
expose = { listen = "127.0.0.1:8080" }

[services.admin]
run = ["y"]
expose = { listen = "127.0.0.1:8080" }

[services.all]
run = ["z"]
expose = { listen = "0.0.0.0:8080" }

[services.api]
run = ["z"]
expose = { listen = "127.0.0.1:9999", balance = "round_robin" }

[services.any]
run = ["z"]
expose = { listen = "localhost:80" }

[services.nolisten]
run = ["z"]
expose = { balance = "p2c" }
"#,
        r#"
        stack.toml:10:21: error: `listen` address 127.0.0.1:8080 is already exposed by service `web`
        stack.toml:14:21: error: `listen` address 0.0.0.0:8080 clashes with 127.0.0.1:8080, exposed by service `web`
        stack.toml:18:21: error: `listen` address 127.0.0.1:9999 clashes with the control API's address 127.0.0.1:9999 ([api] listen); choose another port
        stack.toml:18:49: warning: `balance`: "round_robin" is the old spelling of "round-robin"; write "round-robin"
        stack.toml:22:21: error: `listen` must be an IP:PORT address such as "127.0.0.1:8080", found "localhost:80"
        stack.toml:26:10: error: missing required field `listen` in [services.nolisten.expose]; for example listen = "127.0.0.1:8080"
        "#,
    );
}

#[test]
fn expose_on_the_default_api_address() {
    check(
        r#"
[services.web]
run = ["x"]
expose = { listen = "127.0.0.1:7700" }
"#,
        "
        stack.toml:3:21: error: `listen` address 127.0.0.1:7700 clashes with the control API's address 127.0.0.1:7700 ([api] listen); choose another port
        ",
    );
}

#[test]
fn bad_signal_name() {
    check(
        r#"
[services.a]
run = ["x"]
stop_signal = "SIGFOO"

[services.b]
run = ["x"]
stop_signal = "usr3"
"#,
        r#"
        stack.toml:3:15: error: `stop_signal` must be a signal name such as "SIGTERM", "INT" or "QUIT", found "SIGFOO"
        stack.toml:7:15: error: `stop_signal` must be a signal name such as "SIGTERM", "INT" or "QUIT", found "usr3"; did you mean "SIGUSR1"?
        "#,
    );
}

#[test]
fn toml_syntax_errors() {
    check(
        r#"
[services.web]
run = ["x"
replicas = 3
"#,
        "
        stack.toml:3:1: error: invalid TOML: missing comma between array elements, expected `,`
        ",
    );
    check(
        r#"
[services.web]
run = ["x"]
replicas = 3
replicas = 4
"#,
        "
        stack.toml:4:1: error: invalid TOML: duplicate key
        ",
    );
    check(
        r#"
[services.web]
run = ["x"]
restart = always
"#,
        "
        stack.toml:3:11: error: invalid TOML: string values must be quoted, expected literal string
        ",
    );
    check(
        "[services.web\nrun = [\"x\"]\n",
        "
        stack.toml:1:14: error: invalid TOML: unclosed table, expected `]`
        ",
    );
}

#[test]
fn restart_rules() {
    check(
        r#"
[services.web]
run = ["x"]

[[services.web.restart_rules]]
exit_codes = [1, 256, -1]
action = "stop"

[[services.web.restart_rules]]
exit_codes = []
action = "halt"

[[services.web.restart_rules]]
exit_code = [3]
"#,
        r#"
        stack.toml:5:18: error: elements of `exit_codes` must be between 0 and 255, found 256
        stack.toml:5:23: error: elements of `exit_codes` must be between 0 and 255, found -1
        stack.toml:9:14: error: `exit_codes` must not be empty: list the exit codes this rule applies to
        stack.toml:10:10: error: `action` must be "restart" or "stop", found "halt"
        stack.toml:12:1: error: missing required field `exit_codes` in [[services.web.restart_rules]]; expected an array of integers
        stack.toml:12:1: error: missing required field `action` in [[services.web.restart_rules]]; expected "restart" or "stop"
        stack.toml:13:1: error: unknown field `exit_code` in [[services.web.restart_rules]]; did you mean `exit_codes`?
        "#,
    );
}

#[test]
fn services_and_names() {
    check(
        "",
        "
        stack.toml:1:1: error: no services defined; add a [services.NAME] table with at least `run = [...]`
        ",
    );
    check(
        r#"
[services."1web"]
run = ["x"]

[services."my app"]
run = ["x"]

[services.ok]
replicas = 1001

[services]
bad = 3
"#,
        r#"
        stack.toml:1:11: error: invalid service name `1web`: a name starts with an ASCII letter and contains only ASCII letters, digits, `-` and `_`
        stack.toml:4:11: error: invalid service name `my app`: a name starts with an ASCII letter and contains only ASCII letters, digits, `-` and `_`
        stack.toml:7:1: error: missing required field `run` in [services.ok]; for example run = ["./server", "--port", "{port}"]
        stack.toml:8:12: error: `replicas` must be between 0 and 1000, found 1001
        stack.toml:11:7: error: `services.bad` must be a table ([services.bad]), found an integer
        "#,
    );
}

#[test]
fn api_and_supervisor() {
    check(
        r#"
[api]
listen = "7700"

[supervisor]
max_concurrent_restarts = 0

[services.web]
run = ["", "x"]
cwd = ""
env = { "A=B" = "1" }
"#,
        r#"
        stack.toml:2:10: error: `listen` must be an IP:PORT address such as "127.0.0.1:8080", found "7700"
        stack.toml:5:27: error: `max_concurrent_restarts` must be at least 1, found 0
        stack.toml:8:8: error: the first element of `run` is the program to run and must not be empty
        stack.toml:9:7: error: `cwd` must be a directory path, found ""; omit it to use the stack file's directory
        stack.toml:10:9: error: invalid environment variable name "A=B": it must be non-empty and contain neither `=` nor a NUL character
        "#,
    );
}

#[test]
fn columns_count_characters() {
    // `é` is two bytes; the column must still be where an editor puts the cursor.
    check(
        "[services.web]\nrun = [\"x\"]\nenv = { \"É\" = \"a\", N = 1 }\n",
        r#"
        stack.toml:3:24: error: `env.N` must be a string, found an integer; quote it: N = "1"
        "#,
    );
}

#[test]
fn mangled_files_never_panic() {
    // Every single-character deletion and a spread of insertions into the quickstart:
    // each must give a `Stack` or located diagnostics, never a panic or an empty error.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.toml");
    let source = std::fs::read_to_string(path).expect("quickstart");
    let inserts = [
        "\"", "[", "]", "=", "\n", "0", "x", "é", "#", ",", "{", "-1",
    ];
    let mut variants = Vec::new();
    for (i, _) in source.char_indices() {
        let mut deleted = source.clone();
        deleted.remove(i);
        variants.push(deleted);
        let mut inserted = source.clone();
        inserted.insert_str(i, inserts[i % inserts.len()]);
        variants.push(inserted);
    }
    for variant in &variants {
        let lines = variant.lines().count() + 1;
        if let Err(errors) = spec::parse(variant, Path::new("stack.toml")) {
            assert!(!errors.diagnostics.is_empty(), "{variant}");
            for d in &errors.diagnostics {
                assert!(
                    d.line >= 1 && d.line <= lines && d.column >= 1,
                    "{d}\n{variant}"
                );
            }
        }
    }
}

/// Issue 8: an empty argument is a real value (`--name ""`); only the program must be named.
#[test]
fn empty_arguments_are_arguments() {
    let stack = valid(
        r#"
[services.web]
run = ["./server", "--name", ""]
readiness = { exec = ["./check", ""] }
"#,
    );
    assert_eq!(stack.services[0].run, ["./server", "--name", ""]);
}

/// Issue 8: absurd durations are refused where they are written, not overflowed later.
#[test]
fn absurd_durations_are_refused() {
    check(
        r#"
[alerts]
group_wait = "100000000h"

[services.web]
run = ["x"]
stop_grace = "2d"
backoff = { max = "18446744073709551615s" }

[services.web.expose]
listen = "127.0.0.1:8080"
timeouts = { request = "25h" }

[[services.web.slo]]
name = "availability"
kind = "availability"
objective = 99.9
period = "400d"
"#,
        r#"
        stack.toml:2:14: error: `group_wait` must be at most 24h, found "100000000h"; check the unit (ms, s, m, h, d)
        stack.toml:6:14: error: `stop_grace` must be at most 24h, found "2d"; check the unit (ms, s, m, h, d)
        stack.toml:7:19: error: `max` must be at most 24h, found "18446744073709551615s"; check the unit (ms, s, m, h, d)
        stack.toml:11:24: error: `request` must be at most 24h, found "25h"; check the unit (ms, s, m, h, d)
        stack.toml:17:10: error: `period` must be at most 366d, found "400d"; check the unit (ms, s, m, h, d)
        "#,
    );
}

/// Issue 8: the API on a non-loopback address must be asked for (issue 18: with TLS, see
/// `tests/api.rs`); `[journal] retention`.
#[test]
fn remote_api_and_journal_retention() {
    check(
        r#"
[api]
listen = "0.0.0.0:7700"
allow_remote = true

[journal]
retention = "2d"

[services.web]
run = ["x"]
"#,
        r#"
        stack.toml:2:10: error: [api] listen = "0.0.0.0:7700" is not a loopback address, and the API would speak plain HTTP, showing its bearer token to the network: add an [api.tls] table, e.g. `tls = { certificates = [{ cert = "api.pem", key = "api.key" }] }` (with `client_ca` for mTLS), or listen on 127.0.0.1
        stack.toml:3:16: warning: `allow_remote` in [api] is deprecated and has no effect: a non-loopback `listen` needs an [api.tls] table instead; remove `allow_remote`
        "#,
    );
    let stack = valid(
        r#"
[journal]
retention = "2d"

[services.web]
run = ["x"]
"#,
    );
    assert_eq!(stack.journal.retention, Duration::from_secs(2 * 86400));
    let default = valid("[services.web]\nrun = [\"x\"]\n");
    assert!(default.api.tls.is_none());
    assert_eq!(default.journal.retention, Duration::from_secs(30 * 86400));
}

#[test]
fn a_count_too_large_names_the_whole_range() {
    check(
        r#"
[services.web]
run = ["x"]
[services.web.liveness]
tcp = true
failure_threshold = 5000000000
[services.web.expose]
listen = "127.0.0.1:0"
[services.web.expose.rate_limit]
rate = 1
max_keys = 0
"#,
        r#"
        stack.toml:5:21: error: `failure_threshold` must be between 1 and 4294967295, found 5000000000
        stack.toml:10:12: error: `max_keys` must be between 1 and 10000000, found 0
        "#,
    );
}

/// No string of the file may hold a NUL (no argument, value, name or header can carry
/// one), wherever it is written; an empty program is still refused at its element, in the
/// same run.
#[test]
fn a_nul_in_any_string_is_refused_where_it_is() {
    check(
        "
[services.web]
run = [\"./server\", \"--name\", \"a\\u0000b\"]
env = { GREETING = \"hi\\u0000\" }

[services.api]
run = [\"\", \"x\\u0000\"]
expose = { listen = \"127.0.0.1:8080\", request_id_header = \"x-id\\u0000\" }
",
        r#"
        stack.toml:2:30: error: elements of `run` must not contain a NUL character
        stack.toml:3:20: error: `env.GREETING` must not contain a NUL character
        stack.toml:6:8: error: the first element of `run` is the program to run and must not be empty
        stack.toml:6:12: error: elements of `run` must not contain a NUL character
        stack.toml:7:59: error: `request_id_header` must not contain a NUL character
        "#,
    );
}

/// `hash_on` and `weights` belong to their balancer; the balancer needs its key.
#[test]
fn balancer_keys_go_with_their_balancer() {
    check(
        r#"
[services.web]
run = ["x"]
expose = { listen = "127.0.0.1:8080", hash_on = "client-address", weights = [1, 2] }

[services.api]
run = ["y"]
expose = { listen = "127.0.0.1:8081", balance = "weighted" }
"#,
        r#"
        stack.toml:3:49: error: `hash_on` needs balance = "hash"
        stack.toml:3:77: error: `weights` needs balance = "weighted"
        stack.toml:7:10: error: [services.api.expose]: balance = "weighted" needs `weights = [..]`, one per replica index
        "#,
    );
}

/// A key whose presence chooses an action (`tcp`, a sink's `log`, a fault's `reset`)
/// cannot be `false`: it is refused (at its value; a fault's at the fault, as before),
/// saying what to do instead.
#[test]
fn an_action_key_set_to_false_is_refused_at_its_value() {
    check(
        r#"
[[alerts.sinks]]
log = false

[services.web]
run = ["x"]
expose = { listen = "127.0.0.1:8080", faults = [{ reset = false, percent = 5.0 }] }
"#,
        r#"
        stack.toml:2:7: error: `log = false` is not a sink; remove the entry to have no log sink
        stack.toml:6:49: error: `reset = false` is not a fault; remove the entry
        "#,
    );
}
