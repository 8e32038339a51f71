//! One leader per service with `[services.NAME.leader]`: the election task.
//!
//! One task per such service follows its replicas (every status change wakes it), asks
//! `policy::leader::decide` what to do and does it, one step at a time:
//! - **depose**: the leader leaves the endpoints' leader routing first (the proxy sends
//!   it no more leader traffic from the next request on), its term is resigned, its token
//!   file says `standby`, `leader_lost` is published, then its `demote` runs;
//! - **elect**: a fresh term and token from the [`store::Election`], the token file says
//!   `leader`, `promote` runs, and only once it passed does the leader enter the
//!   endpoints' routing and `leader_elected` is published.
//!
//! A candidate refused because someone else holds the group (another agent's replica, in
//! cluster mode) waits for the group to be free ([`store::Election::wait_free`]) before it
//! campaigns again; a held term is renewed every second and at the latest when the
//! election says it may end ([`store::Election::valid_until`]: an etcd lease's fence), and
//! a renewal that says it is lost deposes the leader.
//!
//! So there is never a moment with two leaders: the old one is out of routing and demoted
//! before anyone is promoted, and a new leader gets traffic only after its promotion.
//! The term is tied to the promoted *incarnation* (its pid): a leader whose process exits
//! and is restarted comes back as a standby, and the proxy never routes leader traffic to
//! the new process in the meantime (`routing` checks the pid).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{EventKind, LeaderRouting, Leading};
use policy::leader::{self as decision, Member, Verdict};

use crate::driver::Identity;
use crate::supervisor::{ReplicaStatus, Role, ServiceEntry, Shared, publish_endpoints};

/// The leader of a service: which incarnation holds which term.
#[derive(Debug, Clone)]
pub(crate) struct Term {
    pub index: u32,
    pub pid: u32,
    pub term: store::Term,
}

/// How long an incarnation whose promotion failed is passed over: other ready standbys
/// are tried first, and a failure that passes (a database still replaying) is retried.
const PROMOTE_RETRY: Duration = Duration::from_secs(5);

/// Output kept from `promote` and `demote`, for the failure reason.
const CAPTURE: usize = 1024;

/// Starts the election task of every service with `[leader]` that has none yet (at start
/// and after a reload).
pub(crate) fn ensure_tasks(shared: &Arc<Shared>) {
    let Some(election) = shared.election.clone() else {
        return;
    };
    let wanted: Vec<String> = shared
        .lock()
        .iter()
        .filter(|(_, e)| e.spec.leader.is_some())
        .map(|(name, _)| name.clone())
        .collect();
    let mut running = shared.elections.lock().unwrap_or_else(|e| e.into_inner());
    for service in wanted {
        if running.insert(service.clone()) {
            tokio::spawn(run(shared.clone(), service, election.clone()));
        }
    }
}

/// The role and token of one replica, for `status`.
pub(crate) fn fill_role(e: &ServiceEntry, status: &mut ReplicaStatus) {
    if e.spec.leader.is_none() {
        return;
    }
    match &e.leader {
        Some(t) if t.index == status.index && status.pid == Some(t.pid) => {
            status.role = Some(Role::Leader);
            status.token = Some(t.term.token);
        }
        _ => status.role = Some(Role::Standby),
    }
}

/// What the proxy needs of the leader, for the endpoints snapshot: present for a
/// `[leader]` service, with the leader only while its promoted incarnation is ready and
/// routable.
pub(crate) fn routing(e: &ServiceEntry) -> Option<LeaderRouting> {
    let cfg = e.spec.leader.as_ref()?;
    let current = e.leader.as_ref().and_then(|t| {
        let r = e.replicas.get(&t.index)?;
        let routable = r.status.pid == Some(t.pid)
            && r.status.ready
            && !r.removing
            && !r.status.held_out
            && r.status.port.is_some();
        routable.then_some(Leading {
            replica: t.index,
            token: t.term.token,
        })
    });
    Some(LeaderRouting {
        route: cfg.route,
        current,
        held: e.leader.as_ref().map(|t| t.term.token),
    })
}

