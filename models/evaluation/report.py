"""``evaluate``: every family of metrics in one flat, JSON-ready report, pooled over assets or
(``evaluate_by_asset``) one report per asset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from models.evaluation.auc import auc_roc
from models.evaluation.events import EdgeMode, _event_summary, _Events, _events
from models.evaluation.inputs import Metric, _AssetRows, _per_asset, _prepare
from models.evaluation.nab import OverlapMode, _Nab, _nab_asset, _nab_summary, _NabConfig
from models.evaluation.points import _point_summary, _Points, _points


@dataclass
class _Tally:
    """Per-asset tallies of every family; they add up across assets."""

    points: _Points = field(default_factory=_Points)
    events: _Events = field(default_factory=_Events)
    nab: _Nab = field(default_factory=_Nab)

    def add(self, other: _Tally) -> None:
        self.points.add(other.points)
        self.events.add(other.events)
        self.nab.add(other.nab)


def _tally(part: _AssetRows, *, tolerance_ms: int, nab: _NabConfig) -> _Tally:
    return _Tally(
        points=_points(part.labels, part.predictions),
        events=_events(part.labels, part.predictions, part.ts, tolerance_ms=tolerance_ms),
        nab=_nab_asset(part, nab),
    )


def _summary(t: _Tally, *, has_ts: bool) -> dict[str, Metric]:
    return {
        **_point_summary(t.points),
        **_event_summary(t.events, t.points, has_ts=has_ts),
        **_nab_summary(t.nab, has_ts=has_ts),
    }


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
    for part in _per_asset(inputs, assets):
        total.add(_tally(part, tolerance_ms=tolerance_ms, nab=config))
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
    for part in _per_asset(inputs, assets):
        tally = _tally(part, tolerance_ms=tolerance_ms, nab=config)
        report = _summary(tally, has_ts=inputs.ts is not None)
        report["assets"] = 1
        report["auc_roc"] = auc_roc(part.labels, sc[part.rows]) if sc is not None else None
        report["tolerance_ms"] = tolerance_ms
        report["nab_window_ms"] = nab_window_ms
        report["nab_edges"] = nab_edges
        report["nab_overlap"] = nab_overlap
        out[str(part.asset)] = report
    return out
