"""The run loop's failure paths on a real broker: nothing a failed batch did is checkpointed."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from alerts.events import SCHEMA, decode_event
from alerts.metrics import Metrics
from alerts.publisher import DeliveryError
from plantwatch.runloop import RunLoop
from stream.simulator import PlantSimulator, SimConfig, produce
from tests.conftest import TopicFactory
from tests.kafka_helpers import (
    LIVE_START_MS,
    PLANT_SEED,
    read_topic,
    running_monitor,
    settings_for,
    start_loop,
    trained_model,
    wait_for,
)

pytestmark = pytest.mark.integration


def _committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return max(tp.offset, 0)
    finally:
        consumer.close()


def test_a_failed_batch_is_not_checkpointed_on_close_and_its_alerts_are_sent_on_restart(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    # The batch whose alert could not be delivered raised; closing the consumer then ran
    # on_revoke, which checkpointed the state that batch had advanced (its alert open) and
    # committed the batches before it. The restart replayed the batch with the alert
    # already open: its "opened" event was never sent.
    topics = {p: new_topic(p, partitions=1) for p in ("sensors", "dlq", "state", "notices")}
    # An alert topic that refuses every alert event (too large for it).
    refusing = f"alerts-small-{topics['sensors']}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics(
        [NewTopic(refusing, num_partitions=1, config={"max.message.bytes": "200"})]
    )[refusing].result(timeout=30)
    try:
        _fail_then_restart(kafka_bootstrap, new_topic, topics, refusing)
    finally:
        admin.delete_topics([refusing])[refusing].result(timeout=30)


def _fail_then_restart(
    kafka_bootstrap: str, new_topic: TopicFactory, topics: dict[str, str], refusing: str
) -> None:
    alerts = new_topic("alerts", partitions=1)
    model = trained_model(1, hours=2.0)
    group = {"bootstrap_servers": kafka_bootstrap, "group_id": f"fail-{topics['sensors']}"}

    def sim(part: int, **faults: object) -> PlantSimulator:
        return PlantSimulator(
            SimConfig(
                n_assets=1,
                period_ms=1000,
                start_ms=LIVE_START_MS + part * 600_000,
                duration_s=600,
                seed=7 + part,
                plant_seed=PLANT_SEED,
                **faults,  # type: ignore[arg-type]
            )
        )

    client = {"bootstrap.servers": kafka_bootstrap}
    # 1. Normal readings, checkpointed and committed by a clean stop.
    first = produce(sim(0), client, topics["sensors"], pace=False)
    settings = settings_for(kafka_bootstrap, {**topics, "alerts": alerts}, kafka=group)
    with running_monitor(settings, model) as loop:
        wait_for(lambda: loop.stats.readings >= first.readings, 90, "the normal readings")
    committed = _committed(kafka_bootstrap, group["group_id"], topics["sensors"])
    assert committed == first.readings

    # 2. A fault, well after the first batch; its alert cannot be delivered.
    faulty = sim(1, faults=1, fault_kinds=("level_shift",), fault_duration_s=(120.0, 180.0))
    assert faulty.faults and faulty.faults[0].start_ms > LIVE_START_MS + 600_000 + 100_000
    second = produce(faulty, client, topics["sensors"], pace=False)
    failing = settings_for(
        kafka_bootstrap,
        {**topics, "alerts": refusing},
        kafka=group,
        consumer={"batch_size": 50, "batch_wait_ms": 100},
        # No checkpoint of its own: only the close path could write one.
        delivery={"checkpoint_interval_s": 600.0},
    )
    loop = RunLoop(failing, model, Metrics.create())
    thread, errors = start_loop(loop)
    thread.join(timeout=120)
    assert not thread.is_alive(), "the monitor did not stop on the undeliverable alert"
    assert len(errors) == 1 and isinstance(errors[0], DeliveryError), errors
    assert loop.stats.batches > 1  # batches before the failing one were processed
    resume = _committed(kafka_bootstrap, group["group_id"], topics["sensors"])

    # 3. Restart with a working alert topic: the fault's alert is sent, "opened" first.
    with running_monitor(settings, model) as loop:
        left = first.readings + second.readings - resume
        wait_for(lambda: loop.stats.readings >= left, 90, "the replayed readings")
    events = [
        decode_event(m.value())
        for m in read_topic(kafka_bootstrap, alerts)
        if dict(m.headers() or []).get("schema") == SCHEMA.encode()
    ]
    by_id: dict[str, list[str]] = defaultdict(list)
    for e in events:
        by_id[e.alert_id].append(e.event)
    assert by_id, "no alert at all after the restart"
    for alert_id, kinds in by_id.items():
        assert kinds[0] == "opened", (alert_id, kinds)
    assert resume == committed  # nothing of the failed run was committed


@pytest.mark.parametrize(
    "checkpoint_interval_s",
    # 1 s: a checkpoint is due the moment the stall ends, before librdkafka has said the
    # partitions are lost; it wrote their state and died on "Commit failed: Unknown member".
    [600.0, 1.0],
    ids=["no-checkpoint-due", "checkpoint-due-after-the-stall"],
)
def test_partitions_lost_to_a_stall_are_dropped_not_checkpointed_and_the_monitor_carries_on(
    kafka_bootstrap: str, new_topic: TopicFactory, checkpoint_interval_s: float
) -> None:
    # A batch slower than max.poll.interval.ms: the group moves the partitions on without
    # this member, and librdkafka reports them lost. They are no longer ours: writing their
    # state or committing their offsets would race the new owner (and a commit from a member
    # that left the group is refused). The loop drops them, rejoins and carries on.
    topics = {p: new_topic(p, partitions=1) for p in ("sensors", "alerts", "dlq", "state")}
    model = trained_model(1, hours=2.0)
    sim = PlantSimulator(
        SimConfig(
            n_assets=1,
            period_ms=1000,
            start_ms=LIVE_START_MS,
            duration_s=400,
            seed=9,
            plant_seed=PLANT_SEED,
        )
    )
    produced = produce(sim, {"bootstrap.servers": kafka_bootstrap}, topics["sensors"], pace=False)
    group = f"lost-{topics['sensors']}"
    settings = settings_for(
        kafka_bootstrap,
        topics,
        kafka={
            "bootstrap_servers": kafka_bootstrap,
            "group_id": group,
            "properties": {"session.timeout.ms": "6000", "max.poll.interval.ms": "6000"},
        },
        consumer={"batch_size": 50, "batch_wait_ms": 100},
        delivery={"checkpoint_interval_s": checkpoint_interval_s},
    )
    stalled = threading.Event()

    def on_batch(_outcome: object, stats: object) -> None:
        if not stalled.is_set():
            stalled.set()
            time.sleep(9.0)  # past max.poll.interval.ms, in the loop's own thread

    loop = RunLoop(settings, model, Metrics.create(), on_batch=on_batch)
    thread, errors = start_loop(loop)
    try:
        wait_for(
            lambda: loop.stats.readings >= produced.readings or not thread.is_alive(),
            120,
            "every reading, the lost batches again",
        )
    finally:
        loop.stop()
        thread.join(timeout=60)
    assert not errors, errors
    assert stalled.is_set() and loop.stats.partitions_lost >= 1
    assert _committed(kafka_bootstrap, group, topics["sensors"]) == produced.readings


def test_a_transaction_stalled_past_max_poll_interval_is_fenced_aborted_and_replayed_once(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    # Exactly-once, the stall inside a transaction (after the batch's alert was produced,
    # before its offsets were sent): the group has moved on, so the broker refuses the
    # transaction's offsets (the consumer's generation is gone) and the transaction must be
    # aborted. That is no reason to exit: the partitions are lost, their state dropped, the
    # loop rejoins and replays the batch; a read_committed reader sees each event once.
    topics = {p: new_topic(p, partitions=1) for p in ("sensors", "alerts", "dlq", "state")}
    model = trained_model(1, hours=2.0)
    sim = PlantSimulator(
        SimConfig(
            n_assets=1,
            period_ms=1000,
            start_ms=LIVE_START_MS,
            duration_s=700,
            seed=7,
            plant_seed=PLANT_SEED,
            faults=1,
            fault_kinds=("level_shift",),
            fault_duration_s=(120.0, 180.0),
            warmup_s=300.0,
        )
    )
    produced = produce(sim, {"bootstrap.servers": kafka_bootstrap}, topics["sensors"], pace=False)
    group = f"fenced-{topics['sensors']}"
    settings = settings_for(
        kafka_bootstrap,
        topics,
        kafka={
            "bootstrap_servers": kafka_bootstrap,
            "group_id": group,
            "properties": {"session.timeout.ms": "6000", "max.poll.interval.ms": "6000"},
        },
        consumer={"batch_size": 50, "batch_wait_ms": 100},
        delivery={"mode": "exactly_once", "transactional_id": f"fenced-{group}"},
    )
    loop = RunLoop(settings, model, Metrics.create())
    stalled = threading.Event()
    process = loop._process

    def slow(batch: object) -> object:
        outcome = process(batch)  # type: ignore[arg-type]
        if outcome.events and not stalled.is_set():
            stalled.set()
            time.sleep(9.0)  # past max.poll.interval.ms, inside the open transaction
        return outcome

    loop._process = slow  # type: ignore[method-assign, assignment]
    thread, errors = start_loop(loop)
    try:
        wait_for(
            lambda: (
                (stalled.is_set() and loop.stats.readings >= produced.readings)
                or not thread.is_alive()
            ),
            150,
            "every reading, the fenced batch again",
        )
    finally:
        loop.stop()
        thread.join(timeout=60)
    assert not errors, errors
    assert stalled.is_set() and loop.stats.transactions_fenced >= 1
    assert _committed(kafka_bootstrap, group, topics["sensors"]) == produced.readings
    committed = [
        (e.alert_id, e.event, e.window_at)
        for e in (decode_event(m.value()) for m in read_topic(kafka_bootstrap, topics["alerts"]))
    ]
    assert committed and len(committed) == len(set(committed)), committed
    # Each alert opened once (the level shift raises the model's alert and the sensor
    # health's step alert), however often its batch was replayed.
    opened = [alert_id for alert_id, k, _ in committed if k == "opened"]
    assert opened and len(opened) == len(set(opened)), committed
