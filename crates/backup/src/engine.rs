//! The backups of a stack and their operations: run, verify, drill, restore, list. One
//! operation at a time per backup (they share a repository); everything that blocks
//! (rustic_core, the journal) runs on tokio's blocking pool.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use spec::BackupSource;

use crate::record::{DrillRecord, Mark, Record, Records, RunRecord, VerifyRecord};
use crate::repo::{Repo, Snap};
use crate::{Error, Host, Urgency};

/// Alert names, one per kind of trouble.
pub(crate) const CORRUPT: &str = "backup-corrupt";
pub(crate) const DRILL: &str = "backup-drill";

/// A stack's backups. Cheap to clone.
#[derive(Clone)]
pub struct Backups {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub host: Arc<dyn Host>,
    records: Records,
    pub jobs: BTreeMap<String, Arc<Job>>,
    /// Scratch space: journal copies, drill restores.
    work_dir: PathBuf,
}

/// One `[[backups]]` entry at run time.
pub(crate) struct Job {
    pub spec: spec::Backup,
    /// Held for the length of an operation on the repository; shared by every backup
    /// with the same repository, so one operation at a time runs on it.
    busy: Arc<tokio::sync::Mutex<()>>,
    /// The repository's key, once opened.
    keys: crate::repo::KeyCache,
    record: Mutex<Record>,
    /// Signalled whenever the record changes (the RPO watch re-arms).
    pub changed: tokio::sync::Notify,
}

impl Job {
    pub fn record(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The repository, with the password as the file holds it now.
    fn repo(&self) -> Result<Repo, Error> {
        Repo::new(
            &self.spec.repository,
            &self.spec.password_file,
            self.keys.clone(),
        )
    }
}

/// What a backup run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub backup: String,
    pub snapshot: String,
    pub bytes: u64,
    pub added: u64,
    pub files: u64,
    pub duration_ms: u64,
    /// Whether the new data was read back intact.
    pub verified: bool,
    /// Snapshots removed by the keep rules.
    pub forgotten: Vec<String>,
    /// Hook failures let through by `on_error = "continue"`.
    pub warnings: Vec<String>,
}

/// A repository that held this backup's snapshots and is gone is not silently replaced by
/// a new one: its disk may simply not be mounted. An empty directory in its place says a new
/// repository is wanted.
fn refuse_a_vanished_repository(spec: &spec::Backup, taken_before: bool) -> Result<(), Error> {
    let path = &spec.repository;
    let empty_dir = std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none());
    if !taken_before || empty_dir {
        return Ok(());
    }
    Err(Error::Repository {
        path: path.clone(),
        op: "find",
        detail: format!(
            "backup `{}` saved snapshots there before and it holds no repository now: is its \
             disk mounted? To start a new repository there on purpose, create it as an empty \
             directory",
            spec.name
        ),
    })
}

/// What a verification found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyReport {
    pub backup: String,
    #[serde(flatten)]
    pub record: VerifyRecord,
}

/// How a drill went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillReport {
    pub backup: String,
    #[serde(flatten)]
    pub record: DrillRecord,
    /// The RTO objective, if one is set.
    pub rto_objective_ms: Option<u64>,
}

/// A snapshot with what bulwark knows of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotView {
    pub id: String,
    /// RFC 3339, with the offset it was taken at.
    pub time: String,
    pub paths: Vec<String>,
    pub bytes: u64,
    pub files: u64,
    pub verified: bool,
    pub damaged: bool,
}

