"""The alert message other systems consume from ``plantwatch.alerts`` (``plantwatch.alert/v1``).

Every field DESIGN fixes is here under its documented name and type; the extra fields
(``peak_score``, ``ratio``, ``reason``, ``window_at``, ``kind``) explain the alert to an
operator and are additive, so a consumer written against DESIGN's example keeps working.

``acknowledged_by``/``acknowledged_at`` and ``shelved_until``/``shelved_by`` (additive too,
``null`` by default) carry an operator's acknowledgement and shelving of the alert
(``plantwatch.commands``) on every event of the alert from then on.

``kind`` says what raised the alert: ``anomaly`` (the model's score over its threshold, the
default, so an event written before the field existed decodes as one), ``sensor`` (a
sensor-health rule, one of :data:`SENSOR_RULES`, named at the start of ``reason``, its signal
the only entry of ``top_signals``), or ``quality`` (a predicted quality value outside its
spec limits).

>>> ev = AlertEvent(
...     alert_id="0" * 32, event="opened", asset="pump-17", severity="warning",
...     started_at="2026-11-28T21:00:00.000Z", ended_at=None,
...     detected_at="2026-11-28T21:00:02.500Z", score=12.3, threshold=4.5,
...     top_signals=[TopSignal("vibration_rms", 0.62)], model=ModelRef("lstm-ae", "3"),
...     peak_score=12.3, ratio=2.733, reason="3 of the last 5 windows over threshold",
...     window_at="2026-11-28T21:00:02.000Z",
... )
>>> decode_event(encode_event(ev)) == ev
True
>>> encode_event(ev)[:50]
b'{"schema":"plantwatch.alert/v1","alert_id":"000000'
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

SCHEMA: Final = "plantwatch.alert/v1"

EventKind = Literal["opened", "updated", "resolved"]
SeverityName = Literal["warning", "critical"]

#: What raised an alert (DESIGN: the additive ``kind`` field of AlertEvent).
AlertKind = Literal["anomaly", "sensor", "quality"]
ALERT_KINDS: Final[tuple[AlertKind, ...]] = ("anomaly", "sensor", "quality")

#: The sensor-health rules a ``sensor`` alert names (DESIGN). ``models.health`` spells the
#: same words; the orchestration layer hands them over as plain strings.
SensorRule = Literal["stuck", "spike", "out_of_range", "step"]
SENSOR_RULES: Final[tuple[SensorRule, ...]] = ("stuck", "spike", "out_of_range", "step")

#: Severity levels as the threshold layer numbers them (0 means "not anomalous").
SEVERITY_NAMES: dict[int, SeverityName] = {1: "warning", 2: "critical"}


class TopSignal(msgspec.Struct, frozen=True):
    """One signal and its share (0..1) of the window's score."""

    signal: str
    contribution: float


class ModelRef(msgspec.Struct, frozen=True):
    """The model that produced the scores behind an alert."""

    name: str
    version: str


class AlertEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One change in an alert's life: ``opened``, ``updated`` or ``resolved``.

    Times are RFC 3339 UTC text: ``started_at`` is the reading time of the first anomalous
    window of the episode, ``ended_at`` (``null`` until resolved) the reading time of the
    last anomalous one, ``detected_at`` the wall-clock time the monitor decided, and
    ``window_at`` the reading time of the window that caused this event.

    ``score``/``threshold``/``ratio``/``top_signals`` describe that window for ``opened`` and
    ``updated``, and the episode's peak window for ``resolved``. ``peak_score`` is the highest
    score seen in the episode so far. ``ratio`` is score / threshold (``null`` when the
    threshold is not positive). ``kind`` is what raised the alert (see the module docstring).
    """

    schema: Literal["plantwatch.alert/v1"] = SCHEMA
    alert_id: str
    event: EventKind
    asset: str
    severity: SeverityName
    started_at: str
    ended_at: str | None
    detected_at: str
    score: float
    threshold: float
    top_signals: list[TopSignal]
    model: ModelRef
    peak_score: float
    ratio: float | None
    reason: str
    window_at: str
    kind: AlertKind = "anomaly"
    #: Who acknowledged the alert and when (RFC 3339), from the ``ack`` command on; ``null``
    #: while unacknowledged.
    acknowledged_by: str | None = None
    acknowledged_at: str | None = None
    #: Until when (reading time, RFC 3339) and by whom the alert is shelved; ``null`` when
    #: it is not. While shelved, the ``updated`` events its condition causes are withheld.
    shelved_until: str | None = None
    shelved_by: str | None = None


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(AlertEvent)


def encode_event(event: AlertEvent) -> bytes:
    """The event's UTF-8 JSON, fields in DESIGN's order (extras after them)."""
    return _ENCODER.encode(event)


def decode_event(data: bytes) -> AlertEvent:
    """Parse and validate one alert message.

    Raises ``ValueError`` (a ``msgspec.ValidationError`` or ``msgspec.DecodeError``) naming the
    offending field when the bytes are not a ``plantwatch.alert/v1`` event.
    """
    return _DECODER.decode(data)
