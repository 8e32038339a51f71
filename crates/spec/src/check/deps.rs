//! Rules across services: `depends_on` (unknown names, cycles, start order), address
//! clashes and route targets.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::service::Checked;
use crate::problem::{Problems, hint};

/// Resolves `depends_on`, reports unknown names and cycles, and returns the indices of
/// `services` in dependency order: dependencies first, ties in file order (so the
/// order is predictable and matches the file when there are no dependencies).
pub(super) fn dependency_order(services: &mut [Checked], p: &mut Problems) -> Vec<usize> {
    let names: Vec<String> = services.iter().map(|c| c.service.name.clone()).collect();

    // deps[i]: services i depends on (edges i -> j).
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); services.len()];
    for (i, checked) in services.iter_mut().enumerate() {
        let own = &checked.service.name;
        for dep in checked.raw.depends_on.value().into_iter().flatten() {
            let d = dep.get_ref();
            let problem = match names.iter().position(|n| n == d) {
                _ if d == own => format!("service `{own}` depends on itself"),
                Some(j) if deps[i].contains(&j) => format!("`{d}` is listed twice in `depends_on`"),
                Some(j) => {
                    deps[i].push(j);
                    checked.service.depends_on.push(d.clone());
                    continue;
                }
                None => {
                    let others = names.iter().map(String::as_str).filter(|n| n != own);
                    let others: Vec<&str> = others.collect();
                    let hint = hint(d, &others, "services are");
                    format!("`depends_on` names unknown service `{d}`{hint}")
                }
            };
            p.push(dep.span(), problem);
        }
    }

    // Always the earliest service in file order whose dependencies all come before it
    // (a scan per service: quadratic at worst, for thousands of services).
    let mut placed = vec![false; services.len()];
    let mut order = Vec::with_capacity(services.len());
    while let Some(i) =
        (0..services.len()).find(|&i| !placed[i] && deps[i].iter().all(|&j| placed[j]))
    {
        placed[i] = true;
        order.push(i);
    }

    // Services left out are on or behind a cycle. Each set of services on cycles through
    // each other is reported once, from its first service in file order, with the shortest
    // cycle through it, which one edit breaks. A search per service left out is quadratic
    // at worst, for thousands of services behind a cycle.
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); services.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &j in ds {
            dependents[j].push(i);
        }
    }
    let mut reported = placed;
    for start in 0..services.len() {
        if reported[start] {
            continue;
        }
        let from = search(start, &deps);
        // The service before `start` on its shortest cycle; none: it is behind a cycle.
        let Some(last) = from[start] else {
            continue;
        };
        let to = search(start, &dependents);
        for i in 0..services.len() {
            reported[i] |= from[i].is_some() && to[i].is_some();
        }
        let back = std::iter::successors(Some(last), |&i| from[i].filter(|_| i != start));
        let mut cycle: Vec<&str> = back.map(|i| names[i].as_str()).collect();
        cycle.reverse();
        cycle.push(&names[start]);
        let span = services[start].raw.depends_on.span().unwrap_or_default();
        p.push(span, format!("dependency cycle: {}", cycle.join(" -> ")));
    }
    order
}

/// Breadth-first from `start` along `edges` (iteratively, so that a long dependency chain
/// in a generated file cannot overflow the stack): each node reached, with the node it was
/// first reached from. `start` itself is reached only through a cycle, and then from the
/// last node of the shortest one.
fn search(start: usize, edges: &[Vec<usize>]) -> Vec<Option<usize>> {
    let mut from = vec![None; edges.len()];
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &next in &edges[node] {
            if from[next].is_none() {
                from[next] = Some(node);
                queue.push_back(next);
            }
        }
    }
    from
}

/// Two exposed services, or a service and the API, cannot listen on one address. Port 0
/// asks the OS for a free port, so it never clashes. An unspecified IP (`0.0.0.0`, `::`)
/// binds every interface, so it clashes with any address on the same port.
///
/// The exception: TCP services that pass TLS through share an address written alike, each
/// taking its own SNI names (`share`).
pub(super) fn check_addresses(services: &[Checked], api: Option<SocketAddr>, p: &mut Problems) {
    let clash = |a: SocketAddr, b: SocketAddr| {
        a.port() != 0
            && a.port() == b.port()
            && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
    };
    let mut seen: Vec<(SocketAddr, &Checked)> = Vec::new();
    for checked in services {
        let Some(listen) = checked.raw.expose.value().and_then(|e| e.listen.given()) else {
            continue;
        };
        let addr = *listen.get_ref();
        if let Some(api) = api
            && clash(addr, api)
        {
            p.push(
                listen.span(),
                format!(
                    "`listen` address {addr} clashes with the control API's address {api} \
                     ([api] listen); choose another port"
                ),
            );
        }
        for (other, by) in seen.iter().filter(|(other, _)| clash(addr, *other)) {
            let name = &by.service.name;
            let message = if *other != addr {
                format!("`listen` address {addr} clashes with {other}, exposed by service `{name}`")
            } else if let Some(how) = share(addr, checked, by, p) {
                format!("`listen` address {addr} is already exposed by service `{name}`{how}")
            } else {
                continue;
            };
            p.push(listen.span(), message);
            break;
        }
        seen.push((addr, checked));
    }
}

/// Two services exposed on the same `addr`: shared by passthrough TCP services, each with
/// SNI names no other claims and at most one the default (`None`, problems reported);
/// otherwise the clash is reported, with what the message should add (`Some`).
fn share(
    addr: SocketAddr,
    checked: &Checked,
    by: &Checked,
    p: &mut Problems,
) -> Option<&'static str> {
    let (Some(mine), Some(theirs)) = (&checked.sni, &by.sni) else {
        let tcp = |c: &Checked| c.service.expose.as_ref().map(|e| e.protocol);
        let tcp = [tcp(checked), tcp(by)].contains(&Some(crate::Protocol::Tcp));
        return Some(if tcp {
            " (TCP services share an address only when each passes TLS through by SNI: \
             [expose.tls] passthrough = true with its own `sni` names)"
        } else {
            ""
        });
    };
    let name = &by.service.name;
    for n in mine.names.iter().filter(|n| theirs.names.contains(n)) {
        p.push(
            mine.names_at.clone(),
            format!(
                "SNI name `{n}` on {addr} is already claimed by service `{name}`; each name \
                 goes to one service of an address"
            ),
        );
    }
    if mine.default && theirs.default {
        p.push(
            mine.default_at.clone(),
            format!(
                "service `{name}` is already the default of {addr} (it takes hellos without \
                 SNI or with a name nobody claims); one service of an address may be: give \
                 this one `sni` names, or `default = false`"
            ),
        );
    }
    None
}

/// A route sends traffic to another service that the proxy can reach: one that exists,
/// is not the service itself, and speaks HTTP (its replicas are what the route picks).
pub(super) fn check_routes(services: &[Checked], p: &mut Problems) {
    let names = services.iter().map(|c| c.service.name.as_str());
    for c in services {
        let others: Vec<&str> = names.clone().filter(|n| *n != c.service.name).collect();
        let routes = c.raw.expose.value().and_then(|e| e.routes.value());
        for t in routes.into_iter().flatten().filter_map(|r| r.to.given()) {
            let to = t.get_ref().as_str();
            let problem = if to == c.service.name {
                format!("a route of `{to}` cannot lead to `{to}` itself")
            } else if !others.contains(&to) {
                let hint = hint(to, &others, "services are");
                format!("route `to` names unknown service `{to}`{hint}")
            } else {
                continue;
            };
            p.push(t.span(), problem);
        }
    }
}
