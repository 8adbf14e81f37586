"""The shipped deploy files form a working fleet, checked against the real CLI and tools.

- compose.yaml: parsed and checked against `drover`'s commands, the settings and the example
  files; `docker compose config` too where the docker CLI has its compose plugin.
- deploy/systemd: `systemd-analyze verify` (the ExecStart path pointed at this venv's
  `drover`), and every ExecStart parsed by the CLI's own commands.
- deploy/kubernetes: every Kubernetes object validated against the published JSON schemas
  (kubernetes-validate bundles them, offline, strict: unknown fields fail), KEDA's
  ScaledObjects for their shape and for the exact Redis list keys kombu uses for the queues.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import click
import kubernetes_validate
import pytest
import yaml
from kombu.transport import redis as kombu_redis
from pydantic import BaseModel

from orchestrator.cli import cli
from shared.settings import Settings, load_settings
from workers.priority import REDIS_PRIORITY_STEPS
from workers.start import DEFAULT_QUEUES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
SYSTEMD = ROOT / "deploy" / "systemd"
KUBERNETES = ROOT / "deploy" / "kubernetes"
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
EXAMPLE_YAML = ROOT / "drover.yaml.example"
EXAMPLE_ENV = ROOT / "drover.env.example"
CONTROL_QUEUE = "drover.default"
TRANSFER_QUEUES = {"transfer.image", "transfer.ssh"}
# the oldest Kubernetes the manifests are meant for, and the newest schemas bundled
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
INSTALLED_DROVER = "/opt/drover/.venv/bin/drover"


# ---------------------------------------------------------------- the CLI and the settings


def drover_invocation(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """(sub-command, parsed options) of `drover ARGV...`; fails as the CLI would refuse it."""
    assert argv and Path(argv[0]).name == "drover", argv
    assert len(argv) > 1, f"no sub-command: {argv}"
    name, args = argv[1], argv[2:]
    command = cli.commands.get(name)
    assert command is not None, f"`drover {name}` is not a command: {sorted(cli.commands)}"
    try:
        context = command.make_context(name, list(args), resilient_parsing=False)
    except click.ClickException as e:
        raise AssertionError(f"`{shlex.join(argv)}`: {e.format_message()}") from e
    return name, dict(context.params)


def worker_queues(params: dict[str, Any]) -> set[str]:
    if params.get("proxy"):
        return {"proxy.<cluster>"}
    queues = {q for q in str(params.get("queues") or "").split(",") if q}
    return queues or set(DEFAULT_QUEUES)


def unknown_keys(data: dict[str, Any], model: type[BaseModel], prefix: str = "") -> list[str]:
    """Keys of a settings mapping that no settings field has (the settings ignore them)."""
    found = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            found.append(prefix + key)
            continue
        model_type = field.annotation
        if (
            isinstance(value, dict)
            and isinstance(model_type, type)
            and issubclass(model_type, BaseModel)
        ):
            found += unknown_keys(value, model_type, f"{prefix}{key}.")
    return found


def check_settings_file(path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    assert unknown_keys(data, Settings) == [], f"{path}: keys the settings do not know"
    for name in list(os.environ):
        if name.startswith("DROVER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DROVER_CONFIG", str(path))
    return load_settings()


def env_file(path: Path) -> dict[str, str]:
    """VAR=value lines (a value may be single-quoted, as systemd and compose read it)."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = shlex.split(value)[0] if value else ""
    return values


