//! Property tests of `retain` (restic's forget policy plus the newest verified snapshot),
//! through the public API only. Times are generated clock times over three years, some
//! crowded into three days so that hours and days hold several snapshots.

use jiff::civil::{DateTime, date};
use jiff::{Span, ToSpan};
use policy::{Candidate, Keep, Reason, retain};
use proptest::prelude::*;

fn base() -> DateTime {
    date(2019, 12, 20).at(0, 0, 0, 0)
}

/// (minutes after `base`, verified, damaged)
fn snapshot() -> impl Strategy<Value = (i64, bool, bool)> {
    let minutes = prop_oneof![0i64..3 * 24 * 60, 0i64..3 * 366 * 24 * 60];
    (minutes, any::<bool>(), prop::bool::weighted(0.2))
}

fn keep() -> impl Strategy<Value = Keep> {
    (0u32..6, 0u32..6, 0u32..6, 0u32..6, 0u32..6, 0u32..6).prop_map(
        |(last, hourly, daily, weekly, monthly, yearly)| Keep {
            last,
            hourly,
            daily,
            weekly,
            monthly,
            yearly,
        },
    )
}

fn candidates(raw: &[(i64, bool, bool)]) -> Vec<Candidate<usize>> {
    raw.iter()
        .enumerate()
        .map(|(id, &(minutes, verified, damaged))| Candidate {
            id,
            time: base() + Span::new().minutes(minutes),
            verified,
            damaged,
        })
        .collect()
}

/// The bucket a rule sorts `t` into, written independently of the crate's encoding.
fn bucket(rule: Reason, t: DateTime) -> (i16, i8, i8, i8) {
    match rule {
        Reason::Hourly => (t.year(), t.month(), t.day(), t.hour()),
        Reason::Daily => (t.year(), t.month(), t.day(), 0),
        Reason::Weekly => {
            let w = t.date().iso_week_date();
            (w.year(), w.week(), 0, 0)
        }
        Reason::Monthly => (t.year(), t.month(), 0, 0),
        Reason::Yearly => (t.year(), 0, 0, 0),
        Reason::Last | Reason::NewestVerified => unreachable!(),
    }
}

fn count(keep: &Keep, rule: Reason) -> u32 {
    match rule {
        Reason::Last => keep.last,
        Reason::Hourly => keep.hourly,
        Reason::Daily => keep.daily,
        Reason::Weekly => keep.weekly,
        Reason::Monthly => keep.monthly,
        Reason::Yearly => keep.yearly,
        Reason::NewestVerified => 1,
    }
}

const RULES: [Reason; 7] = [
    Reason::Last,
    Reason::Hourly,
    Reason::Daily,
    Reason::Weekly,
    Reason::Monthly,
    Reason::Yearly,
    Reason::NewestVerified,
];

proptest! {
    #[test]
    fn decisions_follow_the_policy(raw in prop::collection::vec(snapshot(), 0..60), keep in keep()) {
        let snaps = candidates(&raw);
        let decisions = retain(&snaps, &keep);

        // one per input, newest first
        prop_assert_eq!(decisions.len(), snaps.len());
        let mut ids: Vec<usize> = decisions.iter().map(|d| d.id).collect();
        let times: Vec<DateTime> = ids.iter().map(|&i| snaps[i].time).collect();
        prop_assert!(times.windows(2).all(|w| w[0] >= w[1]), "not newest first");
        ids.sort_unstable();
        prop_assert_eq!(ids, (0..snaps.len()).collect::<Vec<_>>());

        for d in &decisions {
            prop_assert_eq!(d.keep, !d.reasons.is_empty());
            prop_assert!(d.reasons.windows(2).all(|w| w[0] < w[1]), "reasons repeat or out of order");
        }

        // the newest verified undamaged one is kept, and only it for that reason
        let good = decisions.iter().position(|d| snaps[d.id].verified && !snaps[d.id].damaged);
        for (nr, d) in decisions.iter().enumerate() {
            let newest_verified = d.reasons.contains(&Reason::NewestVerified);
            prop_assert_eq!(newest_verified, good == Some(nr));
            if newest_verified {
                prop_assert!(d.keep);
            }
        }

        // never more per rule than its count; `last` keeps exactly the newest n
        for rule in RULES {
            let n = decisions.iter().filter(|d| d.reasons.contains(&rule)).count();
            prop_assert!(n <= count(&keep, rule) as usize, "{rule:?}: {n} kept");
        }
        let last: Vec<bool> = decisions.iter().map(|d| d.reasons.contains(&Reason::Last)).collect();
        let n = (keep.last as usize).min(snaps.len());
        prop_assert_eq!(last, (0..snaps.len()).map(|i| i < n).collect::<Vec<_>>());

        // each calendar rule keeps the newest snapshot of its newest buckets, one per bucket,
        // until its count runs out
        for rule in &RULES[1..6] {
            let mut seen = Vec::new();
            for d in &decisions {
                let b = bucket(*rule, snaps[d.id].time);
                let first_of_bucket = !seen.contains(&b);
                if first_of_bucket {
                    seen.push(b);
                }
                let expect = first_of_bucket && seen.len() <= count(&keep, *rule) as usize;
                prop_assert_eq!(d.reasons.contains(rule), expect, "{:?} at {}", rule, snaps[d.id].time);
            }
        }
    }

    #[test]
    fn only_last_keeps_the_n_newest(raw in prop::collection::vec(snapshot(), 0..40), n in 0u32..50) {
        let snaps = candidates(&raw);
        let keep = Keep { last: n, ..Keep::default() };
        let kept: Vec<bool> = retain(&snaps, &keep)
            .iter()
            .map(|d| d.keep && d.reasons != [Reason::NewestVerified])
            .collect();
        let n = (n as usize).min(snaps.len());
        prop_assert_eq!(kept, (0..snaps.len()).map(|i| i < n).collect::<Vec<_>>());
    }
}

#[test]
fn a_year_end_week_is_one_bucket() {
    // Thursday 2026-12-31 makes 2026 a 53-week ISO year: 2026-12-28 to 2027-01-03
    let week: Vec<Candidate<u8>> = (0..7)
        .map(|i| Candidate {
            id: i,
            time: date(2026, 12, 28).at(12, 0, 0, 0) + i64::from(i).days(),
            verified: false,
            damaged: false,
        })
        .collect();
    let d = retain(
        &week,
        &Keep {
            weekly: 5,
            ..Keep::default()
        },
    );
    let kept: Vec<u8> = d.iter().filter(|d| d.keep).map(|d| d.id).collect();
    assert_eq!(kept, [6]);
}
