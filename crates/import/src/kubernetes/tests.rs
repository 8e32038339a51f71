use crate::check::Out;
use crate::{Source, kubernetes};

fn import(files: &[(&str, &str)]) -> Out {
    let sources: Vec<Source<'_>> = files
        .iter()
        .map(|(name, text)| Source { name, text })
        .collect();
    Out::of(kubernetes(&sources).unwrap_or_else(|e| panic!("{e}")))
}

fn one(yaml: &str) -> Out {
    import(&[("k8s.yaml", yaml)])
}

fn error(files: &[(&str, &str)]) -> String {
    let sources: Vec<Source<'_>> = files
        .iter()
        .map(|(name, text)| Source { name, text })
        .collect();
    match kubernetes(&sources) {
        Ok(i) => panic!("imported:\n{}", i.stack),
        Err(e) => e.to_string(),
    }
}

/// A Deployment `web` (label app=web) whose one container is `container` (indented YAML).
fn deployment(container: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
        - name: web
{container}"#
    )
}

const SERVICE: &str = r#"
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
    - port: 8080
      targetPort: 8000
"#;

#[test]
fn a_deployment_with_kubernetes_defaults_written_out() {
    one(&deployment(
        r#"          command: ["./server"]
          args: ["--port=8000"]
          workingDir: /srv
          env:
            - {name: MODE, value: prod}
            - {name: COUNT, value: "3"}
            - name: LISTEN
              value: "0.0.0.0:8000"
          ports: [{containerPort: 8000}]
          livenessProbe:
            httpGet: {path: /healthz, port: 8000}
          startupProbe:
            exec: {command: ["./ready.sh"]}
            failureThreshold: 30
"#,
    ))
    .has(
        r#"
[services.web]
run = ["./server", "--port={port}"]
replicas = 1
restart = "always"
cwd = "/srv"
stop_grace = "30s"
[services.web.env]
COUNT = "3"
LISTEN = "0.0.0.0:{port}"
MODE = "prod"
[services.web.startup]
exec = ["./ready.sh"]
period = "10s"
timeout = "1s"
failure_threshold = 30
[services.web.liveness]
http = "/healthz"
period = "10s"
timeout = "1s"
failure_threshold = 3
"#,
    )
    .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].args[0]: `--port=8000` became `--port={port}`: each replica listens on its own port (also in $PORT)")
    .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].env[2].value: `0.0.0.0:8000` became `0.0.0.0:{port}`: each replica listens on its own port (also in $PORT)")
    .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].workingDir: \"/srv\" is a directory in the container; the command runs there on the host (`cwd`), so it must exist")
    .lacks("[services.web.expose]");
}

#[test]
fn bulwarks_placeholders_in_the_source_are_noted() {
    one(&deployment(
        "          command: [srv, \"--name={service}\"]\n          env: [{name: A, value: \"{index}\"}]\n          livenessProbe: {exec: {command: [check, \"{bulwark}\"]}}\n",
    ))
    .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].command[1]: `--name={service}` holds {service}, which bulwark substitutes when it starts a replica (there is no escape)")
    .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].env[0].value: `{index}` holds {index}, which bulwark substitutes when it starts a replica (there is no escape)")
    .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].livenessProbe.exec.command[1]: `{bulwark}` holds {bulwark}, which bulwark substitutes when it starts a replica (there is no escape)");
}

