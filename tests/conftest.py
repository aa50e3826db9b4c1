"""The real Kafka broker every integration test uses, and a fresh topic per test.

Where the broker comes from, in order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; else
testcontainers' Kafka if a Docker engine answers; else ``plantwatch broker`` (Apache Kafka
from Maven Central, run with the machine's Java, on a free loopback port, stopped at the
end of the session). ``PLANTWATCH_SKIP_KAFKA=1`` skips the integration tests, with that
reason shown; CI never sets it.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
    except Exception:  # no engine, no socket, no permission: all mean "not here"
        return False
    return True


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if os.environ.get("PLANTWATCH_SKIP_KAFKA") == "1":
        pytest.skip("PLANTWATCH_SKIP_KAFKA=1: integration tests need a Kafka broker")
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from stream.broker import BrokerError, LocalBroker, free_port

    data_dir = Path(tempfile.mkdtemp(prefix="plantwatch-test-broker-"))
    broker = LocalBroker(port=free_port(), data_dir=data_dir)
    try:
        bootstrap = broker.start(wait_s=180)
    except BrokerError as exc:
        pytest.fail(f"no Kafka broker for the integration tests: {exc}", pytrace=False)
    try:
        yield bootstrap
    finally:
        broker.stop()


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """``new_topic(prefix="t", partitions=3)`` creates a uniquely named topic for this test."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def make(prefix: str = "t", partitions: int = 3) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)]
        )
        for future in futures.values():
            future.result(timeout=30)
        created.append(name)
        return name

    yield make
    if created:
        try:
            for future in admin.delete_topics(created, operation_timeout=10).values():
                future.result(timeout=15)
        except KafkaException:
            pass  # best effort: the broker is private to the session anyway
