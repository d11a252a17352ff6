"""The production deployment files (deploy/README.md): the Dockerfile, deploy/docker-compose.yml, the
Kubernetes manifests in deploy/k8s, and the Prometheus and Grafana files.

No Docker engine or cluster is needed. The compose file goes through the real Docker Compose
(`deploy/compose-check.sh`), the manifests through the Kubernetes API's types (`deploy/k8s-check.sh`) and
the alert rules through Prometheus's own rule loader (`deploy/rules-check.sh`): each built once from the Go
module proxy and cached. The rest is read here and checked against the code:
every environment variable a Clientela container is given must be a setting the code reads (the
pydantic-settings classes, with their prefixes and aliases), and every metric the alerts and the dashboard
use must be one of those `shared/metrics.py` exports.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

import shared
from shared.settings import ServiceSettings
from shared.topics import ALL_TOPICS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SERVICES = ("ingest", "profile", "segmentation")
PORTS = {"ingest": 8001, "profile": 8002, "segmentation": 8003}
METRICS_PORT = 9100
COMPOSE_IMAGE = "clientela:local"  # ${CLIENTELA_IMAGE:-clientela:local}
K8S_IMAGE = "clientela"  # replaced by kustomization.yaml's `images`
# The first build of Docker Compose takes minutes; later runs a second.
BUILD_TIMEOUT_S = 1200

# The metrics shared/metrics.py exports: name -> (type, labels).
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "clientela_http_request_duration_seconds": (
        "histogram",
        frozenset({"service", "method", "route", "status"}),
    ),
    "clientela_events_consumed_total": ("counter", frozenset({"service", "consumer", "topic", "outcome"})),
    "clientela_events_published_total": ("counter", frozenset({"service", "topic"})),
    "clientela_dead_letters_total": ("counter", frozenset({"service", "consumer", "topic"})),
    "clientela_consumer_lag": ("gauge", frozenset({"service", "consumer", "topic", "partition"})),
    "clientela_outbox_backlog": ("gauge", frozenset({"service"})),
    "clientela_outbox_oldest_age_seconds": ("gauge", frozenset({"service"})),
    "clientela_webhook_deliveries_total": ("counter", frozenset({"outcome"})),
    "clientela_webhook_delivery_duration_seconds": ("histogram", frozenset({"outcome"})),
}
# Labels Prometheus adds to every scraped series (job, instance; container_service: prometheus.yml).
TARGET_LABELS = frozenset({"job", "instance", "container_service"})
# Series Prometheus writes itself for each target, not the application.
SCRAPE_SERIES: dict[str, frozenset[str]] = {"up": frozenset()}


# -- helpers -----------------------------------------------------------------------------------------------


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False, **kwargs
    )


def settings_env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a pydantic-settings class reads (upper case: they are case-insensitive).
    A field with a validation alias reads the alias, not the prefixed name; aliases without the class's
    prefix or CLIENTELA_ (the bare field name, for keyword arguments in tests) are not used in deployments."""
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    wanted = ("CLIENTELA_", prefix) if prefix else ("CLIENTELA_",)
    names: set[str] = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias or field.alias
        if isinstance(alias, AliasChoices):
            names |= {choice.upper() for choice in alias.choices if isinstance(choice, str)}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{field_name}".upper())
    return {name for name in names if name.startswith(wanted)}


def _subclasses(cls: type) -> Iterator[type]:
    sub: type
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


