//! External authorization (Envoy's `ext_authz`, Traefik's ForwardAuth, nginx's
//! `auth_request`): what the proxy does with the auth service's reply, and — the
//! fail-open or fail-closed choice — with no usable reply at all. The proxy asks and
//! counts; this only decides.

/// What came back from the auth service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthReply {
    /// A response with this status (its body read whole, within its bounds).
    Status(u16),
    /// No usable response: connection refused or reset, the timeout ran out, the answer
    /// was not HTTP or its body was over the bound.
    Failed,
}

/// What to do when the decision cannot be made (`on_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Fail closed: refuse the request (503). The default, as Envoy's
    /// `failure_mode_allow = false`: an outage of the auth service must not open the door.
    #[default]
    Deny,
    /// Fail open: let the request through unauthenticated (and count it).
    Allow,
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthDecision {
    /// The auth service said yes (2xx): forward the request.
    Allow,
    /// The auth service said no (any status but 2xx and 5xx): its answer goes to the
    /// client as it gave it.
    Deny,
    /// No decision could be made, and `on_error = "deny"`: bulwark's own 503.
    FailClosed,
    /// No decision could be made, and `on_error = "allow"`: forward the request anyway.
    FailOpen,
}

impl AuthDecision {
    /// Whether the request goes on to the replicas.
    pub fn forwards(self) -> bool {
        matches!(self, AuthDecision::Allow | AuthDecision::FailOpen)
    }
}

/// The decision for `reply` under `on_error`.
///
/// A 5xx is the auth service failing, not deciding (it could not reach its own database,
/// it is overloaded), so it is treated like no reply; a 3xx (a redirect to a login page),
/// a 401, a 403 or a 429 are decisions and reach the client.
pub fn decide(reply: AuthReply, on_error: OnError) -> AuthDecision {
    match reply {
        AuthReply::Status(200..=299) => AuthDecision::Allow,
        AuthReply::Status(s) if (500..=599).contains(&s) => failed(on_error),
        AuthReply::Status(_) => AuthDecision::Deny,
        AuthReply::Failed => failed(on_error),
    }
}

fn failed(on_error: OnError) -> AuthDecision {
    match on_error {
        OnError::Deny => AuthDecision::FailClosed,
        OnError::Allow => AuthDecision::FailOpen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn on_error() -> impl Strategy<Value = OnError> {
        prop_oneof![Just(OnError::Deny), Just(OnError::Allow)]
    }

    fn reply() -> impl Strategy<Value = AuthReply> {
        prop_oneof![
            Just(AuthReply::Failed),
            (100u16..1000).prop_map(AuthReply::Status)
        ]
    }

    proptest! {
        /// `on_error` matters only when there is no decision: a yes or a no from the auth
        /// service is the same in both modes.
        #[test]
        fn on_error_only_decides_failures(status in 100u16..1000) {
            let deny = decide(AuthReply::Status(status), OnError::Deny);
            let allow = decide(AuthReply::Status(status), OnError::Allow);
            prop_assert_eq!(deny == allow, !(500..=599).contains(&status));
        }

        /// Fail closed never forwards without a 2xx.
        #[test]
        fn fail_closed_forwards_only_on_a_yes(r in reply()) {
            let d = decide(r, OnError::Deny);
            prop_assert_eq!(d.forwards(), matches!(r, AuthReply::Status(200..=299)));
            prop_assert!(d != AuthDecision::FailOpen);
        }

        /// Fail open still passes every explicit no to the client.
        #[test]
        fn fail_open_keeps_every_no(r in reply()) {
            let d = decide(r, OnError::Allow);
            let no = matches!(r, AuthReply::Status(s) if !(200..=299).contains(&s) && !(500..=599).contains(&s));
            prop_assert_eq!(d == AuthDecision::Deny, no);
            prop_assert!(d != AuthDecision::FailClosed);
        }

        /// Every reply gets exactly the decision its class says, in either mode.
        #[test]
        fn decisions_follow_the_class(r in reply(), mode in on_error()) {
            let d = decide(r, mode);
            let expected = match r {
                AuthReply::Status(s) if (200..300).contains(&s) => AuthDecision::Allow,
                AuthReply::Status(s) if !(500..600).contains(&s) => AuthDecision::Deny,
                _ if mode == OnError::Deny => AuthDecision::FailClosed,
                _ => AuthDecision::FailOpen,
            };
            prop_assert_eq!(d, expected);
        }
    }

    #[test]
    fn the_default_fails_closed() {
        assert_eq!(OnError::default(), OnError::Deny);
        assert_eq!(
            decide(AuthReply::Failed, OnError::default()),
            AuthDecision::FailClosed
        );
        assert_eq!(
            decide(AuthReply::Status(302), OnError::Allow),
            AuthDecision::Deny
        );
    }
}
