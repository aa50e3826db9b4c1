"""AlertEvent: DESIGN's JSON shape, strict decoding, and a hypothesis round trip."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.events import SCHEMA, AlertEvent, ModelRef, TopSignal, decode_event, encode_event
from common.timestamps import format_ts

DESIGN_FIELDS = [
    "schema",
    "alert_id",
    "event",
    "asset",
    "severity",
    "started_at",
    "ended_at",
    "detected_at",
    "score",
    "threshold",
    "top_signals",
    "model",
]


def sample(**changes: object) -> AlertEvent:
    base = AlertEvent(
        alert_id="ab" * 16,
        event="opened",
        asset="pump-17",
        severity="warning",
        started_at="2026-11-28T21:00:00.123Z",
        ended_at=None,
        detected_at="2026-11-28T21:00:03.000Z",
        score=12.3,
        threshold=4.5,
        top_signals=[TopSignal("vibration_rms", 0.62), TopSignal("temp", 0.2)],
        model=ModelRef("lstm-ae", "2026-11-28.1"),
        peak_score=12.3,
        ratio=12.3 / 4.5,
        reason="3 of the last 5 windows over threshold",
        window_at="2026-11-28T21:00:02.000Z",
    )
    return msgspec.structs.replace(base, **changes)


def test_json_has_designs_fields_first_with_designs_types() -> None:
    obj = json.loads(encode_event(sample()))
    assert list(obj)[: len(DESIGN_FIELDS)] == DESIGN_FIELDS
    assert obj["schema"] == SCHEMA == "plantwatch.alert/v1"
    assert obj["ended_at"] is None
    assert obj["top_signals"] == [
        {"signal": "vibration_rms", "contribution": 0.62},
        {"signal": "temp", "contribution": 0.2},
    ]
    assert obj["model"] == {"name": "lstm-ae", "version": "2026-11-28.1"}
    assert isinstance(obj["score"], float) and isinstance(obj["threshold"], float)


def test_designs_example_parses_once_the_extra_fields_are_added() -> None:
    design = {
        "schema": "plantwatch.alert/v1",
        "alert_id": "x",
        "event": "resolved",
        "asset": "pump-17",
        "severity": "critical",
        "started_at": "2026-11-28T21:00:00.000Z",
        "ended_at": "2026-11-28T21:05:00.000Z",
        "detected_at": "2026-11-28T21:05:10.000Z",
        "score": 12.3,
        "threshold": 4.5,
        "top_signals": [{"signal": "vibration_rms", "contribution": 0.62}],
        "model": {"name": "lstm-ae", "version": "1"},
    }
    extras = {"peak_score": 12.3, "ratio": None, "reason": "r", "window_at": "2026-11-28T21:05:09Z"}
    ev = decode_event(json.dumps({**design, **extras}).encode())
    assert ev.event == "resolved" and ev.ended_at == "2026-11-28T21:05:00.000Z"
    with pytest.raises(msgspec.ValidationError, match="peak_score"):
        decode_event(json.dumps(design).encode())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("schema", "plantwatch.alert/v2", "schema"),
        ("event", "closed", "event"),
        ("severity", "info", "severity"),
        ("score", "high", "score"),
        ("top_signals", [{"signal": "a"}], "contribution"),
        ("kind", "weather", "kind"),
    ],
)
def test_decode_refuses_what_is_not_v1(field: str, value: object, message: str) -> None:
    obj = json.loads(encode_event(sample()))
    obj[field] = value
    with pytest.raises(ValueError, match=message):
        decode_event(json.dumps(obj).encode())


def test_an_event_without_kind_decodes_as_an_anomaly() -> None:
    obj = json.loads(encode_event(sample()))
    del obj["kind"]  # as written before the field existed
    ev = decode_event(json.dumps(obj).encode())
    assert ev.kind == "anomaly" and ev == sample()


def test_kind_is_an_extra_after_designs_fields() -> None:
    obj = json.loads(encode_event(sample(kind="sensor")))
    assert obj["kind"] == "sensor"
    assert list(obj).index("kind") >= len(DESIGN_FIELDS)
    assert json.loads(encode_event(sample()))["kind"] == "anomaly"


def test_a_consumer_that_ignores_kind_reads_every_event() -> None:
    class DesignOnly(msgspec.Struct):  # a consumer written against DESIGN's example
        alert_id: str
        event: str
        asset: str
        top_signals: list[TopSignal]

    for kind in ("anomaly", "sensor", "quality"):
        data = encode_event(sample(kind=kind, top_signals=[TopSignal("temp", 1.0)]))
        seen = msgspec.json.decode(data, type=DesignOnly)
        assert seen.asset == "pump-17" and seen.top_signals == [TopSignal("temp", 1.0)]


def test_decode_refuses_non_json() -> None:
    with pytest.raises(ValueError):
        decode_event(b"not json")


texts = st.text(min_size=1, max_size=30)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
times = st.integers(946_684_800_000, 32_503_679_999_999).map(format_ts)

events = st.builds(
    AlertEvent,
    alert_id=st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    event=st.sampled_from(["opened", "updated", "resolved"]),
    asset=texts,
    severity=st.sampled_from(["warning", "critical"]),
    started_at=times,
    ended_at=st.none() | times,
    detected_at=times,
    score=finite,
    threshold=finite,
    top_signals=st.lists(st.builds(TopSignal, texts, finite), max_size=5),
    model=st.builds(ModelRef, texts, texts),
    peak_score=finite,
    ratio=st.none() | finite,
    reason=st.text(max_size=80),
    window_at=times,
    kind=st.sampled_from(["anomaly", "sensor", "quality"]),
)


@settings(max_examples=300, deadline=None)
@given(ev=events)
def test_round_trip(ev: AlertEvent) -> None:
    data = encode_event(ev)
    assert decode_event(data) == ev
    assert json.loads(data)["schema"] == SCHEMA
