//! Which backup snapshots to keep: restic's `forget` keep policy, plus bulwark's one rule
//! on top.
//!
//! Backups are written in restic's repository format, so a user who knows
//! `restic forget --keep-daily 7 --keep-weekly 4` must get exactly the same snapshots kept by
//! bulwark, and a repository pruned by either tool must look the same. [`retain`] is
//! restic 0.14's `ApplyPolicy` for the six counted rules (`--keep-last`, `-hourly`,
//! `-daily`, `-weekly`, `-monthly`, `-yearly`); an integration test runs the real `restic`
//! binary on the same snapshots and compares.
//!
//! How restic decides, and so how this does: the snapshots are sorted newest first (a stable
//! sort: equal times keep their order). Each rule has a count and remembers the bucket of the
//! last snapshot *it* kept (none at first). Walking newest to oldest, every rule whose count
//! is not used up looks at the snapshot's bucket — its hour, day, ISO year and week, month or
//! year; for `last` every snapshot is a bucket of its own — and if it differs from the bucket
//! it remembers, the rule keeps the snapshot, remembers its bucket and uses one of its count.
//! A snapshot is kept when any rule keeps it, with every such rule as a reason. So each rule
//! keeps the newest snapshot of each of its `count` newest buckets, and a bucket is only ever
//! compared with the rule's own last kept one (the rules do not see each other's choices).
//!
//! Where it differs from restic, on purpose:
//! - bulwark's rule: the newest snapshot that is verified and not damaged is always kept
//!   ([`Reason::NewestVerified`]), whatever the counts, so no policy can delete the last
//!   good backup. Damaged snapshots are otherwise treated like any other.
//! - A [`Keep`] of all zeros keeps nothing by the rules: every snapshot goes except the newest
//!   verified one, and with none verified, everything goes, as asked. (`restic forget` with no
//!   policy at all refuses to remove anything; bulwark's caller decides whether an empty
//!   policy is allowed before it asks.)
//! - restic sorts by the instant and buckets by the clock time in the zone the snapshot was
//!   taken in; a [`Candidate`] carries only that clock time, and sorting by it is the same
//!   except across a backward clock change (the repeated hour), where the order may differ.
//!
//! Later restic versions (0.17) also keep the oldest snapshot when a rule has count left
//! over; 0.14, the one this matches, does not.
//!
//! Calendar arithmetic (ISO weeks across a year end) is jiff's.

use std::fmt;

use jiff::civil::DateTime;

/// How many snapshots each rule keeps: restic's `--keep-last`, `--keep-hourly`, … A count of
/// 0 turns its rule off; all zeros keep nothing by the rules (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    /// The newest `last` snapshots, whatever their times.
    pub last: u32,
    /// The newest snapshot of each of the newest `hourly` hours that have one.
    pub hourly: u32,
    /// The newest snapshot of each of the newest `daily` days that have one.
    pub daily: u32,
    /// The newest snapshot of each of the newest `weekly` ISO weeks (Monday to Sunday,
    /// numbered in their ISO year) that have one.
    pub weekly: u32,
    /// The newest snapshot of each of the newest `monthly` months that have one.
    pub monthly: u32,
    /// The newest snapshot of each of the newest `yearly` years that have one.
    pub yearly: u32,
}

/// A snapshot as [`retain`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<Id> {
    /// The caller's name for it (restic's snapshot id, say); handed back in the [`Decision`].
    pub id: Id,
    /// When it was taken, as the clock time in the zone it was taken in: restic buckets by
    /// the time as recorded in the snapshot, with that snapshot's own offset.
    pub time: DateTime,
    /// Whether a check has read it back whole.
    pub verified: bool,
    /// Whether a check found it damaged (a verified snapshot can be damaged later).
    pub damaged: bool,
}

/// Why a snapshot is kept. The first six are restic's rules, in restic's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// One of the newest [`Keep::last`].
    Last,
    /// The newest of its hour, within [`Keep::hourly`].
    Hourly,
    /// The newest of its day, within [`Keep::daily`].
    Daily,
    /// The newest of its ISO week, within [`Keep::weekly`].
    Weekly,
    /// The newest of its month, within [`Keep::monthly`].
    Monthly,
    /// The newest of its year, within [`Keep::yearly`].
    Yearly,
    /// The newest snapshot that is verified and not damaged: always kept.
    NewestVerified,
}

