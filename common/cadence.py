"""How often an asset reports: the sampling interval, measured, never assumed.

Readings may come every 10 ms or every hour, regularly or not. Gaps, staleness and
re-ordering are judged in multiples of the interval an asset showed in training, so the
same settings serve a 1 s vibration sensor and a 5 min historian export.

>>> c = measure_cadence([0, 1000, 2000, 3100, 4000, 5000, 6000, 7000, 8000, 9000, 69000])
>>> c.interval_ms, c.p10_ms, c.p90_ms, c.intervals
(1000.0, 1000.0, 1100.0, 10)
>>> measure_cadence([5]).interval_ms is None
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Cadence:
    """The median interval between consecutive readings, and its spread (10th/90th pct)."""

    interval_ms: float | None
    p10_ms: float | None
    p90_ms: float | None
    intervals: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Cadence:
        def num(key: str) -> float | None:
            value = obj.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"cadence field {key!r} must be a positive number, got {value!r}")
            return float(value)

        count = obj.get("intervals", 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"cadence field 'intervals' must be a count, got {count!r}")
        return cls(num("interval_ms"), num("p10_ms"), num("p90_ms"), count)

    def describe(self) -> str:
        """``"median interval 300 s (10-90 %: 290-310 s)"`` for messages."""
        if self.interval_ms is None or self.p10_ms is None or self.p90_ms is None:
            return "no interval (fewer than two readings)"
        return (
            f"median interval {duration_text(self.interval_ms)} "
            f"(10-90 %: {duration_text(self.p10_ms)}-{duration_text(self.p90_ms)})"
        )


def measure_cadence(ts_ms: npt.ArrayLike) -> Cadence:
    """The cadence of one asset's readings, given in time order (repeats are ignored)."""
    return cadence_of_intervals(np.diff(np.asarray(ts_ms, dtype=np.float64)))


def cadence_of_intervals(intervals_ms: npt.ArrayLike) -> Cadence:
    """The cadence of intervals between readings (pooled over assets, say); zeros ignored."""
    diffs = np.asarray(intervals_ms, dtype=np.float64).ravel()
    diffs = diffs[diffs > 0]
    if diffs.size == 0:
        return Cadence(None, None, None, 0)
    p10, median, p90 = np.quantile(diffs, [0.1, 0.5, 0.9], method="nearest").tolist()
    return Cadence(float(median), float(p10), float(p90), int(diffs.size))


def duration_text(ms: float) -> str:
    """A duration as people read it: seconds, minutes from 2 min, hours from 2 h.

    >>> duration_text(1500), duration_text(300_000), duration_text(36_000_000)
    ('1.5 s', '5 min', '10 h')
    """
    s = ms / 1000.0
    if s < 120:
        return f"{s:.3g} s"
    return f"{s / 60:.3g} min" if s < 7200 else f"{s / 3600:.3g} h"