@cache
def allowed_env() -> dict[str, frozenset[str]]:
    """Per process kind ("ingest", "profile", "segmentation", "shared" for `python -m shared.topics`), the
    variables its settings read: its own class plus every other settings class of shared/ (the keyring's
    secret, ...), which every process reads."""
    for module in pkgutil.iter_modules(shared.__path__):
        importlib.import_module(f"shared.{module.name}")
    service_classes: dict[str, type[BaseSettings]] = {}
    for name in SERVICES:
        settings_module = importlib.import_module(f"services.{name}.settings")
        (cls,) = [
            c
            for c in vars(settings_module).values()
            if isinstance(c, type) and issubclass(c, ServiceSettings) and c is not ServiceSettings
        ]
        service_classes[name] = cls
    common: set[str] = set()
    for cls in _subclasses(BaseSettings):
        if cls.__module__.startswith("shared.") and not issubclass(cls, ServiceSettings):
            common |= settings_env_names(cls)
    allowed = {name: frozenset(settings_env_names(cls) | common) for name, cls in service_classes.items()}
    allowed["shared"] = frozenset(settings_env_names(ServiceSettings) | common)
    return allowed


def processes_of(command: str) -> set[str]:
    """Which settings a container's command reads: the services it names (`services.profile`,
    `services/ingest/alembic.ini`, a loop over the three) and `shared` for `python -m shared.topics`."""
    found = set(re.findall(r"\b(ingest|profile|segmentation)\b", command))
    if "shared.topics" in command:
        found.add("shared")
    return found


def assert_known_env(where: str, command: str, names: set[str]) -> None:
    processes = processes_of(command)
    assert processes, f"{where}: which service does {command!r} run?"
    allowed = frozenset().union(*(allowed_env()[p] for p in processes))
    unknown = sorted(n for n in names if n.upper() not in allowed)
    assert not unknown, f"{where} sets variables no setting of {sorted(processes)} reads: {unknown}"


# A small PromQL reader: enough to list the metric names and label matchers of an expression.
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
_PROMQL_WORDS |= {"offset", "bool", "inf", "nan", "atan2"}
_STRING = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\''


