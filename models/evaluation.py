"""Scoring a detector's 0/1 predictions against 0/1 labels, the way backtests report it.

Every function takes aligned 1-D arrays, one entry per row: ``labels`` (1 = the row lies in a
labelled anomaly), ``predictions`` (1 = the detector called the row anomalous), optionally
``ts_ms`` (epoch milliseconds, int64), ``scores`` and ``assets``. Rows are in time order within
each asset; with ``assets`` the rows of different assets may interleave (as a replayed topic
does), and events never span two assets.

Families of metrics, because no single number describes a detector honestly:

- point-wise: precision, recall, F1, and SKAB's false / missed alarm rates in percent;
- event-wise: a labelled event (a maximal run of labelled rows) is detected when one predicted
  row falls inside it; a predicted event (a run of predicted rows) is a false event when it
  touches no labelled event. This is what an operator experiences;
- point-adjusted F1 (optimistic on purpose, see ``evaluate``), detection delay, false alarms per
  day;
- NAB scores as SKAB computes them (see ``nab_score``);
- ROC AUC of the raw score, which needs no threshold.

A ratio whose denominator is zero (0/0: precision with nothing predicted, recall with nothing
labelled, …) is ``None`` rather than a made-up 0 or 1, so a JSON report shows ``null`` where a
quantity is undefined. F1 is ``2·TP / (2·TP + FP + FN)``, defined whenever anything was labelled
or predicted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Metric = float | int | str | None
EdgeMode = Literal["onset", "both"]
OverlapMode = Literal["cut_right", "cut_left"]

MS_PER_DAY: Final = 86_400_000


@dataclass(frozen=True)
class NabProfile:
    """Weights of one NAB application profile: reward of a detection at the changepoint
    (``a_tp``), cost of an alarm outside every window (``a_fp``), cost of a missed window
    (``a_fn``).

    >>> NAB_PROFILES["low_fn"].a_fn
    -2.0
    """

    a_tp: float
    a_fp: float
    a_fn: float


# The default ``table_of_coef`` of SKAB's ``single_evaluate_nab`` (waico/SKAB, core/metrics.py),
# which are NAB's own profiles (Lavin & Ahmad 2015); A_tn is unused by the score.
NAB_PROFILES: Final[dict[str, NabProfile]] = {
    "standard": NabProfile(a_tp=1.0, a_fp=-0.11, a_fn=-1.0),
    "low_fp": NabProfile(a_tp=1.0, a_fp=-0.22, a_fn=-1.0),
    "low_fn": NabProfile(a_tp=1.0, a_fp=-0.11, a_fn=-2.0),
}

# SKAB's ``my_scale`` samples its scoring curve at this many points across a window.
_NAB_DETAIL: Final = 1000


@dataclass(frozen=True)
class _NabConfig:
    window_ms: int
    edges: EdgeMode
    overlap: OverlapMode

    def __post_init__(self) -> None:
        if self.window_ms <= 0:
            raise ValueError(f"the NAB window must be positive, got {self.window_ms} ms")
        if self.edges not in ("onset", "both"):
            raise ValueError(f"NAB edges must be 'onset' or 'both', got {self.edges!r}")
        if self.overlap not in ("cut_right", "cut_left"):
            raise ValueError(f"NAB overlap must be 'cut_right' or 'cut_left', got {self.overlap!r}")


# ---------------------------------------------------------------------------------------------
# input checks


def _as_binary(name: str, values: npt.ArrayLike, rows: int | None = None) -> BoolArray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of 0/1 per row, got shape {arr.shape}")
    if rows is not None and arr.shape[0] != rows:
        raise ValueError(
            f"{name} has {arr.shape[0]} rows but labels has {rows}; pass arrays aligned row by row"
        )
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be bool or numeric 0/1, got dtype {arr.dtype}")
    bad = (arr != 0) & (arr != 1)  # NaN is not 0 and not 1, so it lands here too
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must hold only 0 and 1; row {first} holds {arr[first]!r} "
            "(threshold scores into 0/1 first, and fill missing rows with 0)"
        )
    return np.asarray(arr == 1)


def _as_ts(ts_ms: npt.ArrayLike, rows: int) -> IntArray:
    arr = np.asarray(ts_ms)
    if arr.ndim != 1 or arr.shape[0] != rows:
        raise ValueError(
            f"ts_ms must be a 1-D array with one timestamp per row ({rows}), got shape {arr.shape}"
        )
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError("ts_ms holds NaN or infinity; every row needs a timestamp")
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"ts_ms must be integer epoch milliseconds, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_time_order(ts: IntArray, asset: str | None) -> None:
    if ts.size > 1:
        back = np.flatnonzero(np.diff(ts) < 0)
        if back.size:
            where = f" of asset {asset!r}" if asset is not None else ""
            raise ValueError(
                f"ts_ms must not decrease within an asset: row {int(back[0]) + 1}{where} is "
                "earlier than the row before it; sort by (asset, ts_ms) first"
            )


def _groups(assets: npt.ArrayLike | None, rows: int) -> Iterator[tuple[str | None, IntArray]]:
    """Yield (asset, row indices in their original order) per asset; one group if no assets."""
    if assets is None:
        yield None, np.arange(rows, dtype=np.int64)
        return
    arr = np.asarray(assets)
    if arr.ndim != 1 or arr.shape[0] != rows:
        raise ValueError(
            f"assets must be a 1-D array with one asset id per row ({rows}), got shape {arr.shape}"
        )
    keys, inverse = np.unique(arr, return_inverse=True)
    # A stable sort keeps each asset's rows in their given (time) order.
    order = np.argsort(inverse, kind="stable").astype(np.int64)
    bounds = np.concatenate(([0], np.cumsum(np.bincount(inverse, minlength=keys.size))))
    for i, key in enumerate(keys):
        yield str(key), order[bounds[i] : bounds[i + 1]]


# ---------------------------------------------------------------------------------------------
# building blocks


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


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


def _f1(tp: int, fp: int, fn: int) -> float | None:
    return _ratio(2 * tp, 2 * tp + fp + fn)


def _event_f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None and recall is None:
        return None
    p = precision or 0.0
    r = recall or 0.0
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _nab_curve(profile: NabProfile) -> FloatArray:
    # SKAB's ``my_scale`` (waico/SKAB, core/metrics.py) with koef=1 and clear_anomalies_mode:
    # a tanh, i.e. a scaled sigmoid, running from A_tp at the window start to A_fp at its end.
    # Kept as written there so scores agree to the last bit that matters.
    x = np.linspace(-np.pi / 2, np.pi / 2, _NAB_DETAIL)
    span = profile.a_tp - profile.a_fp
    curve: FloatArray = span / 2 * -1 * np.tanh(x) / np.tanh(np.pi / 2) + span / 2 + profile.a_fp
    return curve


@dataclass
class _Nab:
    """Additive NAB tallies: raw, null-detector and perfect-detector scores per profile."""

    score: FloatArray = field(default_factory=lambda: np.zeros(len(NAB_PROFILES)))
    null: FloatArray = field(default_factory=lambda: np.zeros(len(NAB_PROFILES)))
    perfect: FloatArray = field(default_factory=lambda: np.zeros(len(NAB_PROFILES)))
    changepoints: int = 0
    alarms: int = 0
    missed: int = 0
    false_positives: int = 0

    def add(self, other: _Nab) -> None:
        self.score = self.score + other.score
        self.null = self.null + other.null
        self.perfect = self.perfect + other.perfect
        self.changepoints += other.changepoints
        self.alarms += other.alarms
        self.missed += other.missed
        self.false_positives += other.false_positives

    def normalised(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for i, name in enumerate(NAB_PROFILES):
            den = self.perfect[i] - self.null[i]
            out[name] = None if den == 0 else float(100 * (self.score[i] - self.null[i]) / den)
        return out


def _nab_one(changepoint_ts: IntArray, alarm_ts: IntArray, config: _NabConfig) -> _Nab:
    """SKAB's ``single_evaluate_nab`` for one series, given sorted changepoint and alarm times."""
    n_cp = changepoint_ts.size
    out = _Nab(changepoints=n_cp, alarms=int(alarm_ts.size))
    # Windows to the right of each changepoint ("righter"). Where one reaches the next window's
    # start, SKAB's "cut right window" moves the next start to the earlier end, and its "cut
    # left window" moves the earlier end to the next start. Each test uses the uncut values,
    # as SKAB's loop does.
    starts = changepoint_ts.astype(np.int64).copy()
    ends = starts + np.int64(config.window_ms)
    if n_cp > 1:
        touching = ends[:-1] >= starts[1:]
        if config.overlap == "cut_right":
            starts[1:] = np.where(touching, ends[:-1], starts[1:])
        else:
            ends[:-1] = np.where(touching, starts[1:], ends[:-1])

    if alarm_ts.size and n_cp:
        first = np.searchsorted(alarm_ts, starts, side="left")
        found = first < alarm_ts.size
        hit = np.zeros(n_cp, dtype=np.bool_)
        hit[found] = alarm_ts[first[found]] <= ends[found]
        window = np.searchsorted(starts, alarm_ts, side="right") - 1
        inside = (window >= 0) & (alarm_ts <= ends[np.maximum(window, 0)])
        false_positives = int((~inside).sum())
        width = (ends - starts)[hit].astype(np.float64)
        offset = (alarm_ts[first[hit]] - starts[hit]).astype(np.float64)
        # int((t - t1) / (t2 - t1) * 1000) as in SKAB; a zero-width window (two changepoints
        # at the same instant) scores its detection as immediate instead of dividing by zero.
        position = np.zeros(width.size, dtype=np.int64)
        wide = width > 0
        position[wide] = np.floor(offset[wide] / width[wide] * _NAB_DETAIL).astype(np.int64)
        position = np.minimum(position, _NAB_DETAIL - 1)
    else:
        hit = np.zeros(n_cp, dtype=np.bool_)
        false_positives = int(alarm_ts.size)
        position = np.zeros(0, dtype=np.int64)

    missed = int(n_cp - hit.sum())
    out.missed = missed
    out.false_positives = false_positives
    for i, profile in enumerate(NAB_PROFILES.values()):
        curve = _nab_curve(profile)
        score = profile.a_fp * false_positives + profile.a_fn * missed
        score += float(curve[position].sum())
        out.score[i] = score
        out.null[i] = n_cp * profile.a_fn
        out.perfect[i] = n_cp * profile.a_tp
    return out