#[test]
fn variables_are_expanded_from_env_as_kubernetes_does() {
    one(&deployment(
        r#"          command: [srv, "--greet=$(GREETING)", "$$(GREETING)", "--pod=$(POD_NAME)", "--cost=5$$", "$(", "$"]
          env:
            - {name: GREETING, value: "hello $(USER_NAME)"}
            - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: URL, value: "http://$(HOST):$(PORT_NUM)/x"}
            - {name: PORT_NUM, value: "8000"}
            - {name: LISTEN, value: "0.0.0.0:$(PORT_NUM)"}
            - {name: USER_NAME, value: bob}
            - {name: PRICE, value: "5$$ $$$(PRICE)"}
          ports: [{containerPort: 8000}]
"#,
    ))
    .has(r#"run = ["srv", "--greet=hello $(USER_NAME)", "$(GREETING)", "--pod=$(POD_NAME)", "--cost=5$", "$(", "$"]"#)
    .has(
        r#"
[services.web.env]
GREETING = "hello $(USER_NAME)"
LISTEN = "0.0.0.0:{port}"
PORT_NUM = "{port}"
PRICE = "5$ $$(PRICE)"
URL = "http://$(HOST):$(PORT_NUM)/x"
USER_NAME = "bob"
"#,
    )
    .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].command[1]: `--greet=$(GREETING)` became `--greet=hello $(USER_NAME)`: Kubernetes expands $(NAME) from the container's `env`, and so does the import")
    .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].command[3]: `--pod=$(POD_NAME)` keeps $(POD_NAME) as written: Kubernetes would expand a variable set by `valueFrom` or `envFrom`, which are not carried over; bulwark does not expand $(NAME)")
    .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].env[2].value: `http://$(HOST):$(PORT_NUM)/x` keeps $(HOST) as written: Kubernetes would expand a variable set by `valueFrom` or `envFrom`, which are not carried over; bulwark does not expand $(NAME)")
    .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].env[4].value: `0.0.0.0:$(PORT_NUM)` became `0.0.0.0:8000`: Kubernetes expands $(NAME) from the container's `env`, and so does the import")
    .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].env[4].value: `0.0.0.0:8000` became `0.0.0.0:{port}`: each replica listens on its own port (also in $PORT)")
    .no_note("env[0].value")
    .no_note("command[2]")
    .no_note("env[6].value");
}

#[test]
fn a_service_exposes_the_deployment_it_selects() {
    one(&format!(
        "{}{SERVICE}",
        deployment("          command: [srv, \"8000\"]\n          ports: [{containerPort: 8000}, {containerPort: 9090}]\n")
    ))
    .has("[services.web.expose]\nlisten = \"127.0.0.1:8080\"")
    .has("run = [\"srv\", \"{port}\"]")
    .note("k8s.yaml: Service/web.spec.ports[0]: bulwark listens on 127.0.0.1:8080; in the cluster Service/web served it on its cluster IP")
    .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].ports[1]: not carried over: each replica gets one port; only the container's first port (or the one its Service targets) is made per replica");
}

#[test]
fn the_ports_not_made_per_replica_are_the_ones_noted() {
    one(&format!(
        "{}{SERVICE}",
        deployment("          command: [srv, \"8000\"]\n          ports: [{containerPort: 9090, hostPort: 9191}, {name: http, containerPort: 8000, hostPort: 8001}]\n")
    ))
    .has("run = [\"srv\", \"{port}\"]")
    .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].ports[0]: not carried over: each replica gets one port; only the container's first port (or the one its Service targets) is made per replica")
    .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].ports[0].hostPort: not carried over: bulwark publishes a service through its proxy, not a container's port: write [services.web.expose] listen = \"0.0.0.0:9191\"")
    .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].ports[1].hostPort: not carried over: bulwark publishes a service through its proxy, not a container's port: write [services.web.expose] listen = \"0.0.0.0:8001\"")
    .no_note("ports[1]: not carried over");
}

#[test]
fn a_named_target_port_picks_the_container_and_the_port() {
    let yaml = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop}
spec:
  replicas: 3
  template:
    metadata: {labels: {app: shop, tier: web}}
    spec:
      containers:
        - name: proxy
          command: [envoy, --admin-port, "9901"]
          ports: [{name: admin, containerPort: 9901}]
        - name: app
          command: [app, --port, "8000"]
          ports: [{name: http, containerPort: 8000}]
---
apiVersion: v1
kind: Service
metadata: {name: shop}
spec:
  type: LoadBalancer
  sessionAffinity: ClientIP
  selector: {app: shop}
  ports:
    - {name: web, port: 80, targetPort: http, nodePort: 30080}
    - {name: metrics, port: 9901}
    - {name: dns, port: 53, protocol: UDP}
