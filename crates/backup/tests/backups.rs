//! The backup engine on its own, with a stand-in for the rest of bulwark: what a broken
//! password, a full disk, a missing path or a bad restore target does.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use backup::{Backups, Error, Host, Urgency};

/// The rest of bulwark, reduced to what backups ask of it; alerts are recorded.
struct FakeHost {
    stack: spec::Stack,
    alerts: Mutex<Vec<(String, String, Option<String>)>>,
}

impl Host for FakeHost {
    fn service(&self, name: &str) -> Option<(Arc<spec::Service>, Option<std::net::SocketAddr>)> {
        self.stack
            .service(name)
            .map(|s| (Arc::new(s.clone()), None))
    }
    fn export_state(&self, dest: &Path) -> Result<(), String> {
        std::fs::write(dest, b"journal").map_err(|e| e.to_string())
    }
    fn alert(&self, backup: &str, alert: &str, _: Urgency, summary: Option<String>) {
        let mut all = self.alerts.lock().unwrap();
        all.push((backup.to_owned(), alert.to_owned(), summary));
    }
    fn bulwark(&self) -> PathBuf {
        PathBuf::from("/bin/false")
    }
}

/// A stack with one backup `b` of `dir/data` into `repo`, with `extra` keys for it.
fn setup(dir: &Path, repo: &Path, extra: &str) -> (Backups, Arc<FakeHost>) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    if !dir.join("pw").exists() {
        std::fs::write(dir.join("pw"), "pw\n").unwrap();
    }
    let toml = format!(
        r#"
[services.app]
run = ["sleep", "1"]
cwd = "."

[[backups]]
name = "b"
service = "app"
paths = ["data"]
schedule = "0 0 1 1 *"
repository = "{}"
password_file = "pw"
{extra}
"#,
        repo.display()
    );
    let stack = spec::parse(&toml, &dir.join("stack.toml")).unwrap();
    let host = Arc::new(FakeHost {
        stack: stack.clone(),
        alerts: Mutex::new(Vec::new()),
    });
    let backups = Backups::new(&stack.backups, host.clone(), None, dir.join("work"));
    (backups, host)
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_before_the_first_backup_creates_no_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let (backups, _) = setup(tmp.path(), &repo, "");
    assert!(backups.snapshots("b").await.unwrap().is_empty());
    for err in [
        backups.verify("b").await.unwrap_err(),
        backups
            .restore("b", "latest", &tmp.path().join("out"))
            .await
            .unwrap_err(),
    ] {
        assert!(
            err.to_string().contains("there is no repository") && err.to_string().contains("yet"),
            "{err}"
        );
    }
    assert!(!repo.exists(), "nothing was created by reading");
    std::fs::write(tmp.path().join("data/f"), "x").unwrap();
    backups.run("b").await.unwrap();
    assert_eq!(backups.snapshots("b").await.unwrap().len(), 1);
    assert!(matches!(backups.run("nope").await, Err(Error::Unknown(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_changed_password_or_path_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let (backups, _) = setup(tmp.path(), &repo, "");
    std::fs::write(tmp.path().join("data/f"), "x").unwrap();
    backups.run("b").await.unwrap();

    std::fs::write(tmp.path().join("pw"), "").unwrap();
    let err = backups.run("b").await.unwrap_err().to_string();
    assert!(
        err.contains("/pw") && err.contains("the file is empty"),
        "{err}"
    );
    std::fs::remove_file(tmp.path().join("pw")).unwrap();
    let err = backups.run("b").await.unwrap_err().to_string();
    assert!(
        err.contains("cannot use the password file") && err.contains("No such file"),
        "{err}"
    );
    std::fs::write(tmp.path().join("pw"), "another").unwrap();
    let err = backups.run("b").await.unwrap_err().to_string();
    assert!(err.contains("cannot open the repository"), "{err}");

    std::fs::write(tmp.path().join("pw"), "pw").unwrap();
    std::fs::remove_dir_all(tmp.path().join("data")).unwrap();
    let err = backups.run("b").await.unwrap_err().to_string();
    assert!(
        err.contains("back up") && err.contains("data") && err.contains("No such file"),
        "{err}"
    );
    let status = backups.status();
    assert_eq!(status[0].record.runs_ok, 1);
    assert_eq!(status[0].record.runs_failed, 4);
    assert_eq!(
        backups.snapshots("b").await.unwrap().len(),
        1,
        "no empty snapshot was made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_with_spaces_and_restores_into_new_directories_only() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let (backups, _) = setup(tmp.path(), &repo, "");
    std::fs::write(tmp.path().join("data/a file with spaces"), "spaced").unwrap();
    let id = backups.run("b").await.unwrap().snapshot;

    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep"), "mine").unwrap();
    let err = backups
        .restore("b", "latest", &out)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("keep")).unwrap(), "mine");

    for wanted in ["0000000000", "", "zz"] {
        let err = backups.restore("b", wanted, &tmp.path().join("new")).await;
        assert!(
            matches!(err, Err(Error::NoSnapshot(_))),
            "{wanted:?} names no snapshot: {err:?}"
        );
        std::fs::remove_dir_all(tmp.path().join("new")).ok();
    }
    let fresh = tmp.path().join("fresh");
    assert_eq!(backups.restore("b", &id[..8], &fresh).await.unwrap(), id);
    let data = std::path::absolute(tmp.path().join("data")).unwrap();
    let restored = fresh
        .join(data.strip_prefix("/").unwrap())
        .join("a file with spaces");
    assert_eq!(std::fs::read_to_string(restored).unwrap(), "spaced");
}

/// A repository on a 4 MiB tmpfs: a backup that does not fit fails with the disk's error
/// and leaves the earlier snapshots readable; once there is room, backups work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_a_backup_and_the_next_one_works_once_there_is_room() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("disk");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "mounting a tmpfs needs root (the tests run as root)"
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mount.clone());
    let repo = mount.join("repo");
    let (backups, _) = setup(tmp.path(), &repo, "");
    std::fs::write(tmp.path().join("data/small"), noise(10_000, 1)).unwrap();
    let first = backups.run("b").await.unwrap().snapshot;

    std::fs::write(tmp.path().join("data/big"), noise(8 << 20, 2)).unwrap();
    let err = backups.run("b").await.unwrap_err().to_string();
    assert!(
        err.contains("No space left on device") || err.contains("os error 28"),
        "{err}"
    );
    let snaps = backups.snapshots("b").await.unwrap();
    assert_eq!(snaps.len(), 1, "the failed run added no snapshot");
    assert_eq!(snaps[0].id, first);
    assert_eq!(
        backups.status()[0].newest_verified.as_deref(),
        Some(first.as_str())
    );

    std::fs::remove_file(tmp.path().join("data/big")).unwrap();
    // What the failed run left behind (packs no index names) is rustic's to clean; the
    // next backup must fit in what remains.
    let report = backups.run("b").await.unwrap();
    assert!(report.verified);
    let check = backups.verify("b").await.unwrap();
    assert!(
        check.record.problems.is_empty(),
        "{:?}",
        check.record.problems
    );
}

