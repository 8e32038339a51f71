//! The container port, `ports` and `expose`.

use super::import;

#[test]
fn the_container_port_becomes_each_replicas_port() {
    import(
        r#"
services:
  web:
    command: ./server --listen=0.0.0.0:8000 --workers 4
    ports: ["8080:8000"]
    environment:
      - BIND=0.0.0.0:8000
      - PORT=8000
      - OTHER=18000
      - API_URL=http://api:8000
    restart: always
"#,
    )
    .has(
        r#"
[services.web]
run = ["./server", "--listen=0.0.0.0:{port}", "--workers", "4"]
restart = "always"
[services.web.env]
API_URL = "http://api:8000"
BIND = "0.0.0.0:{port}"
OTHER = "18000"
PORT = "{port}"
[services.web.expose]
listen = "127.0.0.1:8080"
"#,
    )
    .note("compose.yaml: services.web.command: `--listen=0.0.0.0:8000` became `--listen=0.0.0.0:{port}`: each replica listens on its own port (also in $PORT)")
    .note("compose.yaml: services.web.environment[0]: `0.0.0.0:8000` became `0.0.0.0:{port}`: each replica listens on its own port (also in $PORT)")
    .note("compose.yaml: services.web.ports[0]: bulwark listens on 127.0.0.1:8080, Compose on every interface; write listen = \"0.0.0.0:8080\" to serve other hosts")
    .note("compose.yaml: services.web.ports: proxied as HTTP, bulwark's default; if the service does not speak HTTP, add protocol = \"tcp\" to [services.web.expose]")
    .no_note("neither the command");
}

#[test]
fn another_services_name_as_a_host_is_noted_once() {
    let out = import(
        r#"
services:
  web:
    command: ./web --cache redis:6379 --self web:8000
    restart: always
    environment:
      DATABASE_URL: postgres://u@db:5432/app
      NOT_A_HOST: mydb:5432
  db: {image: postgres}
  redis: {command: redis-server, restart: always}
"#,
    );
    out.has("DATABASE_URL = \"postgres://u@db:5432/app\"")
    .note("compose.yaml: services.web: `redis:6379` names the Compose service `redis`, but service names do not resolve on the host: write 127.0.0.1 and the port `redis` is exposed on (here and wherever another service is named)")
    .no_note("services.redis: `")
    .no_note("service `web`");
    let hosts = out.notes.iter().filter(|n| n.contains("do not resolve"));
    assert_eq!(hosts.count(), 1, "{:#?}", out.notes);
}

#[test]
fn a_port_the_command_does_not_name_is_noted() {
    import("services:\n  api:\n    command: ./api\n    ports: [\"9000:9000\"]\n    restart: always\n")
        .note("compose.yaml: services.api.ports: the container port 9000 is in neither the command nor the environment: the program must listen on the port bulwark gives each replica, in $PORT");
}

