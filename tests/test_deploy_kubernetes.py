"""The Kubernetes manifests (deploy/kubernetes): rendered by kustomize, valid, hardened, and wired together.

`kubectl kustomize` renders the base and every overlay. `kubernetes-validate` checks each built-in
object against the API's schema (strict: unknown fields are errors); the Prometheus Operator's objects
get a schema of ours covering the fields we use, and the PrometheusRule's groups `promtool check rules`.
The team overlay's exporter then runs for real, with the rendered args and config and a tokens file
where the Secret would be, and takes an OTLP export only with a token. The team-tls overlay's exporter
runs with TLS and basic auth on, and its probes are sent as kubelet would send them.
"""

from __future__ import annotations

import http.client
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import otlpgen as gen
from tests.support.exposition import samples
from tests.support.loopback import basic, free_port
from tests.support.prometheus import PROMTOOL
from tests.support.tools import require
from tests.support.waiting import eventually
from tests.test_deploy_docker import DOCKERFILE, Container, parse, secure_web_config

pytestmark = pytest.mark.slow  # kubectl, and the manifests' commands as processes

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy/kubernetes"
GENERATE = KUBERNETES / "prometheusrule.py"
RULE_FILES = [ROOT / "deploy/prometheus/recording.yml", ROOT / "deploy/prometheus/alerts.yml"]
KUBECTL = "/usr/bin/kubectl"
KUBERNETES_VERSION = "1.33.0"  # the API version the built-in objects are validated against
TREES = ["base", *sorted(f"overlays/{p.name}" for p in (KUBERNETES / "overlays").iterdir() if p.is_dir())]
OPERATOR = "monitoring.coreos.com/v1"

Object = dict[str, Any]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Object]]:
    """Each tree as `kubectl kustomize` renders it."""
    require(KUBECTL, "kustomize rendering the manifests (`kubectl kustomize`)")
    found = {}
    for tree in TREES:
        command = [KUBECTL, "kustomize", str(KUBERNETES / tree)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"kubectl kustomize {tree}: {done.stderr}"
        found[tree] = [o for o in yaml.safe_load_all(done.stdout) if o]
    return found


def of_kind(objects: list[Object], kind: str) -> list[Object]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[Object], kind: str, name: str) -> Object:
    (found,) = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    return found


def containers(deployment: Object) -> list[Object]:
    spec = deployment["spec"]["template"]["spec"]
    found: list[Object] = spec["containers"] + spec.get("initContainers", [])
    return found


def container(deployment: Object, name: str) -> Object:
    (found,) = [c for c in containers(deployment) if c["name"] == name]
    return found


def flags(exporter: Object) -> dict[str, str]:
    """The exporter's `--name=value` args."""
    args: list[str] = exporter["args"]
    assert args[0] == "serve", args
    return dict(arg.removeprefix("--").split("=", 1) for arg in args[1:])


def mounted_at(pod: Object, one: Object, path: str) -> tuple[Object, Object]:
    """The volume mount (and its volume) of a container that holds `path`."""
    mounts = [m for m in one["volumeMounts"] if path == m["mountPath"] or path.startswith(m["mountPath"] + "/")]
    assert mounts, f"{one['name']}: nothing mounted at {path}"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return mount, volume


# --- rendering and schemas ------------------------------------------------------------------------


@pytest.mark.parametrize("tree", TREES)
def test_kustomize_renders_the_tree_into_a_deployment_service_and_monitoring_objects(
    rendered: dict[str, list[Object]], tree: str
) -> None:
    kinds = {o["kind"] for o in rendered[tree]}
    assert {"Deployment", "Service", "ServiceMonitor", "PrometheusRule"} <= kinds, kinds
    for obj in rendered[tree]:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "claude-usage-exporter", obj["metadata"]


