"""No message can take the monitor down: arbitrary input through decode and the monitor core.

Every message is either a reading the monitor takes (scored, or counted as late, stale,
missing or warming up) or a rejection with a dead-letter reason; nothing in between raises.
The values and timestamps are drawn from everywhere a producer could put them: extremes,
NaN and infinities spelled as JSON can carry them, numbers as text, out-of-range times,
unknown and missing signals, wrong types, truncated and non-JSON bytes.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    TIMESTAMP_NOT_AVAILABLE,
    KafkaError,
    Message,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from common.reasons import Reason
from models.artifact import TrainedModel
from models.training import train_model
from plantwatch.monitor import Monitor
from plantwatch.settings import load_settings
from stream.schema import ReadingDecoder, Rejection, SensorReading
from stream.source import decode_messages, route_rejected
from tests.test_pipeline import plant

SIGNALS = ("a", "b", "c")
T0 = 1_795_899_600_000


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    return train_model(plant(4_000, np.random.default_rng(2)), SIGNALS, window=8, scorer="pca")


numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-5, max_value=5),
    st.sampled_from([0.0, -0.0, 1e-320, 3.4e38, 3.5e38, 1e39, -1e39, 1e308, -1e308]),
    st.integers(min_value=-(2**70), max_value=2**70),
)
values = st.one_of(
    numbers, st.none(), st.text(max_size=5), st.booleans(), st.lists(numbers, max_size=2)
)
times = st.one_of(
    st.integers(min_value=T0 - 10_000, max_value=T0 + 600_000),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.sampled_from(["2026-11-28T21:00:00Z", "2026-13-01T00:00:00Z", "yesterday", ""]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.none(),
)
signal_names = st.sampled_from([*SIGNALS, "d", "", "a" * 300])
objects = st.fixed_dictionaries(
    {},
    optional={
        "asset": st.one_of(st.sampled_from(["p1", "p2", ""]), st.integers(), st.none()),
        "ts": times,
        "values": st.one_of(
            st.dictionaries(signal_names, values, max_size=5), st.lists(numbers), st.none()
        ),
    },
)


#: Mostly well formed: the monitor core sees many readings, extremes among them.
plausible = st.fixed_dictionaries(
    {
        "asset": st.sampled_from(["p1", "p2"]),
        "ts": st.integers(min_value=T0 + 20_000, max_value=T0 + 120_000),
        "values": st.fixed_dictionaries(
            {name: st.one_of(*[st.floats(-2, 2)] * 4, numbers, st.none()) for name in SIGNALS}
        ),
    }
)


def _encode(obj: object, mangle: int) -> bytes:
    text = json.dumps(obj)
    if mangle == 1:
        return text[: len(text) // 2].encode()  # truncated
    if mangle == 2:
        return text.replace("1", "NaN", 1).encode()  # a JSON extension some producers emit
    if mangle == 3:
        return b"\xff\xfe" + text.encode()
    return text.encode()


messages = st.lists(
    st.tuples(
        st.one_of(plausible, plausible, objects, values), st.integers(min_value=0, max_value=6)
    ),
    min_size=1,
    max_size=60,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(messages, min_size=1, max_size=4), base=st.integers(0, 10**6))
def test_any_message_is_taken_or_dead_lettered_with_a_reason_and_nothing_raises(
    model: TrainedModel, batches: list[list[tuple[object, int]]], base: int
) -> None:
    decoder = ReadingDecoder(allowed_signals=SIGNALS)
    monitor = Monitor.from_settings(model, load_settings(env={}))
    # A few well-formed readings first, so windows fill and the scorer really runs.
    rng = np.random.default_rng(base)
    warm = [
        SensorReading("p1", T0 + i * 1000, dict(zip(SIGNALS, row, strict=True)))
        for i, row in enumerate(rng.normal(0, 0.3, (20, 3)).tolist())
    ]
    monitor.process(warm, now_ms=T0)
    taken = scored = 0
    for raw_batch in batches:
        readings: list[SensorReading] = []
        for obj, mangle in raw_batch:
            decoded = decoder.decode(_encode(obj, mangle))
            if isinstance(decoded, Rejection):
                assert isinstance(decoded.reason, Reason) and decoded.detail
                continue
            assert isinstance(decoded, SensorReading)
            assert decoded.asset and all(
                v is None or math.isfinite(v) for v in decoded.values.values()
            )
            readings.append(decoded)
        taken += len(readings)
        out = monitor.process(readings, now_ms=T0)
        scored += len(out.scored.scores)
        # Every reading is accounted for: one push outcome each.
        assert sum(out.pushes.values()) == len(readings)
        assert np.isfinite(out.scored.scores).all()
    assert monitor.snapshot_asset("p1") is not None
    event(f"readings taken: {min(taken, 50) // 10 * 10}+")
    event(f"windows scored: {'some' if scored else 'none'}")


# -- the Kafka edge: whole records, with keys, record timestamps and headers --------------

MAX_FUTURE_MS = 60_000
#: ``None`` in the drawn key stands for "the reading's own asset" (most producers key right).
keys = st.one_of(
    st.just(None),
    st.just(None),
    st.just(b"<none>"),
    st.sampled_from([b"p1", b"p2", b"", b"P1", b"p1 ", b"\xff\xfe", b"p1\x00"]),
    st.binary(max_size=8),
)
record_times = st.tuples(
    st.sampled_from([TIMESTAMP_NOT_AVAILABLE, TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME]),
    st.one_of(
        st.integers(min_value=T0 - 10**7, max_value=T0 + 10**7),
        st.integers(min_value=-1, max_value=2**62),
    ),
)
headers = st.one_of(
    st.none(),
    st.lists(
        st.tuples(st.text(max_size=6), st.one_of(st.none(), st.binary(max_size=6))), max_size=3
    ),
)
records = st.lists(
    st.tuples(
        st.one_of(plausible, plausible, plausible, objects, values),
        st.sampled_from([0] * 6 + [1, 2, 3]),  # mostly intact bytes
        keys,
        record_times,
        headers,
        st.integers(min_value=0, max_value=2),  # partition
        st.booleans(),  # an end-of-partition event before it
    ),
    min_size=5,
    max_size=50,
)


def _record(
    offset: int,
    obj: object,
    mangle: int,
    key: bytes | None,
    ts: tuple[int, int],
    hdrs: list[tuple[str, bytes | None]] | None,
    partition: int,
) -> Message:
    if key is None:  # keyed by its asset, as a well-behaved producer does
        asset = obj.get("asset") if isinstance(obj, dict) else None
        key = asset.encode() if isinstance(asset, str) else None
    elif key == b"<none>":
        key = None  # no key at all
    return Message(
        topic="sensors",
        partition=partition,
        offset=offset,
        key=key,
        value=_encode(obj, mangle),
        headers=hdrs,
        timestamp=ts,
    )


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(records, min_size=1, max_size=3), now_ms=st.integers(T0, T0 + 200_000))
def test_any_record_at_the_kafka_edge_is_scored_or_dead_lettered_with_a_reason(
    model: TrainedModel,
    batches: list[list[tuple[object, int, bytes | None, tuple[int, int], Any, int, bool]]],
    now_ms: int,
) -> None:
    """Real ``confluent_kafka.Message`` records with any key, record timestamp (of any kind),
    headers and partition, end-of-partition events between them, through ``decode_messages``,
    the dead-letter routing and ``Monitor.process``: nothing raises, every record is a reading
    the monitor accounts for or a dead letter with a reason, its bytes unchanged; an accepted
    reading is keyed by its asset and not stamped past the future limit."""
    decoder = ReadingDecoder(allowed_signals=SIGNALS)
    monitor = Monitor.from_settings(model, load_settings(env={}))
    # Both assets' windows full first, so that an accepted reading is really scored.
    rng = np.random.default_rng(now_ms)
    monitor.process(
        [
            SensorReading(asset, T0 + i * 1000, dict(zip(SIGNALS, row, strict=True)))
            for asset in ("p1", "p2")
            for i, row in enumerate(rng.normal(0, 0.3, (20, 3)).tolist())
        ],
        now_ms=T0,
    )
    offset = 0
    for raw in batches:
        msgs: list[Message] = []
        for obj, mangle, key, ts, hdrs, partition, eof in raw:
            if eof:
                msgs.append(
                    Message(
                        topic="sensors",
                        partition=partition,
                        error=KafkaError(KafkaError._PARTITION_EOF),
                    )
                )
            msgs.append(_record(offset, obj, mangle, key, ts, hdrs, partition))
            offset += 1
        batch = decode_messages(msgs, decoder, now_ms=now_ms, max_future_ms=MAX_FUTURE_MS)
        records_in = [m for m in msgs if m.error() is None]
        assert batch.messages == len(records_in)
        assert len(batch.readings) + len(batch.rejected) == len(records_in)
        refused = {r.offset for r in batch.rejected}
        accepted = [m for m in records_in if m.offset() not in refused]
        assert batch.partitions == [m.partition() for m in accepted]
        last: dict[tuple[str, int], int] = {}
        for m in records_in:
            last[("sensors", m.partition() or 0)] = (m.offset() or 0) + 1
        assert batch.next_offsets == last
        for reading, source in zip(batch.readings, accepted, strict=True):
            assert source.key() == reading.asset.encode()
            kind, stamp = source.timestamp()
            reference = max(now_ms, stamp) if kind == TIMESTAMP_LOG_APPEND_TIME else now_ms
            assert reading.ts_ms - reference <= MAX_FUTURE_MS
        dead: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

        def produce(
            topic: str, key: bytes | None, value: bytes | None, hdrs: list[tuple[str, bytes]]
        ) -> None:
            dead.append((topic, key, value, hdrs))  # noqa: B023 (called at once, in this batch)

        route_rejected(batch.rejected, "dlq", produce)
        by_offset = {m.offset(): m for m in records_in}
        for rejected, (topic, key, value, hdrs) in zip(batch.rejected, dead, strict=True):
            source = by_offset[rejected.offset]
            assert (topic, key, value) == ("dlq", source.key(), source.value())
            named = dict(hdrs)
            assert Reason(named["plantwatch.reason"].decode()) is rejected.rejection.reason
            assert named["plantwatch.source.offset"] == str(rejected.offset).encode()
            assert all(isinstance(v, bytes) for _, v in hdrs)
        out = monitor.process(batch.readings, now_ms=now_ms)
        assert sum(out.pushes.values()) == len(batch.readings)
        event(f"readings accepted: {min(len(batch.readings), 20) // 5 * 5}+")
        event(f"windows scored: {'some' if len(out.scored.scores) else 'none'}")
        assert np.isfinite(out.scored.scores).all()
        for rejected in batch.rejected:
            event(f"dead letter: {rejected.rejection.reason.value}")
