use std::sync::atomic::{AtomicUsize, Ordering};

use bus::Endpoint;
use spec::Balance;

/// Picks a replica among `ready` that is not in `tried`.
///
/// P2C: two distinct random candidates, the one with fewer requests in flight wins (ties
/// to the first). Round robin: the next untried replica after a shared cursor.
pub(crate) fn pick<'a>(
    balance: Balance,
    cursor: &AtomicUsize,
    ready: &'a [Endpoint],
    tried: &[u32],
) -> Option<&'a Endpoint> {
    let untried = |e: &&Endpoint| !tried.contains(&e.replica);
    let n = ready.len();
    if n == 0 {
        return None;
    }
    match balance {
        Balance::P2c if tried.is_empty() && n >= 2 => {
            let a = rand::random_range(0..n);
            let mut b = rand::random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (ea, eb) = (&ready[a], &ready[b]);
            Some(if eb.load.inflight() < ea.load.inflight() {
                eb
            } else {
                ea
            })
        }
        Balance::P2c => ready
            .iter()
            .filter(untried)
            .min_by_key(|e| e.load.inflight()),
        Balance::RoundRobin => {
            let start = cursor.fetch_add(1, Ordering::Relaxed);
            (0..n).map(|i| &ready[(start + i) % n]).find(|e| untried(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::Load;
    use std::sync::Arc;

    fn eps(n: u32) -> Vec<Endpoint> {
        (0..n)
            .map(|i| Endpoint {
                replica: i,
                addr: ([127, 0, 0, 1], 1000 + i as u16).into(),
                load: Arc::new(Load::default()),
            })
            .collect()
    }

    #[test]
    fn round_robin_cycles_and_skips_tried() {
        let ready = eps(3);
        let c = AtomicUsize::new(0);
        let picks: Vec<u32> = (0..6)
            .map(|_| pick(Balance::RoundRobin, &c, &ready, &[]).unwrap().replica)
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        let p = pick(Balance::RoundRobin, &c, &ready, &[0, 1]).unwrap();
        assert_eq!(p.replica, 2);
        assert!(pick(Balance::RoundRobin, &c, &ready, &[0, 1, 2]).is_none());
        assert!(pick(Balance::P2c, &c, &[], &[]).is_none());
    }

    #[test]
    fn p2c_avoids_the_busy_replica() {
        let ready = eps(2);
        let _busy: Vec<_> = (0..5).map(|_| ready[0].load.acquire()).collect();
        let c = AtomicUsize::new(0);
        for _ in 0..50 {
            assert_eq!(pick(Balance::P2c, &c, &ready, &[]).unwrap().replica, 1);
        }
        // retries pick the least loaded untried replica
        assert_eq!(pick(Balance::P2c, &c, &ready, &[1]).unwrap().replica, 0);
    }
}