def promql_selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) for every series selector of a PromQL expression."""
    selectors: list[tuple[str, set[str]]] = []
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    braces = rf"\{{(?:{_STRING}|[^}}])*\}}"
    pattern = re.compile(rf"(?<![\w:.$])([A-Za-z_:][\w:]*)\s*({braces})?|({braces})")
    for match in pattern.finditer(text):
        name, matchers, bare = match.group(1), match.group(2), match.group(3)
        if bare is not None:
            raise AssertionError(f"selector without a metric name in {expr!r}")
        rest = text[match.end() :].lstrip()
        if matchers is None and (rest.startswith("(") or name.lower() in _PROMQL_WORDS):
            continue  # a function, an aggregation or a keyword
        labels = set(re.findall(rf"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*(?:{_STRING})", matchers or ""))
        selectors.append((name, labels))
    return selectors


def assert_known_metrics(where: str, expr: str) -> set[str]:
    """Every selector of `expr` names an exported metric (a histogram through its _bucket, _count or _sum
    series) and matches only labels it has; returns the metric names."""
    selectors = promql_selectors(expr)
    assert selectors, f"{where}: no metric in {expr!r}"
    used: set[str] = set()
    for name, labels in selectors:
        if name in SCRAPE_SERIES:
            assert labels <= TARGET_LABELS, f"{where}: {name} has no labels {sorted(labels - TARGET_LABELS)}"
            used.add(name)
            continue
        base, extra = name, set()
        for suffix in ("_bucket", "_count", "_sum"):
            if name.endswith(suffix) and name[: -len(suffix)] in METRICS:
                base = name[: -len(suffix)]
                assert METRICS[base][0] == "histogram", f"{where}: {base} is not a histogram"
                extra = {"le"} if suffix == "_bucket" else set()
        assert base in METRICS, f"{where}: {name} is not a metric shared/metrics.py exports"
        if base == name:
            assert METRICS[name][0] != "histogram", f"{where}: use {name}_bucket, _count or _sum"
        unknown = labels - METRICS[base][1] - TARGET_LABELS - extra
        assert not unknown, f"{where}: {name} has no labels {sorted(unknown)}"
        used.add(base)
    return used


# -- the image ---------------------------------------------------------------------------------------------


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8")


def test_the_image_is_built_from_the_lock_file_and_runs_as_a_user() -> None:
    text = dockerfile()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    assert text.count("FROM ${PYTHON_IMAGE}") == 2  # the build stage and the runtime stage
    assert "uv sync --frozen --no-dev" in text
    uv_sh = (DEPLOY / "uv.sh").read_text(encoding="utf-8")
    (uv_version,) = re.findall(r'^UV_VERSION="([^"]+)"', uv_sh, re.M)
    assert f"ARG UV_VERSION={uv_version}" in text, "the image's uv is the one deploy/uv.sh pins"
    (user,) = re.findall(r"^USER (\S+)$", text, re.M)
    uid = user.split(":")[0]
    assert uid.isdigit(), "a numeric user: Kubernetes' runAsNonRoot can only check a number"
    assert int(uid) != 0
    # The Kubernetes pods run as that same user.
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_yaml_documents(path):
            pod = pod_spec(doc)
            if pod is not None:
                assert pod["securityContext"]["runAsUser"] == int(uid), (
                    f"{path.name}: {doc['metadata']['name']}"
                )
                assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_image_environment_names_real_settings() -> None:
    env: dict[str, str] = {}
    for block in re.findall(r"^ENV ((?:.*\\\n)*.*)$", dockerfile(), re.M):
        for name, value in re.findall(r"(\w+)=(\S+)", block.replace("\\\n", " ")):
            env[name] = value
    settings = {n for n in env if n.startswith(("CLIENTELA_", "INGEST_", "PROFILE_", "SEGMENTATION_"))}
    assert {"INGEST_HOST", "PROFILE_HOST", "SEGMENTATION_HOST"} <= settings
    assert env["INGEST_HOST"] == "0.0.0.0"  # noqa: S104 - inside a container the API must be reachable
    everything = frozenset().union(*allowed_env().values())
    assert not sorted(settings - everything), "the Dockerfile sets variables no setting reads"
    assert "CLIENTELA_SECRET_KEY=" not in dockerfile(), "no secret in the image"


def test_dockerignore_sends_only_what_the_image_copies() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list: .data (secret key, SQLite files), .env and .git stay out"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied: set[str] = set()
    for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile(), re.M):
        *sources, _destination = line.split()
        copied |= {s.rstrip("/") for s in sources if not s.startswith("--")}
    assert copied, "the Dockerfile copies the project"
    assert copied <= included, f"COPY sources the build context leaves out: {sorted(copied - included)}"
    assert all((ROOT / source).exists() for source in copied)


# -- docker compose ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_config() -> dict[str, Any]:
    """The compose file validated by the real Docker Compose, then resolved by it (anchors, merges and
    variables applied) with the observability profile on."""
    checked = run(["bash", "deploy/compose-check.sh"])
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "deploy/docker-compose.yml is valid" in checked.stderr
    resolved = run(
        ["bash", "deploy/compose-check.sh", "--profile", "observability", "config", "--format", "json"]
    )
    assert resolved.returncode == 0, resolved.stderr[-3000:]
    config: dict[str, Any] = json.loads(resolved.stdout)
    return config


def compose_binary() -> Path:
    plugin_dir = run(["bash", "deploy/compose-check.sh", "--plugin-dir"])
    assert plugin_dir.returncode == 0, plugin_dir.stderr
    return Path(plugin_dir.stdout.strip()) / "cli-plugins" / "docker-compose"


def clientela_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in config["services"].items() if s.get("image") == COMPOSE_IMAGE}


def command_text(command: list[str] | str | None) -> str:
    return command if isinstance(command, str) else " ".join(command or [])


def test_compose_check_rejects_a_broken_file(compose_config: dict[str, Any], tmp_path: Path) -> None:
    """The check is Docker Compose's own loader: it refuses what `docker compose up` would refuse, from the
    schema (a wrong condition) to the model (a volume nobody declares)."""
    original = (DEPLOY / "docker-compose.yml").read_text(encoding="utf-8")
    for name in ("compose", "prometheus", "grafana"):
        shutil.copytree(DEPLOY / name, tmp_path / name)
    placeholders = {
        name: "x"
        for name in (
            "CLIENTELA_SECRET_KEY",
            "CLIENTELA_ADMIN_TOKEN",
            "CLIENTELA_PG_PASSWORD",
            "CLIENTELA_PG_ADMIN_PASSWORD",
            "GRAFANA_ADMIN_PASSWORD",
        )
    }
    breakages = {
        ("condition: service_completed_successfully", "condition: service_done"): (
            "depends_on.init.condition value must be one of"
        ),
        (
            "- ingest-imports:/data/imports",
            "- missing-volume:/data/imports",
        ): "undefined volume missing-volume",
    }
    compose = str(compose_binary())
    broken = str(tmp_path / "docker-compose.yml")
    for (good, bad), error in breakages.items():
        assert good in original
        Path(broken).write_text(original.replace(good, bad, 1), encoding="utf-8")
        result = run(
            [compose, "--env-file", "/dev/null", "-f", broken, "config", "-q"],
            env={"PATH": "/usr/bin:/bin", **placeholders},
        )
        assert result.returncode != 0, bad
        assert error in result.stderr, result.stderr


def test_compose_refuses_to_start_without_the_secrets(compose_config: dict[str, Any]) -> None:
    """An empty admin token would let anyone create tenants; an empty secret key would make each container
    invent its own: the file requires both (`${VAR:?}`)."""
    for variable in ("CLIENTELA_ADMIN_TOKEN", "CLIENTELA_SECRET_KEY", "CLIENTELA_PG_PASSWORD"):
        result = run(["bash", "deploy/compose-check.sh"], env={**base_env(), variable: ""})
        assert result.returncode != 0, variable
        assert f"required variable {variable} is missing a value" in result.stderr


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "CLIENTELA_CACHE", "GOTOOLCHAIN")}


def test_compose_runs_every_part_of_the_three_services(compose_config: dict[str, Any]) -> None:
    services = clientela_services(compose_config)
    expected = {f"{s}-api": f"python -m services.{s}" for s in SERVICES}
    expected |= {f"{s}-consumer": f"python -m services.{s}.consumer" for s in SERVICES}
    assert {n: command_text(services[n]["command"]) for n in expected if n in services} == expected
    assert set(services) == {*expected, "init"}
    assert {"kafka", "postgres", "prometheus", "grafana"} <= set(compose_config["services"])
    init = command_text(services["init"]["command"])
    assert "python -m shared.topics" in init
    assert "upgrade head" in init
    for name, service in services.items():
        env = service["environment"]
        assert env["CLIENTELA_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092", name
        assert env["CLIENTELA_RUN_MIGRATIONS"] == "false", f"{name}: init migrates"
        if name == "init":
            assert set(service["depends_on"]) == {"kafka", "postgres"}
            assert {d["condition"] for d in service["depends_on"].values()} == {"service_healthy"}
            continue
        assert service["depends_on"]["init"]["condition"] == "service_completed_successfully", name
        process = name.split("-")[0]
        url = env[f"{process.upper()}_DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://")
        assert url.endswith(f"@postgres:5432/clientela_{process}"), "each service its own database"
        if name.endswith("-api"):
            assert env["CLIENTELA_RUN_WORKERS"] == "false", f"{name}: the workers run in {process}-consumer"
            assert env[f"{process.upper()}_PORT"] == str(PORTS[process])
            health = command_text(service["healthcheck"]["test"])
            assert f"127.0.0.1:{PORTS[process]}" in health
            assert "/healthz" in health
            assert "/readyz" in health
        else:
            assert env["CLIENTELA_METRICS_PORT"] == str(METRICS_PORT)
            assert f"127.0.0.1:{METRICS_PORT}/metrics" in command_text(service["healthcheck"]["test"])
    assert "CLIENTELA_ADMIN_TOKEN" in services["ingest-api"]["environment"]


def test_compose_environment_names_real_settings(compose_config: dict[str, Any]) -> None:
    for name, service in clientela_services(compose_config).items():
        assert_known_env(
            f"compose service {name}", command_text(service["command"]), set(service["environment"])
        )


def test_compose_shares_the_import_folder_between_ingest_processes(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    folder = services["ingest-api"]["environment"]["INGEST_IMPORT_DIR"]
    mounts = {
        name: {(v["source"], v["target"]) for v in services[name].get("volumes", []) if v["type"] == "volume"}
        for name in ("ingest-api", "ingest-consumer")
    }
    assert mounts["ingest-api"] == mounts["ingest-consumer"] == {("ingest-imports", folder)}


def test_compose_postgres_has_a_database_per_service(compose_config: dict[str, Any]) -> None:
    postgres = compose_config["services"]["postgres"]
    command = command_text(postgres["command"])
    assert "max_locks_per_transaction=512" in command  # as deploy/postgres.sh: ingest locks a whole batch
    # As deploy/postgres.sh (at every start): index probes for the consumers' batch lookups at any size.
    assert "random_page_cost=1.1" in command
    assert "random_page_cost=1.1" in (ROOT / "deploy" / "postgres.sh").read_text()
    (init_script,) = [
        v for v in postgres["volumes"] if v["target"].startswith("/docker-entrypoint-initdb.d/")
    ]
    script = Path(init_script["source"]).read_text(encoding="utf-8")
    assert Path(init_script["source"]) == DEPLOY / "compose" / "postgres-init.sh"
    assert "for service in ingest profile segmentation" in script
    assert 'CREATE DATABASE :"db" OWNER :"role"' in script
    assert subprocess.run(["bash", "-n", init_script["source"]], check=False).returncode == 0


def test_compose_kafka_is_the_version_the_project_tests_with(compose_config: dict[str, Any]) -> None:
    pom = (DEPLOY / "kafka" / "pom.xml").read_text(encoding="utf-8")
    (version,) = re.findall(r"<kafka.version>([^<]+)</kafka.version>", pom)
    kafka = compose_config["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{version}"
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", (
        "topics come from shared/topics.py"
    )
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


# -- Kubernetes --------------------------------------------------------------------------------------------


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in ("Deployment", "Job"):
        spec: dict[str, Any] = doc["spec"]["template"]["spec"]
        return spec
    return None


@cache
def k8s_documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    docs: list[tuple[str, dict[str, Any]]] = []
    for resource in kustomization["resources"]:
        docs += [(resource, doc) for doc in load_yaml_documents(K8S / resource)]
    return tuple(docs)


def k8s(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in k8s_documents() if doc["kind"] == kind}


def test_k8s_manifests_parse_and_are_all_listed() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "every manifest is listed in kustomization.yaml, and only those"
    assert [image["name"] for image in kustomization["images"]] == [K8S_IMAGE]
    for resource, doc in k8s_documents():
        assert {"apiVersion", "kind", "metadata"} <= set(doc), resource
        assert doc["metadata"]["name"], resource
    names = [(doc["kind"], doc["metadata"]["name"]) for _, doc in k8s_documents()]
    assert len(names) == len(set(names)), "no two objects of one kind share a name"


def test_k8s_manifests_match_the_api_types(tmp_path: Path) -> None:
    """Every object decodes strictly into the Kubernetes API's own types (deploy/k8scheck), as the API
    server's field validation would: a misspelt field is an error, not a silently ignored key."""
    checked = run(["bash", "deploy/k8s-check.sh"])
    assert checked.returncode == 0, checked.stderr[-3000:]
    counts = Counter(resource for resource, _ in k8s_documents())
    for resource, count in counts.items():
        assert f"deploy/k8s/{resource}: {count} objects" in checked.stdout, resource
    broken = tmp_path / "profile.yaml"
    text = (K8S / "profile.yaml").read_text(encoding="utf-8")
    broken.write_text(text.replace("readinessProbe:", "readinesProbe:", 1), encoding="utf-8")
    refused = run(["bash", "deploy/k8s-check.sh", str(broken)])
    assert refused.returncode != 0
    assert 'unknown field "readinesProbe"' in refused.stderr


