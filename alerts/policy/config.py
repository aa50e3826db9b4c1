"""The policy's settings: one :class:`AlertConfig` for anomaly (and quality) alerts, another
(by default :data:`SENSOR_ALERT_DEFAULTS`) for sensor-health alerts."""

from __future__ import annotations

import math
from typing import Annotated, Final

import msgspec

from common.config import Config


class AlertConfig(Config, frozen=True, kw_only=True):
    """Debounce, hysteresis and rate limits of the alert policy (see :mod:`alerts.policy`).

    Ranges are checked when a configuration is loaded (``msgspec.convert``); the one
    cross-field rule, ``k <= n``, is checked on construction too.

    >>> AlertConfig(k=2, n=3).m
    10
    """

    #: Open after ``k`` of the last ``n`` windows are anomalous.
    k: Annotated[int, msgspec.Meta(ge=1)] = 3
    n: Annotated[int, msgspec.Meta(ge=1)] = 5
    #: An anomaly alert opens at once on ``k`` of ``n`` only when one of those windows
    #: scored at least ``strong_ratio`` times its threshold. Windows overlap, so their
    #: scores are strongly correlated: ``k`` of ``n`` barely over the line is one noisy
    #: crossing seen ``k`` times, not ``k`` pieces of evidence. Weaker exceedances open only
    #: when they persist: ``weak_k`` of the last ``weak_n`` windows. 1 turns this off.
    strong_ratio: Annotated[float, msgspec.Meta(ge=1)] = 1.3
    weak_k: Annotated[int, msgspec.Meta(ge=1)] = 10
    weak_n: Annotated[int, msgspec.Meta(ge=1)] = 30
    #: Persistence is also bounded in reading time: where ``weak_k`` windows span more
    #: than this (coarse readings: 10 windows of 5-minute data are 50 minutes), the count
    #: asked for shrinks to the windows that fit in it (never under ``k`` nor
    #: ``weak_min_k``) and ``weak_n`` with it, in proportion. The windows' own spacing says
    #: how far apart they are.
    weak_max_ms: Annotated[int, msgspec.Meta(ge=1)] = 1_800_000
    #: ... but never fewer than this many windows (nor, the bound only shrinking it, more
    #: than ``weak_k``): windows overlap by the same readings at every cadence, so a count
    #: of them carries no more evidence for lying an hour apart than a second apart, and
    #: fewer than six weak windows is one noisy crossing seen several times (6: what 30
    #: minutes ask of 5-minute readings; 3 of 9 at 10-minute to hourly readings flooded,
    #: docs/BENCHMARKS.md).
    weak_min_k: Annotated[int, msgspec.Meta(ge=1)] = 6
    #: Resolve after ``m`` normal windows in a row.
    m: Annotated[int, msgspec.Meta(ge=1)] = 10
    #: No new alert for an asset this soon (reading time) after one resolved.
    cooldown_ms: Annotated[int, msgspec.Meta(ge=0)] = 60_000
    update_every_ms: Annotated[int, msgspec.Meta(ge=0)] = 30_000
    update_min_rise: Annotated[float, msgspec.Meta(ge=0)] = 0.2
    critical_ratio: Annotated[float, msgspec.Meta(gt=1)] = 2.0
    top_signals: Annotated[int, msgspec.Meta(ge=1)] = 3
    #: The longest an operator may shelve an alert (``shelve`` command; also the length of
    #: a shelving that names no ``until``): a shelved alert comes back by itself.
    max_shelve_ms: Annotated[int, msgspec.Meta(gt=0)] = 8 * 3_600_000

    def __post_init__(self) -> None:
        if self.k > self.n:
            raise ValueError(f"alert policy needs k <= n, got k={self.k} n={self.n}")
        if self.weak_k > self.weak_n:
            raise ValueError(
                f"alert policy needs weak_k <= weak_n, got weak_k={self.weak_k} "
                f"weak_n={self.weak_n}"
            )

    @property
    def history(self) -> int:
        """Windows of k-of-n history a quiet machine keeps: ``n``, or ``weak_n`` when weak
        exceedances must persist."""
        return max(self.n, self.weak_n) if self.strong_ratio > 1 else self.n

    def weak_need(self, spacing_ms: float) -> tuple[int, int]:
        """``(count, of)``: weak exceedances must be ``count`` of the last ``of`` windows,
        where windows come ``spacing_ms`` apart in reading time (0: not known).

        >>> cfg = AlertConfig()
        >>> cfg.weak_need(1_000), cfg.weak_need(60_000), cfg.weak_need(300_000)
        ((10, 30), (10, 30), (6, 18))
        >>> cfg.weak_need(3_600_000)  # an hour apart: never fewer than weak_min_k
        (6, 18)
        """
        if spacing_ms <= 0 or self.weak_k * spacing_ms <= self.weak_max_ms:
            return self.weak_k, self.weak_n
        # Shrunk to what fits in weak_max_ms, never under k nor weak_min_k, and never
        # raised: at most weak_k.
        fits = math.ceil(self.weak_max_ms / spacing_ms)
        count = min(self.weak_k, max(self.k, self.weak_min_k, fits))
        of = max(self.n, count, math.ceil(self.weak_n * count / self.weak_k))
        return count, min(of, self.weak_n)


#: The machine's settings for sensor-health tracks unless ``AlertPolicy(sensor=...)`` says
#: otherwise. The rules debounce themselves (a stuck run must outlast training's longest
#: several times, an excursion must be out of the envelope for several readings, a spike is
#: confirmed when the signal comes back), so one flagged reading opens; ``m`` readings of
#: the signal back to normal resolve; the cooldown keeps a sensor that spikes again and
#: again to one alert per minute of reading time. Escalation to ``critical`` at twice the
#: rule's limit (``critical_ratio``), as for anomalies; after that an ``updated`` only when
#: the score has doubled (``update_min_rise=1``): a stuck run's score grows with every
#: reading, and a doubling is news where +20 % would be an update every half minute.
SENSOR_ALERT_DEFAULTS: Final = AlertConfig(
    k=1, n=1, m=10, cooldown_ms=60_000, update_every_ms=30_000, update_min_rise=1.0, top_signals=1
)
