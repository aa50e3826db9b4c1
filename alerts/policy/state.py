"""Per-asset state, as msgspec structs: a snapshot is ``msgspec.to_builtins`` of these and a
restore validates through ``msgspec.convert``, so a damaged snapshot fails loudly, by field.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from alerts.events import AlertKind
from alerts.policy.decision import TrackKey

Phase = Literal["idle", "open", "cooling"]


class _Window(msgspec.Struct, omit_defaults=True):
    """A window in the k-of-n history; score fields are only kept for anomalous windows."""

    ts_ms: int
    severity: int = 0
    score: float = 0.0
    threshold: float = 0.0
    top: list[tuple[str, float]] = []


class _Episode(msgspec.Struct, omit_defaults=True):
    alert_id: str
    started_at_ms: int
    severity: int
    peak_score: float
    peak_threshold: float
    peak_top: list[tuple[str, float]]
    last_anomalous_ms: int
    normal_streak: int
    reported_peak: float
    last_update_ms: int
    #: An operator's acknowledgement (``ack``): who, and when (epoch ms).
    acknowledged_by: str | None = None
    acknowledged_at_ms: int | None = None
    #: An operator's shelving: until when (reading time) and by whom; ``None``: in service.
    shelved_until_ms: int | None = None
    shelved_by: str | None = None
    #: ``updated`` events withheld while shelved (since the shelving began).
    withheld: int = 0
    #: The model of the decision that opened it (``None`` in snapshots from before): what
    #: an event caused by an operator, not by a decision, names.
    model_name: str | None = None
    model_version: str | None = None


class _Machine(msgspec.Struct):
    """One alert's state machine (see :mod:`alerts.policy`)."""

    phase: Phase = "idle"
    clock_ms: int | None = None
    cooldown_until_ms: int = 0
    recent: list[_Window] = []
    episode: _Episode | None = None


class _Track(_Machine, kw_only=True):
    """The machine of one non-anomaly alert of an asset: (kind, rule, signal)."""

    kind: AlertKind
    rule: str
    signal: str | None = None

    @property
    def key(self) -> TrackKey:
        return (self.kind, self.rule, self.signal)


class _AssetState(_Machine):
    """An asset's anomaly machine (the fields snapshots always had) and its other tracks."""

    tracks: list[_Track] = []


def _dormant(machine: _Machine) -> bool:
    """Idle with nothing anomalous remembered: the same as a machine never stepped."""
    return (
        machine.phase == "idle"
        and machine.episode is None
        and not any(w.severity for w in machine.recent)
    )


def _advance_clock(machine: _Machine, ts_ms: int) -> int:
    clock_ms = ts_ms if machine.clock_ms is None else max(machine.clock_ms, ts_ms)
    machine.clock_ms = clock_ms
    return clock_ms