def test_k8s_has_an_api_and_a_consumer_deployment_per_service() -> None:
    deployments = k8s("Deployment")
    assert set(deployments) == {f"{s}-{part}" for s in SERVICES for part in ("api", "consumer")}
    for service in SERVICES:
        (api,) = deployments[f"{service}-api"]["spec"]["template"]["spec"]["containers"]
        (consumer,) = deployments[f"{service}-consumer"]["spec"]["template"]["spec"]["containers"]
        assert api["command"] == ["python", "-m", f"services.{service}"]
        assert consumer["command"] == ["python", "-m", f"services.{service}.consumer"]
        assert env_value(api, "CLIENTELA_RUN_WORKERS") == "false"
        assert env_value(consumer, "CLIENTELA_METRICS_PORT") == str(METRICS_PORT)
        assert deployments[f"{service}-api"]["spec"]["replicas"] >= 2, "an API survives a node"


def env_value(container: dict[str, Any], name: str) -> str | None:
    for entry in container.get("env", []):
        if entry["name"] == name:
            value: str | None = entry.get("value")
            return value
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data = k8s("ConfigMap")[source["configMapRef"]["name"]]["data"]
            if name in data:
                return str(data[name])
    return None


def test_every_deployment_has_probes_and_resources() -> None:
    for name, deployment in k8s("Deployment").items():
        spec = deployment["spec"]
        template = spec["template"]
        assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items(), name
        pod = template["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), f"{name}/{container['name']} {kind}"
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
        for container in pod["containers"]:
            where = f"{name}/{container['name']}"
            live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert live["port"] in ports, where
            assert ready["port"] in ports, where
            if name.endswith("-api"):
                service = name.removesuffix("-api")
                assert (live["path"], ready["path"]) == ("/healthz", "/readyz"), where
                assert (
                    ports[live["port"]]
                    == PORTS[service]
                    == int(str(env_value(container, f"{service.upper()}_PORT")))
                )
            else:
                # A consumer has no API: its metrics server (CLIENTELA_METRICS_PORT) shows it is alive.
                assert (live["path"], ready["path"]) == ("/metrics", "/metrics"), where
                assert ports[live["port"]] == int(str(env_value(container, "CLIENTELA_METRICS_PORT")))
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/port"] == str(ports[live["port"]]), where


def test_k8s_services_and_budgets_select_deployments() -> None:
    deployments = k8s("Deployment")

    def selected(selector: dict[str, str]) -> list[str]:
        return [
            name
            for name, d in deployments.items()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]

    for name, service in k8s("Service").items():
        (target,) = selected(service["spec"]["selector"])
        (container,) = deployments[target]["spec"]["template"]["spec"]["containers"]
        port_names = {p["name"] for p in container["ports"]}
        assert all(p["targetPort"] in port_names for p in service["spec"]["ports"]), name
    assert set(k8s("Service")) == {f"{s}-api" for s in SERVICES}
    budgets = k8s("PodDisruptionBudget")
    for name, budget in budgets.items():
        (target,) = selected(budget["spec"]["selector"]["matchLabels"])
        assert target == name
        replicas = deployments[target]["spec"]["replicas"]
        assert budget["spec"].get("minAvailable", 0) < replicas, f"{name} would block every drain"
    assert set(budgets) == set(deployments)


def test_k8s_environment_names_real_settings_and_existing_keys() -> None:
    config_maps, secrets = k8s("ConfigMap"), k8s("Secret")
    keys = {("configMap", n): set(d["data"]) for n, d in config_maps.items()}
    keys |= {("secret", n): set(d["stringData"]) for n, d in secrets.items()}
    for _, doc in k8s_documents():
        pod = pod_spec(doc)
        if pod is None:
            continue
        for container in pod.get("initContainers", []) + pod["containers"]:
            where = f"{doc['metadata']['name']}/{container['name']}"
            assert container["image"] == K8S_IMAGE, where
            names = set()
            for source in container.get("envFrom", []):
                kind = "configMap" if "configMapRef" in source else "secret"
                ref = source.get("configMapRef") or source["secretRef"]
                assert (kind, ref["name"]) in keys, f"{where}: no {kind} {ref['name']}"
                names |= keys[kind, ref["name"]]
            for entry in container.get("env", []):
                names.add(entry["name"])
                for kind in ("configMap", "secret"):
                    ref = entry.get("valueFrom", {}).get(f"{kind}KeyRef")
                    if ref is not None and not ref.get("optional"):
                        assert ref["key"] in keys.get((kind, ref["name"]), set()), f"{where}: {ref}"
            assert_known_env(where, command_text(container["command"]), names)


def test_k8s_migrations_run_once_before_the_pods() -> None:
    assert k8s("ConfigMap")["clientela-common"]["data"]["CLIENTELA_RUN_MIGRATIONS"] == "false"
    job = k8s("Job")["clientela-migrate"]["spec"]["template"]["spec"]
    commands = [command_text(c["command"]) for c in job["initContainers"] + job["containers"]]
    assert commands[0] == "python -m shared.topics", "the topics exist before anything consumes"
    assert sorted(commands[1:]) == sorted(
        f"alembic -c services/{s}/alembic.ini upgrade head" for s in SERVICES
    )
    for name, deployment in k8s("Deployment").items():
        (wait,) = deployment["spec"]["template"]["spec"]["initContainers"]
        service = name.split("-")[0]
        assert f"alembic -c services/{service}/alembic.ini current" in command_text(wait["command"]), name
        assert "(head)" in command_text(wait["command"]), name


def test_k8s_ingest_pods_share_the_import_volume() -> None:
    deployments = k8s("Deployment")
    claims = set()
    for name in ("ingest-api", "ingest-consumer"):
        pod = deployments[name]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        folder = env_value(container, "INGEST_IMPORT_DIR")
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == folder]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        claims.add(volume["persistentVolumeClaim"]["claimName"])
    (claim,) = claims
    assert k8s("PersistentVolumeClaim")[claim]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_k8s_secrets_fail_closed() -> None:
    """The committed placeholders cannot be used: the secret key is shorter than the 32 characters the
    keyring demands, and the admin token is not there at all (tenant creation stays off until it is)."""
    secrets = k8s("Secret")
    assert len(secrets["clientela-secrets"]["stringData"]["CLIENTELA_SECRET_KEY"]) < 32
    assert all("CLIENTELA_ADMIN_TOKEN" not in s["stringData"] for s in secrets.values())
    (api,) = k8s("Deployment")["ingest-api"]["spec"]["template"]["spec"]["containers"]
    (token,) = [e for e in api["env"] if e["name"] == "CLIENTELA_ADMIN_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"]["optional"] is True


