"""Per-asset thresholds adapted online: fixed, streaming quantile, SPOT and DSPOT.

One :class:`Threshold` instance judges the score stream of one asset. ``update(scores,
learn=None)`` takes scores in time order and returns, per score, the threshold in force
*before* that score was learned, whether the score is anomalous, and a severity
(0 normal, 1 warning, 2 critical).

Every adaptive threshold carries two guards (STYLE rule 3):

* **Grace**: no score is anomalous before ``config.grace`` scores have been seen in total,
  counting the calibration scores handed to :func:`make_threshold`. Given at least
  ``grace`` calibration scores (and, for SPOT/DSPOT, enough to fit a tail) there is no grace
  online at all. While no threshold exists yet (too few scores to estimate one) the reported
  threshold is ``+inf``: nothing can exceed it.
* **Protection**: a score judged anomalous is never learned, nor is any score whose
  ``learn`` flag is ``False`` (the caller passes ``learn=False`` while an alert is open, say).

Kinds, one module each (each module says why it is built the way it is):

* :class:`FixedThreshold` (``fixed``) never changes: ``fixed_value``, or the ``1 - q``
  quantile of the calibration scores.
* :class:`QuantileThreshold` (``quantile``) is ``margin`` times a streaming P² estimate of
  the ``quantile`` of learned scores.
* :class:`SPOTThreshold` (``spot``, Siffer et al., KDD 2017): a generalised Pareto tail
  (``gpd``, ``tail``) fitted to the peaks over the ``level`` quantile of the calibration
  scores; the threshold is the score a normal score exceeds with probability ``q``.
* :class:`DSPOTThreshold` (``dspot``): the same SPOT machinery on the residual of the score
  from a moving average of the last ``depth`` learned scores, so a slowly drifting score
  level does not raise alarms; the threshold is reported in score units.

The settings are one frozen msgspec model, :class:`ThresholdConfig` (``config``).

Severity: for SPOT/DSPOT the fitted tail gives ``P(normal score > score)``; an anomalous score
is critical when that probability is at most ``critical_q`` (default ``q / 100``), else a
warning. For fixed/quantile thresholds there is no tail model, so an anomalous score is
critical when ``score - threshold >= (critical_ratio - 1) * |threshold|`` (score at least
twice a positive threshold by default).

Determinism: no randomness anywhere, and the outputs do not depend on how the stream is cut
into batches, so a backtest over a file and the live monitor make the same decisions.
:meth:`Threshold.snapshot` gives a plain, versioned, JSON-able dict and :func:`restore`
rebuilds a threshold that continues the stream bit for bit.

Scores must be finite: a NaN or infinite score raises :class:`ValueError` (it would poison
every estimate; the scorer should never hand one over).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> spot = make_threshold(ThresholdConfig(kind="spot", q=1e-3), rng.exponential(size=5000))
>>> thresholds, anomalous, severity = spot.update(np.array([0.5, 9.0, 40.0]))
>>> anomalous.tolist(), severity.tolist()
([False, True, True], [0, 1, 2])
>>> restored = restore(spot.snapshot())
>>> restored.update(np.array([1.0]))[0].tolist() == spot.update(np.array([1.0]))[0].tolist()
True
"""

from models.thresholds.base import (
    CRITICAL,
    NORMAL,
    SNAPSHOT_VERSION,
    WARNING,
    SeverityArray,
    Threshold,
    Verdicts,
)
from models.thresholds.config import MIN_PEAKS, ThresholdConfig, ThresholdKind
from models.thresholds.dspot import DSPOTThreshold, MovingAverage
from models.thresholds.factory import make_threshold, restore
from models.thresholds.fixed import FixedThreshold
from models.thresholds.gpd import fit_gpd
from models.thresholds.quantile import P2Quantile, QuantileThreshold
from models.thresholds.spot import SPOTThreshold

__all__ = [
    "CRITICAL",
    "MIN_PEAKS",
    "NORMAL",
    "SNAPSHOT_VERSION",
    "WARNING",
    "DSPOTThreshold",
    "FixedThreshold",
    "MovingAverage",
    "P2Quantile",
    "QuantileThreshold",
    "SPOTThreshold",
    "SeverityArray",
    "Threshold",
    "ThresholdConfig",
    "ThresholdKind",
    "Verdicts",
    "fit_gpd",
    "make_threshold",
    "restore",
]
