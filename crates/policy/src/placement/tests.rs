use std::collections::BTreeMap;

use super::*;

fn node(name: &str, zone: &str) -> Node {
    Node {
        name: name.to_owned(),
        labels: BTreeMap::from([("zone".to_owned(), zone.to_owned())]),
        alive: true,
        capacity: Resources::UNLIMITED,
    }
}

fn service(name: &str, replicas: u32) -> Service {
    Service {
        name: name.to_owned(),
        replicas,
        request: Resources::default(),
        rules: Rules::default(),
    }
}

fn constraint(label: &str, op: Op, value: &str) -> Constraint {
    Constraint {
        label: label.to_owned(),
        op,
        value: value.to_owned(),
    }
}

/// Replicas per node name, for one service.
fn per_node(p: &Placement, service: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for (r, n) in p {
        if r.service == service {
            *out.entry(n.clone()).or_default() += 1;
        }
    }
    out
}

fn replica(service: &str, index: u32) -> Replica {
    Replica {
        service: service.to_owned(),
        index,
    }
}

#[test]
fn six_replicas_on_three_nodes_are_two_each_and_two_zones_share_four() {
    let nodes = [node("a", "z1"), node("b", "z2"), node("c", "z3")];
    let d = place(&nodes, &[service("web", 6)], &Placement::new());
    let counts: Vec<u32> = per_node(&d.placement, "web").into_values().collect();
    assert_eq!(counts, [2, 2, 2]);
    assert_eq!(d.moves.len(), 6);
    assert!(
        d.moves
            .iter()
            .all(|m| m.from.is_none() && m.why == Why::New)
    );
    assert!(d.unplaced.is_empty());

    // Node first, then zone: the second replica goes to the other zone.
    let nodes = [
        node("a", "z1"),
        node("b", "z1"),
        node("c", "z2"),
        node("d", "z2"),
    ];
    let d = place(&nodes, &[service("web", 2)], &Placement::new());
    assert_eq!(d.placement[&replica("web", 0)], "a");
    assert_eq!(d.placement[&replica("web", 1)], "c");
}

#[test]
fn a_lost_nodes_replicas_move_to_the_others_and_nothing_else_moves() {
    let mut nodes = vec![node("a", "z1"), node("b", "z2"), node("c", "z3")];
    let services = [service("web", 6)];
    let before = place(&nodes, &services, &Placement::new()).placement;
    nodes[1].alive = false;
    let after = place(&nodes, &services, &before);
    for (r, n) in &before {
        if n != "b" {
            assert_eq!(&after.placement[r], n, "{r} stays on {n}");
        }
    }
    assert_eq!(after.moves.len(), 2, "{:?}", after.moves);
    for m in &after.moves {
        assert_eq!(m.from.as_deref(), Some("b"));
        assert_eq!(m.why, Why::Refused(Refusal::Lost));
    }
    let counts: Vec<u32> = per_node(&after.placement, "web").into_values().collect();
    assert_eq!(counts, [3, 3], "the two spread over the survivors");
}

#[test]
fn a_joining_node_moves_nothing_and_takes_the_next_replicas() {
    let mut nodes = vec![node("a", "z1"), node("b", "z2")];
    let mut services = vec![service("web", 4)];
    let before = place(&nodes, &services, &Placement::new()).placement;
    nodes.push(node("c", "z3"));
    let after = place(&nodes, &services, &before);
    assert!(after.moves.is_empty(), "{:?}", after.moves);
    assert_eq!(after.placement, before);

    services[0].replicas = 5;
    let grown = place(&nodes, &services, &after.placement);
    assert_eq!(grown.placement[&replica("web", 4)], "c");
    assert_eq!(grown.moves.len(), 1);
}