# -- Prometheus and Grafana --------------------------------------------------------------------------------


def test_prometheus_scrapes_every_api_and_consumer(compose_config: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    targets: set[tuple[str, int]] = set()
    for job in config["scrape_configs"]:
        assert job["metrics_path"] == "/metrics"
        for sd in job["dns_sd_configs"]:
            targets |= {(name, sd["port"]) for name in sd["names"]}
    services = compose_config["services"]
    expected = {(f"{s}-api", int(services[f"{s}-api"]["environment"][f"{s.upper()}_PORT"])) for s in SERVICES}
    expected |= {
        (f"{s}-consumer", int(services[f"{s}-consumer"]["environment"]["CLIENTELA_METRICS_PORT"]))
        for s in SERVICES
    }
    assert targets == expected
    mounts = {
        v["target"]: Path(v["source"]) for v in services["prometheus"]["volumes"] if v["type"] == "bind"
    }
    assert mounts["/etc/prometheus/prometheus.yml"] == DEPLOY / "prometheus" / "prometheus.yml"
    for rule_file in config["rule_files"]:
        assert mounts[rule_file] == DEPLOY / "prometheus" / "alerts.yml"


def alert_rules() -> list[dict[str, Any]]:
    config = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in config["groups"] for rule in group["rules"]]


