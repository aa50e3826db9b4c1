"""Message shapes on the wire, and the one decoder every sensor message goes through.

A message either decodes into a :class:`SensorReading` or becomes a :class:`Rejection`
that names a :class:`Reason`; nothing raises out of :meth:`ReadingDecoder.decode`, so a
bad message can never stop the consumer (it goes to the dead-letter topic instead).

>>> dec = ReadingDecoder()
>>> r = dec.decode(b'{"asset": "pump-17", "ts": 1795899600123, "values": {"temp": 71.2}}')
>>> (r.asset, r.ts_ms, r.values)
('pump-17', 1795899600123, {'temp': 71.2})
>>> dec.decode(b'{"asset": "pump-17", "ts": "yesterday", "values": {}}').reason.value
'bad_timestamp'
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

import msgspec
import numpy as np

from common.reasons import Reason
from common.timestamps import format_ts, parse_ts

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
#: Magnitudes from here up round to infinity as a float32 (the largest float32 plus half
#: its last step): model windows are float32.
FLOAT32_OVERFLOW = float(np.finfo(np.float32).max) + 2.0**103


class SensorReading(msgspec.Struct, frozen=True):
    """One decoded reading: an asset, a time in epoch milliseconds, values by signal."""

    asset: str
    ts_ms: int
    values: dict[str, float | None]


class Rejection(msgspec.Struct, frozen=True):
    """A message that cannot be used, with the reason and a short human detail."""

    reason: Reason
    detail: str


class _Wire(msgspec.Struct):
    asset: str
    ts: datetime | int | float
    values: dict[str, float | None]


_ENCODER = msgspec.json.Encoder()


def encode_reading(asset: str, ts_ms: int, values: Mapping[str, float | None]) -> bytes:
    """The documented JSON for a reading (NaN and infinities are sent as null).

    >>> encode_reading("pump-1", 1795899600123, {"temp": 71.25, "flow": float("nan")})
    b'{"asset":"pump-1","ts":"2026-11-28T21:00:00.123Z","values":{"temp":71.25,"flow":null}}'
    """
    clean = {
        k: (None if v is None or not math.isfinite(v) else float(v)) for k, v in values.items()
    }
    return _ENCODER.encode({"asset": asset, "ts": format_ts(ts_ms), "values": clean})


class ReadingDecoder:
    """Decodes and validates sensor messages in one msgspec pass; classifies failures.

    ``allowed_signals``: when the served model's signal list is fixed, any other signal name
    is refused as ``unknown_signal`` (a renamed tag would otherwise silently look missing).
    """

    def __init__(
        self,
        *,
        allowed_signals: Collection[str] | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._decoder = msgspec.json.Decoder(_Wire)
        self._allowed = frozenset(allowed_signals) if allowed_signals is not None else None
        self.max_message_bytes = max_message_bytes

    def decode(self, raw: bytes | None) -> SensorReading | Rejection:
        refused = refuse_size(raw, self.max_message_bytes)
        if refused is not None:
            return refused
        assert raw is not None
        try:
            wire = self._decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
            return _classify(raw)
        return self._check(wire.asset, wire.ts, wire.values)

    def _check(
        self, asset: str, ts: object, values: Mapping[str, float | None]
    ) -> SensorReading | Rejection:
        if not asset.strip():
            return Rejection(Reason.EMPTY_ASSET, "asset is empty")
        try:
            ts_ms = parse_ts(ts)
        except (ValueError, OverflowError, OSError) as exc:
            return Rejection(Reason.BAD_TIMESTAMP, str(exc)[:200])
        for name, value in values.items():
            if value is not None and not math.isfinite(value):
                return Rejection(Reason.NON_FINITE_VALUE, f"signal {name!r} is {value}")
            if value is not None and abs(value) >= FLOAT32_OVERFLOW:
                return Rejection(
                    Reason.OUT_OF_RANGE,
                    f"signal {name!r} is {value:g}, beyond the ±3.4e38 a model window holds",
                )
            if not name:
                return Rejection(Reason.UNKNOWN_SIGNAL, "a signal name is empty")
        if self._allowed is not None:
            unknown = [name for name in values if name not in self._allowed]
            if unknown:
                return Rejection(
                    Reason.UNKNOWN_SIGNAL, f"signal(s) not in the model: {sorted(unknown)[:5]}"
                )
        return SensorReading(asset, ts_ms, dict(values))


def refuse_size(raw: bytes | None, max_message_bytes: int) -> Rejection | None:
    """The refusal of a message with no value or over the size limit, else ``None``: the
    first check of every decoder of the Kafka edge (readings, lab results)."""
    if raw is None:
        return Rejection(Reason.NOT_JSON, "empty message (no value)")
    if len(raw) > max_message_bytes:
        return Rejection(
            Reason.OVERSIZE, f"{len(raw)} bytes is over the limit of {max_message_bytes}"
        )
    return None


def untyped_object(raw: bytes) -> dict[str, Any] | Rejection:
    """Slow path of every decoder, for a message its typed decoder refused: the message as a
    plain JSON object, or why it is none (not UTF-8, not JSON, NaN or a number out of
    range, not an object)."""
    try:
        obj: Any = msgspec.json.decode(raw)
    except UnicodeDecodeError as exc:
        # Invalid UTF-8 inside a JSON string is raised as this, not as a DecodeError.
        return Rejection(Reason.NOT_JSON, f"not UTF-8: {exc}"[:200])
    except msgspec.DecodeError as exc:
        text = raw[:4096].decode("utf-8", errors="replace")
        if any(tok in text for tok in ("NaN", "Infinity")) or "out of range" in str(exc):
            return Rejection(
                Reason.NON_FINITE_VALUE, "NaN, Infinity or a number out of range; send null"
            )
        return Rejection(Reason.NOT_JSON, str(exc)[:200])
    if not isinstance(obj, dict):
        return Rejection(Reason.NOT_OBJECT, f"top level is {type(obj).__name__}, not an object")
    return obj


def _classify(raw: bytes) -> Rejection:
    """Slow path, only for messages the typed decoder refused: say exactly why."""
    obj = untyped_object(raw)
    if isinstance(obj, Rejection):
        return obj
    missing = [k for k in ("asset", "ts", "values") if k not in obj]
    if missing:
        return Rejection(Reason.MISSING_FIELD, f"missing {', '.join(missing)}")
    asset = obj["asset"]
    if not isinstance(asset, str):
        if asset is None:
            return Rejection(Reason.EMPTY_ASSET, "asset is null")
        return Rejection(Reason.MISSING_FIELD, f"asset must be text, got {type(asset).__name__}")
    if not asset.strip():
        return Rejection(Reason.EMPTY_ASSET, "asset is empty")
    try:
        parse_ts(obj["ts"])
    except (ValueError, OverflowError, OSError) as exc:
        return Rejection(Reason.BAD_TIMESTAMP, str(exc)[:200])
    values = obj["values"]
    if not isinstance(values, dict):
        return Rejection(
            Reason.NON_NUMERIC_VALUE, f"values must be an object, got {type(values).__name__}"
        )
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return Rejection(Reason.NON_NUMERIC_VALUE, f"signal {name!r} is {type(value).__name__}")
    # Anything the typed decoder refused that passes every check above (a value out of
    # float range, say) is still refused, never guessed at.
    return Rejection(Reason.NON_NUMERIC_VALUE, "values do not decode as numbers or null")
