"""docker-compose.yml, the deployment users run: parsed and checked against the repository.

No Docker engine is needed: the file is read as YAML and every claim it makes about the
repository (mounted files, the command, settings names, the metrics port Prometheus
scrapes) is checked. ``docker compose config`` also runs when the compose plugin exists.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from stream.cli import build_parser
from stream.config import load_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services(compose: dict) -> None:
    assert {"kafka", "monitor", "prometheus", "grafana"} <= set(compose["services"])


def test_kafka_is_single_node_kraft(compose: dict) -> None:
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    assert kafka["image"].startswith("apache/kafka:4.")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node}@kafka:")
    listeners = dict(x.split("://") for x in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(x.split("://") for x in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert set(advertised) <= set(listeners)
    protocols = dict(x.split(":") for x in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)
    # Transactions (exactly-once mode) need these at 1 on a single node.
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 1
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
    assert "healthcheck" in kafka


def test_monitor_runs_a_real_command_with_real_settings(compose: dict) -> None:
    monitor = compose["services"]["monitor"]
    command = monitor["command"]
    assert command[0] == "plantwatch"
    args = build_parser().parse_args(command[1:])
    assert args.command == "run"
    env = {k: str(v) for k, v in monitor["environment"].items()}
    settings = load_settings(env=env)  # every PLANTWATCH_* name must be a real setting
    inside = next(
        target
        for source, target, *_ in (v.split(":") for v in monitor["volumes"])
        if source.endswith("plantwatch.toml")
    )
    assert args.config == inside
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.metrics.host == "0.0.0.0"  # loopback would be unreachable in a container
    assert str(settings.metrics.port) in [str(p) for p in monitor["expose"]]
    assert monitor["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert (ROOT / monitor.get("build", ".")).joinpath("Dockerfile").is_file()


def test_every_mounted_host_path_exists(compose: dict) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./deploy"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"


def test_prometheus_scrapes_the_monitor_port(compose: dict) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    port = compose["services"]["monitor"]["environment"]["PLANTWATCH_METRICS__PORT"]
    assert f"monitor:{port}" in targets
    for rule_file in config["rule_files"]:
        assert (ROOT / "deploy" / "prometheus" / rule_file).is_file()


def test_docker_compose_config_accepts_it() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker CLI not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed (only the YAML checks ran)")
    result = subprocess.run(
        [docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
