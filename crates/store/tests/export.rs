//! `Store::export`: a consistent, complete copy of the journal while it is in use, and
//! clean failures (nothing at the destination, the journal unharmed) when the copy cannot be
//! written. The read-only and full destinations are tmpfs mounts (the tests run as root).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use store::{Embedded, Error, Store};

fn all(store: &(impl Store + ?Sized), log: &str) -> Vec<(u64, Vec<u8>)> {
    store.read(log, 0, usize::MAX).expect("read")
}

/// Every file in `dir`, by name, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const LOGS: [&str; 3] = ["events", "alerts", "emptied"];
const NAMESPACES: [&str; 2] = ["incidents", "silences"];

/// A journal with records, trimmed logs and namespaces.
fn populated(path: &Path) -> Embedded {
    let store = Embedded::open(path).unwrap();
    for i in 0..50u32 {
        store
            .append("events", &[format!("event {i}").as_bytes(), b"second"])
            .unwrap();
    }
    store.trim("events", 30).unwrap(); // ids 71..=100 remain
    store
        .append("alerts", &[b"a", &[0u8, 255, 7], b""])
        .unwrap();
    store.append("emptied", &[b"x", b"y"]).unwrap();
    store.trim("emptied", 0).unwrap(); // empty, but its counter is 2
    store.put("incidents", "web", b"open").unwrap();
    store.put("incidents", "db", &[1, 2, 3]).unwrap();
    store.put("silences", "nightly", b"").unwrap();
    store.delete("incidents", "db").unwrap();
    store
}

/// Logs (records and last ids) and namespaces of a journal, to compare two.
type Contents = (Vec<(Vec<(u64, Vec<u8>)>, u64)>, Vec<Vec<(String, Vec<u8>)>>);

fn contents(store: &impl Store) -> Contents {
    let logs = LOGS
        .iter()
        .map(|log| (all(store, log), store.last_id(log).unwrap()))
        .collect();
    let namespaces = NAMESPACES
        .iter()
        .map(|ns| store.list(ns).unwrap())
        .collect();
    (logs, namespaces)
}

#[test]
fn an_export_opens_as_an_identical_journal() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(&dir.path().join("journal.redb"));
    let dest = dir.path().join("copy.redb");
    store.export(&dest).unwrap();
    assert_eq!(
        files(dir.path()),
        ["copy.redb", "journal.redb"],
        "no temporary file is left"
    );

    let copy = Embedded::open(&dest).expect("the export is a journal");
    let expected = contents(&store);
    assert_eq!(contents(&copy), expected);
    assert_eq!(expected.0[0].0.first().map(|r| r.0), Some(71));
    assert_eq!(
        expected.0[2],
        (vec![], 2),
        "an emptied log keeps its counter"
    );
    // The copy goes on where the journal was: ids are not reused there either.
    assert_eq!(copy.append("emptied", &[b"z"]).unwrap(), [3]);
    assert_eq!(copy.append("events", &[b"z"]).unwrap(), [101]);
    // The journal itself is untouched and still in use.
    assert_eq!(store.append("events", &[b"after"]).unwrap(), [101]);
    assert_eq!(contents(&copy).1, expected.1);
}

#[test]
fn an_export_replaces_an_existing_destination() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(&dir.path().join("journal.redb"));
    let dest = dir.path().join("copy.redb");
    fs::write(&dest, b"an older backup, or anything").unwrap();
    store.export(&dest).unwrap();
    store.put("silences", "later", b"1").unwrap();
    store.export(&dest).unwrap();
    let copy = Embedded::open(&dest).unwrap();
    assert_eq!(contents(&copy), contents(&store));
}