#[test]
fn ports_in_each_syntax() {
    let one = |ports: &str| {
        import(&format!(
            "services:\n  s:\n    command: srv 80\n    restart: always\n    ports: {ports}\n"
        ))
    };
    one(r#"["127.0.0.1:8080:80"]"#)
        .has(r#"listen = "127.0.0.1:8080""#)
        .no_note("every interface");
    one(r#"["0.0.0.0:8080:80/tcp"]"#).has(r#"listen = "0.0.0.0:8080""#);
    one(r#"["[::1]:8080:80"]"#).has(r#"listen = "[::1]:8080""#);
    one("[{target: 80, published: 8080, host_ip: 127.0.0.2, mode: host}]")
        .has(r#"listen = "127.0.0.2:8080""#)
        .note("compose.yaml: services.s.ports[0].mode: not carried over: bulwark runs on one host");
    one(r#"[{target: 80, published: "8081"}]"#).has(r#"listen = "127.0.0.1:8081""#);
    one("[80]")
        .lacks("[services.s.expose]")
        .has(r#"run = ["srv", "{port}"]"#)
        .note("compose.yaml: services.s.ports[0]: not carried over: no host port: Compose publishes it on a random one; bulwark's proxy needs a fixed address: add [services.s.expose] with `listen`");
    one(r#"["53:53/udp", "8080:80", "9090:9090"]"#)
        .has(r#"listen = "127.0.0.1:8080""#)
        .note("compose.yaml: services.s.ports[0]: not carried over: bulwark proxies TCP only")
        .note("compose.yaml: services.s.ports[2]: not carried over: each replica gets one port, and only the first published entry of `ports` is proxied");
    // An unpublished port (a debugger's, say) does not hide the published one after it.
    one(r#"["9229", "8080:80"]"#)
        .has(r#"run = ["srv", "{port}"]"#)
        .has(r#"listen = "127.0.0.1:8080""#)
        .note("compose.yaml: services.s.ports[0]: not carried over: each replica gets one port, and only the first published entry of `ports` is proxied")
        .no_note("no host port");
    one(r#"["80", "9229"]"#)
        .lacks("[services.s.expose]")
        .has(r#"run = ["srv", "{port}"]"#)
        .note("compose.yaml: services.s.ports[1]: not carried over: each replica gets one port, and only the first entry of `ports` is made per replica");
    one(r#"["8080-8081:80-81", "99999:80", "x:80", "1.2.3:8080:80", "a:b:c:d", 5.5]"#)
        .lacks("[services.s.expose]")
        .note("compose.yaml: services.s.ports[0]: not carried over: the port range \"8080-8081\" cannot be proxied; list one port")
        .note("compose.yaml: services.s.ports[1]: not carried over: \"99999\" is not a port number (1 to 65535)")
        .note("compose.yaml: services.s.ports[2]: not carried over: \"x\" is not a port number (1 to 65535)")
        .note("compose.yaml: services.s.ports[3]: not carried over: \"1.2.3\" is not an IP address")
        .note("compose.yaml: services.s.ports[4]: not carried over: cannot read \"a:b:c:d\" as a port")
        .note("compose.yaml: services.s.ports[5]: not carried over: \"5.5\" is not a port number (1 to 65535)");
    one("{web: 80}")
        .note("compose.yaml: services.s.ports: not carried over: expected a list, found a mapping");
}

#[test]
fn without_ports_the_first_of_expose_is_the_container_port() {
    import(
        r#"
services:
  s:
    command: srv --port 9000
    restart: always
    expose: ["9000", "9001/udp", 9002, "${X}"]
    healthcheck: {test: "curl -f http://localhost:9000/health"}
"#,
    )
    .has(r#"run = ["srv", "--port", "{port}"]"#)
    .has("http = \"/health\"")
    .lacks("[services.s.expose]")
    .note("compose.yaml: services.s.command: `9000` became `{port}`: each replica listens on its own port (also in $PORT)")
    .note("compose.yaml: services.s.expose[0]: the container port 9000 is made per replica ({port}, $PORT); Compose does not publish it, so it is not proxied: add [services.s.expose] with `listen` to proxy it")
    .note("compose.yaml: services.s.expose[1]: not carried over: only a TCP port is made per replica")
    .note("compose.yaml: services.s.expose[2]: not carried over: each replica gets one port, and it is the container port 9000")
    .note("compose.yaml: services.s.expose[3]: not carried over: \"${X}\" holds a variable, which Compose substitutes from the shell and .env when it reads the file; the import cannot: write the value")
    .no_note("proxied as HTTP");
    // With `ports`, its container port is the one; `expose` adds none.
    import("services:\n  s:\n    command: srv 8000\n    restart: always\n    ports: [\"8080:8000\"]\n    expose: [\"8000/tcp\", \"9000\"]\n")
        .has(r#"run = ["srv", "{port}"]"#)
        .note("compose.yaml: services.s.expose[1]: not carried over: each replica gets one port, and it is the container port 8000")
        .no_note("services.s.expose[0]");
}
