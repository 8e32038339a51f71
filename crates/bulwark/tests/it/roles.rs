//! API tokens with roles and the audit log (issue 18): `bulwark token create|list|revoke`,
//! each call refused below the role it needs, revocation at once, only hashes kept, every
//! change and refusal in `bulwark audit`, all across a restart.

use std::process::Output;

use crate::harness::*;

/// A call to the API with `token`.
fn call_as(stack: &Stack, token: &str, method: &str, path: &str) -> (u16, String) {
    http(
        stack.api,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        ),
    )
}

/// The CLI against this stack with `BULWARK_TOKEN=token`.
fn cli_as(stack: &Stack, token: &str, args: &[&str]) -> Output {
    std::process::Command::new(BULWARK)
        .args(args)
        .env("BULWARK_STATE_DIR", stack.state_dir())
        .env("BULWARK_TOKEN", token)
        .output()
        .unwrap()
}

/// `POST /v1/tokens` with the owner's token and `body`.
fn post_token(stack: &Stack, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(stack.api).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        s,
        "POST /v1/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        stack.token,
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let (code, body) = parse_response(&raw);
    (code.unwrap(), body)
}

fn create(stack: &Stack, name: &str, role: &str) -> String {
    let out = stack.cli(&["token", "create", name, "--role", role]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(token.len(), 64, "{token}");
    token
}

#[test]
fn tokens_have_roles_are_revoked_at_once_and_only_their_hashes_are_kept() {
    let mut stack = Stack::start(&Demo::new("web").build());
    stack.wait_ready("web", 1);
    let viewer = create(&stack, "dashboards", "viewer");
    let operator = create(&stack, "oncall", "operator");

    // A viewer reads, and nothing more.
    assert_eq!(call_as(&stack, &viewer, "GET", "/v1/status").0, 200);
    assert_eq!(call_as(&stack, &viewer, "GET", "/v1/events").0, 200);
    let (code, body) = call_as(&stack, &viewer, "POST", "/v1/services/web/restart");
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("dashboards")
            && body.contains("has the role viewer; POST /v1/services/web/restart needs operator"),
        "{body}"
    );
    let out = cli_as(&stack, &viewer, &["restart", "web"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs operator"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An operator acts, but neither reloads nor manages tokens.
    let out = cli_as(&stack, &operator, &["restart", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(call_as(&stack, &operator, "POST", "/v1/reload").0, 403);
    assert_eq!(call_as(&stack, &operator, "GET", "/v1/tokens").0, 403);
    let out = cli_as(
        &stack,
        &operator,
        &["token", "create", "x", "--role", "admin"],
    );
    assert!(!out.status.success());

    // The list names them, never shows them.
    let out = stack.cli(&["token", "list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("dashboards") && list.contains("viewer") && list.contains("oncall"),
        "{list}"
    );
    assert!(
        !list.contains(&viewer) && !list.contains(&operator),
        "{list}"
    );
    let journal = std::fs::read(stack.state_dir().join("journal.redb")).unwrap();
    for t in [&viewer, &operator] {
        assert!(
            !journal.windows(t.len()).any(|w| w == t.as_bytes()),
            "a token is in the journal in clear"
        );
    }

    // Revoked: refused from the next request on.
    let out = stack.cli(&["token", "revoke", "dashboards"]);
    assert!(out.status.success());
    assert_eq!(call_as(&stack, &viewer, "GET", "/v1/status").0, 401);
    assert_eq!(call_as(&stack, "not-a-token", "GET", "/v1/status").0, 401);

    // The audit log has every call that changed something or was refused, with who made
    // it, and only an admin reads it.
    assert_eq!(call_as(&stack, &operator, "GET", "/v1/audit").0, 403);
    let records = stack.audit();
    let has = |who: &str, method: &str, path: &str, outcome: &str| {
        records.iter().any(|r| {
            r["who"] == who && r["method"] == method && r["path"] == path && r["outcome"] == outcome
        })
    };
    assert!(has("owner", "POST", "/v1/tokens", "done"), "{records:#?}");
    assert!(has(
        "dashboards",
        "POST",
        "/v1/services/web/restart",
        "refused"
    ));
    assert!(has("oncall", "POST", "/v1/services/web/restart", "done"));
    assert!(has("oncall", "POST", "/v1/reload", "refused"));
    assert!(has("oncall", "GET", "/v1/tokens", "refused"));
    assert!(has("owner", "DELETE", "/v1/tokens/dashboards", "done"));
    assert!(has("-", "GET", "/v1/status", "refused"), "{records:#?}");
    assert!(
        !records
            .iter()
            .any(|r| r["method"] == "GET" && r["outcome"] == "done"),
        "reads are not audited: {records:#?}"
    );
    let before = records.len();

    // A restart keeps the tokens, the revocation and the audit log.
    stack.restart();
    assert!(stack.audit().len() >= before);
    assert_eq!(call_as(&stack, &operator, "GET", "/v1/status").0, 200);
    assert_eq!(call_as(&stack, &viewer, "GET", "/v1/status").0, 401);
    let (code, body) = stack.call("GET", "/v1/tokens", "127.0.0.1", true);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("oncall") && !body.contains("dashboards"),
        "{body}"
    );
}

#[test]
fn token_and_audit_requests_a_client_gets_wrong_are_refused_with_the_reason() {
    let stack = Stack::start(&Demo::new("web").build());
    create(&stack, "oncall", "operator");
    // What a client gets wrong is refused with the reason, and makes nothing.
    for (body, code, says) in [
        ("{\"name\": \"x\"", 400, "token:"),
        (
            "{\"name\": \"x\", \"role\": \"root\"}",
            400,
            "unknown variant",
        ),
        (
            "{\"name\": \"a b\", \"role\": \"viewer\"}",
            400,
            "1 to 64 ASCII",
        ),
        (
            "{\"name\": \"owner\", \"role\": \"admin\"}",
            400,
            "not `owner`",
        ),
        ("{\"name\": \"oncall\", \"role\": \"admin\"}", 409, "exists"),
    ] {
        let (got, answer) = post_token(&stack, body);
        assert_eq!(got, code, "{body}: {answer}");
        assert!(answer.contains(says), "{body}: {answer}");
    }
    let (code, body) = stack.call("GET", "/v1/audit?after=x", "127.0.0.1", true);
    assert_eq!(code, 400, "{body}");
    let refused = stack
        .audit()
        .iter()
        .filter(|r| r["path"] == "/v1/tokens" && r["outcome"] == "failed")
        .count();
    assert_eq!(refused, 5, "each refused creation is audited");
    let list = String::from_utf8_lossy(&stack.cli(&["token", "list"]).stdout).into_owned();
    assert_eq!(list.lines().count(), 1, "only oncall was made: {list}");
}