impl fmt::Display for Reason {
    /// restic's wording in `forget`'s "matches" (for the six rules), so output reads the same.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Last => "last snapshot",
            Reason::Hourly => "hourly snapshot",
            Reason::Daily => "daily snapshot",
            Reason::Weekly => "weekly snapshot",
            Reason::Monthly => "monthly snapshot",
            Reason::Yearly => "yearly snapshot",
            Reason::NewestVerified => "newest verified snapshot",
        })
    }
}

/// What [`retain`] decided for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<Id> {
    /// The snapshot's [`Candidate::id`].
    pub id: Id,
    /// Whether it stays; `false` means it may be forgotten.
    pub keep: bool,
    /// Every reason it is kept, in [`Reason`]'s order; empty exactly when `keep` is false.
    pub reasons: Vec<Reason>,
}

/// The six counted rules in restic's order, with their reason.
const RULES: [Reason; 6] = [
    Reason::Last,
    Reason::Hourly,
    Reason::Daily,
    Reason::Weekly,
    Reason::Monthly,
    Reason::Yearly,
];

/// The bucket of `time` for `rule`, as one number (restic's encoding: YYYYMMDDHH, YYYYMMDD,
/// YYYYWW with the ISO year, YYYYMM, YYYY); `Last` uses the position `nr`, unique to each.
fn bucket(rule: Reason, time: DateTime, nr: usize) -> i64 {
    let (y, m, d, h) = (
        i64::from(time.year()),
        i64::from(time.month()),
        i64::from(time.day()),
        i64::from(time.hour()),
    );
    match rule {
        Reason::Last | Reason::NewestVerified => nr as i64,
        Reason::Hourly => ((y * 100 + m) * 100 + d) * 100 + h,
        Reason::Daily => (y * 100 + m) * 100 + d,
        Reason::Weekly => {
            let iso = time.date().iso_week_date();
            i64::from(iso.year()) * 100 + i64::from(iso.week())
        }
        Reason::Monthly => y * 100 + m,
        Reason::Yearly => y,
    }
}