"#;
    one(yaml)
        .has("[services.shop-proxy]\nrun = [\"envoy\", \"--admin-port\", \"{port}\"]\nreplicas = 3")
        .has("[services.shop-app]\nrun = [\"app\", \"--port\", \"{port}\"]\nreplicas = 3")
        .has("[services.shop-app.expose]\nlisten = \"127.0.0.1:80\"")
        .lacks("[services.shop-proxy.expose]")
        .note("k8s.yaml: Deployment/shop.spec.template.spec.containers[0]: service `shop-proxy`: one service per container; in the pod they shared localhost, here each has its own port")
        .note("k8s.yaml: Service/shop.spec.ports[0]: bulwark listens on 127.0.0.1:80 (a port below 1024 needs root or CAP_NET_BIND_SERVICE); in the cluster Service/shop served it on its cluster IP")
        .note("k8s.yaml: Service/shop.spec.ports[0].nodePort: not carried over: bulwark listens on 127.0.0.1 only; write 0.0.0.0 in `listen` to serve other hosts")
        .note("k8s.yaml: Service/shop.spec.ports[1]: not carried over: each replica gets one port, and only the first port of a Service is proxied")
        .note("k8s.yaml: Service/shop.spec.ports[2]: not carried over: bulwark proxies TCP only")
        .note("k8s.yaml: Service/shop.spec.type: not carried over: bulwark listens on 127.0.0.1 only; write 0.0.0.0 in `listen` to serve other hosts")
        .note("k8s.yaml: Service/shop.spec.sessionAffinity: not carried over: for stickiness use balance = \"hash\" with hash_on = \"client-address\" in `expose`");
}

#[test]
fn services_that_select_nothing_or_too_much_are_noted() {
    let two = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: a}
spec: {template: {metadata: {labels: {app: x, v: "1"}}, spec: {containers: [{name: a, command: [a]}]}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: b}
spec: {template: {metadata: {labels: {app: x, v: "2"}}, spec: {containers: [{name: b, command: [b]}]}}}
---
kind: Service
metadata: {name: both}
spec: {selector: {app: x}, ports: [{port: 8080}]}
---
kind: Service
metadata: {name: second}
spec: {selector: {app: x, v: "1"}, ports: [{port: 8081}]}
---
kind: Service
metadata: {name: none}
spec: {selector: {app: y}, ports: [{port: 8082}]}
---
kind: Service
metadata: {name: headless}
spec: {ports: [{port: 8083}]}
"#;
    one(two)
        .has("[services.a.expose]\nlisten = \"127.0.0.1:8080\"")
        .lacks("8081")
        .note("k8s.yaml: Service/both.spec.selector: not carried over: it also selects Deployment/b's pods; only Deployment/a is exposed")
        .note("k8s.yaml: Service/second: not carried over: Deployment/a is exposed by Service/both already; a service has one listen address")
        .note("k8s.yaml: Service/none.spec.selector: not carried over: it selects the pods of no Deployment in these files")
        .note("k8s.yaml: Service/headless.spec.selector: not carried over: no selector: the Service selects no pods bulwark runs");
}

#[test]
fn probes_of_every_kind() {
    let probe = |p: &str| {
        one(&deployment(&format!(
            "          command: [srv]\n          ports: [{{name: http, containerPort: 8000}}]\n          readinessProbe:\n{p}"
        )))
    };
    probe("            tcpSocket: {port: http}\n            periodSeconds: 2\n            timeoutSeconds: 3\n            successThreshold: 2\n            initialDelaySeconds: 5\n")
        .has("[services.web.readiness]\ntcp = true\nperiod = \"2s\"\ntimeout = \"3s\"\ninitial_delay = \"5s\"\nfailure_threshold = 3\nsuccess_threshold = 2")
        .no_note("tcpSocket");
    probe("            httpGet: {path: health, port: 9000, scheme: HTTP, httpHeaders: [{name: X, value: y}]}\n")
        .has("http = \"/health\"")
        .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].readinessProbe.httpGet.port: bulwark probes each replica's own port (the container port 8000, made per replica), not \"9000\"")
        .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].readinessProbe.httpGet.httpHeaders: not carried over: bulwark's HTTP probe sends no extra headers");
    probe("            httpGet: {path: \"/a b\", port: 8000}\n")
        .lacks("readiness")
        .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].readinessProbe.httpGet.path: not carried over: \"/a b\" is not a path a GET can ask for");
    probe("            httpGet: {port: 8000, scheme: HTTPS}\n")
        .has("[services.web.readiness]\ntcp = true")
        .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].readinessProbe.httpGet.scheme: bulwark's HTTP probe speaks plain HTTP: this became a TCP probe");
    probe("            exec: {command: [sh, -c, \"wget -q -O /dev/null http://localhost:8000/ready\"]}\n")
        .has("http = \"/ready\"")
        .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].readinessProbe.exec.command: `wget -q -O /dev/null http://localhost:8000/ready` became http = \"/ready\": bulwark sends the GET itself (healthy on 200–399), no curl or wget needed on the host");
    // Kubernetes does not expand $(NAME) or $$ in a probe: kept as written, with no note.
    probe(
        "            exec: {command: [check, --addr, \"127.0.0.1:8000\", \"$(MODE)\", \"$$x\"]}\n",
    )
    .has("exec = [\"check\", \"--addr\", \"127.0.0.1:{port}\", \"$(MODE)\", \"$$x\"]")
    .no_note("$(MODE)");
    probe("            grpc: {port: 8000}\n")
        .lacks("readiness")
        .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].readinessProbe.grpc: not carried over: bulwark probes by HTTP, TCP or a command; use `exec` with grpc_health_probe")
        .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].readinessProbe: not carried over: no httpGet, tcpSocket or exec: bulwark has no other probe");
    probe("            tcpSocket: {port: 8000}\n            periodSeconds: 0\n            timeoutSeconds: 99999999999\n            failureThreshold: x\n            initialDelaySeconds: -1\n")
        .has("tcp = true\nperiod = \"10s\"\ntimeout = \"1s\"\nfailure_threshold = 3\n")
        .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].readinessProbe.periodSeconds: not carried over: must be at least 1, found 0; Kubernetes' default is used")
        .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].readinessProbe.timeoutSeconds: not carried over: 99999999999 seconds is longer than the 24h a stack file allows; Kubernetes' default is used")
        .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].readinessProbe.failureThreshold: not carried over: expected a whole number of at least 1, found \"x\"; Kubernetes' default is used")
        .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].readinessProbe.initialDelaySeconds: not carried over: must be at least 0, found -1; Kubernetes' default is used");
    one(&deployment("          command: [srv]\n          livenessProbe: {tcpSocket: {port: 80}, successThreshold: 2}\n"))
        .has("[services.web.liveness]\ntcp = true\nperiod = \"10s\"\ntimeout = \"1s\"\nfailure_threshold = 3\n")
        .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].livenessProbe.successThreshold: not carried over: must be 1 for liveness and startup probes")
        .no_note("livenessProbe.tcpSocket.port");
}

