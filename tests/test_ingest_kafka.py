"""Ingest on a real broker: simulator readings plus every bad input class.

Valid readings are consumed in order per asset; every bad one arrives on the dead-letter
topic, unchanged, with the right reason and its source topic/partition/offset; the counts
match exactly, in the topic and in the metrics.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest
from confluent_kafka import Producer

from alerts.metrics import Metrics
from stream.schema import SensorReading, encode_reading
from stream.simulator import SIGNALS, PlantSimulator, SimConfig, produce
from stream.source import DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC
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

TS = LIVE_START_MS
BIG = encode_reading("pump-01", TS, {f"sig{i}": float(i) for i in range(6000)})
BAD: dict[str, list[bytes | None]] = {
    "not_json": [b"temp=71.2", b"\xff\xfe\x00"],
    "not_object": [b"[1, 2, 3]", b'"pump-01"'],
    "missing_field": [b'{"asset": "pump-01", "values": {}}', b'{"ts": 1795899600000}'],
    "empty_asset": [b'{"asset": "", "ts": 1795899600000, "values": {"temp": 1}}'],
    "bad_timestamp": [
        b'{"asset": "pump-01", "ts": "tomorrow", "values": {"temp": 1}}',
        b'{"asset": "pump-01", "ts": 1795899600, "values": {"temp": 1}}',
    ],
    "non_numeric_value": [b'{"asset": "pump-01", "ts": 1795899600000, "values": {"temp": "hot"}}'],
    "non_finite_value": [b'{"asset": "pump-01", "ts": 1795899600000, "values": {"temp": NaN}}'],
    "oversize": [BIG],
    "unknown_signal": [encode_reading("pump-01", TS, {"temp": 1.0, "tmep": 2.0})],
}


def test_valid_in_order_and_every_bad_message_dead_lettered(
    kafka_bootstrap: str, new_topic
) -> None:
    sensors, dlq, alerts, state = (new_topic(p) for p in ("sensors", "dlq", "alerts", "state"))
    n_assets, steps = 4, 300
    sim = PlantSimulator(
        SimConfig(
            n_assets=n_assets,
            period_ms=1000,
            start_ms=LIVE_START_MS,
            duration_s=steps,
            seed=2,
            plant_seed=PLANT_SEED,
        )
    )
    client = {"bootstrap.servers": kafka_bootstrap}
    produce(sim, client, sensors, pace=False)
    bad_total = sum(len(v) for v in BAD.values())
    producer = Producer({**client, "message.max.bytes": 2_000_000})
    for reason, payloads in BAD.items():
        for payload in payloads:
            producer.produce(sensors, payload, key=f"bad-{reason}".encode())
    assert producer.flush(30) == 0

    model = trained_model(n_assets)
    settings = settings_for(
        kafka_bootstrap,
        {"sensors": sensors, "dlq": dlq, "alerts": alerts, "state": state},
        consumer={"batch_wait_ms": 100, "max_message_bytes": 64 * 1024},
    )
    metrics = Metrics.create()
    seen: list[SensorReading] = []
    with running_monitor(settings, model, metrics) as loop:
        original = loop.monitor.process

        def recording(readings, *, now_ms, **kwargs):  # type: ignore[no-untyped-def]
            seen.extend(readings)
            return original(readings, now_ms=now_ms, **kwargs)

        loop.monitor.process = recording  # type: ignore[method-assign]
        total = n_assets * steps + bad_total
        wait_for(lambda: loop.stats.messages >= total, 90, f"{total} messages consumed")

    # Valid readings: all of them, decoded, in time order per asset.
    assert len(seen) == n_assets * steps
    by_asset: dict[str, list[int]] = defaultdict(list)
    for r in seen:
        by_asset[r.asset].append(r.ts_ms)
    assert sorted(by_asset) == list(sim.assets)
    for ts in by_asset.values():
        assert ts == sorted(ts) and len(ts) == steps

    # Bad ones: on the DLQ, unchanged, with reason and source coordinates.
    dead = read_topic(kafka_bootstrap, dlq, expect=bad_total)
    assert len(dead) == bad_total
    reasons = Counter()
    for msg in dead:
        headers = dict(msg.headers())
        reason = headers[DLQ_REASON].decode()
        reasons[reason] += 1
        assert msg.key() == f"bad-{reason}".encode()
        assert msg.value() in BAD[reason]
        assert headers[DLQ_TOPIC].decode() == sensors
        assert int(headers[DLQ_PARTITION]) >= 0 and int(headers[DLQ_OFFSET]) >= 0
    assert reasons == Counter({r: len(p) for r, p in BAD.items()})

    # ... and counted, each reason exactly.
    def count(result: str) -> float:
        value = metrics.registry.get_sample_value("plantwatch_messages_total", {"result": result})
        return value or 0.0

    assert count("ok") == n_assets * steps
    for reason, payloads in BAD.items():
        assert count(reason) == len(payloads), reason


def test_future_timestamps_and_wrong_keys_are_dead_lettered_not_scored(
    kafka_bootstrap: str, new_topic
) -> None:
    # One reading a day ahead used to become its asset's newest time: every later reading
    # was dropped as late (and checkpointed so). A reading under another key, or none, lands
    # on another partition, so another process would keep state for the same asset.
    sensors, dlq, alerts, state = (
        new_topic(p, partitions=1) for p in ("sensors", "dlq", "alerts", "state")
    )
    steps = 200
    now_ms = int(time.time() * 1000)
    sim = PlantSimulator(
        SimConfig(
            n_assets=1,
            period_ms=1000,
            start_ms=now_ms - steps * 1000,
            duration_s=steps,
            seed=3,
            plant_seed=PLANT_SEED,
        )
    )
    chunk = sim.generate()
    asset = sim.assets[0]
    rows = [
        encode_reading(
            asset, int(chunk.ts_ms[i, 0]), dict(zip(SIGNALS, chunk.values[i, 0], strict=True))
        )
        for i in range(steps)
    ]
    values = dict(zip(SIGNALS, chunk.values[0, 0].tolist(), strict=True))
    future = encode_reading(asset, now_ms + 86_400_000, values)
    bad: list[tuple[bytes | None, bytes, str]] = [
        (asset.encode(), future, "future_timestamp"),
        (b"pump-99", encode_reading(asset, int(chunk.ts_ms[60, 0]) + 1, values), "key_mismatch"),
        (None, encode_reading(asset, int(chunk.ts_ms[70, 0]) + 1, values), "key_mismatch"),
    ]
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i, row in enumerate(rows):
        if i == 50:
            for key, value, _ in bad:
                producer.produce(sensors, value, key=key)
        producer.produce(sensors, row, key=asset.encode())
    assert producer.flush(30) == 0

    model = trained_model(1)
    settings = settings_for(
        kafka_bootstrap,
        {"sensors": sensors, "dlq": dlq, "alerts": alerts, "state": state},
        # Small batches: within one batch readings are put in time order, so the damage
        # shows in the batches after the one with the future reading.
        consumer={"batch_size": 20, "batch_wait_ms": 100},
    )
    metrics = Metrics.create()
    with running_monitor(settings, model, metrics) as loop:
        total = steps + len(bad)
        wait_for(lambda: loop.stats.messages >= total, 90, f"{total} messages consumed")

    def count(result: str) -> float:
        value = metrics.registry.get_sample_value("plantwatch_messages_total", {"result": result})
        return value or 0.0

    assert count("late") == 0  # the future reading did not move the asset's clock
    assert count("ok") == steps
    dead = read_topic(kafka_bootstrap, dlq, expect=len(bad))
    got = [(m.key(), m.value(), dict(m.headers())[DLQ_REASON].decode()) for m in dead]
    assert got == bad  # unchanged, keys included, in order
    assert count("future_timestamp") == 1 and count("key_mismatch") == 2
