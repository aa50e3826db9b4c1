"""Ingest on a real broker: simulator readings plus every bad input class.

Valid readings are consumed in order per asset; every bad one arrives on the dead-letter
topic, unchanged, with the right reason and its source topic/partition/offset; the counts
match exactly, in the topic and in the metrics.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
from confluent_kafka import Producer

from alerts.metrics import Metrics
from stream.schema import SensorReading, encode_reading
from stream.simulator import PlantSimulator, SimConfig, produce
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

        def recording(readings, *, now_ms):  # type: ignore[no-untyped-def]
            seen.extend(readings)
            return original(readings, now_ms=now_ms)

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