#[test]
fn an_exposed_container_that_cannot_run_is_noted() {
    let yaml = format!(
        "{}        - name: side\n          command: [side]\n{SERVICE}",
        deployment("          image: nginx\n          ports: [{containerPort: 8000}]\n")
    );
    one(&yaml)
        .lacks("[services.web-side.expose]")
        .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0]: not carried over: the Service's port leads to this container, which is not imported: nothing is exposed");
    let sources = [Source {
        name: "k8s.yaml",
        text: &format!("{}{SERVICE}", deployment("          image: nginx\n")),
    }];
    match kubernetes(&sources) {
        Err(crate::Error::NothingToRun { files, notes }) => {
            assert_eq!(files, "k8s.yaml");
            assert!(
                notes
                    .iter()
                    .any(|n| n.path.ends_with("containers[0].command")),
                "{notes:#?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn containers_that_cannot_run_on_the_host() {
    one(&format!(
        "{}        - name: side\n          args: [\"--verbose\"]\n        - name: py\n          args: [python3, app.py]\n",
        deployment("          image: nginx\n")
    ))
    .lacks("[services.web-web]")
    .lacks("[services.web-side]")
    .has("[services.web-py]\nrun = [\"python3\", \"app.py\"]")
    .note("k8s.yaml: Deployment/web.spec.template.spec.containers[0].command: not carried over: no `command` or `args`: the image's entrypoint is not known here, and bulwark runs commands on the host; add `command` with the program to run")
    .note("k8s.yaml: Deployment/web.spec.template.spec.containers[1].args: not carried over: `args` without `command` are arguments to the image's entrypoint, which is not known here; add `command` with the program to run")
    .note("k8s.yaml: Deployment/web.spec.template.spec.containers[2].args: no `command`: `args` are run as the command (the image's entrypoint is not known here)");
}

#[test]
fn pod_and_deployment_fields_are_noted() {
    let out = one(r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: api.v2, namespace: prod, labels: {app: api}, annotations: {a: b}}
spec:
  replicas: 4
  revisionHistoryLimit: 3
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}, annotations: {x: y}}
    spec:
      restartPolicy: Always
      terminationGracePeriodSeconds: 45
      serviceAccountName: api
      initContainers: [{name: migrate, command: [migrate]}]
      volumes: [{name: data, emptyDir: {}}]
      nodeSelector: {disk: ssd}
      containers:
        - name: api
          image: api:2
          command: [api]
          envFrom: [{configMapRef: {name: cfg}}]
          volumeMounts: [{name: data, mountPath: /data}]
          securityContext: {runAsUser: 1000}
          lifecycle: {preStop: {exec: {command: [sleep, "5"]}}}
          resources: {limits: {memory: 1Gi}}
status: {readyReplicas: 4}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {A: b}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: api}
"#);
    out.has("[services.api-v2]\nrun = [\"api\"]\nreplicas = 4\nrestart = \"always\"\nstop_grace = \"45s\"");
    for line in [
        "Deployment/api.v2: renamed `api-v2`: a service name starts with an ASCII letter and has only ASCII letters, digits, `-` and `_`",
        "Deployment/api.v2.metadata.namespace: not carried over: a stack has no namespaces",
        "Deployment/api.v2.metadata.labels: not carried over: a stack file has no labels or annotations",
        "Deployment/api.v2.metadata.annotations: not carried over: a stack file has no labels or annotations",
        "Deployment/api.v2.status: not carried over: the cluster's state, not configuration",
        "Deployment/api.v2.spec.revisionHistoryLimit: not carried over: rollouts come later",
        "Deployment/api.v2.spec.template.metadata.annotations: not carried over: a stack file has no labels or annotations",
        "Deployment/api.v2.spec.template.spec.serviceAccountName: not carried over: replicas run as bulwark's own processes; container settings come with containers",
        "Deployment/api.v2.spec.template.spec.initContainers: not carried over: bulwark has no init containers; run them before `bulwark up`",
        "Deployment/api.v2.spec.template.spec.volumes: not carried over: bulwark runs commands on the host, where the files already are; volumes come with containers",
        "Deployment/api.v2.spec.template.spec.nodeSelector: not carried over: bulwark runs on one host",
        "Deployment/api.v2.spec.template.spec.containers[0].image: not carried over: bulwark runs commands on the host; containers come later",
        "Deployment/api.v2.spec.template.spec.containers[0].envFrom: not carried over: bulwark reads no ConfigMaps or Secrets; copy the variables into `env`",
        "Deployment/api.v2.spec.template.spec.containers[0].volumeMounts: not carried over: bulwark runs commands on the host, where the files already are; mounts come with containers",
        "Deployment/api.v2.spec.template.spec.containers[0].securityContext: not carried over: replicas run as bulwark's own processes; container settings come with containers",
        "Deployment/api.v2.spec.template.spec.containers[0].lifecycle: not carried over: bulwark has no start or stop hooks; `stop_signal` and `stop_grace` set how a replica stops",
        "Deployment/api.v2.spec.template.spec.containers[0].resources: not carried over: resource limits come with container support",
        "ConfigMap/cfg: not carried over: put its values in a service's `env`",
        "Ingress/api: not carried over: expose a service with [services.NAME.expose] `listen`; routes by header or weight are [[services.NAME.expose.routes]]",
    ] {
        out.note(&format!("k8s.yaml: {line}"));
    }
    assert_eq!(out.notes.len(), 19, "{:#?}", out.notes);
}

