//! Revisions in the journal: one record per rollout, in the `rollouts` namespace, keyed
//! `SERVICE/REVISION` (zero-padded, so a listing is in order).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

const NAMESPACE: &str = "rollouts";
/// Records kept in memory besides the journal (the newest).
const IN_MEMORY: usize = 200;

/// A revision of a service, as `bulwark rollout history` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    /// The service.
    pub service: String,
    /// Its number (1: what `up` started with).
    pub revision: u32,
    /// The revision it replaced.
    pub from: u32,
    /// `rolling`, `canary`, `blue-green`, or `initial`.
    pub strategy: String,
    /// What changed from `from`, a line per setting.
    pub changes: Vec<String>,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// When it ended, if it has.
    pub ended_ms: Option<u64>,
    /// `progressing`, `completed`, `rolled-back`, `aborted`, or `interrupted` (by a stop
    /// of `up`).
    pub outcome: String,
    /// Why it failed or was aborted.
    pub reason: Option<String>,
    /// What started it: `up`, `reload`, `start`, `undo to N`.
    pub trigger: String,
    /// A hash of what its processes run: an `up` with the same settings keeps the number.
    #[serde(default)]
    pub fingerprint: String,
}

/// Reads and writes revision records; without a journal they live in memory only.
pub(crate) struct Records {
    store: Option<Arc<dyn store::Store>>,
    memory: std::sync::Mutex<Vec<Revision>>,
}

fn key(service: &str, revision: u32) -> String {
    format!("{service}/{revision:010}")
}

impl Records {
    pub fn new(store: Option<Arc<dyn store::Store>>) -> Records {
        Records {
            store,
            memory: Default::default(),
        }
    }

    /// Stores `r` (a failure is logged: the journal reports its own health). The write
    /// goes to the blocking pool when called on the runtime.
    pub fn save(&self, r: &Revision) {
        {
            let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            m.retain(|x| !(x.service == r.service && x.revision == r.revision));
            m.push(r.clone());
            if m.len() > IN_MEMORY {
                m.remove(0);
            }
        }
        let Some(store) = self.store.clone() else {
            return;
        };
        let bytes = match serde_json::to_vec(r) {
            Ok(b) => b,
            Err(e) => return tracing::warn!(error = %e, "cannot encode a revision record"),
        };
        let (service, revision) = (r.service.clone(), r.revision);
        let write = move || {
            if let Err(e) = store.put(NAMESPACE, &key(&service, revision), &bytes) {
                tracing::warn!(%service, revision, error = %e, "cannot record the revision");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(write)),
            Err(_) => write(),
        }
    }

    /// Every revision of `service`, oldest first. Reads the journal: call it off the
    /// runtime's workers.
    pub fn list(&self, service: &str) -> Vec<Revision> {
        let mut out: Vec<Revision> = match &self.store {
            Some(store) => match store.list(NAMESPACE) {
                Ok(rows) => rows
                    .into_iter()
                    .filter_map(|(_, v)| serde_json::from_slice::<Revision>(&v).ok())
                    .filter(|r| r.service == service)
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read revision records");
                    vec![]
                }
            },
            None => vec![],
        };
        for r in self
            .memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.service == service)
        {
            if !out.iter().any(|x| x.revision == r.revision) {
                out.push(r.clone());
            }
        }
        out.sort_by_key(|r| r.revision);
        out
    }
}

/// What changed between two specs of a service, a line per setting (environment
/// variables one by one).
pub fn diff(old: &spec::Service, new: &spec::Service) -> Vec<String> {
    let mut out = vec![];
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name}: {a} -> {b}"));
        }
    };
    field("run", format!("{:?}", old.run), format!("{:?}", new.run));
    field("cwd", format!("{:?}", old.cwd), format!("{:?}", new.cwd));
    field(
        "startup",
        format!("{:?}", old.startup),
        format!("{:?}", new.startup),
    );
    field(
        "liveness",
        format!("{:?}", old.liveness),
        format!("{:?}", new.liveness),
    );
    field(
        "readiness",
        format!("{:?}", old.readiness),
        format!("{:?}", new.readiness),
    );
    let keys: std::collections::BTreeSet<&String> = old.env.keys().chain(new.env.keys()).collect();
    for k in keys {
        let show =
            |v: Option<&String>| v.map_or_else(|| "(unset)".to_owned(), |v| format!("{v:?}"));
        let (a, b) = (show(old.env.get(k)), show(new.env.get(k)));
        if a != b {
            out.push(format!("env.{k}: {a} -> {b}"));
        }
    }
    // Names only: revision records are journalled and shown by `rollout history`.
    let names: std::collections::BTreeSet<&String> =
        old.secrets.keys().chain(new.secrets.keys()).collect();
    for k in names {
        let what = match (old.secrets.get(k), new.secrets.get(k)) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            (Some(a), Some(b)) if a != b => "changed",
            _ => continue,
        };
        out.push(format!("secrets.{k}: {what}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_names_each_changed_setting() {
        let load = |env: &str| {
            let toml = format!("[services.s]\nrun = [\"x\"]\nenv = {{ {env} }}\n");
            spec::parse(&toml, std::path::Path::new("t.toml"))
                .expect("valid")
                .services
                .remove(0)
        };
        let (a, mut b) = (load("A = \"1\", B = \"x\""), load("A = \"2\", C = \"y\""));
        b.run.push("--fast".into());
        assert_eq!(
            diff(&a, &b),
            [
                r#"run: ["x"] -> ["x", "--fast"]"#,
                r#"env.A: "1" -> "2""#,
                r#"env.B: "x" -> (unset)"#,
                r#"env.C: (unset) -> "y""#,
            ]
        );
        assert!(diff(&a, &a).is_empty());
    }
}