# ---------------------------------------------------------------------------------------------
# per-asset tallies that add up across assets


@dataclass
class _Tally:
    rows: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    pa_tp: int = 0  # point-adjusted true positives; FP and TN are unchanged by the adjustment
    events_labelled: int = 0
    events_detected: int = 0
    events_predicted: int = 0
    events_false: int = 0
    delays_rows: list[IntArray] = field(default_factory=list)
    delays_ms: list[IntArray] = field(default_factory=list)
    span_ms: int = 0
    nab: _Nab = field(default_factory=_Nab)

    def add(self, other: _Tally) -> None:
        for name in (
            "rows",
            "tp",
            "fp",
            "fn",
            "tn",
            "pa_tp",
            "events_labelled",
            "events_detected",
            "events_predicted",
            "events_false",
            "span_ms",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.delays_rows.extend(other.delays_rows)
        self.delays_ms.extend(other.delays_ms)
        self.nab.add(other.nab)


def _tally(
    lab: BoolArray,
    pred: BoolArray,
    ts: IntArray | None,
    changepoints: BoolArray | None,
    *,
    tolerance_ms: int,
    nab: _NabConfig,
) -> _Tally:
    n = lab.size
    t = _Tally(rows=n)
    t.tp = int((lab & pred).sum())
    t.fp = int((~lab & pred).sum())
    t.fn = int((lab & ~pred).sum())
    t.tn = n - t.tp - t.fp - t.fn

    starts, ends = runs(lab)
    p_starts, p_ends = runs(pred)
    t.events_labelled = int(starts.size)
    t.events_predicted = int(p_starts.size)

    # Point adjustment (Xu et al. 2018) on the labelled segments themselves, no tolerance.
    pred_cum = np.concatenate(([0], np.cumsum(pred, dtype=np.int64)))
    touched = pred_cum[ends] - pred_cum[starts] > 0
    t.pa_tp = int((ends - starts)[touched].sum())

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
    t.events_detected = int(detected.sum())
    first_row = pred_rows[first[detected]]
    t.delays_rows.append(first_row - starts[detected])
    if ts is not None:
        t.delays_ms.append(ts[first_row] - ts[starts[detected]])
        t.span_ms = int(ts[-1] - ts[0]) if n else 0

    # A predicted event is false when it overlaps no (stretched) labelled event.
    cover = np.bincount(starts, minlength=n + 1) - np.bincount(ext_ends, minlength=n + 1)
    covered = np.cumsum(cover[:n]) > 0
    cover_cum = np.concatenate(([0], np.cumsum(covered, dtype=np.int64)))
    t.events_false = int((cover_cum[p_ends] - cover_cum[p_starts] == 0).sum())

    if ts is not None:
        cp_rows = (
            np.flatnonzero(changepoints) if changepoints is not None else _edges(lab, nab.edges)
        )
        t.nab = _nab_one(ts[cp_rows], ts[_edges(pred, nab.edges)], nab)
    return t


def _summary(t: _Tally, *, has_ts: bool) -> dict[str, Metric]:
    positives = t.tp + t.fn
    negatives = t.fp + t.tn
    event_precision = _ratio(t.events_predicted - t.events_false, t.events_predicted)
    event_recall = _ratio(t.events_detected, t.events_labelled)
    delays_rows = np.concatenate(t.delays_rows) if t.delays_rows else np.zeros(0, np.int64)
    delays_ms = np.concatenate(t.delays_ms) if t.delays_ms else np.zeros(0, np.int64)
    nab = t.nab.normalised() if has_ts else dict.fromkeys(NAB_PROFILES)

    def stat(values: IntArray, how: Literal["median", "mean"], timed: bool = False) -> float | None:
        if values.size == 0 or (timed and not has_ts):
            return None
        return float(np.median(values) if how == "median" else np.mean(values))

    return {
        "rows": t.rows,
        "labelled_rows": positives,
        "predicted_rows": t.tp + t.fp,
        "tp": t.tp,
        "fp": t.fp,
        "fn": t.fn,
        "tn": t.tn,
        "precision": _ratio(t.tp, t.tp + t.fp),
        "recall": _ratio(t.tp, positives),
        "f1": _f1(t.tp, t.fp, t.fn),
        # SKAB's definitions (waico/SKAB, core/metrics.py, chp_score metric="binary"):
        # far = FP / (FP + TN) * 100, mar = FN / (FN + TP) * 100 (SKAB also rounds to 2 places).
        "far_pct": None if negatives == 0 else t.fp / negatives * 100,
        "mar_pct": None if positives == 0 else t.fn / positives * 100,
        "events_labelled": t.events_labelled,
        "events_detected": t.events_detected,
        "events_missed": t.events_labelled - t.events_detected,
        "events_predicted": t.events_predicted,
        "events_false": t.events_false,
        "event_precision": event_precision,
        "event_recall": event_recall,
        "event_f1": _event_f1(event_precision, event_recall),
        "point_adjusted_f1_optimistic": _f1(t.pa_tp, t.fp, positives - t.pa_tp),
        "detection_delay_rows_median": stat(delays_rows, "median"),
        "detection_delay_rows_mean": stat(delays_rows, "mean"),
        "detection_delay_ms_median": stat(delays_ms, "median", timed=True),
        "detection_delay_ms_mean": stat(delays_ms, "mean", timed=True),
        "span_days": t.span_ms / MS_PER_DAY if has_ts else None,
        "false_alarms_per_day": (
            t.events_false / (t.span_ms / MS_PER_DAY) if has_ts and t.span_ms > 0 else None
        ),
        "nab_standard": nab["standard"],
        "nab_low_fp": nab["low_fp"],
        "nab_low_fn": nab["low_fn"],
        "nab_changepoints": t.nab.changepoints if has_ts else None,
        "nab_alarms": t.nab.alarms if has_ts else None,
        "nab_missed_changepoints": t.nab.missed if has_ts else None,
        "nab_false_positives": t.nab.false_positives if has_ts else None,
    }


@dataclass(frozen=True)
class _Inputs:
    labels: BoolArray
    predictions: BoolArray
    ts: IntArray | None
    changepoints: BoolArray | None


def _prepare(
    labels: npt.ArrayLike,
    predictions: npt.ArrayLike,
    ts_ms: npt.ArrayLike | None,
    changepoints: npt.ArrayLike | None,
    tolerance_ms: int,
) -> _Inputs:
    lab = _as_binary("labels", labels)
    pred = _as_binary("predictions", predictions, lab.size)
    ts = _as_ts(ts_ms, lab.size) if ts_ms is not None else None
    cps = _as_binary("changepoints", changepoints, lab.size) if changepoints is not None else None
    if tolerance_ms < 0:
        raise ValueError(f"tolerance_ms must be 0 or more, got {tolerance_ms}")
    if tolerance_ms > 0 and ts is None:
        raise ValueError("tolerance_ms needs ts_ms: pass the row timestamps, or tolerance_ms=0")
    return _Inputs(lab, pred, ts, cps)


def _tally_groups(
    inputs: _Inputs,
    assets: npt.ArrayLike | None,
    tolerance_ms: int,
    nab: _NabConfig,
) -> Iterator[tuple[str | None, IntArray, _Tally]]:
    for asset, rows in _groups(assets, inputs.labels.size):
        ts = inputs.ts[rows] if inputs.ts is not None else None
        if ts is not None:
            _check_time_order(ts, asset)
        cps = inputs.changepoints[rows] if inputs.changepoints is not None else None
        tally = _tally(
            inputs.labels[rows],
            inputs.predictions[rows],
            ts,
            cps,
            tolerance_ms=tolerance_ms,
            nab=nab,
        )
        yield asset, rows, tally


# ---------------------------------------------------------------------------------------------
# public API


def auc_roc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float | None:
    """Area under the ROC curve of ``scores`` against ``labels``: the chance that a random
    labelled row scores above a random normal row, ties counting one half (Mann–Whitney U with
    average ranks). A check of the score itself, free of any threshold.

    Rows whose score is NaN (windows not yet full) are left out. ``None`` when either class is
    empty.

    >>> auc_roc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> auc_roc([0, 1], [2.0, 2.0])
    0.5
    """
    lab = _as_binary("labels", labels)
    sc = np.asarray(scores, dtype=np.float64)
    if sc.shape != lab.shape:
        raise ValueError(f"scores has shape {sc.shape} but labels has {lab.shape}; align them")
    keep = ~np.isnan(sc)
    lab, sc = lab[keep], sc[keep]
    n_pos = int(lab.sum())
    n_neg = lab.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(sc, return_inverse=True, return_counts=True)
    top = np.cumsum(counts)
    mean_rank = top - (counts - 1) / 2.0  # 1-based ranks; a tie group shares its mean rank
    rank_sum = float(mean_rank[inverse][lab].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def nab_score(
    labels: npt.ArrayLike,
    predictions: npt.ArrayLike,
    ts_ms: npt.ArrayLike,
    *,
    window_ms: int = 60_000,
    changepoints: npt.ArrayLike | None = None,
    edges: EdgeMode = "onset",
    overlap: OverlapMode = "cut_right",
    assets: npt.ArrayLike | None = None,
) -> dict[str, float | None]:
    """NAB scores (Lavin & Ahmad 2015) as SKAB computes them for its changepoint leaderboard,
    normalised so the null detector scores 0 and the perfect detector 100, per profile
    (``standard``, ``low_fp``, ``low_fn``; weights in ``NAB_PROFILES``).

    Follows ``chp_score(metric="nab", anomaly_window_destination="righter",
    window_width=window_ms, intersection_mode="cut right window", clear_anomalies_mode=True,
    scale_func="improved", scale_koef=1)`` in waico/SKAB ``core/metrics.py``:

    - a window ``[cp, cp + window_ms]`` (both ends included) opens at each true changepoint;
      where a window reaches the next changepoint, ``overlap="cut_right"`` (SKAB's default)
      makes the next window start where the earlier one ends, and ``"cut_left"`` (SKAB's
      "cut left window") ends the earlier one at the next changepoint. Beware: with
      ``cut_right``, changepoints closer than ``window_ms`` cost even a perfect detector its
      later windows (its alarm at the later changepoint is a second alarm in the earlier
      window and the later window is missed); ``cut_left`` keeps the perfect score at 100;
    - the first alarm in a window earns SKAB's tanh curve (a scaled sigmoid) sampled at 1000
      points, ``A_tp`` at the changepoint falling to ``A_fp`` at the window end; later alarms
      in the same window count for nothing;
    - a window without an alarm costs ``A_fn``; each alarm outside every window costs ``A_fp``;
    - raw, null (``n·A_fn``) and perfect (``n·A_tp``) scores are summed over assets before
      ``100 · (raw − null) / (perfect − null)``.

    Inputs: true changepoints are the rows marked in ``changepoints`` (e.g. SKAB's own
    ``changepoint`` column) or, without it, the edges of ``labels``; alarms are the edges of
    ``predictions``. ``edges="onset"`` (default) takes the rows where a column turns on, which
    is what an alert is; ``edges="both"`` also takes the first row after a run ends, as SKAB's
    notebooks derive predicted changepoints (``abs(prediction.diff())``) — use it to reproduce
    SKAB's leaderboard.

    Differences from SKAB: results are not rounded to 2 places; a profile is ``None`` (SKAB
    divides by zero) when no changepoint exists; a zero-width window (two changepoints at one
    instant) scores its alarm as immediate instead of failing. Differences from the original
    NAB: SKAB's curve and flat FP cost replace NAB's sigmoid of relative position and its
    distance-scaled FP cost, and windows sit right of the changepoint, not centred on it.

    >>> labels = [0, 0, 1, 1, 0, 0]
    >>> ts = [0, 1_000, 2_000, 3_000, 4_000, 5_000]
    >>> nab_score(labels, labels, ts)["standard"]
    100.0
    >>> nab_score(labels, [0] * 6, ts)["low_fn"]
    0.0
    """
    config = _NabConfig(window_ms, edges, overlap)
    inputs = _prepare(labels, predictions, ts_ms, changepoints, 0)
    total = _Nab()
    for _, _, tally in _tally_groups(inputs, assets, 0, config):
        total.add(tally.nab)
    return total.normalised()


def evaluate(
    labels: npt.ArrayLike,
    predictions: npt.ArrayLike,
    *,
    ts_ms: npt.ArrayLike | None = None,
    scores: npt.ArrayLike | None = None,
    assets: npt.ArrayLike | None = None,
    tolerance_ms: int = 0,
    nab_window_ms: int = 60_000,
    nab_changepoints: npt.ArrayLike | None = None,
    nab_edges: EdgeMode = "onset",
    nab_overlap: OverlapMode = "cut_right",
) -> dict[str, Metric]:
    """Every metric of a backtest as one flat, JSON-ready dict; with ``assets``, events are
    found within each asset and counts are summed over assets before any ratio is taken.

    Keys (``None`` where undefined or where ``ts_ms`` is needed and missing):

    - counts: ``rows, labelled_rows, predicted_rows, tp, fp, fn, tn, assets``;
    - point-wise: ``precision, recall, f1``, ``far_pct`` = FP / (FP + TN) · 100 and
      ``mar_pct`` = FN / (FN + TP) · 100 (SKAB's definitions);
    - event-wise: ``events_labelled, events_detected, events_missed, events_predicted,
      events_false, event_precision, event_recall, event_f1``. A labelled event is detected
      when a predicted row falls in it or within ``tolerance_ms`` after its last row; a
      predicted event is false when it overlaps no labelled event so stretched;
    - ``point_adjusted_f1_optimistic``: F1 after Xu et al. (2018)'s point adjustment, which
      marks a whole labelled segment detected when any row of it is predicted. Kim et al.
      (AAAI 2022) show this protocol lets a random detector score near the best methods on
      long segments, so it is reported for comparison with the literature only and labelled
      as optimistic; it is always ≥ ``f1``;
    - ``detection_delay_rows_median/_mean`` and ``detection_delay_ms_median/_mean``: first
      predicted row in a detected event minus its first row, over all detected events;
    - ``span_days`` (sum over assets of last minus first timestamp) and
      ``false_alarms_per_day`` = ``events_false / span_days``;
    - ``nab_standard, nab_low_fp, nab_low_fn`` and ``nab_changepoints, nab_alarms,
      nab_missed_changepoints, nab_false_positives``: see ``nab_score`` (whose ``window_ms``,
      ``changepoints``, ``edges`` and ``overlap`` arrive here with a ``nab_`` prefix;
      ``nab_changepoints`` is a 0/1 per-row changepoint column used instead of label edges);
    - ``auc_roc`` of ``scores`` pooled over assets (``None`` without scores);
    - the settings used: ``tolerance_ms, nab_window_ms, nab_edges, nab_overlap``.

    >>> report = evaluate([0, 1, 1, 0, 0, 0], [0, 0, 1, 0, 1, 0])
    >>> report["f1"], report["event_recall"], report["events_false"]
    (0.5, 1.0, 1)
    >>> report["detection_delay_rows_median"], report["point_adjusted_f1_optimistic"]
    (1.0, 0.8)
    """
    config = _NabConfig(nab_window_ms, nab_edges, nab_overlap)
    inputs = _prepare(labels, predictions, ts_ms, nab_changepoints, tolerance_ms)
    total = _Tally()
    n_assets = 0
    for _, _, tally in _tally_groups(inputs, assets, tolerance_ms, config):
        total.add(tally)
        n_assets += 1
    report = _summary(total, has_ts=inputs.ts is not None)
    report["assets"] = n_assets if assets is not None else 1
    report["auc_roc"] = auc_roc(inputs.labels, scores) if scores is not None else None
    report["tolerance_ms"] = tolerance_ms
    report["nab_window_ms"] = nab_window_ms
    report["nab_edges"] = nab_edges
    report["nab_overlap"] = nab_overlap
    return report


def evaluate_by_asset(
    labels: npt.ArrayLike,
    predictions: npt.ArrayLike,
    assets: npt.ArrayLike,
    *,
    ts_ms: npt.ArrayLike | None = None,
    scores: npt.ArrayLike | None = None,
    tolerance_ms: int = 0,
    nab_window_ms: int = 60_000,
    nab_changepoints: npt.ArrayLike | None = None,
    nab_edges: EdgeMode = "onset",
    nab_overlap: OverlapMode = "cut_right",
) -> dict[str, dict[str, Metric]]:
    """``evaluate`` for each asset on its own, keyed by asset id (as ``str``), so a report can
    show which asset drives the totals.

    >>> per_asset = evaluate_by_asset([1, 0, 1], [1, 0, 0], ["a", "b", "b"])
    >>> per_asset["a"]["recall"], per_asset["b"]["recall"]
    (1.0, 0.0)
    """
    config = _NabConfig(nab_window_ms, nab_edges, nab_overlap)
    inputs = _prepare(labels, predictions, ts_ms, nab_changepoints, tolerance_ms)
    sc = np.asarray(scores, dtype=np.float64) if scores is not None else None
    if sc is not None and sc.shape != inputs.labels.shape:
        raise ValueError(f"scores has shape {sc.shape} but labels has {inputs.labels.shape}")
    out: dict[str, dict[str, Metric]] = {}
    for asset, rows, tally in _tally_groups(inputs, assets, tolerance_ms, config):
        report = _summary(tally, has_ts=inputs.ts is not None)
        report["assets"] = 1
        report["auc_roc"] = auc_roc(inputs.labels[rows], sc[rows]) if sc is not None else None
        report["tolerance_ms"] = tolerance_ms
        report["nab_window_ms"] = nab_window_ms
        report["nab_edges"] = nab_edges
        report["nab_overlap"] = nab_overlap
        out[str(asset)] = report
    return out
