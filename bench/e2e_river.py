"""The River reference of issue 11: what a user of the usual online tools would write.

Used by ``e2e_broker.py``, in the same run and on the same topic as ``plantwatch run``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from confluent_kafka import Consumer

#: Seconds without a message after which the reference is declared stuck.
STALL_S = 90.0


def river_reference(bootstrap: str, topic: str, expected: int, batch: int = 2000) -> float:
    """Readings/s of what a user of the usual online tools would write, from the first
    consumed batch to the last (the same rule as for the monitor).

    confluent-kafka ``consume()`` in batches, ``json.loads``, one River pipeline per asset
    (``MinMaxScaler | HalfSpaceTrees``, River's defaults), ``score_one`` then ``learn_one``.
    """
    from river import anomaly, preprocessing

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"e2e-river-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    detectors: dict[str, Any] = {}
    seen = 0
    first: tuple[float, int] | None = None
    last_s = time.monotonic()
    checksum = 0.0
    try:
        while seen < expected:
            messages = consumer.consume(num_messages=batch, timeout=0.2)
            for msg in messages:
                value = msg.value()
                if msg.error() or value is None:
                    continue
                reading = json.loads(value)
                x = {k: v for k, v in reading["values"].items() if v is not None}
                detector = detectors.get(reading["asset"])
                if detector is None:
                    detector = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=42)
                    detectors[reading["asset"]] = detector
                checksum += detector.score_one(x)
                detector.learn_one(x)
                seen += 1
            now = time.monotonic()
            if messages:
                last_s = now
                if first is None:
                    first = (now, seen)
            elif now - last_s > STALL_S:
                raise RuntimeError(f"River reference stuck at {seen} of {expected}")
    finally:
        consumer.close()
    if first is None or last_s <= first[0]:
        return float("nan")
    return (seen - first[1]) / (last_s - first[0])
