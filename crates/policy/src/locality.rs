//! Cluster mode: whether a request may go to another node's replica (`prefer_local`).

/// Whether the balancer keeps to this node's replicas for a try: with `prefer_local`, while
/// other nodes' replicas are in the set and one of this node's can take the try (ready,
/// not ejected, breaker closed, not tried yet). With none of this node's able to, every
/// node's replicas are candidates; without `prefer_local` they always are. The two
/// questions are asked only when needed, in this order (each walks the replica set, on
/// the request path).
pub fn local_only(
    prefer_local: bool,
    any_remote: impl FnOnce() -> bool,
    any_local_candidate: impl FnOnce() -> bool,
) -> bool {
    prefer_local && any_remote() && any_local_candidate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_replicas_first_while_one_can_take_the_try() {
        let yes = || true;
        let no = || false;
        assert!(local_only(true, yes, yes));
        // None of this node's can: the other nodes' take it.
        assert!(!local_only(true, yes, no));
        // Balanced over every node alike, without asking anything.
        let asked = || panic!("asked without prefer_local");
        assert!(!local_only(false, asked, asked));
        // Nothing remote: nothing to keep out, and no candidate walk.
        assert!(!local_only(true, no, || panic!(
            "asked with nothing remote"
        )));
    }
}
