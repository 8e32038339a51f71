//! Behaviour of the embedded journal on real files in temporary directories.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use store::{Embedded, Error, FORMAT_VERSION, MAGIC, Store};

fn journal_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("journal.redb")
}

fn open(path: &Path) -> Embedded {
    Embedded::open(path).expect("open journal")
}

fn all(store: &impl Store, log: &str) -> Vec<(u64, Vec<u8>)> {
    store.read(log, 0, usize::MAX).expect("read")
}

fn ids(records: &[(u64, Vec<u8>)]) -> Vec<u64> {
    records.iter().map(|(id, _)| *id).collect()
}

// ---------------------------------------------------------------- logs

#[test]
fn append_read_last_id_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&journal_in(&dir));

    assert_eq!(store.last_id("events").unwrap(), 0);
    assert!(
        all(&store, "events").is_empty(),
        "a never-written log reads empty"
    );

    assert_eq!(
        store.append("events", &[b"a", b"b", b"c"]).unwrap(),
        vec![1, 2, 3]
    );
    assert_eq!(store.append("events", &[b"d"]).unwrap(), vec![4]);
    assert_eq!(store.append("events", &[]).unwrap(), Vec::<u64>::new());
    assert_eq!(store.last_id("events").unwrap(), 4);

    assert_eq!(
        all(&store, "events"),
        vec![
            (1, b"a".to_vec()),
            (2, b"b".to_vec()),
            (3, b"c".to_vec()),
            (4, b"d".to_vec())
        ]
    );
    assert_eq!(
        store.read("events", 1, 2).unwrap(),
        vec![(2, b"b".to_vec()), (3, b"c".to_vec())]
    );
    assert!(store.read("events", 4, 10).unwrap().is_empty());
    assert!(store.read("events", u64::MAX, 10).unwrap().is_empty());
    assert!(store.read("events", 0, 0).unwrap().is_empty());

    // Logs are independent, each with its own ids.
    assert_eq!(store.append("alerts", &[b"x"]).unwrap(), vec![1]);
    assert_eq!(store.last_id("events").unwrap(), 4);
}

#[test]
fn records_are_opaque_bytes_of_any_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&journal_in(&dir));
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let empty: &[u8] = b"";
    let binary: &[u8] = &[0, 255, 0, 1];
    store.append("blobs", &[&big, empty, binary]).unwrap();
    let got = all(&store, "blobs");
    assert_eq!(got[0].1, big);
    assert_eq!(got[1].1, empty);
    assert_eq!(got[2].1, binary);
}

#[test]
fn ids_keep_increasing_across_reopen_and_trim() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    {
        let store = open(&path);
        store
            .append("events", &[b"1", b"2", b"3", b"4", b"5"])
            .unwrap();
    }
    {
        let store = open(&path);
        assert_eq!(store.last_id("events").unwrap(), 5);
        assert_eq!(ids(&all(&store, "events")), vec![1, 2, 3, 4, 5]);
        assert_eq!(store.append("events", &[b"6"]).unwrap(), vec![6]);

        assert_eq!(store.trim("events", 2).unwrap(), 4);
        assert_eq!(
            all(&store, "events"),
            vec![(5, b"5".to_vec()), (6, b"6".to_vec())]
        );
        // Trimming everything must not let ids restart: readers hold "after id N" cursors.
        assert_eq!(store.trim("events", 0).unwrap(), 2);
        assert!(all(&store, "events").is_empty());
        assert_eq!(store.last_id("events").unwrap(), 6);
    }
    {
        let store = open(&path);
        assert_eq!(store.last_id("events").unwrap(), 6);
        assert_eq!(store.append("events", &[b"7", b"8"]).unwrap(), vec![7, 8]);
        assert_eq!(ids(&all(&store, "events")), vec![7, 8]);
    }
}

