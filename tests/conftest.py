"""Kafka fixtures for the integration tests: one real broker per session, a fresh topic per use.

Where the broker comes from, first match wins:

1. ``KAFKA_BOOTSTRAP_SERVERS`` — a broker you already run (CI services, a dev cluster);
2. a Docker engine that answers — testcontainers' ``KafkaContainer`` (KRaft);
3. otherwise ``stream.broker.LocalBroker`` — a real Apache Kafka on loopback from the
   machine's Java, on free ports, with a throwaway data directory (the jar cache is shared,
   so only the very first run downloads).

No broker is a failure, not a silent skip: integration tests must really run in CI.
``PLANTWATCH_SKIP_KAFKA=1`` skips them on purpose, and says so in the summary.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any, Protocol

import pytest

_TRUE = {"1", "true", "yes", "on"}
#: Seconds a freshly started broker may take on a loaded two-core machine.
_BROKER_WAIT_S = 180.0
_TOPIC_WAIT_S = 30.0


class TopicFactory(Protocol):
    """``new_topic(prefix="t", partitions=3) -> name``: create a uniquely named topic."""

    def __call__(self, prefix: str = "t", partitions: int = 3) -> str: ...


def _say(config: pytest.Config, message: str) -> None:
    """Show a line on the terminal even while pytest captures output (a long first download)."""
    reporter: Any = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"[kafka fixture] {message}")
    else:
        print(f"[kafka fixture] {message}", file=sys.stderr)


def _docker_answers() -> bool:
    """True when a Docker engine answers a ping within a few seconds (never hangs)."""
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        # No SDK, no socket, refused, timed out: all mean "no Docker here".
        return False


def _start_container(stack: ExitStack) -> str:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:
        from testcontainers.kafka import KafkaContainer

    container = KafkaContainer().with_kraft()
    stack.enter_context(container)
    return str(container.get_bootstrap_server())


def _start_local(stack: ExitStack, tmp: Any, config: pytest.Config) -> str:
    from stream.broker import LocalBroker, artifacts_complete, free_port

    broker = LocalBroker(port=free_port(), controller_port=free_port(), data_dir=tmp)
    if not artifacts_complete(broker.cache):
        _say(config, "first run: downloading Apache Kafka with Maven (a minute or two)")
    started = time.monotonic()
    bootstrap = broker.start(wait_s=_BROKER_WAIT_S, progress=lambda m: _say(config, m))
    stack.callback(broker.stop)
    _say(config, f"local broker ready at {bootstrap} in {time.monotonic() - started:.1f} s")
    return bootstrap


@pytest.fixture(scope="session")
def kafka_bootstrap(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Bootstrap address of a real Kafka broker shared by the whole session."""
    if os.environ.get("PLANTWATCH_SKIP_KAFKA", "").strip().lower() in _TRUE:
        pytest.skip("PLANTWATCH_SKIP_KAFKA is set: integration tests that need Kafka skipped")
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if configured:
        yield configured
        return
    with ExitStack() as stack:
        if _docker_answers():
            try:
                yield _start_container(stack)
                return
            except Exception as exc:  # an image that cannot be pulled, a broken engine
                _say(request.config, f"Kafka in Docker failed ({exc}); using the local broker")
        from stream.broker import BrokerError

        try:
            bootstrap = _start_local(stack, tmp_path_factory.mktemp("kafka"), request.config)
        except BrokerError as exc:
            reason = str(exc)
        else:
            yield bootstrap
            return
        pytest.fail(
            "no Kafka broker for the integration tests.\n"
            f"The local broker could not start: {reason}\n"
            "Alternatives: set KAFKA_BOOTSTRAP_SERVERS=host:port to use a running broker, "
            "start a Docker engine (testcontainers), or set PLANTWATCH_SKIP_KAFKA=1 to "
            "skip these tests on purpose.",
            pytrace=False,
        )


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> Iterator[TopicFactory]:
    """A factory of uuid-named topics, ready for use when returned; deleted after the test."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic  # where the stubs name the admin's class

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def make(prefix: str = "t", partitions: int = 3) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        # Replication factor -1: the broker's default, so a multi-node cluster works too.
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions)], operation_timeout=_TOPIC_WAIT_S
        )
        futures[name].result(timeout=_TOPIC_WAIT_S)
        created.append(name)
        # Creation is acknowledged before every partition has a leader; wait for the leaders
        # so a producer's first message does not meet UNKNOWN_TOPIC_OR_PART.
        deadline = time.monotonic() + _TOPIC_WAIT_S
        while True:
            meta = admin.list_topics(topic=name, timeout=5).topics.get(name)
            if (
                meta is not None
                and meta.error is None
                and len(meta.partitions) == partitions
                and all(p.leader >= 0 for p in meta.partitions.values())
            ):
                return name
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name} has no leader for every partition yet")
            time.sleep(0.1)

    yield make
    if created:
        for future in admin.delete_topics(created, operation_timeout=_TOPIC_WAIT_S).values():
            # Best effort: a test may have deleted its topic itself.
            with contextlib.suppress(KafkaException):
                future.result(timeout=_TOPIC_WAIT_S)
