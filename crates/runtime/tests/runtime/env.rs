//! `env` values get the substitutions `run` gets, in replicas and in exec probes.

use crate::harness::*;

#[tokio::test]
async fn env_values_get_each_replicas_port_and_name() {
    let mut rt = Rt::start(
        r#"
[services.s]
run = ["sh", "-c", "[ \"$LISTEN\" = \"127.0.0.1:$PORT\" ] && echo per-replica; echo who=$WHO; exec sleep 60"]
replicas = 2
env = { LISTEN = "127.0.0.1:{port}", WHO = "{service}/{index}", PLAIN = "{unknown}" }
[services.s.readiness]
exec = ["sh", "-c", "[ \"$LISTEN\" = \"127.0.0.1:$PORT\" ] && [ \"$PLAIN\" = \"{unknown}\" ]"]
period = "100ms"
"#,
    );
    rt.line("s", 0, "per-replica").await;
    rt.line("s", 1, "per-replica").await;
    rt.line("s", 1, "who=s/1").await;
    rt.until("s", |s| all_ready(s, 2)).await;
    rt.sup.shutdown().await;
}