def test_alerts_use_only_exported_metrics_and_cover_the_failures() -> None:
    rules = alert_rules()
    used: set[str] = set()
    for rule in rules:
        assert {"alert", "expr", "labels", "annotations"} <= set(rule)
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        used |= assert_known_metrics(rule["alert"], rule["expr"])
    assert set(METRICS) - used == {"clientela_events_published_total"}, "every failure the issue lists"
    exprs = {rule["alert"]: rule["expr"] for rule in rules}
    assert "histogram_quantile(0.99" in exprs["ClientelaHTTPLatencyP99High"]
    assert 'status=~"5.."' in exprs["ClientelaHTTP5xxRateHigh"]


def test_alert_rules_load_in_prometheus(tmp_path: Path) -> None:
    """Prometheus's rule loader (deploy/promcheck, what `promtool check rules` runs) accepts the rules, and
    refuses a broken expression."""
    checked = run(["bash", "deploy/rules-check.sh"])
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert f"{len(alert_rules())} rules in" in checked.stdout
    broken = tmp_path / "alerts.yml"
    text = (DEPLOY / "prometheus" / "alerts.yml").read_text(encoding="utf-8")
    broken.write_text(text.replace("> 10000", "> > 10000", 1), encoding="utf-8")
    refused = run(["bash", "deploy/rules-check.sh", str(broken)])
    assert refused.returncode != 0
    assert "ClientelaConsumerLagHigh" in refused.stderr


