//! `[[backups]]`: sources, schedules, hooks, retention, verification and drills.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{check, valid};
use spec::{BackupSource, DrillCheck, Keep, OnError};

#[test]
fn a_full_backup_reads_with_its_defaults_and_resolved_paths() {
    let stack = valid(
        r#"
[services.db]
run = ["redis-server", "--port", "{port}", "--dir", "data"]
cwd = "srv"

[[backups]]
name = "db"
service = "db"
paths = ["data", "/etc/db.conf"]
schedule = "*/5 * * * * *"
repository = "repo"
password_file = "pw"
rto = "30s"
hooks.pre = { run = ["redis-cli", "-p", "{port}", "SAVE"], on_error = "continue" }
drill = { check = ["redis-cli", "-p", "{port}", "ping"] }

[[backups]]
name = "state"
state = true
schedule = "@hourly"
repository = "/var/backups/bulwark"
password_file = "/etc/bulwark/pw"
keep = { last = 3, daily = 0 }
verify = { parts = 7 }
"#,
    );
    let [db, state] = &stack.backups[..] else {
        panic!("two backups: {:?}", stack.backups)
    };
    assert_eq!(
        db.source,
        BackupSource::Service {
            service: "db".into(),
            paths: vec![PathBuf::from("srv/data"), PathBuf::from("/etc/db.conf")],
        }
    );
    assert_eq!(db.repository, PathBuf::from("repo"));
    assert_eq!(db.schedule.as_str(), "*/5 * * * * *");
    assert_eq!(db.rpo, None);
    assert_eq!(db.rto, Some(Duration::from_secs(30)));
    let pre = db.pre.as_ref().unwrap();
    assert_eq!(
        (pre.on_error, pre.timeout),
        (OnError::Continue, Duration::from_secs(60))
    );
    assert_eq!(db.post, None);
    assert_eq!(
        db.keep,
        Keep {
            last: 10,
            hourly: 48,
            daily: 7,
            weekly: 4,
            monthly: 24,
            yearly: 3
        },
        "kopia's defaults"
    );
    assert_eq!(
        (db.verify.schedule.as_str(), db.verify.parts),
        ("30 4 * * *", 1)
    );
    let drill = db.drill.as_ref().unwrap();
    assert_eq!(
        drill.check,
        DrillCheck::Command(vec![
            "redis-cli".into(),
            "-p".into(),
            "{port}".into(),
            "ping".into()
        ])
    );
    assert_eq!(
        (drill.schedule.as_str(), drill.timeout),
        ("0 5 * * 0", Duration::from_secs(600))
    );
    assert_eq!(state.source, BackupSource::State);
    assert_eq!(
        (state.keep.last, state.keep.daily, state.keep.weekly),
        (3, 0, 4)
    );
    assert_eq!(state.verify.parts, 7);
}

#[test]
fn schedules_run_in_order_and_a_bad_one_says_why() {
    let stack = valid(
        r#"
[services.web]
run = ["x"]
[[backups]]
name = "w"
service = "web"
paths = ["d"]
schedule = "0 */6 * * *"
repository = "r"
password_file = "p"
"#,
    );
    let s = &stack.backups[0].schedule;
    let start: jiff::Zoned = "2026-01-01T05:59:00+00:00[UTC]".parse().unwrap();
    let first = s.next_after(&start).unwrap();
    assert_eq!(first.to_string(), "2026-01-01T06:00:00+00:00[UTC]");
    let second = s.next_after(&first).unwrap();
    assert_eq!(second.to_string(), "2026-01-01T12:00:00+00:00[UTC]");
    check(
        r#"
[services.web]
run = ["x"]
[[backups]]
name = "w"
service = "web"
paths = ["d"]
schedule = "every hour"
repository = "r"
password_file = "p"
"#,
        r#"stack.toml:7:12: error: `schedule` must be a cron schedule such as "0 3 * * *", found "every hour" (Invalid pattern: Pattern must have between 5 and 7 fields.)"#,
    );
}

