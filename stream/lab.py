"""Lab results on ``plantwatch.lab``: the delayed truth of the quality models.

A lab (or analyser) result says what a product sample measured: the asset it was taken
from, the sample time, the quality target and the measured value::

    {"asset": "sru-1", "ts": "2026-11-28T21:00:00Z", "target": "y2", "value": 0.231}

``ts`` is the *sample* time (when the product was drawn), not the time the result was
reported: the monitor joins it to the prediction made for that time. Like readings, a
result is keyed by asset (the key chooses the partition, and so the process holding the
asset's predictions), and one that cannot be used becomes a :class:`Rejection` bound for
the dead-letter topic, with the same reasons as a reading.

>>> dec = LabDecoder()
>>> r = dec.decode(b'{"asset": "sru-1", "ts": 1795899600000, "target": "y2", "value": 0.23}')
>>> (r.asset, r.ts_ms, r.target, r.value)
('sru-1', 1795899600000, 'y2', 0.23)
>>> dec.decode(b'{"asset": "sru-1", "ts": 1795899600000, "target": "y2"}').reason.value
'missing_field'
>>> decode = LabDecoder().decode
>>> decode(encode_lab_result("sru-1", 1795899600000, "y2", 0.5)) == LabResult(
...     "sru-1", 1795899600000, "y2", 0.5)
True
"""

from __future__ import annotations

import math
from datetime import datetime

import msgspec

from common.reasons import Reason
from common.timestamps import format_ts, parse_ts
from stream.schema import DEFAULT_MAX_MESSAGE_BYTES, Rejection, refuse_size, untyped_object


class LabResult(msgspec.Struct, frozen=True):
    """One decoded lab result: asset, sample time (epoch ms), target name, measured value."""

    asset: str
    ts_ms: int
    target: str
    value: float


class _Wire(msgspec.Struct):
    asset: str
    ts: datetime | int | float
    target: str
    value: float


_ENCODER = msgspec.json.Encoder()


def encode_lab_result(asset: str, ts_ms: int, target: str, value: float) -> bytes:
    """The documented JSON of a lab result (for producers and tests)."""
    return _ENCODER.encode(
        {"asset": asset, "ts": format_ts(ts_ms), "target": target, "value": value}
    )


class LabDecoder:
    """Decodes and validates lab-result messages; never raises (bad ones are rejections)."""

    def __init__(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self._decoder = msgspec.json.Decoder(_Wire)
        self.max_message_bytes = max_message_bytes

    def decode(self, raw: bytes | None) -> LabResult | Rejection:
        refused = refuse_size(raw, self.max_message_bytes)
        if refused is not None:
            return refused
        assert raw is not None
        try:
            wire = self._decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
            return _classify(raw)
        if not wire.asset.strip():
            return Rejection(Reason.EMPTY_ASSET, "asset is empty")
        if not wire.target.strip():
            return Rejection(Reason.MISSING_FIELD, "target is empty")
        try:
            ts_ms = parse_ts(wire.ts)
        except (ValueError, OverflowError, OSError) as exc:
            return Rejection(Reason.BAD_TIMESTAMP, str(exc)[:200])
        if not math.isfinite(wire.value):
            return Rejection(Reason.NON_FINITE_VALUE, f"value is {wire.value}")
        return LabResult(wire.asset, ts_ms, wire.target, float(wire.value))


def _classify(raw: bytes) -> Rejection:
    """Slow path, only for messages the typed decoder refused: say why."""
    obj = untyped_object(raw)
    if isinstance(obj, Rejection):
        return obj
    missing = [k for k in ("asset", "ts", "target", "value") if obj.get(k) is None]
    if missing:
        return Rejection(Reason.MISSING_FIELD, f"missing {', '.join(missing)}")
    if not isinstance(obj["asset"], str) or not isinstance(obj["target"], str):
        return Rejection(Reason.MISSING_FIELD, "asset and target must be text")
    try:
        parse_ts(obj["ts"])
    except (ValueError, OverflowError, OSError) as exc:
        return Rejection(Reason.BAD_TIMESTAMP, str(exc)[:200])
    return Rejection(
        Reason.NON_NUMERIC_VALUE, f"value must be a number, got {type(obj['value']).__name__}"
    )
