"""The decoder: every message either decodes or is classified; nothing raises."""

from __future__ import annotations

import json
import math

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.reasons import Reason
from common.timestamps import MIN_TS_MS, format_ts, parse_ts
from stream.schema import ReadingDecoder, Rejection, SensorReading, encode_reading

DEC = ReadingDecoder()
TS = 1_795_899_600_123  # 2026-11-28T21:00:00.123Z


def ok(raw: bytes) -> SensorReading:
    out = DEC.decode(raw)
    assert isinstance(out, SensorReading), out
    return out


def reason(raw: bytes | None, decoder: ReadingDecoder = DEC) -> Reason:
    out = decoder.decode(raw)
    assert isinstance(out, Rejection), out
    return out.reason


def test_documented_message_decodes() -> None:
    r = ok(
        b'{"asset": "pump-17", "ts": "2026-11-28T21:00:00.123Z",'
        b' "values": {"temp": 71.2, "pressure": 3.41, "vibration_rms": 0.82, "current": 12.1}}'
    )
    assert r.asset == "pump-17"
    assert r.ts_ms == TS
    assert r.values == {"temp": 71.2, "pressure": 3.41, "vibration_rms": 0.82, "current": 12.1}


@pytest.mark.parametrize(
    "ts",
    [
        TS,
        float(TS),
        '"2026-11-28T21:00:00.123Z"',
        '"2026-11-28T22:00:00.123+01:00"',
        '"2026-11-28T21:00:00.123"',
    ],
)
def test_timestamp_forms(ts: object) -> None:
    raw = f'{{"asset": "a", "ts": {ts}, "values": {{"x": 1}}}}'.encode()
    assert ok(raw).ts_ms == TS


def test_null_value_is_missing_not_rejected() -> None:
    assert ok(b'{"asset": "a", "ts": 1795899600123, "values": {"x": null}}').values == {"x": None}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"not json", Reason.NOT_JSON),
        (b"\xff\xfe", Reason.NOT_JSON),
        (b'"\x80"', Reason.NOT_JSON),  # invalid UTF-8 inside a string (found by hypothesis)
        (b'{"asset": "\x80", "ts": 1795899600123, "values": {}}', Reason.NOT_JSON),
        (None, Reason.NOT_JSON),
        (b"[1, 2]", Reason.NOT_OBJECT),
        (b'"text"', Reason.NOT_OBJECT),
        (b'{"ts": 1795899600123, "values": {}}', Reason.MISSING_FIELD),
        (b'{"asset": "a", "values": {}}', Reason.MISSING_FIELD),
        (b'{"asset": "a", "ts": 1795899600123}', Reason.MISSING_FIELD),
        (b'{"asset": "", "ts": 1795899600123, "values": {}}', Reason.EMPTY_ASSET),
        (b'{"asset": "  ", "ts": 1795899600123, "values": {}}', Reason.EMPTY_ASSET),
        (b'{"asset": null, "ts": 1795899600123, "values": {}}', Reason.EMPTY_ASSET),
        (b'{"asset": "a", "ts": "yesterday", "values": {}}', Reason.BAD_TIMESTAMP),
        (b'{"asset": "a", "ts": 1795899600, "values": {}}', Reason.BAD_TIMESTAMP),  # seconds
        (b'{"asset": "a", "ts": true, "values": {}}', Reason.BAD_TIMESTAMP),
        (b'{"asset": "a", "ts": 1795899600123, "values": {"x": "hot"}}', Reason.NON_NUMERIC_VALUE),
        (b'{"asset": "a", "ts": 1795899600123, "values": {"x": true}}', Reason.NON_NUMERIC_VALUE),
        (b'{"asset": "a", "ts": 1795899600123, "values": [1]}', Reason.NON_NUMERIC_VALUE),
        (b'{"asset": "a", "ts": 1795899600123, "values": {"x": NaN}}', Reason.NON_FINITE_VALUE),
        (b'{"asset": "a", "ts": 1795899600123, "values": {"x": 1e999}}', Reason.NON_FINITE_VALUE),
        # Finite in float64 but infinite in a float32 window: once it killed the monitor.
        (b'{"asset": "a", "ts": 1795899600123, "values": {"x": 1e39}}', Reason.OUT_OF_RANGE),
        (b'{"asset": "a", "ts": 1795899600123, "values": {"x": -4e38}}', Reason.OUT_OF_RANGE),
    ],
)
def test_bad_input_classes(raw: bytes | None, expected: Reason) -> None:
    assert reason(raw) is expected


def test_oversize_is_refused_before_parsing() -> None:
    small = ReadingDecoder(max_message_bytes=64)
    raw = encode_reading("a", TS, {f"s{i}": float(i) for i in range(20)})
    assert reason(raw, small) is Reason.OVERSIZE


def test_unknown_signal_only_when_the_signal_list_is_fixed() -> None:
    raw = encode_reading("a", TS, {"temp": 1.0, "tmep": 2.0})
    assert isinstance(DEC.decode(raw), SensorReading)
    assert reason(raw, ReadingDecoder(allowed_signals=["temp"])) is Reason.UNKNOWN_SIGNAL


def test_parse_ts_refuses_seconds_with_a_hint() -> None:
    with pytest.raises(ValueError, match="seconds"):
        parse_ts(1_795_899_600)
    assert parse_ts(MIN_TS_MS) == MIN_TS_MS


# Every double a float32 window holds (beyond that: out_of_range, tested above).
F32 = float(np.finfo(np.float32).max)
finite = st.floats(min_value=-F32, max_value=F32, width=64)
names = st.text(min_size=1, max_size=12)


@given(
    asset=st.text(min_size=1, max_size=20).filter(lambda s: s.strip() != ""),
    ts=st.integers(min_value=MIN_TS_MS, max_value=4_102_444_800_000),
    values=st.dictionaries(names, st.one_of(st.none(), finite), max_size=8),
)
def test_round_trip(asset: str, ts: int, values: dict[str, float | None]) -> None:
    r = ok(encode_reading(asset, ts, values))
    assert (r.asset, r.ts_ms) == (asset, ts)
    assert r.values == values
    assert format_ts(ts).endswith("Z")


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_always_classified(raw: bytes) -> None:
    out = DEC.decode(raw)
    assert isinstance(out, SensorReading | Rejection)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400)
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"asset": json_values, "ts": json_values, "values": json_values},
            optional={"extra": json_values},
        ),
    )
)
def test_arbitrary_json_always_classified(obj: object) -> None:
    raw = json.dumps(obj).encode()
    out = DEC.decode(raw)
    assert isinstance(out, SensorReading | Rejection)
    if isinstance(out, SensorReading):
        # Whatever decodes is valid by construction.
        assert out.asset.strip()
        assert all(v is None or math.isfinite(v) for v in out.values.values())
    else:
        assert out.reason in set(Reason)
        assert msgspec.json.encode(out.detail)
