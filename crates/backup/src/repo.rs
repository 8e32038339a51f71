//! A restic repository, through rustic_core: the only module that knows the library.
//!
//! Every function blocks (rustic_core is synchronous and uses rayon): callers run them on
//! tokio's blocking pool. Each opens the repository afresh, so nothing goes stale when the
//! repository is changed from outside (by `restic` itself, say).

use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustic_backend::BackendOptions;
use rustic_core::{
    BackupOptions, CheckOptions, ConfigOptions, Credentials, Id, IndexedFull, KeyOptions,
    LocalDestination, LsOptions, OpenStatus, PathList, PruneOptions, ReadSubsetOption, Repository,
    RepositoryOptions, RestoreOptions, SnapshotOptions, TreeId, repofile::MasterKey,
    repofile::SnapshotFile,
};
use sha2::{Digest, Sha256};

use crate::Error;

/// A snapshot, as bulwark shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snap {
    /// The full hex id (`restic` accepts any unique prefix).
    pub id: String,
    pub time: jiff::Zoned,
    pub tree: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    /// Bytes of the files saved.
    pub bytes: u64,
    /// Bytes this snapshot added to the repository.
    pub added: u64,
    pub files: u64,
}

/// The repository's master key once a password opened it, with that password: deriving
/// the key from the password (scrypt, tuned to take a good part of a second) is the
/// slowest step of opening, and an operation opens the repository several times.
pub(crate) type KeyCache = Arc<Mutex<Option<(String, MasterKey)>>>;

/// A repository: a local directory and its password.
#[derive(Clone)]
pub struct Repo {
    path: PathBuf,
    password: String,
    keys: KeyCache,
}

impl Repo {
    /// Reads the password from `password_file` (a trailing newline is not part of it).
    pub fn new(path: &Path, password_file: &Path, keys: KeyCache) -> Result<Repo, Error> {
        let text = std::fs::read_to_string(password_file).map_err(|e| Error::Password {
            path: password_file.to_path_buf(),
            detail: e.to_string(),
        })?;
        // As restic reads `--password-file`: a byte-order mark and surrounding whitespace
        // are not part of the password, so `restic -p FILE` opens what bulwark wrote.
        let password = text.trim_start_matches('\u{feff}').trim();
        if password.is_empty() {
            return Err(Error::Password {
                path: password_file.to_path_buf(),
                detail: "the file is empty".into(),
            });
        }
        Ok(Repo {
            path: path.to_path_buf(),
            password: password.to_owned(),
            keys,
        })
    }

    fn error(&self, op: &'static str, e: impl std::fmt::Display) -> Error {
        Error::Repository {
            path: self.path.clone(),
            op,
            detail: e.to_string(),
        }
    }

    /// Whether the directory holds a repository yet (a backup creates it).
    pub fn exists(&self) -> bool {
        self.path.join("config").is_file()
    }

    /// Opens the repository; only a backup (`create`) makes one where there is none, so
    /// a read cannot race a first backup into two repositories.
    pub fn open_or_create(&self, create: bool) -> Result<Repository<OpenStatus>, Error> {
        let err = |e: Box<rustic_core::RusticError>| self.error("open", e.display_log());
        let path = self.path.to_string_lossy().into_owned();
        let backends = BackendOptions::default()
            .repository(path.as_str())
            .to_backends()
            .map_err(err)?;
        let repo = Repository::new(&RepositoryOptions::default(), &backends).map_err(err)?;
        let credentials = Credentials::password(&self.password);
        let opened = if repo.config_id().map_err(err)?.is_none() {
            if !create {
                return Err(Error::NoSnapshot(format!(
                    "there is no repository at {} yet: the first backup creates it",
                    self.path.display()
                )));
            }
            std::fs::create_dir_all(&self.path).map_err(|e| self.error("create", e))?;
            repo.init(
                &credentials,
                &KeyOptions::default(),
                &ConfigOptions::default(),
            )
            .map_err(|e| self.error("initialize", e.display_log()))?
        } else {
            let cached = self.cached_key();
            let credentials = cached.map_or(credentials, Credentials::Masterkey);
            repo.open(&credentials).map_err(err)?
        };
        *self.keys.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((self.password.clone(), opened.key()));
        Ok(opened)
    }

    fn open(&self) -> Result<Repository<OpenStatus>, Error> {
        self.open_or_create(false)
    }

    /// The cached master key, if it was opened with the current password.
    fn cached_key(&self) -> Option<MasterKey> {
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.as_ref()
            .filter(|(password, _)| *password == self.password)
            .map(|(_, key)| key.clone())
    }

