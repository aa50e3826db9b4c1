"""A broker outage of 30 s mid-stream, on a broker of this test's own: the monitor waits,
says so, and carries on by itself when the broker is back; nothing is lost.

The session's broker is shared, so this test starts a second local broker (the same cached
jars, its own port and data directory), stops it for 30 s while ``plantwatch run``'s loop
is running, and starts it again on the same port and data.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from alerts.metrics import Metrics
from plantwatch.runloop import RunLoop
from stream.broker import LocalBroker, free_port
from stream.simulator import PlantSimulator, SimConfig, produce
from tests.kafka_helpers import (
    LIVE_START_MS,
    PLANT_SEED,
    alert_events,
    settings_for,
    start_loop,
    trained_model,
    unalerted_faults,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 30.0
PART_S = 900  # simulated seconds per part of the stream


@pytest.fixture
def own_broker(kafka_bootstrap: str, tmp_path: Path) -> Iterator[LocalBroker]:
    # Depends on the session broker so that the jars are cached (and the Kafka tests are
    # skipped together when PLANTWATCH_SKIP_KAFKA says so).
    broker = LocalBroker(port=free_port(), controller_port=free_port(), data_dir=tmp_path / "k")
    broker.start(wait_s=180.0)
    try:
        yield broker
    finally:
        broker.stop()


def _part(k: int) -> PlantSimulator:
    return PlantSimulator(
        SimConfig(
            n_assets=3,
            period_ms=1000,
            start_ms=LIVE_START_MS + k * PART_S * 1000,
            duration_s=PART_S,
            seed=40 + k,
            plant_seed=PLANT_SEED,
            faults=2,
            control_assets=1,
            fault_kinds=("level_shift", "cavitation"),
            fault_duration_s=(120.0, 180.0),
            warmup_s=120.0,
        )
    )


def _metric(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.mark.parametrize("mode", ["at_least_once", "exactly_once"])
def test_a_30_s_broker_outage_mid_stream_is_waited_out_and_nothing_is_lost(
    own_broker: LocalBroker, mode: str
) -> None:
    bootstrap = own_broker.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = {p: f"{p}-outage" for p in ("sensors", "alerts", "dlq", "state", "notices")}
    futures = admin.create_topics([NewTopic(n, num_partitions=1) for n in names.values()])
    for future in futures.values():
        future.result(timeout=30)
    model = trained_model(3, hours=4.0)
    group = {"bootstrap_servers": bootstrap, "group_id": "outage"}
    # A checkpoint every 20 s: the first part's state is still to be written when the
    # broker goes, so a flush meets the outage (the loop starts and reads the part faster)
    # and, timing out every 5 s, is waited out again until the broker is back.
    delivery = {"checkpoint_interval_s": 20.0, "flush_timeout_s": 5.0, "mode": mode}
    settings = settings_for(bootstrap, names, kafka=group, delivery=delivery)
    client = {"bootstrap.servers": bootstrap}

    first, second = _part(0), _part(1)
    sent = produce(first, client, names["sensors"], pace=False).readings
    metrics = Metrics.create()
    loop = RunLoop(settings, model, metrics)
    thread, errors = start_loop(loop)
    try:
        wait_for(lambda: loop.stats.readings >= sent, 120, "the first part of the stream")
        # Mid-stream: the loop is running, its state not yet checkpointed, when the broker
        # goes; it waits for the broker instead of exiting on the undelivered checkpoint.
        own_broker.stop()
        down_at = time.monotonic()
        time.sleep(OUTAGE_S)
        assert thread.is_alive() and not errors, errors
        own_broker.start(wait_s=180.0)
        outage_s = time.monotonic() - down_at
        sent += produce(second, client, names["sensors"], pace=False).readings
        wait_for(lambda: loop.stats.readings >= sent, 180, "the stream after the outage")
        assert thread.is_alive() and not errors, errors
    finally:
        loop.stop()
        thread.join(timeout=60)
    assert not errors, errors
    assert outage_s >= OUTAGE_S

    events = alert_events(bootstrap, names["alerts"])
    # Every fault of both parts alerted, and each alert opened once: nothing lost or sent
    # twice (no crash, so at-least-once has nothing to replay).
    for sim in (first, second):
        assert unalerted_faults(sim, events, 120_000) == [], events
    opened = Tally(e.alert_id for e in events if e.event == "opened")
    assert opened and max(opened.values()) == 1, opened
    assert loop.stats.readings == sent
    if mode == "at_least_once":
        # The outage was said: a checkpoint's state records waited in flight, counted so.
        assert _metric(metrics, "plantwatch_deliveries_total", result="stalled") >= 1
    assert _metric(metrics, "plantwatch_deliveries_total", result="failed") == 0
