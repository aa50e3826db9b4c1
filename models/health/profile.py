"""What training saw, per signal: the :class:`SensorHealthProfile` the rules are relative to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from models.health.config import MIN_TRAINING_READINGS, STEP_MOVED_Z, STEP_WINDOW
from models.health.kernels import (
    F64,
    I64,
    Bools,
    _alone,
    _check_segments,
    _check_ts,
    _clean,
    _or_none,
    _prev_median,
    _previous_finite,
    _step_levels,
    _unchanged_runs,
)

PROFILE_VERSION: Final = 1

# Normal-consistency constants: MAD and mean absolute deviation to a Gaussian sigma.
_MAD_TO_SIGMA: Final = 1.4826
_MEAN_AD_TO_SIGMA: Final = 1.2533
_ENVELOPE_PERCENTILES: Final = (0.1, 99.9)
_TAIL_QUANTILES: Final = (0.99, 0.999)
_STEP_QUANTA: Final = 0.25


class _SignalJSON(msgspec.Struct, forbid_unknown_fields=True):
    signal: str
    readings: int
    step_tolerance: float
    longest_run: int
    changes_seen: bool
    longest_run_ms: float | None
    residual_scale: float | None
    residual_q99: float | None
    residual_q999: float | None
    low: float | None
    high: float | None
    # Added after version 1 shipped: a profile without them has no step rule.
    step_scale: float | None = None
    step_q99: float | None = None
    step_q999: float | None = None


class _ProfileJSON(msgspec.Struct, forbid_unknown_fields=True):
    version: int
    band_window: Annotated[int, msgspec.Meta(ge=3)]
    flat_tolerance: Annotated[float, msgspec.Meta(ge=0)]
    signals: list[_SignalJSON]
    step_window: Annotated[int, msgspec.Meta(ge=3)] | None = None


@dataclass(frozen=True, eq=False)
class SensorHealthProfile:
    """Per signal, what training saw: runs of unchanged values, band residuals, envelope.

    Arrays are per signal, in ``signals`` order; NaN means "not learned" (the rule is off).
    Build with :meth:`fit`; store with :meth:`to_json` (plain JSON, no NaN).

    >>> values = np.column_stack([np.arange(100.0), np.repeat([1.0, 2.0], 50)])
    >>> p = SensorHealthProfile.fit(values, [(0, 100)], ("ramp", "level"))
    >>> p.longest_run.tolist(), p.changes_seen.tolist()
    ([1, 50], [True, True])
    >>> SensorHealthProfile.from_json(p.to_json()).to_json() == p.to_json()
    True
    """

    signals: tuple[str, ...]
    #: Readings in the local band (median of the previous ``band_window`` readings).
    band_window: int
    #: A change smaller than this fraction of the signal's median non-zero step is none.
    flat_tolerance: float
    readings: I64
    #: The absolute tolerance for "unchanged" (``flat_tolerance`` x median non-zero step).
    step_tolerance: F64
    longest_run: I64
    #: Whether the value ever changed within a training segment (else: no stuck rule).
    changes_seen: Bools
    longest_run_ms: F64
    residual_scale: F64
    #: The 99th and 99.9th percentiles of |residual| in training (the tail guard's anchors).
    residual_q99: F64
    residual_q999: F64
    low: F64
    high: F64
    #: Readings in each of the step rule's two medians (``None``: no step rule, a profile
    #: trained before it existed).
    step_window: int | None
    #: The step (median of the last ``step_window`` readings minus the median of the
    #: ``step_window`` before) in training: its MAD-based scale, and the 99th and 99.9th
    #: percentiles of |step| over the rows where no other signal of the asset moved.
    step_scale: F64
    step_q99: F64
    step_q999: F64

    @classmethod
    def fit(
        cls,
        values: npt.ArrayLike,
        segments: Sequence[tuple[int, int]],
        signals: Sequence[str],
        *,
        ts_ms: npt.ArrayLike | None = None,
        band_window: int = 9,
        flat_tolerance: float = 0.01,
        step_window: int = STEP_WINDOW,
    ) -> SensorHealthProfile:
        """Learn the profile from raw training values (rows, signals), NaN for missing.

        ``segments`` are [start, end) row ranges contiguous in time: runs, steps and bands
        never reach across a segment boundary. ``ts_ms`` (rows,), when given, adds the
        longest unchanged duration to the stuck rule.
        """
        names = tuple(signals)
        x = _clean(values, len(names), "training values")
        rows, width = x.shape
        if band_window < 3:
            raise ValueError(f"band_window must be at least 3 readings, got {band_window}")
        if step_window < 3:
            raise ValueError(f"step_window must be at least 3 readings, got {step_window}")
        if not flat_tolerance >= 0:
            raise ValueError(f"flat_tolerance must be >= 0, got {flat_tolerance}")
        spans = _check_segments(segments, rows)
        stamps = None if ts_ms is None else _check_ts(ts_ms, rows)
        none = np.full(width, np.nan)

        steps, residuals, blocks = [], [], []
        level_low = np.full(width, np.inf)
        level_high = np.full(width, -np.inf)
        for start, end in spans:
            block = x[start:end]
            prev, _ = _previous_finite(block, none)
            steps.append(np.abs(block - prev))
            med = _prev_median(block, band_window)
            residuals.append(np.abs(block - med))
            level_low = np.minimum(level_low, np.where(np.isfinite(med), med, np.inf).min(0))
            level_high = np.maximum(level_high, np.where(np.isfinite(med), med, -np.inf).max(0))
            blocks.append(block)
        raw = np.vstack(blocks)
        step_all = np.vstack(steps)
        residual_all = np.vstack(residuals)
        readings = np.isfinite(raw).sum(axis=0).astype(np.int64)

        quantum = np.full(width, np.nan)
        scale = np.full(width, np.nan)
        q99 = np.full(width, np.nan)
        q999 = np.full(width, np.nan)
        low = np.full(width, np.nan)
        high = np.full(width, np.nan)
        for j in range(width):
            if readings[j] < MIN_TRAINING_READINGS:
                continue
            step = step_all[:, j]
            moved = step[np.isfinite(step) & (step > 0)]
            if moved.size:
                quantum[j] = float(np.median(moved))
            res = residual_all[:, j]
            res = res[np.isfinite(res)]
            if res.size >= MIN_TRAINING_READINGS and moved.size:
                sigma = _MAD_TO_SIGMA * float(np.median(res))
                if sigma == 0:  # mostly exact repeats: the mean still sees the moves
                    sigma = _MEAN_AD_TO_SIGMA * float(np.mean(res))
                scale[j] = max(sigma, quantum[j])
                q99[j], q999[j] = np.quantile(res, _TAIL_QUANTILES)
            col = raw[:, j]
            p_low, p_high = np.percentile(col[np.isfinite(col)], _ENVELOPE_PERCENTILES)
            low[j] = min(float(p_low), float(level_low[j]))
            high[j] = max(float(p_high), float(level_high[j]))
        tolerance = np.where(np.isfinite(quantum), flat_tolerance * quantum, 0.0)

        longest = np.zeros(width, np.int64)
        longest_ms = np.full(width, -np.inf if stamps is not None else np.nan)
        changes = np.zeros(width, np.bool_)
        for start, end in spans:
            block = x[start:end]
            seg_ts = None if stamps is None else stamps[start:end]
            length, began, changed, _ = _unchanged_runs(
                block, seg_ts, tolerance, none, np.zeros(width, np.int64), none
            )
            fin = np.isfinite(block)
            longest = np.maximum(longest, np.where(fin, length, 0).max(axis=0, initial=0))
            if seg_ts is not None:
                lasted = np.where(fin, seg_ts[:, None] - began, -np.inf)
                longest_ms = np.maximum(longest_ms, lasted.max(axis=0, initial=-np.inf))
            first = np.cumsum(fin, axis=0) == 1
            changes |= (changed & ~first).any(axis=0)
        enough = readings >= MIN_TRAINING_READINGS
        longest_ms = np.where(np.isfinite(longest_ms), longest_ms, np.nan)
        step_scale, step_q99, step_q999 = _step_profile(x, spans, step_window, quantum)
        return cls(
            signals=names,
            band_window=int(band_window),
            flat_tolerance=float(flat_tolerance),
            readings=readings,
            step_tolerance=tolerance,
            longest_run=longest,
            changes_seen=changes & enough,
            longest_run_ms=longest_ms,
            residual_scale=scale,
            residual_q99=q99,
            residual_q999=q999,
            low=low,
            high=high,
            step_window=int(step_window),
            step_scale=step_scale,
            step_q99=step_q99,
            step_q999=step_q999,
        )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able data (``null`` for what was not learned), versioned."""
        per_signal = [
            _SignalJSON(
                signal=name,
                readings=int(self.readings[j]),
                step_tolerance=float(self.step_tolerance[j]),
                longest_run=int(self.longest_run[j]),
                changes_seen=bool(self.changes_seen[j]),
                longest_run_ms=_or_none(self.longest_run_ms[j]),
                residual_scale=_or_none(self.residual_scale[j]),
                residual_q99=_or_none(self.residual_q99[j]),
                residual_q999=_or_none(self.residual_q999[j]),
                low=_or_none(self.low[j]),
                high=_or_none(self.high[j]),
                step_scale=_or_none(self.step_scale[j]),
                step_q99=_or_none(self.step_q99[j]),
                step_q999=_or_none(self.step_q999[j]),
            )
            for j, name in enumerate(self.signals)
        ]
        doc = _ProfileJSON(
            PROFILE_VERSION, self.band_window, self.flat_tolerance, per_signal, self.step_window
        )
        return msgspec.to_builtins(doc)  # type: ignore[no-any-return]

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> SensorHealthProfile:
        """Rebuild a profile from :meth:`to_json`; ``ValueError`` naming what is wrong."""
        if obj.get("version") != PROFILE_VERSION:
            raise ValueError(
                f"sensor-health profile has version {obj.get('version')!r}; this plantwatch "
                f"reads version {PROFILE_VERSION}. Retrain the model to rebuild the profile."
            )
        try:
            doc = msgspec.convert(dict(obj), _ProfileJSON)
        except msgspec.ValidationError as exc:
            raise ValueError(f"sensor-health profile is damaged: {exc}") from exc
        s = doc.signals
        if len({p.signal for p in s}) != len(s):
            raise ValueError("sensor-health profile is damaged: a signal appears twice")

        def column(name: str) -> F64:
            return np.array(
                [np.nan if getattr(p, name) is None else getattr(p, name) for p in s], np.float64
            )

        return cls(
            signals=tuple(p.signal for p in s),
            band_window=doc.band_window,
            flat_tolerance=doc.flat_tolerance,
            readings=np.array([p.readings for p in s], np.int64),
            step_tolerance=np.array([p.step_tolerance for p in s], np.float64),
            longest_run=np.array([p.longest_run for p in s], np.int64),
            changes_seen=np.array([p.changes_seen for p in s], np.bool_),
            longest_run_ms=column("longest_run_ms"),
            residual_scale=column("residual_scale"),
            residual_q99=column("residual_q99"),
            residual_q999=column("residual_q999"),
            low=column("low"),
            high=column("high"),
            step_window=doc.step_window,
            step_scale=column("step_scale"),
            step_q99=column("step_q99"),
            step_q999=column("step_q999"),
        )


