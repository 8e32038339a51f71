use super::*;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn det(n: usize) -> (OutlierDetector, Vec<ReplicaId>, Instant) {
    let t0 = crate::epoch();
    let mut d = OutlierDetector::new(OutlierConfig::default());
    let ids = (0..n).map(|_| d.add(t0)).collect();
    (d, ids, t0)
}

fn fail(d: &mut OutlierDetector, id: ReplicaId, n: usize, now: Instant) -> Option<OutlierEvent> {
    let mut last = None;
    for _ in 0..n {
        last = d.record(id, Outcome::GatewayError, now, 0.0);
    }
    last
}

#[test]
fn classifies_statuses() {
    assert_eq!(Outcome::from_status(200), Outcome::Success);
    assert_eq!(Outcome::from_status(404), Outcome::Success);
    assert_eq!(Outcome::from_status(500), Outcome::Status5xx(500));
    assert_eq!(Outcome::from_status(503), Outcome::GatewayError);
    assert!(Outcome::Status5xx(502).is_gateway());
    assert!(!Outcome::Status5xx(500).is_gateway());
}

#[test]
fn five_consecutive_gateway_errors_eject_for_one_second() {
    let (mut d, ids, t0) = det(3);
    assert_eq!(fail(&mut d, ids[0], 4, t0), None);
    let ev = d.record(ids[0], Outcome::GatewayError, t0, 0.0);
    assert_eq!(
        ev,
        Some(OutlierEvent::Ejected {
            replica: ids[0],
            until: t0 + S,
            reason: EjectReason::ConsecutiveGatewayErrors,
            times: 1
        })
    );
    assert_eq!((d.members(), d.ejected(), d.healthy()), (3, 1, 2));
    assert!(!d.try_admit(ids[0], t0 + 999 * MS));
    assert!(!d.panic());
}

#[test]
fn plain_5xx_resets_gateway_run_but_counts_as_5xx() {
    let (mut d, ids, t0) = det(3);
    let id = ids[0];
    fail(&mut d, id, 4, t0);
    assert_eq!(
        d.record(id, Outcome::Status5xx(500), t0, 0.0)
            .map(|e| match e {
                OutlierEvent::Ejected { reason, .. } => reason,
                _ => unreachable!(),
            }),
        Some(EjectReason::Consecutive5xx),
        "4 gateway + one 500 = 5 consecutive 5xx"
    );
    // a success in between resets both runs
    let id = ids[1];
    fail(&mut d, id, 4, t0);
    d.record(id, Outcome::Success, t0, 0.0);
    assert_eq!(fail(&mut d, id, 4, t0), None);
}

#[test]
fn success_rate_below_80_percent_ejects_after_20_requests() {
    let (mut d, ids, t0) = det(3);
    let id = ids[0];
    // pattern: 3 successes then 1 failure: 75 % success, never 5 failures in a row
    let mut ev = None;
    let mut n = 0;
    while ev.is_none() {
        let outcome = if n % 4 == 3 {
            Outcome::Status5xx(500)
        } else {
            Outcome::Success
        };
        ev = d.record(id, outcome, t0 + MS * n, 0.0);
        n += 1;
    }
    // at request 20 (index 19, a failure): 15 ok / 20 = 75 % < 80 %
    assert_eq!(n, 20);
    assert!(matches!(
        ev,
        Some(OutlierEvent::Ejected {
            reason: EjectReason::SuccessRate,
            ..
        })
    ));
}

#[test]
fn probe_readmits_or_reejects_longer() {
    let (mut d, ids, t0) = det(2);
    let id = ids[0];
    fail(&mut d, id, 5, t0);
    assert_eq!(d.state(id), Some(OutlierState::Ejected { until: t0 + S }));
    let t1 = t0 + S;
    assert!(d.admissible(id, t1));
    assert!(d.try_admit(id, t1), "one probe");
    assert!(!d.try_admit(id, t1), "exactly one");
    assert!(!d.admissible(id, t1));
    assert_eq!(d.state(id), Some(OutlierState::Probing));
    // probe fails: second ejection lasts 2 × 1 s
    let ev = d.record(id, Outcome::GatewayError, t1, 0.0).unwrap();
    assert_eq!(
        ev,
        OutlierEvent::Ejected {
            replica: id,
            until: t1 + 2 * S,
            reason: EjectReason::FailedProbe,
            times: 2
        }
    );
    assert_eq!(d.ejected(), 1);
    let t2 = t1 + 2 * S;
    assert!(d.try_admit(id, t2));
    assert_eq!(
        d.record(id, Outcome::Success, t2, 0.0),
        Some(OutlierEvent::Readmitted { replica: id })
    );
    assert_eq!((d.ejected(), d.healthy()), (0, 2));
    assert!(d.try_admit(id, t2));
    // ejected again 1 s later (no decay yet): third time, 3 s
    let ev = fail(&mut d, id, 5, t2 + S).unwrap();
    assert_eq!(
        ev,
        OutlierEvent::Ejected {
            replica: id,
            until: t2 + S + S * 3,
            reason: EjectReason::ConsecutiveGatewayErrors,
            times: 3
        }
    );
    let t3 = t2 + S * 4;
    assert!(d.try_admit(id, t3));
    d.record(id, Outcome::Success, t3, 0.0);
    // 25 s healthy forgives two of the three ejections: next one is the 2nd (2 s)
    let t4 = t3 + S * 25;
    let ev = d.record(id, Outcome::GatewayError, t4, 0.5);
    assert_eq!(ev, None);
    let ev = fail(&mut d, id, 4, t4).unwrap();
    match ev {
        OutlierEvent::Ejected { until, times, .. } => {
            assert_eq!(times, 2);
            assert_eq!(until, t4 + 2 * S);
        }
        _ => panic!("{ev:?}"),
    }
}

