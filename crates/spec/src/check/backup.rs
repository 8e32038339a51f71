//! `[[backups]]`: unique names, exactly one source, a service that exists, paths resolved
//! against its working directory, and a drill with exactly one check.

use std::path::{Path, PathBuf};

use crate::keys::{BackupTable, DrillTable};
use crate::model::{Backup, BackupSource, Drill, DrillCheck, Service};
use crate::problem::Problems;
use crate::schema::Field;

/// Every backup checked against the stack's services.
pub(super) fn backups(
    list: &Field<Vec<BackupTable>>,
    services: &[&Service],
    base_dir: &Path,
    p: &mut Problems,
) -> Option<Vec<Backup>> {
    super::duplicate_names(
        list.value()
            .into_iter()
            .flatten()
            .filter_map(|raw| raw.name.given()),
        |n| format!("duplicate backup name `{n}`: each [[backups]] needs a name of its own"),
        p,
    );
    super::each(list, |raw| backup(raw, services, base_dir, p))
}

fn backup(
    raw: &BackupTable,
    services: &[&Service],
    base_dir: &Path,
    p: &mut Problems,
) -> Option<Backup> {
    let source = source(raw, services, p);
    let drill = match raw.drill.given() {
        Some(d) => Some(drill(d.get_ref(), raw, p)?),
        None => None,
    };
    let hooks = raw.hooks.value()?;
    let keep = raw.keep.value()?.build()?;
    if keep
        == (crate::model::Keep {
            last: 0,
            hourly: 0,
            daily: 0,
            weekly: 0,
            monthly: 0,
            yearly: 0,
        })
    {
        return p.fail(
            raw.keep.span().unwrap_or(raw.span.clone()),
            format!(
                "{}: every keep rule is 0, so each backup would remove all but the newest \
                 verified snapshot; keep at least `last = 1`",
                raw.label
            ),
        );
    }
    never_idle(&raw.schedule, "schedule", p)?;
    never_idle(&raw.verify.value()?.schedule, "verify.schedule", p)?;
    let source = source?;
    inside_saved(&source, base_dir.join(raw.repository.get()?), raw, p)?;
    Some(Backup {
        name: raw.name.get()?,
        source,
        schedule: raw.schedule.get()?,
        repository: base_dir.join(raw.repository.get()?),
        password_file: base_dir.join(raw.password_file.get()?),
        rpo: raw.rpo.get(),
        rto: raw.rto.get(),
        pre: optional_hook(&hooks.pre)?,
        post: optional_hook(&hooks.post)?,
        keep,
        verify: crate::model::Verify {
            schedule: raw.verify.value()?.schedule.get()?,
            parts: raw.verify.value()?.parts.get()?,
        },
        drill,
    })
}

/// A schedule that never fires again (30 February) would leave a backup that never runs.
pub(super) fn never_idle(
    schedule: &Field<crate::model::Schedule>,
    key: &str,
    p: &mut Problems,
) -> Option<()> {
    let Some(s) = schedule.given() else {
        return Some(()); // a default fires, and a missing one was reported
    };
    if s.get_ref().next_after(&jiff::Zoned::now()).is_some() {
        return Some(());
    }
    p.fail(
        s.span(),
        format!("`{key}` = \"{}\" never fires", s.get_ref().as_str()),
    )
}

/// A repository inside what it saves would save its own packs again in every snapshot.
fn inside_saved(
    source: &BackupSource,
    repository: PathBuf,
    raw: &BackupTable,
    p: &mut Problems,
) -> Option<()> {
    let BackupSource::Service { paths, .. } = source else {
        return Some(());
    };
    let repo = lexical(&std::path::absolute(&repository).unwrap_or(repository));
    let Some(saved) = paths.iter().find(|saved| {
        repo.starts_with(lexical(
            &std::path::absolute(saved).unwrap_or_else(|_| (*saved).clone()),
        ))
    }) else {
        return Some(());
    };
    p.fail(
        raw.repository.span().unwrap_or(raw.span.clone()),
        format!(
            "`repository` is inside the saved path {}: every snapshot would save the \
             repository again; put it elsewhere",
            saved.display()
        ),
    )
}

/// `path` with `.` and `..` resolved without touching the file system.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A hook left out is `Some(None)`; one that failed is `None`.
fn optional_hook(raw: &Field<crate::keys::HookTable>) -> Option<Option<crate::model::Hook>> {
    match raw.given() {
        None => Some(None),
        Some(h) => h.get_ref().build().map(Some),
    }
}

/// `service` with `paths`, or `state = true`; the service must exist.
fn source(raw: &BackupTable, services: &[&Service], p: &mut Problems) -> Option<BackupSource> {
    let state = raw.state.get()?;
    if state {
        if let Some(span) = raw.service.span().or(raw.paths.span()) {
            return p.fail(
                span,
                format!(
                    "{}: `state = true` saves bulwark's own journal; remove `service` and \
                     `paths`, or make it a separate [[backups]] entry",
                    raw.label
                ),
            );
        }
        return Some(BackupSource::State);
    }
    let Some(name) = raw.service.given() else {
        if !raw.service.is_present() {
            p.push(
                raw.span.clone(),
                format!(
                    "{} needs `service = \"NAME\"` with `paths = [...]`, or `state = true` \
                     for bulwark's own journal",
                    raw.label
                ),
            );
        }
        return None;
    };
    let Some(service) = services.iter().find(|s| &s.name == name.get_ref()) else {
        let names = services.iter().map(|s| s.name.as_str());
        let hint = crate::problem::suggest(name.get_ref(), names)
            .map(|m| format!("; did you mean `{m}`?"))
            .unwrap_or_default();
        return p.fail(
            name.span(),
            format!("backup of unknown service `{}`{hint}", name.get_ref()),
        );
    };
    let Some(paths) = raw.paths.given() else {
        if !raw.paths.is_present() {
            p.push(
                raw.span.clone(),
                format!(
                    "{} needs `paths = [...]`: the directories or files of `{}` to save",
                    raw.label, service.name
                ),
            );
        }
        return None;
    };
    // Where the service itself runs: its `cwd`, else bulwark's own working directory
    // (a relative path stays relative and resolves there, as the service's own would).
    let dir: PathBuf = service.cwd.clone().unwrap_or_default();
    Some(BackupSource::Service {
        service: service.name.clone(),
        paths: paths.get_ref().iter().map(|path| dir.join(path)).collect(),
    })
}

/// Exactly one of `check` and `http`; a drill needs a service to start.
fn drill(raw: &DrillTable, backup: &BackupTable, p: &mut Problems) -> Option<Drill> {
    if backup.state.get() == Some(true) {
        return p.fail(
            raw.span.clone(),
            format!(
                "{} restores a service's data into a scratch replica, and `state = true` has \
                 no service; verification already reads the journal's backups back",
                raw.label
            ),
        );
    }
    let check = match (raw.check.is_present(), raw.http.is_present()) {
        (true, false) => DrillCheck::Command(raw.check.get()?),
        (false, true) => DrillCheck::Http(raw.http.get()?),
        _ => {
            return p.fail(
                raw.span.clone(),
                format!(
                    "{} needs exactly one of `check = [\"cmd\", \"arg\"]` (passes on exit 0) \
                     or `http = \"/path\"` (passes on 2xx)",
                    raw.label
                ),
            );
        }
    };
    never_idle(&raw.schedule, "drill.schedule", p)?;
    Some(Drill {
        schedule: raw.schedule.get()?,
        check,
        run: raw.run.given().map(|r| r.get_ref().clone()),
        timeout: raw.timeout.get()?,
    })
}
