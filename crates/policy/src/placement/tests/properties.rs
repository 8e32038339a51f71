//! The placement's properties, over arbitrary clusters, services and (even nonsensical)
//! current placements.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::super::*;

const ZONES: [&str; 3] = ["a", "b", "c"];

fn arb_node(i: usize) -> impl Strategy<Value = Node> {
    (
        prop::option::of(0..ZONES.len()),
        any::<bool>(),
        prop::bool::weighted(0.8),
        prop::option::of((0u64..4000, 0u64..4096)),
    )
        .prop_map(move |(zone, ssd, alive, capacity)| {
            let mut labels = BTreeMap::new();
            if let Some(z) = zone {
                labels.insert("zone".to_owned(), ZONES[z].to_owned());
            }
            labels.insert(
                "disk".to_owned(),
                if ssd { "ssd" } else { "hdd" }.to_owned(),
            );
            Node {
                name: format!("n{i:02}"),
                labels,
                alive,
                capacity: capacity.map_or(Resources::UNLIMITED, |(c, m)| Resources {
                    cpu_millis: c,
                    memory: m,
                }),
            }
        })
}

fn arb_nodes(max: usize) -> impl Strategy<Value = Vec<Node>> {
    (0..=max).prop_flat_map(|n| (0..n).map(arb_node).collect::<Vec<_>>())
}

fn arb_constraint() -> impl Strategy<Value = Constraint> {
    let labels = prop::sample::select(vec!["zone", "disk", NODE]);
    let values = prop::sample::select(vec!["a", "b", "ssd", "hdd", "n01", "n03"]);
    (labels, any::<bool>(), values).prop_map(|(label, is, value)| Constraint {
        label: label.to_owned(),
        op: if is { Op::Is } else { Op::IsNot },
        value: value.to_owned(),
    })
}

fn arb_service(i: usize, services: usize) -> impl Strategy<Value = Service> {
    let spread = prop::sample::subsequence(vec![NODE, "zone", "disk"], 0..=3)
        .prop_shuffle()
        .prop_map(|s| s.into_iter().map(str::to_owned).collect());
    let anti = prop::sample::subsequence((0..services).collect::<Vec<_>>(), 0..=services.min(2))
        .prop_map(|v| v.into_iter().map(|j| format!("s{j}")).collect());
    (
        0u32..12,
        (0u64..1500, 0u64..1024),
        spread,
        prop::collection::vec(arb_constraint(), 0..=2),
        (prop::bool::weighted(0.3), anti).prop_map(|(has, v)| if has { v } else { Vec::new() }),
        prop::option::of(1u32..4),
    )
        .prop_map(
            move |(replicas, (c, m), spread, constraints, anti_affinity, max_per_node)| Service {
                name: format!("s{i}"),
                replicas,
                request: Resources {
                    cpu_millis: c,
                    memory: m,
                },
                rules: Rules {
                    spread,
                    constraints,
                    anti_affinity,
                    max_per_node,
                },
            },
        )
}

fn arb_services() -> impl Strategy<Value = Vec<Service>> {
    (1usize..5).prop_flat_map(|n| (0..n).map(|i| arb_service(i, n)).collect::<Vec<_>>())
}

/// Anything at all: replicas of unknown services, beyond the count, on unknown nodes.
fn arb_current() -> impl Strategy<Value = Placement> {
    prop::collection::btree_map(
        (0usize..6, 0u32..14).prop_map(|(s, index)| Replica {
            service: format!("s{s}"),
            index,
        }),
        (0usize..16).prop_map(|n| format!("n{n:02}")),
        0..30,
    )
}

