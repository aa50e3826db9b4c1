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

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from common.reasons import Reason
from models.artifact import TrainedModel
from models.training import train_model
from plantwatch.monitor import Monitor
from plantwatch.settings import load_settings
from stream.schema import ReadingDecoder, Rejection, SensorReading
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