#[test]
fn scaling_down_stops_the_highest_indices_and_a_removed_service_stops() {
    let nodes = [node("a", "z1"), node("b", "z2")];
    let before = place(
        &nodes,
        &[service("web", 4), service("db", 1)],
        &Placement::new(),
    );
    let after = place(&nodes, &[service("web", 2)], &before.placement);
    let stopped: Vec<String> = after.moves.iter().map(|m| m.replica.to_string()).collect();
    assert_eq!(stopped, ["db/0", "web/2", "web/3"]);
    assert!(
        after
            .moves
            .iter()
            .all(|m| m.why == Why::ScaledDown && m.to.is_none())
    );
    assert_eq!(after.placement.len(), 2);
}

#[test]
fn a_replica_that_breaks_a_new_constraint_moves_and_one_that_does_not_stays() {
    let nodes = [node("a", "z1"), node("b", "z2")];
    let mut web = service("web", 2);
    let before = place(&nodes, std::slice::from_ref(&web), &Placement::new()).placement;
    web.rules.constraints = vec![constraint("zone", Op::IsNot, "z1")];
    let after = place(&nodes, &[web], &before);
    assert_eq!(after.placement[&replica("web", 1)], "b", "stays");
    assert_eq!(after.placement[&replica("web", 0)], "b", "moved off z1");
    let refusal = Refusal::Constraint(constraint("zone", Op::IsNot, "z1"));
    assert_eq!(
        after.moves,
        [Move {
            replica: replica("web", 0),
            from: Some("a".into()),
            to: Some("b".into()),
            why: Why::Refused(refusal),
        }]
    );
}

#[test]
fn a_node_that_shrank_sheds_what_no_longer_fits_and_a_vanished_one_all() {
    let cap = |cpu_millis| Resources {
        cpu_millis,
        memory: u64::MAX,
    };
    let mut nodes = vec![node("a", "z1"), node("b", "z2"), node("c", "z3")];
    let mut web = service("web", 6);
    web.request = cap(1000);
    let services = [web];
    let before = place(&nodes, &services, &Placement::new()).placement;
    nodes[0].capacity = cap(1500);
    nodes.remove(1);
    let after = place(&nodes, &services, &before);
    let from: Vec<(String, Option<&str>, Why)> = after
        .moves
        .iter()
        .map(|m| (m.replica.to_string(), m.from.as_deref(), m.why.clone()))
        .collect();
    assert_eq!(
        from,
        [
            ("web/1".into(), Some("b"), Why::Refused(Refusal::Gone)),
            ("web/3".into(), Some("a"), Why::Refused(Refusal::Capacity)),
            ("web/4".into(), Some("b"), Why::Refused(Refusal::Gone)),
        ]
    );
    assert!(after.moves.iter().all(|m| m.to.as_deref() == Some("c")));
    assert_eq!(
        per_node(&after.placement, "web")
            .into_values()
            .collect::<Vec<_>>(),
        [1, 5]
    );
}

#[test]
fn an_unplaceable_replica_says_which_rule_refused_which_node() {
    let mut nodes = vec![
        node("a", "z1"),
        node("b", "z1"),
        node("c", "z2"),
        node("d", "z2"),
        node("e", "z2"),
    ];
    nodes[4].alive = false;
    nodes[3].capacity = Resources {
        cpu_millis: 1000,
        memory: 1 << 30,
    };
    let mut db = service("db", 1);
    db.rules.constraints = vec![constraint("zone", Op::Is, "z1")];
    let mut web = service("web", 3);
    web.request = Resources {
        cpu_millis: 1500,
        memory: 256 << 20,
    };
    web.rules.anti_affinity = vec!["db".into()];
    web.rules.max_per_node = Some(1);
    let d = place(&nodes, &[db, web], &Placement::new());
    assert_eq!(d.placement[&replica("db", 0)], "a");
    assert_eq!(d.placement[&replica("web", 0)], "b");
    assert_eq!(d.placement[&replica("web", 1)], "c");
    assert_eq!(d.unplaced.len(), 1);
    let why = d.unplaced[0].to_string();
    assert_eq!(
        why,
        "web/2 has no node: 0 of 5 nodes can take it: 1 is lost (e); 1 runs db, which must \
         not share a node with web (anti-affinity) (a); 2 run 1 of web already (max_per_node) \
         (b, c); 1 lacks free capacity for its request of 1.5 cores and 256 MiB (d)"
    );
    let m = d.moves.iter().find(|m| m.replica == replica("web", 2));
    assert_eq!(m, None, "an unplaced new replica is no move");

    let none = place(&[], &[service("web", 1)], &Placement::new());
    assert_eq!(
        none.unplaced[0].to_string(),
        "web/0 has no node: the cluster has no nodes"
    );
}

