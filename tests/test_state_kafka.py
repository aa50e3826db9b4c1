"""The state topic on a real broker: partitioned like the sensors topic, read per assigned
partition, restored after transactional (exactly-once) writes."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from alerts.metrics import Metrics
from stream.simulator import PlantSimulator, SimConfig, produce
from stream.state import (
    STATE_TOPIC_CONFIG,
    _watermarks,
    encode_state,
    ensure_topics,
    load_states,
)
from tests.conftest import TopicFactory
from tests.kafka_helpers import (
    LIVE_START_MS,
    PLANT_SEED,
    read_topic,
    running_monitor,
    settings_for,
    trained_model,
    wait_for,
)

pytestmark = pytest.mark.integration


def _transactional(bootstrap: str) -> Producer:
    """A producer with a fresh transactional id, transactions initialised."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"t-{uuid.uuid4().hex[:8]}"}
    )
    producer.init_transactions(30)
    return producer


def test_state_written_in_transactions_is_restored_without_waiting_for_markers(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    # Every partition written in transactions ends in a commit marker no consumer receives;
    # waiting for the record at high - 1 made every exactly-once restart time out.
    topic = new_topic("state", partitions=3)
    producer = _transactional(kafka_bootstrap)
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


def test_the_state_topic_is_partitioned_like_the_sensors_topic_and_a_mismatch_is_named(
    kafka_bootstrap: str, new_topic: TopicFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The state topic was created with 3 partitions whatever the sensors topic had, so an
    # asset's state could not sit on the partition numbered like its readings'.
    sensors = new_topic("sensors", partitions=4)
    state = f"state-{uuid.uuid4().hex[:12]}"
    client = {"bootstrap.servers": kafka_bootstrap}
    admin = AdminClient(client)
    try:
        counts = ensure_topics(
            client,
            {sensors: {}, state: STATE_TOPIC_CONFIG},
            partitioned_like={state: sensors},
        )
        assert counts == {sensors: 4, state: 4}
        meta = admin.list_topics(topic=state, timeout=10).topics[state]
        assert len(meta.partitions) == 4
    finally:
        admin.delete_topics([state])[state].result(timeout=30)
    # An existing state topic with another count is left alone, and the log says so.
    other = new_topic("state", partitions=2)
    with caplog.at_level(logging.WARNING, logger="stream.state"):
        counts = ensure_topics(client, {sensors: {}, other: {}}, partitioned_like={other: sensors})
    assert counts == {sensors: 4, other: 2}
    (warning,) = [r.getMessage() for r in caplog.records if other in r.getMessage()]
    assert "2 partitions" in warning and f"{sensors} has 4" in warning


def test_only_the_state_of_the_given_partitions_is_read(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    # On assignment the whole state topic was read, for every asset of the plant.
    topic = new_topic("state", partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for part in range(3):
        for i in range(2):
            producer.produce(
                topic, key=f"a{part}{i}", value=encode_state({"p": part}), partition=part
            )
    # An old record of a00 on partition 2 (as left there before a partition count change):
    # when both partitions are read, the newer by timestamp wins.
    producer.produce(topic, key="a00", value=encode_state({"p": "stale"}), partition=2, timestamp=1)
    assert producer.flush(30) == 0
    states = load_states({"bootstrap.servers": kafka_bootstrap}, topic, partitions=[0, 2])
    assert states == {"a00": {"p": 0}, "a01": {"p": 0}, "a20": {"p": 2}, "a21": {"p": 2}}
    assert load_states({"bootstrap.servers": kafka_bootstrap}, topic, partitions=[]) == {}
    everything = load_states({"bootstrap.servers": kafka_bootstrap}, topic)
    assert len(everything) == 6 and everything["a00"] == {"p": 0}


@pytest.mark.parametrize("mode", ["at_least_once", "exactly_once"])
def test_an_assets_state_lands_on_the_partition_numbered_like_its_readings(
    kafka_bootstrap: str, new_topic: TopicFactory, mode: str
) -> None:
    # The state went wherever librdkafka's default partitioner (CRC32) put the key, while
    # a plant bus of Java producers (murmur2) put the readings elsewhere: the process
    # assigned an asset's readings would not find its state on the same partition number.
    n_assets = 6
    topics = {p: new_topic(p) for p in ("sensors", "alerts", "dlq", "state")}
    sim = PlantSimulator(
        SimConfig(
            n_assets=n_assets,
            period_ms=1000,
            start_ms=LIVE_START_MS,
            duration_s=60,
            seed=3,
            plant_seed=PLANT_SEED,
        )
    )
    java_like = {"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"}
    produced = produce(sim, java_like, topics["sensors"], pace=False)
    readings_on = {
        m.key().decode(): m.partition() for m in read_topic(kafka_bootstrap, topics["sensors"])
    }
    assert len(set(readings_on.values())) > 1  # the assets are spread over partitions
    settings = settings_for(kafka_bootstrap, topics, delivery={"mode": mode})
    metrics = Metrics.create()
    with running_monitor(settings, trained_model(n_assets, hours=1.0), metrics) as loop:
        wait_for(lambda: loop.stats.readings >= produced.readings, 90, "every reading")
    state_on = {
        m.key().decode(): m.partition() for m in read_topic(kafka_bootstrap, topics["state"])
    }
    assert state_on == readings_on
    # The checkpoint on stop is timed phase by phase; in exactly-once mode every
    # transaction wrote its own state and offsets, and no checkpoint has phases to time.
    counts = {
        phase: metrics.registry.get_sample_value(
            "plantwatch_checkpoint_seconds_count", {"phase": phase}
        )
        for phase in ("state", "flush", "commit")
    }
    if mode == "at_least_once":
        assert all(c is not None and c >= 1 for c in counts.values()), counts
    else:
        assert all(c is None for c in counts.values()), counts


def test_a_transaction_not_yet_decided_is_waited_for_not_read_past(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    # A producer's commit returns once the coordinator has decided, before the markers are
    # written; a read_committed reader right then stopped at the last stable offset, short
    # of that transaction's records, and restored state one transaction old (while the
    # offsets the group fetches, stable ones, include it). The reader now waits until
    # every transaction before the end it saw is decided.
    topic = new_topic("state", partitions=1)
    producer = _transactional(kafka_bootstrap)
    producer.begin_transaction()
    producer.produce(topic, key="p0", value=encode_state({"v": 1}))
    producer.commit_transaction(30)
    committed = {"bootstrap.servers": kafka_bootstrap, "isolation.level": "read_committed"}
    for value, decide, want in (
        (2, producer.commit_transaction, 2),
        (3, producer.abort_transaction, 2),
    ):
        producer.begin_transaction()
        producer.produce(topic, key="p0", value=encode_state({"v": value}))
        assert producer.flush(30) == 0  # on the partition, undecided
        timer = threading.Timer(2.0, decide)
        timer.start()
        started = time.monotonic()
        states = load_states(committed, topic, timeout_s=10.0)
        timer.join()
        assert states == {"p0": {"v": want}}, decide
        assert time.monotonic() - started >= 1.5
    # One never decided (its producer gone) fails after decide_timeout_s, saying why.
    producer.begin_transaction()
    producer.produce(topic, key="p0", value=encode_state({"v": 4}))
    assert producer.flush(30) == 0
    try:
        with pytest.raises(TimeoutError, match="transaction"):
            load_states(committed, topic, timeout_s=2.0, decide_timeout_s=2.0)
    finally:
        producer.abort_transaction(30)


def test_a_state_topic_created_a_moment_before_is_read_not_crashed_on(
    kafka_bootstrap: str,
) -> None:
    # What a first `plantwatch run` does: create the state topic, then, on assignment, read
    # it. The new partitions' leader may not serve yet (NOT_LEADER_FOR_PARTITION from the
    # watermark query); that failed 3 of 10 fresh topics here before the query was retried.
    config = {"bootstrap.servers": kafka_bootstrap}
    for _ in range(10):
        topic = f"state-fresh-{uuid.uuid4().hex[:8]}"
        ensure_topics(config, {topic: STATE_TOPIC_CONFIG})
        assert load_states({**config, "group.id": f"g-{topic}"}, topic) == {}


class _Probe:
    """A watermark query that fails ``failures`` times with ``code``, then answers."""

    def __init__(self, code: int, failures: int) -> None:
        self.code, self.failures, self.calls = code, failures, 0

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(self.code))
        return 0, 7


@pytest.mark.parametrize(
    ("code", "passes"),
    [(KafkaError.NOT_LEADER_FOR_PARTITION, True), (KafkaError.TOPIC_AUTHORIZATION_FAILED, False)],
)
def test_a_partition_not_served_yet_is_asked_again_and_a_real_error_is_not(
    code: int, passes: bool
) -> None:
    probe = _Probe(code, failures=3)
    tp = TopicPartition("state", 0)
    if passes:
        assert _watermarks(probe, tp, timeout_s=10.0) == (0, 7)  # type: ignore[arg-type]
        assert probe.calls == 4
    else:
        with pytest.raises(KafkaException):
            _watermarks(probe, tp, timeout_s=10.0)  # type: ignore[arg-type]
        assert probe.calls == 1
