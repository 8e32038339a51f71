//! Cluster mode: whether a request may go to another node's replica (`prefer_local`).

/// Whether the balancer keeps to this node's replicas for a try: with `prefer_local`, while
/// other nodes' replicas are in the set and one of this node's can take the try (ready,
/// not ejected, breaker closed, not tried yet). With none of this node's able to, every
/// node's replicas are candidates; without `prefer_local` they always are.
pub fn local_only(prefer_local: bool, any_remote: bool, any_local_candidate: bool) -> bool {
    prefer_local && any_remote && any_local_candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_replicas_first_while_one_can_take_the_try() {
        assert!(local_only(true, true, true));
        // None of this node's can: the other nodes' take it.
        assert!(!local_only(true, true, false));
        // Balanced over every node alike.
        assert!(!local_only(false, true, true));
        // Nothing remote: nothing to keep out.
        assert!(!local_only(true, false, true));
    }
}