#[test]
fn sources_must_be_one_and_name_a_service() {
    check(
        r#"
[services.web]
run = ["x"]

[[backups]]
name = "a"
schedule = "@daily"
repository = "r"
password_file = "p"

[[backups]]
name = "b"
service = "webb"
paths = ["d"]
schedule = "@daily"
repository = "r"
password_file = "p"

[[backups]]
name = "b"
state = true
service = "web"
schedule = "@daily"
repository = "r"
password_file = "p"
drill = { http = "/health" }

[[backups]]
name = "c"
service = "web"
schedule = "@daily"
repository = "r"
password_file = "p"
paths = []
drill = { check = ["true"], http = "/" }
"#,
        r#"
        stack.toml:4:1: error: [[backups]] needs `service = "NAME"` with `paths = [...]`, or `state = true` for bulwark's own journal
        stack.toml:12:11: error: backup of unknown service `webb`; did you mean `web`?
        stack.toml:19:8: error: duplicate backup name `b`: each [[backups]] needs a name of its own
        stack.toml:21:11: error: [[backups]]: `state = true` saves bulwark's own journal; remove `service` and `paths`, or make it a separate [[backups]] entry
        stack.toml:25:9: error: [backups.drill] restores a service's data into a scratch replica, and `state = true` has no service; verification already reads the journal's backups back
        stack.toml:33:9: error: `paths` must not be empty: name what to save
        stack.toml:34:9: error: [backups.drill] needs exactly one of `check = ["cmd", "arg"]` (passes on exit 0) or `http = "/path"` (passes on 2xx)
        "#,
    );
}

#[test]
fn required_keys_and_ranges() {
    check(
        r#"
[services.web]
run = ["x"]
[[backups]]
name = "Web Data"
service = "web"
paths = ["d"]
keep = { last = -1 }
verify = { parts = 0 }
hooks.pre = { timeout = "0s" }
"#,
        r#"
        stack.toml:3:1: error: missing required field `schedule` in [[backups]]; for example schedule = "0 * * * *"
        stack.toml:3:1: error: missing required field `repository` in [[backups]]; for example repository = "/var/backups/db"
        stack.toml:3:1: error: missing required field `password_file` in [[backups]]; for example password_file = "/etc/bulwark/restic-password"
        stack.toml:4:8: error: `name` must be a name of lowercase ASCII letters, digits, `-` and `_`, found "Web Data"
        stack.toml:7:17: error: `last` must be at least 0, found -1
        stack.toml:8:20: error: `parts` must be between 1 and 10000, found 0
        stack.toml:9:13: error: missing required field `run` in [backups.hooks.pre]; for example run = ["redis-cli", "-p", "{port}", "SAVE"]
        stack.toml:9:25: error: `timeout` must be greater than 0
        "#,
    );
}

#[test]
fn plans_that_would_fail_or_harm_at_run_time_are_refused() {
    check(
        r#"
[services.web]
run = ["x"]
cwd = "srv"
[[backups]]
name = "a"
service = "web"
paths = ["."]
schedule = "0 0 30 2 *"
repository = "srv/backups"
password_file = "p"
keep = { last = 0, hourly = 0, daily = 0, weekly = 0, monthly = 0, yearly = 0 }
[[backups]]
name = "b"
service = "web"
paths = ["data"]
schedule = "@daily"
repository = "srv/data/../repo"
password_file = "p"
drill = { http = "/health check" }
[[backups]]
name = "c"
service = "web"
paths = ["data"]
schedule = "@daily"
repository = "srv/data/repo"
password_file = "p"
"#,
        r#"
        stack.toml:11:8: error: [[backups]]: every keep rule is 0, so each backup would remove all but the newest verified snapshot; keep at least `last = 1`
        stack.toml:19:18: error: `http` must be a path starting with `/`, found "/health check" (spaces and control characters must be percent-encoded, as %20)
        stack.toml:25:14: error: `repository` is inside the saved path srv/data: every snapshot would save the repository again; put it elsewhere
        "#,
    );
    check(
        r#"
[services.web]
run = ["x"]
[[backups]]
name = "a"
service = "web"
paths = ["d"]
schedule = "0 0 30 2 *"
repository = "r"
password_file = "p"
"#,
        r#"stack.toml:7:12: error: `schedule` = "0 0 30 2 *" never fires"#,
    );
}
