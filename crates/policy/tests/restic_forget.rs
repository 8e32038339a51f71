//! `retain` against the real `restic forget` (0.14, Debian 12's; scripts/test installs it):
//! one repository with snapshots at synthetic times over two and a half years, several keep
//! policies, and for each the set restic keeps, with its reasons, must be `retain`'s.
//!
//! Opening a repository costs restic a key derivation (~0.5 s of CPU, tuned at `init`), so
//! the snapshots are made and the policies asked a few at a time in parallel (restic's
//! `backup` takes a shared lock; `forget --dry-run --no-lock` takes none).

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use jiff::civil::DateTime;
use policy::{Candidate, Keep, retain};
use serde_json::Value;

/// The snapshots' times, as `restic backup --time` takes them (local time; restic runs with
/// TZ=UTC). Distinct, so restic's order does not depend on how it lists its files.
const TIMES: &[&str] = &[
    "2024-06-03 08:00:00",
    "2024-06-03 08:40:00", // same hour
    "2024-06-03 09:10:00",
    "2024-06-04 23:59:00",
    "2024-06-05 00:00:00",
    "2024-06-30 12:00:00",
    "2024-07-01 12:00:00",
    "2024-09-15 06:00:00",
    "2024-12-29 10:00:00", // Sunday, 2024-W52
    "2024-12-30 10:00:00", // Monday, already 2025-W01
    "2024-12-31 23:30:00",
    "2025-01-01 00:30:00",
    "2025-01-05 18:00:00", // Sunday, 2025-W01
    "2025-01-06 07:00:00", // Monday, 2025-W02
    "2025-03-10 10:00:00",
    "2025-03-10 10:59:59", // same hour
    "2025-03-10 11:00:00",
    "2025-05-20 14:00:00",
    "2025-08-01 09:00:00",
    "2025-11-11 11:11:00",
    "2025-12-28 20:00:00", // Sunday, 2025-W52
    "2025-12-29 08:00:00", // Monday, 2026-W01
    "2026-01-01 01:00:00",
    "2026-01-01 01:30:00", // same hour
    "2026-02-14 10:00:00",
    "2026-04-30 23:00:00",
    "2026-05-01 00:00:00",
    "2026-07-07 07:07:00",
    "2026-10-10 10:10:00",
    "2026-12-27 12:00:00", // Sunday, 2026-W52
    "2026-12-28 12:00:00", // Monday, 2026-W53 (2026 ends on a Thursday)
    "2026-12-31 12:00:00", // Thursday, 2026-W53
    "2027-01-01 09:00:00", // Friday, 2026-W53
    "2027-01-03 21:00:00", // Sunday, 2026-W53
    "2027-01-04 06:00:00", // Monday, 2027-W01
    "2027-01-04 06:20:00", // same hour
    "2027-01-09 15:00:00",
    "2027-02-02 02:02:00",
];

/// At most this many restic processes at once.
const PARALLEL: usize = 4;

fn keep(last: u32, hourly: u32, daily: u32, weekly: u32, monthly: u32, yearly: u32) -> Keep {
    Keep {
        last,
        hourly,
        daily,
        weekly,
        monthly,
        yearly,
    }
}

