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

One concern per module: ``inputs`` (checks on the columns, and the split into one asset's rows
at a time), ``points`` (point-wise), ``events`` (runs, event-wise, point adjustment, delays,
false alarms per day), ``nab``, ``auc`` and ``report`` (``evaluate`` and ``evaluate_by_asset``,
which add each family's per-asset tallies up and report them together).
"""

from models.evaluation.auc import auc_roc
from models.evaluation.events import MS_PER_DAY, EdgeMode, runs
from models.evaluation.inputs import BoolArray, FloatArray, IntArray, Metric
from models.evaluation.nab import NAB_PROFILES, NabProfile, OverlapMode, nab_score
from models.evaluation.report import evaluate, evaluate_by_asset

__all__ = [
    "MS_PER_DAY",
    "NAB_PROFILES",
    "BoolArray",
    "EdgeMode",
    "FloatArray",
    "IntArray",
    "Metric",
    "NabProfile",
    "OverlapMode",
    "auc_roc",
    "evaluate",
    "evaluate_by_asset",
    "nab_score",
    "runs",
]
