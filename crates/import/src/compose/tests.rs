use crate::check::Out;
use crate::{Error, compose};

mod ports;
mod values;

pub(super) fn import(yaml: &str) -> Out {
    Out::of(compose("compose.yaml", yaml).unwrap_or_else(|e| panic!("{e}")))
}

fn error(yaml: &str) -> String {
    match compose("compose.yaml", yaml) {
        Ok(i) => panic!("imported:\n{}", i.stack),
        Err(e) => e.to_string(),
    }
}

#[test]
fn entrypoint_comes_before_command_and_lists_keep_their_words() {
    import(
        r#"
services:
  job:
    entrypoint: ["/usr/bin/env", "python3"]
    command: ["-m", "worker", 3, "--name", "a b", ""]
    restart: always
"#,
    )
    .has(r#"run = ["/usr/bin/env", "python3", "-m", "worker", "3", "--name", "a b", ""]"#);
    import("services:\n  s:\n    command: sh -c 'echo \"hi there\"; exec sleep 9'\n    restart: always\n")
        .has(r#"run = ["sh", "-c", 'echo "hi there"; exec sleep 9']"#);
}

#[test]
fn command_without_entrypoint_is_the_images_entrypoints_arguments() {
    import(
        r#"
services:
  proxy:
    image: traefik
    command: --api.insecure=true
  web:
    image: web
    command: ./web
    restart: always
  built:
    build: .
    command: ./built
    restart: always
  job:
    image: job
    entrypoint: []
    command: [./job]
    restart: always
  plain:
    command: ./plain
    restart: always
"#,
    )
    .lacks("[services.proxy]")
    .has("[services.web]\nrun = [\"./web\"]")
    .has("[services.job]\nrun = [\"./job\"]")
    .note("compose.yaml: services.proxy: not carried over: `command` without `entrypoint` is the arguments of the image's ENTRYPOINT, which is not known here; add `entrypoint` with the program to run")
    .note("compose.yaml: services.web.command: the image's ENTRYPOINT, if it has one, is not known to bulwark: `command` runs as the whole command line")
    .note("compose.yaml: services.built.command: the image's ENTRYPOINT, if it has one, is not known to bulwark: `command` runs as the whole command line")
    .no_note("services.job.command")
    .no_note("services.plain.command");
    // With an entrypoint, a command of flags is its arguments.
    import("services:\n  s:\n    entrypoint: traefik\n    command: --api.insecure=true\n    restart: always\n")
        .has(r#"run = ["traefik", "--api.insecure=true"]"#);
}

#[test]
fn a_service_without_a_command_is_left_out_with_its_dependents_links() {
    import(
        r#"
services:
  db:
    image: postgres:16
  cache:
    build: ./cache
  broken:
    command: "echo 'unterminated"
  web:
    command: ./web
    restart: always
    depends_on: [db, cache, broken, ghost]
"#,
    )
    .lacks("[services.db]")
    .lacks("depends_on")
    .note("compose.yaml: services.db: not carried over: it has an image (`postgres:16`) but no `command`: bulwark runs commands on the host, containers come later; add `command` with the program to run")
    .note("compose.yaml: services.cache: not carried over: it has an image but no `command`: bulwark runs commands on the host, containers come later; add `command` with the program to run")
    .note("compose.yaml: services.broken: not carried over: `command`: cannot split \"echo 'unterminated\" into words: missing closing quote")
    .note("compose.yaml: services.web.depends_on[0]: not carried over: `db` is not imported (see services.db); the dependency is dropped")
    .note("compose.yaml: services.web.depends_on[3]: not carried over: there is no service `ghost`; the dependency is dropped");
}

#[test]
fn healthchecks_become_readiness_probes_with_composes_timings() {
    let hc = |check: &str| {
        import(&format!(
            "services:\n  s:\n    command: srv --port 8000\n    restart: always\n    ports: [\"8080:8000\"]\n    healthcheck:\n{check}"
        ))
    };
    hc("      test: [\"CMD\", \"/bin/check\", \"--port\", \"8000\"]\n")
        .has(
            r#"
[services.s.readiness]
exec = ["/bin/check", "--port", "{port}"]
period = "30s"
timeout = "30s"
failure_threshold = 3
"#,
        )
        .note("compose.yaml: services.s.healthcheck: became the readiness probe: besides gating `depends_on` as in Compose, it decides which replicas get traffic")
        .note("compose.yaml: services.s.healthcheck.test[3]: `8000` became `{port}`: each replica listens on its own port (also in $PORT)");
    hc("      test: [\"CMD-SHELL\", \"pg_isready -U $${USER} || exit 1\"]\n      interval: 1m30s\n      timeout: 500ms\n      retries: 5\n      start_period: 10s\n      start_interval: 1s\n")
        .has(
            r#"
exec = ["sh", "-c", "pg_isready -U ${USER} || exit 1"]
period = "1m 30s"
timeout = "500ms"
initial_delay = "10s"
failure_threshold = 5
"#,
        )
        .note("compose.yaml: services.s.healthcheck.start_period: became `initial_delay`: bulwark does not probe during it (Compose probes, and ignores failures)")
        .note("compose.yaml: services.s.healthcheck.start_interval: not carried over: bulwark probes at one `period`");
    hc("      test: curl -fsS http://127.0.0.1:8000/healthz\n      interval: 5s\n")
        .has("[services.s.readiness]\nhttp = \"/healthz\"\nperiod = \"5s\"")
        .note("compose.yaml: services.s.healthcheck.test: `curl -fsS http://127.0.0.1:8000/healthz` became http = \"/healthz\": bulwark sends the GET itself (healthy on 200–399), no curl or wget needed on the host")
        .no_note("proxied as HTTP");
    hc("      test: [\"NONE\"]\n").lacks("readiness");
    hc("      test: [\"CMD\", \"x\"]\n      disable: true\n").lacks("readiness");
    hc("      interval: 5s\n")
        .lacks("readiness")
        .note("compose.yaml: services.s.healthcheck: not carried over: it has no `test`: the image's HEALTHCHECK is not known here; no readiness probe");
    hc("      test: [\"WHAT\", \"x\"]\n")
        .note("compose.yaml: services.s.healthcheck.test: not carried over: expected [\"CMD\", …], [\"CMD-SHELL\", \"…\"] or [\"NONE\"]");
    hc("      test: [\"CMD\", \"x\"]\n      interval: 0s\n      timeout: fast\n      retries: 0\n      start_period: 99999999999999h\n")
        .has("period = \"30s\"\ntimeout = \"30s\"\nfailure_threshold = 3")
        .note("compose.yaml: services.s.healthcheck.interval: not carried over: must be more than 0; Compose's default of 30s is used")
        .note("compose.yaml: services.s.healthcheck.timeout: not carried over: expected a duration such as \"10s\" or \"1m30s\", found \"fast\"; 30s is used")
        .note("compose.yaml: services.s.healthcheck.retries: not carried over: expected a whole number of at least 1, found \"0\"; 3 is used")
        .note("compose.yaml: services.s.healthcheck.start_period: not carried over: \"99999999999999h\" is longer than the 24h a stack file allows");
    hc("      test: check\n      interval: 48h\n")
        .note("compose.yaml: services.s.healthcheck.interval: not carried over: \"48h\" is longer than the 24h a stack file allows; 30s is used");
    hc("      - 5\n").note(
        "compose.yaml: services.s.healthcheck: not carried over: expected a mapping, found a list",
    );
}

#[test]
fn restart_policies() {
    let restart =
        |value: &str| import(&format!("services:\n  s:\n    command: srv\n    {value}\n"));
    restart("restart: \"no\"").has(r#"restart = "never""#);
    restart("restart: no").has(r#"restart = "never""#);
    restart("restart: false").has(r#"restart = "never""#);
    restart("restart: always")
        .has(r#"restart = "always""#)
        .no_note("restart");
    restart("restart: on-failure")
        .has(r#"restart = "on-failure""#)
        .no_note("restart");
    restart("restart: on-failure:3")
        .has(r#"restart = "on-failure""#)
        .note("compose.yaml: services.s.restart: \"on-failure:3\" became \"on-failure\": bulwark keeps restarting with backoff, with no maximum");
    restart("restart: unless-stopped")
        .has(r#"restart = "always""#)
        .note("compose.yaml: services.s.restart: \"unless-stopped\" became \"always\": bulwark restarts until it stops the stack");
    restart("restart: sometimes")
        .lacks("restart =")
        .note("compose.yaml: services.s.restart: not carried over: expected \"no\", \"always\", \"on-failure[:N]\" or \"unless-stopped\", found \"sometimes\"");
    restart("image: x")
        .lacks("restart =")
        .note("compose.yaml: services.s.restart: not set: Compose does not restart the service; bulwark's default restarts it always (set restart = \"never\" to keep Compose's behaviour)");
    restart("deploy: {restart_policy: {condition: on-failure, max_attempts: 3}}")
        .has(r#"restart = "on-failure""#)
        .no_note("services.s.restart:")
        .note("compose.yaml: services.s.deploy.restart_policy.max_attempts: not carried over: bulwark restarts with its own backoff (`backoff.initial`, `backoff.max`), forever");
    restart("deploy: {restart_policy: {condition: sometimes}}")
        .lacks("restart =")
        .note("compose.yaml: services.s.deploy.restart_policy.condition: not carried over: expected \"none\", \"on-failure\" or \"any\", found \"sometimes\"; `restart` is not set either, so bulwark's default restarts it always (set restart = \"never\" or \"on-failure\" to choose)");
    restart("restart: always\n    deploy: {restart_policy: {condition: sometimes}}")
        .note("compose.yaml: services.s.deploy.restart_policy.condition: not carried over: expected \"none\", \"on-failure\" or \"any\", found \"sometimes\"");
    restart("restart: always\n    deploy: {restart_policy: {condition: none}}")
        .has(r#"restart = "always""#)
        .note("compose.yaml: services.s.deploy.restart_policy.condition: not carried over: `restart` is used instead");
}

#[test]
fn dependencies_and_their_conditions() {
    let out = import(
        r#"
services:
  web:
    command: web
    restart: always
    depends_on:
      db: {condition: service_healthy, restart: true}
      cache: {condition: service_started, required: false}
      migrate: {condition: service_completed_successfully}
      other: {condition: sometime}
  db: {command: db, restart: always}
  cache: {command: cache, restart: always}
  migrate: {command: migrate, restart: "no"}
  other: {command: other, restart: always}
  api:
    command: api
    restart: always
    depends_on: [db]
"#,
    );
    out.has("[services.web]\nrun = [\"web\"]\nrestart = \"always\"\ndepends_on = [\"db\", \"cache\"]")
        .has("[services.api]\nrun = [\"api\"]\nrestart = \"always\"\ndepends_on = [\"db\"]")
        .note("compose.yaml: services.web.depends_on.db.restart: not carried over: bulwark does not restart a service when its dependency restarts")
        .note("compose.yaml: services.web.depends_on.cache: `cache` must have a ready replica before this service starts (Compose: only started)")
        .note("compose.yaml: services.web.depends_on.cache.required: not carried over: every dependency is required in bulwark")
        .note("compose.yaml: services.web.depends_on.migrate: not carried over: bulwark has no run-to-completion services; `migrate` is not waited for")
        .note("compose.yaml: services.web.depends_on.other: not carried over: unknown condition \"sometime\"; the dependency is dropped")
        .note("compose.yaml: services.api.depends_on[0]: `db` must have a ready replica before this service starts (Compose: only started)");
}

#[test]
fn replicas_stop_settings_and_directory() {
    import(
        r#"
services:
  s:
    command: srv
    restart: always
    deploy:
      replicas: 3
      resources: {limits: {memory: 1G}}
      placement: {constraints: [node.role == manager]}
    scale: 5
    stop_signal: SIGINT
    stop_grace_period: 1m30s
    working_dir: /app
"#,
    )
    .has("replicas = 3\nrestart = \"always\"\ncwd = \"/app\"\nstop_signal = \"SIGINT\"\nstop_grace = \"1m 30s\"")
    .note("compose.yaml: services.s.deploy.resources: not carried over: resource limits come with container support")
    .note("compose.yaml: services.s.deploy.placement: not carried over: bulwark runs on one host")
    .note("compose.yaml: services.s.scale: not carried over: `deploy.replicas` is used instead")
    .note("compose.yaml: services.s.working_dir: \"/app\" is a directory in the container; the command runs there on the host (`cwd`), so it must exist");
    import("services:\n  s:\n    command: srv\n    restart: always\n    scale: 2\n")
        .has("replicas = 2");
    import("services:\n  s:\n    command: srv\n    restart: always\n    scale: 1001\n    stop_signal: SIGFOO\n    stop_grace_period: 10\n    working_dir: [a]\n    deploy: {replicas: 99999999999999999999999}\n")
        .lacks("replicas =")
        .lacks("stop_")
        .lacks("cwd")
        .note("compose.yaml: services.s.deploy.replicas: not carried over: expected a whole number from 0 to 1000, found \"99999999999999999999999\"")
        .note("compose.yaml: services.s.stop_signal: not carried over: expected a signal name such as \"SIGTERM\", found \"SIGFOO\"")
        .note("compose.yaml: services.s.stop_grace_period: not carried over: expected a duration such as \"10s\" or \"1m30s\", found \"10\"")
        .note("compose.yaml: services.s.working_dir: not carried over: expected a directory, found a list");
}

#[test]
fn everything_about_the_container_is_noted() {
    let out = import(
        r#"
version: "3.9"
x-common: &common
  restart: always
  logging: {driver: json-file}
services:
  web:
    <<: *common
    command: web
    image: web:1
    build: {context: .}
    container_name: shop-web
    user: "1000"
    volumes: [./data:/data]
    networks: [front]
    labels: {team: shop}
    expose: ["9000"]
    x-note: hi
volumes: {data: {}}
networks: {front: {}}
secrets: {key: {file: ./key}}
configs: {conf: {file: ./conf}}
"#,
    );
    out.has("restart = \"always\"");
    for line in [
        "version: not carried over: obsolete; Compose ignores it too",
        "x-common: not carried over: an extension field",
        "volumes: not carried over: bulwark runs commands on the host, where the files already are; volumes come with containers",
        "networks: not carried over: replicas share the host's network; services reach each other through their expose addresses",
        "secrets: not carried over: bulwark runs commands on the host, where the files already are; to pass one as an environment variable, use a service's `secrets = { NAME = \"FILE\" }`",
        "configs: not carried over: bulwark runs commands on the host, where the files already are; put values in `env`",
        "services.web.image: not carried over: bulwark runs commands on the host; containers come later",
        "services.web.command: the image's ENTRYPOINT, if it has one, is not known to bulwark: `command` runs as the whole command line",
        "services.web.build: not carried over: bulwark runs commands on the host and builds nothing; containers come later",
        "services.web.container_name: not carried over: replicas are named SERVICE/INDEX",
        "services.web.user: not carried over: replicas run as bulwark's own processes; container settings come with containers",
        "services.web.volumes: not carried over: bulwark runs commands on the host, where the files already are; mounts come with containers",
        "services.web.networks: not carried over: replicas share the host's network; services reach each other through their expose addresses",
        "services.web.labels: not carried over: a stack file has no labels",
        "services.web.expose[0]: the container port 9000 is made per replica ({port}, $PORT); Compose does not publish it, so it is not proxied: add [services.web.expose] with `listen` to proxy it",
        "services.web.expose: the container port 9000 is in neither the command nor the environment: the program must listen on the port bulwark gives each replica, in $PORT",
        "services.web.x-note: not carried over: an extension field",
        "services.web.logging: not carried over: replica output goes to bulwark's stdout and `bulwark logs`",
    ] {
        out.note(&format!("compose.yaml: {line}"));
    }
    assert_eq!(out.notes.len(), 18, "{:#?}", out.notes);
}

#[test]
fn names_are_made_valid_and_dependencies_follow() {
    import(
        r#"
services:
  web.front:
    command: web
    restart: always
    depends_on: [2db]
  2db:
    command: db
    restart: always
"#,
    )
    .has("[services.web-front]\nrun = [\"web\"]\nrestart = \"always\"\ndepends_on = [\"s2db\"]")
    .has("[services.s2db]")
    .note("compose.yaml: services[\"web.front\"]: renamed `web-front`: a service name starts with an ASCII letter and has only ASCII letters, digits, `-` and `_`");
}

#[test]
fn files_that_are_not_compose_files_are_errors() {
    for (yaml, want) in [
        (
            "services: [",
            "compose.yaml:2:1: not valid YAML: while parsing a node, did not find expected node content",
        ),
        ("", "compose.yaml: not a Compose file: the file is empty"),
        (
            "- web\n- db\n",
            "compose.yaml: not a Compose file: the top level is a list, not a mapping with `services`",
        ),
        (
            "just text",
            "compose.yaml: not a Compose file: the top level is \"just text\", not a mapping with `services`",
        ),
        (
            "version: '3'\n",
            "compose.yaml: not a Compose file: it has no `services`",
        ),
        (
            "services: [web]\n",
            "compose.yaml: not a Compose file: `services` must map service names to services, found a list",
        ),
        (
            "services: {}\n",
            "compose.yaml: not a Compose file: `services` is empty",
        ),
        (
            "services:\n  web: nginx\n",
            "compose.yaml: not a Compose file: services.web must be a mapping, found \"nginx\"",
        ),
        (
            "services:\n  web:\n",
            "compose.yaml: not a Compose file: services.web must be a mapping, found nothing (null)",
        ),
    ] {
        assert_eq!(error(yaml), want, "{yaml:?}");
    }
    assert!(matches!(
        compose("c.yaml", "services: {a: {command: x}}\nservices: {}\n"),
        Err(Error::Yaml { .. })
    ));
    match compose("c.yaml", "services:\n  db: {image: postgres}\n") {
        Err(e @ Error::NothingToRun { .. }) => {
            assert_eq!(
                e.to_string(),
                "c.yaml: no service can run on the host, so there is no stack file to write"
            );
            let Error::NothingToRun { notes, .. } = e else {
                unreachable!()
            };
            assert_eq!(
                notes[0].to_string(),
                "c.yaml: services.db: not carried over: it has an image (`postgres`) but no `command`: bulwark runs commands on the host, containers come later; add `command` with the program to run"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn wrong_types_inside_a_service_are_notes_not_panics() {
    let out = import(
        r#"
services:
  s:
    command: srv
    restart: [always]
    environment: 5
    healthcheck: {test: {a: 1}, interval: [1]}
    deploy: [1]
    depends_on: 5
    ports: [[1]]
    stop_signal: {a: 1}
    scale: -1
"#,
    );
    out.note("compose.yaml: services.s.restart: not carried over: expected \"no\", \"always\", \"on-failure[:N]\" or \"unless-stopped\", found a list")
        .note("compose.yaml: services.s.environment: not carried over: expected a list or a mapping, found \"5\"")
        .note("compose.yaml: services.s.healthcheck.test: not carried over: expected a string or a list of strings, found a mapping")
        .note("compose.yaml: services.s.healthcheck.interval: not carried over: expected a duration such as \"10s\", found a list; 30s is used")
        .note("compose.yaml: services.s.deploy: not carried over: expected a mapping, found a list")
        .note("compose.yaml: services.s.depends_on: not carried over: expected a list or a mapping, found \"5\"")
        .note("compose.yaml: services.s.ports[0]: not carried over: expected a port such as \"8080:8000\", found a list")
        .note("compose.yaml: services.s.stop_signal: not carried over: expected a signal name such as \"SIGTERM\", found a mapping")
        .note("compose.yaml: services.s.scale: not carried over: expected a whole number from 0 to 1000, found \"-1\"");
    import("services:\n  s:\n    command: {a: 1}\n  t:\n    command: [a, [b]]\n  u: {command: t, restart: always}\n")
        .lacks("[services.s]")
        .lacks("[services.t]")
        .note("compose.yaml: services.s: not carried over: `command`: expected a string or a list of strings, found a mapping")
        .note("compose.yaml: services.t: not carried over: `command`: item 1 must be a string, found a list; the whole command is dropped");
}

#[test]
fn the_fixture_imports_as_documented() {
    let yaml = include_str!("../../tests/fixtures/compose.yaml");
    import(yaml)
        .has(
            r#"
[services.web]
run = ["python3", "-m", "http.server", "{port}"]
replicas = 2
restart = "always"
depends_on = ["redis"]
[services.web.env]
DEBUG = "1"
GREETING = "hello"
[services.web.readiness]
http = "/"
period = "2s"
timeout = "1s"
initial_delay = "1s"
failure_threshold = 3
[services.web.expose]
listen = "127.0.0.1:8080"

[services.redis]
run = ["redis-server", "--port", "6379", "--save", ""]
restart = "always"
[services.redis.readiness]
exec = ["redis-cli", "-p", "6379", "ping"]
period = "1s"
timeout = "1s"
failure_threshold = 10
"#,
        )
        .note("compose.yaml: services.web.image: not carried over: bulwark runs commands on the host; containers come later")
        .note("compose.yaml: services.web.deploy.resources: not carried over: resource limits come with container support");
}
