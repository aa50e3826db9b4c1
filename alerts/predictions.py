"""The quality prediction other systems consume from ``plantwatch.quality``
(``plantwatch.quality/v1``, keyed by asset).

DESIGN fixes asset, ts, target name, predicted value, interval, spec limits and in_spec;
``coverage`` says what the interval promises, ``bias`` the online correction already in
``predicted`` (learnt from lab results), ``model`` which quality model predicted. ``ts`` is
the reading time of the prediction (the newest reading it read), the time a lab sample
drawn then is joined to.

>>> p = QualityPrediction(
...     asset="sru-1", ts="2026-11-28T21:00:00.000Z", target="y2", predicted=0.21,
...     lower=0.18, upper=0.24, coverage=0.9, lsl=None, usl=0.3, in_spec=True, bias=0.01,
...     model=ModelRef("quality-pls", "ab12"),
... )
>>> decode_prediction(encode_prediction(p)) == p
True
>>> encode_prediction(p)[:56]
b'{"schema":"plantwatch.quality/v1","asset":"sru-1","ts":"'
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from alerts.events import ModelRef

PREDICTION_SCHEMA: Final = "plantwatch.quality/v1"


class QualityPrediction(msgspec.Struct, frozen=True, kw_only=True):
    """One soft-sensor prediction with its conformal interval and spec verdict.

    ``lower``/``upper`` are ``null`` while the interval cannot promise ``coverage`` (too few
    residuals); ``lsl``/``usl`` are ``null`` for a side without a limit; ``in_spec`` is
    ``null`` when the target has no limits at all, else whether ``predicted`` lies within
    them.
    """

    schema: Literal["plantwatch.quality/v1"] = PREDICTION_SCHEMA
    asset: str
    ts: str
    target: str
    predicted: float
    lower: float | None
    upper: float | None
    coverage: float
    lsl: float | None
    usl: float | None
    in_spec: bool | None
    bias: float
    model: ModelRef


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(QualityPrediction)


def encode_prediction(prediction: QualityPrediction) -> bytes:
    return _ENCODER.encode(prediction)


def decode_prediction(data: bytes) -> QualityPrediction:
    """Parse one ``plantwatch.quality/v1`` record (``ValueError`` naming the bad field)."""
    return _DECODER.decode(data)