#[test]
fn an_export_during_appends_holds_a_whole_prefix() {
    const BATCH: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(Embedded::open(&dir.path().join("journal.redb")).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut next = 1u64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Vec<u8>> = (next..next + BATCH)
                    .map(|i| format!("record {i}").into_bytes())
                    .collect();
                let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                let ids = store.append("events", &refs).unwrap();
                assert_eq!(ids, (next..next + BATCH).collect::<Vec<_>>());
                next += BATCH;
            }
            next - 1
        })
    };

    let mut seen = Vec::new();
    for i in 0..6 {
        // let the writer get ahead a little between exports
        while store.last_id("events").unwrap() < (i + 1) * 40 {
            std::thread::yield_now();
        }
        let dest = dir.path().join(format!("copy-{i}.redb"));
        store.export(&dest).unwrap();
        let copy = Embedded::open(&dest).unwrap();
        let records = all(&copy, "events");
        let n = records.len() as u64;
        assert!(
            n >= (i + 1) * 40,
            "the copy holds what was committed before it"
        );
        assert_eq!(n % BATCH, 0, "an append is in the copy whole or not at all");
        for (k, (id, value)) in records.iter().enumerate() {
            assert_eq!(*id, k as u64 + 1, "ids are contiguous");
            assert_eq!(value, format!("record {id}").as_bytes());
        }
        assert_eq!(copy.last_id("events").unwrap(), n);
        seen.push(n);
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(
        *seen.last().unwrap() <= written,
        "{seen:?} of {written} written"
    );
    assert_eq!(all(&*store, "events").len() as u64, written);
}

/// The export failed with an I/O error naming `dest`, left nothing in `dest`'s directory but
/// what was there (`before`), and the journal still works.
fn failed_cleanly(
    store: &Embedded,
    err: Error,
    dest: &Path,
    before: &[String],
    errno: Option<i32>,
) {
    let message = err.to_string();
    assert!(message.contains(&dest.display().to_string()), "{message}");
    match &err {
        Error::Io { path, source, .. } => {
            assert_eq!(path, dest, "{message}");
            if let Some(errno) = errno {
                assert_eq!(source.raw_os_error(), Some(errno), "{message}");
            }
        }
        other => panic!("expected an I/O error: {other:?}"),
    }
    assert!(!dest.exists(), "nothing at {}", dest.display());
    if let Some(dir) = dest.parent().filter(|d| d.exists()) {
        assert_eq!(files(dir), before, "no temporary file is left");
    }
    let last = store.last_id("events").unwrap();
    assert_eq!(store.append("events", &[b"after"]).unwrap(), [last + 1]);
    store.put("incidents", "after", b"1").unwrap();
}

#[test]
fn an_export_into_a_missing_directory_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(&dir.path().join("journal.redb"));
    let dest = dir.path().join("no-such-dir").join("copy.redb");
    let err = store.export(&dest).unwrap_err();
    assert!(
        err.to_string().contains("cannot create the export"),
        "{err}"
    );
    failed_cleanly(&store, err, &dest, &[], Some(libc_enoent()));
}

#[test]
fn an_export_onto_the_journal_itself_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let store = populated(&path);
    let before = contents(&store);
    let err = store.export(&path).unwrap_err();
    assert!(err.to_string().contains("onto itself"), "{err}");
    assert_eq!(contents(&store), before);
    drop(store);
    assert_eq!(contents(&Embedded::open(&path).unwrap()), before);
}

/// A tmpfs mounted for one test, unmounted (lazily) when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(options: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir)
    }

    fn path(&self) -> PathBuf {
        self.0.path().to_path_buf()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

const EROFS: i32 = 30;
const ENOSPC: i32 = 28;

fn libc_enoent() -> i32 {
    std::io::Error::from(std::io::ErrorKind::NotFound)
        .raw_os_error()
        .unwrap_or(2)
}

#[test]
fn an_export_onto_a_read_only_file_system_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(&dir.path().join("journal.redb"));
    let ro = Tmpfs::mount("ro,size=1m");
    let dest = ro.path().join("copy.redb");
    let err = store.export(&dest).unwrap_err();
    failed_cleanly(&store, err, &dest, &[], Some(EROFS));
}

#[test]
fn an_export_onto_a_full_disk_fails_cleanly_and_works_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(&dir.path().join("journal.redb"));
    // 1 MiB more, so that the copy needs more than the little room left (it is ~2.2 MB)
    let big = vec![7u8; 64 * 1024];
    for _ in 0..16 {
        store.append("alerts", &[&big]).unwrap();
    }
    let full = Tmpfs::mount("size=8m");
    let filler = full.path().join("filler");
    {
        use std::io::Write;
        let mut f = fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
    }
    let before = files(&full.path());
    let dest = full.path().join("copy.redb");
    let err = store.export(&dest).unwrap_err();
    assert!(err.to_string().contains("No space left"), "{err}");
    failed_cleanly(&store, err, &dest, &before, Some(ENOSPC));

    fs::remove_file(&filler).unwrap();
    store.export(&dest).unwrap();
    assert_eq!(contents(&Embedded::open(&dest).unwrap()), contents(&store));
}