#[test]
fn trim_is_bounded_and_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&journal_in(&dir));
    assert_eq!(store.trim("never-written", 10).unwrap(), 0);
    assert_eq!(store.trim("never-written", 0).unwrap(), 0);

    let records: Vec<Vec<u8>> = (0..1000).map(|i| format!("r{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    store.append("events", &refs).unwrap();

    assert_eq!(store.trim("events", 5000).unwrap(), 0);
    assert_eq!(store.trim("events", 1000).unwrap(), 0);
    assert_eq!(store.trim("events", 100).unwrap(), 900);
    assert_eq!(store.trim("events", 100).unwrap(), 0);
    let left = all(&store, "events");
    assert_eq!(ids(&left), (901..=1000).collect::<Vec<_>>());
    assert_eq!(left[0].1, b"r900");
}

#[test]
fn concurrent_appends_through_arc_dyn_store_get_distinct_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(open(&journal_in(&dir)));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0..25 {
                    let a = format!("{t}-{i}-a");
                    let b = format!("{t}-{i}-b");
                    let ids = store
                        .append("events", &[a.as_bytes(), b.as_bytes()])
                        .unwrap();
                    // One batch is one transaction: its ids are consecutive.
                    assert_eq!(ids[1], ids[0] + 1);
                    got.extend(ids);
                }
                got
            })
        })
        .collect();
    let mut ids: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=200).collect::<Vec<_>>());
    assert_eq!(store.last_id("events").unwrap(), 200);
    assert_eq!(store.read("events", 0, usize::MAX).unwrap().len(), 200);
}

// ---------------------------------------------------------------- namespaces

#[test]
fn key_value_namespaces_round_trip_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    {
        let store = open(&path);
        assert_eq!(store.get("incidents", "i-1").unwrap(), None);
        assert!(store.list("incidents").unwrap().is_empty());
        assert!(!store.delete("incidents", "i-1").unwrap());

        store.put("incidents", "i-2", b"two").unwrap();
        store.put("incidents", "i-1", b"one").unwrap();
        store.put("incidents", "i-1", b"ONE").unwrap();
        store.put("silences", "i-1", b"other namespace").unwrap();
        // A log and a namespace may share a name without sharing data.
        store.append("incidents", &[b"log record"]).unwrap();

        assert_eq!(
            store.get("incidents", "i-1").unwrap(),
            Some(b"ONE".to_vec())
        );
        assert_eq!(
            store.list("incidents").unwrap(),
            vec![
                ("i-1".to_owned(), b"ONE".to_vec()),
                ("i-2".to_owned(), b"two".to_vec())
            ]
        );
    }
    {
        let store = open(&path);
        assert_eq!(
            store.get("incidents", "i-2").unwrap(),
            Some(b"two".to_vec())
        );
        assert!(store.delete("incidents", "i-2").unwrap());
        assert!(!store.delete("incidents", "i-2").unwrap());
        assert_eq!(
            store.list("incidents").unwrap(),
            vec![("i-1".to_owned(), b"ONE".to_vec())]
        );
        assert_eq!(
            store.list("silences").unwrap(),
            vec![("i-1".to_owned(), b"other namespace".to_vec())]
        );
        assert_eq!(all(&store, "incidents"), vec![(1, b"log record".to_vec())]);
    }
}

#[test]
fn keys_are_arbitrary_strings() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&journal_in(&dir));
    for key in ["", "with space", "ünïcode", "a/b:c.d", "{\"json\":1}"] {
        store.put("ns", key, key.as_bytes()).unwrap();
        assert_eq!(store.get("ns", key).unwrap(), Some(key.as_bytes().to_vec()));
    }
    assert_eq!(store.list("ns").unwrap().len(), 5);
}

// ---------------------------------------------------------------- names

#[test]
fn bad_log_and_namespace_names_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&journal_in(&dir));
    let long = "x".repeat(65);
    for bad in [
        "",
        "Events",
        "a.b",
        "meta:x",
        "a b",
        "../x",
        "é",
        long.as_str(),
    ] {
        let results: Vec<Result<(), Error>> = vec![
            store.append(bad, &[b"x"]).map(drop),
            store.read(bad, 0, 1).map(drop),
            store.last_id(bad).map(drop),
            store.trim(bad, 1).map(drop),
            store.put(bad, "k", b"v"),
            store.get(bad, "k").map(drop),
            store.delete(bad, "k").map(drop),
            store.list(bad).map(drop),
        ];
        for result in results {
            match result {
                Err(Error::InvalidName { name, .. }) => assert_eq!(name, bad),
                other => panic!("{bad:?}: expected InvalidName, got {other:?}"),
            }
        }
    }
    // Internal table names cannot be reached through the API.
    assert!(matches!(
        store.list("bulwark.meta"),
        Err(Error::InvalidName { .. })
    ));
    // Nothing was written by the rejected calls.
    assert_eq!(store.last_id("x").unwrap(), 0);
}

// ---------------------------------------------------------------- refusing files

