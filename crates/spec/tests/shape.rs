//! `parse_shape`: the cluster's scheduler reads an applied stack on one machine, while the
//! files the stack names are on the machines that run its replicas.

/// A stack naming every kind of file the checks read, none of which exists.
const NAMES_FILES: &str = r#"
[services.web]
run = ["web"]
replicas = 3
env_files = ["web.env"]
secrets = { DB_PASSWORD = "db-password" }
expose.listen = "127.0.0.1:8443"
expose.fallback = { body_file = "sorry.html" }
[[services.web.expose.tls.certificates]]
cert = "web.pem"
key = "web.key"
[services.web.expose.upstream_tls]
ca = "ca.pem"

[services.box]
run = ["/bin/app"]
cwd = "/"
[services.box.container]
rootfs = "rootfs"
mounts = [{ source = "data", target = "/data" }]
"#;

#[test]
fn the_shape_of_a_stack_reads_without_the_files_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.toml");
    // Where the files are not, `parse` names each of them...
    let errors = spec::parse(NAMES_FILES, &path).unwrap_err().to_string();
    for file in [
        "web.env",
        "db-password",
        "sorry.html",
        "web.pem",
        "web.key",
        "ca.pem",
        "rootfs",
        "data",
    ] {
        assert!(errors.contains(file), "{file} not named in:\n{errors}");
    }
    // ... while its shape reads: the services, their counts and settings.
    let stack = spec::parse_shape(NAMES_FILES, &path).unwrap();
    let names: Vec<_> = stack.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web", "box"]);
    assert_eq!(stack.services[0].replicas, 3);
    assert!(stack.services[0].env.is_empty());
    assert!(stack.services[1].container.is_some());
}

#[test]
fn the_shape_still_refuses_what_is_wrong_in_the_stack_itself() {
    let path = std::path::Path::new("cluster stack");
    let wrong = NAMES_FILES.replace("replicas = 3", "replicas = \"three\"");
    let errors = spec::parse_shape(&wrong, path).unwrap_err().to_string();
    assert!(
        errors.contains("`replicas` must be an integer, found a string"),
        "{errors}"
    );
    assert_eq!(errors.lines().count(), 1, "{errors}");
}