def test_the_promql_reader_finds_names_and_labels() -> None:
    expr = 'sum by (service) (rate(foo_total{a="x}", b=~"y"}[5m])) / on (c) bar'
    expr += " unless histogram_quantile(0.9, baz)"
    assert promql_selectors(expr) == [("foo_total", {"a", "b"}), ("bar", set()), ("baz", set())]
    with pytest.raises(AssertionError, match="not a metric"):
        assert_known_metrics("x", "rate(clientela_http_requests_total[5m])")
    with pytest.raises(AssertionError, match="no labels"):
        assert_known_metrics("x", 'clientela_webhook_deliveries_total{service="segmentation"}')


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (DEPLOY / "grafana" / "clientela-dashboard.json").read_text(encoding="utf-8")
    )
    return data


def test_dashboard_uses_only_exported_metrics() -> None:
    board = dashboard()
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    used: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= assert_known_metrics(panel["title"], target["expr"])
    assert used == set(METRICS), f"no panel for {sorted(set(METRICS) - used)}"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    (metric,) = re.findall(r"label_values\((\w+), service\)", variables["service"]["definition"])
    assert_known_metrics("service variable", metric)


def test_grafana_provisioning_matches_compose(compose_config: dict[str, Any]) -> None:
    grafana = compose_config["services"]["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == DEPLOY / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose_config["services"]
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == source["uid"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "clientela.yml").read_text())["providers"]
    folder = provider["options"]["path"]
    dashboards = [target for target in mounts if target.startswith(folder + "/")]
    assert [mounts[t] for t in dashboards] == [DEPLOY / "grafana" / "clientela-dashboard.json"]


# -- the guide ---------------------------------------------------------------------------------------------


def test_the_guide_states_the_partition_counts_and_groups() -> None:
    guide = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for topic in ALL_TOPICS:
        assert re.search(rf"`{re.escape(topic.name)}`[^\n]*\| {topic.partitions} \|", guide), topic.name
    for group in ("ingest.privacy", "profile.tenants", "profile.privacy", "profile.records"):
        assert f"clientela.{group}" in guide
    for group in ("segmentation.tenants", "segmentation.profiles"):
        assert f"clientela.{group}" in guide
    assert "CLIENTELA_OLD_SECRET_KEYS" in guide
