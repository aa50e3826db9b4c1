"""ROC AUC of the raw score: a check of the score itself, which needs no threshold."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.evaluation.inputs import _as_binary


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