/// Opens `path`, expecting an error, and checks that the file is byte-for-byte unchanged.
fn open_fails_untouched(path: &Path) -> Error {
    let before = fs::read(path).unwrap();
    let err = Embedded::open(path).expect_err("open must refuse this file");
    assert_eq!(
        fs::read(path).unwrap(),
        before,
        "a refused file must be left exactly as it was"
    );
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "the message must name the file: {message}"
    );
    err
}

#[test]
fn garbage_file_is_corrupt_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    // Deterministic pseudo-random bytes (xorshift), several pages' worth.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let garbage: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(&path, &garbage).unwrap();

    let err = open_fails_untouched(&path);
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("Move it aside"), "{err}");
}

#[test]
fn short_text_file_is_corrupt_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    fs::write(&path, "not a database\n").unwrap();
    let err = open_fails_untouched(&path);
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
}

#[test]
fn empty_file_is_corrupt_not_initialized() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    fs::write(&path, b"").unwrap();
    let err = open_fails_untouched(&path);
    assert!(
        matches!(&err, Error::Corrupt { detail, .. } if detail.contains("empty")),
        "{err:?}"
    );
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn directory_in_place_of_the_journal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    fs::create_dir(&path).unwrap();
    assert!(matches!(Embedded::open(&path), Err(Error::Corrupt { .. })));
}

#[test]
fn foreign_redb_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("stuff");
            txn.open_table(def).unwrap().insert("answer", &42).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = open_fails_untouched(&path);
    assert!(matches!(err, Error::Foreign { .. }), "{err:?}");
    assert!(err.to_string().contains("Move it aside"), "{err}");
}

#[test]
fn empty_foreign_redb_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    drop(redb::Database::create(&path).unwrap());
    let err = open_fails_untouched(&path);
    assert!(matches!(err, Error::Foreign { .. }), "{err:?}");
}

/// Writes a redb file whose `bulwark.meta` table holds the given entries.
fn redb_with_meta(path: &Path, entries: &[(&str, &str)]) {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let def: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("bulwark.meta");
        let mut table = txn.open_table(def).unwrap();
        for (k, v) in entries {
            table.insert(*k, *v).unwrap();
        }
    }
    txn.commit().unwrap();
}

#[test]
fn wrong_magic_is_foreign() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    redb_with_meta(&path, &[("magic", "someone-else"), ("format", "1")]);
    let err = open_fails_untouched(&path);
    assert!(matches!(err, Error::Foreign { .. }), "{err:?}");
}

#[test]
fn marker_table_with_other_types_is_foreign() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("bulwark.meta");
            txn.open_table(def).unwrap().insert(1, 2).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = open_fails_untouched(&path);
    assert!(matches!(err, Error::Foreign { .. }), "{err:?}");
}

#[test]
fn newer_format_version_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    let newer = (FORMAT_VERSION + 1).to_string();
    redb_with_meta(&path, &[("magic", MAGIC), ("format", &newer)]);
    let err = open_fails_untouched(&path);
    match err {
        Error::Version {
            found, supported, ..
        } => {
            assert_eq!(found, FORMAT_VERSION + 1);
            assert_eq!(supported, FORMAT_VERSION);
        }
        other => panic!("expected Version, got {other:?}"),
    }
}

#[test]
fn unreadable_format_version_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    redb_with_meta(&path, &[("magic", MAGIC), ("format", "one")]);
    let err = open_fails_untouched(&path);
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
}

#[test]
fn truncated_journal_is_corrupt_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    {
        let store = open(&path);
        store.append("events", &[b"some history"]).unwrap();
    }
    let full = fs::read(&path).unwrap();
    // Cut inside the header, so the redb magic is intact but nothing else is.
    fs::write(&path, &full[..100]).unwrap();
    let err = open_fails_untouched(&path);
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
}

#[test]
fn damaged_record_page_is_corrupt_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    let needle = b"NEEDLE-0123456789-NEEDLE";
    {
        let store = open(&path);
        store
            .append("events", &[b"before", needle, b"after"])
            .unwrap();
        store.put("incidents", "i-1", b"open").unwrap();
    }
    // Damage every copy of the record's bytes, as a bad disk or a stray writer would.
    let mut bytes = fs::read(&path).unwrap();
    let mut hits = 0;
    let mut i = 0;
    while i + needle.len() <= bytes.len() {
        if &bytes[i..i + needle.len()] == needle {
            bytes[i..i + needle.len()].fill(b'#');
            hits += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    assert!(
        hits > 0,
        "the record is stored verbatim somewhere in the file"
    );
    fs::write(&path, &bytes).unwrap();

    let err = open_fails_untouched(&path);
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
}

#[test]
fn a_journal_created_by_us_has_the_marker_and_no_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    drop(open(&path));
    // Only the journal itself: the temporary name used while creating it is gone.
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["journal.redb".to_owned()]);

    // Read the marker with redb directly: the format is what the docs say it is.
    let db = redb::Database::open(&path).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let def: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("bulwark.meta");
    let meta = txn.open_table(def).unwrap();
    assert_eq!(meta.get("magic").unwrap().unwrap().value(), MAGIC);
    assert_eq!(
        meta.get("format").unwrap().unwrap().value(),
        FORMAT_VERSION.to_string()
    );
}

