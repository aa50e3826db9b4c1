"""docker-compose.yml, the deployment users run: parsed and checked against the repository.

No Docker engine is needed: the file is read as YAML and every claim it makes about the
repository (mounted files, the command, settings names, the metrics port Prometheus
scrapes, the dashboard folder Grafana's provider reads) is checked. ``docker compose
config`` also runs when the compose plugin exists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from plantwatch.cli import build_parser
from plantwatch.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
Compose = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> Compose:
    data: Compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return data


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of each bind mount; named volumes are left out."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/", "~")):
            mounts.append((source, target))
    return mounts


def _listeners(value: str) -> dict[str, str]:
    return dict(item.split("://") for item in value.split(","))


def test_services(compose: Compose) -> None:
    assert {"kafka", "monitor", "prometheus", "grafana"} <= set(compose["services"])
    images = {name: s.get("image", "") for name, s in compose["services"].items()}
    assert images["kafka"].startswith("apache/kafka:4.")
    assert images["prometheus"].startswith("prom/prometheus:")
    assert images["grafana"].startswith("grafana/grafana:")
    # Pinned tags: "latest" would change under a user between two `docker compose pull`.
    for name in ("kafka", "prometheus", "grafana"):
        assert not images[name].endswith(":latest"), name


def test_kafka_is_single_node_kraft(compose: Compose) -> None:
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    node = env["KAFKA_NODE_ID"]
    listeners = _listeners(env["KAFKA_LISTENERS"])
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    controller_port = listeners[controller].rsplit(":", 1)[1]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node}@kafka:{controller_port}"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert set(advertised) <= set(listeners) and controller not in advertised
    protocols = dict(x.split(":") for x in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)
    # Other containers use kafka:9092 (the monitor's setting), the host localhost:9094.
    assert "kafka:9092" in advertised.values()
    assert "localhost:9094" in advertised.values()
    # One node: internal topics with one replica (transactions for exactly-once mode).
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
    ):
        assert env[key] == 1, key
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == 0


def test_kafka_keeps_its_data_in_the_volume(compose: Compose) -> None:
    kafka = compose["services"]["kafka"]
    targets = {v.split(":")[1] for v in kafka["volumes"]}
    assert kafka["environment"]["KAFKA_LOG_DIRS"] in targets


def test_kafka_healthcheck_asks_the_broker(compose: Compose) -> None:
    kafka = compose["services"]["kafka"]
    check = " ".join(kafka["healthcheck"]["test"])
    inside_port = _listeners(kafka["environment"]["KAFKA_LISTENERS"])["INTERNAL"].rsplit(":")[-1]
    assert "kafka-broker-api-versions" in check and f":{inside_port}" in check
    assert compose["services"]["monitor"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_monitor_runs_a_real_command_with_real_settings(compose: Compose) -> None:
    monitor = compose["services"]["monitor"]
    command = monitor["command"]
    assert command[0] == "plantwatch"
    args = build_parser().parse_args(command[1:])
    assert args.command == "run"
    env = {k: str(v) for k, v in monitor["environment"].items()}
    settings = load_settings(env=env)  # every PLANTWATCH_* name must be a real setting
    inside = next(target for source, target in _bind_mounts(monitor) if source.endswith(".toml"))
    assert args.config == inside
    # The model directory lies in a mounted volume, or the monitor would have none.
    volume_targets = [PurePosixPath(v.split(":")[1]) for v in monitor["volumes"]]
    assert any(PurePosixPath(args.model).is_relative_to(t) for t in volume_targets)
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.metrics.host == "0.0.0.0"  # loopback would be unreachable in a container
    assert str(settings.metrics.port) in [str(p) for p in monitor["expose"]]
    assert (ROOT / monitor.get("build", ".")).joinpath("Dockerfile").is_file()


def test_the_settings_file_it_mounts_loads() -> None:
    assert load_settings(ROOT / "deploy" / "plantwatch.toml", env={}) is not None


def test_every_mounted_host_path_exists(compose: Compose) -> None:
    for name, service in compose["services"].items():
        for source, _ in _bind_mounts(service):
            assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"


def test_published_ports_stay_on_the_hosts_loopback(compose: Compose) -> None:
    # Kafka here has no authentication and Grafana lets anonymous viewers in.
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} to the network"


def test_prometheus_scrapes_the_monitor_port(compose: Compose) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = dict(_bind_mounts(prometheus))
    host_dir = next(s for s, t in mounts.items() if t == "/etc/prometheus")
    config_path = ROOT / host_dir / "prometheus.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    targets = [
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    port = compose["services"]["monitor"]["environment"]["PLANTWATCH_METRICS__PORT"]
    assert f"monitor:{port}" in targets
    for rule_file in config["rule_files"]:
        assert (config_path.parent / rule_file).is_file()


def test_grafana_loads_the_dashboards_where_the_provider_looks(compose: Compose) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(_bind_mounts(grafana))
    provisioning = next(s for s, t in mounts.items() if t == "/etc/grafana/provisioning")
    provider_files = sorted((ROOT / provisioning / "dashboards").glob("*.yml"))
    assert provider_files, "no dashboard provider under the provisioning folder"
    paths = {
        p["options"]["path"]
        for f in provider_files
        for p in yaml.safe_load(f.read_text(encoding="utf-8"))["providers"]
    }
    dashboards_target = next(t for s, t in mounts.items() if s.endswith("dashboards"))
    assert paths == {dashboards_target}
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    host_dashboards = next(s for s, t in mounts.items() if t == dashboards_target)
    assert (ROOT / host_dashboards / PurePosixPath(home).name).is_file()


def test_docker_compose_config_accepts_it() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker CLI is not installed (the YAML checks above still ran)")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=60, check=False
    )
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed (the YAML checks above still ran)")
    result = subprocess.run(
        [docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_image_copies_every_package_it_installs() -> None:
    """The Dockerfile's ``pip install .`` needs every top-level package in the build context."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = sorted(pattern.rstrip("*") for pattern in include)
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in packages:
        assert (ROOT / package / "__init__.py").is_file(), f"{package} is not a package"
        assert re.search(rf"^COPY {package} \./{package}$", dockerfile, re.M), (
            f"the Dockerfile does not copy {package}/, so the image could not import it"
        )