    /// Saves `paths` as one snapshot tagged `bulwark` and `tag`.
    pub fn backup(&self, paths: &[PathBuf], tag: &str) -> Result<Snap, Error> {
        debug_assert!(!tag.contains(','), "a tag list is comma-separated");
        let err = |e: Box<rustic_core::RusticError>| self.error("back up", e.display_log());
        let repo = self.open_or_create(true)?.to_indexed_ids().map_err(err)?;
        // Absolute, as restic records them: restores and drills find them by that path.
        let source = PathList::from_iter(
            paths
                .iter()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        )
        .sanitize()
        .map_err(|e| self.error("back up", e))?;
        let snap = SnapshotOptions::default()
            .host(Some("bulwark".to_owned()))
            .add_tags(&format!("bulwark,{tag}"))
            .map_err(err)?
            .to_snapshot()
            .map_err(err)?;
        let snap = repo
            .backup(&BackupOptions::default(), &source, snap)
            .map_err(err)?;
        Ok(snap_of(&snap))
    }

    /// Every snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<Snap>, Error> {
        let repo = self.open()?;
        let mut all = repo
            .get_all_snapshots()
            .map_err(|e| self.error("list snapshots", e.display_log()))?;
        all.sort_by(|a, b| a.time.cmp(&b.time));
        Ok(all.iter().map(snap_of).collect())
    }

    /// The ids of every pack file.
    pub fn packs(&self) -> Result<HashSet<String>, Error> {
        let repo = self.open()?;
        let ids = repo
            .list::<rustic_core::repofile::PackId>()
            .map_err(|e| self.error("list packs", e.display_log()))?;
        Ok(ids.map(|id| hex(*id)).collect())
    }

    /// The packs the index names (what the snapshots' data is in), whether or not their
    /// files are there.
    pub fn indexed_packs(&self) -> Result<HashSet<String>, Error> {
        let repo = self.open()?;
        let files = repo
            .stream_files::<rustic_core::repofile::IndexFile>()
            .map_err(|e| self.error("read the index", e.display_log()))?;
        let mut packs = HashSet::new();
        for file in files {
            let (_, index) = file.map_err(|e| self.error("read the index", e.display_log()))?;
            packs.extend(index.packs.iter().map(|p| hex(*p.id)));
        }
        Ok(packs)
    }

    /// Reads each pack in `ids` and checks it against its name (the SHA-256 of its
    /// content); returns the damaged ones with what is wrong.
    pub fn read_back(&self, ids: &BTreeSet<String>) -> Vec<(String, String)> {
        let mut damaged = Vec::new();
        for id in ids {
            let path = self.path.join("data").join(&id[..2.min(id.len())]).join(id);
            match sha256_of(&path) {
                Ok(sum) if &sum == id => {}
                Ok(sum) => damaged.push((id.clone(), format!("its content hashes to {sum}"))),
                Err(e) => damaged.push((id.clone(), format!("cannot read it: {e}"))),
            }
        }
        damaged
    }

    /// Checks the repository: its structure (index, snapshots, every tree they reach) and
    /// part `n` of `m` of the packs read back (`restic check --read-data-subset n/m`, as
    /// rustic splits it: see [`in_part`]): each pack against its SHA-256 name, and each
    /// blob in it, decrypted, against its own, which is every saved file's content
    /// checksum. Returns each error found and the (8-character) ids of the packs named in
    /// them.
    pub fn check(&self, n: u32, m: u32) -> Result<(Vec<String>, BTreeSet<String>), Error> {
        let repo = self.open()?;
        let subset = if m <= 1 {
            ReadSubsetOption::All
        } else {
            ReadSubsetOption::IdSubSet((n, m))
        };
        let results = repo
            .check(
                CheckOptions::default()
                    .read_data(true)
                    .read_data_subset(subset),
            )
            .map_err(|e| self.error("check", e.display_log()))?;
        // rustic does not export the level's type; its Debug name is stable API surface.
        let problems: Vec<String> = results
            .0
            .iter()
            .filter(|(level, _)| format!("{level:?}") == "Error")
            .map(|(_, problem)| problem.to_string())
            .collect();
        let packs = problems.iter().filter_map(|p| pack_named(p)).collect();
        Ok((problems, packs))
    }

    /// The snapshots (ids) that need any of `packs`.
    pub fn snapshots_using(&self, packs: &BTreeSet<String>) -> Result<Vec<String>, Error> {
        let err = |e: Box<rustic_core::RusticError>| self.error("map damage", e.display_log());
        let repo = self.open()?;
        let snaps = repo.get_all_snapshots().map_err(err)?;
        let repo = repo.to_indexed().map_err(err)?;
        let mut hit = Vec::new();
        for snap in snaps {
            if uses_any(&repo, snap.tree, packs) {
                hit.push(hex(*snap.id));
            }
        }
        Ok(hit)
    }

    /// Removes the snapshots `ids`, then the data only they used.
    pub fn forget(&self, ids: &[String]) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let err = |e: Box<rustic_core::RusticError>| self.error("forget", e.display_log());
        let repo = self.open()?;
        let ids = ids
            .iter()
            .map(|id| id.parse::<Id>().map(Into::into))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        repo.delete_snapshots(&ids).map_err(err)?;
        // bulwark runs one operation per repository at a time, so unused packs can go at
        // once instead of after rustic's 23 h grace for concurrent writers.
        let opts = PruneOptions::default().instant_delete(true);
        let plan = repo.prune_plan(&opts).map_err(err)?;
        repo.prune(&opts, plan).map_err(err)
    }

    /// Restores `source` (a path saved in snapshot `id`, or everything with `None`) of the
    /// snapshot into `dest`, which is created.
    pub fn restore(&self, id: &str, source: Option<&Path>, dest: &Path) -> Result<(), Error> {
        let err = |e: Box<rustic_core::RusticError>| self.error("restore", e.display_log());
        let repo = self.open()?.to_indexed().map_err(err)?;
        let snap = repo.get_snapshot_from_str(id, |_| true).map_err(err)?;
        let path = source.map_or_else(|| "/".to_owned(), |p| p.to_string_lossy().into_owned());
        let node = repo
            .node_from_snapshot_and_path(&snap, &path)
            .map_err(err)?;
        let ls = repo.ls(&node, &LsOptions::default()).map_err(err)?;
        let dest =
            LocalDestination::new(&dest.to_string_lossy(), true, !node.is_dir()).map_err(err)?;
        let opts = RestoreOptions::default();
        let plan = repo
            .prepare_restore(&opts, ls.clone(), &dest, false)
            .map_err(err)?;
        repo.restore(plan, &opts, ls, &dest).map_err(err)
    }
}