/// A backup's configuration and record, for `status` and `list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    /// The service, or `bulwark` for the journal.
    pub source: String,
    pub repository: PathBuf,
    pub schedule: String,
    pub rpo_ms: u64,
    pub rto_ms: Option<u64>,
    /// The newest verified snapshot and its time.
    pub newest_verified: Option<String>,
    pub newest_verified_ms: Option<u64>,
    pub record: Record,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Backups {
    /// The backups of a stack. Reads their records from `store` (a blocking call: make it
    /// at start). Scratch data goes under `work_dir`.
    pub fn new(
        specs: &[spec::Backup],
        host: Arc<dyn Host>,
        store: Option<Arc<dyn store::Store>>,
        work_dir: PathBuf,
    ) -> Backups {
        let records = Records::new(store);
        let mut locks: BTreeMap<PathBuf, Arc<tokio::sync::Mutex<()>>> = BTreeMap::new();
        let jobs = specs
            .iter()
            .map(|s| {
                let repo =
                    std::path::absolute(&s.repository).unwrap_or_else(|_| s.repository.clone());
                let job = Job {
                    record: Mutex::new(records.load(&s.name)),
                    spec: s.clone(),
                    busy: locks.entry(repo).or_default().clone(),
                    keys: Default::default(),
                    changed: tokio::sync::Notify::new(),
                };
                (s.name.clone(), Arc::new(job))
            })
            .collect();
        Backups {
            inner: Arc::new(Inner {
                host,
                records,
                jobs,
                work_dir,
            }),
        }
    }

    fn job(&self, name: &str) -> Result<Arc<Job>, Error> {
        self.inner
            .jobs
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Unknown(name.to_owned()))
    }

    /// Changes `job`'s record and stores it.
    async fn update(&self, job: &Job, f: impl FnOnce(&mut Record)) {
        let snapshot = {
            let mut record = job.record();
            f(&mut record);
            record.clone()
        };
        job.changed.notify_waiters();
        let inner = self.inner.clone();
        let name = job.spec.name.clone();
        let _ = tokio::task::spawn_blocking(move || inner.records.save(&name, &snapshot)).await;
    }

    /// Every backup's configuration and record.
    pub fn status(&self) -> Vec<Status> {
        self.inner
            .jobs
            .values()
            .map(|job| {
                let record = job.record().clone();
                let newest = record.newest_verified().map(|(id, t)| (id.to_owned(), t));
                Status {
                    name: job.spec.name.clone(),
                    source: job.spec.source.service().unwrap_or("bulwark").to_owned(),
                    repository: job.spec.repository.clone(),
                    schedule: job.spec.schedule.as_str().to_owned(),
                    rpo_ms: crate::schedule::rpo(&job.spec).as_millis() as u64,
                    rto_ms: job.spec.rto.map(|d| d.as_millis() as u64),
                    newest_verified: newest.as_ref().map(|(id, _)| id.clone()),
                    newest_verified_ms: newest.map(|(_, t)| t),
                    record,
                }
            })
            .collect()
    }

    /// Runs `op` on its own task, holding the repository's lock for as long as it runs:
    /// a caller that gives up (a CLI interrupted, a request dropped) does not cut an
    /// operation short, which would skip a post-hook or free the repository while its
    /// work goes on.
    async fn detached<T, F, Fut>(&self, name: &str, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Backups, Arc<Job>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, Error>> + Send,
    {
        let job = self.job(name)?;
        let me = self.clone();
        tokio::spawn(async move {
            let _busy = job.busy.clone().lock_owned().await;
            op(me, job).await
        })
        .await
        .unwrap_or_else(|e| Err(Error::State(format!("a backup task failed: {e}"))))
    }

    /// Waits (up to `limit`) for the operations under way to end; none starts afterwards
    /// only if the schedules were stopped first.
    pub async fn shutdown(&self, limit: Duration) {
        let wait = async {
            for job in self.inner.jobs.values() {
                let _ = job.busy.lock().await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    /// Takes a snapshot now: pre-hook, snapshot, read-back, post-hook, keep rules.
    pub async fn run(&self, name: &str) -> Result<RunReport, Error> {
        self.detached(name, |me, job| async move { me.run_now(&job).await })
            .await
    }

    async fn run_now(&self, job: &Job) -> Result<RunReport, Error> {
        let name = job.spec.name.as_str();
        let started = Instant::now();
        let at_ms = now_ms();
        let result = self.run_locked(job).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let run = match &result {
            Ok(r) => RunRecord {
                at_ms,
                duration_ms,
                snapshot: Some(r.snapshot.clone()),
                bytes: r.bytes,
                added: r.added,
                error: None,
            },
            Err(e) => RunRecord {
                at_ms,
                duration_ms,
                snapshot: None,
                bytes: 0,
                added: 0,
                error: Some(e.to_string()),
            },
        };
        let ok = result.is_ok();
        self.update(job, |r| {
            r.last_run = Some(run);
            if ok {
                r.runs_ok += 1;
                r.last_success_ms = Some(now_ms());
            } else {
                r.runs_failed += 1;
            }
        })
        .await;
        match &result {
            Ok(r) => {
                tracing::info!(backup = name, snapshot = %r.snapshot, bytes = r.bytes, "backup done")
            }
            Err(e) => tracing::warn!(backup = name, error = %e, "backup failed"),
        }
        result.map(|r| RunReport { duration_ms, ..r })
    }

    async fn run_locked(&self, job: &Job) -> Result<RunReport, Error> {
        let spec = &job.spec;
        let host = &*self.inner.host;
        let service = spec.source.service();
        let mut warnings = Vec::new();
        if let Some(pre) = &spec.pre {
            warnings.extend(crate::hooks::run("pre", pre, service, host).await?);
        }
        let saved = self.snapshot(job).await;
        if let Some(post) = &spec.post {
            match crate::hooks::run("post", post, service, host).await {
                Ok(w) => warnings.extend(w),
                Err(e) if saved.is_ok() => return Err(e),
                Err(e) => warnings.push(e.to_string()),
            }
        }
        let (snap, bad) = saved?;
        if !bad.is_empty() {
            self.update(job, |r| {
                r.damaged_packs.extend(bad.iter().map(|(p, _)| p.clone()))
            })
            .await;
        }
        let damaged: Vec<String> = bad
            .iter()
            .map(|(pack, why)| format!("pack {}: {why}", short(pack)))
            .collect();
        let verified = damaged.is_empty();
        let verified = verified && self.reuses_no_damage(job, &snap).await?;
        self.update(job, |r| {
            r.marks.insert(
                snap.id.clone(),
                Mark {
                    verified_ms: verified.then(now_ms),
                    damaged: !verified,
                    time_ms: snap.time.timestamp().as_millisecond().max(0) as u64,
                },
            );
        })
        .await;
        // The keep rules apply even after a damaged snapshot: that is when the rule that
        // the newest good snapshot stays matters.
        let forgotten = self.retain(job).await?;
        if !verified {
            let why = if damaged.is_empty() {
                "it reuses data found damaged earlier".to_owned()
            } else {
                damaged.join("; ")
            };
            let summary = format!(
                "backup `{}`: snapshot {} is damaged ({why}); forgotten by the keep rules: {}",
                spec.name,
                short(&snap.id),
                forgotten.len()
            );
            host.alert(&spec.name, CORRUPT, Urgency::Page, Some(summary.clone()));
            return Err(Error::Repository {
                path: spec.repository.clone(),
                op: "read back",
                detail: summary,
            });
        }
        Ok(RunReport {
            backup: spec.name.clone(),
            snapshot: snap.id,
            bytes: snap.bytes,
            added: snap.added,
            files: snap.files,
            duration_ms: 0,
            verified,
            forgotten,
            warnings,
        })
    }

    /// Whether `snap` needs none of the packs found damaged before (deduplication reuses
    /// stored data, damaged or not).
    async fn reuses_no_damage(&self, job: &Job, snap: &Snap) -> Result<bool, Error> {
        let damaged = job.record().damaged_packs.clone();
        if damaged.is_empty() {
            return Ok(true);
        }
        let repo = job.repo()?;
        let id = snap.id.clone();
        blocking(move || Ok(!repo.snapshots_using(&damaged)?.contains(&id))).await
    }

    /// Writes the snapshot and reads back the packs it added: (snapshot, damage found).
    async fn snapshot(&self, job: &Job) -> Result<(Snap, Vec<(String, String)>), Error> {
        let spec = job.spec.clone();
        let repo = job.repo()?;
        let paths = match &spec.source {
            BackupSource::Service { paths, .. } => paths.clone(),
            BackupSource::State => vec![self.export_state(&spec.name).await?],
        };
        let taken_before = {
            let r = job.record();
            r.runs_ok > 0 || !r.marks.is_empty()
        };
        let result = blocking(move || {
            // A path that is not there would make a snapshot without it, and a backup
            // that saves nothing must not pass for one that worked.
            for path in &paths {
                if let Err(e) = std::fs::symlink_metadata(path) {
                    return Err(Error::Io {
                        what: format!("back up {}", path.display()),
                        source: e,
                    });
                }
            }
            let before = if repo.exists() {
                repo.packs()?
            } else {
                refuse_a_vanished_repository(&spec, taken_before)?;
                Default::default()
            };
            let snap = repo.backup(&paths, &tag(&spec.name))?;
            let added: BTreeSet<String> = repo.packs()?.difference(&before).cloned().collect();
            let damaged: Vec<(String, String)> = repo.read_back(&added);
            Ok((snap, damaged))
        })
        .await;
        if matches!(job.spec.source, BackupSource::State) {
            // The copy is in the repository now (or failed to get there): no second one
            // of the journal lingers in the state directory.
            let copy = self.inner.work_dir.join("state").join(&job.spec.name);
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(copy)).await;
        }
        result
    }

    /// A consistent copy of the journal in the work directory, to be saved.
    async fn export_state(&self, name: &str) -> Result<PathBuf, Error> {
        let dir = self.inner.work_dir.join("state").join(name);
        let dest = dir.join("journal.redb");
        let host = self.inner.host.clone();
        let target = dest.clone();
        blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
                what: format!("create {}", dir.display()),
                source: e,
            })?;
            host.export_state(&target).map_err(Error::State)
        })
        .await?;
        Ok(dest)
    }

    /// Applies the keep rules; returns the snapshots forgotten.
    async fn retain(&self, job: &Job) -> Result<Vec<String>, Error> {
        let spec = job.spec.clone();
        let marks = job.record().marks.clone();
        let repo = job.repo()?;
        let forgotten = blocking(move || {
            let snaps = own(repo.snapshots()?, &spec.name);
            let candidates: Vec<policy::Candidate<String>> = snaps
                .iter()
                .map(|s| {
                    let mark = marks.get(&s.id);
                    policy::Candidate {
                        id: s.id.clone(),
                        time: s.time.datetime(),
                        verified: mark.is_some_and(|m| m.verified_ms.is_some()),
                        damaged: mark.is_some_and(|m| m.damaged),
                    }
                })
                .collect();
            let keep = &spec.keep;
            let rules = policy::Keep {
                last: keep.last,
                hourly: keep.hourly,
                daily: keep.daily,
                weekly: keep.weekly,
                monthly: keep.monthly,
                yearly: keep.yearly,
            };
            let forget: Vec<String> = policy::retain(&candidates, &rules)
                .into_iter()
                .filter(|d| !d.keep)
                .map(|d| d.id)
                .collect();
            repo.forget(&forget)?;
            let mine: BTreeSet<String> = snaps.into_iter().map(|s| s.id).collect();
            Ok((forget, mine))
        })
        .await?;
        let (forgotten, mine) = forgotten;
        self.update(job, |r| {
            for id in &forgotten {
                r.marks.remove(id);
            }
            // Snapshots forgotten from outside (`restic forget`) leave no mark behind.
            r.marks.retain(|id, _| mine.contains(id));
        })
        .await;
        Ok(forgotten)
    }

    /// Checks the repository's structure and reads back its next part of the data; marks
    /// the snapshots that need damaged data, and alerts.
    pub async fn verify(&self, name: &str) -> Result<VerifyReport, Error> {
        self.detached(name, |me, job| async move { me.verify_now(&job).await })
            .await
    }

    async fn verify_now(&self, job: &Job) -> Result<VerifyReport, Error> {
        let name = job.spec.name.as_str();
        let spec = job.spec.clone();
        let parts = spec.verify.parts.max(1);
        let part = job.record().verify_round % parts + 1;
        let repo = job.repo()?;
        let at_ms = now_ms();
        let found = blocking(move || {
            let (mut problems, named) = repo.check(part, parts)?;
            let present = repo.packs()?;
            let indexed = repo.indexed_packs()?;
            let chosen = present
                .iter()
                .filter(|id| crate::repo::in_part(id, part, parts))
                .count();
            // The packs the check named, by the start of their ids.
            let mut bad_packs: BTreeSet<String> = indexed
                .iter()
                .chain(&present)
                .filter(|id| named.iter().any(|n| id.starts_with(n.as_str())))
                .cloned()
                .collect();
            // A pack the index names but the disk lacks is damage too, whatever the part.
            let mut missing: Vec<&String> = indexed.difference(&present).collect();
            missing.sort();
            for p in missing {
                if bad_packs.insert(p.clone()) {
                    problems.push(format!("pack {}: missing", short(p)));
                }
            }
            let mine: BTreeSet<String> = own(repo.snapshots()?, &spec.name)
                .into_iter()
                .map(|s| s.id)
                .collect();
            let damaged = if bad_packs.is_empty() {
                Vec::new()
            } else {
                let hit = repo.snapshots_using(&bad_packs)?;
                hit.into_iter().filter(|id| mine.contains(id)).collect()
            };
            Ok(Found {
                problems,
                packs_read: chosen,
                damaged,
                bad_packs,
                indexed,
                mine,
            })
        })
        .await?;
        let record = VerifyRecord {
            at_ms,
            part: (part, parts),
            packs_read: found.packs_read,
            problems: found.problems.clone(),
            damaged: found.damaged.clone(),
        };
        let stored = record.clone();
        self.update(job, |r| {
            r.verify_round = r.verify_round.wrapping_add(1);
            // Damage that prune removed is gone; so are snapshots forgotten from outside.
            r.damaged_packs.retain(|p| found.indexed.contains(p));
            r.damaged_packs.extend(found.bad_packs.iter().cloned());
            r.marks.retain(|id, _| found.mine.contains(id));
            for id in &found.damaged {
                r.marks.entry(id.clone()).or_default().damaged = true;
            }
            r.last_verify = Some(stored);
        })
        .await;
        self.alert_corruption(job, &found.problems, &found.damaged);
        Ok(VerifyReport {
            backup: name.to_owned(),
            record,
        })
    }

    fn alert_corruption(&self, job: &Job, problems: &[String], damaged: &[String]) {
        let name = &job.spec.name;
        // Resolved only when nothing is known damaged any more: a clean part of the data
        // says nothing of the part where damage was found.
        let known = job.record().damaged_packs.len();
        if problems.is_empty() && known == 0 {
            self.inner.host.alert(name, CORRUPT, Urgency::Page, None);
            return;
        }
        if problems.is_empty() {
            return;
        }
        let good = job
            .record()
            .newest_verified()
            .map_or("none".to_owned(), |(id, _)| short(id).to_owned());
        let marked: Vec<&str> = damaged.iter().map(|d| short(d)).collect();
        let summary = format!(
            "backup `{name}`: verification found {} problem(s) ({}); damaged snapshots: {}; \
             newest good snapshot: {good}",
            problems.len(),
            problems.first().map_or("", String::as_str),
            if marked.is_empty() {
                "none identified".to_owned()
            } else {
                marked.join(", ")
            },
        );
        tracing::error!(backup = %name, %summary, "backup corruption");
        self.inner
            .host
            .alert(name, CORRUPT, Urgency::Page, Some(summary));
    }

    /// Restores the newest verified snapshot into a scratch replica and times it.
    pub async fn drill(&self, name: &str) -> Result<DrillReport, Error> {
        self.detached(name, |me, job| async move { me.drill_now(&job).await })
            .await
    }

    async fn drill_now(&self, job: &Job) -> Result<DrillReport, Error> {
        let name = job.spec.name.as_str();
        let spec = job.spec.clone();
        let (Some(drill), BackupSource::Service { service, paths }) = (&spec.drill, &spec.source)
        else {
            return Err(Error::Drill(format!(
                "backup `{name}` has no [backups.drill] table"
            )));
        };
        let at_ms = now_ms();
        let snapshot = job.record().newest_verified().map(|(id, _)| id.to_owned());
        let result = match &snapshot {
            None => Err(Error::NoSnapshot(format!(
                "backup `{name}` has no verified snapshot to drill yet; run `bulwark backup run {name}`"
            ))),
            Some(id) => {
                let repo = job.repo()?;
                let scratch = self.inner.work_dir.join("drills").join(name);
                crate::drill::run(
                    drill,
                    service,
                    paths,
                    &repo,
                    id,
                    &*self.inner.host,
                    &scratch,
                )
                .await
            }
        };
        let record = DrillRecord {
            at_ms,
            snapshot,
            passed: result.is_ok(),
            rto_ms: result.as_ref().ok().map(|o| o.rto.as_millis() as u64),
            restore_ms: result.as_ref().ok().map(|o| o.restore.as_millis() as u64),
            error: result.as_ref().err().map(ToString::to_string),
        };
        let stored = record.clone();
        self.update(job, |r| r.last_drill = Some(stored)).await;
        self.alert_drill(&spec, &record);
        result?;
        Ok(DrillReport {
            backup: name.to_owned(),
            record,
            rto_objective_ms: spec.rto.map(|d| d.as_millis() as u64),
        })
    }

    fn alert_drill(&self, spec: &spec::Backup, record: &DrillRecord) {
        let slow = match (record.rto_ms, spec.rto) {
            (Some(took), Some(rto)) if Duration::from_millis(took) > rto => Some(format!(
                "backup `{}`: the restore drill took {} (RTO {})",
                spec.name,
                humantime::format_duration(Duration::from_millis(took)),
                humantime::format_duration(rto)
            )),
            _ => None,
        };
        let summary = match &record.error {
            Some(e) => Some(format!("backup `{}`: {e}", spec.name)),
            None => slow,
        };
        self.inner
            .host
            .alert(&spec.name, DRILL, Urgency::Ticket, summary);
    }

    /// Restores snapshot `snapshot` (an id prefix, or `latest`) of backup `name` into
    /// `to`, under the snapshot's absolute paths, as `restic restore --target` does.
    /// Returns the snapshot's id.
    /// `latest` is the newest verified, undamaged snapshot.
    pub async fn restore(&self, name: &str, snapshot: &str, to: &Path) -> Result<String, Error> {
        let (wanted, to) = (snapshot.to_owned(), to.to_path_buf());
        self.detached(name, move |_, job| async move {
            let spec = job.spec.clone();
            let repo = job.repo()?;
            let good = job.record().newest_verified().map(|(id, _)| id.to_owned());
            blocking(move || {
                if std::fs::read_dir(&to).is_ok_and(|mut d| d.next().is_some()) {
                    return Err(Error::Io {
                        what: format!("restore into {}", to.display()),
                        source: std::io::Error::other(
                            "the directory is not empty; choose an empty or new one",
                        ),
                    });
                }
                let snaps = own(repo.snapshots()?, &spec.name);
                let id = match (wanted.as_str(), good) {
                    ("latest", Some(good)) => good,
                    ("latest", None) => {
                        return Err(Error::NoSnapshot(format!(
                            "backup `{}` has no verified snapshot; give a snapshot id to \
                             restore an unverified one",
                            spec.name
                        )));
                    }
                    _ => pick(&snaps, &wanted, &spec.name)?,
                };
                repo.restore(&id, None, &to)?;
                Ok(id)
            })
            .await
        })
        .await
    }

    /// The snapshots of backup `name`, oldest first.
    pub async fn snapshots(&self, name: &str) -> Result<Vec<SnapshotView>, Error> {
        let job = self.job(name)?;
        let spec = job.spec.clone();
        let repo = job.repo()?;
        let snaps = blocking(move || {
            if !repo.exists() {
                return Ok(Vec::new());
            }
            Ok(own(repo.snapshots()?, &spec.name))
        })
        .await?;
        let record = job.record();
        Ok(snaps
            .into_iter()
            .map(|s| {
                let mark = record.marks.get(&s.id);
                SnapshotView {
                    verified: mark.is_some_and(|m| m.verified_ms.is_some() && !m.damaged),
                    damaged: mark.is_some_and(|m| m.damaged),
                    time: s.time.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
                    id: s.id,
                    paths: s.paths,
                    bytes: s.bytes,
                    files: s.files,
                }
            })
            .collect())
    }
}

