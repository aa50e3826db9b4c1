"""The local Kafka broker: pure parts without a network, then the real broker.

The unit tests cover what a person sees when something is missing (Java, Maven, a free
port) and the files the broker is started with; the integration tests round-trip messages
through the session broker and drive a second broker through ``plantwatch broker`` from
other processes, as a user would.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from stream.broker import (
    KAFKA_VERSION,
    BrokerError,
    JavaInfo,
    LocalBroker,
    cache_dir,
    check_java,
    ensure_artifacts,
    ensure_console_tools,
    find_java,
    find_maven,
    free_port,
    jvm_heap_options,
    libs_dir,
    new_cluster_id,
    parse_java_version,
    render_pom,
    render_server_properties,
    tools_dir,
)
from stream.broker.artifacts import TOOLS_DEPENDENCIES
from stream.broker.logs import log_excerpt
from stream.broker.probe import metadata_round_trip

# Real `java -version` outputs (stderr), as distributions print them.
JAVA_8 = """openjdk version "1.8.0_412"
OpenJDK Runtime Environment (build 1.8.0_412-8u412-ga-1~22.04.1-b08)
OpenJDK 64-Bit Server VM (build 25.412-b08, mixed mode)
"""
JAVA_11 = """openjdk version "11.0.23" 2024-04-16
OpenJDK Runtime Environment (build 11.0.23+9-post-Ubuntu-1ubuntu122.04.1)
OpenJDK 64-Bit Server VM (build 11.0.23+9-post-Ubuntu-1ubuntu122.04.1, mixed mode, sharing)
"""
JAVA_17 = """openjdk version "17.0.15" 2025-04-15
OpenJDK Runtime Environment (build 17.0.15+6-Debian-1deb12u1)
OpenJDK 64-Bit Server VM (build 17.0.15+6-Debian-1deb12u1, mixed mode, sharing)
"""
JAVA_21_GA = """openjdk version "21" 2023-09-19
OpenJDK Runtime Environment (build 21+35-2513)
OpenJDK 64-Bit Server VM (build 21+35-2513, mixed mode, sharing)
"""
JAVA_21_ORACLE = """java version "21.0.2" 2024-01-16 LTS
Java(TM) SE Runtime Environment (build 21.0.2+13-LTS-58)
Java HotSpot(TM) 64-Bit Server VM (build 21.0.2+13-LTS-58, mixed mode, sharing)
"""
JAVA_25_WITH_TOOL_OPTIONS = """Picked up JAVA_TOOL_OPTIONS: -Dfile.encoding=UTF-8
openjdk version "25.0.3" 2026-04-21 LTS
OpenJDK Runtime Environment Temurin-25.0.3+9 (build 25.0.3+9-LTS)
"""
JAVA_EA = 'openjdk version "26-ea" 2026-03-17\n'


# -- Java --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "major"),
    [
        (JAVA_8, 8),
        (JAVA_11, 11),
        (JAVA_17, 17),
        (JAVA_21_GA, 21),
        (JAVA_21_ORACLE, 21),
        (JAVA_25_WITH_TOOL_OPTIONS, 25),
        (JAVA_EA, 26),
    ],
)
def test_java_version_is_read_from_real_outputs(text: str, major: int) -> None:
    assert parse_java_version(text) == major


def test_unreadable_java_version_says_what_it_got() -> None:
    with pytest.raises(BrokerError, match="cannot read a Java version"):
        parse_java_version("Error: could not create the Java Virtual Machine.")


def test_java_11_is_refused_with_what_to_do() -> None:
    info = JavaInfo("/usr/lib/jvm/java-11-openjdk-amd64/bin/java", 11, JAVA_11)
    with pytest.raises(BrokerError) as err:
        check_java(info)
    message = str(err.value)
    assert "Java 17 or newer is needed" in message
    assert "found Java 11 at /usr/lib/jvm/java-11-openjdk-amd64/bin/java" in message
    assert "apt-get install openjdk-17-jre-headless" in message
    assert "docker compose up kafka" in message


@pytest.mark.parametrize("text", [JAVA_17, JAVA_21_GA, JAVA_25_WITH_TOOL_OPTIONS])
def test_java_17_and_newer_pass(text: str) -> None:
    info = JavaInfo("/usr/bin/java", parse_java_version(text), text)
    assert check_java(info) is info


def _fake_java_home(root: Path, version_text: str) -> Path:
    """A JAVA_HOME whose ``bin/java`` prints ``version_text`` as ``java -version`` does."""
    (root / "bin").mkdir(parents=True)
    java = root / "bin" / "java"
    java.write_text(f"#!/bin/sh\ncat >&2 <<'EOF'\n{version_text}EOF\n", encoding="utf-8")
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    return root


def test_find_java_runs_java_home_and_refuses_an_old_one(tmp_path: Path) -> None:
    home = _fake_java_home(tmp_path / "jdk11", JAVA_11)
    with pytest.raises(BrokerError, match=r"found Java 11 at .*jdk11/bin/java"):
        find_java({"JAVA_HOME": str(home), "PATH": ""})


def test_find_java_accepts_java_home_21(tmp_path: Path) -> None:
    home = _fake_java_home(tmp_path / "jdk21", JAVA_21_ORACLE)
    info = find_java({"JAVA_HOME": str(home), "PATH": ""})
    assert (info.major, info.path) == (21, str(home / "bin" / "java"))


def test_no_java_at_all_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="apt-get install openjdk-17-jre-headless"):
        find_java({"PATH": str(tmp_path)})


def test_broken_java_home_is_named(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match=r"JAVA_HOME is .* not an executable"):
        find_java({"JAVA_HOME": str(tmp_path / "nowhere"), "PATH": ""})


# -- artifacts ---------------------------------------------------------------------------


def test_cache_dir_precedence(tmp_path: Path) -> None:
    assert cache_dir({"PLANTWATCH_CACHE_DIR": str(tmp_path / "c")}) == tmp_path / "c"
    assert cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "plantwatch"
    assert cache_dir({}) == Path("~/.cache/plantwatch").expanduser()
    assert libs_dir(tmp_path) == tmp_path / "kafka" / KAFKA_VERSION / "libs"


def test_no_maven_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="apt-get install maven") as err:
        find_maven({"PATH": str(tmp_path), "PLANTWATCH_CACHE_DIR": str(tmp_path)})
    assert "docker compose up kafka" in str(err.value)


def _complete_cache(cache: Path, jars: list[str]) -> Path:
    libs = libs_dir(cache)
    libs.mkdir(parents=True)
    for jar in jars:
        (libs / jar).write_bytes(b"PK")
    manifest = {"kafka_version": KAFKA_VERSION, "jars": jars}
    (libs / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return libs


def test_complete_cache_needs_no_maven(tmp_path: Path) -> None:
    libs = _complete_cache(tmp_path, [f"kafka_2.13-{KAFKA_VERSION}.jar", "scala-library.jar"])
    # PATH without mvn: any Maven call would raise.
    assert ensure_artifacts(cache=tmp_path, env={"PATH": str(tmp_path)}) == libs


def test_a_half_cache_is_not_trusted(tmp_path: Path) -> None:
    libs = _complete_cache(tmp_path, [f"kafka_2.13-{KAFKA_VERSION}.jar", "scala-library.jar"])
    (libs / "scala-library.jar").unlink()
    with pytest.raises(BrokerError, match="apt-get install maven"):
        ensure_artifacts(cache=tmp_path, env={"PATH": str(tmp_path)})


def test_console_tools_from_complete_caches_need_no_maven(tmp_path: Path) -> None:
    libs = _complete_cache(tmp_path, [f"kafka_2.13-{KAFKA_VERSION}.jar"])
    tools = tools_dir(tmp_path)
    assert tools == libs.parent / "tools"
    tools.mkdir()
    (tools / f"kafka-tools-{KAFKA_VERSION}.jar").write_bytes(b"PK")
    manifest = {"kafka_version": KAFKA_VERSION, "jars": [f"kafka-tools-{KAFKA_VERSION}.jar"]}
    (tools / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    classpath = ensure_console_tools(cache=tmp_path, env={"PATH": str(tmp_path)})
    assert classpath.split(os.pathsep) == [str(libs / "*"), str(tools / "*")]


def test_tools_pom_asks_for_kafka_tools_alone() -> None:
    pom = render_pom(TOOLS_DEPENDENCIES, "kafka-tools")
    assert f"<artifactId>kafka-tools</artifactId><version>{KAFKA_VERSION}</version>" in pom
    assert pom.count("<dependency>") == 1


def test_pom_asks_for_kafka_and_its_log4j2_binding() -> None:
    pom = render_pom()
    assert f"<artifactId>kafka_2.13</artifactId><version>{KAFKA_VERSION}</version>" in pom
    assert "<artifactId>log4j-slf4j2-impl</artifactId>" in pom
    assert "<packaging>pom</packaging>" in pom


# -- configuration -----------------------------------------------------------------------


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


def test_server_properties_single_node_kraft_on_loopback(tmp_path: Path) -> None:
    props = _properties(
        render_server_properties(port=19092, controller_port=19093, log_dir=tmp_path / "kraft")
    )
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == f"{props['node.id']}@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(tmp_path / "kraft")
    assert props["num.partitions"] == "3"
    assert props["auto.create.topics.enable"] == "true"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "default.replication.factor",
    ):
        assert props[key] == "1", key
    assert int(props["log.retention.hours"]) <= 7 * 24


def test_server_properties_refuse_bad_ports(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="port of its own"):
        render_server_properties(port=9092, controller_port=9092, log_dir=tmp_path)
    with pytest.raises(BrokerError, match="between 1 and 65535"):
        render_server_properties(port=70000, controller_port=9093, log_dir=tmp_path)


@pytest.mark.parametrize(
    ("heap", "options"),
    [
        ("512m", ["-Xms256m", "-Xmx512m"]),
        ("1g", ["-Xms256m", "-Xmx1g"]),
        ("128m", ["-Xms128m", "-Xmx128m"]),
    ],
)
def test_heap_options(heap: str, options: list[str]) -> None:
    assert jvm_heap_options(heap) == options


@pytest.mark.parametrize("heap", ["lots", "512 m", "-1g", "0m", ""])
def test_bad_heap_is_refused_before_anything_starts(heap: str) -> None:
    with pytest.raises(BrokerError, match="heap must look like"):
        LocalBroker(heap=heap)


def test_cluster_ids_never_look_like_an_option() -> None:
    # Kafka's storage tool takes an id starting with "-" for a flag (1 in 64 random ids).
    for _ in range(3000):
        cid = new_cluster_id()
        assert not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


# -- state without a broker --------------------------------------------------------------


def test_a_recycled_pid_is_not_our_broker(tmp_path: Path) -> None:
    # The PID file names a live process that is not kafka.Kafka on our properties (this one).
    (tmp_path / "broker.pid").write_text(f"{os.getpid()}\n", encoding="ascii")
    st = LocalBroker(port=19092, data_dir=tmp_path).status()
    assert (st.running, st.stale, st.pid) == (False, True, None)
    assert LocalBroker(data_dir=tmp_path).stop() is False
    assert not (tmp_path / "broker.pid").exists()


def test_port_taken_by_another_program_is_named(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        broker = LocalBroker(port=port, data_dir=tmp_path, cache=tmp_path / "cache")
        with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 is taken by another"):
            broker.start(wait_s=5)
    assert not (tmp_path / "broker.pid").exists()


def test_free_port_keeps_a_free_preferred_port_else_picks_another() -> None:
    port = free_port()
    assert free_port(preferred=port) == port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        other = free_port(preferred=taken)
    assert other != taken and 0 < other < 65536


def test_log_excerpt_shows_errors_not_the_config_dump(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "[2026-01-01 00:00:00,000] INFO KafkaConfig values: \n"
        "\tadvertised.listeners = PLAINTEXT://127.0.0.1:9092\n"
        "[2026-01-01 00:00:01,000] ERROR Exiting Kafka due to fatal exception (kafka.Kafka)\n"
        "java.lang.RuntimeException: Invalid cluster.id\n"
        "\tat kafka.Kafka.main(Kafka.scala:1)\n"
        "[2026-01-01 00:00:02,000] INFO shutting down (kafka.server.KafkaRaftServer)\n",
        encoding="utf-8",
    )
    excerpt = log_excerpt(log)
    assert "Invalid cluster.id" in excerpt and "Errors in its log" in excerpt
    assert "advertised.listeners" not in excerpt and "shutting down" not in excerpt


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plantwatch.cli", "broker", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )


def test_address_of_a_stopped_broker_prints_nothing_and_exits_3(tmp_path: Path) -> None:
    done = _cli("address", "--data-dir", str(tmp_path))
    assert (done.returncode, done.stdout) == (3, "")
    assert "no broker runs from" in done.stderr
    status = _cli("status", "--data-dir", str(tmp_path))
    assert status.returncode == 3 and status.stdout.startswith("stopped")


# -- the real broker ---------------------------------------------------------------------


@pytest.mark.integration
def test_produce_consume_round_trip(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic("broker-rt", 3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    sent: dict[str, list[bytes]] = {f"asset-{i % 4}": [] for i in range(4)}
    for i in range(40):
        key = f"asset-{i % 4}"
        value = f"reading-{i}".encode()
        sent[key].append(value)
        producer.produce(topic, key=key.encode(), value=value)
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"g-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: dict[str, list[bytes]] = {key: [] for key in sent}
    partition_of: dict[str, set[int]] = {key: set() for key in sent}
    deadline = time.monotonic() + 60
    try:
        while sum(map(len, received.values())) < 40 and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            raw_key, payload, partition = msg.key(), msg.value(), msg.partition()
            assert raw_key is not None and payload is not None and partition is not None
            received[raw_key.decode()].append(payload)
            partition_of[raw_key.decode()].add(partition)
    finally:
        consumer.close()
    # Per key: everything arrives, in order, from one partition (an asset's state lives in
    # exactly one consumer).
    assert received == sent
    assert all(len(parts) == 1 for parts in partition_of.values())


@pytest.fixture
def second_broker_dir(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "broker"
    yield data_dir
    LocalBroker(data_dir=data_dir).stop()  # whatever the test left running


@pytest.mark.integration
def test_cli_background_start_status_address_stop(second_broker_dir: Path) -> None:
    port = free_port()
    env = dict(os.environ)
    started = _cli(
        "start", "--background", "--port", str(port), "--data-dir", str(second_broker_dir),
        "--heap", "384m", "--wait-s", "180", env=env,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == f"127.0.0.1:{port}"

    # Another process sees it through the data directory's PID and state files.
    address = _cli("address", "--data-dir", str(second_broker_dir))
    assert (address.returncode, address.stdout) == (0, f"127.0.0.1:{port}\n")
    status = _cli("status", "--data-dir", str(second_broker_dir))
    assert status.returncode == 0 and status.stdout.startswith(f"running at 127.0.0.1:{port}")
    again = _cli("start", "--port", str(port), "--data-dir", str(second_broker_dir))
    assert again.returncode == 1 and "already runs" in again.stderr

    # It is a real Kafka: a metadata round trip names the broker.
    assert metadata_round_trip(f"127.0.0.1:{port}", 10.0)
    # A second broker on the same port is refused with the reason.
    clash = LocalBroker(port=port, data_dir=second_broker_dir.parent / "other")
    with pytest.raises(BrokerError, match="already served by another Kafka broker"):
        clash.start(wait_s=5)

    stopped = _cli("stop", "--data-dir", str(second_broker_dir))
    assert stopped.returncode == 0 and "stopped the broker" in stopped.stdout
    assert not LocalBroker(data_dir=second_broker_dir).status().running
    assert _cli("address", "--data-dir", str(second_broker_dir)).returncode == 3
