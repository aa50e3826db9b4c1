"""Screening a training history for flat-lined stretches before anything learns from it.

A historian export often holds a sensor that was offline for hours, written as one repeated
value (0.0, the last good reading, a fill value). Learned as normal it teaches everything
that comes after the wrong thing: the model and its thresholds learn the drop to the fill
value and back as ordinary excursions (a +8 noise-sd excursion later in the stream went
unseen: docs/BENCHMARKS.md, "Bad values in the history"), and the stuck rule learns that a
frozen value may last that long. Screening finds such stretches the way the live stuck
rule judges a run (readings that do not change by more than a fraction of the signal's
typical step), but relative to what the signal *usually* does rather than to its longest
run, which is the very thing a bad stretch poisons:

* a stretch is flat when it holds at least ``stuck_factor`` times the 99th percentile of
  the signal's run lengths, and at least ``stuck_min_readings`` readings;
* a signal whose flat stretches recur (more than :data:`MAX_STRETCHES`) or cover half its
  readings is operated that way (a set-point, a pump stopped every night): nothing of it is
  screened, and its long runs stay normal.

Fill values are screened too (:func:`gross_readings`): readings far outside the local band
whose value repeats exactly (0.0, -9999), as a historian writes "bad quality"; three of
them among 1,600 training rows were enough to hide a later excursion.

The rows of a screened stretch are left out of training and calibration for every signal
(a model of several signals would otherwise learn the broken relations), and the training
summary names each stretch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from models.health.kernels import _check_segments, _clean, _prev_median
from models.health.profile import _MAD_TO_SIGMA, _MEAN_AD_TO_SIGMA

#: More flat stretches than this in one signal are a way of operating, not a fault.
MAX_STRETCHES: Final = 2
#: Flat stretches covering this share of a signal's readings or more: a held signal.
MAX_SHARE: Final = 0.5
#: The run-length percentile that says what a signal usually does.
_TYPICAL_PERCENTILE: Final = 99.0
#: A reading this many robust spreads from the median of the readings before it is gross:
#: a fill value, a dropout to 0, a sentinel (-9999), not a reading of the process.
GROSS_Z: Final = 20.0
#: Gross readings are screened only where one value repeats exactly, at least this many
#: times (a fill value), and at most on this share of the signal's readings.
MIN_FILL_REPEATS: Final = 3
MAX_FILL_SHARE: Final = 0.1


@dataclass(frozen=True)
class FlatStretch:
    """Rows ``[start, end)`` over which ``signal`` held ``value`` (``readings`` of them)."""

    signal: str
    start: int
    end: int
    readings: int
    value: float
    #: The fewest readings that made a run flat for this signal.
    limit: int

    def to_json(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "start_row": self.start,
            "end_row": self.end,
            "readings": self.readings,
            "value": self.value,
            "limit": self.limit,
        }


def _finite(col: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = col[np.isfinite(col)]
    return out


def _runs(col: npt.NDArray[np.float64], tolerance: float) -> npt.NDArray[np.int64]:
    """The runs of unchanged finite readings in ``col``, one row each: first row, last
    row, readings."""
    rows = np.flatnonzero(np.isfinite(col))
    if rows.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    changed = np.r_[True, ~(np.abs(np.diff(col[rows])) <= tolerance)]
    starts = np.flatnonzero(changed)
    ends = np.r_[starts[1:], rows.size] - 1
    return np.column_stack([rows[starts], rows[ends], ends - starts + 1]).astype(np.int64)


def flat_stretches(
    values: npt.ArrayLike,
    segments: Sequence[tuple[int, int]],
    signals: Sequence[str],
    *,
    stuck_factor: float = 3.0,
    stuck_min_readings: int = 30,
    flat_tolerance: float = 0.01,
) -> list[FlatStretch]:
    """The flat-lined stretches of a training history (rows x signals, NaN for missing).

    ``segments`` are the [start, end) row ranges contiguous in time (a run never crosses
    one); ``flat_tolerance`` is the fraction of the signal's median non-zero change under
    which a reading counts as unchanged (the sensor-health profile's own).

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(10, 1, size=(1000, 1))
    >>> x[300:420] = 0.0  # offline for 120 readings
    >>> [(s.start, s.end, s.value) for s in flat_stretches(x, [(0, 1000)], ["temp"])]
    [(300, 420, 0.0)]
    >>> held = np.repeat(rng.normal(size=10), 100)[:, None]  # a set-point: runs of 100
    >>> flat_stretches(held, [(0, 1000)], ["sp"])
    []
    """
    names = tuple(signals)
    x = _clean(values, len(names), "training values")
    spans = _check_segments(segments, x.shape[0])
    found: list[FlatStretch] = []
    for j, name in enumerate(names):
        steps = np.concatenate([np.abs(np.diff(_finite(x[a:b, j]))) for a, b in spans])
        moved = steps[steps > 0]
        if moved.size == 0:
            continue  # never changed: no notion of "usually"; the profile turns the rule off
        tolerance = flat_tolerance * float(np.median(moved))
        # Row numbers within each segment, shifted to the table's.
        runs = np.vstack([_runs(x[a:b, j], tolerance) + np.array([a, a, 0]) for a, b in spans])
        lengths = runs[:, 2]
        typical = float(np.percentile(lengths, _TYPICAL_PERCENTILE))
        limit = max(stuck_min_readings, int(np.ceil(stuck_factor * typical)))
        flat = runs[lengths >= limit]
        if not 0 < len(flat) <= MAX_STRETCHES or flat[:, 2].sum() >= MAX_SHARE * lengths.sum():
            continue
        found.extend(
            FlatStretch(name, s, e + 1, n, float(x[s, j]), limit) for s, e, n in flat.tolist()
        )
    return sorted(found, key=lambda f: (f.start, f.signal))


@dataclass(frozen=True)
class GrossReadings:
    """The ``rows`` at which ``signal`` read far outside its local band (``low`` to
    ``high``: the most extreme values among them), judged against ``spread``."""

    signal: str
    rows: tuple[int, ...]
    low: float
    high: float
    spread: float

    def to_json(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "readings": len(self.rows),
            "first_row": self.rows[0],
            "low": self.low,
            "high": self.high,
            "spread": self.spread,
        }


def gross_readings(
    values: npt.ArrayLike,
    segments: Sequence[tuple[int, int]],
    signals: Sequence[str],
    *,
    band_window: int = 9,
    z: float = GROSS_Z,
) -> list[GrossReadings]:
    """Per signal, the readings of a training history far outside the local band.

    The band is the sensor-health profile's: the median of the ``band_window`` readings
    before each one, and the MAD of the residuals from it as the spread (robust: a few
    hundred bad readings do not move it). A reading more than ``z`` spreads off is gross,
    and screened when its value is one that gross readings repeat exactly at least
    :data:`MIN_FILL_REPEATS` times (a fill value: 0.0, -9999), up to
    :data:`MAX_FILL_SHARE` of the signal's readings.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(10, 0.3, size=(2000, 1))
    >>> x[[100, 700, 1500]] = -9999.0  # a historian's "bad quality" sentinel
    >>> [(g.rows, g.low) for g in gross_readings(x, [(0, 2000)], ["temp"])]
    [((100, 700, 1500), -9999.0)]
    >>> gross_readings(rng.standard_t(3, size=(2000, 1)), [(0, 2000)], ["heavy"])
    []
    >>> x[::40] = 0.0  # 2.5 % of readings dropped out to 0 as well
    >>> [(len(g.rows), g.low, g.high) for g in gross_readings(x, [(0, 2000)], ["temp"])]
    [(52, -9999.0, 0.0)]
    >>> x[1000] = 55.0  # one far reading, never repeated: kept
    >>> 1000 in gross_readings(x, [(0, 2000)], ["temp"])[0].rows
    False
    """
    names = tuple(signals)
    x = _clean(values, len(names), "training values")
    spans = _check_segments(segments, x.shape[0])
    residual = np.full(x.shape, np.nan)
    for a, b in spans:
        residual[a:b] = np.abs(x[a:b] - _prev_median(x[a:b], band_window))
    found: list[GrossReadings] = []
    for j, name in enumerate(names):
        res = residual[:, j]
        finite = np.isfinite(res)
        if finite.sum() < 2 * band_window:
            continue
        spread = _MAD_TO_SIGMA * float(np.median(res[finite]))
        if spread == 0:
            spread = _MEAN_AD_TO_SIGMA * float(np.mean(res[finite]))
        if not spread > 0:
            continue
        with np.errstate(invalid="ignore"):
            rows = np.flatnonzero(res > z * spread)
        # Only a value written the same way again and again is screened: a fill value or a
        # sentinel. A heavy tail's own extremes never repeat exactly, and screening them
        # taught the model a tail lighter than the signal's (Student-t noise with 1.5-2
        # degrees of freedom: 26-63 false alerts in 8 streams against 5-9 unscreened).
        values, counts = np.unique(x[rows, j], return_counts=True)
        rows = rows[np.isin(x[rows, j], values[counts >= MIN_FILL_REPEATS])]
        if rows.size == 0 or rows.size > MAX_FILL_SHARE * finite.sum():
            continue
        vals = x[rows, j]
        found.append(
            GrossReadings(name, tuple(rows.tolist()), float(vals.min()), float(vals.max()), spread)
        )
    return found


def screened_rows(
    stretches: Sequence[FlatStretch], rows: int, gross: Sequence[GrossReadings] = ()
) -> npt.NDArray[np.bool_]:
    """A mask over ``rows`` rows: true inside any of ``stretches`` and at ``gross`` rows."""
    mask = np.zeros(rows, dtype=np.bool_)
    for s in stretches:
        mask[s.start : s.end] = True
    for g in gross:
        mask[list(g.rows)] = True
    return mask