def test_example_settings_are_all_known(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = check_settings_file(EXAMPLE_YAML, monkeypatch)
    assert urlparse(settings.redis_url).hostname == "redis"  # compose's service
    assert settings.effective_broker_url == settings.redis_url
    assert settings.default_repository.startswith(str(settings.state_dir))
    assert settings.log.format == "json"

    secrets = env_file(EXAMPLE_ENV)
    assert {"DROVER_API_TOKENS", "DROVER_FLOWER_USER", "DROVER_FLOWER_PASSWORD"} <= set(secrets)
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    with_secrets = load_settings()
    assert [t.get_secret_value() for t in with_secrets.api_tokens] == ["CHANGE-ME-api-token"]
    assert with_secrets.flower_user and with_secrets.flower_password.get_secret_value()
    for name in secrets:
        field = name.removeprefix("DROVER_").lower()
        assert field in Settings.model_fields, f"{EXAMPLE_ENV}: {name} is no setting"


# ---------------------------------------------------------------------------- compose


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ${VAR:-default} and ${VAR} (as `docker compose config` would resolve them)."""
    env = env or {}

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(3) or ""
        return env.get(name) or default

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", one, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())  # merges the x-drover anchor
    assert isinstance(document, dict)
    return document


def drover_services(compose: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        name: drover_invocation(service["command"])
        for name, service in compose["services"].items()
        if service.get("command", [""])[0] == "drover"
    }


def test_compose_runs_every_role(compose: dict[str, Any]) -> None:
    roles = drover_services(compose)
    commands = {command for command, _ in roles.values()}
    assert {"api", "beat", "worker", "flower"} <= commands
    queues = [worker_queues(p) for c, p in roles.values() if c == "worker"]
    assert any(CONTROL_QUEUE in q for q in queues), "no worker consumes the control queue"
    assert set().union(*queues) >= {CONTROL_QUEUE, *TRANSFER_QUEUES}
    assert all(q == {CONTROL_QUEUE} or q <= TRANSFER_QUEUES for q in queues), queues
    for command, params in roles.values():
        if command in ("api", "flower"):
            assert params["host"] == "0.0.0.0"  # reachable through the published port
            assert not params["insecure_local"]  # the API's tokens, Flower's basic auth
    for name, service in compose["services"].items():
        assert service.get("restart") == "always", f"{name} does not come back when it exits"


def test_compose_redis_keeps_everything(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] == "noeviction"
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert "healthcheck" in redis


def test_compose_services_share_settings_and_state(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    declared_volumes = set(compose["volumes"])
    for name in drover_services(compose):
        service = compose["services"][name]
        env = service["environment"]
        assert urlparse(env["DROVER_REDIS_URL"]).hostname in compose["services"]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        mounts = {}
        for volume in service["volumes"]:
            source, target, *_ = interpolate(volume).split(":")
            mounts[target] = source
        config_source = mounts[env["DROVER_CONFIG"]]
        assert (ROOT / config_source).is_file(), f"{name} mounts {config_source}, not in the repo"
        settings = check_settings_file(ROOT / config_source, monkeypatch)
        state = mounts[str(settings.state_dir)]
        assert state in declared_volumes  # one volume: the fleet's secret.key, the repository
        assert Path(settings.default_repository).is_relative_to(settings.state_dir)
        assert [f["path"] for f in service["env_file"]] == ["./drover.env"]
        build = service["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == CONTAINERFILE


def test_containerfile_runs_drover_as_its_user() -> None:
    text = CONTAINERFILE.read_text()
    assert "pip install" in text and "USER 1000" in text
    assert "chown drover:drover /var/lib/drover" in text  # a fresh volume takes this owner
    for package in ("orchestrator", "workers", "shared"):
        assert f"COPY {package} {package}" in text


def test_docker_compose_config_accepts_compose_yaml(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker CLI is not installed: compose.yaml is checked by parsing only")
    plugin = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    if plugin.returncode != 0:
        pytest.skip(
            "the docker CLI has no compose plugin (`docker compose version` fails): "
            "compose.yaml is checked by parsing only"
        )
    result = subprocess.run(
        [docker, "compose", "--project-directory", str(ROOT), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "DOCKER_CONFIG": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------- systemd


def systemd_units() -> list[Path]:
    return sorted(p for p in SYSTEMD.iterdir() if p.suffix in (".service", ".target"))


def read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def instances(unit: Path) -> Iterator[tuple[str, configparser.ConfigParser]]:
    """(instance name, parsed unit); a template once per transfer mode."""
    if unit.name.endswith("@.service"):
        for queue in sorted(TRANSFER_QUEUES):
            instance = queue.removeprefix("transfer.")
            yield unit.name.replace("@.", f"@{instance}."), read_unit(unit)
    else:
        yield unit.name, read_unit(unit)


def exec_start(name: str, unit: configparser.ConfigParser) -> list[str]:
    line = unit["Service"]["ExecStart"]
    instance = name.partition("@")[2].rpartition(".")[0]
    return shlex.split(line.replace("%i", instance).replace("%I", instance))


def test_systemd_units_run_every_role() -> None:
    roles: list[tuple[str, dict[str, Any]]] = []
    for path in systemd_units():
        for name, unit in instances(path):
            if path.suffix == ".target":
                continue
            service = unit["Service"]
            assert service.get("Restart") == "always", f"{name}: a worker that exits stays down"
            argv = exec_start(name, unit)
            assert argv[0] == INSTALLED_DROVER, name
            roles.append(drover_invocation(argv))
            assert service.get("Environment") == "DROVER_CONFIG=/etc/drover/drover.yaml"
            assert service.get("EnvironmentFile") == "-/etc/drover/drover.env"
    commands = {command for command, _ in roles}
    assert {"api", "beat", "worker", "flower"} <= commands
    queues = [worker_queues(p) for c, p in roles if c == "worker"]
    assert {CONTROL_QUEUE} in queues, "no unit runs a control worker (drover.default)"
    assert {"proxy.<cluster>"} in queues, "no unit runs a proxy worker"
    assert set().union(*queues) >= TRANSFER_QUEUES
    for command, params in roles:
        if command in ("api", "flower"):
            assert not params["insecure_local"]


def test_systemd_target_wants_existing_units() -> None:
    names = {name for path in systemd_units() for name, _ in instances(path)}
    for path in SYSTEMD.glob("*.target"):
        text = path.read_text()  # Wants= on several lines: configparser keeps only the last
        wanted = [w for line in re.findall(r"^Wants=(.*)$", text, re.M) for w in line.split()]
        assert wanted and set(wanted) <= names, set(wanted) - names


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the units are checked by parsing only")
    drover = Path(sys.executable).with_name("drover")
    assert drover.exists(), drover
    names = []
    for path in systemd_units():
        text = path.read_text().replace(INSTALLED_DROVER, str(drover))
        (tmp_path / path.name).write_text(text)
        for name, _ in instances(path):
            if name != path.name:  # a template's instance, verified as such
                (tmp_path / name).write_text(text)
            names.append(name)
    result = subprocess.run(
        [analyze, "verify", "--man=no", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    # a unit systemd would only warn about (an unknown key, a bad value) fails here too
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


# ------------------------------------------------------------------------- Kubernetes


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                found.append((path, document))
    return found


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in manifests() if d["kind"] == kind}


def kustomization() -> dict[str, Any]:
    document = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert isinstance(document, dict)
    return document


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return list(workload["spec"]["template"]["spec"]["containers"])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_objects_validate(version: str) -> None:
    validated = 0
    for path, document in manifests():
        if document["apiVersion"].startswith(("keda.sh/", "kustomize.config.k8s.io/")):
            continue  # not Kubernetes' own: checked below
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            name = f"{document['kind']}/{document['metadata']['name']}"
            raise AssertionError(f"{path.name}: {name}: {e.message} at {e.path}") from e
        validated += 1
    assert validated >= 10


def test_the_validator_refuses_a_broken_object() -> None:
    """The schemas are really applied: an unknown field and a wrong type are refused."""
    deployment = next(iter(objects("Deployment").values()))
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(kustomization()["resources"])
    present = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    namespace = kustomization()["namespace"]
    assert namespace in objects("Namespace")
    images = {i["name"] for i in kustomization()["images"]}
    for workload in objects("Deployment").values():
        for container in containers(workload):
            if container["command"][0] == "drover":
                assert container["image"].partition(":")[0] in images


def test_kubernetes_runs_every_role(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deployments = objects("Deployment")
    roles: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, deployment in deployments.items():
        (container,) = containers(deployment)
        roles[name] = drover_invocation(container["command"])
    commands = {command for command, _ in roles.values()}
    assert {"api", "beat", "worker", "flower"} <= commands
    queues = [worker_queues(p) for c, p in roles.values() if c == "worker"]
    assert {CONTROL_QUEUE} in queues
    assert set().union(*queues) >= TRANSFER_QUEUES
    assert all(len(q) == 1 for q in queues)  # one queue each: scaled on its own length

    config = objects("ConfigMap")["drover-config"]
    settings_file = tmp_path / "drover.yaml"
    settings_file.write_text(config["data"]["drover.yaml"])
    settings = check_settings_file(settings_file, monkeypatch)
    secret = objects("Secret")["drover-secrets"]["stringData"]
    # pods share no state directory: they must share the key that seals stored secrets
    assert {"DROVER_API_TOKENS", "DROVER_SECRET_KEY", "DROVER_FLOWER_USER"} <= set(secret)
    redis_host = urlparse(settings.redis_url).hostname
    assert redis_host in objects("Service")
    assert "redis" in objects("StatefulSet")

    claims = objects("PersistentVolumeClaim")
    for name, deployment in deployments.items():
        command, _ = roles[name]
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        config_dir = str(Path(env["DROVER_CONFIG"]).parent)
        assert volumes[mounts[config_dir]]["configMap"]["name"] == "drover-config"
        assert [s["secretRef"]["name"] for s in container["envFrom"]] == ["drover-secrets"]
        if command in ("api", "worker"):  # they read or write backups
            claim = volumes[mounts[settings.default_repository]]["persistentVolumeClaim"]
            assert "ReadWriteMany" in claims[claim["claimName"]]["spec"]["accessModes"]


def test_services_select_pods_and_ports() -> None:
    workloads = {**objects("Deployment"), **objects("StatefulSet")}
    for name, service in objects("Service").items():
        selector = service["spec"]["selector"]
        targets = [
            w for w in workloads.values()
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]  # fmt: skip
        assert len(targets) == 1, f"Service {name} selects {len(targets)} workloads"
        ports = {p["name"] for c in containers(targets[0]) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {name}: no port {port['targetPort']}"
    redis = objects("StatefulSet")["redis"]
    (container,) = containers(redis)
    options = dict(zip(container["args"][1::2], container["args"][2::2], strict=True))
    assert options == {"--appendonly": "yes", "--maxmemory-policy": "noeviction"}


# --------------------------------------------------------------------------------- KEDA


class _Kombu:
    """kombu's Redis channel as far as naming a priority's list goes."""

    sep = kombu_redis.Channel.sep
    priority_steps = REDIS_PRIORITY_STEPS

    def priority(self, priority: int) -> int:
        return int(kombu_redis.Channel.priority(self, priority))  # type: ignore[arg-type]


def broker_lists(queue: str) -> set[str]:
    """Every Redis list kombu keeps `queue` in, one per priority step (workers/app.py)."""
    kombu = _Kombu()
    return {
        str(kombu_redis.Channel._q_for_pri(kombu, queue, step))  # type: ignore[arg-type]
        for step in REDIS_PRIORITY_STEPS
    }


def test_broker_list_names_are_kombus() -> None:
    assert broker_lists("transfer.image") == {"transfer.image"} | {
        f"transfer.image\x06\x16{step}" for step in range(1, 10)
    }


def test_keda_scales_every_worker_on_all_its_lists() -> None:
    deployments = objects("Deployment")
    namespace = kustomization()["namespace"]
    redis_port = objects("Service")["redis"]["spec"]["ports"][0]["port"]
    scaled = objects("ScaledObject")
    assert scaled, "no KEDA ScaledObject"
    scaled_targets = set()
    for name, scaled_object in scaled.items():
        assert scaled_object["apiVersion"] == "keda.sh/v1alpha1"
        spec = scaled_object["spec"]
        target = spec["scaleTargetRef"]["name"]
        assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
        assert target in deployments, f"ScaledObject {name} scales no Deployment: {target}"
        scaled_targets.add(target)
        # never zero: a job is refused for a queue no live worker consumes
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        (container,) = containers(deployments[target])
        command, params = drover_invocation(container["command"])
        assert command == "worker"
        expected = set().union(*(broker_lists(q) for q in worker_queues(params)))

        triggers = spec["triggers"]
        assert {t["type"] for t in triggers} == {"redis"}
        lists = [t["metadata"]["listName"] for t in triggers]
        assert sorted(lists) == sorted(expected), f"{name}: not the queue's lists"
        for trigger in triggers:
            metadata = trigger["metadata"]
            host, _, port = metadata["address"].rpartition(":")
            assert host in (f"redis.{namespace}.svc", f"redis.{namespace}.svc.cluster.local")
            assert int(port) == redis_port
            assert metadata["databaseIndex"] == "0"  # redis_url's database
            assert int(metadata["listLength"]) >= 1
        modifiers = spec["advanced"]["scalingModifiers"]
        terms = {t.strip() for t in modifiers["formula"].split("+")}
        assert terms == {t["name"] for t in triggers}, f"{name}: the formula misses a list"
        assert int(modifiers["target"]) >= 1
    workers = {n for n, d in deployments.items() if drover_invocation(
        containers(d)[0]["command"])[0] == "worker"}  # fmt: skip
    assert scaled_targets == workers