#[test]
fn several_files_and_a_list() {
    let list = r#"
apiVersion: v1
kind: List
items:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: a}
    spec: {template: {metadata: {labels: {app: a}}, spec: {containers: [{name: a, command: [a, "7000"], ports: [{containerPort: 7000}]}]}}}
"#;
    let svc = "kind: Service\nmetadata: {name: a}\nspec: {selector: {app: a}, ports: [{port: 7070, targetPort: 7000}]}\n---\n";
    import(&[("list.yaml", list), ("svc.yaml", svc)])
        .has("[services.a]\nrun = [\"a\", \"{port}\"]")
        .has("listen = \"127.0.0.1:7070\"")
        .note("svc.yaml: Service/a.spec.ports[0]: bulwark listens on 127.0.0.1:7070; in the cluster Service/a served it on its cluster IP");
}

#[test]
fn files_without_a_deployment_are_errors() {
    for (files, want) in [
        (
            vec![("a.yaml", "kind: Service\nmetadata: {name: x}\n")],
            "no Deployment in a.yaml: `bulwark import k8s` makes a service of each Deployment's containers",
        ),
        (
            vec![("a.yaml", ""), ("b.yaml", "---\n")],
            "no Deployment in a.yaml, b.yaml: `bulwark import k8s` makes a service of each Deployment's containers",
        ),
        (
            vec![("a.yaml", "[1, 2]")],
            "a.yaml: not a Kubernetes manifest: document 1: expected an object with `kind`, found a list",
        ),
        (
            vec![("a.yaml", "kind: Deployment\n---\nservices: {}\n")],
            "a.yaml: not a Kubernetes manifest: document 1: the Deployment has no `metadata.name`",
        ),
        (
            vec![("a.yaml", "---\nservices: {}\n")],
            "a.yaml: not a Kubernetes manifest: document 1: it has no `kind`",
        ),
        (
            vec![("a.yaml", "kind: [x]\n")],
            "a.yaml: not a Kubernetes manifest: document 1: it has no `kind`",
        ),
        (
            vec![
                ("a.yaml", "kind: Deployment\nmetadata: {name: x}\n"),
                ("b.yaml", "a: ["),
            ],
            "b.yaml:2:1: not valid YAML: while parsing a node, did not find expected node content",
        ),
    ] {
        assert_eq!(error(&files), want, "{files:?}");
    }
}