#[test]
fn the_parts_of_a_verification_cover_every_pack_once() {
    let ids: Vec<String> = (0u64..500)
        .map(|i| format!("{:016x}{:048x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i))
        .collect();
    for m in [1u32, 2, 3, 7, 16] {
        for id in &ids {
            let parts = (1..=m).filter(|n| backup::in_part(id, *n, m)).count();
            assert_eq!(parts, 1, "{id} in {parts} of {m} parts");
        }
    }
    // restic's and rustic's rule: the first four bytes, little-endian, modulo m.
    assert!(backup::in_part("01000000ffff", 1, 2));
    assert!(backup::in_part("02000000ffff", 2, 2));
    assert!(
        backup::in_part("bad", 1, 2),
        "an odd id is read rather than skipped"
    );
}

/// A stack whose only service is `service_toml` and whose backup `b` has `backup_toml`.
fn setup_with(dir: &Path, service_toml: &str, backup_toml: &str) -> (Backups, Arc<FakeHost>) {
    if !dir.join("pw").exists() {
        std::fs::write(dir.join("pw"), "pw\n").unwrap();
    }
    let toml = format!(
        "[services.app]\n{service_toml}\n\n[[backups]]\nname = \"b\"\nservice = \"app\"\n\
         schedule = \"0 0 1 1 *\"\npassword_file = \"pw\"\n{backup_toml}\n"
    );
    let stack = spec::parse(&toml, &dir.join("stack.toml")).unwrap();
    let host = Arc::new(FakeHost {
        stack: stack.clone(),
        alerts: Mutex::new(Vec::new()),
    });
    let backups = Backups::new(&stack.backups, host.clone(), None, dir.join("work"));
    (backups, host)
}

/// Live processes whose command line is exactly `argv`.
fn running(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_runs_a_service_that_lives_inside_its_saved_directory_in_the_restored_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (backups, _) = setup_with(
        tmp.path(),
        "run = [\"sleep\", \"300\"]\ncwd = \"data\"",
        "paths = [\".\"]\nrepository = \"repo\"\n\
         drill = { check = [\"sh\", \"-c\", \"test -f before && test ! -f after\"], timeout = \"20s\" }",
    );
    std::fs::write(data.join("before"), "").unwrap();
    backups.run("b").await.unwrap();
    std::fs::write(data.join("after"), "").unwrap();
    let drill = backups.drill("b").await.unwrap();
    assert!(
        drill.record.passed,
        "the check ran in the restored copy, not the live directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_that_times_out_leaves_no_process_and_no_copy_behind() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("data")).unwrap();
    // The scratch replica forks: the whole group must die, not only its leader.
    let (backups, host) = setup_with(
        tmp.path(),
        "run = [\"sh\", \"-c\", \"sleep 317 & sleep 318\"]\ncwd = \".\"",
        "paths = [\"data\"]\nrepository = \"repo\"\ndrill = { check = [\"false\"], timeout = \"2s\" }",
    );
    std::fs::write(tmp.path().join("data/f"), "x").unwrap();
    backups.run("b").await.unwrap();
    let err = backups.drill("b").await.unwrap_err().to_string();
    assert!(
        err.contains("did not pass within its timeout of 2s"),
        "{err}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !(running(&["sleep", "317"]).is_empty() && running(&["sleep", "318"]).is_empty()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the scratch replica's group is gone"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        !tmp.path().join("work/drills/b").exists(),
        "the scratch copy is removed"
    );
    let alerts = host.alerts.lock().unwrap();
    assert!(
        alerts
            .iter()
            .any(|(_, a, s)| a == "backup-drill" && s.is_some()),
        "{alerts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_does_not_cut_a_run_short() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("data")).unwrap();
    let (backups, _) = setup_with(
        tmp.path(),
        "run = [\"sleep\", \"300\"]\ncwd = \".\"",
        "paths = [\"data\"]\nrepository = \"repo\"\n\
         hooks.pre = { run = [\"sleep\", \"1\"] }\nhooks.post = { run = [\"touch\", \"post-ran\"] }",
    );
    let gave_up =
        tokio::time::timeout(std::time::Duration::from_millis(200), backups.run("b")).await;
    assert!(gave_up.is_err(), "the caller gave up during the pre-hook");
    // The run goes on: its post-hook runs and the next operation waits for it.
    let next = backups.snapshots("b").await.unwrap();
    assert!(next.len() <= 1);
    backups.run("b").await.unwrap();
    assert!(tmp.path().join("post-ran").exists(), "the post-hook ran");
    assert_eq!(
        backups.snapshots("b").await.unwrap().len(),
        2,
        "both runs made a snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_stays_alerted_through_clean_parts_and_missing_packs_count() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let (backups, host) = setup(tmp.path(), &repo, "verify = { parts = 2 }");
    for i in 0..6u64 {
        std::fs::write(
            tmp.path().join(format!("data/f{i}")),
            noise(200_000, i + 10),
        )
        .unwrap();
        backups.run("b").await.unwrap();
    }
    let packs: Vec<PathBuf> = std::fs::read_dir(repo.join("data"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .collect();
    // Packs in both parts: one gets a flipped byte.
    let name = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
    let victim = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let last_corrupt = |host: &FakeHost| {
        let alerts = host.alerts.lock().unwrap();
        alerts
            .iter()
            .rev()
            .find(|(_, a, _)| a == "backup-corrupt")
            .map(|(_, _, s)| s.is_some())
    };
    let mut found = false;
    for round in 0..4 {
        let v = backups.verify("b").await.unwrap();
        found |= !v.record.problems.is_empty();
        if found {
            assert_eq!(
                last_corrupt(&host),
                Some(true),
                "round {round}: still alerted"
            );
        }
        let part = v.record.part;
        assert_eq!(part, ((round % 2) + 1, 2));
        let in_this_part = backup::in_part(&name(&victim), part.0, part.1);
        assert_eq!(
            !v.record.problems.is_empty(),
            in_this_part,
            "round {round}: {v:?}"
        );
    }
    assert!(found, "the flipped byte was found in its part");
    let damaged = backups
        .snapshots("b")
        .await
        .unwrap()
        .iter()
        .filter(|s| s.damaged)
        .count();
    assert!(damaged >= 1);

    // A pack deleted from the disk marks what needs it, whichever part is read.
    let other = packs
        .iter()
        .find(|p| **p != victim && std::fs::metadata(p).unwrap().len() > 100_000);
    if let Some(other) = other {
        std::fs::remove_file(other).unwrap();
        let v = backups.verify("b").await.unwrap();
        assert!(
            v.record
                .problems
                .iter()
                .any(|p| p.contains("missing") || p.contains("not present")),
            "{:?}",
            v.record.problems
        );
        assert!(!v.record.damaged.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_repository_is_not_silently_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let (backups, _) = setup(tmp.path(), &repo, "");
    std::fs::write(tmp.path().join("data/f"), "x").unwrap();
    backups.run("b").await.unwrap();
    // The disk is not mounted: the directory is gone.
    std::fs::rename(&repo, tmp.path().join("elsewhere")).unwrap();
    let err = backups.run("b").await.unwrap_err().to_string();
    assert!(err.contains("is its disk mounted"), "{err}");
    assert!(!repo.exists(), "nothing was created in its place");
    // An empty directory says: start afresh.
    std::fs::create_dir(&repo).unwrap();
    backups.run("b").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_file_is_read_as_restic_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::write(tmp.path().join("pw"), "\u{feff}  s3cret \r\n\n").unwrap();
    let (backups, _) = setup(tmp.path(), &repo, "");
    std::fs::write(tmp.path().join("data/f"), "x").unwrap();
    let id = backups.run("b").await.unwrap().snapshot;
    let out = std::process::Command::new("restic")
        .arg("-r")
        .arg(&repo)
        .arg("--password-file")
        .arg(tmp.path().join("pw"))
        .args(["snapshots", "--json", "--no-cache"])
        .output()
        .expect("restic is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
}

/// A drill's HTTP check against a real server, one that answers 404, and one that accepts
/// and never answers (it must not hold the drill past its timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_http_check_passes_on_2xx_and_fails_on_404_or_silence() {
    let serve = "run = [\"python3\", \"-m\", \"http.server\", \"--bind\", \"127.0.0.1\", \"{port}\"]\ncwd = \".\"";
    let silent = "run = [\"python3\", \"-c\", \"import socket, sys\\ns = socket.socket()\\ns.bind(('127.0.0.1', int(sys.argv[1])))\\ns.listen()\\nheld = []\\nwhile True: held.append(s.accept())\", \"{port}\"]\ncwd = \".\"";
    let cases = [
        (serve, "/", None),
        (serve, "/nope", Some("answered 404")),
        (silent, "/", Some("did not pass within its timeout of 3s")),
    ];
    for (service, path, failure) in cases {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("data")).unwrap();
        std::fs::write(tmp.path().join("data/f"), "x").unwrap();
        let (backups, _) = setup_with(
            tmp.path(),
            service,
            &format!(
                "paths = [\"data\"]\nrepository = \"repo\"\ndrill = {{ http = \"{path}\", timeout = \"3s\" }}"
            ),
        );
        backups.run("b").await.unwrap();
        let started = std::time::Instant::now();
        let drill = backups.drill("b").await;
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "bounded by its timeout"
        );
        match failure {
            None => assert!(drill.unwrap().record.passed, "{path}"),
            Some(why) => {
                let err = drill.unwrap_err().to_string();
                assert!(err.contains(why), "{path}: {err}");
            }
        }
    }
}