#[test]
fn missing_state_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("journal.redb");
    assert!(matches!(Embedded::open(&path), Err(Error::Io { .. })));
    assert!(!path.exists());
}

#[test]
fn a_journal_in_use_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    let first = open(&path);
    first.append("events", &[b"kept"]).unwrap();
    let err = Embedded::open(&path).expect_err("second open while the first is alive");
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("bulwark up"), "{err}");
    // The failed second open did not disturb the first.
    first.append("events", &[b"still fine"]).unwrap();
    drop(first);
    let again = open(&path);
    assert_eq!(ids(&all(&again, "events")), vec![1, 2]);
}

// ---------------------------------------------------------------- kill -9

/// Set in the environment of the child process that acts as the writer.
const CHILD_ENV: &str = "BULWARK_STORE_KILL9_JOURNAL";
/// Commits the parent waits to see before it kills the child.
const COMMITS_BEFORE_KILL: u64 = 40;

/// The writer half of [`committed_records_survive_kill_9`]. Run as a normal test (no
/// environment variable) it does nothing; run by the parent it appends batches until killed,
/// announcing on stdout every append that returned `Ok`.
#[test]
fn kill9_child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = open(Path::new(&path));
    let mut next = 1u64;
    // Far more than the parent waits for: the child is always killed mid-stream.
    for batch in 0..1_000_000u64 {
        let size = batch % 3 + 1;
        let records: Vec<Vec<u8>> = (next..next + size)
            .map(|n| format!("record-{n}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let ids = store.append("events", &refs).expect("append");
        assert_eq!(ids, (next..next + size).collect::<Vec<_>>());
        next += size;
        // Printed only after append returned Ok: everything up to here must survive.
        println!("committed {}", next - 1);
    }
    panic!("the parent should have killed this writer");
}

#[cfg(unix)]
#[test]
fn committed_records_survive_kill_9() {
    use std::os::unix::process::ExitStatusExt;

    let dir = tempfile::tempdir().unwrap();
    let path = journal_in(&dir);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill9_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the writer");
    let stdout = child.stdout.take().unwrap();

    let mut committed = 0u64;
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let Some(n) = line.strip_prefix("committed ") else {
            continue; // the test harness's own chatter
        };
        let n: u64 = n.trim().parse().unwrap();
        assert!(n > committed, "commits are announced in order");
        committed = n;
        if !killed && committed >= COMMITS_BEFORE_KILL {
            child.kill().unwrap(); // SIGKILL: no destructors, no clean close of the database
            killed = true;
        }
        // Keep reading after the kill: lines already in the pipe were committed too.
    }
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the writer must die by SIGKILL, mid-stream ({status:?})"
    );
    assert!(committed >= COMMITS_BEFORE_KILL);

    // The file was left open by the killed process: redb will not read it without recovery,
    // so the reopen below exercises the crash-recovery path, not a clean open.
    assert!(matches!(
        redb::ReadOnlyDatabase::open(&path),
        Err(redb::DatabaseError::RepairAborted)
    ));
    let store = open(&path);
    let records = all(&store, "events");
    assert!(
        records.len() as u64 >= committed,
        "{} records survived but {committed} were reported committed",
        records.len()
    );
    // Every survivor is in place and in order: ids 1..=n, each with its own content. Records
    // beyond `committed` may exist (committed, killed before announcing) but never gaps.
    for (i, (id, value)) in records.iter().enumerate() {
        let expected = i as u64 + 1;
        assert_eq!(*id, expected);
        assert_eq!(value, format!("record-{expected}").as_bytes());
    }
    assert_eq!(store.last_id("events").unwrap(), records.len() as u64);
    // And the recovered journal takes new appends with the next ids.
    let next = records.len() as u64 + 1;
    assert_eq!(store.append("events", &[b"after"]).unwrap(), vec![next]);
}