#[test]
fn a_long_list_of_nodes_is_cut_short_in_the_explanation() {
    let nodes: Vec<Node> = (0..8).map(|i| node(&format!("n{i}"), "z1")).collect();
    let mut web = service("web", 1);
    web.rules.constraints = vec![constraint("disk", Op::Is, "ssd")];
    let d = place(&nodes, &[web], &Placement::new());
    assert_eq!(
        d.unplaced[0].to_string(),
        "web/0 has no node: 0 of 8 nodes can take it: 8 fail constraint disk=ssd (n0, n1, n2, \
         n3, n4 and 3 more)"
    );
}

#[test]
fn anti_affine_replicas_found_together_part_and_the_first_by_name_stays() {
    let nodes = [node("a", "z1"), node("b", "z2")];
    let mut web = service("web", 1);
    web.rules.anti_affinity = vec!["db".into()];
    let current = Placement::from([
        (replica("db", 0), "a".into()),
        (replica("web", 0), "a".into()),
    ]);
    let d = place(&nodes, &[web, service("db", 1)], &current);
    assert_eq!(d.placement[&replica("db", 0)], "a");
    assert_eq!(d.placement[&replica("web", 0)], "b");
    assert_eq!(
        d.moves[0].why,
        Why::Refused(Refusal::AntiAffinity("db".into()))
    );
}

/// 1000 nodes in 10 zones, 100 services of 100 replicas: from nothing, then after ten
/// nodes are lost. The bound is for an unoptimized test build on a busy machine; the
/// measured figures are in ARCHITECTURE.md.
#[test]
fn a_thousand_nodes_and_ten_thousand_replicas_are_placed_within_a_bound() {
    let mut nodes: Vec<Node> = (0..1000)
        .map(|i| {
            let mut n = node(&format!("node-{i:04}"), &format!("z{}", i % 10));
            n.capacity = Resources {
                cpu_millis: 16_000,
                memory: 64 << 30,
            };
            n
        })
        .collect();
    let services: Vec<Service> = (0..100)
        .map(|i| {
            let mut s = service(&format!("svc-{i:03}"), 100);
            s.request = Resources {
                cpu_millis: 250,
                memory: 512 << 20,
            };
            if i % 10 == 0 {
                s.rules.constraints = vec![constraint("zone", Op::IsNot, "z0")];
            }
            if i % 10 == 1 {
                s.rules.anti_affinity = vec![format!("svc-{:03}", i - 1)];
            }
            s
        })
        .collect();
    let start = crate::epoch();
    let first = place(&nodes, &services, &Placement::new());
    let cold = start.elapsed();
    assert_eq!(first.placement.len(), 10_000);
    for n in nodes.iter_mut().take(10) {
        n.alive = false;
    }
    let start = crate::epoch();
    let second = place(&nodes, &services, &first.placement);
    let warm = start.elapsed();
    assert_eq!(second.placement.len(), 10_000);
    let lost = first
        .placement
        .values()
        .filter(|n| n.as_str() < "node-0010");
    assert_eq!(second.moves.len(), lost.count());
    eprintln!("1000 nodes × 10 000 replicas: from nothing {cold:?}, after 10 lost {warm:?}");
    let bound = std::time::Duration::from_secs(10);
    assert!(cold < bound && warm < bound, "{cold:?}, {warm:?}");
}

mod properties;
