"""Delivery across a rebalance: two monitors in one group, partitions moving mid-stream.

Monitor A runs alone; B joins while one of A's assets has an open alert (its partition
moves to B); later A leaves while an alert of its other partition is open (that partition
moves to B too). Each move must carry the asset's state: every fault is alerted, every
``alert_id`` opens once and resolves once (state lost in a move would open the fault
again under a new id and leave the first open for ever), no event is delivered twice
(a clean rebalance checkpoints and commits before the partitions go, so neither mode
replays), and each process restores only the state of the partitions it was assigned.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from contextlib import AbstractContextManager, ExitStack

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from models.artifact import TrainedModel
from plantwatch.monitor import Outcome
from plantwatch.runloop import LoopStats, RunLoop
from plantwatch.settings import Settings
from stream.schema import encode_reading
from stream.simulator import SIGNALS, PlantSimulator
from tests.conftest import TopicFactory
from tests.kafka_helpers import (
    alert_events,
    faulty_plant,
    running_monitor,
    settings_for,
    trained_model,
    unalerted_faults,
    wait_for,
)

pytestmark = pytest.mark.integration

N_ASSETS = 4
#: An alert must open within this long of its fault's start (readings are 1 s apart).
MAX_DELAY_MS = 120_000


def _partition(asset_index: int) -> int:
    """The plant bus's partitioning: explicit, known to the test (2 partitions)."""
    return asset_index % 2


def _produce_steps(bootstrap: str, topic: str, sim: PlantSimulator, start: int, stop: int) -> int:
    """Readings of steps ``[start, stop)`` (all assets), keyed by asset; returns how many."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": "20"})
    chunk = sim.generate()
    sent = 0
    for t in range(start, stop):
        for a, asset in enumerate(sim.assets):
            values = dict(zip(SIGNALS, chunk.values[t, a].tolist(), strict=True))
            producer.produce(
                topic,
                encode_reading(asset, int(chunk.ts_ms[t, a]), values),
                asset.encode(),
                partition=_partition(a),
            )
            sent += 1
        producer.poll(0)
    assert producer.flush(30) == 0
    return sent


def _members(bootstrap: str, group: str, topic: str) -> dict[str, list[int]]:
    """client.id → assigned partitions of ``topic`` of each member of a stable group ({}
    otherwise; the members also read the operator commands topic)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
    if str(desc.state).rsplit(".", 1)[-1] != "STABLE":
        return {}
    return {
        m.client_id: sorted(
            tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic
        )
        for m in desc.members
    }


def _member(
    settings: Settings, model: TrainedModel, name: str, seen: list[tuple[str, str, str]]
) -> AbstractContextManager[RunLoop]:
    """One monitor of the group in a thread; records (member, alert_id, event) it sends."""

    def on_batch(outcome: Outcome, _stats: LoopStats) -> None:
        seen.extend((name, e.alert_id, e.event) for e in outcome.events)

    return running_monitor(settings, model, on_batch=on_batch)


@pytest.mark.parametrize("mode", ["at_least_once", "exactly_once"])
def test_alerts_survive_partitions_moving_between_two_monitors(
    kafka_bootstrap: str, new_topic: TopicFactory, mode: str
) -> None:
    duration_s = 2400
    sim = faulty_plant(N_ASSETS, duration_s)
    index = {a: i for i, a in enumerate(sim.assets)}
    # B joins in the middle of a fault of a partition-1 asset (the partition that moves to
    # B, the later member id); A leaves in the middle of a later fault on partition 0.
    faults = sorted(sim.faults, key=lambda f: f.start_step)
    on_1 = [f for f in faults if _partition(index[f.asset]) == 1]
    assert on_1, "the plan has no fault on partition 1; pick another seed"
    join = (on_1[0].start_step + on_1[0].stop_step) // 2
    on_0 = [f for f in faults if _partition(index[f.asset]) == 0 and f.stop_step > join + 60]
    leave = max(join + 60, (on_0[0].start_step + on_0[0].stop_step) // 2) if on_0 else join + 600
    assert join < leave < duration_s

    topics = {p: new_topic(p, partitions=2) for p in ("sensors", "state")}
    topics.update({p: new_topic(p, partitions=1) for p in ("alerts", "dlq", "notices")})
    model = trained_model(N_ASSETS, hours=4.0)
    group = f"rebalance-{topics['sensors']}"
    sensors = topics["sensors"]

    def member_settings(name: str) -> Settings:
        return settings_for(
            kafka_bootstrap,
            topics,
            kafka={"bootstrap_servers": kafka_bootstrap, "group_id": group, "client_id": name},
            consumer={"batch_size": 200, "batch_wait_ms": 100},
            # Two processes in one group: each its own transactional id.
            delivery={"mode": mode, "checkpoint_interval_s": 1.0, "transactional_id": name},
        )

    seen: list[tuple[str, str, str]] = []
    with ExitStack() as b_stack:
        with _member(member_settings("a-monitor"), model, "a", seen) as a:
            sent = _produce_steps(kafka_bootstrap, topics["sensors"], sim, 0, join)
            wait_for(lambda: a.stats.readings >= sent, 90, "A alone reads the first part")
            b = b_stack.enter_context(_member(member_settings("b-monitor"), model, "b", seen))
            wait_for(
                lambda: (
                    _members(kafka_bootstrap, group, sensors)
                    == {"a-monitor": [0], "b-monitor": [1]}
                ),
                60,
                "partition 1 moved to B",
            )
            sent += _produce_steps(kafka_bootstrap, topics["sensors"], sim, join, leave)
            wait_for(lambda: a.stats.readings + b.stats.readings >= sent, 90, "A and B: part 2")
            time.sleep(1.0)  # both idle now: their assets can be looked at from here
            # Each restored only the state of its own partition.
            assert set(a.monitor.assets) | set(a.monitor.parked_assets) <= {
                s for s, i in index.items() if _partition(i) == 0
            }
            assert set(b.monitor.assets) | set(b.monitor.parked_assets) == {
                s for s, i in index.items() if _partition(i) == 1
            }
        # A has left the group.
        wait_for(
            lambda: _members(kafka_bootstrap, group, sensors) == {"b-monitor": [0, 1]},
            60,
            "partition 0 moved to B",
        )
        sent += _produce_steps(kafka_bootstrap, topics["sensors"], sim, leave, duration_s)
        wait_for(lambda: a.stats.readings + b.stats.readings >= sent, 90, "B reads the rest")
    assert sent == N_ASSETS * duration_s
    # A clean rebalance checkpoints and commits first: nothing is read twice, in either mode.
    assert a.stats.readings + b.stats.readings == sent

    events = alert_events(kafka_bootstrap, topics["alerts"])  # read_committed
    copies = Counter((e.alert_id, e.event, e.window_at) for e in events)
    assert not [k for k, n in copies.items() if n > 1], "an event was delivered twice"
    by_id: dict[str, list[str]] = defaultdict(list)
    for e in events:
        by_id[e.alert_id].append(e.event)
    for alert_id, kinds in by_id.items():
        counts = Counter(kinds)
        assert counts["opened"] == 1 and counts["resolved"] == 1, (alert_id, kinds)
    assert not unalerted_faults(sim, events, MAX_DELAY_MS)
    # The moves happened with alerts open: one member opened what the other resolved.
    sent_by: dict[str, set[str]] = defaultdict(set)
    for member, alert_id, event in seen:
        if event in ("opened", "resolved"):
            sent_by[alert_id].add(member)
    assert any(members == {"a", "b"} for members in sent_by.values()), dict(sent_by)