#[test]
fn wrong_types_are_notes_not_panics() {
    let out = one(r#"
kind: Deployment
metadata: {name: w}
spec:
  replicas: 1e99
  template:
    spec:
      terminationGracePeriodSeconds: "soon"
      containers:
        - 5
        - {name: b, command: {x: 1}}
        - {name: c, command: [c], env: 5, ports: 7, workingDir: 9, readinessProbe: [x]}
        - {name: d, command: [d], env: [5, {value: x}, {name: "A=B", value: y}, {name: E, value: [1]}, {name: EMPTY}, {name: NIL, value: ~}]}
"#);
    out.has("[services.w-c]\nrun = [\"c\"]\nreplicas = 1")
        // Kubernetes sets a variable with neither `value` nor `valueFrom` to "".
        .has("[services.w-d.env]\nEMPTY = \"\"\nNIL = \"\"\n")
        .note("k8s.yaml: Deployment/w.spec.template.spec.containers[3].env[3].value: not carried over: expected a string, found a list")
        .note("k8s.yaml: Deployment/w.spec.replicas: not carried over: expected a whole number from 0 to 1000, found \"1e99\"; 1 is used")
        .note("k8s.yaml: Deployment/w.spec.template.spec.terminationGracePeriodSeconds: not carried over: expected whole seconds, found \"soon\"; Kubernetes' default of 30s is used")
        .note("k8s.yaml: Deployment/w.spec.template.spec.containers[0]: not carried over: expected a container, found \"5\"")
        .note("k8s.yaml: Deployment/w.spec.template.spec.containers[1].command: not carried over: expected a string or a list of strings, found a mapping")
        .note("k8s.yaml: Deployment/w.spec.template.spec.containers[2].env: not carried over: expected a list, found \"5\"")
        .note("k8s.yaml: Deployment/w.spec.template.spec.containers[2].ports: not carried over: expected a list, found \"7\"")
        .note("k8s.yaml: Deployment/w.spec.template.spec.containers[2].readinessProbe: not carried over: expected a probe, found a list")
        .note("k8s.yaml: Deployment/w.spec.template.spec.containers[3].env[0]: not carried over: expected `name` and `value`, found \"5\"")
        .note("k8s.yaml: Deployment/w.spec.template.spec.containers[3].env[1]: not carried over: it has no usable `name`")
        .note("k8s.yaml: Deployment/w.spec.template.spec.containers[3].env[2]: not carried over: it has no usable `name`");
}

#[test]
fn the_fixtures_import_as_documented() {
    import(&[
        ("deployment.yaml", include_str!("../../tests/fixtures/deployment.yaml")),
        ("service.yaml", include_str!("../../tests/fixtures/service.yaml")),
    ])
    .has(
        r#"
[services.web]
run = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
replicas = 2
restart = "always"
stop_grace = "5s"
[services.web.env]
GREETING = "hello"
[services.web.liveness]
tcp = true
period = "5s"
timeout = "1s"
initial_delay = "1s"
failure_threshold = 3
[services.web.readiness]
http = "/"
period = "2s"
timeout = "1s"
failure_threshold = 3
[services.web.expose]
listen = "127.0.0.1:80"
"#,
    )
    .note("deployment.yaml: Deployment/web.spec.template.spec.containers[0].resources: not carried over: resource limits come with container support")
    .note("deployment.yaml: Deployment/web.spec.template.spec.containers[0].env[1].valueFrom: not carried over: bulwark reads no ConfigMaps, Secrets or pod fields; write the value");
}