def test_kubernetes_validate_accepts_every_rendered_built_in_object(rendered: dict[str, list[Object]]) -> None:
    require("kubernetes_validate", "the built-in objects checked against the API's schema (PyPI `kubernetes-validate`)")
    import kubernetes_validate

    checked = 0
    for tree, objects in rendered.items():
        for obj in objects:
            if obj["apiVersion"] == OPERATOR:
                continue  # a CRD: checked by the next test
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as err:
                raise AssertionError(f"{tree}: {obj['kind']} {obj['metadata']['name']}: {err}") from None
            checked += 1
    assert checked >= 6
    deployment = of_kind(rendered["base"], "Deployment")[0]
    typo = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSION, strict=True)  # strict means something


# The Prometheus Operator's CRDs (v0.8x) for the fields these manifests use; anything else is an error.
DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}


def strict(required: list[str], properties: dict[str, Any], **more: Any) -> dict[str, Any]:
    """An object with these properties only."""
    return {"type": "object", "required": required, "additionalProperties": False, "properties": properties, **more}


def custom_resource(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    shell = {"apiVersion": {"const": OPERATOR}, "kind": {"const": kind}, "metadata": METADATA, "spec": spec}
    return strict(["apiVersion", "kind", "metadata", "spec"], shell)


METADATA = strict(
    ["name"],
    {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"},
        "namespace": {"type": "string"},
        "labels": STRINGS,
        "annotations": STRINGS,
    },
)
SECRET_KEY = strict(["name", "key"], {"name": {"type": "string"}, "key": {"type": "string"}})
ENDPOINT = strict(
    ["port"],
    {
        "port": {"type": "string"},
        "path": {"type": "string", "pattern": "^/"},
        "scheme": {"enum": ["http", "https"]},
        "interval": DURATION,
        "scrapeTimeout": DURATION,
        "tlsConfig": strict(
            [],
            {
                "ca": strict(["secret"], {"secret": SECRET_KEY}),
                "serverName": {"type": "string"},
                "insecureSkipVerify": {"type": "boolean"},
            },
        ),
        "basicAuth": strict(["username", "password"], {"username": SECRET_KEY, "password": SECRET_KEY}),
    },
)
SERVICE_MONITOR = custom_resource(
    "ServiceMonitor",
    strict(
        ["selector", "endpoints"],
        {
            "jobLabel": {"type": "string"},
            "selector": strict(["matchLabels"], {"matchLabels": {**STRINGS, "minProperties": 1}}),
            "endpoints": {"type": "array", "minItems": 1, "items": ENDPOINT},
        },
    ),
)
RULE = strict(
    ["expr"],
    {
        "record": {"type": "string", "pattern": r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
        "alert": {"type": "string", "minLength": 1},
        "expr": {"type": ["string", "integer"]},
        "for": DURATION,
        "keep_firing_for": DURATION,
        "labels": STRINGS,
        "annotations": STRINGS,
    },
    oneOf=[
        {"required": ["record"], "not": {"anyOf": [{"required": [k]} for k in ("alert", "for", "annotations")]}},
        {"required": ["alert"], "not": {"required": ["record"]}},
    ],
)
GROUP = strict(
    ["name", "rules"],
    {
        "name": {"type": "string", "minLength": 1},
        "interval": DURATION,
        "limit": {"type": "integer"},
        "labels": STRINGS,
        "rules": {"type": "array", "minItems": 1, "items": RULE},
    },
)
PROMETHEUS_RULE = custom_resource(
    "PrometheusRule",
    strict(
        ["groups"],
        {
            "groups": {"type": "array", "minItems": 1, "items": GROUP},
        },
    ),
)


def test_the_servicemonitor_and_prometheusrule_follow_the_operators_schema(
    rendered: dict[str, list[Object]], tmp_path: Path
) -> None:
    require("jsonschema", "the Prometheus Operator's objects checked against their schema (PyPI `jsonschema`)")
    import jsonschema

    schemas = {"ServiceMonitor": SERVICE_MONITOR, "PrometheusRule": PROMETHEUS_RULE}
    for tree, objects in rendered.items():
        for obj in (o for o in objects if o["apiVersion"] == OPERATOR):
            validator = jsonschema.Draft202012Validator(schemas[obj["kind"]])
            errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
            assert not errors, f"{tree}: {obj['kind']}:\n" + "\n".join(errors)
    rule = named(rendered["base"], "PrometheusRule", "claude-usage-exporter")
    broken = {**rule, "spec": {"groups": [{"name": "g", "rules": [{"record": "a:b", "alert": "A", "expr": "1"}]}]}}
    assert not jsonschema.Draft202012Validator(PROMETHEUS_RULE).is_valid(broken), "a rule is a record or an alert"
    require(PROMTOOL, "the PrometheusRule's groups checked by promtool (Debian package `prometheus`)")
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    done = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def rule_groups() -> list[Object]:
    groups: list[Object] = []
    for path in RULE_FILES:
        groups += yaml.safe_load(path.read_text())["groups"]
    return groups


def test_the_committed_prometheusrule_holds_exactly_the_groups_of_the_rule_files() -> None:
    committed = yaml.safe_load((KUBERNETES / "base/prometheusrule.yaml").read_text())
    assert committed["spec"]["groups"] == rule_groups(), "run python deploy/kubernetes/prometheusrule.py"
    done = subprocess.run([sys.executable, str(GENERATE), "--check"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_generator_copies_the_groups_it_is_given_and_refuses_a_name_twice(tmp_path: Path) -> None:
    first, second, output = tmp_path / "a.yml", tmp_path / "b.yml", tmp_path / "rule.yaml"
    first.write_text(
        "groups:\n  - name: one\n    rules:\n      - record: a:b:sum\n        expr: |\n          sum(\n            x)\n"
    )
    second.write_text("groups:\n  - name: two\n    rules:\n      - alert: A\n        expr: up == 0\n")
    command = [sys.executable, str(GENERATE), "--output", str(output)]
    assert subprocess.run([*command, str(first), str(second)], timeout=60).returncode == 0
    groups = yaml.safe_load(output.read_text())["spec"]["groups"]
    assert groups == yaml.safe_load(first.read_text())["groups"] + yaml.safe_load(second.read_text())["groups"]
    assert "expr: |" in output.read_text(), "multi-line PromQL stays a block"
    assert subprocess.run([*command, "--check", str(first), str(second)], timeout=60).returncode == 0
    assert subprocess.run([*command, "--check", str(first)], capture_output=True, timeout=60).returncode == 1
    twice = subprocess.run([*command, str(first), str(first)], capture_output=True, text=True, timeout=60)
    assert twice.returncode != 0 and "one" in twice.stderr


# --- what the objects say -------------------------------------------------------------------------


def test_every_container_runs_non_root_read_only_without_capabilities_and_with_resources(
    rendered: dict[str, list[Object]],
) -> None:
    for tree, objects in rendered.items():
        for deployment in of_kind(objects, "Deployment"):
            pod = deployment["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] != 0
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert pod["automountServiceAccountToken"] is False, "no Kubernetes API token in the pod"
            for one in containers(deployment):
                where = f"{tree}: {deployment['metadata']['name']}/{one['name']}"
                context = one["securityContext"]
                assert context["runAsNonRoot"] is True, where
                assert context["readOnlyRootFilesystem"] is True, where
                assert context["allowPrivilegeEscalation"] is False, where
                assert context["capabilities"] == {"drop": ["ALL"]}, where
                assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
                assert {"cpu", "memory"} <= set(one["resources"]["requests"]), where
                assert "memory" in one["resources"]["limits"], where
                assert mounted_at(pod, one, "/tmp")[0]["mountPath"] == "/tmp", f"{where}: a writable /tmp"
                image = one["image"]
                assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), image


def test_the_exporter_is_probed_on_healthz_and_readyz_and_writes_only_its_state_volume(
    rendered: dict[str, list[Object]],
) -> None:
    dockerfile = parse(DOCKERFILE.read_text())
    for tree, objects in rendered.items():
        for deployment in of_kind(objects, "Deployment"):
            pod = deployment["spec"]["template"]["spec"]
            exporter = container(deployment, "exporter")
            ports = {p["name"]: p["containerPort"] for p in exporter["ports"]}
            assert ports["metrics"] == 9477 and flags(exporter)["web.listen-address"] == "0.0.0.0:9477"
            # With a web config (TLS), the probes use HTTPS; they need no credentials either way.
            scheme = {"scheme": "HTTPS"} if "web.config.file" in flags(exporter) else {}
            assert exporter["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics", **scheme}, tree
            assert exporter["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics", **scheme}, tree
            state = flags(exporter)["state-dir"]
            mount, _ = mounted_at(pod, exporter, state)
            assert mount["mountPath"] == state and not mount.get("readOnly"), f"{tree}: the ledger is writable"
            writable = {m["mountPath"] for m in exporter["volumeMounts"] if not m.get("readOnly")}
            assert writable == {state, "/tmp"}, f"{tree}: the exporter writes only its state and /tmp"
            uid, gid = (int(n) for n in dockerfile.final.last("USER").split(":"))
            assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["fsGroup"]) == (uid, gid)


def test_the_base_sidecar_reads_claude_codes_config_volume_read_only(rendered: dict[str, list[Object]]) -> None:
    deployment = named(rendered["base"], "Deployment", "claude-code")
    pod = deployment["spec"]["template"]["spec"]
    claude = container(deployment, "claude-code")
    exporter = container(deployment, "exporter")
    config_dir = {e["name"]: e.get("value") for e in claude["env"]}["CLAUDE_CONFIG_DIR"]
    written, volume = mounted_at(pod, claude, config_dir)
    assert written["mountPath"] == config_dir and not written.get("readOnly")
    read, same = mounted_at(pod, exporter, flags(exporter)["claude-dir"])
    assert same == volume, "the exporter reads the volume Claude Code writes"
    assert read["readOnly"] is True
    state_mount, state = mounted_at(pod, exporter, flags(exporter)["state-dir"])
    assert state != volume and state_mount["name"] not in {m["name"] for m in claude["volumeMounts"]}


def test_the_servicemonitor_selects_the_service_and_its_port_and_the_service_selects_the_exporter(
    rendered: dict[str, list[Object]],
) -> None:
    alerts = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    down = re.search(r'up\{job=~"([^"]+)"\}', alerts)
    assert down, "the exporter-down alert matches jobs by a regex"
    for tree, objects in rendered.items():
        (monitor,) = of_kind(objects, "ServiceMonitor")
        matching = [
            s
            for s in of_kind(objects, "Service")
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert len(matching) == 1, f"{tree}: the ServiceMonitor selects {len(matching)} Services"
        (service,) = matching
        port_names = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"metrics"} <= port_names
        job = service["metadata"]["labels"].get(monitor["spec"].get("jobLabel", ""), service["metadata"]["name"])
        assert re.fullmatch(down[1], job), f"{tree}: the Operator's job {job} escapes the alerts' {down[1]}"
        pods = [
            d
            for d in of_kind(objects, "Deployment")
            if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(pods) == 1, f"{tree}: the Service selects {len(pods)} Deployments"
        exporter = container(pods[0], "exporter")
        for port in service["spec"]["ports"]:
            (target,) = [p for p in exporter["ports"] if p["name"] == port["targetPort"]]
            assert target["containerPort"] == port["port"], port


# --- the team overlay -----------------------------------------------------------------------------


@pytest.fixture
def team(rendered: dict[str, list[Object]]) -> list[Object]:
    return rendered["overlays/team"]


def test_the_team_overlay_runs_one_central_receiver_on_a_claim_and_no_claude_code(team: list[Object]) -> None:
    (deployment,) = of_kind(team, "Deployment")
    assert [c["name"] for c in containers(deployment)] == ["exporter"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    exporter = container(deployment, "exporter")
    assert flags(exporter)["otlp.listen"] == "0.0.0.0:4318"
    assert {p["name"]: p["containerPort"] for p in exporter["ports"]}["otlp"] == 4318
    _, state = mounted_at(pod, exporter, flags(exporter)["state-dir"])
    claim = named(team, "PersistentVolumeClaim", state["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    (service,) = of_kind(team, "Service")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"metrics": 9477, "otlp": 4318}


SECRETS = {
    "claude-usage-exporter-tokens",
    "claude-usage-exporter-web",
}  # the Secrets the overlays' comments say to make


def team_config(team: list[Object]) -> tuple[Object, str, dict[str, str]]:
    """The exporter container, its config file's path and the files of the volume holding it (a Secret's empty)."""
    (deployment,) = of_kind(team, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    exporter = container(deployment, "exporter")
    path = flags(exporter)["config"]
    mount, volume = mounted_at(pod, exporter, path)
    files: dict[str, str] = {}
    for source in volume["projected"]["sources"]:
        if "configMap" in source:
            files.update(named(team, "ConfigMap", source["configMap"]["name"])["data"])
        else:
            assert source["secret"]["name"] in SECRETS, "a Secret the overlay's comment says to make"
            files.update({item["path"]: "" for item in source["secret"]["items"]})
    return exporter, mount["mountPath"], files


def test_the_team_config_passes_check_config_and_its_tokens_file_is_the_secrets(
    team: list[Object], tmp_path: Path
) -> None:
    exporter, folder, files = team_config(team)
    config_path = flags(exporter)["config"]
    config = yaml.safe_load(files[Path(config_path).name])
    assert config["sources"]["transcripts"]["enabled"] is False
    assert config["sources"]["otlp"]["enabled"] is True
    tokens = config["sources"]["otlp"]["bearer_tokens_file"]
    assert Path(tokens).parent == Path(folder) and Path(tokens).name in files, "the tokens come from the Secret"
    (tmp_path / "config.yaml").write_text(files[Path(config_path).name])
    done = subprocess.run(
        [str(Path(sys.prefix) / "bin/claude-usage-exporter"), "check-config", str(tmp_path / "config.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "OTLP on 0.0.0.0:4318" in done.stdout, done.stdout + done.stderr


def run_central(objects: list[Object], shared: Path, secrets: dict[str, str]) -> tuple[Container, int]:
    """An overlay's exporter as a process: its args, its config volume with the Secrets' files given, loopback ports."""
    exporter, folder, files = team_config(objects)
    config_dir = shared / "config"
    config_dir.mkdir(exist_ok=True)
    for name, text in {**files, **secrets}.items():  # the config's paths in the volume, as the process sees them
        (config_dir / name).write_text(text.replace(f"{folder}/", f"{config_dir}/"))
    port, otlp = free_port(), free_port()
    loopback = {"0.0.0.0:9477": f"127.0.0.1:{port}", "0.0.0.0:4318": f"127.0.0.1:{otlp}"}
    args = [re.sub(r"0\.0\.0\.0:\d+", lambda m: loopback[m[0]], arg) for arg in exporter["args"]]
    process = Container(parse(DOCKERFILE.read_text()), shared, port, args=args, mounts={folder: str(config_dir)})
    process.start()
    return process, otlp


@pytest.fixture
def central(team: list[Object], shared: Path) -> Iterator[tuple[Container, int]]:
    """The team overlay's exporter as a process, with a tokens file where the Secret would be."""
    process, otlp = run_central(team, shared, {"tokens": "# one a line\nteam-token-1\n"})
    try:
        yield process, otlp
    finally:
        process.kill()


def post_logs(port: int, token: str | None) -> int:
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    body = gen.to_json(gen.api_request_logs(1))
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/logs", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_the_team_exporter_takes_otlp_only_with_a_token_from_the_secret_and_counts_it(
    central: tuple[Container, int],
) -> None:
    process, otlp = central
    eventually(process.healthy, what=lambda: f"the exporter serves; log:\n{process.log()}")
    eventually(lambda: process.get("/readyz")[0] == 200, what="/readyz answers 200")
    assert post_logs(otlp, None) == 401
    assert post_logs(otlp, "wrong") == 401
    assert post_logs(otlp, "team-token-1") == 200

    def counted() -> float:
        return sum(samples(process.get("/metrics")[1], "claude_usage_requests_total").values())

    assert eventually(counted, what="the request counted") == 1.0
    assert process.stop() == 0, process.log()
    assert (process.state / "ledger.sqlite3").is_file()


def kubelet_probe(probe: Object, exporter: Object, ports: dict[int, int]) -> int:
    """The status of an httpGet probe sent as kubelet sends it: no credentials, an HTTPS certificate not checked."""
    get = probe["httpGet"]
    named_ports = {p["name"]: p["containerPort"] for p in exporter["ports"]}
    port = ports[named_ports.get(get["port"], get["port"])]
    if get.get("scheme", "HTTP") == "HTTPS":
        unchecked = ssl.create_default_context()
        unchecked.check_hostname, unchecked.verify_mode = False, ssl.CERT_NONE
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=probe["timeoutSeconds"], context=unchecked
        )
    else:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=probe["timeoutSeconds"])
    try:
        headers = {"User-Agent": "kube-probe/1.33", "Accept": "*/*", "Connection": "close"}
        connection.request("GET", get["path"], headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_the_tls_overlays_probes_pass_with_tls_and_basic_auth_on_and_scrapes_need_the_password(
    rendered: dict[str, list[Object]],
    shared: Path,
    pki: Path,
) -> None:
    objects = rendered["overlays/team-tls"]
    web = secure_web_config(shared / "web", pki, "scrape-secret")
    secrets = {
        "tokens": "team-token-1\n",
        "tls.crt": (web.parent / "server.pem").read_text(),
        "tls.key": (web.parent / "server.key").read_text(),
        "web.yml": web.read_text().replace("server.pem", "tls.crt").replace("server.key", "tls.key"),
    }
    process, _ = run_central(objects, shared, secrets)
    try:
        (deployment,) = of_kind(objects, "Deployment")
        exporter = container(deployment, "exporter")
        ports = {9477: process.port}

        def probes_pass() -> bool:
            assert process.process is not None and process.process.poll() is None, process.log()
            try:
                statuses = [kubelet_probe(exporter[p], exporter, ports) for p in ("livenessProbe", "readinessProbe")]
            except OSError:
                return False  # not listening yet
            return all(200 <= status < 400 for status in statuses)  # kubelet's success

        eventually(probes_pass, what=lambda: f"both probes pass; log:\n{process.log()}")
        assert process.healthy(), "the image's HEALTHCHECK passes too"
        (monitor,) = of_kind(objects, "ServiceMonitor")
        endpoint = monitor["spec"]["endpoints"][0]
        assert (endpoint["scheme"], endpoint["basicAuth"]["username"]["name"]) == (
            "https",
            "claude-usage-exporter-scrape",
        )
        trusted = ssl.create_default_context(cafile=pki / "ca.pem")
        for password, status in ((None, 401), ("wrong", 401), ("scrape-secret", 200)):
            connection = http.client.HTTPSConnection("127.0.0.1", process.port, timeout=60, context=trusted)
            headers = {"Authorization": basic("prometheus", password)} if password else {}
            try:
                connection.request("GET", endpoint["path"], headers=headers)
                assert connection.getresponse().status == status, password
            finally:
                connection.close()
        assert process.stop() == 0, process.log()
    finally:
        process.kill()