fn restic(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("restic")
        .args(args)
        .arg("--no-cache")
        .env("RESTIC_REPOSITORY", dir.join("repo"))
        .env("RESTIC_PASSWORD", "bulwark-test")
        .env("TZ", "UTC")
        .current_dir(dir)
        .output()
        .expect("cannot run restic: it must be installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "restic {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `f` on every item, `PARALLEL` threads taking the next item in turn.
fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = Mutex::new(0..items.len());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| {
                loop {
                    let Some(i) = next.lock().unwrap().next() else {
                        break;
                    };
                    let r = f(&items[i]);
                    results.lock().unwrap().push((i, r));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

fn flag(args: &mut Vec<String>, name: &str, n: u32) {
    if n > 0 {
        args.push(format!("--keep-{name}"));
        args.push(n.to_string());
    }
}

/// A snapshot in restic's JSON: (id, civil UTC time).
fn snapshot(v: &Value) -> (String, DateTime) {
    let id = v["id"].as_str().expect("snapshot id").to_owned();
    let time = v["time"].as_str().expect("snapshot time");
    let civil = time
        .strip_suffix('Z')
        .unwrap_or_else(|| panic!("restic ran with TZ=UTC, yet wrote {time}"));
    (id, civil.parse().expect("a civil time"))
}

/// What restic keeps under `keep`: every snapshot (id, time), and the kept ids with their
/// reasons in restic's words.
type Forget = (Vec<(String, DateTime)>, Vec<(String, Vec<String>)>);

fn restic_forget(dir: &Path, keep: &Keep) -> Forget {
    let mut args: Vec<String> = ["forget", "--dry-run", "--no-lock", "--json"]
        .map(String::from)
        .to_vec();
    flag(&mut args, "last", keep.last);
    flag(&mut args, "hourly", keep.hourly);
    flag(&mut args, "daily", keep.daily);
    flag(&mut args, "weekly", keep.weekly);
    flag(&mut args, "monthly", keep.monthly);
    flag(&mut args, "yearly", keep.yearly);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = restic(dir, &args);
    let groups: Value = serde_json::from_slice(&out).expect("forget --json prints JSON");
    let groups = groups.as_array().expect("a list of groups");
    assert_eq!(groups.len(), 1, "one host, one path: one group");
    let group = &groups[0];
    let list = |k: &str| -> Vec<(String, DateTime)> {
        group[k]
            .as_array()
            .map(|a| a.iter().map(snapshot).collect())
            .unwrap_or_default()
    };
    let kept = list("keep");
    let reasons = group["reasons"].as_array().expect("reasons");
    assert_eq!(reasons.len(), kept.len(), "one reason per kept snapshot");
    let kept: Vec<(String, Vec<String>)> = kept
        .into_iter()
        .zip(reasons)
        .map(|((id, _), r)| {
            let matches = r["matches"].as_array().expect("matches");
            let matches = matches.iter().map(|m| m.as_str().unwrap().to_owned());
            (id, matches.collect())
        })
        .collect();
    let mut all = list("keep");
    all.extend(list("remove"));
    (all, kept)
}

#[test]
fn retain_keeps_what_restic_forget_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let version = String::from_utf8(restic(dir.path(), &["version"])).unwrap();
    assert!(
        version.starts_with("restic 0.14."),
        "expected restic 0.14: {version}"
    );
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/file"), "bulwark\n").unwrap();
    restic(dir.path(), &["init", "-q"]);
    in_parallel(TIMES, |t| {
        restic(
            dir.path(),
            &["backup", "-q", "--host", "h", "--time", t, "data"],
        )
    });

    let policies = [
        keep(5, 0, 0, 0, 0, 0),
        keep(0, 6, 0, 0, 0, 0),
        keep(0, 0, 7, 0, 0, 0),
        keep(0, 0, 0, 8, 0, 0),
        keep(0, 0, 0, 0, 9, 0),
        keep(0, 0, 0, 0, 0, 5),
        keep(2, 0, 4, 3, 6, 3),
        keep(0, 3, 0, 12, 0, 1),
        keep(1, 1, 1, 1, 1, 1),
        keep(0, 100, 0, 100, 0, 0),
    ];
    let answers = in_parallel(&policies, |k| restic_forget(dir.path(), k));

    for (keep, (all, restic_kept)) in policies.iter().zip(answers) {
        assert_eq!(all.len(), TIMES.len(), "{keep:?}: every snapshot once");
        let candidates: Vec<Candidate<String>> = all
            .into_iter()
            .map(|(id, time)| Candidate {
                id,
                time,
                verified: false,
                damaged: false,
            })
            .collect();
        let ours: Vec<(String, Vec<String>)> = retain(&candidates, keep)
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| (d.id, d.reasons.iter().map(|r| r.to_string()).collect()))
            .collect();
        let time_of = |id: &str| candidates.iter().find(|c| c.id == id).unwrap().time;
        let show = |kept: &[(String, Vec<String>)]| -> Vec<String> {
            kept.iter()
                .map(|(id, r)| format!("{} {}", time_of(id), r.join(", ")))
                .collect()
        };
        assert_eq!(
            show(&ours),
            show(&restic_kept),
            "{keep:?}: ours (left) and restic's (right)"
        );
    }
}
