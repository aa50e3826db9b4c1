"""Regression metrics of a quality model: RMSE, MAE, R², bias, interval coverage.

>>> m = regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
>>> round(m["rmse"], 4), round(m["mae"], 4), round(m["r2"], 4)
(0.5774, 0.3333, 0.5)
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt


def regression_metrics(
    target: npt.ArrayLike,
    predicted: npt.ArrayLike,
    *,
    lower: npt.ArrayLike | None = None,
    upper: npt.ArrayLike | None = None,
) -> dict[str, float | int | None]:
    """Metrics over the rows where both are finite; ``coverage`` when bounds are given.

    R² is ``1 - SSE / SST`` around the mean of the evaluated targets (None on fewer than
    two rows or a constant target); bias is mean(predicted - target).
    """
    y = np.asarray(target, dtype=np.float64).reshape(-1)
    p = np.asarray(predicted, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"target has {y.shape[0]} rows, predicted {p.shape[0]}")
    ok = np.isfinite(y) & np.isfinite(p)
    out: dict[str, float | int | None] = {"rows": int(ok.sum())}
    if not ok.any():
        return {**out, "rmse": None, "mae": None, "r2": None, "bias": None}
    err = p[ok] - y[ok]
    sst = float(np.sum((y[ok] - y[ok].mean()) ** 2))
    out["rmse"] = math.sqrt(float(np.mean(err**2)))
    out["mae"] = float(np.mean(np.abs(err)))
    out["r2"] = 1.0 - float(np.sum(err**2)) / sst if ok.sum() > 1 and sst > 0 else None
    out["bias"] = float(np.mean(err))
    if lower is not None and upper is not None:
        lo = np.asarray(lower, dtype=np.float64).reshape(-1)[ok]
        hi = np.asarray(upper, dtype=np.float64).reshape(-1)[ok]
        out["coverage"] = float(np.mean((y[ok] >= lo) & (y[ok] <= hi)))
        out["mean_width"] = float(np.mean(hi - lo)) if np.isfinite(hi - lo).all() else None
    return out