/// Decides which of `snapshots` to keep under `keep`, as `restic forget` 0.14 would, plus
/// the newest verified, undamaged snapshot (see the module docs). One decision per snapshot,
/// newest first (equal times in their input order).
pub fn retain<Id: Clone>(snapshots: &[Candidate<Id>], keep: &Keep) -> Vec<Decision<Id>> {
    let mut order: Vec<&Candidate<Id>> = snapshots.iter().collect();
    // stable, like restic's sort.Stable
    order.sort_by_key(|c| std::cmp::Reverse(c.time));
    let newest_good = order.iter().position(|c| c.verified && !c.damaged);

    let mut left = [
        keep.last,
        keep.hourly,
        keep.daily,
        keep.weekly,
        keep.monthly,
        keep.yearly,
    ];
    let mut kept_bucket: [Option<i64>; 6] = [None; 6];
    order
        .iter()
        .enumerate()
        .map(|(nr, c)| {
            let mut reasons = Vec::new();
            for (i, rule) in RULES.into_iter().enumerate() {
                if left[i] == 0 {
                    continue;
                }
                let b = bucket(rule, c.time, nr);
                if kept_bucket[i] != Some(b) {
                    kept_bucket[i] = Some(b);
                    left[i] -= 1;
                    reasons.push(rule);
                }
            }
            if newest_good == Some(nr) {
                reasons.push(Reason::NewestVerified);
            }
            Decision {
                id: c.id.clone(),
                keep: !reasons.is_empty(),
                reasons,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Reason::*;

    fn keep(last: u32, hourly: u32, daily: u32, weekly: u32, monthly: u32, yearly: u32) -> Keep {
        Keep {
            last,
            hourly,
            daily,
            weekly,
            monthly,
            yearly,
        }
    }

    /// Candidates named by their times ("2024-01-31T10:15"), unverified; a time ending in
    /// `+v` is verified, `+d` damaged, `+vd` both.
    fn candidates(times: &[&'static str]) -> Vec<Candidate<&'static str>> {
        times
            .iter()
            .map(|&t| {
                let (time, flags) = t.split_once('+').unwrap_or((t, ""));
                Candidate {
                    id: t,
                    time: time.parse().unwrap(),
                    verified: flags.contains('v'),
                    damaged: flags.contains('d'),
                }
            })
            .collect()
    }

    struct Case {
        name: &'static str,
        keep: Keep,
        /// In any order: `retain` sorts.
        snapshots: &'static [&'static str],
        /// The kept ones, newest first, with their reasons.
        kept: &'static [(&'static str, &'static [Reason])],
    }

    /// Ten days around a year end whose ISO weeks straddle it: 2020-12-31 is a Thursday,
    /// so 2020 has an ISO week 53 that runs to Sunday 2021-01-03.
    const YEAR_END: &[&str] = &[
        "2020-12-27T12:00", // Sun, 2020-W52
        "2020-12-28T09:00", // Mon, 2020-W53
        "2020-12-31T23:00", // Thu, 2020-W53
        "2021-01-01T08:00", // Fri, 2020-W53
        "2021-01-03T23:59", // Sun, 2020-W53
        "2021-01-04T00:00", // Mon, 2021-W01
        "2021-01-05T10:00", // Tue, 2021-W01
    ];

    const DAYS: &[&str] = &[
        "2024-03-01T10:00",
        "2024-03-01T10:30", // same hour as the one before
        "2024-03-01T11:00",
        "2024-03-02T09:00",
        "2024-03-03T09:00",
        "2024-04-15T12:00",
        "2025-01-02T08:00",
    ];

    #[allow(clippy::too_many_lines)] // a table
    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "last keeps the newest n whatever their times",
                keep: keep(3, 0, 0, 0, 0, 0),
                snapshots: DAYS,
                kept: &[
                    ("2025-01-02T08:00", &[Last]),
                    ("2024-04-15T12:00", &[Last]),
                    ("2024-03-03T09:00", &[Last]),
                ],
            },
            Case {
                name: "last counts same-hour duplicates one by one",
                keep: keep(5, 0, 0, 0, 0, 0),
                snapshots: &["2024-03-01T10:00", "2024-03-01T10:30", "2024-03-01T10:45"],
                kept: &[
                    ("2024-03-01T10:45", &[Last]),
                    ("2024-03-01T10:30", &[Last]),
                    ("2024-03-01T10:00", &[Last]),
                ],
            },
            Case {
                name: "hourly keeps the newest of each hour",
                keep: keep(0, 3, 0, 0, 0, 0),
                snapshots: DAYS,
                kept: &[
                    ("2025-01-02T08:00", &[Hourly]),
                    ("2024-04-15T12:00", &[Hourly]),
                    ("2024-03-03T09:00", &[Hourly]),
                ],
            },
            Case {
                name: "hourly: of a same-hour pair only the newer is kept",
                keep: keep(0, 10, 0, 0, 0, 0),
                snapshots: &["2024-03-01T10:00", "2024-03-01T10:30", "2024-03-01T11:00"],
                kept: &[
                    ("2024-03-01T11:00", &[Hourly]),
                    ("2024-03-01T10:30", &[Hourly]),
                ],
            },
            Case {
                name: "daily keeps the newest of each day",
                keep: keep(0, 0, 4, 0, 0, 0),
                snapshots: DAYS,
                kept: &[
                    ("2025-01-02T08:00", &[Daily]),
                    ("2024-04-15T12:00", &[Daily]),
                    ("2024-03-03T09:00", &[Daily]),
                    ("2024-03-02T09:00", &[Daily]),
                ],
            },
            Case {
                name: "weekly uses ISO weeks: 2020-W53 runs into January 2021",
                keep: keep(0, 0, 0, 3, 0, 0),
                snapshots: YEAR_END,
                kept: &[
                    ("2021-01-05T10:00", &[Weekly]),
                    ("2021-01-03T23:59", &[Weekly]),
                    ("2020-12-27T12:00", &[Weekly]),
                ],
            },
            Case {
                name: "weekly: 2024-12-30 is already in 2025-W01",
                keep: keep(0, 0, 0, 5, 0, 0),
                snapshots: &[
                    "2024-12-29T10:00", // Sun, 2024-W52
                    "2024-12-30T10:00", // Mon, 2025-W01
                    "2025-01-05T10:00", // Sun, 2025-W01
                    "2025-01-06T10:00", // Mon, 2025-W02
                ],
                kept: &[
                    ("2025-01-06T10:00", &[Weekly]),
                    ("2025-01-05T10:00", &[Weekly]),
                    ("2024-12-29T10:00", &[Weekly]),
                ],
            },
            Case {
                name: "monthly and yearly use calendar months and years",
                keep: keep(0, 0, 0, 0, 2, 3),
                snapshots: YEAR_END,
                kept: &[
                    ("2021-01-05T10:00", &[Monthly, Yearly]),
                    ("2020-12-31T23:00", &[Monthly, Yearly]),
                ],
            },
            Case {
                name: "combined rules: each compares with its own last kept bucket",
                keep: keep(1, 0, 2, 0, 2, 0),
                snapshots: DAYS,
                kept: &[
                    ("2025-01-02T08:00", &[Last, Daily, Monthly]),
                    ("2024-04-15T12:00", &[Daily, Monthly]),
                ],
            },
            Case {
                name: "combined rules over same-day snapshots",
                keep: keep(2, 2, 3, 1, 0, 0),
                snapshots: &[
                    "2024-03-01T10:00",
                    "2024-03-01T10:30",
                    "2024-03-01T11:00",
                    "2024-03-02T09:00",
                ],
                kept: &[
                    ("2024-03-02T09:00", &[Last, Hourly, Daily, Weekly]),
                    ("2024-03-01T11:00", &[Last, Hourly, Daily]),
                ],
            },
            Case {
                name: "zero counts keep nothing",
                keep: Keep::default(),
                snapshots: DAYS,
                kept: &[],
            },
            Case {
                name: "zero counts still keep the newest verified snapshot",
                keep: Keep::default(),
                snapshots: &[
                    "2024-03-01T10:00+v",
                    "2024-03-02T10:00+v",
                    "2024-03-03T10:00",
                ],
                kept: &[("2024-03-02T10:00+v", &[NewestVerified])],
            },
            Case {
                name: "damaged newer snapshots do not count as the newest verified",
                keep: keep(1, 0, 0, 0, 0, 0),
                snapshots: &[
                    "2024-03-01T10:00+v",
                    "2024-03-02T10:00+vd",
                    "2024-03-03T10:00+d",
                    "2024-03-04T10:00+vd",
                ],
                kept: &[
                    ("2024-03-04T10:00+vd", &[Last]),
                    ("2024-03-01T10:00+v", &[NewestVerified]),
                ],
            },
            Case {
                name: "a rule and the newest verified can both keep one snapshot",
                keep: keep(0, 0, 1, 0, 0, 0),
                snapshots: &["2024-03-01T10:00+v", "2024-03-01T09:00"],
                kept: &[("2024-03-01T10:00+v", &[Daily, NewestVerified])],
            },
        ]
    }

    #[test]
    fn table() {
        for case in cases() {
            let snapshots = candidates(case.snapshots);
            let decisions = retain(&snapshots, &case.keep);
            assert_eq!(decisions.len(), snapshots.len(), "{}", case.name);
            let kept: Vec<(&str, &[Reason])> = decisions
                .iter()
                .filter(|d| d.keep)
                .map(|d| (d.id, d.reasons.as_slice()))
                .collect();
            assert_eq!(kept, case.kept, "{}", case.name);
            for d in &decisions {
                assert_eq!(d.keep, !d.reasons.is_empty(), "{}: {}", case.name, d.id);
            }
        }
    }

    #[test]
    fn empty_input() {
        let none: Vec<Candidate<u32>> = vec![];
        assert!(retain(&none, &keep(1, 1, 1, 1, 1, 1)).is_empty());
    }

    #[test]
    fn equal_times_keep_their_input_order() {
        let mut s = candidates(&["2024-03-01T10:00", "2024-03-01T10:00", "2024-03-01T10:00"]);
        for (i, c) in s.iter_mut().enumerate() {
            c.id = ["a", "b", "c"][i];
        }
        let d = retain(&s, &keep(0, 1, 0, 0, 0, 0));
        let order: Vec<_> = d.iter().map(|d| (d.id, d.keep)).collect();
        assert_eq!(order, [("a", true), ("b", false), ("c", false)]);
    }

    #[test]
    fn reasons_read_like_restic() {
        assert_eq!(Last.to_string(), "last snapshot");
        assert_eq!(Weekly.to_string(), "weekly snapshot");
    }
}
