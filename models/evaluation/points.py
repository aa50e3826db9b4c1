"""Point-wise metrics: every row judged on its own. A confusion matrix, precision, recall, F1,
and SKAB's false / missed alarm rates in percent.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.evaluation.inputs import BoolArray, Metric


@dataclass
class _Points:
    """Confusion counts of some rows; they add up across assets."""

    rows: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, other: _Points) -> None:
        self.rows += other.rows
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.tn += other.tn


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


def _f1(tp: int, fp: int, fn: int) -> float | None:
    return _ratio(2 * tp, 2 * tp + fp + fn)


def _points(lab: BoolArray, pred: BoolArray) -> _Points:
    n = lab.size
    tp = int((lab & pred).sum())
    fp = int((~lab & pred).sum())
    fn = int((lab & ~pred).sum())
    return _Points(rows=n, tp=tp, fp=fp, fn=fn, tn=n - tp - fp - fn)


def _point_summary(p: _Points) -> dict[str, Metric]:
    positives = p.tp + p.fn
    negatives = p.fp + p.tn
    return {
        "rows": p.rows,
        "labelled_rows": positives,
        "predicted_rows": p.tp + p.fp,
        "tp": p.tp,
        "fp": p.fp,
        "fn": p.fn,
        "tn": p.tn,
        "precision": _ratio(p.tp, p.tp + p.fp),
        "recall": _ratio(p.tp, positives),
        "f1": _f1(p.tp, p.fp, p.fn),
        # SKAB's definitions (waico/SKAB, core/metrics.py, chp_score metric="binary"):
        # far = FP / (FP + TN) * 100, mar = FN / (FN + TP) * 100 (SKAB also rounds to 2 places).
        "far_pct": None if negatives == 0 else p.fp / negatives * 100,
        "mar_pct": None if positives == 0 else p.fn / positives * 100,
    }
