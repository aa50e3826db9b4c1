"""Fitting a quality model: time-ordered split, normalisation, fit, hold-out metrics.

The rows before ``train_rows`` are the fit data; their last ``validation_fraction`` (in
time order, never shuffled) is held out. The inputs' normaliser and the target's scale
are learnt from the training part only; the predictor chooses its penalty or epoch on the
hold-out; the hold-out's absolute errors become the conformal residuals, and its RMSE,
MAE and R² (in the target's units) go into the artifact's metadata. The target is only
ever the thing predicted: it is not one of the inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from models.protocol import Normalizer
from models.quality.artifact import QualityModel
from models.quality.metrics import regression_metrics
from models.quality.protocol import predictable_rows
from models.quality.registry import DEFAULT_KIND, create_predictor

MIN_FIT_ROWS = 20


def fit_quality(
    values: npt.ArrayLike,
    target: npt.ArrayLike,
    signals: Sequence[str],
    target_name: str,
    segments: Sequence[tuple[int, int]],
    *,
    kind: str = DEFAULT_KIND,
    train_rows: int | None = None,
    validation_fraction: float = 0.2,
    validation_rows: int | None = None,
    lags: Sequence[int] | None = None,
    history: int | None = None,
    hyper: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: Callable[[dict[str, Any]], None] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> QualityModel:
    """A :class:`QualityModel` of ``target`` from ``values`` (rows, signals), raw units.

    ``segments`` are row ranges contiguous in time (per asset, split at gaps): no history
    crosses one. ``validation_rows`` holds out the rows from ``train_rows -
    validation_rows`` on instead of a fraction (a protocol's fixed validation block).
    Raises ``ValueError`` with the reason when too few rows can be used.
    """
    x_raw = np.asarray(values, dtype=np.float64)
    y_raw = np.asarray(target, dtype=np.float64).reshape(-1)
    if x_raw.ndim != 2 or x_raw.shape[0] != y_raw.shape[0] or x_raw.shape[1] != len(signals):
        raise ValueError(
            f"values {x_raw.shape} and target {y_raw.shape} do not match {len(signals)} signals"
        )
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    limit = x_raw.shape[0] if train_rows is None else int(train_rows)
    if not 0 < limit <= x_raw.shape[0]:
        raise ValueError(f"train_rows {train_rows} is not within the file's {x_raw.shape[0]} rows")
    predictor = create_predictor(
        kind, len(signals), lags=lags, history=history, **dict(hyper or {})
    )
    clipped = [(s, min(e, limit)) for s, e in segments if s < limit]
    rows = predictable_rows(x_raw, predictor.history, clipped, y=y_raw)
    if validation_rows is not None:
        if not 0 < validation_rows < limit:
            raise ValueError(f"validation_rows {validation_rows} must be within 1..{limit - 1}")
        n_val = int((rows >= limit - validation_rows).sum())
    else:
        n_val = round(rows.size * validation_fraction)
    if rows.size - n_val < MIN_FIT_ROWS or n_val < 2:
        raise ValueError(
            f"only {rows.size} of the first {limit} rows have the target and "
            f"{predictor.history} rows of complete readings; need at least "
            f"{MIN_FIT_ROWS + 2} (give more rows, or a shorter --history / fewer lags)"
        )
    fit_rows, val_rows = rows[: rows.size - n_val], rows[rows.size - n_val :]
    first_val = int(val_rows[0])
    # Learnt from the training part only: the hold-out stays unseen until it is judged.
    history_rows = np.arange(first_val)
    normalizer = Normalizer.fit(x_raw[history_rows])
    y_mean = float(np.mean(y_raw[fit_rows]))
    y_std = float(np.std(y_raw[fit_rows]))
    y_scale = y_std if math.isfinite(y_std) and y_std > 1e-12 else 1.0
    x = normalizer.transform(x_raw)
    y = ((y_raw - y_mean) / y_scale).astype(np.float32)
    stats = predictor.fit(x, y, fit_rows, val_rows, seed=seed, progress=progress)
    val_pred = predictor.predict(x, val_rows).astype(np.float64) * y_scale + y_mean
    residuals = np.abs(val_pred - y_raw[val_rows])
    holdout = regression_metrics(y_raw[val_rows], val_pred)
    meta: dict[str, Any] = {
        "task": "quality",
        "holdout": holdout,
        "training": stats,
        "split": {
            "train_rows": limit,
            "fit_rows": int(fit_rows.size),
            "holdout_rows": int(val_rows.size),
            "holdout_from_row": first_val,
            "validation_fraction": validation_fraction,
        },
        "seed": seed,
        **dict(metadata or {}),
    }
    return QualityModel.create(
        predictor,
        signals,
        target_name,
        normalizer,
        y_mean,
        y_scale,
        residuals,
        kind,
        metadata=meta,
    )
