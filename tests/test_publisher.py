"""AlertPublisher: every delivery accounted for, failures loud; on a real broker where needed.

Tests without the broker fixture still use a real librdkafka client, pointed at a closed
port or refusing a message locally; nothing about Kafka is mocked.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # the class admin re-exports, where the stubs name it

from alerts.events import AlertEvent, decode_event
from alerts.policy import AlertConfig, AlertPolicy, Decision
from alerts.publisher import AlertPublisher, DeliveryError, DeliveryFailure

T0 = 1_795_899_600_000
CLOSED_PORT = "127.0.0.1:1"  # nothing listens on port 1: connections are refused at once


def alert_events(assets: tuple[str, ...] = ("pump-1", "pump-2", "fan-3")) -> list[AlertEvent]:
    """Real events from the policy: an open and a resolve per asset."""
    policy = AlertPolicy(AlertConfig(k=1, n=1, m=1, cooldown_ms=0))
    events = []
    for i, anomalous in enumerate((True, False)):
        for asset in assets:
            d = Decision(
                asset,
                T0 + i * 1_000,
                9.0 if anomalous else 1.0,
                4.0,
                anomalous,
                1 if anomalous else 0,
                {"temp": 0.8, "flow": 0.2},
                "lstm-ae",
                "3",
            )
            events += policy.step(d, now_ms=T0 + 5_000)
    return events


def consume_all(
    bootstrap: str, topic: str, count: int, *, extra: dict[str, str] | None = None
) -> list[Message]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": "false",
            **(extra or {}),
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + 60
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consumer error: {err}")
            out.append(msg)
    finally:
        consumer.close()
    return out


def value_of(msg: Message) -> bytes:
    value = msg.value()
    if value is None:
        raise AssertionError(f"message at offset {msg.offset()} has no value")
    return value


def partition_of(msg: Message) -> int:
    partition = msg.partition()
    if partition is None:
        raise AssertionError("a consumed message always has a partition")
    return partition


# -- without a broker ---------------------------------------------------------------------


def test_refuses_settings_that_weaken_delivery() -> None:
    with pytest.raises(ValueError, match="acks=all"):
        AlertPublisher({"bootstrap.servers": CLOSED_PORT, "acks": "1"}, "alerts")
    with pytest.raises(ValueError, match="idempotent"):
        AlertPublisher({"bootstrap.servers": CLOSED_PORT, "enable.idempotence": "false"}, "a")
    with pytest.raises(ValueError, match="topic name is empty"):
        AlertPublisher({"bootstrap.servers": CLOSED_PORT}, "")
    with pytest.raises(ValueError, match="transactional_id is empty"):
        AlertPublisher({"bootstrap.servers": CLOSED_PORT}, "a", transactional_id="")


def test_explicitly_durable_settings_are_accepted() -> None:
    config = {"bootstrap.servers": CLOSED_PORT, "acks": "-1", "enable.idempotence": "True"}
    publisher = AlertPublisher(config, "alerts")
    publisher.close(timeout_s=0)


def test_transaction_calls_need_a_transactional_publisher() -> None:
    publisher = AlertPublisher({"bootstrap.servers": CLOSED_PORT}, "alerts")
    try:
        with pytest.raises(RuntimeError, match="transactional_id"):
            publisher.begin_transaction()
        with pytest.raises(RuntimeError, match="transactional_id"):
            publisher.commit_transaction()
    finally:
        publisher.close(timeout_s=0)


def test_message_over_the_size_limit_is_a_delivery_error_not_silence() -> None:
    config = {"bootstrap.servers": CLOSED_PORT, "message.max.bytes": "2000"}
    publisher = AlertPublisher(config, "alerts")
    try:
        publisher.produce("alerts", "pump-1", b"x" * 5_000)
        assert publisher.pending == 0
        with pytest.raises(DeliveryError) as info:
            publisher.flush(timeout_s=1)
        (failure,) = info.value.failures
        assert failure.code == "MSG_SIZE_TOO_LARGE"
        assert failure.key == "pump-1" and failure.topic == "alerts"
        assert "must not be committed" in str(info.value)
        # Accounting restarts after each flush.
        assert publisher.flush(timeout_s=0).delivered == 0
    finally:
        publisher.close(timeout_s=0)


def test_unreachable_broker_is_undelivered_then_failed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = {
        "bootstrap.servers": CLOSED_PORT,
        "message.timeout.ms": "1500",
        "sasl.username": "svc-plantwatch",
        "sasl.password": "s3cret-never-logged",
    }
    publisher = AlertPublisher(config, "plantwatch.alerts")
    try:
        assert publisher.publish(alert_events(("pump-1",))) == 2
        assert publisher.pending == 2
        with pytest.raises(DeliveryError) as first:
            publisher.flush(timeout_s=0.2)
        assert first.value.undelivered == 2 and first.value.failures == ()
        assert "still undelivered after 0.2 s" in str(first.value)
        # The messages time out in librdkafka: the next flush reports them as failed.
        with pytest.raises(DeliveryError) as second:
            publisher.flush(timeout_s=30)
        assert second.value.undelivered == 0
        assert [f.code for f in second.value.failures] == ["_MSG_TIMED_OUT"] * 2
        assert publisher.pending == 0
    finally:
        publisher.close(timeout_s=0)
    for text in (str(first.value), str(second.value), caplog.text):
        assert "s3cret-never-logged" not in text


def test_a_queue_that_stays_full_is_waited_out_then_a_failure() -> None:
    config = {"bootstrap.servers": CLOSED_PORT, "queue.buffering.max.messages": "1"}
    publisher = AlertPublisher(config, "alerts", queue_full_timeout_s=0.2)
    try:
        started = time.monotonic()
        publisher.produce("alerts", "pump-1", b"fits")
        publisher.produce("alerts", "pump-2", b"no room")
        assert 0.2 <= time.monotonic() - started < 5
        assert publisher.pending == 1
        with pytest.raises(DeliveryError) as info:
            publisher.flush(timeout_s=0)
        assert [f.code for f in info.value.failures] == ["_QUEUE_FULL"]
        assert info.value.failures[0].key == "pump-2" and info.value.undelivered == 1
    finally:
        # The undelivered message does not hold the close until message.timeout.ms (300 s).
        closing = time.monotonic()
        publisher.close(timeout_s=0)
        assert time.monotonic() - closing < 5


def test_the_wait_for_a_full_queue_is_bounded_for_all_messages_not_each() -> None:
    # It was 0.2 s per message: a checkpoint of N state records could block N x 0.2 s
    # (N x 30 s with the default) before its flush even began.
    config = {"bootstrap.servers": CLOSED_PORT, "queue.buffering.max.messages": "1"}
    publisher = AlertPublisher(config, "alerts", queue_full_timeout_s=0.2)
    try:
        publisher.produce("alerts", "pump-0", b"fits")
        started = time.monotonic()
        for i in range(1, 11):
            publisher.produce("alerts", f"pump-{i}", b"no room")
        assert 0.2 <= time.monotonic() - started < 0.2 * 3
        with pytest.raises(DeliveryError) as info:
            publisher.flush(timeout_s=0)
        assert [f.key for f in info.value.failures] == [f"pump-{i}" for i in range(1, 11)]
        assert all(f.code == "_QUEUE_FULL" for f in info.value.failures)
        # A flush starts a new wait: the next message is waited for again.
        started = time.monotonic()
        publisher.produce("alerts", "pump-11", b"no room")
        assert time.monotonic() - started >= 0.2
        # So does room made (a slow broker, not a gone one: a long simulator run never
        # flushes, and must not fail every message after its first 30 s of full queue).
        publisher._out.producer.purge(in_queue=True)
        publisher.produce("alerts", "pump-12", b"fits again")
        started = time.monotonic()
        publisher.produce("alerts", "pump-13", b"no room")
        assert time.monotonic() - started >= 0.2
    finally:
        publisher.close(timeout_s=0)


def test_delivery_error_lists_a_few_failures_and_counts_the_rest() -> None:
    failures = [
        DeliveryFailure("alerts", 0, f"pump-{i}", "Broker: boom", "BOOM", False, False)
        for i in range(8)
    ]
    err = DeliveryError(failures, undelivered=1, delivered=3, timeout_s=5)
    text = str(err)
    assert text.startswith("9 of 12 produced message(s) not delivered")
    assert "alerts[0] key 'pump-4': Broker: boom (BOOM)" in text
    assert "pump-5" not in text and "and 3 more" in text
    assert "1 message(s) still undelivered after 5 s" in text


# -- on the real broker --------------------------------------------------------------------


@pytest.mark.integration
def test_publish_flush_and_read_back(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    alerts_topic = new_topic("alerts")
    other_topic = new_topic("quality", partitions=1)
    events = alert_events()
    publisher = AlertPublisher({"bootstrap.servers": kafka_bootstrap}, alerts_topic)
    try:
        assert publisher.publish(events) == len(events)
        publisher.produce(other_topic, "pump-1", b'{"quality": 1}', [("schema", "q/v1")])
        report = publisher.flush(timeout_s=60)
    finally:
        publisher.close()
    assert report.delivered == len(events) + 1
    assert dict(report.by_topic) == {alerts_topic: len(events), other_topic: 1}

    messages = consume_all(kafka_bootstrap, alerts_topic, len(events))
    assert len(messages) == len(events)
    got = [decode_event(value_of(m)) for m in messages]
    assert sorted(got, key=lambda e: (e.asset, e.event)) == sorted(
        events, key=lambda e: (e.asset, e.event)
    )
    partitions: dict[str, set[int]] = {}
    for msg in messages:
        ev = decode_event(value_of(msg))
        assert msg.key() == ev.asset.encode()
        assert dict(msg.headers() or []) == {
            "schema": b"plantwatch.alert/v1",
            "event": ev.event.encode(),
        }
        partitions.setdefault(ev.asset, set()).add(partition_of(msg))
    # Keyed by asset: an asset's events share one partition, so they stay in order.
    assert all(len(p) == 1 for p in partitions.values())
    for asset in partitions:
        mine = [decode_event(value_of(m)).event for m in messages if m.key() == asset.encode()]
        assert mine == ["opened", "resolved"]


@pytest.mark.integration
def test_broker_refusing_a_message_is_a_delivery_error(kafka_bootstrap: str) -> None:
    topic = f"small-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created = admin.create_topics(
        [
            NewTopic(
                topic, num_partitions=1, replication_factor=1, config={"max.message.bytes": "512"}
            )
        ]
    )
    created[topic].result(timeout=30)
    publisher = AlertPublisher(
        {"bootstrap.servers": kafka_bootstrap, "compression.type": "none"}, topic
    )
    try:
        publisher.produce(topic, "pump-1", b"ok")
        assert publisher.flush(timeout_s=60).delivered == 1
        # Under the client's message.max.bytes, over the topic's max.message.bytes.
        big = b"x" * 4_000
        publisher.produce(topic, "pump-2", big)
        with pytest.raises(DeliveryError) as info:
            publisher.flush(timeout_s=60)
    finally:
        publisher.close()
        admin.delete_topics([topic])
    assert info.value.delivered == 0 and info.value.undelivered == 0
    (failure,) = info.value.failures
    assert failure.key == "pump-2" and failure.partition == 0
    assert failure.code == "MSG_SIZE_TOO_LARGE"


@pytest.mark.integration
def test_transaction_commits_outputs_with_consumer_offsets(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    source = new_topic("sensors", partitions=1)
    sink = new_topic("alerts", partitions=1)
    group = f"monitor-{uuid.uuid4().hex}"
    feeder = AlertPublisher({"bootstrap.servers": kafka_bootstrap}, source)
    for i in range(5):
        feeder.produce(source, "pump-1", f"reading {i}".encode())
    feeder.flush(timeout_s=60)
    feeder.close()

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": "false",
        }
    )
    publisher = AlertPublisher(
        {"bootstrap.servers": kafka_bootstrap}, sink, transactional_id=f"tx-{uuid.uuid4().hex}"
    )
    try:
        publisher.init_transactions(timeout_s=60)
        consumer.subscribe([source])
        batch: list[Message] = []
        deadline = time.monotonic() + 60
        while len(batch) < 5 and time.monotonic() < deadline:
            batch += [m for m in consumer.consume(5, timeout=1.0) if not m.error()]
        assert len(batch) == 5

        # An aborted batch leaves nothing visible to read_committed consumers ...
        publisher.begin_transaction()
        publisher.publish(alert_events(("aborted-asset",)))
        publisher.abort_transaction(timeout_s=60)
        assert publisher.pending == 0

        # ... a committed one carries its outputs and the consumer's offsets together.
        events = alert_events(("pump-1",))
        publisher.begin_transaction()
        publisher.publish(events)
        positions = consumer.position(consumer.assignment())
        publisher.send_offsets_to_transaction(
            positions, consumer.consumer_group_metadata(), timeout_s=60
        )
        report = publisher.commit_transaction(timeout_s=60)
        assert report.delivered == len(events)
    finally:
        consumer.close()
        publisher.close()

    checker = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        committed = checker.committed([TopicPartition(source, 0)], timeout=30)
    finally:
        checker.close()
    assert committed[0].offset == 5
    read = consume_all(
        kafka_bootstrap, sink, len(events), extra={"isolation.level": "read_committed"}
    )
    assert [decode_event(value_of(m)) for m in read] == events
