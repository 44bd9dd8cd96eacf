"""The compose stack (deploy/compose): valid Compose, hardened, loopback-only, and wired to the repository's files.

No Docker engine runs here, so nothing is started. The file is checked against the Compose
specification's JSON schema as Debian's `docker-compose` package ships it (1.29.2, the schema of
compose-spec of May 2021), and that `docker-compose config` accepts it; then that what it mounts,
scrapes and provisions exists and fits together.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.tools import require
from tests.test_deploy_docker import DOCKERFILE, STATE, image_env, parse

pytestmark = pytest.mark.slow  # docker-compose

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "deploy/compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
# Debian's docker-compose (1.29.2) validates with this copy of the compose-spec schema.
SCHEMA = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")
DOCKER_COMPOSE = "/usr/bin/docker-compose"
HOME_DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")  # ${NAME:-default}


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def defaulted(value: str) -> str:
    """A value as Compose reads it with none of its variables set: each `${NAME:-default}` is its default."""
    return HOME_DEFAULT.sub(lambda m: m[2], value)


def binds(service: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in service.get("volumes", []) if isinstance(v, dict) and v["type"] == "bind"]


def host_path(source: str) -> Path:
    return (COMPOSE_DIR / defaulted(source)).resolve()


def mount_of(service: dict[str, Any], target: str) -> Path:
    """The host path a service sees at `target` (or below it)."""
    for bind in binds(service):
        if target == bind["target"] or target.startswith(bind["target"] + "/"):
            return host_path(bind["source"]) / target[len(bind["target"]) :].lstrip("/")
    raise AssertionError(f"nothing is mounted at {target}: {service.get('volumes')}")


def test_the_stack_follows_the_compose_specification_schema(stack: dict[str, Any]) -> None:
    require(str(SCHEMA), "the compose-spec JSON schema (Debian package `docker-compose`)", executable=False)
    require("jsonschema", "the compose-spec JSON schema applied (PyPI package `jsonschema`)")
    import jsonschema

    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(stack)]
    assert not errors, "\n".join(errors)
    typo = {**stack, "services": {**stack["services"], "exporter": {**stack["services"]["exporter"], "readonly": 1}}}
    assert not validator.is_valid(typo), "the schema refuses unknown keys, so the check above means something"


def test_docker_compose_accepts_the_stack() -> None:
    require(DOCKER_COMPOSE, "`docker-compose config` validating the stack (Debian package `docker-compose`)")
    done = subprocess.run(
        [DOCKER_COMPOSE, "--project-directory", str(COMPOSE_DIR), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_the_stack_has_a_name_of_its_own() -> None:
    settings = dict(
        line.split("=", 1) for line in (COMPOSE_DIR / ".env").read_text().splitlines() if line and line[0] != "#"
    )
    assert settings["COMPOSE_PROJECT_NAME"] == "claude-usage", "its volumes are claude-usage_*, not compose_*"


def long_running(stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that serve; not the one-shot steps (`restart: "no"`) they wait for."""
    return {name: s for name, s in stack["services"].items() if s["restart"] != "no"}


def test_every_published_port_is_bound_to_loopback(stack: dict[str, Any]) -> None:
    published = {name: service.get("ports", []) for name, service in long_running(stack).items()}
    assert published["exporter"] == ["127.0.0.1:9477:9477"]
    for name, ports in published.items():
        assert ports, f"{name} publishes no port"
        for port in ports:
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port} is not loopback only"


def test_every_image_is_pinned_to_a_release(stack: dict[str, Any]) -> None:
    for name, service in stack["services"].items():
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), f"{name}: {image} is not pinned to a release"


def test_every_service_has_a_health_check_and_drops_its_powers(stack: dict[str, Any]) -> None:
    dockerfile = parse(DOCKERFILE.read_text())
    for name, service in long_running(stack).items():
        if "build" in service:
            assert dockerfile.final.all("HEALTHCHECK"), f"{name}: its image has no HEALTHCHECK"
        else:
            test = service["healthcheck"]["test"]
            assert test[0] == "CMD" and any(re.search(r"http://127\.0\.0\.1:\d+/", word) for word in test), test
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["restart"] == "unless-stopped", name


def test_the_exporter_is_built_from_the_dockerfile_and_runs_read_only(stack: dict[str, Any]) -> None:
    exporter = stack["services"]["exporter"]
    assert (COMPOSE_DIR / exporter["build"]["context"]).resolve() == ROOT
    assert (ROOT / exporter["build"]["dockerfile"]).resolve() == DOCKERFILE
    dockerfile = parse(DOCKERFILE.read_text())
    assert defaulted(exporter["user"]) == dockerfile.final.last("USER")
    assert exporter["read_only"] is True
    assert exporter["tmpfs"] == ["/tmp"]
    env = image_env(dockerfile.final, {})
    (claude,) = binds(exporter)
    assert claude["target"] == env["CLAUDE_USAGE_EXPORTER_CLAUDE_DIR"] and claude["read_only"] is True
    assert defaulted(claude["source"]) == "~/.claude"
    (state,) = [v for v in exporter["volumes"] if v["type"] == "volume"]
    assert state["target"] == STATE == env["CLAUDE_USAGE_EXPORTER_STATE_DIR"]
    assert state["source"] in stack["volumes"]


