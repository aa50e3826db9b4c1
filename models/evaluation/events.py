"""Event-wise metrics: what an operator experiences. A labelled event (a maximal run of labelled
rows) is detected when one predicted row falls inside it; a predicted event (a run of predicted
rows) is a false event when it touches no labelled event. Also here, because they are measured
on the same runs: point-adjusted F1, detection delay and false alarms per day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from models.evaluation.inputs import BoolArray, IntArray, Metric
from models.evaluation.points import _f1, _Points, _ratio

EdgeMode = Literal["onset", "both"]

MS_PER_DAY: Final = 86_400_000


def runs(mask: npt.ArrayLike) -> tuple[IntArray, IntArray]:
    """Maximal runs of true rows as ``(starts, ends)``: row indices, start inclusive, end
    exclusive. These are the events of a label or prediction column.

    >>> starts, ends = runs([0, 1, 1, 0, 1])
    >>> starts.tolist(), ends.tolist()
    ([1, 4], [3, 5])
    """
    arr = np.asarray(mask, dtype=np.bool_)
    padded = np.zeros(arr.size + 2, dtype=np.int8)
    padded[1:-1] = arr
    step = np.diff(padded)
    return np.flatnonzero(step == 1).astype(np.int64), np.flatnonzero(step == -1).astype(np.int64)


def _edges(mask: BoolArray, mode: EdgeMode) -> IntArray:
    """Rows where the column switches on (``onset``) or switches at all (``both``).

    ``both`` is SKAB's ``abs(prediction.diff())`` with the first row taken as is: the row where
    a run starts and the first row after it ends.
    """
    starts, ends = runs(mask)
    if mode == "onset":
        return starts
    if mode == "both":
        return np.union1d(starts, ends[ends < mask.size]).astype(np.int64)
    raise ValueError(f"edges must be 'onset' or 'both', got {mode!r}")


def _event_f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None and recall is None:
        return None
    p = precision or 0.0
    r = recall or 0.0
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


@dataclass
class _Events:
    """Event counts, delays and time span of some rows; they add up across assets."""

    pa_tp: int = 0  # point-adjusted true positives; FP and TN are unchanged by the adjustment
    events_labelled: int = 0
    events_detected: int = 0
    events_predicted: int = 0
    events_false: int = 0
    delays_rows: list[IntArray] = field(default_factory=list)
    delays_ms: list[IntArray] = field(default_factory=list)
    span_ms: int = 0

    def add(self, other: _Events) -> None:
        self.pa_tp += other.pa_tp
        self.events_labelled += other.events_labelled
        self.events_detected += other.events_detected
        self.events_predicted += other.events_predicted
        self.events_false += other.events_false
        self.delays_rows.extend(other.delays_rows)
        self.delays_ms.extend(other.delays_ms)
        self.span_ms += other.span_ms


def _events(lab: BoolArray, pred: BoolArray, ts: IntArray | None, *, tolerance_ms: int) -> _Events:
    n = lab.size
    e = _Events()
    starts, ends = runs(lab)
    p_starts, p_ends = runs(pred)
    e.events_labelled = int(starts.size)
    e.events_predicted = int(p_starts.size)

    # Point adjustment (Xu et al. 2018) on the labelled segments themselves, no tolerance.
    pred_cum = np.concatenate(([0], np.cumsum(pred, dtype=np.int64)))
    touched = pred_cum[ends] - pred_cum[starts] > 0
    e.pa_tp = int((ends - starts)[touched].sum())

    # Labelled events, each stretched by the tolerance after its last row.
    if tolerance_ms > 0 and ts is not None and starts.size:
        ext_ends = np.searchsorted(ts, ts[ends - 1] + tolerance_ms, side="right").astype(np.int64)
    else:
        ext_ends = ends
    pred_rows = np.flatnonzero(pred).astype(np.int64)
    first = np.searchsorted(pred_rows, starts, side="left")
    found = first < pred_rows.size
    detected = np.zeros(starts.size, dtype=np.bool_)
    detected[found] = pred_rows[first[found]] < ext_ends[found]
    e.events_detected = int(detected.sum())
    first_row = pred_rows[first[detected]]
    e.delays_rows.append(first_row - starts[detected])
    if ts is not None:
        e.delays_ms.append(ts[first_row] - ts[starts[detected]])
        e.span_ms = int(ts[-1] - ts[0]) if n else 0

    # A predicted event is false when it overlaps no (stretched) labelled event.
    cover = np.bincount(starts, minlength=n + 1) - np.bincount(ext_ends, minlength=n + 1)
    covered = np.cumsum(cover[:n]) > 0
    cover_cum = np.concatenate(([0], np.cumsum(covered, dtype=np.int64)))
    e.events_false = int((cover_cum[p_ends] - cover_cum[p_starts] == 0).sum())
    return e


def _event_summary(e: _Events, points: _Points, *, has_ts: bool) -> dict[str, Metric]:
    positives = points.tp + points.fn
    event_precision = _ratio(e.events_predicted - e.events_false, e.events_predicted)
    event_recall = _ratio(e.events_detected, e.events_labelled)
    delays_rows = np.concatenate(e.delays_rows) if e.delays_rows else np.zeros(0, np.int64)
    delays_ms = np.concatenate(e.delays_ms) if e.delays_ms else np.zeros(0, np.int64)

    def stat(values: IntArray, how: Literal["median", "mean"], timed: bool = False) -> float | None:
        if values.size == 0 or (timed and not has_ts):
            return None
        return float(np.median(values) if how == "median" else np.mean(values))

    return {
        "events_labelled": e.events_labelled,
        "events_detected": e.events_detected,
        "events_missed": e.events_labelled - e.events_detected,
        "events_predicted": e.events_predicted,
        "events_false": e.events_false,
        "event_precision": event_precision,
        "event_recall": event_recall,
        "event_f1": _event_f1(event_precision, event_recall),
        "point_adjusted_f1_optimistic": _f1(e.pa_tp, points.fp, positives - e.pa_tp),
        "detection_delay_rows_median": stat(delays_rows, "median"),
        "detection_delay_rows_mean": stat(delays_rows, "mean"),
        "detection_delay_ms_median": stat(delays_ms, "median", timed=True),
        "detection_delay_ms_mean": stat(delays_ms, "mean", timed=True),
        "span_days": e.span_ms / MS_PER_DAY if has_ts else None,
        "false_alarms_per_day": (
            e.events_false / (e.span_ms / MS_PER_DAY) if has_ts and e.span_ms > 0 else None
        ),
    }