/// Every hard rule holds in `d`, and every wanted replica is placed or explained once.
fn assert_rules_hold(nodes: &[Node], services: &[Service], d: &Decision) {
    let node = |name: &str| nodes.iter().find(|n| n.name == name).expect("a known node");
    let svc = |name: &str| services.iter().find(|s| s.name == name).expect("wanted");
    let mut used: BTreeMap<&str, Resources> = BTreeMap::new();
    let mut on: BTreeMap<&str, BTreeMap<&str, u32>> = BTreeMap::new();
    for (r, n) in &d.placement {
        let (s, here) = (svc(&r.service), node(n));
        assert!(r.index < s.replicas, "{r} is wanted");
        assert!(here.alive, "{r} on lost {n}");
        for c in &s.rules.constraints {
            assert!(c.allows(here), "{r} on {n} breaks {c}");
        }
        used.entry(n).or_default().add(s.request);
        *on.entry(n).or_default().entry(&s.name).or_default() += 1;
    }
    for (n, u) in &used {
        assert!(
            Resources::default().fits(*u, node(n).capacity),
            "{n} over capacity"
        );
    }
    for (n, here) in &on {
        for (s, count) in here {
            let rules = &svc(s).rules;
            assert!(rules.max_per_node.is_none_or(|m| *count <= m), "{s} on {n}");
            for other in &rules.anti_affinity {
                let alone = if other == s {
                    *count <= 1
                } else {
                    !here.contains_key(other.as_str())
                };
                assert!(alone, "{s} and {other} share {n}");
            }
        }
    }
    let wanted: u32 = services.iter().map(|s| s.replicas).sum();
    assert_eq!(d.placement.len() + d.unplaced.len(), wanted as usize);
    for u in &d.unplaced {
        assert!(!d.placement.contains_key(&u.replica));
        let listed: usize = u.refused.iter().map(|(_, n)| n.len()).sum();
        assert_eq!(listed, nodes.len(), "{u}: every node is accounted for");
    }
}

/// A move's reason is a fact about the input (for the rules that do not depend on the
/// order replicas are kept in).
fn assert_reason_is_true(nodes: &[Node], services: &[Service], m: &Move) {
    let node = m
        .from
        .as_ref()
        .and_then(|f| nodes.iter().find(|n| &n.name == f));
    let svc = services.iter().find(|s| s.name == m.replica.service);
    let wanted = svc.is_some_and(|s| m.replica.index < s.replicas);
    match &m.why {
        Why::New => assert!(m.from.is_none(), "{m:?}"),
        Why::ScaledDown => assert!(!wanted && m.to.is_none(), "{m:?}"),
        Why::Refused(Refusal::Gone) => assert!(wanted && node.is_none(), "{m:?}"),
        Why::Refused(Refusal::Lost) => assert!(node.is_some_and(|n| !n.alive), "{m:?}"),
        Why::Refused(Refusal::Constraint(c)) => {
            let n = node.expect("a known node");
            assert!(!c.allows(n) && svc.is_some_and(|s| s.rules.constraints.contains(c)));
        }
        Why::Refused(_) => assert!(wanted && node.is_some_and(|n| n.alive), "{m:?}"),
    }
}

