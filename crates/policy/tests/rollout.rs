//! Properties of the rolling update: within its ceiling and floor at every step, and it
//! always finishes when replicas become ready.

use policy::rollout::Rolling;
use proptest::prelude::*;

proptest! {
    #[test]
    fn a_rolling_update_stays_within_surge_and_floor_and_finishes(
        desired in 1u32..20,
        surge in 0u32..5,
        unavailable in 0u32..5,
        min_available in 0u32..20,
    ) {
        prop_assume!(surge + unavailable > 0);
        let min_available = min_available.min(desired);
        // A budget that leaves no room and no surge can never move: the progress deadline
        // is what ends that one.
        prop_assume!(surge > 0 || min_available < desired);
        let mut r = Rolling {
            desired, surge, unavailable, min_available,
            old_live: desired, old_ready: desired, new_live: 0, new_available: 0,
        };
        let floor = r.floor();
        for _ in 0..(4 * desired + 10) {
            if r.done() { break; }
            let step = r.next();
            // Stops take effect at once; starts become ready at the next round.
            r.old_live -= step.stop;
            r.old_ready = r.old_ready.min(r.old_live);
            prop_assert!(r.old_ready + r.new_available >= floor,
                "available {} below the floor {floor}: {r:?} after {step:?}", r.old_ready + r.new_available);
            r.new_available = r.new_live;
            r.new_live += step.start;
            prop_assert!(r.old_live + r.new_live <= desired + surge, "above the ceiling: {r:?}");
            let next = r.next();
            if next.start == 0 && next.stop == 0 && r.new_available == r.new_live {
                prop_assert!(r.done(), "stuck: {r:?}");
            }
        }
        prop_assert!(r.done(), "not finished: {r:?}");
    }
}
