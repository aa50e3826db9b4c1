"""The state topic on a real broker: restoring after transactional (exactly-once) writes."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Producer

from stream.state import encode_state, load_states
from tests.conftest import TopicFactory

pytestmark = pytest.mark.integration


def test_state_written_in_transactions_is_restored_without_waiting_for_markers(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    # Every partition written in transactions ends in a commit marker no consumer receives;
    # waiting for the record at high - 1 made every exactly-once restart time out.
    topic = new_topic("state", partitions=3)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"t-{uuid.uuid4().hex[:8]}"}
    )
    producer.init_transactions(30)
    for round_ in range(2):  # two transactions: markers between records, and at the end
        producer.begin_transaction()
        for i in range(6):
            producer.produce(topic, key=f"p{i}", value=encode_state({"round": round_, "i": i}))
        producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key="p0", value=b"[1, 2]")  # JSON, but not a snapshot
    producer.produce(topic, key="p5", value=b"")  # a tombstone: p5 retired
    producer.commit_transaction(30)
    started = time.monotonic()
    for isolation in ("read_uncommitted", "read_committed"):
        states = load_states(
            {"bootstrap.servers": kafka_bootstrap, "isolation.level": isolation},
            topic,
            timeout_s=10.0,
        )
        assert states == {f"p{i}": {"round": 1, "i": i} for i in range(5)}, isolation
    assert time.monotonic() - started < 15.0
