"""NAB scores (Lavin & Ahmad 2015) as SKAB computes them for its changepoint leaderboard: the
application profiles, SKAB's scoring curve, the per-asset tallies and ``nab_score``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from models.evaluation.events import EdgeMode, _edges
from models.evaluation.inputs import FloatArray, IntArray, Metric, _AssetRows, _per_asset, _prepare

OverlapMode = Literal["cut_right", "cut_left"]


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


def _nab_asset(part: _AssetRows, config: _NabConfig) -> _Nab:
    """NAB tallies of one asset: its true changepoints are the rows marked in its changepoint
    column, or else the edges of its labels; its alarms are the edges of its predictions. NAB
    needs timestamps, so without them the tallies stay empty."""
    if part.ts is None:
        return _Nab()
    cp_rows = (
        np.flatnonzero(part.changepoints)
        if part.changepoints is not None
        else _edges(part.labels, config.edges)
    )
    return _nab_one(part.ts[cp_rows], part.ts[_edges(part.predictions, config.edges)], config)


def _nab_summary(nab: _Nab, *, has_ts: bool) -> dict[str, Metric]:
    normalised = nab.normalised() if has_ts else dict.fromkeys(NAB_PROFILES)
    return {
        "nab_standard": normalised["standard"],
        "nab_low_fp": normalised["low_fp"],
        "nab_low_fn": normalised["low_fn"],
        "nab_changepoints": nab.changepoints if has_ts else None,
        "nab_alarms": nab.alarms if has_ts else None,
        "nab_missed_changepoints": nab.missed if has_ts else None,
        "nab_false_positives": nab.false_positives if has_ts else None,
    }


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
    for part in _per_asset(inputs, assets):
        total.add(_nab_asset(part, config))
    return total.normalised()
