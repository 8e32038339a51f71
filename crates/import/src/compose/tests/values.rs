//! Values: `environment`, variables Compose substitutes, bulwark's placeholders.

use super::import;

#[test]
fn environment_in_both_forms() {
    import(
        r#"
services:
  s:
    command: run
    restart: always
    environment:
      NUMBER: 1.10
      FLAG: true
      EMPTY: ""
      FROM_SHELL:
      NESTED: {a: 1}
    env_file: .env
"#,
    )
    .has("[services.s.env]\nEMPTY = \"\"\nFLAG = \"true\"\nNUMBER = \"1.10\"")
    .lacks("FROM_SHELL")
    .note("compose.yaml: services.s.environment.FROM_SHELL: not carried over: `FROM_SHELL` has no value: Compose takes it from the shell it runs in; each replica inherits it from bulwark's environment instead")
    .note("compose.yaml: services.s.environment.NESTED: not carried over: expected a string, found a mapping")
    .note("compose.yaml: services.s.env_file: not carried over: list the files in `env_files` (paths relative to the stack file)");
    import("services:\n  s:\n    command: run\n    restart: always\n    environment: [A=1=2, B, 7, \"=x\"]\n")
        .has("A = \"1=2\"")
        .note("compose.yaml: services.s.environment[1]: not carried over: `B` has no value: Compose takes it from the shell it runs in; each replica inherits it from bulwark's environment instead")
        .note("compose.yaml: services.s.environment[3]: not carried over: \"\" is not a variable name");
}

#[test]
fn bulwarks_placeholders_in_the_source_are_noted() {
    import(
        r#"
services:
  s:
    command: ./app --id {index} --port 8000
    ports: ["8080:8000"]
    restart: always
    environment:
      NAME: "{service}-{bulwark}"
      PLAIN: "{other}"
    healthcheck: {test: [CMD, check, "{port}"]}
"#,
    )
    .has(r#"run = ["./app", "--id", "{index}", "--port", "{port}"]"#)
    .note("compose.yaml: services.s.command: `{index}` holds {index}, which bulwark substitutes when it starts a replica (there is no escape)")
    .note("compose.yaml: services.s.environment.NAME: `{service}-{bulwark}` holds {service} and {bulwark}, which bulwark substitutes when it starts a replica (there is no escape)")
    .note("compose.yaml: services.s.healthcheck.test[2]: `{port}` holds {port}, which bulwark substitutes when it starts a replica (there is no escape)")
    .no_note("{other}")
    .no_note("`8000` holds");
}

#[test]
fn variables_compose_would_substitute_are_noted_and_double_dollars_undone() {
    import(
        r#"
services:
  s:
    command: sh -c "echo $$HOME ${GREETING:-hi}"
    restart: always
    environment:
      A: $$literal
"#,
    )
    .has(r#"run = ["sh", "-c", "echo $HOME ${GREETING:-hi}"]"#)
    .has(r#"A = "$literal""#)
    .note("compose.yaml: services.s.command: `echo $HOME ${GREETING:-hi}` is kept as written: Compose substitutes variables from the shell and .env when it reads the file")
    .no_note("literal");
}

#[test]
fn variables_in_fields_read_as_values_are_noted_as_variables() {
    for (field, path, text, then) in [
        (
            "ports: [\"${WEB_PORT:-8080}:8000\"]",
            "ports[0]",
            "${WEB_PORT:-8080}:8000",
            "",
        ),
        (
            "ports: [{target: 8000, published: $WEB}]",
            "ports[0]",
            "$WEB",
            "",
        ),
        ("scale: ${N}", "scale", "${N}", ""),
        (
            "deploy: {replicas: \"${N}\"}",
            "deploy.replicas",
            "${N}",
            "",
        ),
        ("stop_signal: ${SIG}", "stop_signal", "${SIG}", ""),
        (
            "stop_grace_period: ${GRACE:-10s}",
            "stop_grace_period",
            "${GRACE:-10s}",
            "",
        ),
        (
            "healthcheck: {test: [CMD, x], interval: \"${I}\"}",
            "healthcheck.interval",
            "${I}",
            "; 30s is used",
        ),
        (
            "healthcheck: {test: [CMD, x], retries: \"${R}\"}",
            "healthcheck.retries",
            "${R}",
            "; 3 is used",
        ),
    ] {
        import(&format!(
            "services:\n  s:\n    command: srv\n    restart: always\n    {field}\n"
        ))
        .note(&format!("compose.yaml: services.s.{path}: not carried over: {text:?} holds a variable, which Compose substitutes from the shell and .env when it reads the file; the import cannot: write the value{then}"));
    }
    import("services:\n  s:\n    command: srv\n    restart: ${RESTART}\n")
        .note("compose.yaml: services.s.restart: not carried over: \"${RESTART}\" holds a variable, which Compose substitutes from the shell and .env when it reads the file; the import cannot: write the value");
}