def _step_profile(
    x: F64, spans: Sequence[tuple[int, int]], window: int, quantum: F64
) -> tuple[F64, F64, F64]:
    """The step rule's scale and tail per signal (NaN: no rule), from training's steps.

    The scale is MAD-based (1.4826 x median |step|; the mean |step| x 1.2533 where most
    steps are 0), never below a quarter of the signal's median non-zero change (so with
    ``step_z`` 10 a step of one or two quanta of a quantised signal never fires; a median
    of several readings moves far less than one reading does, so the full change would
    blunt the rule on noisy signals). The tail is taken over
    the rows where no other signal moved more than :data:`STEP_MOVED_Z` scales: what the
    rule judges (a signal that moves alone), so a signal that follows the process with a
    lag (a temperature after a load change) brings its own large steps into the tail.
    """
    width = x.shape[1]
    steps = []
    for start, end in spans:
        before, after = _step_levels(x[start:end], window)
        steps.append(after - before)
    step = np.abs(np.vstack(steps))
    scale = np.full(width, np.nan)
    q99 = np.full(width, np.nan)
    q999 = np.full(width, np.nan)
    for j in range(width):
        col = step[:, j]
        col = col[np.isfinite(col)]
        if col.size < MIN_TRAINING_READINGS or not np.isfinite(quantum[j]):
            continue
        sigma = _MAD_TO_SIGMA * float(np.median(col))
        if sigma == 0:
            sigma = _MEAN_AD_TO_SIGMA * float(np.mean(col))
        scale[j] = max(sigma, _STEP_QUANTA * float(quantum[j]))
    with np.errstate(invalid="ignore"):
        moved = np.nan_to_num(step / scale) > STEP_MOVED_Z
    alone = _alone(moved, width)
    for j in range(width):
        if not np.isfinite(scale[j]):
            continue
        col = step[alone[:, j], j]
        col = col[np.isfinite(col)]
        if col.size < MIN_TRAINING_READINGS:
            scale[j] = np.nan
            continue
        q99[j], q999[j] = np.quantile(col, _TAIL_QUANTILES)
    return scale, q99, q999
