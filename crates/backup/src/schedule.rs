//! Runs each backup, verification and drill at its cron times, and watches the RPO: an
//! alert when the newest verified snapshot grows older than the objective. Every wait is
//! a timer to a known instant or a wake-up on a record change; nothing polls.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use spec::Schedule;

use crate::Urgency;
use crate::engine::{Backups, Job, now_ms};

/// The alert raised when the RPO passes.
pub(crate) const RPO: &str = "backup-rpo";

/// A backup's RPO: as declared, else twice the interval between its scheduled runs.
pub fn rpo(spec: &spec::Backup) -> Duration {
    spec.rpo.unwrap_or_else(|| 2 * interval(&spec.schedule))
}

/// The time between the next two runs of `schedule` (a day when it never fires).
fn interval(schedule: &Schedule) -> Duration {
    let now = jiff::Zoned::now();
    let next = schedule.next_after(&now);
    let after = next.as_ref().and_then(|n| schedule.next_after(n));
    match (next, after) {
        (Some(a), Some(b)) => b
            .duration_since(&a)
            .try_into()
            .unwrap_or(Duration::from_secs(86_400)),
        _ => Duration::from_secs(86_400),
    }
}

impl Backups {
    /// Starts the schedules and RPO watches of every backup. The tasks run until aborted.
    pub fn start(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for (name, job) in &self.inner.jobs {
            // Damage found before a restart is still there: its alert fires again.
            let damaged = job.record().damaged_packs.len();
            if damaged > 0 {
                let summary = format!(
                    "backup `{name}`: {damaged} damaged pack(s) found by an earlier \
                     verification are still in the repository"
                );
                self.inner
                    .host
                    .alert(name, crate::engine::CORRUPT, Urgency::Page, Some(summary));
            }
            let me = self.clone();
            let n = name.clone();
            tasks.push(cron(job.spec.schedule.clone(), move || {
                let (me, n) = (me.clone(), n.clone());
                async move {
                    let _ = me.run(&n).await;
                }
            }));
            let (me, n) = (self.clone(), name.clone());
            tasks.push(cron(job.spec.verify.schedule.clone(), move || {
                let (me, n) = (me.clone(), n.clone());
                async move {
                    if let Err(e) = me.verify(&n).await {
                        tracing::warn!(backup = %n, error = %e, "verification failed to run");
                    }
                }
            }));
            if let Some(drill) = &job.spec.drill {
                let (me, n) = (self.clone(), name.clone());
                tasks.push(cron(drill.schedule.clone(), move || {
                    let (me, n) = (me.clone(), n.clone());
                    async move {
                        if let Err(e) = me.drill(&n).await {
                            tracing::warn!(backup = %n, error = %e, "restore drill failed");
                        }
                    }
                }));
            }
            tasks.push(tokio::spawn(watch_rpo(self.clone(), job.clone())));
        }
        tasks
    }
}

/// Calls `op` at every time of `schedule`, one call at a time (a run that overlaps the
/// next time delays it rather than stacking up).
fn cron<F, Fut>(schedule: Schedule, op: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            let now = jiff::Zoned::now();
            let Some(next) = schedule.next_after(&now) else {
                tracing::warn!(
                    schedule = schedule.as_str(),
                    "the schedule never fires again"
                );
                return;
            };
            let wait: Duration = next.duration_since(&now).try_into().unwrap_or_default();
            tokio::time::sleep(wait).await;
            op().await;
        }
    })
}

/// Raises the RPO alert when the newest verified snapshot (or, before the first one, the
/// start) is older than the RPO; resolves it when a newer one arrives.
async fn watch_rpo(backups: Backups, job: Arc<Job>) {
    let rpo = rpo(&job.spec);
    let started_ms = now_ms();
    let name = job.spec.name.clone();
    let mut raised = false;
    loop {
        // Registered before the record is read, so a change in between is not missed.
        let changed = job.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let newest = job.record().newest_verified().map(|(_, t)| t);
        let since = newest.unwrap_or(started_ms);
        let deadline_ms = since.saturating_add(rpo.as_millis() as u64);
        let now = now_ms();
        if now >= deadline_ms {
            if !raised {
                let age = Duration::from_millis(now.saturating_sub(since) / 1000 * 1000);
                let summary = match newest {
                    Some(_) => format!(
                        "backup `{name}`: the newest verified snapshot is {} old (RPO {})",
                        humantime::format_duration(age),
                        humantime::format_duration(rpo)
                    ),
                    None => format!(
                        "backup `{name}`: no verified snapshot in the {} since bulwark started (RPO {})",
                        humantime::format_duration(age),
                        humantime::format_duration(rpo)
                    ),
                };
                tracing::error!(backup = %name, %summary, "RPO exceeded");
                backups
                    .inner
                    .host
                    .alert(&name, RPO, Urgency::Page, Some(summary));
                raised = true;
            }
            changed.await;
            continue;
        }
        if raised {
            backups.inner.host.alert(&name, RPO, Urgency::Page, None);
            raised = false;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(deadline_ms - now)) => {}
            _ = &mut changed => {}
        }
    }
}