def test_the_demo_profile_trains_on_the_plant_it_then_simulates(compose: Compose) -> None:
    """``docker compose --profile demo up``: history, a model trained on it, the live plant.

    Each command is a real ``plantwatch`` command line; the history and the live run are
    the same plant; the trained model is the one the monitor serves, and the live readings
    go where the monitor reads them. Without the profile the monitor does not need them."""
    services = compose["services"]
    demo = {name for name, s in services.items() if "demo" in s.get("profiles", [])}
    assert demo == {"history", "trainer", "simulator"}
    parser = build_parser()
    history, trainer, simulator, monitor = (
        parser.parse_args(services[name]["command"][1:])
        for name in ("history", "trainer", "simulator", "monitor")
    )
    assert (history.command, trainer.command, simulator.command) == (
        "simulate",
        "train",
        "simulate",
    )
    assert history.plant_seed == simulator.plant_seed and history.assets == simulator.assets
    assert history.out == trainer.input and history.faults == 0
    assert trainer.model == monitor.model
    assert simulator.faults > 0 and simulator.control_assets >= 1
    settings = load_settings(env={k: str(v) for k, v in services["monitor"]["environment"].items()})
    assert simulator.topic == settings.topics.sensors
    assert simulator.bootstrap_servers == settings.kafka.bootstrap_servers

    # The volumes the commands write and read are shared, by name.
    def volume_of(service: str, path: str) -> str:
        mounts = [v.split(":")[:2] for v in services[service]["volumes"]]
        return next(src for src, dst in mounts if PurePosixPath(path).is_relative_to(dst))

    assert volume_of("history", history.out) == volume_of("trainer", trainer.input)
    assert volume_of("trainer", trainer.model) == volume_of("monitor", monitor.model)
    assert services["trainer"]["depends_on"]["history"]["condition"] == (
        "service_completed_successfully"
    )
    needs = services["monitor"]["depends_on"]["trainer"]
    assert needs == {"condition": "service_completed_successfully", "required": False}
    assert services["simulator"]["depends_on"]["monitor"]["condition"] == "service_healthy"