def test_a_one_shot_step_gives_the_state_volume_to_the_exporters_user_before_it_starts(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    services = stack["services"]
    exporter = services["exporter"]
    (step,) = [name for name, s in services.items() if s["restart"] == "no"]
    init = services[step]
    assert exporter["depends_on"][step] == {"condition": "service_completed_successfully"}
    assert init["image"] == exporter["image"] and init["build"] == exporter["build"]
    assert init["volumes"] == [v for v in exporter["volumes"] if v["type"] == "volume"], "the same state volume"
    assert init["environment"]["OWNER"] == exporter["user"], "the same user, defaults and all"
    assert (init["cap_drop"], init["cap_add"], init["read_only"]) == (["ALL"], ["CHOWN"], True)
    assert "ports" not in init
    # Its command, as the container's shell gets it (`$$` is Compose's escape for `$`), on a folder here.
    program, flag, script = init["entrypoint"]
    assert (program, flag) == ("/bin/sh", "-c")
    volume = tmp_path / "state"
    (volume / "ledger.sqlite3").parent.mkdir()
    (volume / "ledger.sqlite3").write_bytes(b"")
    script = script.replace("$$", "$").replace(init["volumes"][0]["target"], str(volume))
    if os.geteuid() != 0:
        reason = "chown to another user needs root: the step's command NOT RUN"
        pytest.fail(reason) if os.environ.get("CI") == "true" else pytest.skip(reason)
    done = subprocess.run(["/bin/sh", "-c", script], env={"OWNER": defaulted(exporter["user"])}, capture_output=True)
    assert done.returncode == 0, done.stderr
    uid, gid = (int(n) for n in defaulted(exporter["user"]).split(":"))
    for path in (volume, volume / "ledger.sqlite3"):
        assert (path.stat().st_uid, path.stat().st_gid) == (uid, gid), path


def test_every_host_path_the_stack_mounts_is_in_the_repository(stack: dict[str, Any]) -> None:
    mounted = 0
    for name, service in stack["services"].items():
        for bind in binds(service):
            if bind["target"] == "/claude":
                continue  # the user's ~/.claude, checked above
            path = host_path(bind["source"])
            assert path.is_relative_to(ROOT) and path.exists(), f"{name}: {bind['source']} is not in the repository"
            assert bind["read_only"] is True, f"{name} may write into the repository at {bind['source']}"
            mounted += 1
    assert mounted == 4, "the Prometheus folder, the Alertmanager config, Grafana's provisioning and dashboards"


def flag(service: dict[str, Any], name: str) -> str:
    words: list[str] = service["command"]
    (value,) = [word.split("=", 1)[1] for word in words if word.startswith(f"--{name}=")]
    return value


def container_ports(service: dict[str, Any]) -> set[int]:
    return {int(port.rsplit(":", 1)[1]) for port in service["ports"]}


def test_prometheus_in_the_stack_reads_the_rules_scrapes_the_exporter_and_alerts_through_alertmanager(
    stack: dict[str, Any],
) -> None:
    services = stack["services"]
    config_path = mount_of(services["prometheus"], flag(services["prometheus"], "config.file"))
    assert config_path == ROOT / "deploy/prometheus/prometheus.yml"
    config = yaml.safe_load(config_path.read_text())
    assert {(config_path.parent / f).name for f in config["rule_files"]} == {"alerts.yml", "recording.yml"}
    assert all((config_path.parent / f).is_file() for f in config["rule_files"])
    jobs = config["scrape_configs"]
    targets = {job["job_name"]: [t for s in job["static_configs"] for t in s["targets"]] for job in jobs}
    assert targets["claude-usage"] == ["exporter:9477"]
    alerting = [t for a in config["alerting"]["alertmanagers"] for s in a["static_configs"] for t in s["targets"]]
    assert alerting == ["alertmanager:9093"]
    for target in [*alerting, *(t for ts in targets.values() for t in ts)]:
        host, port = target.rsplit(":", 1)
        if host != "localhost":
            assert host in services, f"{target}: no service {host} in the stack"
            assert int(port) in container_ports(services[host]), f"{target}: {host} does not listen on {port}"
    alertmanager = services["alertmanager"]
    assert mount_of(alertmanager, flag(alertmanager, "config.file")) == ROOT / "deploy/alertmanager/alertmanager.yml"


def test_grafana_is_provisioned_with_the_stack_prometheus_and_the_repository_dashboards(
    stack: dict[str, Any],
) -> None:
    grafana = stack["services"]["grafana"]
    provisioning = mount_of(grafana, "/etc/grafana/provisioning")
    assert provisioning == COMPOSE_DIR / "grafana/provisioning"
    files = (provisioning / "datasources").glob("*.yml")
    sources = [s for f in files for s in yaml.safe_load(f.read_text())["datasources"]]
    (default,) = [s for s in sources if s.get("isDefault")]
    assert (default["type"], default["url"]) == ("prometheus", "http://prometheus:9090")
    assert 9090 in container_ports(stack["services"]["prometheus"])
    files = (provisioning / "dashboards").glob("*.yml")
    (provider,) = [p for f in files for p in yaml.safe_load(f.read_text())["providers"]]
    assert provider["type"] == "file"
    dashboards = mount_of(grafana, provider["options"]["path"])
    assert dashboards == ROOT / "dashboards"
    found = {p.name for p in dashboards.glob("*.json")}
    assert {"claude-usage-overview.json", "claude-usage-exporter.json"} <= found, found
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert mount_of(grafana, home).is_file(), f"the home dashboard {home} is not mounted"
