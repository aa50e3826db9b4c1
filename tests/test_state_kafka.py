"""The state topic on a real broker: restoring after transactional (exactly-once) writes."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Producer

from stream.simulator import PlantSimulator, SimConfig, produce
from stream.state import encode_state, load_states
from tests.conftest import TopicFactory
from tests.kafka_helpers import (
    LIVE_START_MS,
    PLANT_SEED,
    running_monitor,
    settings_for,
    trained_model,
    wait_for,
)

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


def test_an_exactly_once_monitor_restarts_and_carries_on(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    # Run, stop cleanly, start again with the same group: the second start used to die in
    # on_assign reading the state topic its own transactions had written.
    n_assets = 2
    topics = {p: new_topic(p) for p in ("sensors", "alerts", "dlq", "state")}
    model = trained_model(n_assets, hours=2.0)
    settings = settings_for(
        kafka_bootstrap,
        topics,
        kafka={"bootstrap_servers": kafka_bootstrap, "group_id": f"eos-{topics['sensors']}"},
        delivery={"mode": "exactly_once", "checkpoint_interval_s": 1.0},
    )
    seen = 0
    for part in range(2):
        sim = PlantSimulator(
            SimConfig(
                n_assets=n_assets,
                period_ms=1000,
                start_ms=LIVE_START_MS + part * 300_000,
                duration_s=300,
                seed=5 + part,
                plant_seed=PLANT_SEED,
            )
        )
        produced = produce(
            sim, {"bootstrap.servers": kafka_bootstrap}, topics["sensors"], pace=False
        )
        with running_monitor(settings, model) as loop:
            want = produced.readings
            wait_for(lambda: loop.stats.readings >= want, 90, f"run {part + 1}")  # noqa: B023
            seen += loop.stats.readings
    assert seen == 2 * n_assets * 300  # the restart read only what was new, all of it
    states = load_states({"bootstrap.servers": kafka_bootstrap}, topics["state"], timeout_s=10.0)
    assert set(states) == set(sim.assets)