/// Names unique, as the scheduler's input is (etcd keys).
fn unique(mut services: Vec<Service>) -> Vec<Service> {
    let mut seen = BTreeSet::new();
    services.retain(|s| seen.insert(s.name.clone()));
    services
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn hard_rules_always_hold_and_every_replica_is_placed_or_explained(
        nodes in arb_nodes(12),
        services in arb_services(),
        current in arb_current(),
    ) {
        let services = unique(services);
        let d = place(&nodes, &services, &current);
        assert_rules_hold(&nodes, &services, &d);
        // Every move is a real change, and every change is a move.
        for m in &d.moves {
            prop_assert_ne!(&m.from, &m.to);
            prop_assert_eq!(current.get(&m.replica), m.from.as_ref());
            prop_assert_eq!(d.placement.get(&m.replica), m.to.as_ref());
            assert_reason_is_true(&nodes, &services, m);
        }
        for (r, n) in &current {
            if d.placement.get(r) != Some(n) {
                prop_assert!(d.moves.iter().any(|m| &m.replica == r), "{r} left {n} silently");
            }
        }
    }

    #[test]
    fn the_same_input_in_any_node_order_gives_the_same_decision(
        nodes in arb_nodes(12),
        services in arb_services(),
        current in arb_current(),
        seed in any::<u64>(),
    ) {
        let services = unique(services);
        let d = place(&nodes, &services, &current);
        prop_assert_eq!(&d, &place(&nodes, &services, &current));
        let mut shuffled = nodes.clone();
        let len = shuffled.len();
        for i in 0..len {
            shuffled.swap(i, (crate::mix64(seed ^ i as u64) as usize) % len);
        }
        prop_assert_eq!(&d, &place(&shuffled, &services, &current));
    }

    /// No churn: after node loss and node joins, every replica whose node is still alive
    /// stays; only replicas of lost nodes move; joins alone move nothing.
    #[test]
    fn only_replicas_of_lost_nodes_move(
        nodes in arb_nodes(12),
        services in arb_services(),
        lose in prop::collection::vec(any::<bool>(), 12),
        join in arb_nodes(4),
    ) {
        let services = unique(services);
        let before = place(&nodes, &services, &Placement::new()).placement;
        let mut after_nodes = nodes.clone();
        after_nodes.extend(join.into_iter().map(|mut n| {
            n.name = format!("new-{}", n.name);
            n
        }));
        let joined = place(&after_nodes, &services, &before);
        prop_assert!(joined.moves.iter().all(|m| m.from.is_none()), "{:?}", joined.moves);
        prop_assert!(before.iter().all(|(r, n)| joined.placement.get(r) == Some(n)));

        for (n, lost) in after_nodes.iter_mut().zip(&lose) {
            n.alive &= !lost;
        }
        let d = place(&after_nodes, &services, &before);
        assert_rules_hold(&after_nodes, &services, &d);
        for (r, n) in &before {
            let alive = after_nodes.iter().any(|x| &x.name == n && x.alive);
            if alive {
                prop_assert_eq!(d.placement.get(r), Some(n), "{} moved off alive {}", r, n);
            }
        }
        for m in d.moves.iter().filter(|m| m.from.is_some()) {
            prop_assert_eq!(&m.why, &Why::Refused(Refusal::Lost));
        }
    }

    /// With room everywhere, a service's replicas differ by at most one between the nodes
    /// that allow it (node-first spread), placed in one decision.
    #[test]
    fn spread_over_the_allowed_nodes_is_even(
        nodes in arb_nodes(12),
        services in arb_services(),
    ) {
        let nodes: Vec<Node> = nodes.into_iter().map(|n| Node { alive: true, capacity: Resources::UNLIMITED, ..n }).collect();
        let services: Vec<Service> = unique(services).into_iter().map(|mut s| {
            s.rules.anti_affinity.clear();
            s.rules.spread.retain(|d| d != NODE);
            s.rules.spread.insert(0, NODE.to_owned());
            s
        }).collect();
        let d = place(&nodes, &services, &Placement::new());
        for s in &services {
            let counts: Vec<u32> = nodes.iter()
                .filter(|n| s.rules.constraints.iter().all(|c| c.allows(n)))
                .map(|n| d.placement.iter().filter(|(r, at)| r.service == s.name && **at == n.name).count() as u32)
                .collect();
            if let (Some(max), Some(min)) = (counts.iter().max(), counts.iter().min()) {
                prop_assert!(max - min <= 1, "{}: {:?}", s.name, counts);
            }
        }
    }

    /// Zones of equal size: with the default spread (node, then zone), a service's
    /// replicas differ by at most one between zones.
    #[test]
    fn spread_over_equal_zones_is_even(per_zone in 1usize..4, replicas in 0u32..30) {
        let nodes: Vec<Node> = (0..per_zone * ZONES.len()).map(|i| Node {
            name: format!("n{i:02}"),
            labels: BTreeMap::from([("zone".to_owned(), ZONES[i % ZONES.len()].to_owned())]),
            alive: true,
            capacity: Resources::UNLIMITED,
        }).collect();
        let web = Service { name: "web".into(), replicas, request: Resources::default(), rules: Rules::default() };
        let d = place(&nodes, &[web], &Placement::new());
        let mut zones: BTreeMap<&str, u32> = ZONES.iter().map(|z| (*z, 0)).collect();
        for n in d.placement.values() {
            let zone = nodes.iter().find(|x| &x.name == n).and_then(|x| x.label("zone")).expect("zoned");
            *zones.get_mut(zone).expect("known zone") += 1;
        }
        let (max, min) = (zones.values().max().copied(), zones.values().min().copied());
        prop_assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{:?}", zones);
    }
}
