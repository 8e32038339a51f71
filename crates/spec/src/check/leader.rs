//! `[services.NAME.leader]`: what it needs of the rest of the service.

use std::path::Path;

use crate::keys::ServiceTable;
use crate::keys::leader::{Leader, LeaderRoute};
use crate::model::{Expose, Protocol};
use crate::problem::Problems;

/// The checked `[leader]` of service `name` (`raw`), which has `expose` if exposed;
/// a relative `token_file` is joined onto its `cwd` (itself relative to `base_dir`).
pub(super) fn leader(
    name: &str,
    raw: &ServiceTable,
    expose: Option<&Expose>,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<Leader> {
    let field = &raw.leader;
    let expose = expose.map(|e| e.protocol);
    let replicas = raw.replicas.get();
    let cwd = raw.cwd.given().map(|c| base_dir.join(c.get_ref()));
    let spanned = field.given()?;
    let t = spanned.get_ref();
    let route = match (t.route.given(), expose) {
        (Some(r), None) if *r.get_ref() != LeaderRoute::All => {
            p.push(
                r.span(),
                format!(
                    "{}: route = \"{}\" needs the proxy, but service `{name}` has no \
                     [services.{name}.expose]; add one with a `listen` address, or remove \
                     `route` (the leader is then reached directly, through its token file)",
                    t.label,
                    r.get_ref().as_str()
                ),
            );
            LeaderRoute::All
        }
        (Some(r), Some(Protocol::Tcp)) if *r.get_ref() == LeaderRoute::Writes => {
            p.push(
                r.span(),
                format!(
                    "{}: route = \"writes\" tells reads from writes by HTTP method; service \
                     `{name}` is exposed with protocol = \"tcp\", whose connections have \
                     none; use route = \"leader\" (every connection to the leader) or \
                     \"all\"",
                    t.label
                ),
            );
            LeaderRoute::All
        }
        (Some(r), _) => *r.get_ref(),
        (None, Some(_)) => LeaderRoute::Leader,
        (None, None) => LeaderRoute::All,
    };
    match replicas {
        // A warning, not an error: a cluster agent's copy of the stack has replicas = 0
        // on a node where none is placed, and its proxy still routes to the leader that
        // runs elsewhere.
        Some(0) => p.warn(
            spanned.span(),
            format!(
                "{}: service `{name}` has replicas = 0, so nothing here can lead (a cluster \
                 node without one of its replicas routes to the leader elsewhere); set \
                 replicas = 2 or more (one leader, standbys to take over)",
                t.label
            ),
        ),
        None | Some(1) => p.warn(
            spanned.span(),
            format!(
                "{}: service `{name}` has one replica, so there is no standby to take over \
                 when the leader fails; set replicas = 2 or more",
                t.label
            ),
        ),
        _ => {}
    }
    let token_file = t.token_file.get().map(|f| match &cwd {
        Some(dir) => dir.join(f),
        None => f.into(),
    });
    Some(Leader {
        promote: t.promote.get(),
        demote: t.demote.get(),
        command_timeout: t.command_timeout.get()?,
        route,
        failover_after: t.failover_after.get()?,
        token_file,
    })
}

#[cfg(test)]
mod tests {
    use crate::LeaderRoute;

    fn load(service: &str) -> Result<crate::Service, String> {
        crate::parse(service, std::path::Path::new("stack.toml"))
            .map(|mut s| s.services.remove(0))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_leader_defaults_to_leader_routing_when_exposed_and_none_otherwise() {
        let s = load(
            "[services.db]\nrun = [\"db\"]\nreplicas = 3\n[services.db.expose]\nlisten = \
             \"127.0.0.1:7000\"\n[services.db.leader]\npromote = [\"sh\", \"-c\", \"true\"]\n",
        )
        .expect("valid");
        let l = s.leader.expect("a leader");
        assert_eq!(l.route, LeaderRoute::Leader);
        assert_eq!(
            l.promote.as_deref(),
            Some(&["sh".to_owned(), "-c".into(), "true".into()][..])
        );
        assert_eq!(l.failover_after, std::time::Duration::from_secs(3));
        let s = load("[services.db]\nrun = [\"db\"]\nreplicas = 2\n[services.db.leader]\n")
            .expect("valid");
        assert_eq!(s.leader.expect("a leader").route, LeaderRoute::All);
    }

    #[test]
    fn route_without_a_proxy_is_refused_and_no_replica_warned_with_what_to_do() {
        let e = load(
            "[services.db]\nrun = [\"db\"]\nreplicas = 2\n[services.db.leader]\nroute = \"writes\"\n",
        )
        .expect_err("no proxy");
        assert!(e.contains("stack.toml:5:"), "{e}");
        assert!(e.contains("route = \"writes\" needs the proxy"), "{e}");
        assert!(e.contains("[services.db.expose]"), "{e}");
        let path = std::path::Path::new("stack.toml");
        let zero = "[services.db]\nrun = [\"db\"]\nreplicas = 0\n[services.db.leader]\n";
        let loaded = crate::parse_with_warnings(zero, path).expect("a warning only");
        let w = format!("{:?}", loaded.warnings);
        assert!(w.contains("nothing here can lead"), "{w}");
        let e = load("[services.db]\nrun = [\"db\"]\nreplicas = 2\n[services.db.leader]\nroute = \"primary\"\n")
            .expect_err("unknown route");
        assert!(e.contains("\"leader\""), "{e}");
    }
}