/// Where replica `index` of `svc` finds its role and token.
pub(crate) fn token_file(shared: &Shared, svc: &spec::Service, index: u32) -> Option<PathBuf> {
    let cfg = svc.leader.as_ref()?;
    Some(match &cfg.token_file {
        Some(f) => PathBuf::from(f.to_string_lossy().replace("{index}", &index.to_string())),
        None => shared.leader_dir.join(format!("{}-{index}.env", svc.name)),
    })
}

/// `svc` with `BULWARK_FENCING_TOKEN_FILE` in its environment, for a replica of a
/// `[leader]` service (and the commands run in its context).
pub(crate) fn with_token_file<'a>(
    shared: &Shared,
    svc: &'a spec::Service,
    index: u32,
) -> Cow<'a, spec::Service> {
    match token_file(shared, svc, index) {
        Some(path) => {
            let mut svc = svc.clone();
            svc.env.insert(
                "BULWARK_FENCING_TOKEN_FILE".into(),
                path.to_string_lossy().into_owned(),
            );
            Cow::Owned(svc)
        }
        None => Cow::Borrowed(svc),
    }
}

/// Writes the token file of a replica: replaced atomically (a new file renamed over the
/// old one), so a reader sees the old content or the new, never a part.
pub(crate) async fn write_token_file(path: PathBuf, token: Option<u64>) -> Result<(), String> {
    let text = match token {
        Some(t) => format!("BULWARK_ROLE=leader\nBULWARK_FENCING_TOKEN={t}\n"),
        None => "BULWARK_ROLE=standby\nBULWARK_FENCING_TOKEN=\n".to_owned(),
    };
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(text.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot write the token file {shown}: {e}"))
}

/// The election task's memory between rounds.
#[derive(Default)]
struct Round {
    term: Option<Term>,
    /// Per replica: the incarnation and readiness last seen, and since when.
    seen: BTreeMap<u32, (Option<u32>, bool, Instant)>,
    /// Incarnations whose promotion failed, and until when they are not tried again.
    refused: BTreeMap<(u32, u32), Instant>,
    /// Why the previous leader went.
    last_loss: Option<&'static str>,
    /// While someone else holds the group: the wait for it to be free.
    held: Option<tokio::task::JoinHandle<()>>,
}

/// How long one wait for a group held elsewhere lasts before the candidate asks again.
const HELD_WAIT: Duration = Duration::from_secs(30);

/// What a campaign and promotion came to.
enum Elected {
    Leader(Term),
    /// Not granted or not promoted: the candidate is passed over a while.
    Refused,
    /// Someone else holds the group: wait for it to be free.
    Held,
}

async fn run(shared: Arc<Shared>, service: String, election: Arc<dyn store::Election>) {
    let Some(mut changed) = shared.lock().get(&service).map(|e| e.changed.subscribe()) else {
        return;
    };
    let mut stop = shared.shutting_down.subscribe();
    let mut round = Round::default();
    loop {
        changed.borrow_and_update();
        let spec = shared.spec(&service);
        let cfg = spec.as_ref().and_then(|s| s.leader.clone());
        if *stop.borrow() || cfg.is_none() {
            let reason = if *stop.borrow() {
                "shutdown"
            } else {
                "removed"
            };
            if let Some(t) = round.term.take() {
                depose(&shared, &service, t, reason, &election).await;
            }
            if spec.is_none() || *stop.borrow() {
                break;
            }
        }
        let Some(cfg) = cfg else {
            // `[leader]` was removed by a reload: wait for it to come back.
            tokio::select! {
                r = changed.changed() => if r.is_err() { break },
                _ = stop.wait_for(|s| *s) => {}
            }
            continue;
        };
        if let Some(free) = round.held.as_mut() {
            tokio::select! {
                r = changed.changed() => if r.is_err() { break },
                _ = free => round.held = None,
                _ = stop.wait_for(|s| *s) => {}
            }
            continue;
        }
        let members = round.members(&shared, &service);
        let leader = round.term.as_ref().map(|t| decision::Leader {
            index: t.index,
            incarnation: t.pid,
            token: t.term.token,
        });
        let verdict = decision::decide(
            &members,
            leader.as_ref(),
            Instant::now(),
            cfg.failover_after,
        );
        match verdict {
            Verdict::Keep => {
                let lost = match &round.term {
                    Some(t) => !held(t, &election).await,
                    None => false,
                };
                if let Some(t) = round.term.take_if(|_| lost) {
                    round.last_loss = Some("lost");
                    depose(&shared, &service, t, "lost", &election).await;
                    continue;
                }
                let valid = round
                    .term
                    .as_ref()
                    .and_then(|t| election.valid_until(&t.term));
                let wake = round.wake_at(&members, leader.as_ref(), cfg.failover_after, valid);
                tokio::select! {
                    r = changed.changed() => if r.is_err() { break },
                    () = sleep_until(wake) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            }
            Verdict::Depose(loss) => {
                if let Some(t) = round.term.take() {
                    round.last_loss = Some(loss.as_str());
                    depose(&shared, &service, t, loss.as_str(), &election).await;
                }
            }
            Verdict::Elect(index) => {
                let pid = members
                    .iter()
                    .find(|m| m.index == index)
                    .and_then(|m| m.incarnation)
                    .unwrap_or_default();
                let reason = round.last_loss.unwrap_or("first");
                let elected = elect(&shared, &service, (index, pid), reason, &election).await;
                round.campaigned(elected, (index, pid), &service, &election);
            }
        }
    }
    shared
        .elections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&service);
    shared.elections_ended.notify_waiters();
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether the election still grants `t` (`renew`): a term can end without the task
/// deposing it (an etcd lease that expired); the local election's terms end only so.
async fn held(t: &Term, election: &Arc<dyn store::Election>) -> bool {
    let (e, term) = (election.clone(), t.term.clone());
    match tokio::task::spawn_blocking(move || e.renew(&term)).await {
        Ok(Ok(())) | Err(_) => true,
        Ok(Err(store::ElectionError::Lost { .. })) => false,
        Ok(Err(err)) => {
            // The store failed, not the term: keep leading and ask again next round.
            tracing::warn!(service = t.term.group, %err, "cannot renew the leader's term");
            true
        }
    }
}

/// How often a held term is renewed when nothing else wakes the task.
const RENEW_EVERY: Duration = Duration::from_secs(1);

impl Round {
    /// When to look again with no change of the replicas: the leader's unready spell
    /// passing the bound, a refused standby's retry (while nobody leads), the next renewal
    /// (while someone does: every second, and by the time the election says the term is
    /// `valid` until at the latest).
    fn wake_at(
        &self,
        members: &[Member],
        leader: Option<&decision::Leader>,
        failover_after: Duration,
        valid: Option<Instant>,
    ) -> Option<tokio::time::Instant> {
        let next = match leader {
            None => self.refused.values().min().copied(),
            Some(_) => Some(Instant::now() + RENEW_EVERY),
        };
        decision::next_check(members, leader, failover_after)
            .into_iter()
            .chain(next)
            .chain(valid)
            .min()
            .map(tokio::time::Instant::from_std)
    }

    /// Takes in what the campaign of `(index, pid)` came to.
    fn campaigned(
        &mut self,
        elected: Elected,
        (index, pid): (u32, u32),
        service: &str,
        election: &Arc<dyn store::Election>,
    ) {
        match elected {
            Elected::Leader(t) => self.term = Some(t),
            Elected::Refused => {
                self.refused
                    .insert((index, pid), Instant::now() + PROMOTE_RETRY);
            }
            Elected::Held => {
                let (e, group) = (election.clone(), service.to_owned());
                self.held = Some(tokio::task::spawn_blocking(move || {
                    if let Err(err) = e.wait_free(&group, HELD_WAIT) {
                        tracing::debug!(service = group, %err, "waiting for the leadership");
                    }
                }));
            }
        }
    }

    /// The replicas as the decision sees them; readiness spells are timed from when this
    /// task first saw them (it wakes on every change, so that is when they began).
    fn members(&mut self, shared: &Shared, service: &str) -> Vec<Member> {
        let now = Instant::now();
        let services = shared.lock();
        let Some(e) = services.get(service) else {
            return Vec::new();
        };
        let members: Vec<Member> = e
            .replicas
            .values()
            .map(|r| {
                let s = &r.status;
                let ready = s.ready && !r.removing && !s.held_out && s.port.is_some();
                let since = match self.seen.get(&s.index) {
                    Some(&(pid, was, since)) if pid == s.pid && was == ready => since,
                    _ => now,
                };
                self.seen.insert(s.index, (s.pid, ready, since));
                Member {
                    index: s.index,
                    incarnation: s.pid,
                    ready,
                    since,
                    refused: s
                        .pid
                        .is_some_and(|p| self.refused.get(&(s.index, p)).is_some_and(|&t| now < t)),
                }
            })
            .collect();
        self.seen.retain(|i, _| e.replicas.contains_key(i));
        self.refused.retain(|(i, p), until| {
            now < *until && e.replicas.get(i).is_some_and(|r| r.status.pid == Some(*p))
        });
        members
    }
}

/// Sets (or clears) the service's leader and republishes its endpoints.
fn set_leader(shared: &Shared, service: &str, term: Option<Term>) {
    let mut services = shared.lock();
    if let Some(e) = services.get_mut(service) {
        e.leader = term;
        publish_endpoints(e);
        e.changed.send_modify(|v| *v += 1);
    }
}

/// Takes the leader out of routing, ends its term and demotes it.
async fn depose(
    shared: &Arc<Shared>,
    service: &str,
    t: Term,
    reason: &str,
    election: &Arc<dyn store::Election>,
) {
    set_leader(shared, service, None);
    shared.metrics.leader(service, None);
    let term = t.term.clone();
    let e = election.clone();
    if let Ok(Err(err)) = tokio::task::spawn_blocking(move || e.resign(&term)).await {
        tracing::warn!(service, index = t.index, %err, "cannot resign the leader's term");
    }
    tracing::warn!(
        service,
        index = t.index,
        token = t.term.token,
        reason,
        "leader lost"
    );
    shared.bus.publish(EventKind::LeaderLost {
        service: service.into(),
        index: t.index,
        token: t.term.token,
        reason: reason.into(),
    });
    let Some(svc) = shared.replica_spec(service, t.index) else {
        return;
    };
    if let Some(path) = token_file(shared, &svc, t.index)
        && let Err(err) = write_token_file(path, None).await
    {
        tracing::warn!(service, index = t.index, %err, "demoting the leader");
    }
    if let Some(cfg) = &svc.leader
        && let Some(argv) = &cfg.demote
        && let Err(err) = hook(shared, &svc, argv, t.index, ("standby", t.term.token)).await
    {
        tracing::warn!(service, index = t.index, %err, "the demote command failed");
    }
}

/// Grants replica `index` (incarnation `pid`) a term and promotes it (it stays a standby
/// if that failed).
async fn elect(
    shared: &Arc<Shared>,
    service: &str,
    (index, pid): (u32, u32),
    reason: &str,
    election: &Arc<dyn store::Election>,
) -> Elected {
    let Some(svc) = shared.replica_spec(service, index) else {
        return Elected::Refused;
    };
    let e = election.clone();
    let (group, holder) = (service.to_owned(), format!("{service}/{index}"));
    let term = match tokio::task::spawn_blocking(move || e.campaign(&group, &holder)).await {
        Ok(Ok(term)) => term,
        Ok(Err(store::ElectionError::Held { holder, token, .. })) => {
            tracing::debug!(service, index, %holder, token, "the leadership is held elsewhere");
            return Elected::Held;
        }
        Ok(Err(err)) => {
            tracing::error!(service, index, %err, "cannot take the leadership");
            // Not this replica's fault: try again a little later.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Elected::Refused;
        }
        Err(_) => return Elected::Refused,
    };
    let token = term.token;
    let promoted = promote(shared, &svc, index, token).await;
    if let Err(error) = promoted {
        let e = election.clone();
        let ended = term.clone();
        let _ = tokio::task::spawn_blocking(move || e.resign(&ended)).await;
        if let Some(path) = token_file(shared, &svc, index) {
            let _ = write_token_file(path, None).await;
        }
        tracing::warn!(service, index, token, %error, "promotion failed; the replica stays a standby");
        shared.bus.publish(EventKind::PromoteFailed {
            service: service.into(),
            index,
            token,
            error,
        });
        return Elected::Refused;
    }
    let t = Term { index, pid, term };
    set_leader(shared, service, Some(t.clone()));
    shared.metrics.leader(service, Some(token));
    tracing::info!(service, index, token, reason, "leader elected");
    shared.bus.publish(EventKind::LeaderElected {
        service: service.into(),
        index,
        token,
        reason: reason.into(),
    });
    Elected::Leader(t)
}

/// Writes the new leader's token file, then runs its `promote`.
async fn promote(
    shared: &Shared,
    svc: &spec::Service,
    index: u32,
    token: u64,
) -> Result<(), String> {
    if let Some(path) = token_file(shared, svc, index) {
        write_token_file(path, Some(token)).await?;
    }
    match svc.leader.as_ref().and_then(|c| c.promote.as_ref()) {
        Some(argv) => hook(shared, svc, argv, index, ("leader", token)).await,
        None => Ok(()),
    }
}

/// Runs `promote` or `demote` in replica `index`'s context with its role and token.
async fn hook(
    shared: &Shared,
    svc: &spec::Service,
    argv: &[String],
    index: u32,
    (role, token): (&str, u64),
) -> Result<(), String> {
    let (addr, port) = shared
        .lock()
        .get(&svc.name)
        .and_then(|e| e.replicas.get(&index))
        .map_or((None, None), |r| (r.status.addr, r.status.port));
    let limit = svc
        .leader
        .as_ref()
        .map_or(Duration::from_secs(10), |c| c.command_timeout);
    let id = Identity {
        service: &svc.name,
        index,
        addr: addr.unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
        port: port.unwrap_or(0),
        bulwark: &shared.bulwark,
    };
    let with_file = with_token_file(shared, svc, index);
    let mut cmd = crate::command(&with_file, argv, &id).map_err(|e| e.to_string())?;
    cmd.env("BULWARK_ROLE", role)
        .env("BULWARK_FENCING_TOKEN", token.to_string());
    let redactor = crate::Redactor::of(svc);
    launch::run_exec(cmd, None, limit, CAPTURE)
        .await
        .map_err(|e| format!("cannot start {:?}: {e}", argv[0]))?
        .passed(limit)
        .map_err(|e| redactor.text(&e))
}

#[cfg(test)]
mod tests {
    use crate::supervisor::ServiceEntry;

    #[test]
    fn a_leader_service_with_no_replica_here_routes_to_the_leader_from_the_first_snapshot() {
        let text = "[services.db]\nrun = [\"db\"]\nreplicas = 0\n[services.db.expose]\n\
                    listen = \"127.0.0.1:7000\"\nprotocol = \"tcp\"\n[services.db.leader]\n";
        let stack = spec::parse(text, std::path::Path::new("t.toml")).unwrap();
        let e = ServiceEntry::new(&stack.services[0], 10, false);
        let snap = e.endpoints.borrow().clone();
        let l = snap
            .leader
            .clone()
            .expect("leader routing in the first snapshot");
        assert_eq!(l.route, spec::LeaderRoute::Leader);
        assert_eq!((l.current, l.held), (None, None));
        assert!(snap.leader_only().is_empty());
    }
}
