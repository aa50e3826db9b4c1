"""What the policy is handed: one :class:`Decision` per scored window (or sensor reading).

A decision's ``kind``, ``rule`` and ``signal`` name its *track*, the state machine it steps
(see :mod:`alerts.policy`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy.typing as npt

from alerts.events import ALERT_KINDS, SENSOR_RULES, AlertKind, SensorRule

#: (kind, rule, signal): which of an asset's alerts a decision belongs to.
TrackKey = tuple[AlertKind, str | None, str | None]
ANOMALY: Final[TrackKey] = ("anomaly", None, None)
#: Columns per sensor rule, keyed by its name (``models.health.HealthFindings`` holds them so).
RuleColumns = Mapping[str, npt.ArrayLike] | Mapping[SensorRule, npt.ArrayLike]


@dataclass(frozen=True)
class Decision:
    """The threshold layer's verdict on one scored window of one asset.

    ``ts_ms`` is the reading time of the window's last reading. ``severity``: 0 none,
    1 warning, 2 critical. ``contributions`` maps signal to its share of the score.

    ``kind`` says what decided: ``anomaly`` (the model; ``rule`` and ``signal`` stay
    ``None``), ``sensor`` (a sensor-health rule, one of ``stuck``, ``spike``,
    ``out_of_range``, on one ``signal``; ``score`` is the rule's statistic and ``threshold``
    its limit for that signal, ``contributions`` is ignored) or ``quality`` (``rule`` names
    the quality target).

    >>> Decision("pump-1", 1795899600000, 9.0, 4.0, True, 1, {"temp": 1.0}, "m", "1").track
    ('anomaly', None, None)
    """

    asset: str
    ts_ms: int
    score: float
    threshold: float
    anomalous: bool
    severity: int
    contributions: Mapping[str, float] = field(hash=False)
    model_name: str
    model_version: str
    kind: AlertKind = "anomaly"
    rule: str | None = None
    signal: str | None = None
    #: Why this decision is anomalous, in words, when the kind says it better than the
    #: generic "at score, over its limit" (a quality prediction below its lower limit):
    #: the reason of the ``opened`` event it causes.
    why: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.asset:
            raise ValueError("a decision needs a non-empty asset id")
        if isinstance(self.ts_ms, bool) or not isinstance(self.ts_ms, int):
            raise ValueError(f"ts_ms must be epoch milliseconds as int, got {self.ts_ms!r}")
        if self.severity not in (0, 1, 2):
            raise ValueError(
                f"severity must be 0 (none), 1 (warning) or 2 (critical), got {self.severity!r}"
            )
        if self.anomalous and not (math.isfinite(self.score) and math.isfinite(self.threshold)):
            raise ValueError(
                f"an anomalous decision for {self.asset!r} needs a finite score and threshold, "
                f"got score={self.score} threshold={self.threshold}"
            )
        _check_track(self.kind, self.rule, self.signal)

    @property
    def track(self) -> TrackKey:
        """The (kind, rule, signal) whose state machine this decision steps."""
        return (self.kind, self.rule, self.signal)


def _check_track(kind: str, rule: str | None, signal: str | None) -> None:
    if kind not in ALERT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(ALERT_KINDS)}, got {kind!r}")
    if kind == "anomaly":
        if rule is not None or signal is not None:
            raise ValueError(
                f"an anomaly decision names no rule or signal, got rule={rule!r} "
                f"signal={signal!r}; use kind='sensor' for a sensor-health rule"
            )
        return
    if not rule:
        raise ValueError(f"a {kind} decision needs a rule (what fired)")
    if kind == "sensor":
        if rule not in SENSOR_RULES:
            raise ValueError(
                f"a sensor decision's rule is one of {', '.join(SENSOR_RULES)}, got {rule!r}"
            )
        if not signal:
            raise ValueError(f"a sensor decision ({rule}) needs the signal it is about")