/// What a verification found.
struct Found {
    problems: Vec<String>,
    packs_read: usize,
    /// This backup's snapshots that need damaged packs.
    damaged: Vec<String>,
    bad_packs: BTreeSet<String>,
    /// Packs the index names.
    indexed: std::collections::HashSet<String>,
    /// This backup's snapshots.
    mine: BTreeSet<String>,
}

/// The snapshots a backup owns (tagged with its name): a repository may be shared.
fn own(snaps: Vec<Snap>, name: &str) -> Vec<Snap> {
    let tag = tag(name);
    snaps
        .into_iter()
        .filter(|s| s.tags.contains(&tag))
        .collect()
}

/// The tag that marks a backup's snapshots, besides `bulwark`.
fn tag(name: &str) -> String {
    format!("bulwark:{name}")
}

/// `latest`, or the one snapshot whose id starts with `wanted`.
fn pick(snaps: &[Snap], wanted: &str, name: &str) -> Result<String, Error> {
    if wanted == "latest" {
        return snaps
            .last()
            .map(|s| s.id.clone())
            .ok_or_else(|| Error::NoSnapshot(format!("backup `{name}` has no snapshot yet")));
    }
    let wanted = wanted.to_ascii_lowercase();
    let found: Vec<&Snap> = if wanted.is_empty() {
        Vec::new()
    } else {
        snaps.iter().filter(|s| s.id.starts_with(&wanted)).collect()
    };
    match found[..] {
        [one] => Ok(one.id.clone()),
        [] => Err(Error::NoSnapshot(format!(
            "backup `{name}` has no snapshot {wanted:?}; `bulwark backup list {name}` shows them"
        ))),
        _ => Err(Error::NoSnapshot(format!(
            "{wanted:?} matches {} snapshots of backup `{name}`; give more of the id",
            found.len()
        ))),
    }
}

/// The 8-character form restic prints.
pub(crate) fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::State(format!("a backup task failed: {e}"))))
}