fn snap_of(s: &SnapshotFile) -> Snap {
    let summary = s.summary.as_ref();
    Snap {
        id: hex(*s.id),
        time: s.time.clone(),
        tree: hex(*s.tree),
        paths: s.paths.iter().cloned().collect(),
        tags: s.tags.iter().cloned().collect(),
        bytes: summary.map_or(0, |s| s.total_bytes_processed),
        added: summary.map_or(0, |s| s.data_added),
        files: summary.map_or(0, |s| s.total_files_processed),
    }
}

fn hex(id: Id) -> String {
    id.to_hex().to_string()
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The pack a check message is about: rustic words them "pack ID…" with the id's first
/// eight hex digits.
fn pack_named(message: &str) -> Option<String> {
    let at = message.find("pack ")? + "pack ".len();
    let id = message.get(at..at + 8)?;
    id.bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then(|| id.to_owned())
}

/// Whether pack `id` is in part `n` of `m` (1-based), the way rustic splits
/// `--read-data-subset n/m`: by the id's first four bytes, little-endian, modulo `m`
/// (restic itself uses the first byte, so its part n/m is another set of packs).
pub fn in_part(id: &str, n: u32, m: u32) -> bool {
    if m <= 1 {
        return true;
    }
    let bytes: Vec<u8> = (0..8)
        .step_by(2)
        .filter_map(|i| {
            id.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect();
    let Ok(first) = <[u8; 4]>::try_from(bytes) else {
        return true;
    };
    u32::from_le_bytes(first) % m == n % m
}

/// Whether the tree `root` (with everything below it) has a blob in any of `packs`.
fn uses_any<S: IndexedFull>(repo: &Repository<S>, root: TreeId, packs: &BTreeSet<String>) -> bool {
    let in_damaged = |pack: rustic_core::repofile::PackId| packs.contains(&hex(*pack));
    let mut stack = vec![root];
    while let Some(tree_id) = stack.pop() {
        // A tree that cannot be found or read is damage too.
        match repo.get_index_entry(&tree_id) {
            Ok(entry) if in_damaged(entry.pack) => return true,
            Ok(_) => {}
            Err(_) => return true,
        }
        let Ok(tree) = repo.get_tree(&tree_id) else {
            return true;
        };
        for node in tree.nodes {
            if let Some(sub) = node.subtree {
                stack.push(sub);
            }
            for blob in node.content.iter().flatten() {
                match repo.get_index_entry(blob) {
                    Ok(entry) if in_damaged(entry.pack) => return true,
                    Ok(_) => {}
                    Err(_) => return true,
                }
            }
        }
    }
    false
}
