//! How a service is kept running: `restart`, `deploy.restart_policy` and the replica count
//! (`deploy.replicas`, `scale`).

use crate::command::compose_variable;
use crate::fields::Fields;
use crate::note::Notes;
use crate::stack::{self, Restart, Service};
use crate::yaml::Node;

/// `restart`, or `deploy.restart_policy.condition` (read by `deploy`).
pub(super) fn restart(f: &mut Fields<'_>, s: &mut Service, notes: &mut Notes) {
    let path = f.path("restart");
    let Some(node) = f.take("restart") else {
        let policy = f
            .peek("deploy")
            .and_then(|d| d.get("restart_policy")?.get("condition"));
        if policy.is_some() {
            return; // `deploy` reads it.
        }
        notes.changed(
            path,
            "not set: Compose does not restart the service; bulwark's default restarts it \
             always (set restart = \"never\" to keep Compose's behaviour)",
        );
        return;
    };
    // `restart: no` unquoted is the string "no" in YAML 1.2, `false` in YAML 1.1.
    let text = match node.as_bool() {
        Some(false) => "no",
        _ => node.as_str().unwrap_or_default(),
    };
    s.restart = match text {
        "no" => Some(Restart::Never),
        "always" => Some(Restart::Always),
        "on-failure" => Some(Restart::OnFailure),
        "unless-stopped" => {
            notes.changed(
                path,
                "\"unless-stopped\" became \"always\": bulwark restarts until it stops the stack",
            );
            Some(Restart::Always)
        }
        t if t.starts_with("on-failure:") => {
            notes.changed(
                path,
                format!(
                    "{t:?} became \"on-failure\": bulwark keeps restarting with backoff, with no \
                     maximum"
                ),
            );
            Some(Restart::OnFailure)
        }
        _ => {
            let why = compose_variable(node).unwrap_or_else(|| {
                format!(
                    "expected \"no\", \"always\", \"on-failure[:N]\" or \"unless-stopped\", found {}",
                    node.describe()
                )
            });
            notes.not_carried(path, why);
            None
        }
    };
}

pub(super) fn deploy(node: &Node, path: &str, s: &mut Service, notes: &mut Notes) {
    let Some(mut f) = Fields::of(node, path, notes) else {
        return;
    };
    if let Some(n) = f.take("replicas") {
        s.replicas = replicas(n, &f.path("replicas"), notes);
    }
    if let Some(policy) = f.take("restart_policy") {
        restart_policy(policy, &f.path("restart_policy"), s, notes);
    }
    f.note_rest(notes, |key, _| match key {
        "resources" => "resource limits come with container support".to_owned(),
        "mode" | "placement" | "endpoint_mode" => "bulwark runs on one host".to_owned(),
        "update_config" | "rollback_config" => "rollouts come later".to_owned(),
        _ => "bulwark has no equivalent".to_owned(),
    });
}

/// `deploy.restart_policy`: its condition when `restart` is not set.
fn restart_policy(node: &Node, path: &str, s: &mut Service, notes: &mut Notes) {
    let Some(mut f) = Fields::of(node, path, notes) else {
        return;
    };
    if let Some(c) = f.take("condition") {
        let p = f.path("condition");
        let policy = match c.as_str() {
            Some("none") => Some(Restart::Never),
            Some("on-failure") => Some(Restart::OnFailure),
            Some("any") => Some(Restart::Always),
            _ => None,
        };
        match (policy, s.restart) {
            (None, restart) => {
                // Without `restart`, bulwark's default applies: say so, as `restart` does.
                let default = if restart.is_none() {
                    "; `restart` is not set either, so bulwark's default restarts it always \
                     (set restart = \"never\" or \"on-failure\" to choose)"
                } else {
                    ""
                };
                let why = compose_variable(c).unwrap_or_else(|| {
                    format!(
                        "expected \"none\", \"on-failure\" or \"any\", found {}",
                        c.describe()
                    )
                });
                notes.not_carried(p, format!("{why}{default}"));
            }
            (Some(_), Some(_)) => notes.not_carried(p, "`restart` is used instead"),
            (Some(r), None) => s.restart = Some(r),
        }
    }
    f.note_rest(notes, |_, _| {
        "bulwark restarts with its own backoff (`backoff.initial`, `backoff.max`), forever"
            .to_owned()
    });
}

/// A replica count from `deploy.replicas` or `scale`.
pub(super) fn replicas(node: &Node, path: &str, notes: &mut Notes) -> Option<u32> {
    if let Some(why) = compose_variable(node) {
        notes.not_carried(path, why);
        return None;
    }
    stack::replicas(node)
        .map_err(|why| notes.not_carried(path, why))
        .ok()
}