#[test]
fn jitter_shortens_and_cap_applies() {
    let t0 = crate::epoch();
    let mut d = OutlierDetector::new(OutlierConfig {
        max_ejection: 3 * S,
        ..Default::default()
    });
    let a = d.add(t0);
    let _b = d.add(t0);
    let ev = (0..5)
        .map(|_| d.record(a, Outcome::LocalTimeout, t0, 0.5))
        .last()
        .unwrap();
    assert_eq!(
        ev,
        Some(OutlierEvent::Ejected {
            replica: a,
            until: t0 + 900 * MS,
            reason: EjectReason::ConsecutiveGatewayErrors,
            times: 1
        })
    );
    let mut now = t0 + S;
    for times in 2..=6u32 {
        assert!(d.try_admit(a, now));
        let ev = d.record(a, Outcome::GatewayError, now, 0.0).unwrap();
        let want = (S * times).min(3 * S);
        assert_eq!(
            ev,
            OutlierEvent::Ejected {
                replica: a,
                until: now + want,
                reason: EjectReason::FailedProbe,
                times
            }
        );
        now += want;
    }
}

#[test]
fn probe_timeout_allows_another_probe() {
    let (mut d, ids, t0) = det(2);
    fail(&mut d, ids[0], 5, t0);
    assert!(d.try_admit(ids[0], t0 + S));
    assert!(!d.try_admit(ids[0], t0 + S * 10));
    assert!(d.try_admit(ids[0], t0 + S * 11), "probe lost after 10 s");
}

#[test]
fn never_ejects_the_last_healthy_replica() {
    let (mut d, ids, t0) = det(2);
    assert!(fail(&mut d, ids[0], 5, t0).is_some());
    // the other one fails forever: it stays
    assert_eq!(fail(&mut d, ids[1], 100, t0), None);
    assert_eq!(d.healthy(), 1);
    assert_eq!(d.state(ids[1]), Some(OutlierState::Active));
    // a single replica is never ejected
    let (mut d, ids, t0) = det(1);
    assert_eq!(fail(&mut d, ids[0], 100, t0), None);
}

#[test]
fn max_ejection_percent_caps_ejections() {
    let (mut d, ids, t0) = det(5);
    let ejected = ids
        .iter()
        .filter(|&&id| fail(&mut d, id, 5, t0).is_some())
        .count();
    assert_eq!(ejected, 2, "50 % of 5 = 2");
    assert_eq!((d.ejected(), d.healthy()), (2, 3));
    assert!(!d.panic(), "3 of 5 healthy");
}

#[test]
fn panic_when_few_are_healthy() {
    let (mut d, ids, t0) = det(4);
    fail(&mut d, ids[0], 5, t0);
    assert!(!d.panic());
    d.set_ready(ids[1], false, t0);
    assert!(!d.panic(), "2 of 4 healthy is exactly 50 %");
    d.set_ready(ids[2], false, t0);
    assert!(d.panic(), "1 of 4");
    // the last healthy one leaving re-admits the ejected one
    let ev = d.set_ready(ids[3], false, t0);
    assert_eq!(ev, Some(OutlierEvent::Readmitted { replica: ids[0] }));
    assert_eq!((d.ejected(), d.healthy()), (0, 1));
    // outcomes of not-ready replicas are ignored
    assert_eq!(fail(&mut d, ids[1], 10, t0), None);
    assert!(!d.try_admit(ids[1], t0));
}

#[test]
fn removal_keeps_bounds_and_stales_the_id() {
    let (mut d, ids, t0) = det(4);
    fail(&mut d, ids[0], 5, t0);
    fail(&mut d, ids[1], 5, t0 + MS); // ends later
    assert_eq!(d.ejected(), 2);
    // 4 → 3 members: 2 ejected of 3 breaks 50 %: the one ending first comes back
    let ev = d.remove(ids[2], t0);
    assert_eq!(ev, Some(OutlierEvent::Readmitted { replica: ids[0] }));
    assert_eq!((d.members(), d.ejected(), d.healthy()), (3, 1, 2));
    // stale id: everything is a no-op
    assert_eq!(d.state(ids[2]), None);
    assert_eq!(fail(&mut d, ids[2], 5, t0), None);
    assert!(!d.try_admit(ids[2], t0));
    assert_eq!(d.remove(ids[2], t0), None);
    // the slot is reused with a new generation
    let e = d.add(t0);
    assert_eq!(e.index(), ids[2].index());
    assert_ne!(e, ids[2]);
    assert_eq!(d.state(ids[2]), None);
    assert_eq!(d.state(e), Some(OutlierState::Active));
    assert_eq!(d.ids().count(), 4);
}

#[test]
fn late_outcomes_while_ejected_are_ignored() {
    let (mut d, ids, t0) = det(3);
    fail(&mut d, ids[0], 5, t0);
    assert_eq!(d.record(ids[0], Outcome::Success, t0 + MS, 0.0), None);
    assert_eq!(
        d.state(ids[0]),
        Some(OutlierState::Ejected { until: t0 + S })
    );
}
